""".dbosfs/link on the cloud provider, against the stand-in server: writing
"NAME postgresql://ADMIN[:PASSWORD]@HOST[:PORT]" is POST /databases/byod as
`dbos-cloud db link` sends it; a missing password comes from the writer's
~/.pgpass; confirm + rmdir unlinks (DELETE /databases/byod/NAME) and never
drops data."""
import errno
import os
import pathlib
import stat
import subprocess
import sys
import threading

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import (cloud_certs, fake_cloud, mount_cloud,  # noqa: F401,E402
                           wait_until)
from conftest import errno_of, write_file  # noqa: E402

PW = "Linked_Pass1x"
PGPASS_PW = "FromPgpass_2y"


def shell_write(path, line, env):
    """Writes line to path from a shell of its own (the writer whose HOME
    dbosfs reads); returns the exit status."""
    return subprocess.run(["/bin/sh", "-c", 'printf "%s\\n" "$LINE" > "$TARGET"'],
                          env=dict(env, LINE=line, TARGET=str(path)),
                          capture_output=True, timeout=60).returncode


def saved_password_files(m, name):
    return [p for p in (m.state_dir / "passwords").rglob(name) if p.is_file()]


def test_cloud_link_and_unlink(mount_factory, fake_cloud, tmp_path):
    m = mount_cloud(mount_factory, fake_cloud)
    link = m.p(".dbosfs", "link")
    assert "postgresql://ADMIN" in m.read(".dbosfs", "link")

    # 1. A password in the URL.
    write_file(link, f"mine postgresql://dbosadmin:{PW}@db.example.test:6543\n")
    srv = fake_cloud.instances()["mine"]
    assert srv["_link_body"] == {"Name": "mine", "HostName": "db.example.test", "Port": 6543,
                                 "captureProvenance": False}
    assert srv["_password"] == PW and srv["IsLinked"] is True
    assert "mine" in os.listdir(m.path)
    info = m.read("mine", "info")
    assert "linked: yes" in info
    assert m.read("mine", "url").strip() == "postgresql://dbosadmin@db.example.test:6543/postgres"
    assert m.read("mine", "password").strip() == PW
    assert stat.S_IMODE(os.stat(m.p("mine", "password")).st_mode) == 0o600
    assert m.read("mine", "pgpass").strip() == f"db.example.test:6543:*:dbosadmin:{PW}"
    files = saved_password_files(m, "mine")
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)

    # 2. No password: the writer's ~/.pgpass, as libpq reads it (first match,
    # wildcards, escaped ':'); another admin goes in dbosAdminName; a Supabase
    # reference in the URL query becomes supabaseReference.
    home = tmp_path / "home"
    home.mkdir()
    pgpass = home / ".pgpass"
    pgpass.write_text("# comment\n"
                      "other.test:*:*:appadmin:WrongOne_99\n"
                      f"sb.example.test:5432:*:appadmin:{PGPASS_PW}\n"
                      "*:*:*:*:Fallback_77z\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    pgpass.chmod(0o644)  # libpq ignores a group/world-readable file: so does dbosfs
    assert shell_write(link, "supa postgresql://appadmin@sb.example.test?supabase_ref=abcdefgh",
                       env) != 0
    assert "group or world access" in m.read(".dbosfs", "last_error")
    assert "supa" not in fake_cloud.instances()
    pgpass.chmod(0o600)
    assert shell_write(link, "supa postgresql://appadmin@sb.example.test?supabase_ref=abcdefgh",
                       env) == 0
    srv = fake_cloud.instances()["supa"]
    assert srv["_password"] == PGPASS_PW
    assert srv["_link_body"] == {"Name": "supa", "HostName": "sb.example.test", "Port": 5432,
                                 "captureProvenance": False, "supabaseReference": "abcdefgh",
                                 "dbosAdminName": "appadmin"}
    assert m.read("supa", "password").strip() == PGPASS_PW
    assert m.read("supa", "url").strip() == "postgresql://postgres.abcdefgh@sb.example.test:5432/postgres"
    # A URL whose host no line of the file matches except the wildcard one.
    assert shell_write(link, "wild postgresql://someone@w.example.test:7000", env) == 0
    assert fake_cloud.instances()["wild"]["_password"] == "Fallback_77z"

    # 3. Bad input: EINVAL, the API never called, nothing saved.
    fake_cloud.reset_counts()
    for bad in ["justaname",
                f"Bad-Name postgresql://dbosadmin:{PW}@h.test",
                f"okname http://dbosadmin:{PW}@h.test",
                f"okname postgresql://dbosadmin:{PW}@h.test:99999",
                f"okname postgresql://dbosadmin:{PW}@",
                "okname postgresql://dbosadmin:short@h.test",
                f"okname postgresql://dbosadmin:{PW}@h.test?sslmode=require"]:
        assert errno_of(write_file, link, bad + "\n") == errno.EINVAL, bad
        err = m.read(".dbosfs", "last_error")
        assert "link" in err and PW not in err, (bad, err)
    # No password anywhere: no ~/.pgpass match.
    empty_home = tmp_path / "empty"
    empty_home.mkdir()
    assert shell_write(link, "okname postgresql://dbosadmin@h.test",
                       dict(env, HOME=str(empty_home))) != 0
    assert "pgpass" in m.read(".dbosfs", "last_error")
    assert fake_cloud.count("POST /databases/byod") == 0
    assert "okname" not in os.listdir(m.path) and not saved_password_files(m, "okname")

    # 4. A name that is taken: EEXIST, its saved password untouched.
    assert errno_of(write_file, link, f"mine postgresql://dbosadmin:Other_Pass9@h.test\n") \
        == errno.EEXIST
    assert m.read("mine", "password").strip() == PW
    # Taken on the server but not yet in this mount's list: the API's 409.
    fake_cloud.add_instances([{"PostgresInstanceName": "hidden", "Status": "available",
                               "HostName": "x", "Port": 5432, "DatabaseUsername": "u",
                               "IsLinked": False, "SupabaseReference": None}])
    assert errno_of(write_file, link, f"hidden postgresql://dbosadmin:{PW}@h.test\n") \
        == errno.EEXIST
    assert "exists" in m.read(".dbosfs", "last_error")
    assert not saved_password_files(m, "hidden")

    # 5. confirm + rmdir unlinks: DELETE /databases/byod/NAME, never a destroy.
    fake_cloud.reset_counts()
    m.destroy("mine")
    assert fake_cloud.count("DELETE /databases/byod") == 1
    assert fake_cloud.count("DELETE /databases/userdb") == 0
    state = fake_cloud.admin("GET", "state")
    assert state["linked_servers"]["mine"] == {"HostName": "db.example.test", "Port": 6543,
                                               "linked": False, "data_dropped": False}
    assert "mine" not in state["instances"] and "mine" not in os.listdir(m.path)

    # No password in the daemon's log or .dbosfs/log.
    for secret in (PW, PGPASS_PW, "Fallback_77z", "Other_Pass9"):
        assert secret not in m.log() and secret not in m.read(".dbosfs", "log")


def test_cloud_link_holds_its_name(mount_factory, fake_cloud):
    """While a slow link runs, the name is taken: a mkdir of it is EEXIST
    and never reaches the API, and the link's saved password survives."""
    m = mount_cloud(mount_factory, fake_cloud)
    fake_cloud.fault("POST /databases/byod", "latency", delay=2)
    fake_cloud.reset_counts()
    done = {}
    t = threading.Thread(target=lambda: done.update(rc=shell_write(
        m.p(".dbosfs", "link"), f"slowlink postgresql://dbosadmin:{PW}@h.example.test",
        {"PATH": "/usr/bin:/bin"})))
    t.start()
    # The link's request is at the server (held there for 2 s).
    assert wait_until(lambda: fake_cloud.count("POST /databases/byod") == 1, timeout=5)
    assert errno_of(os.mkdir, m.p("slowlink")) == errno.EEXIST
    assert "slowlink" in os.listdir(m.path) and "rc" not in done
    t.join(30)
    assert done["rc"] == 0
    assert fake_cloud.count("POST /databases/userdb") == 0
    assert fake_cloud.instances()["slowlink"]["IsLinked"] is True
    assert m.read("slowlink", "password").strip() == PW
    assert "linked: yes" in m.read("slowlink", "info")


def test_local_link_of_nothing_is_refused(mount_factory):
    """The local provider links only a server it could connect to (nothing
    listens here): ECONNREFUSED with a clear message, without the password,
    nothing made (tests/integration/test_local_link.py links real ones)."""
    m = mount_factory("local", {"spares": "0"})
    line = f"mine postgresql://dbosadmin:{PW}@127.0.0.1:5999\n"
    assert errno_of(write_file, m.p(".dbosfs", "link"), line) == errno.ECONNREFUSED
    err = m.read(".dbosfs", "last_error")
    assert "cannot connect to 127.0.0.1:5999" in err and PW not in err
    assert "mine" not in os.listdir(m.path)
    # Bad input is still EINVAL there.
    assert errno_of(write_file, m.p(".dbosfs", "link"), "mine nonsense\n") == errno.EINVAL
