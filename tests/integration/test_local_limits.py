"""Low descriptor limits (issue 7): the daemon raises its soft RLIMIT_NOFILE
to the hard limit, probes servers in batches that fit what is free, and a
mkdir that fails for want of descriptors leaves nothing behind. The limits
are lowered on the running daemon with prlimit(1)."""
import os
import shutil
import subprocess
import time

import pytest

from conftest import Mount, local_mount_for_module, make_base, unique_name, wait_for

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit")


def nofile(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def set_soft_nofile(pid, soft):
    """Only the soft limit: raising a hard limit again needs CAP_SYS_RESOURCE,
    which a container may not grant even to root."""
    subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={soft}:"], check=True)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture(scope="module")
def low():
    # A low soft limit under a higher hard one, as many systems set it.
    # Spares stay copies (no running spare server): the mkdir under test
    # must take the copy-and-start path, which needs descriptors (a claim
    # of a running spare needs one socket and succeeds at any limit).
    yield from local_mount_for_module(env={"DBOSFS_LOCAL_SPARES_IDLE": "1"})


def test_the_soft_limit_is_raised_to_the_hard_limit(tmp_path):
    base = make_base()
    try:
        env = {}
        m = Mount("local", {}, env, None, base)
        pid = m.proc.pid
        soft, hard = nofile(pid)
        assert soft == hard
        m.unmount()
        # Started under `ulimit -Sn 64`: raised all the same.
        wrapper = os.environ.get("DBOSFS_WRAPPER", "")
        os.environ["DBOSFS_WRAPPER"] = f"prlimit --nofile=64:{hard} {wrapper}".strip()
        try:
            m = Mount("local", {}, env, None, base)
        finally:
            os.environ["DBOSFS_WRAPPER"] = wrapper
        assert nofile(m.proc.pid) == (hard, hard)
        m.unmount()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_probes_fit_a_low_limit(low):
    m = low
    names = [unique_name("fd") for _ in range(4)]
    for n in names:
        m.mkdir(n)
    pid = m.proc.pid
    # Three descriptors free: four probes at once would not fit.
    soft, hard = nofile(pid)
    set_soft_nofile(pid, open_fds(pid) + 3)
    try:
        time.sleep(4.5)  # four probe rounds (refresh=1): two misses would show
        for n in names:
            assert m.read(n, "status").strip() == "available", m.log()[-2000:]
    finally:
        set_soft_nofile(pid, soft)
    for n in names:
        m.destroy(n)


def test_mkdir_failing_for_want_of_descriptors_leaves_nothing(low):
    m = low
    pid = m.proc.pid
    state = m.state_dir
    name = unique_name("fdmk")
    # Wait for the warm spare, so the mkdir gets as far as starting a server.
    wait_for(lambda: any(not s.endswith((".tmp", ".log"))
                         for s in os.listdir(state / "local" / "spares")), 60, "a spare")
    time.sleep(0.5)
    soft, hard = nofile(pid)
    set_soft_nofile(pid, open_fds(pid) + 1)
    try:
        with pytest.raises(OSError):
            os.mkdir(m.p(name))
    finally:
        set_soft_nofile(pid, soft)
    assert name not in os.listdir(m.path)
    assert name not in os.listdir(state / "passwords" / "local")
    assert name not in os.listdir(state / "local" / "instances")
    assert name not in os.listdir(state / "local" / "run")
    assert os.listdir(state / "local" / "intents") == []
    assert name in m.read(".dbosfs", "last_error") or "mkdir" in m.read(".dbosfs", "last_error")
    # With descriptors back, the name is free and works.
    m.mkdir(name)
    assert m.read(name, "status").strip() == "available"
    m.destroy(name)
