#!/usr/bin/env bash
# Benchmarks, printed as numbers (no pass/fail): run as root or a normal user.
#   1. mkdir until a first query succeeds, connecting as a user would
#      (libpq through psycopg2, with NAME/url and PGPASSFILE=NAME/pgpass:
#      TLS, verify-full, SCRAM), with spare servers ready, vs initdb
#      --no-sync + pg_ctl start -w by hand until the same query through the
#      same client code (a url and a pgpass file) (median of RUNS each,
#      after one warm-up run of each that is not counted); then the same
#      with spares=0 (the copy-and-start path), and a burst of 20 mkdirs
#      back to back (each and total), then the same burst with spares=0,
#      which is what a burst degrades to once the spares are taken. The load average is
#      printed with every figure: the numbers are only as quiet as the
#      machine.
#   2. 500 `cat NAME/status` through the mount vs 500 `cat` of a plain file;
#   3. the cloud provider against the stand-in server (tests/cloud/bench_cloud.sh).
#   4. `scripts/bench.sh branch [MB] [RUNS]`: provisioning with WAL archiving
#      off vs on, branch of an instance with MB (default 1024) MiB of table
#      data vs pg_dump -Fc | pg_restore, the same on a loop-mounted xfs
#      (reflinks; root and mkfs.xfs), restore to 1 minute back
#      (scripts/bench_branch.py).
# Usage: scripts/bench.sh [RUNS]             (default 15)
#        scripts/bench.sh provision [RUNS]   part 1 only
#   DBOSFS_TIMING=1 BENCH_LOGS=DIR: the mounts' logs, with each mkdir's
#   steps (README, "How the local provider works"), are saved in DIR.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = branch ]; then
	"$repo/scripts/build.sh" build
	exec /usr/bin/python3 "$repo/scripts/bench_branch.py" "$repo/build/dbosfs" "${2:-1024}" "${3:-5}"
fi
only_provision=
if [ "${1:-}" = provision ]; then
	only_provision=1
	shift
fi
runs=${1:-15}
"$repo/scripts/deps.sh" >/dev/null
"$repo/scripts/build.sh" build

work=$(mktemp -d /tmp/dbosfs-bench-XXXXXX)
chmod 711 "$work"
mnt="$work/mnt"
mnt0="$work/mnt0"
mkdir -p "$mnt" "$mnt0"
cleanup() {
	fusermount3 -u -z "$mnt" 2>/dev/null || true
	fusermount3 -u -z "$mnt0" 2>/dev/null || true
	for i in $(seq 50); do pgrep -f "dbosfs.*$work" >/dev/null || break; sleep 0.2; done
	rm -rf "$work"
}
trap cleanup EXIT

"$repo/build/dbosfs" -o "state_dir=$work/state" "$mnt"
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

BENCH_BIN=$repo/build/dbosfs BENCH_RUNS=$runs BENCH_MNT=$mnt BENCH_MNT0=$mnt0 BENCH_WORK=$work PG_BINDIR=$bindir \
BENCH_ONLY_PROVISION=$only_provision /usr/bin/python3 - <<'PY'
import os, pwd, statistics, subprocess, tempfile, time, socket

runs = int(os.environ["BENCH_RUNS"]); mnt = os.environ["BENCH_MNT"]
mnt0 = os.environ["BENCH_MNT0"]
work = os.environ["BENCH_WORK"]; bindir = os.environ["PG_BINDIR"]

def load():
    return "load " + " ".join(open("/proc/loadavg").read().split()[:3])

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

import psycopg2

def first_query(url, passfile):
    """What a user does: libpq with the url and a pgpass file; SELECT 1,
    retried until it succeeds."""
    while True:
        try:
            c = psycopg2.connect(url, passfile=passfile, connect_timeout=5)
            cur = c.cursor(); cur.execute("select 1"); cur.fetchone(); c.close()
            return
        except psycopg2.OperationalError:
            time.sleep(0.002)

