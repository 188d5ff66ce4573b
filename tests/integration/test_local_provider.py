"""The local provider through a real mount: supervision of real PostgreSQL
servers (kill -9, ports taken at remount, stale and leftover postmasters),
data surviving remounts, nothing left running after unmount, concurrent
mkdir of one name, no secret or /dev/fuse reaching a server, a hung
(SIGSTOPped) server reported "unresponsive" without slowing anything else,
one mount per state_dir (a second is refused, even against a daemonized
first), a failed instance retried slowly in the background until it is
available again, a start in flight cancelled by destroy and unmount, and a
nearly full disk (a small tmpfs): mkdir fails with ENOSPC and
leaves nothing behind, and no warm spare takes the last of the space."""
import errno
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BAD_STDERR, DBOSFS, errno_of, make_base, psql, unique_name


def inst_dir(m, name):
    return pathlib.Path(m.state_dir) / "local" / "instances" / name


def postmaster_pid(m, name):
    try:
        text = (inst_dir(m, name) / "data" / "postmaster.pid").read_text()
    except FileNotFoundError:
        return 0
    first = text.split("\n", 1)[0].strip()
    return int(first) if first.isdigit() else 0


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def ppid_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def info(m, name):
    return dict(line.split(": ", 1) for line in m.read(name, "info").splitlines() if ": " in line)


def wait_for(pred, timeout=30, step=0.05, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def wait_available(m, name, timeout=30):
    wait_for(lambda: m.read(name, "status").strip() == "available", timeout,
             what=f"{name} to be available")


def servers_of(state_dir):
    """PIDs of postgres processes whose command line names this state_dir."""
    out = []
    needle = str(state_dir).encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"postgres" in cmd and needle in cmd:
            out.append(int(d))
    return out


def test_mkdir_returns_with_the_server_accepting_connections(local_mount):
    m = local_mount
    name = unique_name("lp")
    m.mkdir(name)
    # No wait: the local provider answers mkdir once the server accepts.
    assert m.read(name, "status").strip() == "available"
    assert psql(m, name, "SELECT current_user").stdout.strip() == "dbos_user"
    i = info(m, name)
    assert i["host"] == "127.0.0.1" and int(i["port"]) > 0
    if os.geteuid() == 0:
        assert m.read(".dbosfs", "account") == "root (servers run as dbosfs)\n" or \
            m.read(".dbosfs", "account").startswith("root (servers run as dbosfs)")


def test_kill_9_of_a_postmaster_comes_back_with_committed_rows(local_mount):
    m = local_mount
    name = unique_name("k9")
    m.mkdir(name)
    psql(m, name, "CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 100)")
    pid = postmaster_pid(m, name)
    assert pid > 0 and ppid_of(pid) == m.proc.pid  # dbosfs is the parent
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: postmaster_pid(m, name) not in (0, pid), 30, what="a new postmaster")
    # The status cache may still say "available" from before the kill (the
    # restart takes ~0.3 s, less than a refresh period): ask the server.
    wait_for(lambda: psql(m, name, "SELECT 1", check=False).returncode == 0, 30,
             what="the restarted server to accept connections")
    assert m.read(name, "wait").strip() == "available"
    assert psql(m, name, "SELECT count(*) FROM t").stdout.strip() == "100"
    new = postmaster_pid(m, name)
    assert alive(new) and ppid_of(new) == m.proc.pid
    log = m.read(".dbosfs", "log")
    assert f"instance {name}: server exited unexpectedly" in log
    assert f"instance {name} restarted" in log


def pm_status(m, name):
    try:
        lines = (inst_dir(m, name) / "data" / "postmaster.pid").read_text().splitlines()
    except OSError:
        return ""
    return lines[7].strip() if len(lines) > 7 else ""


