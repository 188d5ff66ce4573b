"""`.dbosfs/link` on the local provider (issue 9): dbosfs adopts a PostgreSQL
server it does not run. Each test starts its own server (initdb + pg_ctl as
user nobody, SCRAM passwords, TCP on 127.0.0.1), links it, and checks that
dbosfs serves it, runs migrations against it, survives a remount, unlinks it
without touching it, and leaves nothing behind when a link is refused or
the daemon is killed at any step."""
import errno
import glob
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import textwrap
import time
import urllib.parse

import psycopg2
import pytest

from conftest import Mount, errno_of, make_base, unique_name, wait_for, write_file

BINDIR = next(d for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
              if os.path.exists(f"{d}/initdb"))
ADMIN = "linkadmin"
PASSWORD = "Linked-Secret-42"
NOBODY = 65534
CRASH_EXIT = 86


def as_nobody():
    os.setgid(65534)
    os.setgroups([])
    os.setuid(NOBODY)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A PostgreSQL server of the test's own, not dbosfs's."""

    def __init__(self):
        self.base = pathlib.Path(make_base())
        self.dir = self.base / "ext"
        self.dir.mkdir()
        os.chown(self.dir, NOBODY, NOBODY)
        self.data = self.dir / "data"
        self.port = free_port()
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        os.chown(pwfile, NOBODY, NOBODY)
        subprocess.run([f"{BINDIR}/initdb", "-D", str(self.data), f"--username={ADMIN}",
                        "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8"],
                       preexec_fn=as_nobody, check=True, capture_output=True, timeout=120)
        pwfile.unlink()
        opts = (f"-c port={self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={self.dir}")
        subprocess.run([f"{BINDIR}/pg_ctl", "-D", str(self.data), "-w", "-t", "120",
                        "-l", str(self.dir / "server.log"), "-o", opts, "start"],
                       preexec_fn=as_nobody, check=True, capture_output=True, timeout=180)

    def pid(self):
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def connect(self, dbname="postgres"):
        return psycopg2.connect(host="127.0.0.1", port=self.port, user=ADMIN,
                                password=PASSWORD, dbname=dbname, connect_timeout=10)

    def url(self, password=PASSWORD):
        pw = f":{password}" if password is not None else ""
        return f"postgresql://{ADMIN}{pw}@127.0.0.1:{self.port}"

    def stop(self):
        subprocess.run([f"{BINDIR}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w",
                        "stop"], preexec_fn=as_nobody, capture_output=True, timeout=120)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def m(mount_factory):
    return mount_factory("local", options={"spares": "0"})


def link(m, line):
    write_file(m.p(".dbosfs", "link"), line + "\n")


def nothing_left(m, name):
    assert name not in os.listdir(m.path)
    assert not (m.state_dir / "local" / "instances" / name).exists()
    assert not (m.state_dir / "passwords" / "local" / name).exists()
    assert os.listdir(m.state_dir / "local" / "intents") == []


def test_link_serve_migrate_remount_unlink(m, server, tmp_path):
    name = unique_name("lk")
    pid = server.pid()
    with server.connect() as c, c.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS precious (v text)")
        cur.execute("INSERT INTO precious VALUES ('before the link')")
    link(m, f"{name} {server.url()}")

    assert name in os.listdir(m.path)
    assert m.read(name, "status").strip() == "available"
    info = m.read(name, "info")
    assert "linked: yes" in info
    assert "host: 127.0.0.1" in info and f"port: {server.port}" in info
    assert f"username: {ADMIN}" in info
    # Its own server, its own certificates (if any): libpq's default sslmode.
    assert m.read(name, "url").strip() == f"postgresql://{ADMIN}@127.0.0.1:{server.port}/postgres"
    env = m.read(name, "env")
    assert f"PGPORT={server.port}" in env and "PGSSLMODE" not in env and "PGSSLROOTCERT" not in env
    assert m.read(name, "password").strip() == PASSWORD
    assert m.read(name, "pgpass").strip() == f"127.0.0.1:{server.port}:*:{ADMIN}:{PASSWORD}"
    os.stat(m.p(name, "pgpass"))
    r = subprocess.run(["psql", "-X", "-At", m.read(name, "url").strip(), "-c",
                        "SELECT v FROM precious"],
                       env=dict(os.environ, PGPASSFILE=str(m.p(name, "pgpass")),
                                PGCONNECT_TIMEOUT="10"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "before the link"
    assert f"{name}" in m.read(".dbosfs", "instances")

    # Migrations run against the linked server.
    app = tmp_path / "app"
    app.mkdir()
    (app / "dbos-config.yaml").write_text(textwrap.dedent("""\
        name: linkapp
        database:
          app_db_name: linkapp
          migrate:
            - psql -X -v ON_ERROR_STOP=1 -c "CREATE TABLE migrated (x int); INSERT INTO migrated VALUES (7)"
          rollback:
            - psql -X -v ON_ERROR_STOP=1 -c "DROP TABLE migrated"
        """))
    m.write(str(app) + "\n", name, "migrate")
    report = m.read(name, "migrate")
    assert report.endswith("result: ok (1 command)\n"), report
    with server.connect("linkapp") as c, c.cursor() as cur:
        cur.execute("SELECT x FROM migrated")
        assert cur.fetchone() == (7,)
    # databases/ is the server's, through the admin's connection.
    wait_for(lambda: errno_of(os.listdir, m.p(name, "databases")) is None
             and "linkapp" in os.listdir(m.p(name, "databases")), 30, "databases listed")

    # Not ours to change: password reset, branch, restore.
    assert errno_of(m.write, "Another-Pass-99\n", name, "password") == errno.EPERM
    assert "linked" in m.read(name, "last_error")
    assert errno_of(m.write, unique_name("br") + "\n", name, "branch") == errno.EOPNOTSUPP
    assert "linked" in m.read(name, "last_error")
    assert errno_of(m.write, "2026-01-01T00:00:00Z " + unique_name("rs") + "\n", name,
                    "restore") == errno.EOPNOTSUPP

    # A remount: still linked, same password, probed available again.
    m.remount()
    assert name in os.listdir(m.path)
    wait_for(lambda: m.read(name, "status").strip() == "available", 30, "available after remount")
    assert m.read(name, "wait").strip() == "available"
    assert "linked: yes" in m.read(name, "info")
    assert m.read(name, "password").strip() == PASSWORD

    # Unlink: forgotten (and its password), the server and data untouched.
    assert errno_of(os.rmdir, m.p(name)) == errno.EBUSY
    m.destroy(name)
    nothing_left(m, name)
    assert server.pid() == pid
    os.kill(pid, 0)
    with server.connect() as c, c.cursor() as cur:
        cur.execute("SELECT v FROM precious")
        assert cur.fetchall() == [("before the link",)]
    with server.connect("linkapp") as c, c.cursor() as cur:
        cur.execute("SELECT x FROM migrated")
        assert cur.fetchone() == (7,)
    assert "unlinked" in m.read(".dbosfs", "log")


def test_wrong_password_is_eacces_and_leaves_nothing(m, server):
    name = unique_name("lk")
    assert errno_of(link, m, f"{name} {server.url('Wrong-Password-1')}") == errno.EACCES
    msg = m.read(".dbosfs", "last_error")
    assert name in msg and "password authentication failed" in msg
    assert "Wrong-Password-1" not in msg and "Wrong-Password-1" not in m.read(".dbosfs", "log")
    nothing_left(m, name)


def test_unreachable_server_leaves_nothing(m):
    name = unique_name("lk")
    port = free_port()  # nothing listens there
    rc = errno_of(link, m, f"{name} postgresql://{ADMIN}:{PASSWORD}@127.0.0.1:{port}")
    assert rc == errno.ECONNREFUSED
    assert "cannot connect" in m.read(".dbosfs", "last_error")
    nothing_left(m, name)


def test_taken_name_is_eexist(m, server):
    name = unique_name("lk")
    link(m, f"{name} {server.url()}")
    assert errno_of(link, m, f"{name} {server.url()}") == errno.EEXIST
    assert errno_of(os.mkdir, m.p(name)) == errno.EEXIST
    # The first link is intact.
    assert m.read(name, "password").strip() == PASSWORD
    m.destroy(name)
    nothing_left(m, name)


def test_supabase_ref_refused_locally(m, server):
    name = unique_name("lk")
    assert errno_of(link, m, f"{name} {server.url()}?supabase_ref=abc") == errno.EINVAL
    nothing_left(m, name)


def test_password_from_writers_pgpass(m, server, tmp_path):
    name = unique_name("lk")
    home = tmp_path / "home"
    home.mkdir()
    pgpass = home / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{server.port}:*:{ADMIN}:{PASSWORD}\n")
    pgpass.chmod(0o600)
    r = subprocess.run(["sh", "-c", f"echo '{name} {server.url(None)}' > .dbosfs/link"],
                       cwd=m.path, env=dict(os.environ, HOME=str(home)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr + m.read(".dbosfs", "last_error")
    assert m.read(name, "password").strip() == PASSWORD
    assert m.read(name, "status").strip() == "available"
    m.destroy(name)
    nothing_left(m, name)


@pytest.fixture(scope="module")
def rig():
    base = make_base()
    yield pathlib.Path(base)
    shutil.rmtree(base, ignore_errors=True)


def crashed(mnt, step):
    rc = mnt.proc.wait(timeout=60)
    assert rc == CRASH_EXIT, f"daemon exited {rc}, not at {step}:\n{mnt.log()[-3000:]}"
    assert f"DBOSFS_CRASH_AT: exiting at {step}" in mnt.log()
    mnt.kill()


@pytest.mark.parametrize("step,kept", [("link-verified", False), ("link-intent", False),
                                       ("link-dir", False), ("link-meta", False),
                                       ("link-done", True)])
def test_crash_during_link(rig, server, step, kept):
    """kill -9 at each step of a link: a remount shows nothing of it, or a
    complete linked instance with its password."""
    name = unique_name("lk")
    mnt = Mount("local", {"spares": "0"}, {"DBOSFS_CRASH_AT": step}, None, rig)
    try:
        link(mnt, f"{name} {server.url()}")
    except OSError:
        pass
    crashed(mnt, step)
    mnt = Mount("local", {"spares": "0"}, None, None, rig)
    try:
        if kept:
            assert name in os.listdir(mnt.path)
            wait_for(lambda: mnt.read(name, "status").strip() == "available", 30,
                     "available")
            assert mnt.read(name, "password").strip() == PASSWORD
            assert "linked: yes" in mnt.read(name, "info")
            mnt.destroy(name)
        nothing_left(mnt, name)
        assert "recovery: undid the link" in mnt.log() or kept or step == "link-verified"
    finally:
        mnt.unmount()


@pytest.mark.parametrize("step", ["unlink-intent", "unlink-removed"])
def test_crash_during_unlink(rig, server, step):
    """kill -9 while unlinking: the unlink is finished at the next mount, and
    the server and its data are untouched."""
    name = unique_name("lk")
    pid = server.pid()
    mnt = Mount("local", {"spares": "0"}, None, None, rig)
    link(mnt, f"{name} {server.url()}")
    mnt.unmount()
    mnt = Mount("local", {"spares": "0"}, {"DBOSFS_CRASH_AT": step}, None, rig)
    mnt.write(name + "\n", name, "confirm")
    try:
        os.rmdir(mnt.p(name))
    except OSError:
        pass
    crashed(mnt, step)
    mnt = Mount("local", {"spares": "0"}, None, None, rig)
    try:
        nothing_left(mnt, name)
        assert server.pid() == pid
        with server.connect() as c, c.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        mnt.unmount()


def test_stopped_server_shows_unresponsive_and_never_hangs(m):
    """A linked server that goes away is reported, not restarted: status
    becomes unresponsive (probes), reads keep answering from the cache, and
    it comes back to available when the server does."""
    s = Server()
    try:
        name = unique_name("lk")
        link(m, f"{name} {s.url()}")
        subprocess.run([f"{BINDIR}/pg_ctl", "-D", str(s.data), "-m", "fast", "-w", "stop"],
                       preexec_fn=as_nobody, check=True, capture_output=True, timeout=120)
        wait_for(lambda: m.read(name, "status").strip() == "unresponsive", 60,
                 f"unresponsive: {m.read('.dbosfs', 'log')[-2000:]}")
        assert m.read(name, "wait").strip() == "unresponsive"
        assert "linked: yes" in m.read(name, "info")
        assert m.read(name, "password").strip() == PASSWORD
        assert "does not answer" in m.read(".dbosfs", "log") or \
            "did not answer" in m.read(".dbosfs", "log")
        # dbosfs never starts it.
        assert not (s.data / "postmaster.pid").exists()
        opts = (f"-c port={s.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={s.dir}")
        subprocess.run([f"{BINDIR}/pg_ctl", "-D", str(s.data), "-w", "-t", "120",
                        "-l", str(s.dir / "server.log"), "-o", opts, "start"],
                       preexec_fn=as_nobody, check=True, capture_output=True, timeout=180)
        wait_for(lambda: m.read(name, "status").strip() == "available", 60, "available again")
        m.destroy(name)
        nothing_left(m, name)
    finally:
        s.stop()


def test_silent_server_times_out_and_leaves_nothing(m):
    """Something accepts the connection but never speaks (the kernel
    completes the handshake; nobody reads): the link gives up with
    ETIMEDOUT, says so, and leaves nothing."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port = s.getsockname()[1]
        name = unique_name("lk")
        rc = errno_of(link, m, f"{name} postgresql://{ADMIN}:{PASSWORD}@127.0.0.1:{port}")
        assert rc == errno.ETIMEDOUT
        assert "did not answer" in m.read(".dbosfs", "last_error")
        nothing_left(m, name)


