"""1,000 instances: `ls -l` and reading every status cost a few listings of
the provider (one per refresh period), never one request per instance."""
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import cloud_certs, fake_cloud, mount_cloud  # noqa: F401,E402

N = 1000


def test_thousand_instances(mount_factory, fake_cloud):
    fake_cloud.bulk(N, prefix="db")
    m = mount_cloud(mount_factory, fake_cloud)
    fake_cloud.reset_counts()
    t0 = time.monotonic()
    r = subprocess.run(["ls", "-l", str(m.path)], capture_output=True, text=True, check=True)
    t_ls = time.monotonic() - t0
    assert sum(1 for line in r.stdout.splitlines() if " db0" in line) == N
    statuses = [(m.path / f"db{i:05d}" / "status").read_text() for i in range(N)]
    elapsed = time.monotonic() - t0
    assert statuses == ["available\n"] * N
    counts = fake_cloud.counts()
    lists = counts.get("GET /databases", 0)
    # refresh=1: at most one listing per second of the test, plus one in flight.
    assert lists <= elapsed + 2, (lists, elapsed)
    assert counts.get("GET /databases/userdb/info", 0) == 0
    assert sum(counts.values()) == lists, counts
    rss_kib = next(int(line.split()[1]) for line in
                   open(f"/proc/{m.proc.pid}/status") if line.startswith("VmRSS:"))
    print(f"\nls -l of {N}: {t_ls * 1000:.0f} ms; ls -l + {N} status reads: "
          f"{elapsed * 1000:.0f} ms; GET /databases: {lists}; daemon RSS {rss_kib} KiB")
    # Sanitizer builds reserve far more memory: judge plain builds only.
    if "libasan" not in open(f"/proc/{m.proc.pid}/maps").read():
        assert rss_kib < 64 * 1024
