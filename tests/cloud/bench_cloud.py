#!/usr/bin/python3
"""Cloud provider benchmark, against the stand-in server on this machine:
  - cat NAME/status through the mount vs `dbos-cloud db status NAME` (medians)
  - ls -l of 1,000 instances: time and API requests it cost
  - daemon RSS with 1,000 instances
Prints "key value" lines. Usage: bench_cloud.py [--dbosfs BIN] [--runs N]"""
import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from cloud_harness import FakeCloud, make_certs, dbosfs_bin  # noqa: E402

CLI = pathlib.Path(os.environ.get("DBOSFS_CLI_CACHE", "/tmp/dbosfs-cloud-npm")) / \
    "node_modules" / ".bin" / "dbos-cloud"


def timed(fn, runs):
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dbosfs", default=dbosfs_bin())
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--cli-runs", type=int, default=5)
    ap.add_argument("--instances", type=int, default=1000)
    args = ap.parse_args()

    base = pathlib.Path(tempfile.mkdtemp(prefix="dbosfs-cloud-bench-", dir="/tmp"))
    fc = None
    daemon = None
    mnt = base / "mnt"
    mnt.mkdir()
    try:
        certs = make_certs(base / "certs")
        fc = FakeCloud(base / "srv", certs, provision_delay=0)
        fc.bulk(args.instances, prefix="db")
        name = "db00000"
        opts = fc.mount_options(state_dir=str(base / "state"), provider="cloud")
        o = ",".join(f"{k}={v}" for k, v in opts.items())
        log = open(base / "daemon.log", "wb")
        daemon = subprocess.Popen([args.dbosfs, "-f", "-o", o, str(mnt)], stdout=log,
                                  stderr=log)
        deadline = time.time() + 30
        while not os.path.ismount(mnt):
            if daemon.poll() is not None or time.time() > deadline:
                sys.exit("dbosfs did not mount: " + (base / "daemon.log").read_text())
            time.sleep(0.02)
        status = mnt / name / "status"
        status.read_text()  # warm the kernel's dentries like a real user would

        print(f"cloud_read_status_median_ms {timed(status.read_text, args.runs):.3f}")
        cat = ["cat", str(status)]
        print("cloud_cat_status_process_median_ms "
              f"{timed(lambda: subprocess.run(cat, check=True, stdout=subprocess.DEVNULL), args.runs):.2f}")
        if CLI.exists():
            env = dict(os.environ, DBOS_DOMAIN=fc.domain, NODE_EXTRA_CA_CERTS=fc.ca)

            def cli_status():
                subprocess.run([str(CLI), "db", "status", name], cwd=fc.app_dir, env=env,
                               check=True, stdout=subprocess.DEVNULL)
            print(f"cloud_cli_db_status_median_ms {timed(cli_status, args.cli_runs):.1f}")
        else:
            print("cloud_cli_db_status_median_ms skipped (npm install @dbos-inc/dbos-cloud "
                  f"into {CLI.parents[2]})")

        fc.reset_counts()
        t0 = time.perf_counter()
        subprocess.run(["ls", "-l", str(mnt)], check=True, stdout=subprocess.DEVNULL)
        t_ls = (time.perf_counter() - t0) * 1000
        for i in range(args.instances):
            (mnt / f"db{i:05d}" / "status").read_text()
        t_all = (time.perf_counter() - t0) * 1000
        counts = fc.counts()
        print(f"cloud_ls_l_{args.instances}_ms {t_ls:.1f}")
        print(f"cloud_ls_l_plus_{args.instances}_status_ms {t_all:.1f}")
        print(f"cloud_ls_l_plus_status_api_requests {sum(counts.values())} "
              f"(GET /databases: {counts.get('GET /databases', 0)}, by the background "
              f"refresher every 2 s)")
        rss = next(int(line.split()[1]) for line in open(f"/proc/{daemon.pid}/status")
                   if line.startswith("VmRSS:"))
        print(f"cloud_daemon_rss_{args.instances}_kib {rss}")
    finally:
        if daemon:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
        if fc:
            fc.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
