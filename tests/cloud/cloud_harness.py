"""Fixtures for the cloud integration tests: a test CA and server certificate
made with openssl, the stand-in DBOS Cloud server (fake_dbos_cloud.py) run as
a subprocess, and a dbosfs mount pointed at it.

Imported by tests/integration/test_cloud*.py (pytest picks the fixtures up
from the importing module's namespace)."""
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

import pytest

CLOUD_DIR = pathlib.Path(__file__).resolve().parent
SERVER = CLOUD_DIR / "fake_dbos_cloud.py"
PYTHON = "/usr/bin/python3"
# Short HTTP timeouts so timeout faults resolve quickly (read by dbosfs).
TEST_TIMEOUT_S = 4


def _run(argv, cwd):
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)


def make_certs(d):
    """A CA and a server certificate for 127.0.0.1/localhost, signed by it."""
    d = pathlib.Path(d)
    d.mkdir(parents=True, exist_ok=True)
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
          "-out", "ca.pem", "-days", "2", "-subj", "/CN=dbosfs test CA"], d)
    _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
          "-out", "server.csr", "-subj", "/CN=localhost"], d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    _run(["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
          "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf"], d)
    return {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"),
            "key": str(d / "server.key")}


class FakeCloud:
    """One running stand-in server, plus an app directory whose
    .dbos/credentials holds a token it issued."""

    def __init__(self, base, certs, provision_delay=1.0, token_expires_in=3600,
                 org="acme", user="alice"):
        self.base = pathlib.Path(base)
        self.certs = certs
        self.ca = certs["ca"]
        self.app_dir = self.base / "app"
        (self.app_dir / ".dbos").mkdir(parents=True, exist_ok=True)
        self.credentials = self.app_dir / ".dbos" / "credentials"
        self.org, self.user = org, user
        port_file = self.base / "port"
        self.log_path = self.base / "fake-cloud.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PYTHON, str(SERVER), "--cert", certs["cert"], "--key", certs["key"],
             "--port-file", str(port_file), "--credentials-out", str(self.credentials),
             "--provision-delay", str(provision_delay),
             "--token-expires-in", str(token_expires_in), "--org", org, "--user", user,
             "--max-seconds", "1800"],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL)
        deadline = time.time() + 15
        while not port_file.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("fake DBOS Cloud did not start: " +
                                   self.log_path.read_text(errors="replace"))
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self.domain = f"127.0.0.1:{self.port}"
        self.ctx = ssl.create_default_context(cafile=self.ca)

    # --- admin API ------------------------------------------------------------
    def admin(self, method, path, body=None, timeout=10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"https://{self.domain}/__admin/{path}", data=data,
                                     method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")

    def counts(self):
        return self.admin("GET", "stats")["counts"]

    def connections(self):
        """TCP connections accepted since the last reset_counts()."""
        return self.admin("GET", "stats")["connections"]

    def count(self, key):
        return self.counts().get(key, 0)

    def reset_counts(self):
        self.admin("POST", "stats/reset", {})

    def fault(self, match, kind, times=1, **kw):
        f = {"match": match, "kind": kind, "times": times}
        f.update(kw)
        self.admin("POST", "faults", {"faults": [f]})

    def clear_faults(self):
        self.admin("DELETE", "faults")

    def add_instances(self, instances, password=None):
        body = {"instances": instances}
        if password is not None:
            body["password"] = password
        self.admin("POST", "instances", body)

    def remove_instance(self, name):
        self.admin("DELETE", f"instances/{name}")

    def set_apps(self, apps):
        self.admin("POST", "apps", {"apps": apps})

    def bulk(self, count, prefix="db"):
        self.admin("POST", "bulk", {"count": count, "prefix": prefix})

    def instances(self):
        return self.admin("GET", "state")["instances"]

    def revoke_tokens(self):
        self.admin("POST", "revoke", {})

    def config(self, **kw):
        self.admin("POST", "config", kw)

    def new_token(self, expires_in=3600):
        return self.admin("POST", "token", {"expires_in": expires_in})

    # --- mounting ---------------------------------------------------------------
    def mount_options(self, **extra):
        o = {"credentials": str(self.credentials), "domain": self.domain,
             "auth_domain": self.domain, "cafile": self.ca}
        o.update(extra)
        return o

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def available_instance(name, **over):
    inst = {"PostgresInstanceName": name, "Status": "available",
            "HostName": f"{name}.db.fake-dbos.test", "Port": 5432,
            "DatabaseUsername": "dbos_user", "IsLinked": False, "SupabaseReference": None}
    inst.update(over)
    return inst


@pytest.fixture(scope="session")
def cloud_certs():
    d = tempfile.mkdtemp(prefix="dbosfs-cloud-certs-", dir="/tmp")
    try:
        yield make_certs(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake_cloud(cloud_certs):
    base = tempfile.mkdtemp(prefix="dbosfs-cloud-", dir="/tmp")
    fc = FakeCloud(base, cloud_certs)
    try:
        yield fc
    finally:
        fc.stop()
        shutil.rmtree(base, ignore_errors=True)


def mount_cloud(mount_factory, fc, timeout=TEST_TIMEOUT_S, startup=None, **extra):
    env = {"DBOSFS_CLOUD_TIMEOUT": str(timeout)}
    if startup is not None:
        env["DBOSFS_CLOUD_STARTUP_S"] = str(startup)
    return mount_factory(provider="cloud", options=fc.mount_options(**extra), env=env)


@pytest.fixture
def cloud_mount(mount_factory, fake_cloud):
    return mount_cloud(mount_factory, fake_cloud)


def dbosfs_bin():
    repo = CLOUD_DIR.parents[1]
    return os.environ.get("DBOSFS_BIN", str(repo / "build" / "dbosfs"))


def try_mount(options, env=None, cwd=None, timeout=60):
    """Runs dbosfs in the background mode (daemonizing) and expects it to fail
    before detaching: returns (exit status, stderr, seconds taken)."""
    mnt = tempfile.mkdtemp(prefix="dbosfs-cloud-mnt-", dir="/tmp")
    state = tempfile.mkdtemp(prefix="dbosfs-cloud-state-", dir="/tmp")
    o = {"provider": "cloud", "state_dir": state}
    o.update(options)
    argv = [dbosfs_bin(), "-o", ",".join(f"{k}={v}" for k, v in o.items()), mnt]
    full_env = dict(os.environ)
    full_env.update(env or {})
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, env=full_env, cwd=cwd, capture_output=True, text=True,
                           timeout=timeout)
        took = time.monotonic() - t0
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt])
            raise AssertionError("dbosfs mounted although it should have failed")
        return r.returncode, r.stderr, took
    finally:
        shutil.rmtree(mnt, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def wait_until(pred, timeout=10, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()
