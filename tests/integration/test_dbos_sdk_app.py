"""Issue 12 item 4: a real DBOS application (@dbos-inc/dbos-sdk from npm)
runs against a local instance with nothing but what the instance's own files
give it: `source <(sed 's/^/export /' NAME/env)` and
PGPASSWORD=$(cat NAME/password). It must launch, create its system database
and finish a workflow. Skipped with the reason when npm cannot install the
SDK."""
import os
import subprocess
import uuid

from conftest import psql
from npm_apps import copy_app, fixture_modules

SYS_DB = "dbos_sdk_app_dbos_sys"   # the SDK's rule: name, '-' -> '_', + _dbos_sys


def test_dbos_sdk_app_runs_with_instance_env(instance, tmp_path):
    m, name = instance
    app = copy_app("dbos-sdk-app", tmp_path, fixture_modules("dbos-sdk-app", "dbos"))
    workflow_id = f"dbosfs-{uuid.uuid4()}"
    script = (f"source <(sed 's/^/export /' {m.p(name, 'env')}) && "
              f"export PGPASSWORD=$(cat {m.p(name, 'password')}) && "
              f"exec node main.js {workflow_id}")
    # No other settings: none of the test runner's PG*, DBOS* or NODE_*
    # variables reach the app.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBOS", "NODE_"))}
    r = subprocess.run(["bash", "-c", script], cwd=app, env=env, capture_output=True,
                       text=True, timeout=120)
    out = r.stdout + r.stderr
    # Before TLS (issue 12), the SDK failed here with "The server does not
    # support SSL connections": it asks for TLS whenever PGHOST is not
    # localhost, and with NAME/env's sslmode it verifies through
    # NODE_EXTRA_CA_CERTS.
    assert r.returncode == 0, out[-4000:]
    assert ('{"workflowID":"%s","result":{"greeting":"hello, dbosfs","length":13}}'
            % workflow_id) in r.stdout, out[-4000:]

    # The SDK made its system database and recorded the finished workflow
    # and both of its steps there.
    assert psql(m, name, f"SELECT 1 FROM pg_database WHERE datname = '{SYS_DB}'"
                ).stdout.strip() == "1"
    status = psql(m, name, "SELECT status FROM dbos.workflow_status "
                  f"WHERE workflow_uuid = '{workflow_id}'", database=SYS_DB).stdout.strip()
    assert status == "SUCCESS"
    steps = psql(m, name, "SELECT function_name FROM dbos.operation_outputs "
                 f"WHERE workflow_uuid = '{workflow_id}' ORDER BY function_id",
                 database=SYS_DB).stdout.split()
    assert steps == ["makeGreeting", "measure"]
