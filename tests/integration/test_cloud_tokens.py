"""Token refresh against the stand-in DBOS Cloud server: a slow refresh
blocks no other operation and leaves them interruptible, a failing refresh
is neither hammered nor logged every refresh period, and token text from a
broken server or credentials file never reaches a log, last_error or
stderr."""
import base64
import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import (available_instance, cloud_certs, fake_cloud,  # noqa: F401,E402
                           mount_cloud, try_mount, wait_until)
from conftest import errno_of, write_file  # noqa: E402

TOKEN = "POST /oauth/token"

INTERRUPTED_MKDIR = r"""
import os, signal, sys
def stop(*a):
    raise KeyboardInterrupt
signal.signal(signal.SIGINT, stop)
print("ready", flush=True)
try:
    os.mkdir(sys.argv[1])
    print("done")
except KeyboardInterrupt:
    print("interrupted")
except OSError as e:
    print("errno", e.errno)
"""


def jwt_exp(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]


def everything_said(m):
    """Every place a message can reach: the log, last_error files, stderr."""
    parts = [m.read(".dbosfs", "log"), m.read(".dbosfs", "last_error"), m.log()]
    for name in ("alpha", "beta"):
        if os.path.isdir(m.p(name)):
            parts.append(m.read(name, "last_error"))
    return "\n".join(parts)


def test_slow_refresh_blocks_nobody(mount_factory, fake_cloud):
    fc = fake_cloud
    fc.add_instances([available_instance("alpha"), available_instance("beta")])
    # A long HTTP timeout, so the slow refresh is slow rather than failed;
    # a long grace, so mkdir is still waiting when Ctrl-C comes.
    m = mount_cloud(mount_factory, fc, timeout=30, grace_ms=3000)
    assert m.read("alpha", "status") == "available\n"
    fc.fault(TOKEN, "latency", delay=7)
    fc.reset_counts()
    fc.revoke_tokens()
    # The refresher's next list gets a 401 and starts the (slow) refresh.
    assert wait_until(lambda: fc.count(TOKEN) >= 1, timeout=5)
    t_refresh = time.monotonic()

    # Reads are served meanwhile, at once.
    t0 = time.monotonic()
    assert m.read("alpha", "status") == "available\n"
    assert "beta" in os.listdir(m.path)
    assert time.monotonic() - t0 < 1

    # A mkdir waiting for the refresh can be Ctrl-C'd.
    p = subprocess.Popen(["/usr/bin/python3", "-c", INTERRUPTED_MKDIR, str(m.p("gamma"))],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.7)
    assert p.poll() is None, "mkdir did not wait for the refresh in flight"
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=10)
    took = time.monotonic() - t0
    assert out.strip() in ("interrupted", f"errno {errno.EINTR}"), out
    assert took < 2, f"Ctrl-C took {took:.1f} s to free mkdir"
    assert time.monotonic() - t_refresh < 6, "the refresh was not in flight throughout"
    assert "interrupted" in m.read(".dbosfs", "last_error")
    assert "gamma" not in fc.instances()

    # An operation that is not interrupted waits for that same refresh
    # (single flight: no second POST) and then goes through.
    write_file(m.p("alpha", "password"), "NewPassw0rd_7\n")
    assert time.monotonic() - t_refresh >= 5
    assert fc.instances()["alpha"]["_password"] == "NewPassw0rd_7"
    assert fc.count(TOKEN) == 1
    os.mkdir(m.p("gamma"))
    assert "gamma" in fc.instances()
    assert m.proc.poll() is None


def test_failing_refresh_of_expired_token_is_quiet(mount_factory, fake_cloud):
    """Expired token, refresh always refused, refresh=1: neither the auth
    server nor the log gets something every second."""
    fc = fake_cloud
    fc.add_instances([available_instance("alpha")])
    creds = json.loads(fc.credentials.read_text())
    creds["token"] = fc.new_token(expires_in=11)["token"]
    fc.credentials.write_text(json.dumps(creds))
    exp = jwt_exp(creds["token"])
    fc.config(refresh_enabled=False)
    m = mount_cloud(mount_factory, fc)
    # Past exp: the proactive refresh and the 401 path both fail now.
    time.sleep(max(0, exp - time.time()) + 2)
    assert errno_of(write_file, m.p("alpha", "password"), "NewPassw0rd_1\n") == errno.EACCES

    lines0 = m.read(".dbosfs", "log").splitlines()
    posts0 = fc.count(TOKEN)
    time.sleep(6)
    lines1 = m.read(".dbosfs", "log").splitlines()
    posts1 = fc.count(TOKEN)
    new = lines1[len(lines0):]
    assert len(new) <= 1, "log grows every refresh period:\n" + "\n".join(new)
    # One POST per backoff period (5 s) at most, not one per second.
    assert posts1 - posts0 <= 2, f"{posts1 - posts0} refresh POSTs in 6 s"
    failed = [ln for ln in lines1 if "refreshing the DBOS Cloud token failed" in ln]
    assert len(failed) == 1, "\n".join(lines1)
    assert "invalid refresh token" in failed[0].lower()
    assert m.proc.poll() is None


