"""Mounting with the cloud provider: what is checked before detaching, and
the credentials file (default locations, refresh of an expired token)."""
import json
import os
import pathlib
import socket
import stat
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import (FakeCloud, cloud_certs, fake_cloud, make_certs,  # noqa: F401,E402
                           mount_cloud, try_mount)

FAST = {"DBOSFS_CLOUD_TIMEOUT": "3", "DBOSFS_CLOUD_STARTUP_S": "3"}


@pytest.fixture
def expired_cloud(cloud_certs, tmp_path):
    """A server whose credentials file holds a token that expired a minute ago."""
    fc = FakeCloud(tmp_path / "srv", cloud_certs, token_expires_in=-60)
    yield fc
    fc.stop()


def test_missing_credentials_file(fake_cloud, tmp_path):
    rc, err, _ = try_mount(fake_cloud.mount_options(credentials=tmp_path / "nope"), env=FAST)
    assert rc != 0
    assert f"cannot read credentials file {tmp_path / 'nope'}" in err


def test_unreadable_credentials_file(fake_cloud, tmp_path):
    if os.geteuid() == 0:
        # root reads anything: a directory is unreadable as a file for everyone.
        path = tmp_path / "dir"
        path.mkdir()
    else:
        path = tmp_path / "creds"
        path.write_text("{}")
        path.chmod(0)
    rc, err, _ = try_mount(fake_cloud.mount_options(credentials=path), env=FAST)
    assert rc != 0 and "credentials" in err and str(path) in err


@pytest.mark.parametrize("content,words", [
    ("{not json", "malformed credentials file"),
    ('{"userName": "alice", "organization": "acme"}', 'no "token"'),
    ("[]", 'no "token"'),
    ("", "malformed credentials file"),
])
def test_malformed_credentials(fake_cloud, tmp_path, content, words):
    path = tmp_path / "credentials"
    path.write_text(content)
    rc, err, _ = try_mount(fake_cloud.mount_options(credentials=path), env=FAST)
    assert rc != 0 and words in err and "dbos-cloud login" in err


def test_unreachable_api(fake_cloud):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    rc, err, took = try_mount(fake_cloud.mount_options(domain=f"127.0.0.1:{port}"), env=FAST)
    assert rc != 0 and "cannot connect" in err and took < 10


def test_api_never_answers(fake_cloud):
    # The kernel completes the TCP handshake, but nobody ever speaks TLS.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        port = s.getsockname()[1]
        rc, err, took = try_mount(fake_cloud.mount_options(domain=f"127.0.0.1:{port}"),
                                  env=FAST)
    finally:
        s.close()
    assert rc != 0 and "no answer" in err
    assert took < 3 + 4


def test_untrusted_certificate(fake_cloud, tmp_path):
    opts = fake_cloud.mount_options()
    del opts["cafile"]  # system CAs only: the test CA is unknown
    rc, err, _ = try_mount(opts, env=FAST)
    assert rc != 0 and "not trusted" in err
    # Another CA does not help either.
    other = make_certs(tmp_path / "other")
    rc, err, _ = try_mount(fake_cloud.mount_options(cafile=other["ca"]), env=FAST)
    assert rc != 0 and "not trusted" in err


def test_bad_cafile(fake_cloud, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    rc, err, _ = try_mount(fake_cloud.mount_options(cafile=junk), env=FAST)
    assert rc != 0 and "no PEM certificate" in err
    rc, err, _ = try_mount(fake_cloud.mount_options(cafile=tmp_path / "missing.pem"), env=FAST)
    assert rc != 0 and "cannot read cafile" in err


def test_profile_error_fails_mount(fake_cloud):
    """A profile call that keeps failing fails the mount once the start-up
    retries (DBOSFS_CLOUD_STARTUP_S) are spent, with the server's message."""
    fake_cloud.fault("GET /user/profile", "status", times=-1, status=500,
                     message="profile down", requestID="rid-p")
    rc, err, took = try_mount(fake_cloud.mount_options(), env=FAST)
    assert rc != 0 and "[rid-p] Cannot use DBOS Cloud" in err and "profile down" in err
    assert fake_cloud.count("GET /user/profile") >= 3
    assert took < 3 + 3


def test_profile_error_refusal_is_not_retried(fake_cloud):
    fake_cloud.fault("GET /user/profile", "status", times=-1, status=403, message="nope")
    rc, err, took = try_mount(fake_cloud.mount_options(), env=FAST)
    assert rc != 0 and "nope" in err
    assert fake_cloud.count("GET /user/profile") == 1


def test_one_profile_500_is_retried(mount_factory, fake_cloud):
    """Issue 9, 5: one 500 on the profile call used to fail the mount."""
    fake_cloud.fault("GET /user/profile", "status", status=500, message="blip")
    m = mount_cloud(mount_factory, fake_cloud)
    assert m.read(".dbosfs", "account").strip() == "alice (organization acme)"
    assert fake_cloud.count("GET /user/profile") == 2


def test_token_never_printed(fake_cloud):
    creds = json.loads(fake_cloud.credentials.read_text())
    fake_cloud.config(refresh_enabled=False)
    fake_cloud.revoke_tokens()
    rc, err, _ = try_mount(fake_cloud.mount_options(), env=FAST)
    assert rc != 0 and "credentials rejected" in err and "npx dbos-cloud login" in err
    assert creds["token"] not in err and creds["refreshToken"] not in err


def test_default_credentials_in_cwd(mount_factory, fake_cloud):
    opts = fake_cloud.mount_options()
    del opts["credentials"]
    m = mount_factory(provider="cloud", options=opts, cwd=str(fake_cloud.app_dir))
    assert m.read(".dbosfs", "account").strip() == "alice (organization acme)"


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_expired_token_refreshed_at_mount(mount_factory, expired_cloud, mode):
    fc = expired_cloud
    fc.credentials.chmod(mode)
    before = json.loads(fc.credentials.read_text())
    m = mount_cloud(mount_factory, fc)
    after = json.loads(fc.credentials.read_text())
    assert after["token"] != before["token"]
    assert {k: v for k, v in after.items() if k != "token"} == \
        {k: v for k, v in before.items() if k != "token"}
    assert stat.S_IMODE(os.stat(fc.credentials).st_mode) == mode
    assert fc.count("POST /oauth/token") == 1
    assert m.read(".dbosfs", "account").strip() == "alice (organization acme)"
    # No temporary files left next to the credentials.
    assert os.listdir(fc.credentials.parent) == ["credentials"]


def test_expired_token_refresh_rejected(expired_cloud):
    expired_cloud.config(refresh_enabled=False)
    rc, err, _ = try_mount(expired_cloud.mount_options(), env=FAST)
    assert rc != 0 and "expired" in err and "npx dbos-cloud login" in err


def test_expired_token_without_refresh_token(expired_cloud):
    creds = json.loads(expired_cloud.credentials.read_text())
    del creds["refreshToken"]
    expired_cloud.credentials.write_text(json.dumps(creds))
    rc, err, _ = try_mount(expired_cloud.mount_options(), env=FAST)
    assert rc != 0 and "expired" in err and "refreshToken" in err


def test_secret_scope_is_safe(mount_factory, fake_cloud):
    m = mount_cloud(mount_factory, fake_cloud)
    os.mkdir(m.p("scoped"))
    scopes = os.listdir(m.state_dir / "passwords")
    assert scopes == [f"cloud-127.0.0.1_{fake_cloud.port}-acme"]
