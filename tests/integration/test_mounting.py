"""Mounting the way Linux users mount things: mount -t fuse.dbosfs, an fstab
line through mount -a -T, systemd's readiness protocol, --version."""
import os
import pathlib
import shutil
import socket
import subprocess
import time

import pytest

from conftest import DBOSFS, make_base

LINK = pathlib.Path("/usr/local/bin/dbosfs")


@pytest.fixture
def on_path():
    """mount.fuse3 runs `dbosfs` from the standard PATH: put the binary
    under test there for the test's duration (never over another one)."""
    if shutil.which("mount") is None or not os.path.exists("/sbin/mount.fuse3"):
        pytest.skip("mount(8) or mount.fuse3 is missing")
    if os.geteuid() != 0:
        pytest.skip("mount -t fuse.dbosfs needs root here")
    if LINK.exists() or LINK.is_symlink():
        if os.path.realpath(LINK) != os.path.realpath(DBOSFS):
            pytest.skip(f"{LINK} exists and is not the binary under test")
        yield
        return
    LINK.symlink_to(os.path.realpath(DBOSFS))
    try:
        yield
    finally:
        LINK.unlink()


def daemon_pids(mountpoint):
    pids = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                argv = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(mountpoint).encode() in argv and argv[0].endswith(b"dbosfs"):
                pids.append(int(p.name))
    return pids


def unmount_and_wait(mountpoint):
    pids = daemon_pids(mountpoint)
    subprocess.run(["umount", str(mountpoint)], check=True, timeout=60)
    deadline = time.time() + 60
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids), "daemon still running"


def check_served(mountpoint):
    assert os.path.ismount(mountpoint)
    assert ".dbosfs" in os.listdir(mountpoint)
    assert open(os.path.join(mountpoint, ".dbosfs", "provider")).read() == "local\n"


def test_mount_t_fuse_dbosfs(on_path):
    base = pathlib.Path(make_base())
    mnt = base / "dbs"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "fuse.dbosfs", "dbosfs", str(mnt), "-o",
                            f"provider=local,state_dir={base}/state,_netdev,noatime"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        check_served(mnt)
        unmount_and_wait(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)


def test_fstab_line_with_mount_a(on_path):
    base = pathlib.Path(make_base())
    mnt = base / "dbs"
    mnt.mkdir()
    fstab = base / "fstab"
    fstab.write_text(f"dbosfs {mnt} fuse.dbosfs defaults,_netdev,x-systemd.automount,"
                     f"provider=local,state_dir={base}/state 0 0\n")
    try:
        r = subprocess.run(["mount", "-a", "-T", str(fstab)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        check_served(mnt)
        unmount_and_wait(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)


def test_readiness_is_notified_once_the_tree_is_served(mount_factory, tmp_path):
    sock_path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    try:
        m = mount_factory("local", env={"NOTIFY_SOCKET": sock_path})
        msg = sock.recv(4096).decode()
        assert "READY=1" in msg and f"MAINPID={m.proc.pid}" in msg
        assert os.path.ismount(m.path)
        m.unmount()
        assert "STOPPING=1" in sock.recv(4096).decode()
    finally:
        sock.close()


def test_version_names_the_libraries():
    out = subprocess.run([DBOSFS, "--version"], capture_output=True, text=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("dbosfs ")
    assert any(l.startswith("libfuse 3.") for l in lines)
    assert any(l.startswith("libpq ") for l in lines)
    assert any(l.startswith("libcurl ") for l in lines)


def test_systemd_units_verify(tmp_path):
    """systemd cannot run in the test environment: the units are checked
    with systemd-analyze verify instead (skipped without it)."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    repo = pathlib.Path(__file__).resolve().parents[2]
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    for kind, inst_name in (("system", "dbosfs@srv-dbs.service"), ("user", "dbosfs@dbs.service")):
        text = (repo / "systemd" / kind / "dbosfs@.service").read_text()
        text = text.replace("@BINDIR@", os.path.dirname(os.path.realpath(DBOSFS)))
        assert "Type=notify" in text
        inst = tmp_path / kind / inst_name
        inst.parent.mkdir()
        inst.write_text(text)
        argv = [analyze, "verify", "--man=no"] + (["--user"] if kind == "user" else [])
        r = subprocess.run(argv + [str(inst)], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime)))
        assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr


def failed_mount(tmp_path, options):
    """Runs dbosfs (daemonizing mode) with -o options; it must fail in the
    foreground: returns (exit status, stderr)."""
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    mnt.mkdir()
    r = subprocess.run([DBOSFS, "-o", f"state_dir={state},{options}", str(mnt)],
                       capture_output=True, text=True, timeout=120)
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
        raise AssertionError(f"-o {options} mounted")
    return r.returncode, r.stderr


@pytest.mark.parametrize("options,key,owner", [
    ("provider=cloud,pg_bindir=/usr/bin", "pg_bindir", "local"),
    ("provider=cloud,spares=1", "spares", "local"),
    ("provider=local,cafile=/etc/hosts", "cafile", "cloud"),
    ("domain=example.com", "domain", "cloud"),  # provider=local by default
])
def test_another_providers_option_is_refused(tmp_path, options, key, owner):
    """Each provider parses its own -o keys (the registry); a key of another
    provider fails the mount, naming the key and its provider."""
    rc, err = failed_mount(tmp_path, options)
    assert rc != 0
    assert f"option {key} is for provider={owner}" in err, err


def test_unknown_option_fails_naming_it(tmp_path):
    """libfuse names a key nobody knows, before any provider is created
    (here the state_dir is one the local provider would refuse)."""
    rc, err = failed_mount(tmp_path, "provider=local,no_such_key=1")
    assert rc != 0
    assert "no_such_key" in err, err
    (tmp_path / "again").mkdir()
    rc, err = failed_mount(tmp_path / "again", "provider=nope")
    assert rc != 0
    assert "unknown provider 'nope' (local or cloud)" in err, err


def test_help_lists_each_providers_options():
    out = subprocess.run([DBOSFS, "--help"], capture_output=True, text=True).stdout
    local = out.index("provider=local options")
    cloud = out.index("provider=cloud options")
    for key in ("pg_bindir=", "pg_user=", "spares=", "pitr_window="):
        assert local < out.index(f"-o {key}") < cloud, key
    for key in ("credentials=", "domain=", "auth_domain=", "cafile="):
        assert out.index(f"-o {key}") > cloud, key
    assert "-o provider=local|cloud  where instances live (default: local)" in out
