"""NAME/migrate and NAME/rollback on a mounted local provider: a real Knex
project, then psql-driven cases for failures, environment, ${VAR}
substitution, malformed input, EBUSY, EINTR and permissions."""
import errno
import fcntl
import hashlib
import os
import pathlib
import pwd
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import errno_of, psql, unique_name, write_file

REPO = pathlib.Path(__file__).resolve().parents[2]
KNEX_FIXTURE = REPO / "tests" / "fixtures" / "knex-app"
NPM_CACHE = pathlib.Path(os.environ.get("DBOSFS_NPM_CACHE", "/tmp/dbosfs-npm-cache"))


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope="session")
def knex_modules():
    """node_modules for the Knex fixture, installed once into a cache under
    /tmp keyed by package.json and reused by later runs."""
    if not shutil.which("npm"):
        pytest.fail("npm is needed for the Knex migration test")
    pkg = (KNEX_FIXTURE / "package.json").read_bytes()
    cache = NPM_CACHE / ("knex-app-" + hashlib.sha256(pkg).hexdigest()[:12])
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs share the cache
        if not (cache / "node_modules" / ".bin" / "knex").exists():
            (cache / "package.json").write_bytes(pkg)
            r = subprocess.run(["npm", "install", "--no-audit", "--no-fund",
                                "--loglevel=error"], cwd=cache, capture_output=True,
                               text=True, timeout=600)
            assert r.returncode == 0, f"npm install failed:\n{r.stdout}\n{r.stderr}"
    return cache / "node_modules"


def knex_app(tmp_path, modules):
    app = tmp_path / "knex-app"
    shutil.copytree(KNEX_FIXTURE, app, ignore=shutil.ignore_patterns("node_modules"))
    (app / "node_modules").symlink_to(modules)
    return app


def make_app(tmp_path, yaml, dirname="app"):
    app = tmp_path / dirname
    app.mkdir(exist_ok=True)
    (app / "dbos-config.yaml").write_text(textwrap.dedent(yaml))
    return app


def tables(m, name, db):
    r = psql(m, name, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
             "ORDER BY 1", database=db)
    return r.stdout.split()


def db_exists(m, name, db):
    r = psql(m, name, f"SELECT 1 FROM pg_database WHERE datname = '{db}'")
    return r.stdout.strip() == "1"


def run_write(m, name, what, app):
    """echo APP > NAME/what: returns the errno (None on success)."""
    return errno_of(write_file, m.p(name, what), f"{app}\n")


_WRITE_AS = r"""
import errno, os, sys
try:
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, sys.argv[2].encode())
    finally:
        os.close(fd)
    print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
"""


def write_as(path, data, env=None, cwd=None, preexec_fn=None, timeout=120):
    """Writes from another process (its own environment, cwd and user, as
    a shell's writer would): "ok" or the errno name."""
    r = subprocess.run([sys.executable, "-c", _WRITE_AS, str(path), data], env=env, cwd=cwd,
                       preexec_fn=preexec_fn, capture_output=True, text=True,
                       timeout=timeout)
    return r.stdout.strip() or r.stderr


def timed(fn, *args):
    t = time.monotonic()
    fn(*args)
    return time.monotonic() - t


# ---------------------------------------------------------------- Knex

