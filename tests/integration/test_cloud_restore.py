"""NAME/restore and NAME/branch on the cloud provider, against the stand-in
server: both are POST /databases/userdb/NAME/restore (branch = a restore to
the present) and return once accepted; NEWNAME/wait follows."""
import errno
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import (available_instance, cloud_certs, fake_cloud,  # noqa: F401,E402
                           mount_cloud)
from conftest import errno_of, write_file  # noqa: E402


def test_cloud_restore_and_branch(mount_factory, fake_cloud):
    fake_cloud.add_instances([available_instance("mydb")])
    m = mount_cloud(mount_factory, fake_cloud)
    write_file(m.p("mydb", "restore"), "2026-11-30T21:00:00Z restored\n")
    assert fake_cloud.count("POST /databases/userdb/restore") == 1
    assert m.read("restored", "status").strip() == "provisioning"
    assert m.read("restored", "wait").strip() == "available"
    write_file(m.p("mydb", "branch"), "branched\n")
    assert fake_cloud.count("POST /databases/userdb/restore") == 2
    assert m.read("branched", "wait").strip() == "available"
    assert errno_of(write_file, m.p("mydb", "branch"), "restored\n") == errno.EEXIST
    assert errno_of(write_file, m.p("mydb", "restore"), "yesterday x_new\n") == errno.EINVAL
    assert fake_cloud.count("POST /databases/userdb/restore") == 2
    assert "restore is not available" not in m.read("mydb", "last_error")