def ready_spares(state):
    d = f"{state}/local/spares"
    n = 0
    for e in os.listdir(d) if os.path.isdir(d) else []:
        n += os.path.exists(f"{d}/{e}/data/postmaster.pid")
    return n

def wait_spares(n, timeout=300):
    deadline = time.time() + timeout
    while ready_spares(f"{work}/state") < n and time.time() < deadline: time.sleep(0.05)
    time.sleep(0.3)  # postmaster.pid appears just before the server is ready

def mkdir_to_query(m, name):
    t0 = time.perf_counter()
    os.mkdir(f"{m}/{name}")
    url = open(f"{m}/{name}/url").read().strip()
    first_query(url, f"{m}/{name}/pgpass")
    return time.perf_counter() - t0

def destroy(m, name):
    with open(f"{m}/{name}/confirm", "w") as f: f.write(f"{name}\n")
    os.rmdir(f"{m}/{name}")

def ms(xs):
    return (f"median {statistics.median(xs)*1000:.0f} ms "
            f"(min {min(xs)*1000:.0f}, max {max(xs)*1000:.0f}, n={len(xs)})")

def settle():
    """Each part starts with no writeback of an earlier one pending (the
    hand-made initdb --no-sync runs leave ~600 MB of dirty pages, which
    slowed the copies of whatever ran next)."""
    os.sync()

print(f"{load()} at start, {os.cpu_count()} cores")
wait_spares(2)
settle()
fs_times = []
for i in range(runs + 1):  # run 0 warms up (page cache, first TLS context): not counted
    wait_spares(2)  # a mount in use: spares refilled between mkdirs
    t = mkdir_to_query(mnt, f"bench{i}")
    if i:
        fs_times.append(t)
for i in range(runs + 1):
    destroy(mnt, f"bench{i}")
fs_load = load()

root = os.geteuid() == 0
def as_pg():
    if root:
        pw = pwd.getpwnam("postgres"); os.setgid(pw.pw_gid); os.setuid(pw.pw_uid)
hand_times = []
settle()
for i in range(runs + 1):
    d = tempfile.mkdtemp(dir=work); os.chmod(d, 0o777)
    pwfile = f"{d}/pw"; open(pwfile, "w").write("benchpassword\n"); os.chmod(pwfile, 0o644)
    port = free_port()
    passfile = f"{d}/pgpass"
    open(passfile, "w").write(f"127.0.0.1:{port}:*:dbos_user:benchpassword\n")
    os.chmod(passfile, 0o600)
    url = f"postgresql://dbos_user@127.0.0.1:{port}/postgres"
    t0 = time.perf_counter()
    subprocess.run([f"{bindir}/initdb", "-D", f"{d}/data", "-U", "dbos_user", "-A", "scram-sha-256",
                    f"--pwfile={pwfile}", "--no-sync"], check=True, capture_output=True, preexec_fn=as_pg)
    subprocess.run([f"{bindir}/pg_ctl", "-D", f"{d}/data", "-o", f"-p {port} -k {d} -c listen_addresses=127.0.0.1",
                    "-l", f"{d}/log", "-w", "start"], check=True, capture_output=True, preexec_fn=as_pg)
    first_query(url, passfile)
    if i:
        hand_times.append(time.perf_counter() - t0)
    subprocess.run([f"{bindir}/pg_ctl", "-D", f"{d}/data", "-m", "fast", "-w", "stop"],
                   capture_output=True, preexec_fn=as_pg)
hand_load = load()

# The path with no spare, on a mount of its own (spares=0), mounted only
# now so that its template build does not load the runs above.
subprocess.run([os.environ["BENCH_BIN"], "-o", f"state_dir={work}/state0,spares=0", mnt0],
               check=True)
nospare = []
settle()
for i in range(min(runs, 7) + 1):  # run 0 also builds the template
    t = mkdir_to_query(mnt0, f"nospare{i}")
    if i:
        nospare.append(t)
