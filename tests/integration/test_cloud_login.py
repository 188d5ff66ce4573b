"""`dbosfs login` against the stand-in server's device-authorization flow:
the credentials file it writes is the official CLI's (a later mount and the
CLI both use it), pending polls are waited out, a denied or expired login
and Ctrl-C write nothing."""
import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import (available_instance, cloud_certs, dbosfs_bin,  # noqa: F401,E402
                           fake_cloud, mount_cloud)
from test_cloud_cli import dbos_cloud_cli, run_cli  # noqa: F401,E402

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")


def login_argv(fc, credentials=None):
    argv = [dbosfs_bin(), "login", "--domain", fc.domain, "--auth-domain", fc.domain,
            "--cafile", fc.ca]
    if credentials is not None:
        argv += ["--credentials", str(credentials)]
    return argv


def run_login(fc, credentials=None, cwd=None, timeout=60):
    r = subprocess.run(login_argv(fc, credentials), cwd=cwd, capture_output=True, text=True,
                       timeout=timeout)
    for mark in SANITIZER_MARKS:
        assert mark not in r.stderr, r.stderr
    return r


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="dbosfs-login-", dir="/tmp")
    yield pathlib.Path(d)
    subprocess.run(["rm", "-rf", d])


def test_login_writes_cli_credentials_a_mount_uses(mount_factory, fake_cloud, workdir):
    fc = fake_cloud
    fc.admin("POST", "device", {"outcome": "approve", "after": 2, "interval": 1})
    t0 = time.monotonic()
    r = run_login(fc, cwd=workdir)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "Login URL: https://" in r.stdout and "user_code=ABCD-" in r.stdout
    assert "User code: ABCD-" in r.stdout
    # Two pending answers, then the token: three polls one interval apart.
    polls = fc.admin("GET", "device")["polls"]
    assert len(polls) == 3
    assert all(b[1] - a[1] >= 0.9 for a, b in zip(polls, polls[1:]))
    assert took >= 2.9
    cred = workdir / ".dbos" / "credentials"
    assert stat.S_IMODE(os.stat(cred).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cred.parent).st_mode) == 0o700
    text = cred.read_text()
    data = json.loads(text)
    # The CLI's JSON.stringify: these keys, in this order, compact.
    assert list(data) == ["token", "refreshToken", "userName", "organization"]
    assert text == json.dumps(data, separators=(",", ":"))
    assert data["userName"] == fc.user and data["organization"] == fc.org
    # Secrets never on the terminal.
    assert data["token"] not in r.stdout + r.stderr
    assert data["refreshToken"] not in r.stdout + r.stderr
    assert "Logged in as alice" in r.stdout
    # No temporary files left next to it.
    assert os.listdir(cred.parent) == ["credentials"]

    fc.add_instances([available_instance("alpha")])
    m = mount_cloud(mount_factory, fc, credentials=str(cred))
    assert m.read("alpha", "status") == "available\n"


def test_slow_down_adds_five_seconds(fake_cloud, workdir):
    fc = fake_cloud
    fc.admin("POST", "device", {"outcome": "approve", "after": 0, "interval": 1,
                                "slow_down": [1]})
    r = run_login(fc, credentials=workdir / "c.json")
    assert r.returncode == 0, r.stderr
    polls = fc.admin("GET", "device")["polls"]
    assert len(polls) == 2
    assert polls[1][1] - polls[0][1] >= 5.9  # interval 1 + 5 after slow_down
    assert json.loads((workdir / "c.json").read_text())["userName"] == fc.user


@pytest.mark.parametrize("outcome,words", [("deny", "denied"), ("expire", "expired")])
def test_refused_login_writes_nothing(fake_cloud, workdir, outcome, words):
    fc = fake_cloud
    fc.admin("POST", "device", {"outcome": outcome, "after": 1, "interval": 1})
    r = run_login(fc, cwd=workdir)
    assert r.returncode == 1
    assert words in r.stderr and "dbosfs login:" in r.stderr
    assert not (workdir / ".dbos" / "credentials").exists()
    assert not (workdir / ".dbos").exists() or os.listdir(workdir / ".dbos") == []


def test_code_expiring_while_pending_is_an_error(fake_cloud, workdir):
    fc = fake_cloud
    fc.admin("POST", "device", {"outcome": "approve", "after": 100, "interval": 1,
                                "expires_in": 2})
    r = run_login(fc, cwd=workdir)
    assert r.returncode == 1 and "expired" in r.stderr
    assert not (workdir / ".dbos" / "credentials").exists()


def test_ctrl_c_stops_at_once_and_writes_nothing(fake_cloud, workdir):
    fc = fake_cloud
    fc.admin("POST", "device", {"outcome": "approve", "after": 100, "interval": 1})
    p = subprocess.Popen(login_argv(fc), cwd=workdir, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        while "User code" not in p.stdout.readline():
            assert p.poll() is None
        time.sleep(1.5)  # one poll under way or done
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=5)
        assert time.monotonic() - t0 < 1
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read()
    for mark in SANITIZER_MARKS:
        assert mark not in err, err
    assert rc == 130 and "interrupted" in err
    assert not (workdir / ".dbos" / "credentials").exists()


def test_bad_arguments(fake_cloud):
    r = subprocess.run([dbosfs_bin(), "login", "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage: dbosfs login" in r.stderr
    r = subprocess.run([dbosfs_bin(), "login", "--domain", "bad host/x"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "invalid --domain" in r.stderr


def test_official_cli_accepts_the_credentials(fake_cloud, dbos_cloud_cli):
    fc = fake_cloud
    fc.add_instances([available_instance("fromlogin")])
    cred = fc.app_dir / ".dbos" / "credentials"
    cred.unlink()
    r = run_login(fc, cwd=fc.app_dir)
    assert r.returncode == 0, r.stderr
    assert json.loads(cred.read_text())["organization"] == fc.org
    names = {d["PostgresInstanceName"] for d in json.loads(run_cli(dbos_cloud_cli, fc, "db",
                                                                    "list", "--json"))}
    assert "fromlogin" in names


def test_relogin_replaces_a_loose_file_with_a_0600_one(fake_cloud, workdir):
    fc = fake_cloud
    cred = workdir / ".dbos" / "credentials"
    cred.parent.mkdir()
    cred.write_text('{"token":"old","userName":"old","organization":"old"}')
    os.chmod(cred, 0o644)
    r = run_login(fc, cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(cred).st_mode) == 0o600
    assert json.loads(cred.read_text())["userName"] == fc.user


def test_refused_device_code_names_the_oauth_error(fake_cloud, workdir):
    fc = fake_cloud
    fc.fault("POST /oauth/device/code", "status", status=403,
             raw_body='{"error":"unauthorized_client","error_description":"x"}')
    r = run_login(fc, cwd=workdir)
    assert r.returncode == 1
    assert "cannot start the DBOS Cloud login" in r.stderr
    assert "HTTP 403 (unauthorized_client)" in r.stderr
    assert not (workdir / ".dbos").exists()
