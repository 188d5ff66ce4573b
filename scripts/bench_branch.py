"""Branch, restore and provisioning-with-archiving benchmarks (issue 10),
run by `scripts/bench.sh branch [MB] [RUNS]`. Prints numbers, no pass/fail:
  1. mkdir until accepting connections, WAL archiving off (pitr_window=0) vs
     on (the default), interleaved, median of RUNS;
  2. branch of an instance holding MB of table data vs pg_dump -Fc |
     pg_restore into a fresh instance, on the state directory's filesystem;
  3. the same branch on a loop-mounted xfs (reflinks), when mkfs.xfs is there
     and we are root;
  4. restore to a moment 1 minute back."""
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

DBOSFS = sys.argv[1]
MB = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
WORK = tempfile.mkdtemp(prefix="dbosfs-bench-branch-", dir="/tmp")
os.chmod(WORK, 0o711)
mounts = []


def mount(state_dir, opts=""):
    mnt = tempfile.mkdtemp(dir=WORK)
    o = f"state_dir={state_dir}" + ("," + opts if opts else "")
    subprocess.run([DBOSFS, "-o", o, mnt], check=True)
    mounts.append(mnt)
    return mnt


def unmount(mnt):
    subprocess.run(["fusermount3", "-u", "-z", mnt], stderr=subprocess.DEVNULL)
    for _ in range(100):
        if subprocess.run(["pgrep", "-f", f"dbosfs.*{mnt}"], capture_output=True).returncode:
            break
        time.sleep(0.2)


def env_of(mnt, name, db="postgres"):
    env = dict(os.environ)
    for line in open(f"{mnt}/{name}/env").read().splitlines():
        k, _, v = line.partition("=")
        env[k] = v.strip("'")
    env["PGPASSWORD"] = open(f"{mnt}/{name}/password").read().strip()
    env["PGDATABASE"] = db
    return env


def psql(mnt, name, sql):
    return subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          env=env_of(mnt, name), check=True, capture_output=True,
                          text=True).stdout


def destroy(mnt, name):
    open(f"{mnt}/{name}/confirm", "w").write(name + "\n")
    os.rmdir(f"{mnt}/{name}")


def write(path, value):
    with open(path, "w") as f:
        f.write(value + "\n")


def load(mnt, name, mb):
    # ~1 KB rows: MB MiB of table data.
    rows = mb * 1024
    psql(mnt, name, "CREATE TABLE big (id bigint primary key, pad text)")
    step = 100_000
    for lo in range(0, rows, step):
        psql(mnt, name, f"INSERT INTO big SELECT g, repeat(md5(g::text), 30) "
                        f"FROM generate_series({lo + 1}, {min(rows, lo + step)}) g")
    return psql(mnt, name, "SELECT pg_size_pretty(pg_total_relation_size('big'))").strip()


def provisioning():
    times = {"off": [], "on": []}
    mnts = {"off": mount(f"{WORK}/s_off", "pitr_window=0"), "on": mount(f"{WORK}/s_on")}
    time.sleep(3)  # templates and warm spares
    for i in range(RUNS):
        for k in ("off", "on"):
            time.sleep(1.5)  # the warm spare is refilled between mkdirs
            t0 = time.perf_counter()
            os.mkdir(f"{mnts[k]}/p{k}{i}")
            psql(mnts[k], f"p{k}{i}", "SELECT 1")
            times[k].append(time.perf_counter() - t0)
    for k in ("off", "on"):
        for i in range(RUNS):
            destroy(mnts[k], f"p{k}{i}")
        unmount(mnts[k])
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"provision ({load_avg()}) (mkdir + first query): archiving off median {off*1000:.0f} ms, "
          f"on median {on*1000:.0f} ms: {100*(on-off)/off:+.1f}% (target <= +10%, n={RUNS})")


def load_avg():
    return "load %.1f %.1f %.1f" % os.getloadavg()


def wait_log(mnt, text, timeout):
    deadline = time.time() + timeout
    while text not in open(f"{mnt}/.dbosfs/log").read() and time.time() < deadline:
        time.sleep(0.2)


def answers(mnt, name):
    """The copy answers a query that needs its data: the last row, by the
    primary key (the same for both sides; the full count is checked after
    the clock stops)."""
    assert psql(mnt, name, f"SELECT id FROM big WHERE id = {MB * 1024}").strip() == \
        str(MB * 1024)


def durable_after(mnt, name, t0):
    while "durable: yes" not in open(f"{mnt}/{name}/info").read():
        time.sleep(0.05)
    return time.perf_counter() - t0


