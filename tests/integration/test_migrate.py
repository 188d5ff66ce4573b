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
    assert report.startswith(f"migrate {app} (dbos-config.yaml), database knex_app\n")
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
    assert re.search(r"^\[\.\.\. \d+ bytes of earlier output dropped \.\.\.\]$", report, re.M)
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
    assert url == (f"postgresql://{env_file['PGUSER']}:{password}@{host}:"
                   f"{env_file['PGPORT']}/env_check")
    assert "via_env" in tables(m, name, "env_check")

    # The daemon's file descriptors (/dev/fuse, sockets) do not leak.
    fds = (app / "fds.txt").read_text()
    assert "/dev/fuse" not in fds and "socket:" not in fds, fds

    report = m.read(name, "migrate")
    assert "password is ********\n" in report
    assert password not in report
    assert password not in m.read(name, "last_error")
    assert password not in m.read(".dbosfs", "log")
    assert password not in m.log()


def test_var_substitution(mount_factory, tmp_path):
    m = mount_factory("local", env={"DBOSFS_T_TABLE": "from_env", "DBOSFS_T_DB": "subst_db"})
    name = unique_name("v")
    m.mkdir(name)
    try:
        app = make_app(tmp_path, """\
            name: ignored-because-app-db-name-wins
            database:
              app_db_name: ${DBOSFS_T_DB}
              migrate:
                - psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE ${DBOSFS_T_TABLE}_t (x int)'
                - echo "[${DBOSFS_T_SURELY_UNSET}]"
            """)
        assert run_write(m, name, "migrate", app) is None, m.read(name, "last_error")
        assert tables(m, name, "subst_db") == ["from_env_t"]
        report = m.read(name, "migrate")
        assert ", database subst_db\n" in report
        assert "$ echo \"[]\"\n[]\n" in report
    finally:
        m.destroy(name)


# ---------------------------------------------------------------- bad input

BAD_CASES = [
    # (id, yaml or None for "no file", path transform, kind, errno, last_error text)
    ("relative", "name: a\ndatabase: {migrate: [true]}\n", lambda app: "relative/app",
     "migrate", errno.EINVAL, "relative path relative/app"),
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
    ("migrate-empty", "name: a\ndatabase:\n  migrate: []\n", lambda app: app, "migrate",
     errno.EINVAL, "database.migrate in "),
    ("rollback-missing", "name: a\ndatabase:\n  migrate: [echo hi]\n", lambda app: app,
     "rollback", errno.EINVAL, "database.rollback in "),
    ("empty-command", "name: a\ndatabase:\n  migrate: ['echo', '']\n", lambda app: app,
     "migrate", errno.EINVAL, "database.migrate[1] is an empty command"),
    ("bad-db-name", "name: my.app\ndatabase:\n  migrate: [echo]\n", lambda app: app,
     "migrate", errno.EINVAL, "invalid application database name"),
    ("no-name", "database:\n  migrate: [echo]\n", lambda app: app, "migrate",
     errno.EINVAL, "neither database.app_db_name nor name"),
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
