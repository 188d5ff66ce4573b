"""NAME/branch on a mounted local provider: NEWNAME is a copy of NAME as it
is now, made online (a client loop on NAME sees no error), with NAME's
password; later writes do not cross; bad names and taken names are refused;
a branch survives a remount. One mount for the module."""
import errno
import os
import threading
import time

import pytest

from conftest import errno_of, psql, unique_name, write_file


@pytest.fixture(scope="module")
def source(shared_local):
    m = shared_local
    name = unique_name("b")
    m.mkdir(name)
    psql(m, name, "CREATE TABLE t (id int primary key, v text);"
         "INSERT INTO t SELECT g, 'before' FROM generate_series(1, 20000) g")
    yield m, name
    try:
        m.destroy(name)
    except OSError:
        pass


def count(m, name, where="true"):
    return int(psql(m, name, f"SELECT count(*) FROM t WHERE {where}").stdout.strip())


def test_branch_copies_rows_and_writes_do_not_cross(source):
    m, name = source
    new = unique_name("nb")
    errors, stop = [], threading.Event()
    done = [0]

    def client_loop():
        # Writes and reads on the source throughout the branch.
        i = 100000
        while not stop.is_set():
            i += 1
            r = psql(m, name, f"INSERT INTO t VALUES ({i}, 'during'); SELECT 1",
                     check=False)
            if r.returncode != 0:
                errors.append(r.stderr)
            done[0] += 1

    th = threading.Thread(target=client_loop)
    th.start()
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        write_file(m.p(name, "branch"), new + "\n")
        took = time.monotonic() - t0
        time.sleep(0.3)
    finally:
        stop.set()
        th.join()
    try:
        assert not errors, errors[:3]
        assert done[0] > 2
        # Available when the write returns, with the source's password.
        assert m.read(new, "status").strip() == "available"
        assert m.read(new, "password") == m.read(name, "password")
        assert count(m, new, "v = 'before'") == 20000
        # Writes afterwards stay on their side.
        psql(m, name, "INSERT INTO t VALUES (-1, 'source only')")
        psql(m, new, "INSERT INTO t VALUES (-2, 'branch only')")
        assert count(m, name, "id = -2") == 0
        assert count(m, new, "id = -1") == 0
        assert count(m, new, "id = -2") == 1
        print(f"branch took {took:.2f} s")
    finally:
        m.destroy(new)


def test_branch_refuses_bad_and_taken_names(source):
    m, name = source
    assert errno_of(write_file, m.p(name, "branch"), "Bad-Name\n") == errno.EINVAL
    assert "branch of" in m.read(name, "last_error")
    assert errno_of(write_file, m.p(name, "branch"), name + "\n") == errno.EEXIST
    assert "exists" in m.read(name, "last_error")
    assert not any(n.startswith("Bad") for n in os.listdir(m.path))


def test_branch_survives_remount(source):
    m, name = source
    new = unique_name("rb")
    write_file(m.p(name, "branch"), new + "\n")
    try:
        m.remount()
        deadline = time.time() + 30
        while m.read(new, "status").strip() != "available":
            assert time.time() < deadline, m.read(new, "status")
            time.sleep(0.2)
        assert count(m, new, "v = 'before'") == 20000
        psql(m, new, "INSERT INTO t VALUES (-3, 'after remount')")
    finally:
        m.destroy(new)


def test_branch_is_durable_in_the_background(source):
    """The branch is available before its copy is on disk; info says
    "durable: pending" until the flusher is done, then "durable: yes". The
    first start's fsync = off is gone by then: clients commit durably."""
    m, name = source
    new = unique_name("db")
    write_file(m.p(name, "branch"), new + "\n")
    try:
        state = [l for l in m.read(new, "info").splitlines() if l.startswith("durable: ")]
        assert state and state[0] in ("durable: pending", "durable: yes"), state
        assert psql(m, new, "SHOW fsync").stdout.strip() == "on"
        data = m.state_dir / "local" / "instances" / new / "data"
        assert not (data / "dbosfs_first_start.conf").exists()
        deadline = time.time() + 60
        while "durable: yes" not in m.read(new, "info"):
            assert time.time() < deadline, m.read(new, "info")
            time.sleep(0.2)
        assert not (m.state_dir / "local" / "instances" / new / "durable-pending").exists()
        assert "durable: yes" in m.read(name, "info")  # a mkdir'd instance
        assert f"instance {new} is durable" in m.log()
    finally:
        m.destroy(new)
