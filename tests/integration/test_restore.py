"""Point-in-time recovery on a mounted local provider: WAL archived from the
instance's first moment, NAME/restore "TIME NEWNAME" (rows committed before
TIME present, after absent), the window in NAME/restore, refusals (before the
window, the future, bad formats), wal_archive_bytes in info, a restored
instance surviving a remount, base backups and pruning. One mount for the
module; base backups every 2 s there (DBOSFS_PITR_BASE_S)."""
import datetime
import errno
import os
import time

import pytest

from conftest import errno_of, local_mount_for_module, psql, unique_name, wait_for, write_file


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@pytest.fixture(scope="module")
def pitr_mount():
    yield from local_mount_for_module(env={"DBOSFS_PITR_BASE_S": "3"})


@pytest.fixture(scope="module")
def source(pitr_mount):
    m = pitr_mount
    name = unique_name("p")
    m.mkdir(name)
    yield m, name


def window(m, name):
    lines = dict(l.split(": ", 1) for l in m.read(name, "restore").splitlines())
    return lines["earliest"], lines["latest"]


def test_restore_to_a_time_between_commits(source):
    m, name = source
    psql(m, name, "CREATE TABLE t (v text); INSERT INTO t VALUES ('before')")
    time.sleep(1.2)
    target = time.time()
    time.sleep(1.2)
    psql(m, name, "INSERT INTO t VALUES ('after')")
    new = unique_name("r")
    t0 = time.monotonic()
    write_file(m.p(name, "restore"), f"{rfc3339(target)} {new}\n")
    took = time.monotonic() - t0
    print(f"restore took {took:.2f} s")
    assert m.read(new, "status").strip() == "available"
    assert m.read(new, "password") == m.read(name, "password")
    rows = psql(m, new, "SELECT v FROM t ORDER BY v").stdout.split()
    assert rows == ["before"]
    # The restored instance is writable (promoted) and separate.
    psql(m, new, "INSERT INTO t VALUES ('restored only')")
    assert "restored only" not in psql(m, name, "SELECT v FROM t").stdout

    # It survives a remount (recovery settings gone, its data kept).
    m.remount()
    deadline = time.time() + 30
    while m.read(new, "status").strip() != "available":
        assert time.time() < deadline, m.read(new, "status")
        time.sleep(0.2)
    rows = psql(m, new, "SELECT v FROM t ORDER BY v").stdout.split("\n")
    assert [r for r in rows if r] == ["before", "restored only"]


def test_window_and_refusals(source):
    m, name = source
    earliest, latest = window(m, name)
    assert earliest.endswith("Z") and latest.endswith("Z")
    # Before the window: before the instance existed.
    for value, what in [("2020-01-01T00:00:00Z", "outside the restorable window"),
                        (rfc3339(time.time() + 3600), "outside the restorable window"),
                        ("yesterday", "not an RFC 3339 time"),
                        ("2026-13-01T00:00:00Z", "not an RFC 3339 time"),
                        ("2026-11-30 21:00:00", "RFC 3339")]:
        new = unique_name("x")
        rc = errno_of(write_file, m.p(name, "restore"), f"{value} {new}\n")
        assert rc == errno.EINVAL, value
        err = m.read(name, "last_error")
        assert what in err, err
        if "window" in what:
            assert "earliest: " in err and "latest: " in err
        assert new not in os.listdir(m.path)
    assert errno_of(write_file, m.p(name, "restore"),
                    f"{rfc3339(time.time() - 1)} Bad-Name\n") == errno.EINVAL
    assert errno_of(write_file, m.p(name, "restore"),
                    f"{rfc3339(time.time() - 1)} {name}\n") == errno.EEXIST
    assert errno_of(write_file, m.p(name, "restore"), "justonefield\n") == errno.EINVAL


def test_info_shows_wal_archive_bytes(source):
    m, name = source
    # More than a 16 MiB segment of WAL: one is archived.
    psql(m, name, "CREATE TABLE fill AS SELECT g, repeat('x', 100) AS pad "
         "FROM generate_series(1, 200000) g")
    deadline = time.time() + 30
    while True:
        info = m.read(name, "info")
        line = [l for l in info.splitlines() if l.startswith("wal_archive_bytes: ")]
        assert line, info
        if int(line[0].split(": ")[1]) > 0:
            break
        assert time.time() < deadline, info
        time.sleep(0.3)


