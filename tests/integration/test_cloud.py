"""The cloud provider's tree, against the stand-in DBOS Cloud server."""
import errno
import json
import os
import pathlib
import stat
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import (available_instance, cloud_certs, cloud_mount,  # noqa: F401,E402
                           fake_cloud, mount_cloud, wait_until)
from conftest import errno_of, write_file  # noqa: E402


def test_meta_files(cloud_mount, fake_cloud):
    m = cloud_mount
    assert m.read(".dbosfs", "provider").strip() == f"cloud {fake_cloud.domain}"
    assert m.read(".dbosfs", "account").strip() == "alice (organization acme)"
    # The profile call proves the API was reached with the right token.
    assert fake_cloud.count("GET /user/profile") == 1


def test_existing_instances_listed(mount_factory, fake_cloud):
    fake_cloud.add_instances([available_instance("mydb", DBOSAdminName="dbos_adm"),
                              available_instance("other_db", Status="backing-up", Port=6543)])
    m = mount_cloud(mount_factory, fake_cloud)
    assert sorted(n for n in os.listdir(m.path) if not n.startswith(".")) == \
        ["mydb", "other_db"]
    assert m.read("mydb", "status") == "available\n"
    assert m.read("other_db", "status") == "backing-up\n"
    info = m.read("mydb", "info")
    assert "name: mydb" in info and "host: mydb.db.fake-dbos.test" in info
    assert "port: 5432" in info and "username: dbos_user" in info
    j = json.loads(m.read("other_db", "info.json"))
    assert j["PostgresInstanceName"] == "other_db" and j["Port"] == 6543
    assert j["IsLinked"] is False and j["SupabaseReference"] is None
    assert m.read("mydb", "url").strip() == \
        "postgresql://dbos_user@mydb.db.fake-dbos.test:5432/postgres"
    env = dict(line.split("=", 1) for line in m.read("mydb", "env").splitlines())
    assert env["PGHOST"] == "mydb.db.fake-dbos.test" and env["PGPORT"] == "5432"
    assert env["PGUSER"] == "dbos_user" and env["PGDATABASE"] == "postgres"


def test_field_variants(mount_factory, fake_cloud):
    """Old servers' AdminUsername, missing optional fields, unknown fields,
    and entries that are not instances at all."""
    fake_cloud.add_instances([
        {"PostgresInstanceName": "legacy", "Status": "available", "HostName": "h1",
         "Port": 5433, "AdminUsername": "old_user", "IsLinked": False},
        {"PostgresInstanceName": "sparse"},
        {"PostgresInstanceName": "extra", "Status": "available", "HostName": "h3",
         "Port": 5432, "DatabaseUsername": "u3", "NewField": {"nested": [1, 2]},
         "AppCount": 7, "SupabaseReference": "abcdefgh", "IsLinked": True},
    ])
    m = mount_cloud(mount_factory, fake_cloud)
    assert "username: old_user" in m.read("legacy", "info")
    assert m.read("legacy", "url").strip() == "postgresql://old_user@h1:5433/postgres"
    assert os.path.isdir(m.p("sparse"))
    assert "linked: yes" in m.read("extra", "info")
    # Issue 9, 6: Supabase-linked instances are reached as postgres.REF.
    assert m.read("extra", "url").strip() == "postgresql://postgres.abcdefgh@h3:5432/postgres"
    assert "PGUSER=postgres.abcdefgh\n" in m.read("extra", "env")
    assert json.loads(m.read("extra", "info.json"))["SupabaseReference"] == "abcdefgh"


def test_mkdir_provisions_then_wait(cloud_mount, fake_cloud):
    m = cloud_mount
    fake_cloud.reset_counts()
    t0 = time.monotonic()
    os.mkdir(m.p("fsdb1"))
    assert time.monotonic() - t0 < 2, "mkdir must not wait for provisioning"
    assert m.read("fsdb1", "status") == "provisioning\n"
    srv = fake_cloud.instances()["fsdb1"]
    assert srv["DatabaseUsername"] == "dbos_user"
    # The password dbosfs generated is the one the server got, and is readable.
    pw = m.read("fsdb1", "password").strip()
    assert pw == srv["_password"] and len(pw) >= 16
    assert stat.S_IMODE(os.stat(m.p("fsdb1", "password")).st_mode) == 0o600
    assert m.read("fsdb1", "wait").strip() == "available"
    assert m.read("fsdb1", "status") == "available\n"
    assert m.read("fsdb1", "pgpass").strip() == \
        f"fsdb1.db.fake-dbos.test:5432:*:dbos_user:{pw}"
    assert fake_cloud.count("POST /databases/userdb") == 1
    # No secret in the daemon's log.
    assert pw not in m.log() and pw not in m.read(".dbosfs", "log")


