"""Honest outages (issue 9, 5): a failed first list is an EIO from `ls`,
never an empty directory; .dbosfs/health and info's `updated:` say how old
the state is while the API is unreachable."""
import errno
import os
import pathlib
import re
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import (available_instance, cloud_certs, fake_cloud,  # noqa: F401,E402
                           mount_cloud, wait_until)
from conftest import errno_of  # noqa: E402

LIST = "GET /databases"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def updated(m, name):
    return re.search(r"^updated: (.*)$", m.read(name, "info"), re.M).group(1)


def test_failed_first_list_is_eio_not_empty(mount_factory, fake_cloud):
    fc = fake_cloud
    fc.add_instances([available_instance("alpha")])
    fc.fault(LIST, "status", times=-1, status=500, message="list is down")
    t0 = time.monotonic()
    m = mount_cloud(mount_factory, fc, startup=2)
    assert time.monotonic() - t0 < 2 + 6
    # Retried at mount, with backoff, within the start-up budget.
    assert 2 <= fc.count(LIST) <= 8
    assert errno_of(os.listdir, m.path) == errno.EIO
    msg = m.read(".dbosfs", "last_error")
    assert "ls refused" in msg and "list is down (HTTP 500)" in msg
    health = m.read(".dbosfs", "health")
    assert re.fullmatch(f"unreachable since {STAMP}: .*list is down \\(HTTP 500\\)\n", health)
    fc.clear_faults()
    assert wait_until(lambda: errno_of(os.listdir, m.path) is None, timeout=6)
    assert "alpha" in os.listdir(m.path)
    assert m.read(".dbosfs", "health") == "ok\n"


def test_first_list_transient_failures_are_retried(mount_factory, fake_cloud):
    """Two failed lists at mount, then success: the mount never shows an
    empty or failing directory."""
    fc = fake_cloud
    fc.add_instances([available_instance("alpha")])
    fc.fault(LIST, "status", times=2, status=503, message="busy")
    m = mount_cloud(mount_factory, fc, startup=10)
    assert "alpha" in os.listdir(m.path)
    assert fc.count(LIST) >= 3


def test_outage_health_and_updated(mount_factory, fake_cloud):
    fc = fake_cloud
    fc.add_instances([available_instance("alpha")])
    m = mount_cloud(mount_factory, fc)
    assert m.read(".dbosfs", "health") == "ok\n"
    assert re.fullmatch(STAMP, updated(m, "alpha"))
    fc.fault(LIST, "status", times=-1, status=502, message="gateway down")
    assert wait_until(lambda: m.read(".dbosfs", "health").startswith("unreachable since"),
                      timeout=6)
    assert "gateway down (HTTP 502)" in m.read(".dbosfs", "health")
    stale = updated(m, "alpha")
    time.sleep(2.2)
    # The last known state is still served, and says how old it is.
    assert m.read("alpha", "status") == "available\n"
    assert updated(m, "alpha") == stale
    assert "alpha" in os.listdir(m.path)
    fc.clear_faults()
    assert wait_until(lambda: m.read(".dbosfs", "health") == "ok\n", timeout=6)
    assert wait_until(lambda: updated(m, "alpha") > stale, timeout=4)