def test_waiting_for_a_starting_server_keeps_its_log_clean(local_mount):
    """dbosfs waits for a (re)starting server by reading its postmaster.pid
    status, as pg_ctl -w does, not by connecting every few ms: each refused
    connection would log "the database system is starting up" (hundreds of
    lines during a long crash recovery)."""
    m = local_mount
    name = unique_name("rl")
    m.mkdir(name)
    psql(m, name, "CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 200000)")
    for _ in range(3):
        pid = postmaster_pid(m, name)
        os.kill(pid, signal.SIGKILL)  # crash recovery at the next start
        wait_for(lambda: postmaster_pid(m, name) not in (0, pid), 30, what="a new postmaster")
        # Not by connecting (that would log the line this test looks for).
        wait_for(lambda: pm_status(m, name) == "ready", 30, what="the restarted server")
    assert psql(m, name, "SELECT count(*) FROM t").stdout.strip() == "200000"
    log = (inst_dir(m, name) / "server.log").read_text(errors="replace")
    assert log.count("database system is ready to accept connections") >= 3
    assert "the database system is starting up" not in log, log[-3000:]


def test_port_in_use_at_remount_moves_the_instance(local_mount):
    m = local_mount
    name = unique_name("pt")
    m.mkdir(name)
    psql(m, name, "CREATE TABLE kept(x int); INSERT INTO kept VALUES (42)")
    old = int(info(m, name)["port"])
    m.unmount()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", old))
    squatter.listen(1)
    try:
        m.start()
        wait_available(m, name)
        new = int(info(m, name)["port"])
        assert new != old
        assert psql(m, name, "SELECT x FROM kept").stdout.strip() == "42"
        assert f"port {old} is in use, moved to {new}" in m.read(".dbosfs", "log")
        meta = (inst_dir(m, name) / "meta").read_text()
        assert f"port={new}" in meta
    finally:
        squatter.close()
    # The new port is kept across the next remount.
    m.remount()
    wait_available(m, name)
    assert int(info(m, name)["port"]) == new


def test_stale_postmaster_pid_is_removed(local_mount):
    m = local_mount
    name = unique_name("sp")
    m.mkdir(name)
    m.unmount()
    # A live process that is not a postmaster holds the PID in the lock
    # file; PostgreSQL alone would refuse to start.
    other = subprocess.Popen(["sleep", "300"])
    try:
        pidfile = inst_dir(m, name) / "data" / "postmaster.pid"
        pidfile.write_text(f"{other.pid}\n{inst_dir(m, name) / 'data'}\n")
        m.start()
        wait_available(m, name)
        assert psql(m, name, "SELECT 1").stdout.strip() == "1"
        assert postmaster_pid(m, name) != other.pid
        assert "removed stale postmaster.pid" in m.read(".dbosfs", "log")
        assert other.poll() is None  # the unrelated process was left alone
    finally:
        other.kill()
        other.wait()


def test_leftover_postmaster_of_a_crashed_daemon_is_replaced(local_mount):
    m = local_mount
    name = unique_name("lo")
    m.mkdir(name)
    psql(m, name, "CREATE TABLE t(x int); INSERT INTO t VALUES (7)")
    old = postmaster_pid(m, name)
    m.kill()  # SIGKILL: dbosfs cannot stop its servers
    assert alive(old)  # orphaned, still running
    m.start()
    wait_available(m, name)
    wait_for(lambda: not alive(old), 15, what="the leftover postmaster to exit")
    new = postmaster_pid(m, name)
    assert new != old and ppid_of(new) == m.proc.pid
    assert psql(m, name, "SELECT x FROM t").stdout.strip() == "7"
    assert "shutting down leftover postmaster" in m.read(".dbosfs", "log")


def test_data_and_port_survive_a_remount(local_mount):
    m = local_mount
    names = [unique_name("rm"), unique_name("rm")]
    for n in names:
        m.mkdir(n)
        psql(m, n, f"CREATE TABLE t(v text); INSERT INTO t VALUES ('{n}')")
    ports = {n: info(m, n)["port"] for n in names}
    m.remount()
    assert sorted(x for x in os.listdir(m.path) if not x.startswith(".")) == sorted(names)
    for n in names:
        assert m.read(n, "wait").strip() == "available"
        assert info(m, n)["port"] == ports[n]
        assert psql(m, n, "SELECT v FROM t").stdout.strip() == n


def test_unmount_leaves_no_postgres_running(local_mount):
    m = local_mount
    for _ in range(2):
        m.mkdir(unique_name("um"))
    assert len(servers_of(m.state_dir)) >= 2
    m.unmount()
    # Backends of a fast shutdown are gone with their postmaster.
    wait_for(lambda: not servers_of(m.state_dir), 10, what="all servers to exit")


