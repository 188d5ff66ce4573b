""".dbosfs/instances and .dbosfs/instances.json: every instance in one read."""
import json
import os
import re

from conftest import unique_name


def test_instances_table_and_json(instance):
    m, name = instance
    other = unique_name("z")
    m.mkdir(other)
    try:
        lines = m.read(".dbosfs", "instances").splitlines()
        assert lines[0].split() == ["NAME", "STATUS", "HOST:PORT", "USER"]
        rows = {l.split()[0]: l.split() for l in lines[1:]}
        assert set(rows) == set(n for n in os.listdir(m.path) if n != ".dbosfs")
        info = json.loads(m.read(name, "info.json"))
        assert rows[name] == [name, "available", f"{info['HostName']}:{info['Port']}",
                              "dbos_user"]
        # Aligned: every column starts at the same offset on every line.
        starts = {tuple(t.start() for t in re.finditer(r"\S+", l)) for l in lines}
        assert len(starts) == 1, lines

        objs = json.loads(m.read(".dbosfs", "instances.json"))
        assert [o["PostgresInstanceName"] for o in objs] == sorted(rows)
        assert next(o for o in objs if o["PostgresInstanceName"] == name) == info
    finally:
        m.destroy(other)
    assert other not in m.read(".dbosfs", "instances")
    names = [o["PostgresInstanceName"] for o in json.loads(m.read(".dbosfs", "instances.json"))]
    assert other not in names and name in names