def test_databases_of_a_linked_server(m, server):
    """databases/ lists, creates and drops on the linked server itself, as
    its admin (no superuser of dbosfs's exists there)."""
    name = unique_name("lk")
    link(m, f"{name} {server.url()}")
    db = unique_name("db")
    wait_for(lambda: errno_of(os.listdir, m.p(name, "databases")) is None, 30, "listed")
    os.mkdir(m.p(name, "databases", db))
    with server.connect() as c, c.cursor() as cur:
        cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (db,))
        assert cur.fetchone() == (ADMIN,)
    assert m.read(name, "databases", db, "url").strip() == \
        f"postgresql://{ADMIN}@127.0.0.1:{server.port}/{db}"
    write_file(m.p(name, "databases", db, "confirm"), db + "\n")
    os.rmdir(m.p(name, "databases", db))
    with server.connect() as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (db,))
        assert cur.fetchone() == (0,)
    m.destroy(name)
    nothing_left(m, name)


SLOW_DNS_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* slow-link.test is 127.0.0.1, after as many seconds as the file named by
 * DBOSFS_TEST_SLOW_DNS says (none while it does not exist). */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
	int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **) =
	    (int (*)(const char *, const char *, const struct addrinfo *, struct addrinfo **))
	        dlsym(RTLD_NEXT, "getaddrinfo");
	if (node && strcmp(node, "slow-link.test") == 0) {
		const char *path = getenv("DBOSFS_TEST_SLOW_DNS");
		FILE *f = path ? fopen(path, "r") : NULL;
		int s = 0;
		if (f) {
			if (fscanf(f, "%d", &s) != 1)
				s = 0;
			fclose(f);
		}
		if (s > 0)
			sleep((unsigned)s);
		node = "127.0.0.1";
	}
	return real(node, service, hints, res);
}
"""


def test_slow_linked_host_does_not_disturb_local_probes(mount_factory, tmp_path):
    """libpq resolves a host name synchronously: a linked server whose name
    takes seconds to resolve (here an LD_PRELOADed getaddrinfo that sleeps
    6 s for slow-link.test), and which is SIGSTOPped, is probed on the
    linked prober's own thread. A local instance made meanwhile stays
    available in every read, while the linked one becomes unresponsive.
    (A SIGSTOPped linked server alone never disturbed the others: its
    probe is one of many in flight, bounded by the round's 2 s.)"""
    shim_c = tmp_path / "slowdns.c"
    shim_c.write_text(SLOW_DNS_SHIM)
    shim = tmp_path / "slowdns.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(shim), str(shim_c), "-ldl"],
                   check=True, capture_output=True, timeout=60)
    slow = tmp_path / "slow"
    asan = os.environ.get("ASAN_OPTIONS", "")
    m = mount_factory("local", options={"spares": "0"},
                      env={"LD_PRELOAD": str(shim), "DBOSFS_TEST_SLOW_DNS": str(slow),
                           "ASAN_OPTIONS": (asan + ":" if asan else "") +
                           "verify_asan_link_order=0"})
    s = Server()
    stopped = False
    try:
        name = unique_name("lk")
        link(m, f"{name} postgresql://{ADMIN}:{PASSWORD}@slow-link.test:{s.port}")
        assert m.read(name, "status").strip() == "available"
        slow.write_text("6\n")
        os.kill(s.pid(), signal.SIGSTOP)
        stopped = True
        local = unique_name("lp")
        os.mkdir(m.p(local))
        wait_for(lambda: m.read(local, "status").strip() == "available", 120,
                 f"{local} available")
        seen = set()
        linked_seen = set()
        # The local instance is asked at the next round (new) and again each
        # round once one probe missed: before the fix, two rounds stalled by
        # the 6 s resolution made it unresponsive within ~15 s.
        end = time.time() + 30
        while time.time() < end:
            seen.add(m.read(local, "status").strip())
            linked_seen.add(m.read(name, "status").strip())
            time.sleep(0.2)
        wait_for(lambda: m.read(name, "status").strip() == "unresponsive", 60,
                 f"linked unresponsive: {m.read('.dbosfs', 'log')[-2000:]}")
        assert seen == {"available"}, (seen, m.read(".dbosfs", "log")[-3000:])
        assert m.read(local, "status").strip() == "available"
    finally:
        if slow.exists():
            slow.unlink()
        if stopped:
            os.kill(s.pid(), signal.SIGCONT)
        s.stop()