def test_two_concurrent_mkdirs_of_one_name(local_mount):
    m = local_mount
    name = unique_name("cc")
    results = []
    barrier = threading.Barrier(2)

    def go():
        barrier.wait()
        try:
            os.mkdir(m.p(name))
            results.append(0)
        except OSError as e:
            results.append(e.errno)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted([0, errno.EEXIST]), results
    assert m.read(name, "status").strip() == "available"
    assert len(servers_of(inst_dir(m, name))) >= 1
    assert sorted(os.listdir(pathlib.Path(m.state_dir) / "local" / "instances")) == [name]


def test_destroy_stops_the_server_and_removes_its_files(local_mount):
    m = local_mount
    name = unique_name("de")
    m.mkdir(name)
    pid = postmaster_pid(m, name)
    m.destroy(name)
    assert not alive(pid)
    assert not inst_dir(m, name).exists()
    assert name not in os.listdir(m.path)


def test_servers_get_no_secret_and_no_fuse_fd(local_mount):
    m = local_mount
    name = unique_name("se")
    m.mkdir(name)
    password = m.read(name, "password").strip()
    m.write("An0therPassw0rd\n", name, "password")
    pid = postmaster_pid(m, name)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert password.encode() not in f.read()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        assert target != "/dev/fuse", "the FUSE fd leaked into a postmaster"
    log = (inst_dir(m, name) / "server.log").read_bytes()
    assert password.encode() not in log and b"An0therPassw0rd" not in log
    data = inst_dir(m, name) / "data"
    st = os.stat(data)
    assert st.st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        import pwd
        assert pwd.getpwuid(st.st_uid).pw_name == "dbosfs"
        # Saved passwords stay private to root.
        pw_dir = pathlib.Path(m.state_dir) / "passwords"
        assert os.stat(pw_dir).st_mode & 0o777 == 0o700


def remount_unstartable(m, name):
    """Remounts with a syntax error in the instance's postgresql.conf."""
    m.unmount()
    with open(inst_dir(m, name) / "data" / "postgresql.conf", "a") as f:
        f.write("this is not a setting\n")
    m.start()


def test_a_server_that_cannot_start_ends_up_failed_and_can_be_destroyed(local_mount):
    m = local_mount
    name = unique_name("fa")
    m.mkdir(name)
    remount_unstartable(m, name)
    # Starts are retried with backoff (0, 0.5, 1, 2 s), then given up.
    wait_for(lambda: m.read(name, "status").strip() == "failed", 30, what="failed status")
    assert m.read(name, "wait").strip() == "failed"
    log = m.read(".dbosfs", "log")
    assert f"instance {name}: the server of {name} exited during startup" in log
    assert "syntax error" in log
    assert f"instance {name}: gave up after" in log
    assert not servers_of(inst_dir(m, name))
    m.destroy(name)
    assert not inst_dir(m, name).exists()


