"""Issue 12: instances are isolated from each other and from the machine.

One mount with two instances (a, b) serves most tests: each escape a leaked
admin password could try is refused, and what an application owner needs
keeps working. An instance made the way the previous version made them
(admin = bootstrap superuser, local connections trusted) is brought in line
at mount."""
import os
import pwd
import shutil
import stat
import subprocess
import time

import pytest

from conftest import Mount, make_base, psql, pg_env, unique_name, write_file

BINDIR = sorted(
    (d for d in (f"/usr/lib/postgresql/{v}/bin" for v in os.listdir("/usr/lib/postgresql"))
     if os.path.exists(f"{d}/initdb")),
    key=lambda d: int(d.split("/")[4]))[-1] if os.path.isdir("/usr/lib/postgresql") else None


@pytest.fixture(scope="module")
def two():
    base = make_base()
    m = Mount("local", {}, None, None, base)
    a, b = unique_name("isoa"), unique_name("isob")
    m.mkdir(a)
    m.mkdir(b)
    yield m, a, b
    m.unmount()
    shutil.rmtree(base, ignore_errors=True)


def refused(m, name, sql, expect, database="postgres"):
    """Runs sql as the admin and asserts that it fails with expect in the message."""
    r = psql(m, name, sql, database=database, check=False)
    assert r.returncode != 0, f"{sql!r} was allowed: {r.stdout}"
    assert expect in r.stderr, f"{sql!r}: {r.stderr}"


def port_of(m, name):
    info = dict(l.split(": ", 1) for l in m.read(name, "info").splitlines())
    return int(info["port"])


def connect(host, port, user, password, database="postgres", sslmode="prefer"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=password, PGCONNECT_TIMEOUT="5", PGSSLMODE=sslmode)
    return subprocess.run(["psql", "-X", "-At", "-h", str(host), "-p", str(port), "-U", user,
                           "-d", database, "-c", "select current_user"],
                          env=env, capture_output=True, text=True, timeout=30)


# ---- the admin is not a superuser ------------------------------------------

def test_admin_role_attributes(two):
    m, a, _ = two
    row = psql(m, a, "select rolsuper, rolcreatedb, rolcreaterole, rolreplication, "
                     "rolbypassrls from pg_roles where rolname = current_user").stdout.strip()
    assert row == "f|t|f|f|f"
    held = set(psql(m, a, "select b.rolname from pg_auth_members x join pg_roles b on "
                          "b.oid = x.roleid join pg_roles u on u.oid = x.member "
                          "where u.rolname = current_user").stdout.split())
    assert held == {"pg_read_all_data", "pg_write_all_data", "pg_monitor",
                    "pg_signal_backend"}
    assert psql(m, a, "select pg_get_userbyid(datdba) from pg_database "
                      "where datname = 'postgres'").stdout.strip() == "dbos_user"


def test_copy_to_program_refused(two):
    m, a, _ = two
    refused(m, a, "copy (select 1) to program 'id'", "pg_execute_server_program")


def test_copy_from_file_refused(two):
    m, a, _ = two
    refused(m, a, "create temp table t(x text); copy t from '/etc/passwd'",
            "pg_read_server_files")
    refused(m, a, "copy (select 1) to '/tmp/dbosfs-iso-escape'", "pg_write_server_files")
    assert not os.path.exists("/tmp/dbosfs-iso-escape")


def test_pg_read_file_and_lo_import_refused(two):
    m, a, _ = two
    refused(m, a, "select pg_read_file('/etc/passwd')", "permission denied for function")
    refused(m, a, "select pg_ls_dir('.')", "permission denied for function")
    refused(m, a, "select lo_import('/etc/passwd')", "permission denied for function lo_import")
    refused(m, a, "select lo_export(lo_create(0), '/tmp/dbosfs-iso-lo')",
            "permission denied for function lo_export")


def test_alter_system_refused(two):
    m, a, _ = two
    refused(m, a, "alter system set work_mem = '1MB'", "permission denied to set parameter")
    refused(m, a, "set log_statement = 'none'", "permission denied to set parameter")


@pytest.mark.parametrize("role", ["pg_execute_server_program", "pg_read_server_files",
                                  "pg_write_server_files"])
def test_granting_itself_os_roles_refused(two, role):
    m, a, _ = two
    refused(m, a, f"grant {role} to dbos_user", "must have admin option")


def test_becoming_superuser_or_createrole_refused(two):
    m, a, _ = two
    refused(m, a, "alter role dbos_user superuser", "must be superuser")
    refused(m, a, "alter role dbos_user createrole", "permission denied")
    refused(m, a, "create role sneaky superuser", "must be superuser to create superusers")
    refused(m, a, "create role sneaky", "permission denied to create role")


