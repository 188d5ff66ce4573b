"""mkdir and rmdir never hold the mount longer than the grace (issue 9, 1):
past grace_ms the call returns, the operation goes on in the background,
and ls and cat of other instances stay fast while it runs."""
import errno
import os
import pathlib
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import (available_instance, cloud_certs, fake_cloud,  # noqa: F401,E402
                           mount_cloud, wait_until)
from conftest import errno_of, write_file  # noqa: E402

PROVISION = "POST /databases/userdb"
DESTROY = "DELETE /databases/userdb"


def timed(fn, *args):
    t0 = time.monotonic()
    r = fn(*args)
    return r, time.monotonic() - t0


def test_5s_latency_never_freezes_the_mount(mount_factory, fake_cloud):
    fc = fake_cloud
    fc.add_instances([available_instance(n) for n in ("alpha", "beta", "gamma")])
    m = mount_cloud(mount_factory, fc, timeout=15)
    write_file(m.p("beta", "confirm"), "beta\n")
    fc.fault(PROVISION, "latency", times=-1, delay=5)
    fc.fault(DESTROY, "latency", times=-1, delay=5)
    took, errs = {}, []

    def run(name, fn, path):
        try:
            _, took[name] = timed(fn, path)
        except OSError as e:
            errs.append(e)

    t0 = time.monotonic()
    ts = [threading.Thread(target=run, args=(f"new{i}", os.mkdir, m.p(f"new{i}")))
          for i in range(3)]
    ts.append(threading.Thread(target=run, args=("beta", os.rmdir, m.p("beta"))))
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs, errs
    # Each holds the root for the grace (0.5 s) at most; they queue in the kernel.
    assert max(took.values()) < 4 * 0.5 + 1, took
    assert time.monotonic() - t0 < 4, "the operations did not go on in the background"
    # While the API still works on them: other instances answer at once.
    for _ in range(3):
        names, t_ls = timed(os.listdir, m.path)
        assert t_ls < 0.5, t_ls
        status, t_cat = timed(m.read, "gamma", "status")
        assert status == "available\n" and t_cat < 0.5, t_cat
        _, t_info = timed(m.read, "alpha", "info")
        assert t_info < 0.5, t_info
    assert {"new0", "new1", "new2", "alpha", "gamma"} <= set(names)
    assert m.read("new0", "status") == "provisioning\n"
    assert m.read("beta", "status") == "deleting\n"
    assert time.monotonic() - t0 < 5, "the checks ran after the API had answered"
    # The outcomes land.
    for i in range(3):
        assert m.read(f"new{i}", "wait") == "available\n"
        assert m.read(f"new{i}", "password").strip() == fc.instances()[f"new{i}"]["_password"]
    assert wait_until(lambda: not os.path.exists(m.p("beta")), timeout=5)
    assert "beta" not in fc.instances()
    log = m.read(".dbosfs", "log")
    assert "provisioning goes on in the background" in log
    assert "destroyed beta (in the background)" in log


def test_answer_within_grace_keeps_errno(mount_factory, fake_cloud):
    fc = fake_cloud
    m = mount_cloud(mount_factory, fc)
    fc.fault(PROVISION, "status", status=409, message="taken", delay=0.2)
    assert errno_of(os.mkdir, m.p("taken")) == errno.EEXIST
    assert not os.path.exists(m.p("taken"))
    fc.fault(PROVISION, "status", status=400, message="bad", delay=0.1)
    assert errno_of(os.mkdir, m.p("badone")) == errno.EINVAL
    assert "bad (HTTP 400)" in m.read(".dbosfs", "last_error")
    assert not os.path.exists(m.p("badone"))


def test_provision_failing_after_the_grace_shows_failed(mount_factory, fake_cloud):
    """Chosen behaviour: the directory stays with status `failed` and the
    reason, so `cat NAME/wait` reports it; rmdir then removes it."""
    fc = fake_cloud
    m = mount_cloud(mount_factory, fc)
    fc.fault(PROVISION, "status", status=503, message="no capacity", delay=2)
    _, took = timed(os.mkdir, m.p("late"))
    assert took < 1.5
    assert m.read("late", "status") == "provisioning\n"
    assert m.read("late", "wait") == "failed\n"
    msg = m.read("late", "last_error")
    assert "mkdir late failed in the background (EAGAIN)" in msg and "no capacity" in msg
    assert "no capacity" in m.read(".dbosfs", "last_error")
    assert "late" not in fc.instances()
    time.sleep(1.5)  # refreshes do not make it vanish
    assert m.read("late", "status") == "failed\n"
    assert errno_of(m.read, "late", "password") == errno.ENODATA
    write_file(m.p("late", "confirm"), "late\n")
    os.rmdir(m.p("late"))
    assert wait_until(lambda: not os.path.exists(m.p("late")), timeout=3)


def test_destroy_failing_after_the_grace_restores(mount_factory, fake_cloud):
    fc = fake_cloud
    fc.add_instances([available_instance("keep")])
    m = mount_cloud(mount_factory, fc)
    write_file(m.p("keep", "confirm"), "keep\n")
    fc.fault(DESTROY, "status", status=500, message="cannot delete now", delay=1.5)
    os.rmdir(m.p("keep"))
    assert m.read("keep", "status") == "deleting\n"
    assert wait_until(lambda: m.read("keep", "status") == "available\n", timeout=5)
    assert "rmdir keep failed in the background (EIO)" in m.read("keep", "last_error")
    assert "keep" in fc.instances()


def test_unmount_with_a_background_operation(mount_factory, fake_cloud):
    fc = fake_cloud
    m = mount_cloud(mount_factory, fc, timeout=20)
    fc.fault(PROVISION, "latency", delay=15)
    os.mkdir(m.p("pending"))
    t0 = time.monotonic()
    m.unmount()  # asserts a clean exit, no sanitizer report
    assert time.monotonic() - t0 < 5