def cont(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def timed(fn, *args):
    t = time.monotonic()
    v = fn(*args)
    return v, time.monotonic() - t


# ---- failed instances are retried slowly in the background ----

def test_a_failed_instance_comes_back_by_itself_once_repaired(mount_factory):
    # DBOSFS_LOCAL_RETRY_S=2: background retries after 2, 4, 8 ... s
    # instead of 30, 60 ... s (an override for tests only).
    m = mount_factory("local", env={"DBOSFS_LOCAL_RETRY_S": "2"})
    name = unique_name("rp")
    m.mkdir(name)
    psql(m, name, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
    m.unmount()
    auto = inst_dir(m, name) / "data" / "postgresql.auto.conf"
    original = auto.read_text()
    auto.write_text(original + "no_such_setting_at_all = 1\n")
    m.start()
    wait_for(lambda: m.read(name, "status").strip() == "failed", 30, what="failed status")
    # Two background retries (after 2 and 4 s) fail: still failed, and only
    # the first retry of the episode is logged, not every attempt.
    time.sleep(7)
    wait_for(lambda: m.read(name, "status").strip() == "failed", 5, what="failed again")
    log = m.read(".dbosfs", "log")
    assert log.count(f"instance {name}: gave up after") == 1
    assert log.count(f"instance {name}: retrying the start in the background") == 1
    assert log.count(f"instance {name}: background retry failed") == 1
    assert "no_such_setting_at_all" in log.split(f"{name}: background retry failed", 1)[1]
    assert not servers_of(inst_dir(m, name))

    auto.write_text(original)
    # The next retry is at most 8 s away; no remount, no user action.
    wait_available(m, name, timeout=20)
    assert psql(m, name, "SELECT v FROM kept").stdout.strip() == "42"
    log = m.read(".dbosfs", "log")
    assert re.search(rf"instance {name} is available again after \d+ failed starts", log)
    assert log.count(f"instance {name}: retrying the start in the background") == 1
    # Recovered: a later crash is restarted at once again, not left failed.
    pid = postmaster_pid(m, name)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: postmaster_pid(m, name) not in (0, pid), 30, what="a restart")
    wait_available(m, name)


def test_a_failed_instance_being_retried_is_destroyed_at_once(mount_factory):
    m = mount_factory("local", env={"DBOSFS_LOCAL_RETRY_S": "1"})
    name = unique_name("fd")
    m.mkdir(name)
    remount_unstartable(m, name)
    wait_for(lambda: m.read(name, "status").strip() == "failed", 30, what="failed status")
    time.sleep(1.5)  # retries every 1, 2, 4 s: destroy meets one due or running
    _, took = timed(m.destroy, name)
    assert took < 5, f"destroy took {took:.1f} s"
    assert not inst_dir(m, name).exists()
    assert not servers_of(inst_dir(m, name))


def test_a_start_in_flight_ends_at_once_for_destroy_and_unmount(local_mount):
    # A standby without hot_standby never accepts connections: its start
    # would run to the 60 s readiness timeout unless cancelled.
    m = local_mount
    name = unique_name("sf")
    m.mkdir(name)
    m.unmount()
    data = inst_dir(m, name) / "data"
    (data / "standby.signal").touch()
    with open(data / "postgresql.auto.conf", "a") as f:
        f.write("hot_standby = off\n")
    m.start()
    wait_for(lambda: servers_of(inst_dir(m, name)), 30, what="the server to start")
    time.sleep(1)
    assert m.read(name, "status").strip() in ("starting", "restarting")
    _, took = timed(m.unmount)
    assert took < 15, f"unmount took {took:.1f} s"
    assert not servers_of(inst_dir(m, name))
    m.start()
    wait_for(lambda: servers_of(inst_dir(m, name)), 30, what="the server to start")
    time.sleep(1)
    assert m.read(name, "status").strip() in ("starting", "restarting")
    _, took = timed(m.destroy, name)
    assert took < 8, f"destroy took {took:.1f} s"
    assert not inst_dir(m, name).exists()
    wait_for(lambda: not servers_of(inst_dir(m, name)), 10, what="no server left")


def test_a_stopped_postmaster_is_unresponsive_until_it_answers_again(local_mount):
    m = local_mount
    hung, other = unique_name("hu"), unique_name("ok")
    m.mkdir(hung)
    m.mkdir(other)
    pid = postmaster_pid(m, hung)
    assert pid > 0 and alive(pid)
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        # Probes every refresh (1 s here) with a 2 s answer timeout; two
        # misses in a row mark it, and the next refresh shows it.
        wait_for(lambda: m.read(hung, "status").strip() == "unresponsive", 20, step=0.1,
                 what="unresponsive status")
        took = time.monotonic() - t0
        assert took < 10, f"took {took:.1f} s"
        # Meanwhile everything else is served at once, for several probe
        # rounds (each waiting 2 s on the hung server).
        slowest, end = 0.0, time.monotonic() + 5
        while time.monotonic() < end:
            names, d1 = timed(os.listdir, m.path)
            st, d2 = timed(m.read, other, "status")
            st_hung, d3 = timed(m.read, hung, "status")
            _, d4 = timed(m.read, hung, "info")
            assert hung in names and other in names
            assert st.strip() == "available"
            assert st_hung.strip() == "unresponsive"
            slowest = max(slowest, d1, d2, d3, d4)
            time.sleep(0.05)
        assert slowest < 0.5, f"slowest ls/cat while a server hangs: {slowest:.3f} s"
        # `wait` treats it as settled: it answers instead of blocking.
        w, dw = timed(m.read, hung, "wait")
        assert w.strip() == "unresponsive" and dw < 2
        assert psql(m, other, "SELECT 1").stdout.strip() == "1"
        # Reported, never restarted or killed.
        assert postmaster_pid(m, hung) == pid and alive(pid)
        log = m.read(".dbosfs", "log")
        assert f"instance {hung}: server (pid {pid}) is running but did not answer" in log
        assert log.count(f"instance {hung}: server (pid {pid}) is running") == 1  # once
        assert f"instance {other}: server" not in log
    finally:
        cont(pid)
    t0 = time.monotonic()
    wait_for(lambda: m.read(hung, "status").strip() == "available", 20, step=0.1,
             what="available again")
    print(f"SIGSTOP -> unresponsive {took:.1f} s; SIGCONT -> available "
          f"{time.monotonic() - t0:.1f} s; slowest ls/cat {slowest * 1000:.0f} ms")
    assert postmaster_pid(m, hung) == pid
    assert psql(m, hung, "SELECT 1").stdout.strip() == "1"
    assert f"instance {hung}: server answers again; status is available" in \
        m.read(".dbosfs", "log")


def test_a_stopped_postmaster_can_be_destroyed_and_unmounted_promptly(local_mount):
    m = local_mount
    a, b = unique_name("sa"), unique_name("sb")
    m.mkdir(a)
    m.mkdir(b)
    pa, pb = postmaster_pid(m, a), postmaster_pid(m, b)
    assert pa > 0 and pb > 0
    os.kill(pa, signal.SIGSTOP)
    os.kill(pb, signal.SIGSTOP)
    try:
        # rmdir shuts it down gracefully (it is woken to act on SIGINT)
        # rather than waiting 10 s for a kill.
        _, took = timed(m.destroy, a)
        assert took < 5, f"destroy took {took:.1f} s"
        assert not alive(pa) and not inst_dir(m, a).exists()
        _, took = timed(m.unmount)
        assert took < 8, f"unmount took {took:.1f} s"
        assert not alive(pb)
        assert "did not stop in time" not in m.log()
    finally:
        cont(pa)
        cont(pb)


# ---- one mount per state_dir ----

def dbosfs_argv(mnt, state_dir, foreground):
    o = ("entry_timeout=0,attr_timeout=0,negative_timeout=0,refresh=1,"
         f"state_dir={state_dir},provider=local")
    wrapper = os.environ.get("DBOSFS_WRAPPER", "").split()
    return wrapper + [DBOSFS] + (["-f"] if foreground else []) + ["-o", o, str(mnt)]


def lock_pid(state_dir):
    return int((pathlib.Path(state_dir) / "local" / "lock").read_text().split()[0])


class MountedAt:
    """Enough of conftest.Mount for psql() and postmaster_pid() against a
    mount we started ourselves."""
    def __init__(self, path, state_dir):
        self.path = pathlib.Path(path)
        self.state_dir = state_dir

    def read(self, *parts):
        return self.path.joinpath(*parts).read_text()


def test_a_second_mount_of_one_state_dir_is_refused(mount_factory):
    base = pathlib.Path(make_base())
    state, mnt1, mnt2 = base / "state", base / "mnt1", base / "mnt2"
    mnt1.mkdir()
    mnt2.mkdir()
    daemon, m = 0, None
    try:
        # The first daemonizes: its lock must outlive the parent's exit.
        parent = subprocess.Popen(dbosfs_argv(mnt1, state, False), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = parent.communicate(timeout=90)[0].decode(errors="replace")
        assert parent.returncode == 0, out
        assert os.path.ismount(mnt1)
        daemon = lock_pid(state)
        assert daemon != parent.pid and alive(daemon)
        assert (state / "local" / "lock").stat().st_mode & 0o777 == 0o600
        name = unique_name("lk")
        os.mkdir(mnt1 / name)
        first = MountedAt(mnt1, state)
        pm = postmaster_pid(first, name)
        assert pm > 0 and ppid_of(pm) == daemon

        # A second one fails in the foreground and when daemonizing, says
        # who holds the state_dir, and disturbs nothing.
        for fg in (True, False):
            r = subprocess.run(dbosfs_argv(mnt2, state, fg), stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=60)
            assert r.returncode != 0, r.stderr
            assert f"state_dir {state} is in use by another dbosfs (pid {daemon})" in r.stderr
            assert not any(re.search(bad, r.stderr) for bad in BAD_STDERR), r.stderr
            assert not os.path.ismount(mnt2)
        time.sleep(1.5)  # what a second supervisor would have done by now
        assert postmaster_pid(first, name) == pm and alive(pm)
        assert (mnt1 / name / "status").read_text().strip() == "available"
        assert psql(first, name, "SELECT 1").stdout.strip() == "1"
        assert "leftover" not in (mnt1 / ".dbosfs" / "log").read_text()

        # Once the first is unmounted, the state_dir is free again.
        subprocess.run(["fusermount3", "-u", str(mnt1)], check=True)
        wait_for(lambda: not alive(daemon), 60, what="the first daemon to exit")
        assert not alive(pm)
        m = mount_factory("local", options={"state_dir": str(state)})
        wait_available(m, name)
        assert psql(m, name, "SELECT 1").stdout.strip() == "1"
        assert lock_pid(state) == m.proc.pid
        m.unmount()
    finally:
        if m is not None and m.proc:
            m.kill()
        if os.path.ismount(mnt1):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt1)])
        if daemon and alive(daemon):
            wait_for(lambda: not alive(daemon), 30, what="the first daemon to exit")
        shutil.rmtree(base, ignore_errors=True)


