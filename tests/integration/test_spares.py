"""Spare servers kept running (issue 11 item 5): mkdir claims one.

One mount (spares=2) serves most tests; spares=0, a mkdir right after
mount and a crash during a claim get mounts of their own."""
import os
import pathlib
import subprocess
import time

import psycopg2
import pytest

from conftest import local_mount_for_module, unique_name, wait_for

CRASH_EXIT = 86


def postmasters(state_dir):
    """PIDs of postmasters (not their children) whose data directory is
    under state_dir."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (argv and argv[0].endswith(b"/postgres") and b"-D" in argv and b"-p" in argv
                and argv[argv.index(b"-D") + 1].startswith(str(state_dir).encode())):
            out.append(int(pid))
    return out


def spare_ports(m):
    """Ports of the running spares, from their postmaster.pid."""
    ports = []
    spares = m.state_dir / "local" / "spares"
    for d in spares.iterdir() if spares.exists() else []:
        pidfile = d / "data" / "postmaster.pid"
        try:
            ports.append(int(pidfile.read_text().splitlines()[3]))
        except (OSError, IndexError, ValueError):
            pass
    return ports


def ready_spares(m):
    return len(spare_ports(m))


def creds(m, name):
    host, port, _db, user, password = m.read(name, "pgpass").strip().split(":", 4)
    return host, int(port), user, password


def login(port, user, password, host="127.0.0.1"):
    return psycopg2.connect(host=host, port=port, user=user, password=password,
                            dbname="postgres", connect_timeout=5)


def refused(port, user, password):
    try:
        login(port, user, password).close()
    except psycopg2.OperationalError:
        return True
    return False


@pytest.fixture(scope="module")
def spared():
    yield from local_mount_for_module({"spares": "2"})


def test_spares_run_unlisted_and_refuse_logins(spared):
    m = spared
    wait_for(lambda: ready_spares(m) == 2, 120, "two running spares")
    assert len(postmasters(m.state_dir)) == 2
    # Never listed, in any listing.
    assert os.listdir(m.path) == [".dbosfs"] or set(os.listdir(m.path)) <= {".dbosfs"}
    assert "spare" not in m.read(".dbosfs", "instances")
    # No login works on an unclaimed spare: the admin has no password yet,
    # dbosfs's superuser is refused over TCP.
    for port in spare_ports(m):
        assert refused(port, "dbos_user", "")
        assert refused(port, "dbos_user", "anything")
        assert refused(port, "dbosfs", "anything")
        assert refused(port, "postgres", "anything")


def test_claimed_spare_has_admin_password_and_port(spared):
    m = spared
    wait_for(lambda: ready_spares(m) == 2, 120, "two running spares")
    before = set(spare_ports(m))
    name = unique_name("sp")
    t0 = time.perf_counter()
    m.mkdir(name)
    host, port, user, password = creds(m, name)
    # Accepts connections when mkdir returns: no waiting here.
    c = login(port, user, password)
    elapsed = time.perf_counter() - t0
    with c, c.cursor() as cur:
        cur.execute("select current_user, inet_server_port()")
        assert cur.fetchone() == ("dbos_user", port)
    c.close()
    assert port in before, (port, before)
    assert f"port: {port}" in m.read(name, "info") or str(port) in m.read(name, "info")
    assert "(a running spare)" in m.read(".dbosfs", "log")
    # No other login works on it.
    assert refused(port, user, password + "x")
    assert refused(port, "dbosfs", password)
    assert refused(port, "postgres", password)
    print(f"mkdir to first query: {elapsed * 1000:.0f} ms")
    m.destroy(name)


def superuser_sql(m, name, sql):
    """As dbosfs's own superuser, over the instance's private socket."""
    password = (m.state_dir / "local" / "superuser").read_text().strip()
    port = creds(m, name)[1]
    c = psycopg2.connect(host=str(m.state_dir / "local" / "run" / name), port=port,
                         user="dbosfs", password=password, dbname="postgres",
                         connect_timeout=5)
    c.autocommit = True
    try:
        with c.cursor() as cur:
            cur.execute(sql)
    finally:
        c.close()


def test_claimed_spare_survives_checkpoints_and_crash_restarts(spared):
    """The spare's server was started in spares/USER.N; the claim moves that
    directory to instances/NAME while the server runs. PostgreSQL writes
    pg_control (every checkpoint) and restarts after a backend crash by the
    absolute data directory path it was started with: before, the first
    checkpoint after the claim PANICked ("could not open file
    .../spares/USER.N/data/global/pg_control") and took the server down."""
    m = spared
    wait_for(lambda: ready_spares(m) == 2, 120, "two running spares")
    name = unique_name("cp")
    m.mkdir(name)
    assert "(a running spare)" in m.read(".dbosfs", "log")
    _h, port, user, password = creds(m, name)
    c = login(port, user, password)
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    c.close()
    pid = int((m.state_dir / "local" / "instances" / name / "data" /
               "postmaster.pid").read_text().split()[0])
    superuser_sql(m, name, "CHECKPOINT")
    # A backend crash makes the postmaster reinitialise in place (it does
    # not exit): that reads the data directory by its path too.
    backend = subprocess.run(
        ["pgrep", "-P", str(pid), "-f", "checkpointer"], capture_output=True, text=True)
    assert backend.returncode == 0, "no checkpointer child"
    os.kill(int(backend.stdout.split()[0]), 9)
    wait_for(lambda: not refused(port, user, password), 30, "the server back after the crash")
    superuser_sql(m, name, "CHECKPOINT")
    c = login(port, user, password)
    with c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchone() == (1000,)
    c.close()
    log = (m.state_dir / "local" / "instances" / name / "server.log").read_text()
    assert "PANIC" not in log and "could not stat data directory" not in log, log[-2000:]
    assert os.path.exists(f"/proc/{pid}"), "the postmaster exited"
    m.destroy(name)


def test_spares_survive_remount(spared):
    m = spared
    wait_for(lambda: ready_spares(m) == 2, 120, "two running spares")
    m.remount()
    # Started again from the same directories (no new copy needed).
    wait_for(lambda: ready_spares(m) == 2, 60, "two running spares after remount")
    wait_for(lambda: len(postmasters(m.state_dir)) == 2, 10, "only the spares' postmasters")
    name = unique_name("sr")
    m.mkdir(name)
    _h, port, user, password = creds(m, name)
    login(port, user, password).close()
    assert m.read(".dbosfs", "log").count("(a running spare)") >= 1
    m.destroy(name)


def test_mkdir_right_after_mount_without_spare(mount_factory):
    m = mount_factory("local", {"spares": "2"})
    name = unique_name("sn")
    m.mkdir(name)  # no template, no spare yet: the slow path
    _h, port, user, password = creds(m, name)
    login(port, user, password).close()
    assert "(a running spare)" not in m.read(".dbosfs", "log")


def test_spares_zero_runs_none(mount_factory):
    m = mount_factory("local", {"spares": "0"})
    name = unique_name("sz")
    m.mkdir(name)
    _h, port, user, password = creds(m, name)
    login(port, user, password).close()
    time.sleep(3)  # the preparer has had its rounds
    assert len(postmasters(m.state_dir)) == 1
    assert os.listdir(m.state_dir / "local" / "spares") == []
    m.destroy(name)


@pytest.mark.parametrize("step", ["claim-renamed", "claim-socket-moved",
                                  "provision-claimed", "provision-password-set"])
def test_crash_during_claim(mount_factory, step):
    m = mount_factory("local", {"spares": "1"})
    wait_for(lambda: ready_spares(m) == 1, 120, "a running spare")
    m.unmount()
    started = m.log().count("ready on port")
    m.env = {"DBOSFS_CRASH_AT": step}
    m.start()
    wait_for(lambda: m.log().count("ready on port") > started, 60, "the spare started again")
    name = unique_name("sc")
    try:
        m.mkdir(name)
    except OSError:
        pass
    m.proc.wait(timeout=30)
    assert m.proc.returncode == CRASH_EXIT, m.log()[-3000:]
    m._stderr.close()
    m.proc = None
    subprocess.run(["fusermount3", "-u", "-z", str(m.path)], stderr=subprocess.DEVNULL)
    m.env = {}
    m.start()
    names = [n for n in os.listdir(m.path) if n != ".dbosfs"]
    if step == "provision-password-set":
        # Complete but for the record: usable or gone, never half-made.
        # (At claim-socket-moved and provision-claimed the password may
        # have been committed on the spare too: still undone, all of it.)
        assert names in ([], [name])
    else:
        assert names == []
    if names:
        wait_for(lambda: "available" in m.read(name, "status"), 60, "available")
        _h, port, user, password = creds(m, name)
        login(port, user, password).close()
    assert not (m.state_dir / "local" / "intents" / name).exists()
    # A new claim works after recovery.
    wait_for(lambda: ready_spares(m) == 1, 120, "a running spare after recovery")
    other = unique_name("sd")
    m.mkdir(other)
    _h, port, user, password = creds(m, other)
    login(port, user, password).close()


def in_spares(pid):
    """A postmaster runs in its data directory: under spares/ until claimed
    (its command line names slots/N, which the claim points elsewhere)."""
    try:
        return "/local/spares/" in os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False


def kept_backends(state_dir):
    """PIDs of the backends of dbosfs's superuser in running spares (the
    connection kept for the claim): children of a spare's postmaster whose
    title names the dbosfs role."""
    spares = [pid for pid in postmasters(state_dir) if in_spares(pid)]
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
            title = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid in spares and title.startswith(b"postgres: dbosfs postgres [local]"):
            out.append(int(pid))
    return out


def test_claim_reconnects_when_the_kept_connection_is_lost(spared):
    m = spared
    wait_for(lambda: ready_spares(m) == 2, 120, "two running spares")
    # Each running spare holds dbosfs's connection for its claim (none
    # before: every claim connected, with a backend fork and SCRAM).
    wait_for(lambda: len(kept_backends(m.state_dir)) == 2, 30, "a kept connection per spare")
    # Lost (as pg_terminate_backend or a crash of that backend would):
    # the claim connects again and succeeds.
    for pid in kept_backends(m.state_dir):
        os.kill(pid, 15)
    wait_for(lambda: kept_backends(m.state_dir) == [], 30, "the kept backends gone")
    name = unique_name("sl")
    m.mkdir(name)
    _h, port, user, password = creds(m, name)
    c = login(port, user, password)
    with c, c.cursor() as cur:
        cur.execute("select current_user")
        assert cur.fetchone() == ("dbos_user",)
    c.close()
    log = m.read(".dbosfs", "log")
    assert f"connecting again to claim it for {name}" in log
    assert f"instance {name} provisioned" in log and "(a running spare)" in log
    assert refused(port, user, password + "x")
    assert refused(port, "dbosfs", password)
    m.destroy(name)


def test_custom_admin_user_claims_a_running_spare(mount_factory):
    """db_username= names the admin of every mkdir of the mount: its spares
    are made for that user, so its mkdirs claim running spares too."""
    m = mount_factory("local", {"spares": "1", "db_username": "alice"})
    wait_for(lambda: "ready on port" in m.read(".dbosfs", "log"), 120, "a running spare")
    name = unique_name("su")
    m.mkdir(name)
    _h, port, user, password = creds(m, name)
    assert user == "alice"
    assert f"instance {name} provisioned" in m.read(".dbosfs", "log")
    assert "(a running spare)" in m.read(".dbosfs", "log")
    c = login(port, "alice", password)
    with c, c.cursor() as cur:
        cur.execute("select current_user, rolsuper from pg_roles where rolname = current_user")
        assert cur.fetchone() == ("alice", False)
    c.close()
    # No other login works on it: not the default admin name, not dbosfs's
    # superuser over TCP, not postgres.
    for other in ("dbos_user", "dbosfs", "postgres"):
        assert refused(port, other, password)
    assert refused(port, "alice", password + "x")
    m.destroy(name)
