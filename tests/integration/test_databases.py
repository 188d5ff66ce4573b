"""NAME/databases/ on a mounted local provider: list, create, connect through
url/env, size, drop with confirm, EBUSY while connected, refused names, the
app database made by migrate. One mount and one instance for the module."""
import errno
import os
import subprocess
import textwrap
import time

import pytest

from conftest import errno_of, ls_databases, psql, unique_name, write_file


@pytest.fixture(scope="module")
def dbinst(shared_local):
    m = shared_local
    name = unique_name("d")
    m.mkdir(name)
    yield m, name
    try:
        m.destroy(name)
    except OSError:
        pass


def wait_listed(m, name, db, present=True, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (db in ls_databases(m, name)) == present:
            return
        time.sleep(0.2)
    raise AssertionError(f"{db} {'never appeared in' if present else 'stayed in'} "
                         f"{name}/databases: {ls_databases(m, name)}")


def test_first_ls_waits_for_the_first_list(dbinst):
    m, name = dbinst
    # The very first readdir of databases/ asks the refresher for a list
    # and waits for it a moment: a plain `ls` just works.
    names = sorted(os.listdir(m.p(name, "databases")))
    assert "postgres" in names
    names = ls_databases(m, name)
    assert "postgres" in names
    assert not any(n.startswith("template") for n in names)
    assert "databases" in os.listdir(m.p(name))


def test_create_connect_size_drop(dbinst):
    m, name = dbinst
    ls_databases(m, name)
    os.mkdir(m.p(name, "databases", "shop"))
    # Visible at once (the cache is updated by the mkdir itself).
    assert "shop" in os.listdir(m.p(name, "databases"))
    assert sorted(os.listdir(m.p(name, "databases", "shop"))) == \
        ["confirm", "env", "size", "url"]
    url = m.read(name, "databases", "shop", "url").strip()
    assert url.endswith(f"/shop?sslmode=verify-full&sslrootcert={m.p(name, 'ca.pem')}"), url
    env = m.read(name, "databases", "shop", "env")
    assert "PGDATABASE=shop\n" in env
    # Connect through url, as the admin, with the instance's password.
    pw = m.read(name, "password").strip()
    r = subprocess.run(["psql", "-X", "-At", url, "-c",
                        "CREATE TABLE t AS SELECT g FROM generate_series(1, 50000) g;"
                        "SELECT current_database(), "
                        "(SELECT rolname FROM pg_roles r JOIN pg_database d "
                        " ON d.datdba = r.oid WHERE d.datname = current_database())"],
                       env=dict(os.environ, PGPASSWORD=pw), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    owner_user = m.read(name, "info").split("username: ")[1].split("\n")[0]
    assert r.stdout.strip().splitlines()[-1] == f"shop|{owner_user}"
    # size comes from the refresher: a number, growing past the table.
    deadline = time.time() + 15
    while int(m.read(name, "databases", "shop", "size")) < 1_000_000:
        assert time.time() < deadline, m.read(name, "databases", "shop", "size")
        time.sleep(0.3)

    # rmdir needs the confirm first.
    assert errno_of(os.rmdir, m.p(name, "databases", "shop")) == errno.EBUSY
    assert "needs a confirmation" in m.read(name, "last_error")
    assert m.read(name, "databases", "shop", "confirm").startswith("not armed")
    assert errno_of(write_file, m.p(name, "databases", "shop", "confirm"),
                    "other\n") == errno.EINVAL
    write_file(m.p(name, "databases", "shop", "confirm"), "shop\n")
    assert m.read(name, "databases", "shop", "confirm").startswith("armed")
    os.rmdir(m.p(name, "databases", "shop"))
    assert "shop" not in os.listdir(m.p(name, "databases"))
    r = psql(m, name, "SELECT count(*) FROM pg_database WHERE datname = 'shop'")
    assert r.stdout.strip() == "0"


def test_refused_names(dbinst):
    m, name = dbinst
    ls_databases(m, name)
    for bad in ["1abc", "Shop", "a-b", "x" * 64]:
        assert errno_of(os.mkdir, m.p(name, "databases", bad)) == errno.EINVAL, bad
        assert "database name" in m.read(name, "last_error")
    assert errno_of(os.mkdir, m.p(name, "databases", "postgres")) == errno.EEXIST
    # postgres cannot be dropped, confirm or not.
    write_file(m.p(name, "databases", "postgres", "confirm"), "postgres\n")
    assert errno_of(os.rmdir, m.p(name, "databases", "postgres")) == errno.EPERM
    assert "cannot be dropped" in m.read(name, "last_error")
    # No files or other directories can be made there.
    assert errno_of(os.mkdir, m.p(name, "databases", "x" * 63, "y")) == errno.ENOENT


def test_drop_while_connected_is_ebusy_naming_sessions(dbinst):
    m, name = dbinst
    ls_databases(m, name)
    os.mkdir(m.p(name, "databases", "busy_db"))
    env = dict(os.environ, PGPASSWORD=m.read(name, "password").strip(),
               PGAPPNAME="holder_app")
    holder = subprocess.Popen(["psql", "-X", "-At", m.read(name, "databases", "busy_db",
                                                         "url").strip(),
                               "-c", "SELECT pg_sleep(30)"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Wait until the session is there.
        deadline = time.time() + 10
        while psql(m, name, "SELECT count(*) FROM pg_stat_activity "
                   "WHERE datname = 'busy_db'").stdout.strip() == "0":
            assert time.time() < deadline
            time.sleep(0.1)
        write_file(m.p(name, "databases", "busy_db", "confirm"), "busy_db\n")
        assert errno_of(os.rmdir, m.p(name, "databases", "busy_db")) == errno.EBUSY
        err = m.read(name, "last_error")
        assert "connected session" in err and "holder_app" in err, err
        assert "busy_db" in os.listdir(m.p(name, "databases"))
    finally:
        # A killed psql leaves its backend in pg_sleep: end it too.
        holder.kill()
        holder.wait()
        psql(m, name, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE datname = 'busy_db'")
    deadline = time.time() + 10
    while True:
        write_file(m.p(name, "databases", "busy_db", "confirm"), "busy_db\n")
        if errno_of(os.rmdir, m.p(name, "databases", "busy_db")) is None:
            break
        assert time.time() < deadline, m.read(name, "last_error")
        time.sleep(0.2)


def test_database_made_outside_shows_up_and_vanishes(dbinst):
    """Lists follow the server (the refresher), e.g. an app database that
    migrate or a client made."""
    m, name = dbinst
    ls_databases(m, name)
    psql(m, name, "CREATE DATABASE made_outside")
    wait_listed(m, name, "made_outside")
    psql(m, name, "DROP DATABASE made_outside")
    wait_listed(m, name, "made_outside", present=False)


def test_migrate_app_database_shows_up(dbinst, tmp_path):
    m, name = dbinst
    ls_databases(m, name)
    app = tmp_path / "app"
    app.mkdir()
    (app / "dbos-config.yaml").write_text(textwrap.dedent("""\
        name: ignored
        database:
          app_db_name: migrated_app
          migrate:
            - psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE m (x int)'
        """))
    assert errno_of(write_file, m.p(name, "migrate"), f"{app}\n") is None, \
        m.read(name, "last_error")
    wait_listed(m, name, "migrated_app")


def test_other_users_cannot_create(dbinst):
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    m, name = dbinst
    ls_databases(m, name)
    pid = os.fork()
    if pid == 0:
        os.setgid(65534)
        os.setuid(65534)
        try:
            os.mkdir(m.p(name, "databases", "nobody_db"))
            os._exit(0)
        except OSError as e:
            os._exit(e.errno)
    _, st = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(st) == errno.EACCES