def test_mkdir_invalid_name_sends_nothing(cloud_mount, fake_cloud):
    fake_cloud.reset_counts()
    assert errno_of(os.mkdir, cloud_mount.p("Bad-Name")) == errno.EINVAL
    assert fake_cloud.count("POST /databases/userdb") == 0


def test_password_unknown_is_enodata(mount_factory, fake_cloud):
    fake_cloud.add_instances([available_instance("clionly")], password="SomeonesPass1")
    m = mount_cloud(mount_factory, fake_cloud)
    assert errno_of(m.read, "clionly", "password") == errno.ENODATA
    assert errno_of(m.read, "clionly", "pgpass") == errno.ENODATA


def test_password_reset(cloud_mount, fake_cloud):
    m = cloud_mount
    os.mkdir(m.p("resetme"))
    assert m.read("resetme", "wait").strip() == "available"
    write_file(m.p("resetme", "password"), "NewPassw0rd_x\n")
    assert fake_cloud.instances()["resetme"]["_password"] == "NewPassw0rd_x"
    assert m.read("resetme", "password").strip() == "NewPassw0rd_x"
    assert "NewPassw0rd_x" not in m.log()
    # Invalid passwords never reach the API.
    fake_cloud.reset_counts()
    assert errno_of(write_file, m.p("resetme", "password"), "short\n") == errno.EINVAL
    assert fake_cloud.count("POST /databases/userdb/credentials") == 0


def test_reset_while_provisioning_is_ebusy(cloud_mount, fake_cloud):
    m = cloud_mount
    fake_cloud.config(provision_delay=30)
    os.mkdir(m.p("busydb"))
    assert errno_of(write_file, m.p("busydb", "password"), "NewPassw0rd_y\n") == errno.EBUSY
    assert "(HTTP 409)" in m.read("busydb", "last_error")


def test_linked_instance(mount_factory, fake_cloud):
    fake_cloud.add_instances([available_instance("linked1", IsLinked=True,
                                                 DatabaseUsername="dbosadmin")])
    m = mount_cloud(mount_factory, fake_cloud)
    fake_cloud.reset_counts()
    assert errno_of(write_file, m.p("linked1", "password"), "NewPassw0rd_z\n") == errno.EPERM
    assert "linked" in m.read("linked1", "last_error")
    assert fake_cloud.count("POST /databases/userdb/credentials") == 0
    assert errno_of(os.rmdir, m.p("linked1")) == errno.EBUSY
    write_file(m.p("linked1", "confirm"), "linked1\n")
    os.rmdir(m.p("linked1"))
    assert fake_cloud.count("DELETE /databases/byod") == 1
    assert fake_cloud.count("DELETE /databases/userdb") == 0
    assert "linked1" not in fake_cloud.instances()
    assert not os.path.exists(m.p("linked1"))


def test_confirm_then_rmdir_destroys(cloud_mount, fake_cloud):
    m = cloud_mount
    os.mkdir(m.p("doomed"))
    assert errno_of(os.rmdir, m.p("doomed")) == errno.EBUSY
    assert "doomed" in fake_cloud.instances()
    # rm -rf must never destroy.
    subprocess.run(["rm", "-rf", str(m.p("doomed"))], stderr=subprocess.DEVNULL)
    assert "doomed" in fake_cloud.instances()
    write_file(m.p("doomed", "confirm"), "doomed\n")
    os.rmdir(m.p("doomed"))
    assert "doomed" not in fake_cloud.instances()
    assert fake_cloud.count("DELETE /databases/userdb") == 1
    assert "doomed" not in os.listdir(m.path)
    # And it stays gone after the next refresh.
    time.sleep(1.5)
    assert "doomed" not in os.listdir(m.path)