def test_untrusted_language_refused(two):
    m, a, _ = two
    refused(m, a, "create language evil handler plpgsql_call_handler",
            "must be superuser to create custom procedural language")
    refused(m, a, "create extension dblink", "permission denied to create extension")
    refused(m, a, "create extension postgres_fdw", "permission denied to create extension")
    refused(m, a, "create extension file_fdw", "permission denied to create extension")


def test_set_role_to_internal_superuser_refused(two):
    m, a, _ = two
    refused(m, a, "set role dbosfs", "permission denied to set role")
    refused(m, a, "set session authorization dbosfs",
            "permission denied to set session authorization")
    refused(m, a, "grant dbosfs to dbos_user", "must be superuser to alter superusers")


# ---- instances and dbosfs's own door ------------------------------------------

def test_first_password_does_not_open_the_second_instance(two):
    m, a, b = two
    pw_a = m.read(a, "password").strip()
    # Over TCP, as the admin and as the internal superuser.
    for user in ("dbos_user", "dbosfs"):
        r = connect("127.0.0.1", port_of(m, b), user, pw_a)
        assert r.returncode != 0, r.stdout
        assert "authentication failed" in r.stderr or "rejects connection" in r.stderr
    # Over b's Unix socket (root can reach the directory; nothing is trusted).
    sock = m.state_dir / "local" / "run" / b
    assert (sock / f".s.PGSQL.{port_of(m, b)}").exists()
    for user in ("dbos_user", "dbosfs"):
        r = connect(sock, port_of(m, b), user, pw_a)
        assert r.returncode != 0 and "password authentication failed" in r.stderr, r.stderr
    # And a's own password still opens a (the check above is not vacuous).
    assert connect("127.0.0.1", port_of(m, a), "dbos_user", pw_a).stdout.strip() == "dbos_user"


def test_nothing_is_trusted_and_superuser_only_over_socket(two):
    m, a, _ = two
    sock = m.state_dir / "local" / "run" / a
    for user in ("dbos_user", "dbosfs", "postgres"):
        r = connect(sock, port_of(m, a), user, "")
        assert r.returncode != 0, f"{user} got in without a password"
        assert "no password supplied" in r.stderr or "authentication failed" in r.stderr
    # The superuser's password is refused over TCP even when right.
    secret = (m.state_dir / "local" / "superuser").read_text()
    r = connect("127.0.0.1", port_of(m, a), "dbosfs", secret)
    assert r.returncode != 0 and "rejects connection" in r.stderr, r.stderr
    assert connect(sock, port_of(m, a), "dbosfs", secret).stdout.strip() == "dbosfs"


def test_secret_and_key_files(two):
    m, a, _ = two
    local = m.state_dir / "local"
    owner = os.stat(m.state_dir).st_uid
    for f, mode in (("superuser", 0o600), ("tls/ca.key", 0o600), ("tls/server.key", 0o600),
                    ("tls/ca.pem", 0o644)):
        st = os.stat(local / f)
        assert stat.S_IMODE(st.st_mode) == mode, f
        assert st.st_uid == owner, f
    data = local / "instances" / a / "data"
    key = os.stat(data / "server.key")
    assert stat.S_IMODE(key.st_mode) == 0o600 and key.st_uid == os.stat(data).st_uid
    hba = (data / "pg_hba.conf").read_text()
    rules = [l.split() for l in hba.splitlines() if l.strip() and not l.startswith("#")]
    assert all(r[-1] in ("scram-sha-256", "reject") for r in rules), hba
    assert not any(r[-1] in ("trust", "peer", "ident") for r in rules)
    # The CA key never reaches a data directory.
    assert not any("ca.key" in f for _, _, fs in os.walk(data) for f in fs)


# ---- what keeps working ------------------------------------------------------

def test_create_database_and_trusted_extensions(two):
    m, a, _ = two
    db = unique_name("db")
    psql(m, a, f"create database {db}")
    assert psql(m, a, f"select pg_get_userbyid(datdba) from pg_database where datname = '{db}'"
                ).stdout.strip() == "dbos_user"
    for database in ("postgres", db):
        psql(m, a, "create extension if not exists pgcrypto", database=database)
        assert psql(m, a, "select encode(digest('x', 'sha256'), 'hex')", database=database
                    ).stdout.startswith("2d711642")
        psql(m, a, "create extension if not exists citext; create extension if not exists "
                   "hstore; create extension if not exists \"uuid-ossp\"", database=database)
        psql(m, a, "create table owned(id uuid primary key default gen_random_uuid())",
             database=database)