for i in range(min(runs, 7) + 1):
    destroy(mnt0, f"nospare{i}")
nospare_load = load()

fs_med, hand_med = statistics.median(fs_times), statistics.median(hand_times)
print(f"provision: dbosfs mkdir -> first successful query: {ms(fs_times)} ({fs_load})")
print(f"provision: initdb --no-sync + pg_ctl start -w by hand -> first query: {ms(hand_times)} "
      f"({hand_load})")
print(f"provision: dbosfs is {hand_med/fs_med:.1f}x faster (target >= 20x)")
print(f"provision: with spares=0 (copy the template and start a server): {ms(nospare)} "
      f"({nospare_load})")

# A burst: 20 mkdirs back to back, starting with the spares ready.
wait_spares(2)
settle()
burst = []
t_all = time.perf_counter()
for i in range(20):
    burst.append(mkdir_to_query(mnt, f"burst{i}"))
total = time.perf_counter() - t_all
burst_load = load()
# The same burst right after on the spares=0 mount: what it degrades to.
burst0 = []
settle()
t_all = time.perf_counter()
for i in range(20):
    burst0.append(mkdir_to_query(mnt0, f"burst{i}"))
total0 = time.perf_counter() - t_all
print("burst: 20 mkdirs back to back, each mkdir -> first query (ms): " +
      " ".join(f"{t*1000:.0f}" for t in burst))
print(f"burst: total {total*1000:.0f} ms; median {statistics.median(burst)*1000:.0f} ms; "
      f"after the two spares, median {statistics.median(burst[2:])*1000:.0f} ms ({burst_load})")
print("burst with spares=0, right after (ms): " + " ".join(f"{t*1000:.0f}" for t in burst0))
print(f"burst with spares=0: total {total0*1000:.0f} ms; median "
      f"{statistics.median(burst0)*1000:.0f} ms ({load()})")
if os.environ.get("BENCH_LOGS"):  # with DBOSFS_TIMING=1: where each mkdir's time went
    for m, tag in ((mnt, "spares"), (mnt0, "spares0")):
        with open(f"{os.environ['BENCH_LOGS']}/{tag}.log", "w") as f:
            f.write(open(f"{m}/.dbosfs/log").read())
for i in range(20):
    destroy(mnt, f"burst{i}")
    destroy(mnt0, f"burst{i}")
if os.environ.get("BENCH_ONLY_PROVISION"):
    raise SystemExit(0)

# 500 cats: through the mount vs a plain file on disk, same shell loop.
os.mkdir(f"{mnt}/catbench")
plain = f"{work}/plain_status"; open(plain, "w").write("available\n")
def loop(path, n=500):
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", f'for i in $(seq {n}); do cat "{path}" >/dev/null; done'], check=True)
    return time.perf_counter() - t0
loop(plain, 50); loop(f"{mnt}/catbench/status", 50)
tp, tf = [], []
for _ in range(3):  # interleaved, so machine noise hits both alike
    tp.append(loop(plain)); tf.append(loop(f"{mnt}/catbench/status"))
tp, tf = min(tp), min(tf)
print(f"status: 500 x cat plain file: {tp*1000:.0f} ms ({tp/500*1e6:.0f} us each)")
print(f"status: 500 x cat NAME/status: {tf*1000:.0f} ms ({tf/500*1e6:.0f} us each)")
print(f"status: ratio {tf/tp:.2f} (target <= 1.5)")
with open(f"{mnt}/catbench/confirm", "w") as f: f.write("catbench\n")
os.rmdir(f"{mnt}/catbench")
PY

if [ -z "$only_provision" ] && [ -x "$repo/tests/cloud/bench_cloud.sh" ]; then
	"$repo/tests/cloud/bench_cloud.sh" --dbosfs "$repo/build/dbosfs"
fi