def branch_vs_dump(state_dir, label):
    # spares=0: no spare being copied or started while the clock runs
    # (until ca33617 this also avoided a claimed spare's PANIC at its first
    # checkpoint, which pg_restore's load triggers).
    mnt = mount(state_dir, "spares=0")
    os.mkdir(f"{mnt}/src")
    size = load(mnt, "src", MB)
    # A gigabyte of WAL since the source's first base backup (its template)
    # makes the pitr thread take a new one (local_pitr.c): not during the
    # measurements.
    wait_log(mnt, "base backup of src", 45)
    # ... and the archiver has caught up (after a bulk load it copies and
    # fsyncs a thousand segments, a process or three each).
    status = f"{state_dir}/local/instances/src/data/pg_wal/archive_status"
    deadline = time.time() + 120
    while any(f.endswith(".ready") for f in os.listdir(status)) and time.time() < deadline:
        time.sleep(0.5)
    # An instance at rest, not one whose load is still in the page cache
    # (a fresh load makes the backup's checkpoint fsync all of it).
    os.sync()
    time.sleep(2)
    la = load_avg()
    t0 = time.perf_counter()
    write(f"{mnt}/src/branch", "brc")
    answers(mnt, "brc")
    tb = time.perf_counter() - t0
    td_ = durable_after(mnt, "brc", t0)
    n = psql(mnt, "brc", "SELECT count(*) FROM big").strip()
    print(f"branch [{label}]: table of {size} ({n} rows): {tb:.2f} s until it answered "
          f"a query; durable (flushed in the background) after {td_:.2f} s ({la})")
    detail = [l for l in open(f"{mnt}/.dbosfs/log").read().splitlines() if "branched from" in l]
    if detail:
        print("  " + detail[-1].split("local: ", 1)[-1])
    result = {"branch": tb}
    if label.startswith("ext4") or label.startswith("state"):
        os.mkdir(f"{mnt}/dst")
        # The branch's first base backup (the pitr thread, within a minute)
        # is another full copy on ext4: not during the dump.
        wait_log(mnt, "base backup of brc", 120)
        os.sync()
        time.sleep(2)
        la = load_avg()
        t0 = time.perf_counter()
        # -N dbosfs: dbosfs's own schema, already in every instance.
        p1 = subprocess.Popen(["pg_dump", "-Fc", "-N", "dbosfs"], env=env_of(mnt, "src"),
                              stdout=subprocess.PIPE)
        p2 = subprocess.run(["pg_restore", "--no-owner", "--no-privileges", "-d",
                             env_of(mnt, "dst")["PGDATABASE"]], env=env_of(mnt, "dst"),
                            stdin=p1.stdout, capture_output=True, text=True)
        p1.stdout.close()
        p1.wait()
        answers(mnt, "dst")
        td = time.perf_counter() - t0
        n2 = psql(mnt, "dst", "SELECT count(*) FROM big").strip()
        if p2.returncode or p1.returncode:
            print(f"  pg_dump exit {p1.returncode}, pg_restore exit {p2.returncode}: "
                  f"{p2.stderr[-500:]}")
        print(f"pg_dump -Fc | pg_restore [{label}]: {td:.2f} s until it answered a query "
              f"({n2} rows; {la}); branch is {td/tb:.1f}x faster (target >= 10x)")
        result["dump"] = td
    return mnt, result


def restore_minute_back(mnt):
    t = time.time()
    psql(mnt, "src", "CREATE TABLE marker AS SELECT now() AS t")
    wait = 60 - (time.time() - t)
    print(f"restore: waiting {max(wait, 0):.0f} s so that 1 minute back is after the load")
    time.sleep(max(wait, 0) + 1)
    target = datetime.datetime.fromtimestamp(time.time() - 60, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")
    la = load_avg()
    t0 = time.perf_counter()
    write(f"{mnt}/src/restore", f"{target} back1m")
    answers(mnt, "back1m")
    tr = time.perf_counter() - t0
    td_ = durable_after(mnt, "back1m", t0)
    n = psql(mnt, "back1m", "SELECT count(*) FROM big").strip()
    base = [l for l in open(f"{mnt}/.dbosfs/log").read().splitlines()
            if "back1m restored from" in l]
    print(f"restore to 1 minute back: {tr:.2f} s until it answered a query ({n} rows; "
          f"durable after {td_:.2f} s; {la})")
    if base:
        print("  " + base[-1].split("local: ", 1)[-1])


def xfs_branch():
    if os.geteuid() != 0 or not shutil.which("mkfs.xfs"):
        print("branch [xfs]: skipped (needs root and mkfs.xfs)")
        return
    img, mp = f"{WORK}/xfs.img", f"{WORK}/xfs"
    os.mkdir(mp)
    subprocess.run(["truncate", "-s", f"{max(3 * MB + 1024, 2048)}M", img], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", img], check=True)
    subprocess.run(["mount", "-o", "loop", img, mp], check=True)
    os.chmod(mp, 0o711)
    try:
        mnt, _ = branch_vs_dump(f"{mp}/state", "xfs, reflink")
        unmount(mnt)
    finally:
        subprocess.run(["umount", mp])


try:
    if os.environ.get("BENCH_SKIP_PROVISION") != "1":
        provisioning()
    mnt, _ = branch_vs_dump(f"{WORK}/state", "state_dir's filesystem (ext4 here)")
    if os.environ.get("BENCH_SKIP_RESTORE") != "1":
        restore_minute_back(mnt)
    unmount(mnt)
    xfs_branch()
finally:
    for m in mounts:
        unmount(m)
    shutil.rmtree(WORK, ignore_errors=True)
