"""Integration-test harness: mounts the real dbosfs through /dev/fuse.

Fixtures:
  mount_factory(provider="local", options={...}, env={...}, cwd=None) -> Mount
  local_mount      a fresh local mount (function scope)
  shared_local     one local mount shared by a test module (cheaper)
  instance         a fresh, available instance on shared_local: (mount, name)
Helpers: errno_of(fn, *args), unique_name(prefix)
"""
import errno
import itertools
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DBOSFS = os.environ.get("DBOSFS_BIN", str(REPO / "build" / "dbosfs"))
# Errors the daemon must never print (sanitizers, valgrind).
BAD_STDERR = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
              "ERROR SUMMARY: [1-9]", "definitely lost: [1-9]")
_counter = itertools.count()


def unique_name(prefix="t"):
    """A valid instance name (3..16 of [a-z0-9_]) unique in this run."""
    return f"{prefix}{os.getpid() % 1000}_{next(_counter)}"[:16]


def wait_for(pred, timeout, what):
    """Polls pred until it is true; AssertionError naming what after timeout s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def errno_of(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except OSError as e:
        return e.errno
    return None


def write_file(path, data, mode="w"):
    """Writes like `echo data > path`: one write call, errors raised."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data.encode() if isinstance(data, str) else data)
    finally:
        os.close(fd)


def read_file(path):
    with open(path) as f:
        return f.read()


class Mount:
    def __init__(self, provider, options, env, cwd, base):
        self.base = pathlib.Path(base)
        self.path = self.base / "mnt"
        self.path.mkdir(exist_ok=True)
        self.state_dir = pathlib.Path(options.get("state_dir", self.base / "state"))
        self.provider = provider
        self.options = dict(options)
        self.env = env
        self.cwd = cwd
        self.proc = None
        self.stderr_path = self.base / f"daemon-{next(_counter)}.log"
        self.start()

    def argv(self):
        opts = {"entry_timeout": "0", "attr_timeout": "0", "negative_timeout": "0",
                "refresh": "1", "state_dir": str(self.state_dir),
                "provider": self.provider}
        opts.update(self.options)
        o = ",".join(k if v is None else f"{k}={v}" for k, v in opts.items())
        wrapper = os.environ.get("DBOSFS_WRAPPER", "").split()
        return wrapper + [DBOSFS, "-f", "-o", o, str(self.path)]

    def start(self, expect_ok=True):
        env = dict(os.environ)
        env.update(self.env or {})
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=self._stderr, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL, env=env, cwd=self.cwd)
        deadline = time.time() + 60
        while time.time() < deadline:
            if os.path.ismount(self.path):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"dbosfs exited {self.proc.returncode}: {self.log()}")
            time.sleep(0.02)
        raise RuntimeError(f"dbosfs did not mount in 60 s: {self.log()}")

    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def unmount(self, timeout=60):
        """Unmounts, waits for the daemon, asserts a clean exit."""
        if self.proc is None:
            return
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)],
                       stderr=subprocess.DEVNULL)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"dbosfs did not exit within {timeout} s after unmount")
        finally:
            self._stderr.close()
            self.proc = None
        text = self.log()
        for bad in BAD_STDERR:
            import re
            assert not re.search(bad, text), f"daemon stderr has {bad!r}:\n{text[-4000:]}"
        assert rc == 0, f"dbosfs exited {rc}:\n{text[-4000:]}"

    def remount(self):
        self.unmount()
        self.start()

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self._stderr.close()
            self.proc = None
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)],
                       stderr=subprocess.DEVNULL)

    # conveniences
    def p(self, *parts):
        return self.path.joinpath(*parts)

    def read(self, *parts):
        return read_file(self.p(*parts))

    def write(self, data, *parts):
        write_file(self.p(*parts), data)

    def mkdir(self, name):
        os.mkdir(self.p(name))

    def destroy(self, name):
        self.write(name + "\n", name, "confirm")
        os.rmdir(self.p(name))


def make_base():
    # Under /tmp with o+x, so the unprivileged account that runs PostgreSQL
    # (when tests run as root) can reach its data directories.
    base = tempfile.mkdtemp(prefix="dbosfs-it-", dir="/tmp")
    os.chmod(base, 0o711)
    return base


@pytest.fixture
def mount_factory():
    mounts, bases = [], []

    def factory(provider="local", options=None, env=None, cwd=None):
        base = make_base()
        bases.append(base)
        m = Mount(provider, options or {}, env, cwd, base)
        mounts.append(m)
        return m

    yield factory
    errors = []
    for m in mounts:
        try:
            m.unmount()
        except AssertionError as e:
            errors.append(str(e))
    for b in bases:
        shutil.rmtree(b, ignore_errors=True)
    assert not errors, "\n".join(errors)


@pytest.fixture
def local_mount(mount_factory):
    return mount_factory("local")


def local_mount_for_module(options=None, env=None):
    """A local mount for a module-scoped fixture: yields it, then unmounts
    it and removes its directory (use with `yield from`)."""
    base = make_base()
    m = Mount("local", options or {}, env, None, base)
    yield m
    try:
        m.unmount()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_local():
    yield from local_mount_for_module()


@pytest.fixture
def instance(shared_local):
    name = unique_name("i")
    shared_local.mkdir(name)
    yield shared_local, name
    if shared_local.proc and os.path.isdir(shared_local.p(name)):
        try:
            shared_local.destroy(name)
        except OSError:
            pass


def pg_env(m, name, database="postgres"):
    """Environment for psql against an instance, from its own files."""
    env = dict(os.environ)
    for line in m.read(name, "env").splitlines():
        k, _, v = line.partition("=")
        env[k] = v
    env["PGPASSWORD"] = m.read(name, "password").strip()
    env["PGDATABASE"] = database
    env["PGCONNECT_TIMEOUT"] = "5"
    return env


def psql(m, name, sql, database="postgres", check=True):
    r = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       env=pg_env(m, name, database), capture_output=True, text=True,
                       timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"psql failed: {r.stderr}")
    return r


def ls_databases(m, name, timeout=30):
    """ls NAME/databases, retrying on EAGAIN (a first list that took longer
    than the first readdir's short wait, on a loaded machine)."""
    deadline = time.time() + timeout
    while True:
        try:
            return sorted(os.listdir(m.p(name, "databases")))
        except OSError as e:
            if e.errno != errno.EAGAIN or time.time() > deadline:
                raise
            time.sleep(0.1)
