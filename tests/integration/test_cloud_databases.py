"""NAME/databases/ on the cloud provider. The stand-in DBOS Cloud serves an
instance whose HostName and Port are a real PostgreSQL that this module
starts (initdb + pg_ctl, TLS with a certificate from the test CA, an admin
role with a password). dbosfs connects to it as the admin with the saved
password, over TLS verified against the mount's CAs (system + cafile)."""
import errno
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "cloud"))
from cloud_harness import (available_instance, cloud_certs, fake_cloud,  # noqa: F401,E402
                           mount_cloud)
from conftest import errno_of, ls_databases, wait_for, write_file  # noqa: E402

BINDIR = sorted(
    (d for d in (f"/usr/lib/postgresql/{v}/bin" for v in os.listdir("/usr/lib/postgresql"))
     if os.path.exists(f"{d}/initdb")),
    key=lambda d: int(d.split("/")[4]))[-1] if os.path.isdir("/usr/lib/postgresql") else None

ADMIN, PASSWORD = "dbos_user", "CloudAdm1n_pw_x7"


def as_server_account():
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)


def run_pg(argv):
    return subprocess.run(argv, preexec_fn=as_server_account, check=True,
                          capture_output=True, text=True, timeout=120)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(cloud_certs):
    """A PostgreSQL on 127.0.0.1 and 127.0.0.2 with TLS (the test CA's server
    certificate, for 127.0.0.1 and localhost only) and an admin that may
    create databases but is not a superuser."""
    if BINDIR is None:
        pytest.skip("no PostgreSQL server binaries")
    base = tempfile.mkdtemp(prefix="dbosfs-cloudpg-", dir="/tmp")
    os.chmod(base, 0o711)
    data, sock = os.path.join(base, "data"), os.path.join(base, "sock")
    os.mkdir(sock, 0o700)
    os.mkdir(data, 0o700)
    if os.geteuid() == 0:
        pgu = pwd.getpwnam("postgres")
        for d in (sock, data):
            os.chown(d, pgu.pw_uid, pgu.pw_gid)
    port = free_port()
    try:
        run_pg([f"{BINDIR}/initdb", "-D", data, "--username=postgres", "--auth-local=trust",
                "--auth-host=scram-sha-256", "--no-sync", "--encoding=UTF8",
                "--locale=C.UTF-8"])
        for src, dst in ((cloud_certs["cert"], "server.crt"), (cloud_certs["key"], "server.key")):
            path = os.path.join(data, dst)
            shutil.copy(src, path)
            os.chmod(path, 0o600)
            if os.geteuid() == 0:
                os.chown(path, pgu.pw_uid, pgu.pw_gid)
        # TLS or nothing from the network: dbosfs's connections must use it.
        with open(os.path.join(data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhostssl all all 127.0.0.0/8 scram-sha-256\n")
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write("\nssl = on\nshared_buffers = 16MB\nmax_connections = 30\n"
                    "logging_collector = off\n")
        run_pg([f"{BINDIR}/pg_ctl", "-D", data, "-w", "-l", os.path.join(sock, "pg.log"),
                "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1,127.0.0.2", "start"])
        run_pg(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", sock, "-p", str(port),
                "-U", "postgres", "-d", "postgres", "-c",
                f"CREATE ROLE {ADMIN} LOGIN CREATEDB PASSWORD '{PASSWORD}'"])
        yield {"port": port, "sock": sock}
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run([f"{BINDIR}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                           preexec_fn=as_server_account, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def admin_sql(server, sql):
    """As the server's superuser, over its socket (not through the mount)."""
    return run_pg(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", server["sock"], "-p",
                   str(server["port"]), "-U", "postgres", "-d", "postgres", "-c",
                   sql]).stdout.strip()


def test_cloud_databases(mount_factory, fake_cloud, server):
    name = "pgdb"
    fake_cloud.add_instances([available_instance(name, HostName="127.0.0.1",
                                                 Port=server["port"],
                                                 DatabaseUsername=ADMIN)])
    m = mount_cloud(mount_factory, fake_cloud)
    dbs = m.p(name, "databases")

    # Made outside the mount: no saved password, so nothing to connect with.
    assert errno_of(ls_databases, m, name) == errno.ENODATA
    err = m.read(name, "last_error")
    assert "no saved password" in err and f"{name}/password" in err, err
    assert errno_of(os.mkdir, os.path.join(dbs, "shop")) == errno.ENODATA

    # Saving it (a reset to the same value on the cloud) opens databases/.
    write_file(m.p(name, "password"), PASSWORD + "\n")
    names = ls_databases(m, name)
    assert "postgres" in names and not any(n.startswith("template") for n in names), names

    # mkdir creates it, owned by the admin.
    os.mkdir(os.path.join(dbs, "shop"))
    assert "shop" in os.listdir(dbs)
    assert admin_sql(server, "SELECT r.rolname FROM pg_database d JOIN pg_roles r "
                     "ON r.oid = d.datdba WHERE d.datname = 'shop'") == ADMIN
    assert sorted(os.listdir(os.path.join(dbs, "shop"))) == ["confirm", "env", "size", "url"]
    url = m.read(name, "databases", "shop", "url").strip()
    assert url == f"postgresql://{ADMIN}@127.0.0.1:{server['port']}/shop", url
    assert "PGDATABASE=shop\n" in m.read(name, "databases", "shop", "env")

    # DB/url works with psql (TLS required, as the admin).
    env = dict(os.environ, PGPASSWORD=PASSWORD, PGSSLMODE="require",
               PGAPPNAME="holder_app")
    r = subprocess.run(["psql", "-X", "-At", url, "-c",
                        "SELECT current_database(), ssl FROM pg_stat_ssl "
                        "WHERE pid = pg_backend_pid()"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "shop|t", r.stdout

    # The list follows the server (made outside the mount).
    admin_sql(server, f"CREATE DATABASE outside OWNER {ADMIN}")
    wait_for(lambda: "outside" in ls_databases(m, name), 30, "outside in the list")

    # Bad names are EINVAL, as on local; postgres cannot be dropped.
    for bad in ["1abc", "Shop", "a-b", "x" * 64]:
        assert errno_of(os.mkdir, os.path.join(dbs, bad)) == errno.EINVAL, bad
    write_file(m.p(name, "databases", "postgres", "confirm"), "postgres\n")
    assert errno_of(os.rmdir, os.path.join(dbs, "postgres")) == errno.EPERM

    # rmdir needs the confirm; while a client is connected it is EBUSY
    # naming the session.
    assert errno_of(os.rmdir, os.path.join(dbs, "shop")) == errno.EBUSY
    assert "needs a confirmation" in m.read(name, "last_error")
    holder = subprocess.Popen(["psql", "-X", "-At", url, "-c", "SELECT pg_sleep(60)"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: admin_sql(server, "SELECT count(*) FROM pg_stat_activity "
                                   "WHERE datname = 'shop'") != "0", 30, "the holder session")
        write_file(m.p(name, "databases", "shop", "confirm"), "shop\n")
        assert errno_of(os.rmdir, os.path.join(dbs, "shop")) == errno.EBUSY
        err = m.read(name, "last_error")
        assert "connected session" in err and "holder_app" in err, err
        assert "shop" in os.listdir(dbs)
    finally:
        holder.kill()
        holder.wait()
        admin_sql(server, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = 'shop'")
    wait_for(lambda: admin_sql(server, "SELECT count(*) FROM pg_stat_activity "
                               "WHERE datname = 'shop'") == "0", 30, "the holder gone")

    # confirm + rmdir drops it.
    write_file(m.p(name, "databases", "shop", "confirm"), "shop\n")
    os.rmdir(os.path.join(dbs, "shop"))
    assert "shop" not in os.listdir(dbs)
    assert admin_sql(server, "SELECT count(*) FROM pg_database WHERE datname = 'shop'") == "0"


def test_cloud_databases_verify_the_server_certificate(mount_factory, fake_cloud, server):
    """sslmode=verify-full: the same server reached by an address its
    certificate does not name is refused, with libpq's reason."""
    fake_cloud.add_instances([available_instance("good", HostName="127.0.0.1",
                                                 Port=server["port"], DatabaseUsername=ADMIN),
                              available_instance("wronghost", HostName="127.0.0.2",
                                                 Port=server["port"], DatabaseUsername=ADMIN)])
    m = mount_cloud(mount_factory, fake_cloud)
    # The CAs the API trusts (system + cafile), written for libpq.
    with open(fake_cloud.ca) as f:
        assert f.read().strip() in (m.state_dir / "cloud-ca.pem").read_text()
    for name in ("good", "wronghost"):
        write_file(m.p(name, "password"), PASSWORD + "\n")
    assert "postgres" in ls_databases(m, "good")
    assert errno_of(ls_databases, m, "wronghost") == errno.EIO
    err = m.read("wronghost", "last_error")
    assert "127.0.0.2" in err and "certificate" in err, err


def test_a_silent_database_server_delays_neither_the_list_nor_other_databases(
        mount_factory, fake_cloud, server):
    """Three instances whose servers accept TCP but never answer (each
    databases/ list then waits out libpq's connect timeout): the instance
    list keeps its period and a good instance's databases/ stays current.
    Before, the lists ran one after the other in the refresher's own thread:
    a new instance showed up only after all of them had timed out."""
    silent = []
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)  # never accepted: the handshake completes, nothing answers
        silent.append(s)
    try:
        fake_cloud.add_instances(
            [available_instance(f"silent{i}", HostName="127.0.0.1",
                                Port=s.getsockname()[1], DatabaseUsername=ADMIN)
             for i, s in enumerate(silent)] +
            [available_instance("good", HostName="127.0.0.1", Port=server["port"],
                                DatabaseUsername=ADMIN)])
        m = mount_cloud(mount_factory, fake_cloud)
        for name in ["silent0", "silent1", "silent2", "good"]:
            write_file(m.p(name, "password"), PASSWORD + "\n")
        assert "postgres" in ls_databases(m, "good")
        for i in range(3):  # wanted from now on: listed every period
            assert errno_of(os.listdir, m.p(f"silent{i}", "databases")) == errno.EAGAIN
        time.sleep(1)  # the silent lists are under way
        fake_cloud.add_instances([available_instance("newcomer")])
        # Three silent servers in a row would hold the list for 3 x 5 s.
        wait_for(lambda: "newcomer" in os.listdir(m.path), 6, "newcomer in ls")
        admin_sql(server, f"CREATE DATABASE later OWNER {ADMIN}")
        wait_for(lambda: "later" in ls_databases(m, "good"), 6, "later in good/databases")
    finally:
        for s in silent:
            s.close()