def test_knex_migrate_rollback_cycle(instance, tmp_path, knex_modules):
    m, name = instance
    app = knex_app(tmp_path, knex_modules)

    assert run_write(m, name, "migrate", app) is None, m.read(name, "last_error")
    assert db_exists(m, name, "knex_app")
    assert {"customers", "orders", "knex_migrations"} <= set(tables(m, name, "knex_app"))
    report = m.read(name, "migrate")
    assert report.startswith(f"migrate {app} (dbos-config.yaml), database knex_app, "
                             "system database knex_app_dbos_sys\n")
    assert "created system database knex_app_dbos_sys\n" in report
    assert db_exists(m, name, "knex_app_dbos_sys")
    assert "created database knex_app\n" in report
    assert "$ npx knex migrate:latest\n" in report
    assert "Batch 1 run: 2 migrations" in report
    assert "exit status: 0\n" in report
    assert re.search(r"^started: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", report, re.M)
    assert re.search(r"^ended: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", report, re.M)
    assert report.endswith("result: ok (1 command)\n")

    # rollback removes the tables; its report is separate.
    assert run_write(m, name, "rollback", app) is None, m.read(name, "last_error")
    left = set(tables(m, name, "knex_app"))
    assert not {"customers", "orders"} & left
    rb = m.read(name, "rollback")
    assert "$ npx knex migrate:rollback\n" in rb and "rolled back: 2 migrations" in rb
    assert rb.endswith("result: ok (1 command)\n")
    assert m.read(name, "migrate") == report

    # migrate again (path to the YAML file itself this time), then once
    # more: the second is a no-op.
    assert run_write(m, name, "migrate", app / "dbos-config.yaml") is None
    assert {"customers", "orders"} <= set(tables(m, name, "knex_app"))
    assert run_write(m, name, "migrate", app) is None
    again = m.read(name, "migrate")
    assert "Already up to date" in again
    assert "created database" not in again
    assert {"customers", "orders"} <= set(tables(m, name, "knex_app"))


# ---------------------------------------------------------------- failures