def test_extra_roles_through_dbosfs_create_role(two):
    m, a, _ = two
    psql(m, a, "select dbosfs.create_role('app_reader', 'readerpw123')")
    row = psql(m, a, "select rolsuper, rolcreaterole, rolcreatedb, rolcanlogin from pg_roles "
                     "where rolname = 'app_reader'").stdout.strip()
    assert row == "f|f|f|t"
    psql(m, a, "create table reader_data(x int); insert into reader_data values (7); "
               "grant select on reader_data to app_reader")
    r = connect("127.0.0.1", port_of(m, a), "app_reader", "readerpw123")
    assert r.returncode == 0 and r.stdout.strip() == "app_reader", r.stderr
    # The admin manages it (ADMIN OPTION), but cannot make it more than ordinary.
    psql(m, a, "set role app_reader; alter role app_reader password 'readerpw456'")
    refused(m, a, "grant pg_execute_server_program to app_reader", "must have admin option")
    refused(m, a, "alter role app_reader superuser", "must be superuser")
    refused(m, a, "select dbosfs.create_role('pg_evil')", "is not allowed")
    # Nobody else may call it.
    refused(m, a, "set role app_reader; select dbosfs.create_role('x1')", "permission denied")
    psql(m, a, "revoke all on reader_data from app_reader; select dbosfs.drop_role('app_reader')")
    refused(m, a, "select dbosfs.drop_role('dbosfs')", "was not made by dbosfs.create_role")
    refused(m, a, "select dbosfs.drop_role('dbos_user')", "was not made by dbosfs.create_role")


