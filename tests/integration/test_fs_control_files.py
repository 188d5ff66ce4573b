"""Control files as the shell and programs use them: one value per line
whatever the write(2) calls, writers that never hang, control bytes that
never reach last_error or the log raw, and names that are destroyed and
re-created under a reader."""
import errno
import os
import re
import subprocess
import sys
import threading
import time

from conftest import errno_of, psql, unique_name


def write_parts(path, *parts):
    """One open file, one write(2) per part, then close; returns the errno
    of the first failing write (None if all succeeded) and the write results."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    results = []
    try:
        for p in parts:
            try:
                results.append(os.write(fd, p.encode() if isinstance(p, str) else p))
            except OSError as e:
                results.append(-e.errno)
    finally:
        os.close(fd)
    return results


# ------------------------------------------------------- one value per line

def test_a_password_split_across_writes_is_one_value(instance):
    m, name = instance
    assert write_parts(m.p(name, "password"), "Abcdefgh12", "345678\n") == [10, 7]
    assert m.read(name, "password") == "Abcdefgh12345678\n"
    assert psql(m, name, "select 1").stdout.strip() == "1"


def test_the_write_completing_a_line_returns_the_actions_errno(instance):
    m, name = instance
    # The first part is only buffered; the second completes a wrong name.
    assert write_parts(m.p(name, "confirm"), "not", "-" + name + "\n") == [3, -errno.EINVAL]
    assert "confirm refused" in m.read(name, "last_error")
    assert m.read(name, "confirm").startswith("not armed")


def test_an_unterminated_value_acts_at_close(instance):
    m, name = instance
    assert write_parts(m.p(name, "confirm"), name[:2], name[2:]) == [2, len(name) - 2]
    assert m.read(name, "confirm").startswith("armed")


def test_many_small_writes_are_capped(instance):
    m, name = instance
    fd = os.open(m.p(name, "confirm"), os.O_WRONLY)
    try:
        for _ in range(4096 // 64):
            os.write(fd, b"x" * 64)
        assert errno_of(os.write, fd, b"x" * 64) == errno.EINVAL
    finally:
        os.close(fd)
    assert "at most" in m.read(name, "last_error")


# ------------------------------------------------- writers never hang in D

_WRITER = r"""
import errno, os, sys, time
path, data, go = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
try:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
except OSError as e:
    print("open", e.errno, flush=True)
    sys.exit(0)
print("opened", flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
t = time.monotonic()
try:
    os.write(fd, data)
    print("wrote 0 %.3f" % (time.monotonic() - t), flush=True)
except OSError as e:
    print("wrote %d %.3f" % (e.errno, time.monotonic() - t), flush=True)
os.close(fd)
"""


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_parallel_writers_one_runs_the_rest_ebusy_none_in_d_state(instance, tmp_path):
    m, name = instance
    app = tmp_path / "app"
    app.mkdir()
    (app / "dbos-config.yaml").write_text(
        "name: slow\nlanguage: node\ndatabase:\n"
        "  migrate: ['echo run >> runs; sleep 2']\n")
    go = tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(m.p(name, "migrate")),
                                 f"{app}\n", str(go)], stdout=subprocess.PIPE, text=True)
               for _ in range(12)]
    # Every writer has opened (or been refused) before any run begins.
    first = [w.stdout.readline().split() for w in writers]
    assert all(f and f[0] in ("opened", "open") for f in first), first
    go.touch()
    t0 = time.monotonic()
    states = set()
    while any(w.poll() is None for w in writers) and time.monotonic() - t0 < 60:
        states.update(proc_state(w.pid) for w in writers if w.poll() is None)
        time.sleep(0.05)
    results = first
    for i, w in enumerate(writers):
        out = w.communicate(timeout=60)[0].split()
        if out:
            results[i] = out
    assert "D" not in states, (states, results)
    ran = [r for r in results if r[0] == "wrote" and r[1] == "0"]
    busy = [r for r in results if r[1] == str(errno.EBUSY)]
    assert len(ran) == 1 and len(busy) == 11, results
    # Refused at open, or at the write at once: never after waiting for the run.
    assert all(r[0] == "open" or float(r[2]) < 1.0 for r in busy), results
    assert (app / "runs").read_text() == "run\n"
    err = m.read(name, "last_error")
    assert "open for writing" in err or "already running" in err, err


def test_back_to_back_writers_are_not_refused(instance):
    """The kernel releases a closed handle asynchronously: the next writer
    of the same file must not see the previous one as still open."""
    m, name = instance
    for i in range(20):
        r = subprocess.run(f"echo 'Abcdefgh{i:04d}' > {m.p(name, 'password')}", shell=True,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert m.read(name, "password") == "Abcdefgh0019\n"


# ------------------------------------------------------ control bytes escaped

def test_control_bytes_are_escaped_in_last_error_log_and_stderr(instance):
    m, name = instance
    hostile = "\x1b[31mevil\x07"
    assert errno_of(write_parts_raise, m.p(name, "confirm"), hostile + "\n") == errno.EINVAL
    err = m.read(name, "last_error")
    assert "'\\x1b[31mevil\\x07'" in err and err.count("\n") == 1, err
    assert errno_of(os.mkdir, m.p("ab\ncd")) == errno.EINVAL
    root_err = m.read(".dbosfs", "last_error")
    assert "ab\\ncd" in root_err and root_err.count("\n") == 1, root_err
    log = m.read(".dbosfs", "log")
    assert "\\x1b[31mevil\\x07" in log and "ab\\ncd" in log
    for text in (err, root_err, log, m.log()):
        assert "\x1b" not in text and "\x07" not in text
    # Every log line is one event with its time stamp.
    assert all(re.match(r"\d{4}-\d\d-\d\dT", line) for line in log.splitlines())


def write_parts_raise(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


# ------------------------------------------------------------- no ESTALE

def test_reading_a_name_destroyed_and_recreated_is_never_estale(mount_factory):
    # The kernel's default entry and attribute caching (1 s), as users mount.
    m = mount_factory("local", {"entry_timeout": "1", "attr_timeout": "1",
                                "negative_timeout": "0"})
    name = unique_name("es")
    m.mkdir(name)
    status = str(m.p(name, "status"))
    seen, stop = {}, threading.Event()

    def reader():
        while not stop.is_set():
            step = "stat"
            try:
                os.stat(status)
                step = "open"
                fd = os.open(status, os.O_RDONLY)
                try:
                    step = "read"
                    text = os.read(fd, 4096).decode()
                finally:
                    os.close(fd)
                key = "ok" if text.strip() else "empty"
            except OSError as e:
                key = errno.errorcode.get(e.errno, str(e.errno))
                if key != "ENOENT":
                    key += " in " + step
            seen[key] = seen.get(key, 0) + 1

    readers = [threading.Thread(target=reader) for _ in range(8)]
    for t in readers:
        t.start()
    try:
        for _ in range(15):
            m.destroy(name)
            m.mkdir(name)
    finally:
        stop.set()
        for t in readers:
            t.join()
        m.destroy(name)
    assert set(seen) <= {"ok", "ENOENT"}, (seen, m.log()[-3000:])
    assert seen.get("ok", 0) > 0, seen
