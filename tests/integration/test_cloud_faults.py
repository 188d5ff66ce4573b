"""Faults injected into the stand-in DBOS Cloud server: each gives the right
errno within the timeout, leaves its message in last_error (or the mount's
log), keeps the last known state listed, and the daemon alive."""
import errno
import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import (TEST_TIMEOUT_S, available_instance, cloud_certs,  # noqa: F401,E402
                           fake_cloud, mount_cloud, wait_until)
from conftest import errno_of, write_file  # noqa: E402

RESET = "POST /databases/userdb/credentials"
LIST = "GET /databases"


@pytest.fixture
def ready(mount_factory, fake_cloud):
    """A mount with two available instances on the server."""
    fake_cloud.add_instances([available_instance("alpha"), available_instance("beta")])
    m = mount_cloud(mount_factory, fake_cloud)
    assert m.read("alpha", "status") == "available\n"
    return m, fake_cloud


def assert_healthy(m):
    assert m.proc.poll() is None, "daemon died"
    names = os.listdir(m.path)
    assert "alpha" in names and "beta" in names
    assert m.read("alpha", "status") == "available\n"


@pytest.mark.parametrize("status,want", [
    (400, errno.EINVAL), (422, errno.EINVAL), (403, errno.EPERM), (404, errno.ENOENT),
    (409, errno.EBUSY), (429, errno.EAGAIN), (503, errno.EAGAIN), (504, errno.ETIMEDOUT),
    (500, errno.EIO), (502, errno.EIO),
])
def test_http_status_on_mutation(ready, status, want):
    m, fc = ready
    fc.fault(RESET, "status", status=status, message=f"injected {status}",
             requestID=f"rid-{status}")
    assert errno_of(write_file, m.p("alpha", "password"), "NewPassw0rd_1\n") == want
    msg = m.read("alpha", "last_error")
    assert (f"[rid-{status}] Failed to reset the password of alpha: injected {status} "
            f"(HTTP {status})") in msg
    # A gateway timeout may have let the reset through: the mount says so.
    assert ("outcome unknown" in msg) == (status == 504)
    assert_healthy(m)
    # The fault was one-shot: the next attempt goes through.
    write_file(m.p("alpha", "password"), "NewPassw0rd_2\n")
    assert fc.instances()["alpha"]["_password"] == "NewPassw0rd_2"


def test_error_without_json_body(ready):
    m, fc = ready
    fc.fault(RESET, "status", status=500, raw_body="<html>Bad Gateway</html>")
    assert errno_of(write_file, m.p("alpha", "password"), "NewPassw0rd_1\n") == errno.EIO
    assert "HTTP 500" in m.read("alpha", "last_error")
    assert_healthy(m)


@pytest.mark.parametrize("kind,extra", [("hang", {}), ("latency", {"delay": 8})])
def test_no_answer_is_etimedout(ready, kind, extra):
    m, fc = ready
    fc.fault(RESET, kind, **extra)
    t0 = time.monotonic()
    assert errno_of(write_file, m.p("alpha", "password"), "NewPassw0rd_1\n") == errno.ETIMEDOUT
    took = time.monotonic() - t0
    assert TEST_TIMEOUT_S - 0.5 <= took <= TEST_TIMEOUT_S + 3
    assert "no answer" in m.read("alpha", "last_error")
    assert_healthy(m)


def test_latency_below_timeout_succeeds(ready):
    m, fc = ready
    fc.fault(RESET, "latency", delay=1.5)
    t0 = time.monotonic()
    write_file(m.p("alpha", "password"), "NewPassw0rd_3\n")
    assert time.monotonic() - t0 >= 1.4
    assert fc.instances()["alpha"]["_password"] == "NewPassw0rd_3"


@pytest.mark.parametrize("kind", ["close", "short"])
def test_broken_connection_is_eio(ready, kind):
    m, fc = ready
    # Forever: libcurl rightly retries once when a reused connection dies.
    fc.fault(RESET, kind, times=-1)
    assert errno_of(write_file, m.p("alpha", "password"), "NewPassw0rd_1\n") == errno.EIO
    assert "Failed to reset the password of alpha" in m.read("alpha", "last_error")
    fc.clear_faults()
    assert_healthy(m)