def test_failing_command_stops_the_run(instance, tmp_path):
    m, name = instance
    app = make_app(tmp_path, """\
        name: fail-app
        database:
          migrate:
            - psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE first_step (x int)'
            - echo about to fail; exit 3
            - psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE never_made (x int)'
        """)
    assert run_write(m, name, "migrate", app) == errno.EIO
    # Earlier effects remain; nothing after the failure ran.
    assert tables(m, name, "fail_app") == ["first_step"]
    report = m.read(name, "migrate")
    assert "$ echo about to fail; exit 3\nabout to fail\nexit status: 3\n" in report
    assert "never_made" not in report
    assert report.endswith("result: failed: command 2 of 3 exited with status 3\n")
    err = m.read(name, "last_error")
    assert "command 2 of 3 (`echo about to fail; exit 3`) exited with status 3" in err

    # What a shell script sees: the write fails, && stops.
    r = subprocess.run(["bash", "-c", f"echo {app} > {m.p(name, 'migrate')} && echo next"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "next" not in r.stdout
    assert "Input/output error" in r.stderr


def test_killed_command_is_reported(instance, tmp_path):
    m, name = instance
    app = make_app(tmp_path, """\
        name: sig-app
        database:
          migrate: ['kill -KILL $$']
        """)
    assert run_write(m, name, "migrate", app) == errno.EIO
    assert "was killed by signal 9" in m.read(name, "last_error")
    assert "result: failed: command 1 of 1 was killed by signal 9" in m.read(name, "migrate")


def test_output_is_bounded(instance, tmp_path):
    m, name = instance
    app = make_app(tmp_path, """\
        name: big-out
        database:
          migrate: ['seq 1 200000; echo last-line']
        """)
    assert run_write(m, name, "migrate", app) is None, m.read(name, "last_error")
    report = m.read(name, "migrate")
    assert len(report) < 80 * 1024
    assert re.search(r"^\[\.\.\. \d+ bytes of output dropped \.\.\.\]$", report, re.M)
    # The first part came as it was written, the last at the end.
    assert "\n1\n2\n3\n" in report
    assert "\n200000\nlast-line\nexit status: 0\n" in report


# ---------------------------------------------------------------- environment

def test_environment_and_secrets(instance, tmp_path):
    m, name = instance
    password = m.read(name, "password").strip()
    env_file = dict(line.split("=", 1) for line in m.read(name, "env").splitlines())
    app = make_app(tmp_path, """\
        name: Env-Check
        database:
          migrate:
            - env > env.txt; ls -l /proc/$$/fd > fds.txt
            - echo "password is $PGPASSWORD"; echo "url is $DBOS_DATABASE_URL"
            - psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE via_env (x int)'
            - touch running; sleep 2
        """)
    done = threading.Event()
    result = {}

    def go():
        result["errno"] = run_write(m, name, "migrate", app)
        done.set()

    t = threading.Thread(target=go)
    t.start()
    try:
        # While the commands run, no process's argv carries the password.
        deadline = time.time() + 60
        while not (app / "running").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert (app / "running").exists(), "the last command never started"
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True,
                            text=True).stdout
        assert "sleep 2" in ps
        assert password not in ps
    finally:
        t.join(120)
    assert result["errno"] is None, m.read(name, "last_error")

    env = dict(line.split("=", 1) for line in (app / "env.txt").read_text().splitlines()
               if "=" in line)
    assert env["PGPASSWORD"] == password
    assert env["PGHOST"] == env_file["PGHOST"]
    assert env["PGPORT"] == env_file["PGPORT"]
    assert env["PGUSER"] == env_file["PGUSER"]
    assert env["PGDATABASE"] == "env_check"
    url = env["DBOS_DATABASE_URL"]
    host = env_file["PGHOST"]
    host = f"[{host}]" if ":" in host else host
    ca = str(m.state_dir / "local" / "tls" / "ca.pem")
    # No query string: ${DBOS_DATABASE_URL} is spliced into shell commands.
    assert url == (f"postgresql://{env_file['PGUSER']}:{password}@{host}:"
                   f"{env_file['PGPORT']}/env_check")
    # TLS, checked against the mount's CA, as url and env promise.
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == ca and env["NODE_EXTRA_CA_CERTS"] == ca
    assert "via_env" in tables(m, name, "env_check")

    # The daemon's file descriptors (/dev/fuse, sockets) do not leak.
    fds = (app / "fds.txt").read_text()
    assert "/dev/fuse" not in fds and "socket:" not in fds, fds

    report = m.read(name, "migrate")
    assert "password is [redacted]\n" in report
    assert password not in report
    assert password not in m.read(name, "last_error")
    assert password not in m.read(".dbosfs", "log")
    assert password not in m.log()


def test_var_substitution(mount_factory, tmp_path):
    """${VAR} comes from the writer's environment plus the connection
    variables dbosfs sets; the daemon's own environment is not used."""
    m = mount_factory("local", env={"DBOSFS_T_DAEMON_ONLY": "daemon"})
    name = unique_name("v")
    m.mkdir(name)
    try:
        password = m.read(name, "password").strip()
        app = make_app(tmp_path, """\
            name: ignored-because-app-db-name-wins
            database:
              app_db_name: ${DBOSFS_T_DB}
              migrate:
                - psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE ${DBOSFS_T_TABLE}_t (x int)'
                - echo "[${DBOSFS_T_SURELY_UNSET}] [${DBOSFS_T_DAEMON_ONLY}]"
                - psql -v ON_ERROR_STOP=1 -d ${PGDATABASE} -c 'CREATE TABLE via_pgdatabase (x int)'
                - psql -v ON_ERROR_STOP=1 -d "${DBOS_DATABASE_URL}" -c 'CREATE TABLE via_url (x int)'
            """)
        env = dict(os.environ, DBOSFS_T_TABLE="from_writer", DBOSFS_T_DB="subst_db")
        r = write_as(m.p(name, "migrate"), f"{app}\n", env=env)
        assert r == "ok", (r, m.read(name, "last_error"))
        assert tables(m, name, "subst_db") == ["from_writer_t", "via_pgdatabase", "via_url"]
        report = m.read(name, "migrate")
        assert ", database subst_db, system database " in report
        # Unset (and the daemon's own): "" (two double quotes), as the SDK does.
        assert '$ echo "[""] [""]"\n[] []\n' in report
        assert "$ psql -v ON_ERROR_STOP=1 -d subst_db -c" in report
        # The URL's password is masked in the command line shown.
        assert '-d "postgresql://' in report and "[redacted]@" in report
        assert password not in report
        assert f"environment: the writer's (pid " in report
    finally:
        m.destroy(name)


# ---------------------------------------------------------------- bad input

BAD_CASES = [
    # (id, yaml or None for "no file", path transform, kind, errno, last_error text)
    ("missing-dir", None, lambda app: app / "nope", "migrate", errno.ENOENT, "nope"),
    ("no-yaml", None, lambda app: app, "migrate", errno.ENOENT,
     "dbos-config.yaml not found"),
    ("not-yaml", "name: a\ndatabase:\n  migrate: ['x'\n  rollback: [\n", lambda app: app,
     "migrate", errno.EINVAL, "dbos-config.yaml:"),
    ("root-list", "- a\n- b\n", lambda app: app, "migrate", errno.EINVAL,
     "must be a mapping"),
    ("database-list", "name: a\ndatabase: [x]\n", lambda app: app, "migrate",
     errno.EINVAL, "database must be a mapping"),
    ("migrate-string", "name: a\ndatabase:\n  migrate: npx knex migrate:latest\n",
     lambda app: app, "migrate", errno.EINVAL,
     "database.migrate must be a list of commands, not a string"),
    ("migrate-ints", "name: a\ndatabase:\n  migrate: [1, 2]\n", lambda app: app,
     "migrate", errno.EINVAL, "database.migrate[0] must be a command string"),
    ("deep-yaml", "name: a\nx: " + "[" * 100000 + "]" * 100000 + "\n", lambda app: app,
     "migrate", errno.EINVAL, "nested more than 64 levels deep"),
    ("empty-command", "name: a\ndatabase:\n  migrate: ['echo', '']\n", lambda app: app,
     "migrate", errno.EINVAL, "database.migrate[1] is an empty command"),
    ("bad-db-name", "name: my.app\ndatabase:\n  migrate: [echo]\n", lambda app: app,
     "migrate", errno.EINVAL, "invalid application database name"),
    ("no-name", "database:\n  migrate: [echo]\n", lambda app: app, "migrate",
     errno.EINVAL, "no database_url, database.app_db_name or name"),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_malformed_input(instance, tmp_path, case):
    m, name = instance
    _, yaml, path_of, kind, want_errno, want_text = case
    app = tmp_path / "app"
    app.mkdir()
    if yaml is not None:
        (app / "dbos-config.yaml").write_text(yaml)
    path = path_of(app)
    t = time.monotonic()
    assert errno_of(write_file, m.p(name, kind), f"{path}\n") == want_errno
    assert time.monotonic() - t < 5  # refused up front: nothing ran
    err = m.read(name, "last_error")
    assert want_text in err, err
    report = m.read(name, kind)
    assert "result: error: " in report and want_text in report
    assert "exit status" not in report


# ---------------------------------------------------------------- concurrency

def test_ebusy_and_fast_reads_while_running(instance, tmp_path):
    m, name = instance
    app = make_app(tmp_path, """\
        name: slow-app
        database:
          migrate: ['touch started; sleep 3; echo slow done']
          rollback: ['echo rollback']
        """)
    result = {}
    t = threading.Thread(target=lambda: result.update(e=run_write(m, name, "migrate", app)))
    t.start()
    try:
        deadline = time.time() + 60
        while not (app / "started").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert (app / "started").exists()
        # Another run on the same instance, either kind: EBUSY at once.
        assert run_write(m, name, "migrate", app) == errno.EBUSY
        assert run_write(m, name, "rollback", app) == errno.EBUSY
        assert "already running" in m.read(name, "last_error")
        # The mount keeps answering.
        assert timed(os.listdir, m.path) < 0.5
        assert timed(m.read, name, "status") < 0.5
        assert timed(os.listdir, m.p(name)) < 0.5
        assert t.is_alive()
    finally:
        t.join(120)
    assert result["e"] is None, m.read(name, "last_error")
    assert "slow done" in m.read(name, "migrate")


_INTERRUPT_CHILD = r"""
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
signal.signal(signal.SIGINT, lambda *a: None)   # no SA_RESTART: write returns EINTR
path, data = sys.argv[1], sys.argv[2].encode()
fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
print("writing", flush=True)
t = time.monotonic()
n = libc.write(fd, data, len(data))
err = ctypes.get_errno()
print(f"result {n} {err} {time.monotonic() - t:.2f}", flush=True)
"""


@pytest.mark.parametrize("ignore_term", [False, True], ids=["term", "term-ignored"])
def test_interrupt_kills_the_group(instance, tmp_path, ignore_term):
    m, name = instance
    # A unique duration finds our sleeps (and only ours) with pgrep.
    marker = f"sleep 3000.{os.getpid()}{int(ignore_term)}"
    trap = "trap '' TERM; " if ignore_term else ""
    # A background child and a foreground one, both in the command's group.
    app = make_app(tmp_path, f"""\
        name: intr-app
        database:
          migrate:
            - "{trap}({marker}; :) & touch started; {marker}"
        """)
    p = subprocess.Popen([sys.executable, "-c", _INTERRUPT_CHILD, str(m.p(name, "migrate")),
                          f"{app}\n"], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (app / "started").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert (app / "started").exists()
        time.sleep(0.3)
        assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0
        t = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
        elapsed = time.monotonic() - t
    finally:
        if p.poll() is None:
            p.kill()
    res = out.split("result ")[1].split()
    assert int(res[0]) == -1 and int(res[1]) == errno.EINTR, out
    # SIGTERM works at once; an ignored one is followed by SIGKILL after ~2 s.
    assert elapsed < (5 if ignore_term else 1.5), elapsed
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-a", "-f", marker], capture_output=True, text=True)
    assert left.returncode == 1, f"orphans survived: {left.stdout}"
    assert m.read(name, "migrate").endswith("result: interrupted\n")
    assert "interrupted" in m.read(name, "last_error")
    # The instance is free again.
    app2 = make_app(tmp_path, "name: intr-app\ndatabase:\n  migrate: ['echo again']\n", "app2")
    assert run_write(m, name, "migrate", app2) is None


# ---------------------------------------------------------------- permissions

def test_non_owner_gets_eacces(mount_factory, tmp_path):
    m = mount_factory("local", options={"allow_other": None})
    name = unique_name("p")
    m.mkdir(name)
    try:
        app = make_app(tmp_path, """\
            name: perm-app
            database:
              migrate: ['touch ran']
            """)
        nobody = pwd.getpwnam("nobody")

        def as_nobody():
            os.setgid(nobody.pw_gid)
            os.setgroups([])
            os.setuid(nobody.pw_uid)

        code = ("import errno, os, sys\n"
                "try:\n"
                "    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)\n"
                "    os.write(fd, sys.argv[2].encode())\n"
                "    print('ok')\n"
                "except OSError as e:\n"
                "    print(errno.errorcode[e.errno])\n")
        for kind in ("migrate", "rollback"):
            r = subprocess.run([sys.executable, "-c", code, str(m.p(name, kind)), f"{app}\n"],
                               preexec_fn=as_nobody, capture_output=True, text=True,
                               timeout=60)
            assert r.stdout.strip() == "EACCES", r.stdout + r.stderr
        assert not (app / "ran").exists()
        # The owner still can.
        assert run_write(m, name, "migrate", app) is None, m.read(name, "last_error")
        assert (app / "ran").exists()
    finally:
        m.destroy(name)


# ---------------------------------------------------------------- issue 7: secrets, YAML, crashes

def test_secret_cut_by_the_output_bound_is_masked(instance, tmp_path):
    """The report keeps the first and the last part of long output: a
    secret the cuts split must not leave a fragment behind."""
    m, name = instance
    password = m.read(name, "password").strip()
    script = tmp_path / "emit.py"
    # Command K: the secret straddles the end of the live part (K of its
    # characters before it), then again the start of the kept tail.
    script.write_text(textwrap.dedent("""\
        import os, sys
        k, tail = int(sys.argv[1]), int(sys.argv[2]) * 1024
        p = os.environ["PGPASSWORD"]
        sys.stdout.write("x" * (16 * 1024 - k) + p + "y" * 200000 + p + "z" * (tail - k))
        """))
    # The kept tail is 48 KiB (64 KiB before this was fixed: try both).
    cmds = "".join(f"    - python3 {script} {k} {tail}\n"
                   for k in (2, 5, len(password) - 2) for tail in (48, 64))
    app = make_app(tmp_path, "name: cut-app\ndatabase:\n  migrate:\n" + cmds)
    assert run_write(m, name, "migrate", app) is None, m.read(name, "last_error")
    report = m.read(name, "migrate")
    assert password not in report
    for k in (2, 3, 5, len(password) - 2):
        assert password[:k] + "y" not in report and "x" + password[:k] + "\n" not in report
        assert "\n" + password[-k:] + "z" not in report
        assert password[-k:] + "zzzz" not in report


def test_deep_yaml_is_refused_at_once(instance, tmp_path):
    m, name = instance
    app = tmp_path / "deep"
    app.mkdir()
    (app / "dbos-config.yaml").write_text("name: a\nx: " + "[" * 100000 + "]" * 100000 + "\n")
    t = time.monotonic()
    assert run_write(m, name, "migrate", app) == errno.EINVAL
    assert time.monotonic() - t < 1.0
    assert "nested more than 64 levels deep" in m.read(name, "last_error")


def _alive(marker):
    """pids whose command line starts with marker (not the shells that
    mention it)."""
    r = subprocess.run(["pgrep", "-f", "^" + marker], capture_output=True, text=True)
    return r.stdout.split()


def test_daemon_killed_mid_migration_leaves_nothing_running(mount_factory, tmp_path):
    """kill -9 of the daemon: the command's group dies with it (guard with
    PR_SET_PDEATHSIG); what escaped the group (setsid) is killed by the
    next mount, found by the record under state_dir and its run tag."""
    m = mount_factory("local")
    name = unique_name("k")
    m.mkdir(name)
    tag = f"{os.getpid()}{int(time.time()) % 100000}"
    in_group, escaped = f"sleep 3001.{tag}", f"sleep 3002.{tag}"
    app = make_app(tmp_path, f"""\
        name: crash-app
        database:
          migrate:
            - "setsid {escaped} & ({in_group}; :) & touch started; {in_group}"
        """)
    p = subprocess.Popen([sys.executable, "-c", _INTERRUPT_CHILD, str(m.p(name, "migrate")),
                          f"{app}\n"], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (app / "started").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert (app / "started").exists()
        time.sleep(0.3)
        assert len(_alive(in_group)) == 2 and len(_alive(escaped)) == 1
        assert list((m.state_dir / "migrate").iterdir()), "no record of the running command"
        m.kill()  # SIGKILL, then a lazy unmount
        deadline = time.time() + 5
        while _alive(in_group) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(in_group), "the command's group outlived the daemon"
        m.start()
        deadline = time.time() + 5
        while _alive(escaped) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(escaped), "the remount left the old run's process alive"
        assert not list((m.state_dir / "migrate").iterdir())
        assert re.search(r"migrations interrupted by an earlier crash: 1 run, [1-9]\d* "
                         r"process(es)? killed", m.log()), m.log()
    finally:
        p.kill()
        p.wait()
        for pid in _alive(in_group) + _alive(escaped):
            os.kill(int(pid), signal.SIGKILL)
    # The instance works after the remount.
    m.read(name, "wait")
    app2 = make_app(tmp_path, "name: crash-app\ndatabase:\n  migrate: ['echo again']\n", "app2")
    assert run_write(m, name, "migrate", app2) is None, m.read(name, "last_error")
    m.destroy(name)


# ---------------------------------------------------------------- issue 8: Ctrl-C on the server

def _interrupt_write(m, name, app, started, wait=0.5):
    p = subprocess.Popen([sys.executable, "-c", _INTERRUPT_CHILD, str(m.p(name, "migrate")),
                          f"{app}\n"], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not started() and time.time() < deadline:
            time.sleep(0.05)
        assert started(), "the command never started"
        time.sleep(wait)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    res = out.split("result ")[1].split()
    assert int(res[0]) == -1 and int(res[1]) == errno.EINTR, out
    return float(res[2])


def _sleeping(m, name):
    r = psql(m, name, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(8)%' "
             "AND pid <> pg_backend_pid()")
    return int(r.stdout.strip()) > 0


@pytest.mark.parametrize("how", ["psql", "psql-out-of-reach"])
def test_interrupt_commits_nothing(instance, tmp_path, how):
    """Ctrl-C while psql runs BEGIN; INSERT; pg_sleep; COMMIT (one query
    string, all sent at once): nothing commits afterwards. psql gets
    SIGINT and cancels; a psql out of the signal's reach (setsid) is
    killed, and its statement cancelled on the server."""
    m, name = instance
    psql_cmd = ("psql -v ON_ERROR_STOP=1 -c \"BEGIN; INSERT INTO t VALUES (1); "
                "SELECT pg_sleep(8); COMMIT\"")
    cmd = psql_cmd if how == "psql" else f"setsid {psql_cmd} & wait"
    app = make_app(tmp_path, f"""\
        name: cancel-app
        database:
          migrate:
            - psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE t (x int)'
            - '{cmd}'
        """)
    _interrupt_write(m, name, app, lambda: _sleeping(m, name))
    # Past the sleep's end: nothing committed, nothing still running.
    time.sleep(9)
    assert psql(m, name, "SELECT count(*) FROM t", database="cancel_app").stdout.strip() == "0"
    assert not _sleeping(m, name)
    report = m.read(name, "migrate")
    assert report.endswith("result: interrupted\n")
    assert "interrupted: sent SIGINT to the command's process group" in report
    if how == "psql":
        assert "server: no statement of this run was still running\n" in report
    else:
        assert re.search(r"^server: cancelled the active statement of session \d+: "
                         r"BEGIN; INSERT INTO t VALUES \(1\); SELECT pg_sleep\(8\)", report,
                         re.M), report


# ---------------------------------------------------------------- issue 8: the writer's world

def test_relative_path_tools_and_user_of_the_writer(instance, tmp_path):
    m, name = instance
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "my-migrator"
    tool.write_text("#!/bin/sh\necho \"my-migrator ran in $(pwd) as $(id -u):$(id -g) "
                    "groups $(id -G)\"\n")
    tool.chmod(0o755)
    app = make_app(tmp_path, """\
        name: world-app
        database:
          migrate: ['my-migrator', 'echo "[${WRITER_ONLY}]"']
        """)
    os.chmod(tmp_path, 0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", WRITER_ONLY="yes")

    def as_group():
        os.setgroups([65534])  # uid and gid stay 0: FUSE admits only those

    # "." from the application directory; the writer's PATH finds the tool;
    # the command runs with the writer's uid, gid and groups.
    r = write_as(m.p(name, "migrate"), ".\n", env=env, cwd=app, preexec_fn=as_group)
    assert r == "ok", (r, m.read(name, "last_error"))
    report = m.read(name, "migrate")
    assert report.startswith(f"migrate {app} (dbos-config.yaml), database world_app")
    assert f"my-migrator ran in {app} as 0:0 groups 0 65534\n" in report
    assert "[yes]" in report
    # A relative path to the file itself works too.
    r = write_as(m.p(name, "migrate"), "app/dbos-config.yaml\n", env=env, cwd=tmp_path)
    assert r == "ok", (r, m.read(name, "last_error"))


def test_printf_tee_idiom_carries_the_current_environment(instance, tmp_path):
    """A shell's builtin echo writes with the environment the shell started
    with; an external writer (tee) carries variables exported since."""
    m, name = instance
    app = make_app(tmp_path, """\
        name: idiom-app
        database:
          migrate: ['echo "[${EXPORTED_LATER}]"']
        """)
    target = m.p(name, "migrate")
    r = subprocess.run(["bash", "-c", f"cd {app} && export EXPORTED_LATER=now && "
                        f"printf '%s\\n' . | tee {target} >/dev/null"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "[now]\n" in m.read(name, "migrate")


# ---------------------------------------------------------------- issue 8: config fields, system db

def test_empty_list_database_url_and_system_database(instance, tmp_path):
    m, name = instance
    # No name: package.json's. database_url names the application database.
    app = make_app(tmp_path, """\
        database_url: postgresql://someone:not-used@elsewhere:5432/url_db
        database:
          migrate: []
        """)
    (app / "package.json").write_text('{"name": "pkg-app", "version": "1.0.0"}\n')
    assert run_write(m, name, "migrate", app) is None, m.read(name, "last_error")
    report = m.read(name, "migrate")
    assert ", database url_db, system database pkg_app_dbos_sys\n" in report
    assert "name: pkg-app (from package.json)\n" in report
    assert "nothing to run: database.migrate is empty or missing\n" in report
    assert report.endswith("result: ok (nothing to run)\n")
    assert "not-used" not in report
    assert db_exists(m, name, "url_db") and db_exists(m, name, "pkg_app_dbos_sys")
    # rollback with no list: the same, and no system database step.
    assert run_write(m, name, "rollback", app) is None
    assert m.read(name, "rollback").endswith("result: ok (nothing to run)\n")

    # system_database_url names it; it is made even after a failed command.
    app2 = make_app(tmp_path, """\
        name: sys-app
        system_database_url: postgresql://u@h/custom_sys
        database:
          migrate: ['exit 4']
        """, "app2")
    assert run_write(m, name, "migrate", app2) == errno.EIO
    report = m.read(name, "migrate")
    assert "created system database custom_sys\n" in report
    assert report.endswith("result: failed: command 1 of 1 exited with status 4\n")
    assert db_exists(m, name, "custom_sys")


# ---------------------------------------------------------------- issue 8: live report

def test_live_report_grows_while_the_run_goes(instance, tmp_path):
    m, name = instance
    app = make_app(tmp_path, """\
        name: live-app
        database:
          migrate: ['echo first-line; touch started; sleep 1.5; echo second-line; sleep 1']
        """)
    result = {}
    t = threading.Thread(target=lambda: result.update(e=run_write(m, name, "migrate", app)))
    t.start()
    try:
        deadline = time.time() + 60
        while not (app / "started").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.4)
        snapshot = m.read(name, "migrate")
        assert snapshot.startswith(f"migrate {app} (dbos-config.yaml), database live_app")
        assert "$ echo first-line;" in snapshot and "first-line\n" in snapshot
        assert snapshot.endswith("result: running\n")
        assert "second-line\n" not in snapshot
        # tail -f: one open file, reads at growing offsets.
        seen = ""
        with open(m.p(name, "migrate")) as f:
            deadline = time.time() + 60
            while "result: ok" not in seen and time.time() < deadline:
                chunk = f.read()
                seen += chunk
                if not chunk:
                    time.sleep(0.1)
        assert seen.startswith(snapshot[:-len("result: running\n")])
        assert "second-line\n" in seen
        assert seen.endswith("result: ok (1 command)\n")
    finally:
        t.join(120)
    assert result["e"] is None
    final = m.read(name, "migrate")
    assert "result: running" not in final and final.endswith("result: ok (1 command)\n")
