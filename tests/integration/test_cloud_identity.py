"""Secrets follow the instance's identity (issue 9, 2 and 3): a saved
password is forgotten once its instance is gone or was made again
elsewhere; a reset whose outcome is unknown serves no password; a
tombstone ends as soon as the name is back."""
import errno
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import (TEST_TIMEOUT_S, available_instance, cloud_certs,  # noqa: F401,E402
                           fake_cloud, mount_cloud, wait_until)
from conftest import errno_of, write_file  # noqa: E402

RESET = "POST /databases/userdb/credentials"


def made_here(m, fc, name):
    os.mkdir(m.p(name))
    assert m.read(name, "wait").strip() == "available"
    assert m.read(name, "password").strip() == fc.instances()[name]["_password"]


def test_password_forgotten_when_instance_leaves(mount_factory, fake_cloud):
    fc = fake_cloud
    m = mount_cloud(mount_factory, fc)
    made_here(m, fc, "alpha")
    fc.remove_instance("alpha")            # destroyed by another client
    assert wait_until(lambda: not os.path.exists(m.p("alpha")), timeout=5)
    # Forgotten once a second list confirms the omission.
    assert wait_until(lambda: "forgot the saved password of alpha" in m.read(".dbosfs", "log"),
                      timeout=10)
    fc.add_instances([available_instance("alpha")])   # ... and made again there
    assert wait_until(lambda: os.path.isdir(m.p("alpha")), timeout=5)
    assert errno_of(m.read, "alpha", "password") == errno.ENODATA
    assert errno_of(m.read, "alpha", "pgpass") == errno.ENODATA
    assert "forgot the saved password of alpha" in m.read(".dbosfs", "log")


def test_password_forgotten_when_recreated_between_lists(mount_factory, fake_cloud):
    """Destroyed and made again elsewhere within one refresh period: the
    name never leaves the list, but it is provisioning again."""
    fc = fake_cloud
    m = mount_cloud(mount_factory, fc)
    made_here(m, fc, "beta")
    fc.add_instances([available_instance("beta", Status="provisioning", HostName="")])
    assert wait_until(lambda: errno_of(m.read, "beta", "password") == errno.ENODATA,
                      timeout=5)


def test_password_of_instance_gone_while_unmounted(mount_factory, fake_cloud):
    fc = fake_cloud
    m = mount_cloud(mount_factory, fc)
    made_here(m, fc, "gamma")
    m.unmount()
    fc.remove_instance("gamma")
    m.start()
    assert "gamma" not in os.listdir(m.path)
    # Forgotten after the second list (the first could have left it out).
    assert wait_until(lambda: "forgot the saved password of gamma" in m.read(".dbosfs", "log"),
                      timeout=10)
    fc.add_instances([available_instance("gamma")])
    assert wait_until(lambda: os.path.isdir(m.p("gamma")), timeout=5)
    assert errno_of(m.read, "gamma", "password") == errno.ENODATA


def test_one_list_omitting_an_instance_keeps_its_password(mount_factory, fake_cloud):
    """A 200 list that leaves an instance out once (a lagging replica): it
    is gone from view for a period, but its saved password stays; only a
    second list in a row without it forgets the password."""
    fc = fake_cloud
    m = mount_cloud(mount_factory, fc)
    made_here(m, fc, "omega")
    made_here(m, fc, "sigma")
    pw = m.read("omega", "password")
    fc.fault("GET /databases", "omit", names=["omega"])
    assert wait_until(lambda: not os.path.exists(m.p("omega")), timeout=10)
    assert wait_until(lambda: os.path.isdir(m.p("omega")), timeout=10)
    assert m.read("omega", "password") == pw
    assert "forgot the saved password of omega" not in m.read(".dbosfs", "log")
    # Two lists in a row without it: forgotten.
    fc.fault("GET /databases", "omit", names=["sigma"], times=2)
    assert wait_until(lambda: "forgot the saved password of sigma" in m.read(".dbosfs", "log"),
                      timeout=15)
    assert wait_until(lambda: os.path.isdir(m.p("sigma")), timeout=10)
    assert errno_of(m.read, "sigma", "password") == errno.ENODATA
    assert m.read("omega", "password") == pw


def test_reset_with_unknown_outcome_serves_no_password(mount_factory, fake_cloud):
    """The server applies the reset after the client gave up waiting."""
    fc = fake_cloud
    m = mount_cloud(mount_factory, fc)
    made_here(m, fc, "delta")
    fc.fault(RESET, "latency", delay=TEST_TIMEOUT_S + 1.5)
    assert errno_of(write_file, m.p("delta", "password"), "NewPassw0rd_1\n") == \
        errno.ETIMEDOUT
    msg = m.read("delta", "last_error")
    assert "outcome unknown" in msg and "new password or still the old one" in msg
    assert errno_of(m.read, "delta", "password") == errno.ENODATA
    assert wait_until(lambda: fc.instances()["delta"]["_password"] == "NewPassw0rd_1",
                      timeout=5)
    # Writing it again makes it known.
    write_file(m.p("delta", "password"), "NewPassw0rd_2\n")
    assert m.read("delta", "password") == "NewPassw0rd_2\n"


def test_refused_reset_keeps_the_old_password(mount_factory, fake_cloud):
    fc = fake_cloud
    m = mount_cloud(mount_factory, fc)
    made_here(m, fc, "eps")
    old = m.read("eps", "password")
    fc.fault(RESET, "status", status=500, message="nope")
    assert errno_of(write_file, m.p("eps", "password"), "NewPassw0rd_1\n") == errno.EIO
    assert m.read("eps", "password") == old


def test_tombstone_ends_when_name_is_back(mount_factory, fake_cloud):
    """rmdir through the mount, then another client makes the name again:
    it shows within a refresh or two, not after 10 minutes."""
    fc = fake_cloud
    fc.add_instances([available_instance("zeta"), available_instance("eta")])
    m = mount_cloud(mount_factory, fc)
    for name, status in (("zeta", "available"), ("eta", "provisioning")):
        write_file(m.p(name, "confirm"), name + "\n")
        os.rmdir(m.p(name))
        assert not os.path.exists(m.p(name))
        time.sleep(1.5)  # a list shows it gone
        fc.add_instances([available_instance(name, Status=status)])
        t0 = time.monotonic()
        assert wait_until(lambda: os.path.isdir(m.p(name)), timeout=5), name
        assert time.monotonic() - t0 < 4
        assert errno_of(os.mkdir, m.p(name)) == errno.EEXIST


def test_recreated_at_once_provisioning_ends_tombstone(mount_factory, fake_cloud):
    fc = fake_cloud
    fc.add_instances([available_instance("theta")])
    m = mount_cloud(mount_factory, fc)
    write_file(m.p("theta", "confirm"), "theta\n")
    os.rmdir(m.p("theta"))
    fc.add_instances([available_instance("theta", Status="provisioning")])
    assert wait_until(lambda: os.path.isdir(m.p("theta")), timeout=5)
    assert errno_of(m.read, "theta", "password") == errno.ENODATA