def test_mutation_body_is_ignored(ready):
    """Like the CLI, only the 2xx of a mutation matters, not its body."""
    m, fc = ready
    fc.fault(RESET, "malformed")
    write_file(m.p("alpha", "password"), "NewPassw0rd_4\n")
    assert fc.instances()["alpha"]["_password"] == "NewPassw0rd_4"


def test_mkdir_fault_leaves_nothing(ready):
    m, fc = ready
    fc.fault("POST /databases/userdb", "status", status=503, message="try later")
    assert errno_of(os.mkdir, m.p("gamma")) == errno.EAGAIN
    assert "try later (HTTP 503)" in m.read(".dbosfs", "last_error")
    assert not os.path.exists(m.p("gamma"))
    assert "gamma" not in fc.instances()
    os.mkdir(m.p("gamma"))
    assert m.read("gamma", "status") == "provisioning\n"


def test_rmdir_fault_keeps_instance(ready):
    m, fc = ready
    write_file(m.p("beta", "confirm"), "beta\n")
    fc.fault("DELETE /databases/userdb", "status", status=500, message="boom")
    assert errno_of(os.rmdir, m.p("beta")) == errno.EIO
    assert "Failed to destroy beta: boom (HTTP 500)" in m.read("beta", "last_error")
    assert_healthy(m)
    assert m.read("beta", "status") == "available\n"


@pytest.mark.parametrize("kind,extra,words", [
    ("status", {"status": 500, "message": "list broke"}, "list broke (HTTP 500)"),
    ("status", {"status": 429, "message": "slow down"}, "slow down (HTTP 429)"),
    ("malformed", {}, "malformed response"),
    ("truncated", {}, "malformed response"),
    ("short", {}, "Failed to list databases"),
    ("huge", {"size": 130 * 1024 * 1024}, "larger than 128 MiB"),
    ("hang", {}, "no answer"),
])
def test_list_fault_keeps_last_state(ready, kind, extra, words):
    m, fc = ready
    fc.fault(LIST, kind, times=-1, **extra)
    t0 = time.monotonic()
    line = wait_until(lambda: [ln for ln in m.read(".dbosfs", "log").splitlines()
                               if "refresh failed" in ln and words in ln],
                      timeout=TEST_TIMEOUT_S + 8)
    assert line, m.read(".dbosfs", "log")
    assert time.monotonic() - t0 < TEST_TIMEOUT_S + 8
    # Reads never wait on the failing network.
    t1 = time.monotonic()
    assert_healthy(m)
    assert time.monotonic() - t1 < 1
    fc.clear_faults()
    assert wait_until(lambda: "refresh recovered" in m.read(".dbosfs", "log"),
                      timeout=TEST_TIMEOUT_S + 8)


def test_truncated_list_is_not_half_applied(ready):
    """A list cut in half must not make the missing instances vanish."""
    m, fc = ready
    fc.add_instances([available_instance(f"more{i}") for i in range(20)])
    assert wait_until(lambda: os.path.isdir(m.p("more19")), timeout=5)
    fc.fault(LIST, "truncated", times=3)
    time.sleep(3.5)
    assert os.path.isdir(m.p("more19")) and os.path.isdir(m.p("alpha"))


