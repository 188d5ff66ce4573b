#!/usr/bin/env bash
# Benchmarks, printed as numbers (no pass/fail): run as root or a normal user.
#   1. mkdir until a first query succeeds (as the admin, with its password)
#      with spare servers ready, vs initdb --no-sync + pg_ctl start -w by
#      hand until the same query (median of N runs each); then a burst of
#      20 mkdirs back to back (each and total);
#   2. 500 `cat NAME/status` through the mount vs 500 `cat` of a plain file;
#   3. the cloud provider against the stand-in server (tests/cloud/bench_cloud.sh).
#   4. `scripts/bench.sh branch [MB] [RUNS]`: provisioning with WAL archiving
#      off vs on, branch of an instance with MB (default 1024) MiB of table
#      data vs pg_dump -Fc | pg_restore, the same on a loop-mounted xfs
#      (reflinks; root and mkfs.xfs), restore to 1 minute back
#      (scripts/bench_branch.py).
# Usage: scripts/bench.sh [RUNS]      (default 7)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = branch ]; then
	"$repo/scripts/build.sh" build
	exec /usr/bin/python3 "$repo/scripts/bench_branch.py" "$repo/build/dbosfs" "${2:-1024}" "${3:-5}"
fi
runs=${1:-7}
"$repo/scripts/deps.sh" >/dev/null
"$repo/scripts/build.sh" build

work=$(mktemp -d /tmp/dbosfs-bench-XXXXXX)
chmod 711 "$work"
mnt="$work/mnt"
mkdir -p "$mnt"
cleanup() {
	fusermount3 -u -z "$mnt" 2>/dev/null || true
	for i in $(seq 50); do pgrep -f "dbosfs.*$work" >/dev/null || break; sleep 0.2; done
	rm -rf "$work"
}
trap cleanup EXIT

"$repo/build/dbosfs" -o "state_dir=$work/state" "$mnt"
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

BENCH_RUNS=$runs BENCH_MNT=$mnt BENCH_WORK=$work PG_BINDIR=$bindir /usr/bin/python3 - <<'PY'
import os, pwd, statistics, subprocess, tempfile, time, socket

runs = int(os.environ["BENCH_RUNS"]); mnt = os.environ["BENCH_MNT"]
work = os.environ["BENCH_WORK"]; bindir = os.environ["PG_BINDIR"]

def accepting(port):
    return subprocess.run([f"{bindir}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode == 0

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

import psycopg2

def first_query(port, user, password):
    """Connects and runs SELECT 1, retrying until it succeeds."""
    while True:
        try:
            c = psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password,
                                 dbname="postgres", connect_timeout=5)
            cur = c.cursor(); cur.execute("select 1"); cur.fetchone(); c.close()
            return
        except psycopg2.OperationalError:
            time.sleep(0.002)

def ready_spares():
    d = f"{work}/state/local/spares"
    n = 0
    for e in os.listdir(d) if os.path.isdir(d) else []:
        n += os.path.exists(f"{d}/{e}/data/postmaster.pid")
    return n

def wait_spares(n, timeout=300):
    deadline = time.time() + timeout
    while ready_spares() < n and time.time() < deadline: time.sleep(0.05)
    time.sleep(0.3)  # postmaster.pid appears just before the server is ready

def mkdir_to_query(name):
    t0 = time.perf_counter()
    os.mkdir(f"{mnt}/{name}")
    host, port, _db, user, password = open(f"{mnt}/{name}/pgpass").read().strip().split(":", 4)
    first_query(int(port), user, password)
    return time.perf_counter() - t0

def destroy(name):
    with open(f"{mnt}/{name}/confirm", "w") as f: f.write(f"{name}\n")
    os.rmdir(f"{mnt}/{name}")

print(f"load average at start: {open('/proc/loadavg').read().split()[:3]} on {os.cpu_count()} cores")
wait_spares(2)
fs_times = []
for i in range(runs):
    wait_spares(2)  # a mount in use: spares refilled between mkdirs
    fs_times.append(mkdir_to_query(f"bench{i}"))
for i in range(runs):
    destroy(f"bench{i}")

root = os.geteuid() == 0
def as_pg():
    if root:
        pw = pwd.getpwnam("postgres"); os.setgid(pw.pw_gid); os.setuid(pw.pw_uid)
hand_times = []
for i in range(runs):
    d = tempfile.mkdtemp(dir=work); os.chmod(d, 0o777)
    pwfile = f"{d}/pw"; open(pwfile, "w").write("benchpassword\n"); os.chmod(pwfile, 0o644)
    port = free_port()
    t0 = time.perf_counter()
    subprocess.run([f"{bindir}/initdb", "-D", f"{d}/data", "-U", "dbos_user", "-A", "scram-sha-256",
                    f"--pwfile={pwfile}", "--no-sync"], check=True, capture_output=True, preexec_fn=as_pg)
    subprocess.run([f"{bindir}/pg_ctl", "-D", f"{d}/data", "-o", f"-p {port} -k {d} -c listen_addresses=127.0.0.1",
                    "-l", f"{d}/log", "-w", "start"], check=True, capture_output=True, preexec_fn=as_pg)
    first_query(port, "dbos_user", "benchpassword")
    hand_times.append(time.perf_counter() - t0)
    subprocess.run([f"{bindir}/pg_ctl", "-D", f"{d}/data", "-m", "fast", "-w", "stop"],
                   capture_output=True, preexec_fn=as_pg)

fs_med, hand_med = statistics.median(fs_times), statistics.median(hand_times)
print(f"provision: dbosfs mkdir -> first successful query: median {fs_med*1000:.0f} ms "
      f"(min {min(fs_times)*1000:.0f}, max {max(fs_times)*1000:.0f}, n={runs})")
print(f"provision: initdb --no-sync + pg_ctl start -w by hand -> first query: median {hand_med*1000:.0f} ms "
      f"(min {min(hand_times)*1000:.0f}, max {max(hand_times)*1000:.0f}, n={runs})")
print(f"provision: dbosfs is {hand_med/fs_med:.1f}x faster (target >= 20x)")

# A burst: 20 mkdirs back to back, starting with the spares ready.
wait_spares(2)
burst = []
t_all = time.perf_counter()
for i in range(20):
    burst.append(mkdir_to_query(f"burst{i}"))
total = time.perf_counter() - t_all
print("burst: 20 mkdirs back to back, each mkdir -> first query (ms): " +
      " ".join(f"{t*1000:.0f}" for t in burst))
print(f"burst: total {total*1000:.0f} ms; median {statistics.median(burst)*1000:.0f} ms")
for i in range(20):
    destroy(f"burst{i}")
print(f"load average at end: {open('/proc/loadavg').read().split()[:3]}")

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

if [ -x "$repo/tests/cloud/bench_cloud.sh" ]; then
	"$repo/tests/cloud/bench_cloud.sh" --dbosfs "$repo/build/dbosfs"
fi