def test_base_backups_and_pruning(source):
    """Base backups are taken by the pitr thread (every 3 s here) and those
    older than the window are pruned on a mount with a short window."""
    m, name = source
    pitr = m.state_dir / "local" / "instances" / name / "pitr"
    deadline = time.time() + 30
    while not any(p.name.startswith("base.") and not p.name.endswith(".tmp")
                  for p in pitr.iterdir()):
        assert time.time() < deadline, list(pitr.iterdir())
        time.sleep(0.3)


def test_pruning_with_a_short_window(mount_factory):
    m = mount_factory("local", options={"pitr_window": "4s"},
                      env={"DBOSFS_PITR_BASE_S": "2"})
    name = unique_name("w")
    m.mkdir(name)
    pitr = m.state_dir / "local" / "instances" / name / "pitr"
    # base0 (the template) goes once newer bases cover the window.
    deadline = time.time() + 40
    while (pitr / "base0").exists() or \
            len([p for p in pitr.iterdir() if p.name.startswith("base.")]) > 4:
        assert time.time() < deadline, sorted(p.name for p in pitr.iterdir())
        time.sleep(0.5)
    earliest, _ = window(m, name)
    e = datetime.datetime.strptime(earliest, "%Y-%m-%dT%H:%M:%SZ") \
        .replace(tzinfo=datetime.timezone.utc).timestamp()
    assert time.time() - e <= 10
    m.destroy(name)


def test_pitr_window_zero_turns_it_off(mount_factory):
    m = mount_factory("local", options={"pitr_window": "0"})
    name = unique_name("z")
    m.mkdir(name)
    assert "no restorable window" in m.read(name, "restore")
    assert errno_of(write_file, m.p(name, "restore"),
                    f"{rfc3339(time.time() - 1)} {unique_name('q')}\n") == errno.EINVAL
    assert "off" in m.read(name, "last_error")
    assert not (m.state_dir / "local" / "instances" / name / "pitr").exists()
    m.destroy(name)


def test_bad_pitr_window_refuses_to_mount(mount_factory, tmp_path):
    import subprocess
    from conftest import DBOSFS
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([DBOSFS, "-f", "-o", f"pitr_window=7x,state_dir={tmp_path}/s",
                        str(mnt)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "pitr_window=7x" in r.stderr


def test_base_backup_by_wal_volume(mount_factory):
    """A base backup is taken once the WAL archived since the newest one
    passes a threshold (here 3 MiB, DBOSFS_PITR_BASE_WAL_BYTES; the daily
    schedule never fires), and with a short window the template base and
    the WAL before the new base backup are pruned."""
    m = mount_factory("local", options={"pitr_window": "3s"},
                      env={"DBOSFS_PITR_BASE_WAL_BYTES": str(3 << 20)})
    name = unique_name("v")
    m.mkdir(name)
    pitr = m.state_dir / "local" / "instances" / name / "pitr"
    psql(m, name, "CREATE TABLE fill AS SELECT g, repeat('x', 100) AS pad "
         "FROM generate_series(1, 60000) g")

    def bases():
        return sorted(p for p in pitr.iterdir()
                      if p.name.startswith("base.") and not p.name.endswith(".tmp"))

    def pruned():
        if (pitr / "base0").exists() or not bases():
            return False
        label = (bases()[0] / "data" / "backup_label").read_text()
        first = label.split("(file ")[1][:24]
        segs = [p.name for p in (pitr / "wal").iterdir()
                if len(p.name) == 24 and all(c in "0123456789ABCDEF" for c in p.name)]
        return bool(segs) and min(s[8:] for s in segs) >= first[8:]

    wait_for(pruned, 60, f"a base backup by WAL volume and pruning: "
             f"{sorted(p.name for p in pitr.iterdir())}")
    assert "base backup of " + name in m.log()
    m.destroy(name)