def test_changes_made_elsewhere_show_up(cloud_mount, fake_cloud):
    m = cloud_mount
    fake_cloud.add_instances([available_instance("elsewhere")])
    assert wait_until(lambda: os.path.isdir(m.p("elsewhere")), timeout=5)
    fake_cloud.add_instances([available_instance("elsewhere", Status="unavailable")])
    assert wait_until(lambda: m.read("elsewhere", "status") == "unavailable\n", timeout=5)


def test_mkdir_name_taken_on_server(cloud_mount, fake_cloud):
    m = cloud_mount
    fake_cloud.fault("POST /databases/userdb", "status", status=409,
                     message="database instance racy already exists", requestID="req-409")
    assert errno_of(os.mkdir, m.p("racy")) == errno.EEXIST
    msg = m.read(".dbosfs", "last_error")
    assert "[req-409] Failed to provision racy: database instance racy already exists " \
        "(HTTP 409)" in msg
    assert not os.path.exists(m.p("racy"))


def test_connections_are_reused(mount_factory, fake_cloud):
    fake_cloud.add_instances([available_instance("reuse1")])
    m = mount_cloud(mount_factory, fake_cloud)
    fake_cloud.reset_counts()
    for i in range(10):
        write_file(m.p("reuse1", "password"), f"NewPassw0rd_{i}\n")
    time.sleep(2.5)  # and a couple of background listings
    counts = fake_cloud.counts()
    assert counts["POST /databases/userdb/credentials"] == 10
    assert counts["GET /databases"] >= 2
    # The admin calls of this test open their own connections: at most 3.
    # Without reuse that would be 12 or more.
    assert fake_cloud.connections() <= 3 + 3, fake_cloud.connections()


def test_token_expiring_while_mounted_is_refreshed_first(mount_factory, fake_cloud):
    """A token whose exp passes during the mount is refreshed before use,
    without a 401 round trip, and written back."""
    creds = json.loads(fake_cloud.credentials.read_text())
    creds["token"] = fake_cloud.new_token(expires_in=3)["token"]
    fake_cloud.credentials.write_text(json.dumps(creds))
    fake_cloud.credentials.chmod(0o600)
    fake_cloud.add_instances([available_instance("later")])
    m = mount_cloud(mount_factory, fake_cloud)
    time.sleep(4)
    write_file(m.p("later", "password"), "NewPassw0rd_l\n")
    assert fake_cloud.count("POST /oauth/token") == 1
    statuses = [r["status"] for r in fake_cloud.admin("GET", "requests")["requests"]]
    assert 401 not in statuses
    assert json.loads(fake_cloud.credentials.read_text())["token"] != creds["token"]


def test_apps_per_instance(mount_factory, fake_cloud):
    """Issue 9, 9: NAME/apps lists the applications deployed on the
    instance, from one GET /applications per refresh, never per read."""
    fc = fake_cloud
    fc.add_instances([available_instance("appdb"), available_instance("lonely")])
    fc.set_apps([
        {"Name": "shop", "ID": "1", "PostgresInstanceName": "appdb",
         "ApplicationDatabaseName": "shop_db", "Status": "AVAILABLE", "Version": "3",
         "AppURL": "https://acme-shop.cloud.dbos.dev", "ExecutorsMemoryMib": 512},
        {"Name": "blog", "ID": "2", "PostgresInstanceName": "appdb",
         "ApplicationDatabaseName": "blog", "Status": "UNAVAILABLE", "Version": "1"},
        {"Name": "other", "ID": "3", "PostgresInstanceName": "elsewhere", "Status": "AVAILABLE"},
    ])
    m = mount_cloud(mount_factory, fc)
    assert wait_until(lambda: "shop" in m.read("appdb", "apps"), timeout=4)
    assert m.read("appdb", "apps") == (
        "blog UNAVAILABLE blog 1 -\n"
        "shop AVAILABLE shop_db 3 https://acme-shop.cloud.dbos.dev\n")
    assert m.read("lonely", "apps") == ""
    fc.reset_counts()
    for _ in range(50):
        m.read("appdb", "apps")
    assert fc.count("GET /applications") <= 3  # the refresher's, not the reads'
    assert fc.count("GET /databases/userdb/info") == 0
