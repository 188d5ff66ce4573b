"""The filesystem contract (spec/filesystem.md) over the local provider:
real mounts, real PostgreSQL servers, driven with shell tools and os calls."""
import errno
import json
import os
import signal
import re
import socket
import stat
import subprocess
import time

import pytest

from conftest import (DBOSFS, errno_of, psql, read_file, unique_name, write_file)

INSTANCE_FILES = {"status", "info", "info.json", "url", "env", "pgpass", "password",
                  "wait", "confirm", "migrate", "rollback", "last_error", "branch", "restore",
                  "databases", "ca.pem", "apps"}


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60, **kw)


def test_help_and_version():
    r = subprocess.run([DBOSFS, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "provider=local|cloud" in r.stdout and "confirm_ttl" in r.stdout
    r = subprocess.run([DBOSFS, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and re.match(r"dbosfs \d+\.\d+\.\d+", r.stdout)
    r = subprocess.run([DBOSFS], capture_output=True, text=True)
    assert r.returncode != 0 and "usage" in r.stderr


def test_mount_fails_in_foreground_without_server_binaries(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # Without -f: the error must still reach the terminal, before detaching.
    r = subprocess.run([DBOSFS, "-o", f"pg_bindir=/nonexistent,state_dir={tmp_path}/s",
                        str(mnt)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "/nonexistent" in r.stderr or "PostgreSQL" in r.stderr, r.stderr
    assert not os.path.ismount(mnt)


def test_mount_fails_for_unknown_provider(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([DBOSFS, "-o", f"provider=nosuch,state_dir={tmp_path}/s", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "nosuch" in r.stderr
    assert not os.path.ismount(mnt)


def test_meta_directory(shared_local):
    m = shared_local
    assert ".dbosfs" in os.listdir(m.path)
    assert sorted(os.listdir(m.p(".dbosfs"))) == ["account", "health", "instances",
                                                  "instances.json", "last_error", "link",
                                                  "log", "provider", "version"]
    assert m.read(".dbosfs", "health") == "ok\n"
    assert m.read(".dbosfs", "provider") == "local\n"
    assert m.read(".dbosfs", "version").startswith("dbosfs ")
    assert m.read(".dbosfs", "account").strip()
    assert "mounted" in m.read(".dbosfs", "log")
    # Lines are timestamped, newest last.
    for line in m.read(".dbosfs", "log").splitlines():
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line), line


def test_mkdir_provisions_a_real_instance(instance):
    m, name = instance
    assert name in os.listdir(m.path)
    assert set(os.listdir(m.p(name))) == INSTANCE_FILES
    assert m.read(name, "status") == "available\n"
    info = dict(l.split(": ", 1) for l in m.read(name, "info").splitlines())
    assert info["name"] == name and info["status"] == "available"
    assert info["username"] == "dbos_user" and info["host"] == "127.0.0.1"
    port = int(info["port"])
    j = json.loads(m.read(name, "info.json"))
    assert j["PostgresInstanceName"] == name and j["Port"] == port
    assert j["Status"] == "available" and j["IsLinked"] is False
    assert j["DatabaseUsername"] == "dbos_user"
    ca = m.p(name, "ca.pem")
    assert m.read(name, "url") == (f"postgresql://dbos_user@127.0.0.1:{port}/postgres"
                                   f"?sslmode=verify-full&sslrootcert={ca}\n")
    assert m.read(name, "ca.pem").startswith("-----BEGIN CERTIFICATE-----\n")
    env = m.read(name, "env")
    assert f"PGPORT={port}\n" in env and "PGUSER=dbos_user\n" in env
    assert "PGDATABASE=postgres\n" in env
    assert f"PGSSLMODE=verify-full\nPGSSLROOTCERT={ca}\nNODE_EXTRA_CA_CERTS={ca}\n" in env
    pw = m.read(name, "password").strip()
    assert len(pw) >= 16 and re.fullmatch(r"[A-Za-z0-9_-]+", pw)
    assert m.read(name, "pgpass") == f"127.0.0.1:{port}:*:dbos_user:{pw}\n"
    for f in ("password", "pgpass"):
        assert stat.S_IMODE(os.stat(m.p(name, f)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(m.p(name, "status")).st_mode) == 0o444
    # It accepts connections, with that password, right away.
    assert psql(m, name, "select 40 + 2").stdout.strip() == "42"
    # The url and pgpass work together, as the README says.
    r = subprocess.run(["psql", "-X", "-At", m.read(name, "url").strip(), "-c", "select 1"],
                       env={**os.environ, "PGPASSFILE": str(m.p(name, "pgpass"))},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
    # The password never appears in the log.
    assert pw not in m.read(".dbosfs", "log")
    assert m.read(name, "wait") == "available\n"


@pytest.mark.parametrize("bad", ["ab", "a" * 17, "MyDb", "my-db", "my.db", "my db",
                                 "dbé_x", ".hidden", "db\tx"])
def test_bad_names_are_refused_and_nothing_is_created(shared_local, bad):
    m = shared_local
    before = set(os.listdir(m.path))
    assert errno_of(os.mkdir, m.p(bad)) == errno.EINVAL
    assert set(os.listdir(m.path)) == before
    msg = m.read(".dbosfs", "last_error")
    assert "mkdir" in msg and "refused" in msg
    inst_dir = m.state_dir / "local" / "instances"
    if inst_dir.exists():
        assert bad not in os.listdir(inst_dir)


def test_shell_mkdir_reports_the_error(shared_local):
    r = sh(f"mkdir {shared_local.path}/Bad-Name")
    assert r.returncode != 0 and "Invalid argument" in r.stderr


def test_mkdir_existing_is_eexist(instance):
    m, name = instance
    assert errno_of(os.mkdir, m.p(name)) == errno.EEXIST
    assert errno_of(os.mkdir, m.p(".dbosfs")) == errno.EEXIST


def test_mkdir_inside_an_instance_is_refused(instance):
    m, name = instance
    assert errno_of(os.mkdir, m.p(name, "sub")) == errno.EPERM


def test_rmdir_needs_a_confirmation(instance):
    m, name = instance
    assert errno_of(os.rmdir, m.p(name)) == errno.EBUSY
    assert "confirm" in m.read(name, "last_error")
    assert m.read(name, "status") == "available\n"
    assert psql(m, name, "select 1").stdout.strip() == "1"
    assert m.read(name, "confirm").startswith("not armed")


def test_wrong_confirmation_text_is_einval(instance):
    m, name = instance
    for wrong in ("other\n", name.upper() + "\n", name + "x\n", "\n"):
        assert errno_of(write_file, m.p(name, "confirm"), wrong) == errno.EINVAL
    assert "confirm" in m.read(name, "last_error")
    assert errno_of(os.rmdir, m.p(name)) == errno.EBUSY
    assert name in os.listdir(m.path)


def test_stale_confirmation_does_not_destroy(mount_factory):
    m = mount_factory("local", {"confirm_ttl": "1"})
    name = unique_name("st")
    m.mkdir(name)
    m.write(name + "\n", name, "confirm")
    assert m.read(name, "confirm").startswith("armed")
    time.sleep(1.3)
    assert errno_of(os.rmdir, m.p(name)) == errno.EBUSY
    assert m.read(name, "status") == "available\n"
    m.destroy(name)


def port_open(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_confirm_then_rmdir_destroys(shared_local):
    m = shared_local
    name = unique_name("d")
    m.mkdir(name)
    port = int(json.loads(m.read(name, "info.json"))["Port"])
    assert port_open(port)
    r = sh(f"cd {m.path} && echo {name} > {name}/confirm && rmdir {name}")
    assert r.returncode == 0, r.stderr
    assert name not in os.listdir(m.path)
    assert errno_of(os.stat, m.p(name)) == errno.ENOENT
    assert not port_open(port)
    assert not (m.state_dir / "local" / "instances" / name).exists()
    assert "destroyed " + name in m.read(".dbosfs", "log")
    # The name is free again.
    m.mkdir(name)
    assert m.read(name, "status") == "available\n"
    m.destroy(name)


def test_rm_rf_never_destroys(instance):
    m, name = instance
    r = sh(f"rm -rf {m.p(name)}")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    assert m.read(name, "status") == "available\n"
    assert psql(m, name, "select 1").stdout.strip() == "1"


def test_names_cannot_be_created_removed_or_renamed(instance):
    m, name = instance
    p = m.p(name)
    assert errno_of(os.unlink, p / "status") == errno.EPERM
    assert errno_of(os.open, p / "newfile", os.O_CREAT | os.O_WRONLY, 0o644) == errno.EPERM
    assert errno_of(os.rename, p / "status", p / "status2") == errno.EPERM
    assert errno_of(os.rename, p, m.p("renamed")) == errno.EPERM
    assert errno_of(os.symlink, "status", p / "link") == errno.EPERM
    assert errno_of(os.link, p / "status", p / "hard") == errno.EPERM
    assert errno_of(os.mknod, p / "fifo", 0o600 | stat.S_IFIFO) == errno.EPERM
    assert errno_of(os.open, m.p("toplevel"), os.O_CREAT | os.O_WRONLY, 0o644) == errno.EPERM
    assert errno_of(os.rmdir, m.p(".dbosfs")) == errno.EPERM
    assert errno_of(os.unlink, m.p(".dbosfs", "log")) == errno.EPERM


def test_read_only_files_refuse_writes_with_eacces(instance):
    m, name = instance
    for f in ("status", "info", "info.json", "url", "env", "pgpass", "wait", "last_error"):
        assert errno_of(os.open, m.p(name, f), os.O_WRONLY) == errno.EACCES, f
    assert errno_of(os.open, m.p(".dbosfs", "log"), os.O_WRONLY) == errno.EACCES
    r = sh(f"echo x > {m.p(name, 'status')}")
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_touch_truncate_and_fsync_work_on_control_files(instance):
    m, name = instance
    r = sh(f"touch {m.p(name, 'confirm')} {m.p(name, 'migrate')}")
    assert r.returncode == 0, r.stderr
    os.truncate(m.p(name, "confirm"), 0)
    fd = os.open(m.p(name, "confirm"), os.O_WRONLY)
    os.fsync(fd)
    os.close(fd)
    assert errno_of(os.truncate, m.p(name, "status"), 0) == errno.EACCES
    assert m.read(name, "confirm").startswith("not armed")


def test_password_reset(instance):
    m, name = instance
    old = m.read(name, "password").strip()
    new = "NewPassw0rd_" + name
    r = sh(f"echo '{new}' > {m.p(name, 'password')}")
    assert r.returncode == 0, r.stderr
    assert m.read(name, "password") == new + "\n"
    assert m.read(name, "pgpass").endswith(f":dbos_user:{new}\n")
    assert psql(m, name, "select 7").stdout.strip() == "7"  # uses the new one
    env = dict(os.environ, PGPASSWORD=old, PGCONNECT_TIMEOUT="5")
    port = json.loads(m.read(name, "info.json"))["Port"]
    r = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "dbos_user",
                        "-d", "postgres", "-c", "select 1"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "password authentication failed" in r.stderr
    log = m.read(".dbosfs", "log")
    assert new not in log and old not in log


@pytest.mark.parametrize("bad", ["Sh0rt", "has space inside", 'quote"mark', "at@sign12",
                                 "slash/slash", "x" * 129, "tab\there12"])
def test_bad_passwords_are_refused_and_nothing_changes(instance, bad):
    m, name = instance
    before = m.read(name, "password")
    assert errno_of(write_file, m.p(name, "password"), bad + "\n") == errno.EINVAL
    assert m.read(name, "password") == before
    err = m.read(name, "last_error")
    assert "password" in err and bad not in err
    assert psql(m, name, "select 1").stdout.strip() == "1"


def test_huge_write_is_refused(instance):
    m, name = instance
    assert errno_of(write_file, m.p(name, "confirm"), "x" * 100000) == errno.EINVAL
    assert "at most" in m.read(name, "last_error")


def test_missing_paths_are_enoent(shared_local):
    m = shared_local
    assert errno_of(os.stat, m.p("nosuchdb")) == errno.ENOENT
    assert errno_of(os.stat, m.p(".dbosfs", "nosuch")) == errno.ENOENT
    assert errno_of(os.stat, m.p(".other")) == errno.ENOENT
    assert errno_of(os.rmdir, m.p("nosuchdb")) == errno.ENOENT


def test_cat_and_tools_read_whole_dynamic_files(instance):
    m, name = instance
    r = sh(f"cat {m.p(name, 'info')} | wc -l; head -1 {m.p(name, 'info')}; "
           f"grep -c PG {m.p(name, 'env')}")
    lines = r.stdout.split()
    assert int(lines[0]) >= 6 and lines[1] == "name:" and int(lines[3]) == 6


def test_ls_l_shows_owner_and_modes(instance):
    m, name = instance
    r = sh(f"ls -l {m.p(name)}")
    assert r.returncode == 0
    rows = {l.split()[-1]: l.split()[0] for l in r.stdout.splitlines()[1:]}
    assert rows["password"] == "-rw-------" and rows["status"] == "-r--r--r--"
    assert rows["confirm"] == "-rw-r--r--"
    st = os.stat(m.path)
    assert st.st_uid == os.getuid()


def test_statfs_answers(shared_local):
    sv = os.statvfs(shared_local.path)
    assert sv.f_bsize > 0 and sv.f_namemax >= 16
    r = sh(f"df {shared_local.path}")
    assert r.returncode == 0


def as_nobody(code, *args):
    """Runs python code as user nobody; returns its stdout."""
    r = subprocess.run(["/usr/bin/python3", "-c", code, *args], capture_output=True,
                       text=True, timeout=60, user=65534, group=65534)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_other_users_may_read_but_not_act(mount_factory):
    m = mount_factory("local", {"allow_other": None})
    name = unique_name("o")
    m.mkdir(name)
    code = r"""
import os, sys, errno
root, name = sys.argv[1], sys.argv[2]
def eno(f, *a):
    try:
        f(*a)
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"
def rd(p):
    with open(p) as f:
        return f.read()
def wr(p, s):
    fd = os.open(p, os.O_WRONLY)
    try:
        os.write(fd, s.encode())
    finally:
        os.close(fd)
print(name in os.listdir(root), rd(f"{root}/{name}/status").strip(),
      eno(rd, f"{root}/{name}/password"), eno(rd, f"{root}/{name}/pgpass"),
      eno(os.mkdir, f"{root}/newdb_x"), eno(wr, f"{root}/{name}/confirm", name + "\n"),
      eno(wr, f"{root}/{name}/password", "Whatever123\n"),
      eno(wr, f"{root}/{name}/migrate", "/tmp\n"), eno(os.rmdir, f"{root}/{name}"),
      os.stat(f"{root}/{name}/password").st_size, os.stat(f"{root}/{name}/pgpass").st_size,
      os.stat(f"{root}/{name}/status").st_size)
"""
    out = as_nobody(code, str(m.path), name).split()
    # Others see no secret's length; the owner sees the real sizes.
    assert out == ["True", "available", "EACCES", "EACCES", "EACCES", "EACCES", "EACCES",
                   "EACCES", "EACCES", "0", "0", str(len("available\n"))], out
    assert os.stat(m.p(name, "password")).st_size == len(m.read(name, "password"))
    assert m.read(name, "status") == "available\n"
    m.destroy(name)


def test_sigterm_unmounts_and_stops_every_server(mount_factory):
    m = mount_factory("local")
    names = [unique_name("sg") for _ in range(2)]
    for n in names:
        m.mkdir(n)
    ports = [json.loads(m.read(n, "info.json"))["Port"] for n in names]
    assert all(port_open(p) for p in ports)
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=60) == 0
    m._stderr.close()
    m.proc = None
    assert not os.path.ismount(m.path)
    assert not any(port_open(p) for p in ports)
    r = subprocess.run(["pgrep", "-f", f"postgres.*{m.state_dir}"], capture_output=True,
                       text=True)
    assert r.stdout.strip() == "", r.stdout
    # And they come back on the next mount, data directories intact.
    m.start()
    for n in names:
        assert m.read(n, "wait") == "available\n"



def test_access_tells_the_truth(instance):
    m, name = instance
    p = m.p(name)
    assert os.access(p / "status", os.R_OK) and not os.access(p / "status", os.W_OK)
    assert os.access(p / "password", os.R_OK | os.W_OK)
    assert not os.access(p / "status", os.X_OK)
    assert os.access(m.path, os.W_OK) and not os.access(p, os.W_OK)
    assert not os.access(p / "nosuch", os.F_OK)


def test_access_for_other_users(mount_factory):
    m = mount_factory("local", {"allow_other": None})
    name = unique_name("ac")
    m.mkdir(name)
    code = r"""
import os, sys
d = sys.argv[1]
print(os.access(d + "/status", os.R_OK), os.access(d + "/password", os.R_OK),
      os.access(d + "/confirm", os.W_OK), os.access(os.path.dirname(d), os.W_OK))
"""
    assert as_nobody(code, str(m.p(name))).split() == ["True", "False", "False", "False"]
    m.destroy(name)


def test_other_users_cannot_overwrite_last_error(mount_factory):
    m = mount_factory("local", {"allow_other": None})
    name = unique_name("le")
    m.mkdir(name)
    assert errno_of(os.rmdir, m.p(name)) == errno.EBUSY  # the owner's own failure
    before, log_before = m.read(name, "last_error"), m.read(".dbosfs", "log")
    code = r"""
import os, sys
root, name = sys.argv[1], sys.argv[2]
for f, a in ((os.rmdir, (f"{root}/{name}",)), (os.mkdir, (f"{root}/Bad-Name",)),
             (os.mkdir, (f"{root}/newname1",))):
    try:
        f(*a)
    except PermissionError:
        pass
print("done")
"""
    assert as_nobody(code, str(m.path), name) == "done"
    assert m.read(name, "last_error") == before
    assert m.read(".dbosfs", "log") == log_before
    m.destroy(name)


def test_state_dir_writable_by_others_is_refused(tmp_path):
    base = tmp_path / "b"
    (base / "mnt").mkdir(parents=True)
    (base / "state").mkdir(mode=0o777)
    os.chmod(base / "state", 0o777)
    r = subprocess.run([DBOSFS, "-o", f"state_dir={base}/state", str(base / "mnt")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "writable by others" in r.stderr, r.stderr
    assert not os.path.ismount(base / "mnt")


def test_sigterm_during_a_migration_stops_it_promptly(mount_factory, tmp_path):
    import threading
    m = mount_factory("local")
    name = unique_name("mg")
    m.mkdir(name)
    app = tmp_path / "app"
    app.mkdir()
    (app / "dbos-config.yaml").write_text(
        "name: slow\ndatabase:\n  migrate: ['echo started; sleep 300 # dbosfs-sigterm-test']\n")
    errs = []

    def run():
        errs.append(errno_of(write_file, m.p(name, "migrate"), f"{app}\n"))

    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 30
    while time.time() < deadline and subprocess.run(
            ["pgrep", "-f", "dbosfs-sigterm-test"], capture_output=True).returncode != 0:
        time.sleep(0.1)
    m.proc.send_signal(signal.SIGTERM)
    # Promptly: far sooner than the command's 300 s (no timing finer than
    # that: a loaded machine stretches the stop of servers and commands).
    assert m.proc.wait(timeout=90) == 0
    m._stderr.close()
    m.proc = None
    t.join(10)
    assert errs and errs[0] in (errno.EINTR, errno.ENOTCONN, errno.ECONNABORTED), errs
    assert subprocess.run(["pgrep", "-f", "dbosfs-sigterm-test"],
                          capture_output=True).returncode != 0
