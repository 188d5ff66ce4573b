#!/usr/bin/env bash
# What idle local instances cost (issue 11 item 6), printed as numbers:
# processes, PSS, disk and CPU per minute, per instance and for N of them,
# plus what dbosfs itself (its prober included) costs meanwhile.
# Usage: scripts/idle-cost.sh [N] [SECONDS]   (default 30 instances, 60 s)
#   DBOSFS_BIN=path  the binary to measure (default build/dbosfs), so an
#                    older build can be measured the same way for a before/after.
# Runs with spares=0 so that only the instances are counted.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
count=${1:-30}
secs=${2:-60}
bin=${DBOSFS_BIN:-$repo/build/dbosfs}
[ -x "$bin" ] || "$repo/scripts/build.sh" build

work=$(mktemp -d /tmp/dbosfs-idle-XXXXXX)
chmod 711 "$work"
mnt="$work/mnt"
mkdir -p "$mnt"
cleanup() {
	fusermount3 -u -z "$mnt" 2>/dev/null || true
	for i in $(seq 100); do pgrep -f "dbosfs.*$work" >/dev/null || break; sleep 0.2; done
	rm -rf "$work"
}
trap cleanup EXIT

"$bin" -o "state_dir=$work/state,spares=0" "$mnt"

IDLE_N=$count IDLE_SECS=$secs IDLE_MNT=$mnt IDLE_STATE=$work/state /usr/bin/python3 - <<'PY'
import os, subprocess, time

n = int(os.environ["IDLE_N"]); secs = int(os.environ["IDLE_SECS"])
mnt = os.environ["IDLE_MNT"]; state = os.environ["IDLE_STATE"]
tick = os.sysconf("SC_CLK_TCK")

for i in range(n):
    os.mkdir(f"{mnt}/idle{i}")

def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    # ppid; utime+stime+cutime+cstime: a postmaster's reaped children
    # (the backends of dbosfs's probes) count too
    return int(rest[1]), sum(int(x) for x in rest[11:15])

def procs():
    """Postmasters of this state directory and all their children; dbosfs."""
    pms, daemon = set(), None
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"/postgres") and b"-D" in argv and \
                argv[argv.index(b"-D") + 1].startswith(state.encode()):
            pms.add(int(p))
        if b"dbosfs" in os.path.basename(argv[0]) and any(state.encode() in a for a in argv):
            daemon = int(p)
    kids = set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if stat(int(p))[0] in pms:
                    kids.add(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return pms | kids, daemon

def pss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

def cpu(pids):
    t = 0
    for p in pids:
        try:
            t += stat(p)[1]
        except OSError:
            pass
    return t

time.sleep(10)  # startup work settles
pg, daemon = procs()
c0, d0, t0 = cpu(pg), cpu([daemon]) if daemon else 0, time.time()
time.sleep(secs)
pg2, _ = procs()
c1, d1, t1 = cpu(pg2), cpu([daemon]) if daemon else 0, time.time()
mins = (t1 - t0) / 60
pss = sum(pss_kib(p) for p in pg2)
disk = int(subprocess.run(["du", "-sk", f"{state}/local/instances"], capture_output=True,
                          text=True).stdout.split()[0])
pg_cpu = (c1 - c0) / tick / mins  # CPU seconds per minute
d_cpu = (d1 - d0) / tick / mins
print(f"idle cost of {n} instances over {t1 - t0:.0f} s "
      f"(load average {open('/proc/loadavg').read().split()[0]} on {os.cpu_count()} cores):")
print(f"  processes: {len(pg2)} ({len(pg2) / n:.1f} per instance)")
print(f"  PSS: {pss / 1024:.0f} MiB ({pss / 1024 / n:.1f} MiB per instance)")
print(f"  disk: {disk / 1024:.0f} MiB ({disk / 1024 / n:.1f} MiB per instance)")
print(f"  CPU of the servers: {pg_cpu:.2f} s per minute "
      f"({pg_cpu / 60 * 100 / n:.3f}% of a core per instance)")
print(f"  CPU of dbosfs (probes included): {d_cpu:.2f} s per minute "
      f"({d_cpu / 60 * 100:.2f}% of a core)")
for i in range(n):
    with open(f"{mnt}/idle{i}/confirm", "w") as f:
        f.write(f"idle{i}\n")
    os.rmdir(f"{mnt}/idle{i}")
PY
