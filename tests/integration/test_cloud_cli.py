"""Compatibility with the official CLI (@dbos-inc/dbos-cloud), run against
the same stand-in server: what one makes, the other sees."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import cloud_certs, fake_cloud, mount_cloud, wait_until  # noqa: F401,E402
from conftest import write_file  # noqa: E402

NPM_DIR = pathlib.Path(os.environ.get("DBOSFS_CLI_CACHE", "/tmp/dbosfs-cloud-npm"))
CLI = NPM_DIR / "node_modules" / ".bin" / "dbos-cloud"


@pytest.fixture(scope="session")
def dbos_cloud_cli():
    """The CLI, installed once into a cache directory reused between runs."""
    if not CLI.exists():
        if not shutil.which("npm"):
            pytest.skip("npm is not installed")
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        try:
            r = subprocess.run(["npm", "install", "--no-audit", "--no-fund",
                                "@dbos-inc/dbos-cloud"], cwd=NPM_DIR, capture_output=True,
                               text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip("npm install @dbos-inc/dbos-cloud timed out (registry unreachable?)")
        if r.returncode != 0 or not CLI.exists():
            pytest.skip("npm install @dbos-inc/dbos-cloud failed (registry unreachable?): " +
                        r.stderr[-500:])
    return str(CLI)


def run_cli(cli, fc, *args, timeout=60):
    env = dict(os.environ, DBOS_DOMAIN=fc.domain, NODE_EXTRA_CA_CERTS=fc.ca)
    # The CLI reads ./.dbos/credentials: run it in the test's app directory.
    r = subprocess.run([cli, *args], cwd=fc.app_dir, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"dbos-cloud {' '.join(args)} failed: {r.stdout}{r.stderr}"
    return r.stdout


def cli_list(cli, fc):
    return {d["PostgresInstanceName"]: d for d in json.loads(run_cli(cli, fc, "db", "list",
                                                                      "--json"))}


def test_mkdir_shows_in_cli_and_rmdir_removes(mount_factory, fake_cloud, dbos_cloud_cli):
    fc, cli = fake_cloud, dbos_cloud_cli
    m = mount_cloud(mount_factory, fc)
    os.mkdir(m.p("fromfs"))
    dbs = cli_list(cli, fc)
    # The CLI needs ~1 s to start; the server may have settled meanwhile.
    assert dbs["fromfs"]["Status"] in ("provisioning", "available")
    assert dbs["fromfs"]["DatabaseUsername"] == "dbos_user"
    assert m.read("fromfs", "wait").strip() == "available"
    status = json.loads(run_cli(cli, fc, "db", "status", "fromfs", "--json"))
    assert status["Status"] == "available"
    assert status == json.loads(m.read("fromfs", "info.json"))
    write_file(m.p("fromfs", "confirm"), "fromfs\n")
    os.rmdir(m.p("fromfs"))
    assert "fromfs" not in cli_list(cli, fc)


def test_cli_provision_shows_in_ls(mount_factory, fake_cloud, dbos_cloud_cli):
    fc, cli = fake_cloud, dbos_cloud_cli
    m = mount_cloud(mount_factory, fc)
    # The CLI waits 5 s before its first status poll; the server settles in 1 s.
    run_cli(cli, fc, "db", "provision", "fromcli", "-U", "cli_user", "-W", "CliPassw0rd")
    assert wait_until(lambda: os.path.isdir(m.p("fromcli")), timeout=5)
    assert m.read("fromcli", "status") == "available\n"
    assert "username: cli_user" in m.read("fromcli", "info")
    # A password reset through the mount is one the CLI's server sees.
    write_file(m.p("fromcli", "password"), "FsPassw0rd_1\n")
    assert fc.instances()["fromcli"]["_password"] == "FsPassw0rd_1"
    # And a destroy through the CLI disappears from the mount.
    run_cli(cli, fc, "db", "destroy", "fromcli")
    assert wait_until(lambda: not os.path.exists(m.p("fromcli")), timeout=5)


def test_cli_and_mount_share_refreshed_credentials(mount_factory, fake_cloud, dbos_cloud_cli):
    """After dbosfs refreshes and rewrites the token, the CLI still works with
    the file (it is the same compact JSON shape the CLI writes)."""
    fc, cli = fake_cloud, dbos_cloud_cli
    m = mount_cloud(mount_factory, fc)
    fc.revoke_tokens()
    os.mkdir(m.p("afterref"))
    assert fc.count("POST /oauth/token") == 1
    assert "afterref" in cli_list(cli, fc)


def test_link_sends_what_cli_db_link_sends(mount_factory, fake_cloud, dbos_cloud_cli):
    """.dbosfs/link and `dbos-cloud db link` post the same body; the CLI's
    `db unlink` removes what the mount linked, and the mount sees it."""
    fc, cli = fake_cloud, dbos_cloud_cli
    m = mount_cloud(mount_factory, fc)
    run_cli(cli, fc, "db", "link", "clilink", "-H", "db.example.test", "-p", "6543",
            "-W", "Cli_Link_Pass1", "--supabase-ref", "abcdefgh")
    write_file(m.p(".dbosfs", "link"),
               "fslink postgresql://dbosadmin:Fs_Link_Pass1@db.example.test:6543"
               "?supabase_ref=abcdefgh\n")
    srv = fc.instances()
    cli_body, fs_body = srv["clilink"]["_link_body"], srv["fslink"]["_link_body"]
    assert dict(fs_body, Name="clilink") == cli_body
    assert srv["fslink"]["_password"] == "Fs_Link_Pass1"
    run_cli(cli, fc, "db", "unlink", "fslink")
    assert wait_until(lambda: "fslink" not in os.listdir(m.path), timeout=15)
    assert "clilink" in os.listdir(m.path)