def test_url_works_word_for_word_with_tls(two):
    m, a, _ = two
    url = m.read(a, "url").strip()
    assert "sslmode=verify-full" in url and f"sslrootcert={m.p(a, 'ca.pem')}" in url
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = m.read(a, "password").strip()
    r = subprocess.run(["psql", "-X", "-At", url, "-c",
                        "select ssl from pg_stat_ssl where pid = pg_backend_pid()"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "t", r.stderr
    # env alone (PGSSLMODE=verify-full, PGSSLROOTCERT) does the same.
    assert psql(m, a, "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
                ).stdout.strip() == "t"
    # ca.pem is the CA that signed the server's certificate (verify-full
    # with another CA fails).
    other = m.base / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(m.base / "other.key"),
                    "-out", str(other), "-subj", "/CN=other", "-days", "1"],
                   check=True, capture_output=True)
    r = subprocess.run(["psql", "-X", "-At", url.replace(str(m.p(a, "ca.pem")), str(other)),
                        "-c", "select 1"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "certificate verify failed" in r.stderr, r.stderr


def test_password_reset_and_remount_keep_working(two):
    m, a, b = two
    psql(m, b, "create table kept(v text); insert into kept values ('still here')")
    old = m.read(b, "password").strip()
    write_file(m.p(b, "password"), "N3wPassw0rd_iso\n")
    assert connect("127.0.0.1", port_of(m, b), "dbos_user", "N3wPassw0rd_iso").returncode == 0
    assert connect("127.0.0.1", port_of(m, b), "dbos_user", old).returncode != 0
    m.remount()
    for _ in range(300):
        if m.read(b, "status") == "available\n" and m.read(a, "status") == "available\n":
            break
        time.sleep(0.1)
    assert psql(m, b, "select v from kept").stdout.strip() == "still here"
    assert "brought in line" not in m.log()
    assert psql(m, a, "select rolsuper from pg_roles where rolname = current_user"
                ).stdout.strip() == "f"


def test_lost_superuser_password_is_set_again(two):
    """STATE_DIR/local/superuser removed while unmounted: the next mount makes
    a new one and sets it in each instance (single-user mode), instead of
    timing out on a server that refuses it."""
    m, a, b = two
    m.unmount()
    secret = m.state_dir / "local" / "superuser"
    old = secret.read_text()
    secret.unlink()
    m.start()
    for _ in range(300):
        if m.read(a, "status") == "available\n" and m.read(b, "status") == "available\n":
            break
        time.sleep(0.1)
    assert m.read(a, "status") == "available\n", m.read(a, "last_error")
    new = secret.read_text()
    assert new != old and len(new) == 32 and stat.S_IMODE(secret.stat().st_mode) == 0o600
    log = m.read(".dbosfs", "log")
    assert f"local: instance {a}: its superuser refused STATE_DIR/local/superuser" in log
    # dbosfs's door works again: a password reset goes through.
    write_file(m.p(a, "password"), "Ag41nPassw0rd\n")
    assert connect("127.0.0.1", port_of(m, a), "dbos_user", "Ag41nPassw0rd").returncode == 0
    sock = m.state_dir / "local" / "run" / a
    assert connect(sock, port_of(m, a), "dbosfs", old).returncode != 0


# ---- the server account ------------------------------------------------------

def postmaster_users(m):
    """OS users of the postmasters serving this mount's state directory."""
    out = subprocess.run(["ps", "-C", "postgres", "-o", "user=,args="], capture_output=True,
                         text=True).stdout
    return {l.split()[0] for l in out.splitlines() if f"-D {m.state_dir}/" in l}


@pytest.mark.skipif(os.geteuid() != 0, reason="the server account is chosen only as root")
def test_servers_run_as_their_own_account(two):
    m, a, _ = two
    assert m.read(".dbosfs", "account") == "root (servers run as dbosfs)\n"
    acct = pwd.getpwnam("dbosfs")
    assert acct.pw_uid != 0 and acct.pw_shell in ("/usr/sbin/nologin", "/bin/false")
    assert postmaster_users(m) == {"dbosfs"}
    data = m.state_dir / "local" / "instances" / a / "data"
    assert os.stat(data).st_uid == acct.pw_uid
    # The machine's own PostgreSQL account owns nothing of ours.
    pg = pwd.getpwnam("postgres").pw_uid
    assert not [p for p, _, fs in os.walk(m.state_dir) for f in fs + ["."]
                if os.lstat(os.path.join(p, f)).st_uid == pg]


@pytest.mark.skipif(os.geteuid() != 0, reason="pg_user= applies only as root")
def test_pg_user_overrides_the_account():
    base = make_base()
    m = Mount("local", {"pg_user": "postgres"}, None, None, base)
    try:
        name = unique_name("pgu")
        m.mkdir(name)
        assert m.read(".dbosfs", "account") == "root (servers run as postgres)\n"
        assert postmaster_users(m) == {"postgres"}
        # Back to the default: the data directory is handed to dbosfs.
        m.unmount()
        m.options.pop("pg_user")
        m.start()
        for _ in range(300):
            if m.read(name, "status") == "available\n":
                break
            time.sleep(0.1)
        assert postmaster_users(m) == {"dbosfs"}
        assert f"the data directory of {name} now belongs to the server account dbosfs" in \
            m.read(".dbosfs", "log")
        assert psql(m, name, "select 1").stdout.strip() == "1"
    finally:
        m.unmount()
        shutil.rmtree(base, ignore_errors=True)


# ---- instances made by the previous version -----------------------------------

def as_server_account():
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)


def run_pg(argv, **kw):
    return subprocess.run(argv, preexec_fn=as_server_account, check=True,
                          capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.skipif(BINDIR is None, reason="no PostgreSQL server binaries")
def test_instance_of_previous_version_is_brought_in_line():
    """Builds STATE_DIR/local as the previous version left it (initdb with
    the admin as bootstrap superuser, local connections trusted; a template
    and a spare made the same way), with application objects and an extra
    superuser in it, then mounts."""
    base = make_base()
    state = os.path.join(base, "state")
    local = os.path.join(state, "local")
    name, pw = "oldinst", "OldPassw0rd_x1"
    inst = os.path.join(local, "instances", name)
    data = os.path.join(inst, "data")
    try:
        for d in ("instances", "templates", "spares", "trash", "run"):
            os.makedirs(os.path.join(local, d), mode=0o711, exist_ok=True)
        os.chmod(state, 0o711)
        os.chmod(local, 0o711)
        os.makedirs(inst, mode=0o711)
        os.mkdir(data, 0o700)
        sock = os.path.join(base, "oldsock")
        os.mkdir(sock, 0o700)
        pwfile = os.path.join(base, "pw")
        with open(pwfile, "w") as f:
            f.write(pw + "\n")
        if os.geteuid() == 0:
            pgu = pwd.getpwnam("postgres")
            for p in (data, sock, pwfile):
                os.chown(p, pgu.pw_uid, pgu.pw_gid)
        # Exactly the previous version's initdb.
        run_pg([f"{BINDIR}/initdb", "-D", data, "--username=dbos_user", "--encoding=UTF8",
                "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}", "--no-sync"])
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write("\n# dbosfs: sized for many small instances\nshared_buffers = 16MB\n"
                    "max_connections = 50\nhuge_pages = off\nlogging_collector = off\n")
        port = 29990
        run_pg([f"{BINDIR}/pg_ctl", "-D", data, "-w", "-l", os.path.join(sock, "old.log"),
                "-o", f"-p {port} -k {sock} -c listen_addresses=", "start"])
        try:
            def old_sql(sql, db="postgres"):
                run_pg(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", sock, "-p", str(port),
                        "-U", "dbos_user", "-d", db, "-c", sql])
            old_sql("create table orders(id serial primary key, item text)")
            old_sql("insert into orders(item) values ('book')")
            old_sql("create view order_items as select item from orders")
            old_sql("create function answer() returns int language sql as 'select 42'")
            old_sql("create schema app")
            old_sql("create type app.mood as enum ('ok', 'meh')")
            old_sql("create table app.t(m app.mood)")
            old_sql("create database shopdb")
            old_sql("create role olduser superuser login password 'olduserpw1'")
            old_sql("create table items(id bigserial primary key)", db="shopdb")
            old_sql("create extension pgcrypto", db="shopdb")
        finally:
            run_pg([f"{BINDIR}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"])
        with open(os.path.join(inst, "meta"), "w") as f:
            f.write(f"port={port}\nusername=dbos_user\n")
        # The previous version's template and spare, to be replaced.
        tmpl = os.path.join(local, "templates", "dbos_user")
        subprocess.run(["cp", "-a", data, tmpl], check=True)
        os.makedirs(os.path.join(local, "spares", "dbos_user.1"), mode=0o711)
        subprocess.run(["cp", "-a", data, os.path.join(local, "spares", "dbos_user.1", "data")],
                       check=True)
        os.makedirs(os.path.join(state, "passwords", "local"), mode=0o700)
        with open(os.path.join(state, "passwords", "local", name), "w") as f:
            f.write(pw + "\n")
        os.chmod(os.path.join(state, "passwords", "local", name), 0o600)

        m = Mount("local", {"state_dir": state}, None, None, base)
        try:
            for _ in range(300):
                if m.read(name, "status") == "available\n":
                    break
                time.sleep(0.1)
            assert m.read(name, "status") == "available\n", m.read(name, "last_error")
            log = m.read(".dbosfs", "log")
            assert f"local: instance {name} brought in line" in log, log
            assert "dbos_user is no longer a superuser" in log
            if os.geteuid() == 0:  # made as postgres, now the server account's
                assert f"the data directory of {name} now belongs to the server account " \
                       "dbosfs" in log
                assert os.stat(data).st_uid == pwd.getpwnam("dbosfs").pw_uid
            # Same password, same data, the admin owns its objects, and is
            # an ordinary role now; the extra superuser is demoted.
            rows = psql(m, name, "select rolname, rolsuper from pg_roles where rolname in "
                                 "('dbos_user', 'olduser', 'dbosfs') order by 1").stdout
            assert rows.split() == ["dbos_user|f", "dbosfs|t", "olduser|f"]
            assert psql(m, name, "select item from orders").stdout.strip() == "book"
            assert psql(m, name, "select answer()").stdout.strip() == "42"
            owners = psql(m, name, "select string_agg(distinct pg_get_userbyid(relowner), ',') "
                                   "from pg_class where relname in ('orders', 'order_items', "
                                   "'orders_id_seq', 't')").stdout.strip()
            assert owners == "dbos_user"
            psql(m, name, "insert into orders(item) values ('pen'); drop view order_items; "
                          "alter type app.mood add value 'great'; drop function answer()")
            assert psql(m, name, "select pg_get_userbyid(datdba) from pg_database where "
                                 "datname = 'shopdb'").stdout.strip() == "dbos_user"
            psql(m, name, "insert into items default values; drop table items",
                 database="shopdb")
            refused(m, name, "copy (select 1) to program 'id'", "pg_execute_server_program")
            refused(m, name, "select pg_read_file('/etc/passwd')", "permission denied")
            r = connect(os.path.join(local, "run", name), port_of(m, name), "dbos_user", "")
            assert r.returncode != 0, "the old socket still trusts local connections"
            assert psql(m, name, "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
                        ).stdout.strip() == "t"
            # The old template and spare were replaced: a new instance is new.
            new = unique_name("newi")
            m.mkdir(new)
            assert psql(m, new, "select rolsuper from pg_roles where rolname = current_user"
                        ).stdout.strip() == "f"
            # A second mount has nothing left to do.
            m.remount()
            for _ in range(300):
                if m.read(name, "status") == "available\n":
                    break
                time.sleep(0.1)
            assert m.log().count(f"instance {name} brought in line") <= 1
        finally:
            m.unmount()
    finally:
        shutil.rmtree(base, ignore_errors=True)
