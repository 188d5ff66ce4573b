"""Honest sizes: every file's st_size is the length of what cat returns,
before and after changes, so `test -s`, `ls -l`, `find -size` and
os.path.getsize tell the truth."""
import os
import subprocess

from conftest import write_file, errno_of


def sizes_match(m, *parts):
    """For every file of the directory: (name, stat size, bytes read)."""
    d = m.p(*parts)
    wrong = []
    for f in sorted(os.listdir(d)):
        p = d / f
        if p.is_dir():
            continue
        size = os.stat(p).st_size
        with open(p, "rb") as fh:
            data = fh.read()
        if size != len(data):
            wrong.append((f, size, len(data)))
    return wrong


def test_every_size_is_the_content_length_before_and_after_changes(instance, tmp_path):
    m, name = instance
    assert sizes_match(m, name) == []
    assert sizes_match(m, ".dbosfs") == []
    assert os.stat(m.p(name, "status")).st_size == len("available\n")
    # Changes: an error, an armed confirm, a migration report, a new password.
    assert errno_of(write_file, m.p(name, "confirm"), "wrong\n") is not None
    app = tmp_path / "app"
    app.mkdir()
    (app / "dbos-config.yaml").write_text(
        "name: sizes\nlanguage: node\ndatabase:\n  migrate: ['echo migrated']\n")
    write_file(m.p(name, "migrate"), f"{app}\n")
    write_file(m.p(name, "password"), "Abcdefgh_longer_password\n")
    write_file(m.p(name, "confirm"), f"{name}\n")
    assert sizes_match(m, name) == []
    assert sizes_match(m, ".dbosfs") == []
    assert os.path.getsize(m.p(name, "password")) == len("Abcdefgh_longer_password\n")


def test_test_s_tells_whether_there_is_an_error(instance):
    m, name = instance
    last_error = m.p(name, "last_error")
    assert subprocess.run(["test", "-s", last_error]).returncode == 1
    assert os.stat(last_error).st_size == 0
    assert errno_of(write_file, m.p(name, "confirm"), "wrong\n") is not None
    assert subprocess.run(["test", "-s", last_error]).returncode == 0
    ls = subprocess.run(["ls", "-l", m.p(name)], capture_output=True, text=True).stdout
    rows = {line.split()[-1]: int(line.split()[4]) for line in ls.splitlines()[1:]}
    assert rows["status"] == len("available\n") and rows["last_error"] > 0, rows