# ---- a nearly full disk ----

@pytest.fixture
def small_disk():
    """An 85 MiB tmpfs: room for the template (~23 MiB with 1 MiB WAL
    segments) and one instance, not for a warm spare with its margin nor
    for a second instance."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    base = pathlib.Path(make_base())
    disk = base / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=85m,mode=0711", "tmpfs",
                        str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)])
    shutil.rmtree(base, ignore_errors=True)


def free_mib(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 2**20


def leftovers(state_dir):
    """Everything under spares/ and trash/ (both should be empty here)."""
    local = pathlib.Path(state_dir) / "local"
    return sorted(os.listdir(local / "spares")) + sorted(os.listdir(local / "trash"))


def fill(path):
    """Writes a file until the filesystem is full."""
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    with open(path, "ab", buffering=0) as f:  # the last partial block
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_a_nearly_full_disk_fails_mkdir_with_enospc_and_leaves_nothing(small_disk,
                                                                        mount_factory):
    state = small_disk / "state"
    m = mount_factory("local", options={"state_dir": str(state)})
    first = unique_name("nf")
    m.mkdir(first)
    assert m.read(first, "status").strip() == "available"
    assert psql(m, first, "SELECT 1").stdout.strip() == "1"
    # No warm spare: a copy (~23 MiB) plus its margin does not fit, and
    # the preparer says so once rather than racing mkdir for the space.
    wait_for(lambda: "not preparing a spare instance" in m.read(".dbosfs", "log"), 15,
             what="the preparer's note")
    time.sleep(2.5)  # a few preparer rounds
    log = m.read(".dbosfs", "log")
    assert log.count("not preparing a spare instance") == 1, log
    assert "No space left on device" in log
    assert leftovers(state) == []
    print(f"free after the first instance: {free_mib(small_disk):.0f} MiB")

    second = unique_name("nf")
    assert errno_of(m.mkdir, second) == errno.ENOSPC
    log = m.read(".dbosfs", "log")
    assert f"mkdir {second} failed (ENOSPC)" in log
    assert "No space left on device" in log.split(f"mkdir {second} failed", 1)[1]
    assert second not in os.listdir(m.path)
    assert not inst_dir(m, second).exists() and leftovers(state) == []

    # Truly full: still a clean refusal that mentions the space.
    third = unique_name("nf")
    filler = small_disk / "filler"
    fill(filler)
    try:
        assert errno_of(m.mkdir, third) is not None
        log = m.read(".dbosfs", "log")
        assert f"mkdir {third} failed" in log
        assert "No space left on device" in log.split(f"mkdir {third} failed", 1)[1]
        assert third not in os.listdir(m.path)
        assert not inst_dir(m, third).exists() and leftovers(state) == []
        # The running instance is not harmed by the refusals.
        assert m.read(first, "status").strip() == "available"
    finally:
        filler.unlink()

    # With the room back (the first instance gone), mkdir works again.
    m.destroy(first)
    m.mkdir(third)
    assert m.read(third, "status").strip() == "available"
    assert psql(m, third, "SELECT 1").stdout.strip() == "1"