ODD_PASSWORD = "p@ss:w/rd\"x'y\\z and space"


def test_linked_password_with_any_characters(m, tmp_path):
    """A linked server's own password is taken as it is (only a line break
    is refused): NAME/password shows it, url has none, pgpass escapes ':'
    and '\\' so libpq reads it back, env sources in sh, a migration gets it
    through PGPASSWORD and a percent-encoded DBOS_DATABASE_URL, and the
    writer's ~/.pgpass may hold it escaped. EINVAL on main."""
    s = Server()
    try:
        with s.connect() as c, c.cursor() as cur:
            cur.execute("ALTER ROLE " + ADMIN + " PASSWORD %s", (ODD_PASSWORD,))
        name = unique_name("lk")
        link(m, f"{name} postgresql://{ADMIN}:{urllib.parse.quote(ODD_PASSWORD, safe='')}"
                f"@127.0.0.1:{s.port}")
        assert m.read(name, "status").strip() == "available"
        assert m.read(name, "password") == ODD_PASSWORD + "\n"
        url = m.read(name, "url").strip()
        assert url == f"postgresql://{ADMIN}@127.0.0.1:{s.port}/postgres"
        pgpass = m.read(name, "pgpass")
        assert pgpass == (f"127.0.0.1:{s.port}:*:{ADMIN}:"
                          "p@ss\\:w/rd\"x'y\\\\z and space\n")

        # url + the mount's pgpass.
        r = subprocess.run(["psql", "-X", "-tA", url, "-c", "SELECT current_user"],
                           env=dict(os.environ, PGPASSFILE=m.p(name, "pgpass"),
                                    PGCONNECT_TIMEOUT="10"),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == ADMIN
        # env sourced by a POSIX shell, with the pgpass beside it.
        r = subprocess.run(["env", "-i", f"PATH={os.environ['PATH']}", "sh", "-c",
                            'set -a; . "$1/env"; PGPASSFILE="$1/pgpass"; '
                            'psql -X -tA -c "SELECT 42"', "sh", m.p(name)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "42"

        # A migration: PGPASSWORD for psql, and the URL (without PGPASSWORD).
        app = tmp_path / "app"
        app.mkdir()
        (app / "dbos-config.yaml").write_text(textwrap.dedent("""\
            name: oddapp
            database:
              app_db_name: oddapp
              migrate:
                - psql -X -v ON_ERROR_STOP=1 -c "CREATE TABLE odd (x int)"
                - env -u PGPASSWORD -u PGHOST -u PGUSER psql -X -v ON_ERROR_STOP=1 "$DBOS_DATABASE_URL" -c "INSERT INTO odd VALUES (8)"
            """))
        m.write(str(app) + "\n", name, "migrate")
        report = m.read(name, "migrate")
        assert "ok" in report, report
        assert ODD_PASSWORD not in report
        with psycopg2.connect(host="127.0.0.1", port=s.port, user=ADMIN,
                              password=ODD_PASSWORD, dbname="oddapp",
                              connect_timeout=10) as c, c.cursor() as cur:
            cur.execute("SELECT x FROM odd")
            assert cur.fetchone() == (8,)

        # The writer's ~/.pgpass, escaped as libpq reads it.
        name2 = unique_name("lk")
        home = tmp_path / "home"
        home.mkdir()
        (home / ".pgpass").write_text(f"127.0.0.1:{s.port}:*:{ADMIN}:"
                                      "p@ss\\:w/rd\"x'y\\\\z and space\n")
        (home / ".pgpass").chmod(0o600)
        r = subprocess.run(["sh", "-c", f"echo '{name2} postgresql://{ADMIN}@127.0.0.1:{s.port}'"
                            " > .dbosfs/link"],
                           cwd=m.path, env=dict(os.environ, HOME=str(home)),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr + m.read(".dbosfs", "last_error")
        assert m.read(name2, "password") == ODD_PASSWORD + "\n"

        # A line break cannot be kept in a one-line password file.
        name3 = unique_name("lk")
        assert errno_of(link, m, f"{name3} postgresql://{ADMIN}:two%0Alines@127.0.0.1:"
                                 f"{s.port}") == errno.EINVAL
        assert "line break" in m.read(".dbosfs", "last_error")
        nothing_left(m, name3)
        m.destroy(name)
        m.destroy(name2)
    finally:
        s.stop()