# jansson quotes the text near a syntax error only when that text is at most
# 20 bytes, so the markers are short: a leak would show.
LEAK = "LEAKED-TOK-42"


@pytest.mark.parametrize("body", [
    '{"access_token": "' + LEAK,                       # cut off
    '{"access_token": "' + LEAK + '\u0001", "x": 1}',  # control character
    '{"access_token": ' + LEAK + '}',                  # bare word
])
def test_malformed_token_response_never_leaks(mount_factory, fake_cloud, body):
    fc = fake_cloud
    fc.add_instances([available_instance("alpha"), available_instance("beta")])
    m = mount_cloud(mount_factory, fc)
    assert m.read("alpha", "status") == "available\n"
    fc.fault(TOKEN, "malformed", times=-1, raw_body=body)
    fc.revoke_tokens()
    assert errno_of(write_file, m.p("alpha", "password"), "NewPassw0rd_1\n") == errno.EACCES
    assert "malformed response to the token refresh" in m.read("alpha", "last_error")
    # The refresher runs into it too (after the 5 s backoff).
    assert wait_until(lambda: fc.count(TOKEN) >= 2, timeout=10)
    time.sleep(0.5)
    said = everything_said(m)
    assert "malformed response to the token refresh" in said
    assert "LEAKED" not in said


def test_refresh_error_echoing_the_refresh_token_is_redacted(mount_factory, fake_cloud):
    fc = fake_cloud
    fc.add_instances([available_instance("alpha"), available_instance("beta")])
    rt = json.loads(fc.credentials.read_text())["refreshToken"]
    m = mount_cloud(mount_factory, fc)
    fc.fault(TOKEN, "status", times=-1, status=403, message=f"refresh token {rt} is unknown")
    fc.revoke_tokens()
    assert errno_of(write_file, m.p("alpha", "password"), "NewPassw0rd_1\n") == errno.EACCES
    msg = m.read("alpha", "last_error")
    assert "refresh token [redacted] is unknown" in msg
    time.sleep(1.5)
    assert rt not in everything_said(m)


def test_api_error_echoing_the_bearer_token_is_redacted(mount_factory, fake_cloud):
    fc = fake_cloud
    fc.add_instances([available_instance("alpha"), available_instance("beta")])
    token = json.loads(fc.credentials.read_text())["token"]
    m = mount_cloud(mount_factory, fc)
    fc.fault("POST /databases/userdb/credentials", "status", status=400,
             message=f"bad request with Bearer {token}")
    assert errno_of(write_file, m.p("alpha", "password"), "NewPassw0rd_1\n") == errno.EINVAL
    msg = m.read("alpha", "last_error")
    assert "bad request with Bearer [redacted]" in msg
    assert token not in everything_said(m)


@pytest.mark.parametrize("text", [
    '{"token": "LEAKY-CRED-42',
    '{"token": "LEAKY-CRED-42\u0001"}',
    '{"token": "a.b.c", "refreshToken": "rt-LEAKY-CRED\u0002"}',
    '{"token": LEAKYCRED42}',
])
def test_malformed_credentials_never_leak(fake_cloud, tmp_path, text):
    path = tmp_path / "credentials"
    path.write_text(text)
    rc, err, _ = try_mount(fake_cloud.mount_options(credentials=path),
                           env={"DBOSFS_CLOUD_TIMEOUT": "3"})
    assert rc != 0
    assert "LEAKY" not in err
    assert "malformed credentials file" in err and "line 1, column" in err


def test_401_storm_backs_off(mount_factory, fake_cloud):
    """Issue 9, 4: the API keeps answering 401 while the refresh token
    works. Refreshes back off exponentially (not one per refresh period),
    the credentials file is rewritten only with each new token, and the
    log gets one line when the storm starts and one when it ends."""
    fc = fake_cloud
    fc.add_instances([available_instance("alpha")])
    m = mount_cloud(mount_factory, fc)
    assert m.read("alpha", "status") == "available\n"
    fc.reset_counts()
    mtimes = set()
    fc.fault("GET /databases", "status", times=-1, status=401, message="Unauthorized")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        mtimes.add(os.stat(fc.credentials).st_mtime_ns)
        time.sleep(0.1)
    refreshes = fc.count(TOKEN)
    # refresh=1: without backoff that is about 10 refreshes; with it 5 s, 10 s, ...
    assert 1 <= refreshes <= 3, refreshes
    assert len(mtimes) <= refreshes + 1
    log = m.read(".dbosfs", "log")
    assert log.count("rejects even a freshly refreshed token") == 1, log
    assert log.count("refreshed the DBOS Cloud access token") == refreshes
    # Reads are served from the cache all along; operations say why.
    assert m.read("alpha", "status") == "available\n"
    fc.clear_faults()
    assert wait_until(lambda: "accepts the token again" in m.read(".dbosfs", "log"),
                      timeout=8)
    # health follows once the refresher has applied that list (just after
    # the request that logged the line).
    assert wait_until(lambda: m.read(".dbosfs", "health") == "ok\n", timeout=5)
    assert m.read(".dbosfs", "log").count("accepts the token again") == 1