def test_401_refreshes_token_once_and_saves_it(ready):
    m, fc = ready
    creds_before = json.loads(fc.credentials.read_text())
    fc.reset_counts()
    fc.revoke_tokens()
    # Several operations at once, all holding the revoked token.
    errs = []

    def reset(name, pw):
        try:
            write_file(m.p(name, "password"), pw + "\n")
        except OSError as e:
            errs.append(e)

    ts = [threading.Thread(target=reset, args=(n, f"NewPassw0rd_{n}"))
          for n in ("alpha", "beta")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs
    assert fc.instances()["alpha"]["_password"] == "NewPassw0rd_alpha"
    assert fc.count("POST /oauth/token") == 1
    creds_after = json.loads(fc.credentials.read_text())
    assert creds_after["token"] != creds_before["token"]
    for k in ("refreshToken", "userName", "organization"):
        assert creds_after[k] == creds_before[k]
    assert stat.S_IMODE(os.stat(fc.credentials).st_mode) == 0o600
    # Tokens stay out of logs.
    assert creds_after["token"] not in m.log()
    assert creds_before["refreshToken"] not in m.log()
    assert_healthy(m)


def test_401_and_refresh_rejected_is_eacces(ready):
    m, fc = ready
    token = json.loads(fc.credentials.read_text())["token"]
    fc.config(refresh_enabled=False)
    fc.revoke_tokens()
    assert errno_of(write_file, m.p("alpha", "password"), "NewPassw0rd_1\n") == errno.EACCES
    msg = m.read("alpha", "last_error")
    assert "credentials rejected" in msg and "npx dbos-cloud login" in msg
    assert token not in msg and token not in m.log()
    assert_healthy(m)


def test_401_fault_then_retry(ready):
    """A single 401 is retried after a refresh; the caller never sees it."""
    m, fc = ready
    fc.reset_counts()
    fc.fault(RESET, "status", status=401, message="token expired")
    write_file(m.p("alpha", "password"), "NewPassw0rd_5\n")
    assert fc.count(RESET) == 2 and fc.count("POST /oauth/token") == 1


INTERRUPTED_WRITER = r"""
import os, signal, sys, time
def stop(*a):
    raise KeyboardInterrupt
signal.signal(signal.SIGINT, stop)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
print("ready", flush=True)
t0 = time.monotonic()
try:
    os.write(fd, b"NewPassw0rd_9\n")
    print("done")
except KeyboardInterrupt:
    print("interrupted")
except OSError as e:
    print("errno", e.errno)
"""


def test_ctrl_c_frees_the_caller(ready):
    m, fc = ready
    fc.fault(RESET, "hang", delay=60)
    p = subprocess.Popen(["/usr/bin/python3", "-c", INTERRUPTED_WRITER,
                          str(m.p("alpha", "password"))], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=TEST_TIMEOUT_S + 5)
    took = time.monotonic() - t0
    assert out.strip() in ("interrupted", f"errno {errno.EINTR}")
    assert took < 1.5, f"Ctrl-C took {took:.1f} s to free the caller"
    wait_until(lambda: "interrupted" in m.read("alpha", "last_error"), timeout=3)
    assert "interrupted" in m.read("alpha", "last_error")
    assert_healthy(m)


def test_login_again_while_mounted(ready):
    """After `npx dbos-cloud login` rewrites the file, the mount uses the new
    token at the next 401, without a remount."""
    m, fc = ready
    fc.config(refresh_enabled=False)
    fc.revoke_tokens()
    assert errno_of(write_file, m.p("alpha", "password"), "NewPassw0rd_1\n") == errno.EACCES
    creds = json.loads(fc.credentials.read_text())
    creds["token"] = fc.new_token()["token"]
    fc.credentials.write_text(json.dumps(creds))
    write_file(m.p("alpha", "password"), "NewPassw0rd_6\n")
    assert fc.instances()["alpha"]["_password"] == "NewPassw0rd_6"
    assert "using the new DBOS Cloud token" in m.read(".dbosfs", "log")


def test_failed_refresh_is_not_hammered(ready):
    m, fc = ready
    fc.config(refresh_enabled=False)
    fc.revoke_tokens()
    fc.reset_counts()
    for _ in range(5):
        assert errno_of(write_file, m.p("alpha", "password"), "NewPassw0rd_1\n") == \
            errno.EACCES
    time.sleep(2)  # the refresher keeps hitting 401 too
    assert fc.count("POST /oauth/token") <= 2
    assert "npx dbos-cloud login" in m.read("alpha", "last_error")
