"""Compatibility suite (issue 8): `echo APP > NAME/migrate` and NAME/rollback
with the migration tools of DBOS's own templates, run for real: Knex,
TypeORM and drizzle-kit from npm, Alembic from Debian. For each tool:
migrate, migrate again (a no-op), rollback, and a failing migration, with
the resulting schema and the tool's bookkeeping read back through psql.
Then the official CLI (`npx dbos migrate`, @dbos-inc/dbos-sdk) and dbosfs
migrate the same app on two fresh instances and the schemas are compared.

One mount for the module and one instance for all four tools (each has its
own application database); each test brings its tool's database to the
newest migration first, so tests also pass alone (-k)."""
import dataclasses
import errno
import json
import os
import re
import shutil
import subprocess
import textwrap

import pytest

from conftest import errno_of, pg_env, psql, write_file
from npm_apps import copy_app, fixture_modules


# ---------------------------------------------------------------- tools

@dataclasses.dataclass
class Tool:
    id: str
    fixture: str
    npm_bin: str            # the fixture's node_modules/.bin entry, or "" (not npm)
    db: str                 # the application database dbosfs derives from `name`
    bookkeeping: tuple      # the tool's own tables, schema-qualified
    book_sql: str           # what the tool has recorded as applied
    book_head: list
    book_rolled_back: list
    tables_head: dict       # application tables -> columns, after migrate
    tables_rolled_back: dict
    indexes_head: set       # indexes of the application tables
    indexes_rolled_back: set
    applied_text: str       # in the report of a run that applies migrations
    noop_text: str          # in the report of a run that has nothing to do
    broken: dict            # files (relative to the app) that add a failing migration
    failure_text: str = "no_such_table"   # in the report of the failing run
    applied_only: bool = True  # applied_text is absent from a no-op run's report


GREETINGS_HEAD = {"public.greetings": ["greet_count", "name", "greeted_at"]}
GREETINGS_BACK = {"public.greetings": ["greet_count", "name"]}
GREETINGS_INDEXES_HEAD = {"public.greetings_pkey", "public.greetings_name_idx"}
GREETINGS_INDEXES_BACK = {"public.greetings_pkey"}

TOOLS = [
    Tool(
        id="knex", fixture="knex-app", npm_bin="knex", db="knex_app",
        bookkeeping=("public.knex_migrations", "public.knex_migrations_lock"),
        book_sql="SELECT name FROM knex_migrations ORDER BY id",
        book_head=["20240101000000_create_customers.js", "20240102000000_create_orders.js"],
        book_rolled_back=[],   # migrate:rollback undoes the last batch: both
        tables_head={"public.customers": ["id", "name", "created_at"],
                     "public.orders": ["id", "customer_id", "amount"]},
        tables_rolled_back={},
        indexes_head={"public.customers_pkey", "public.orders_pkey"},
        indexes_rolled_back=set(),
        applied_text="Batch 1 run: 2 migrations", noop_text="Already up to date",
        broken={"migrations/20240103000000_broken.js": """\
            exports.up = async (knex) => {
              await knex.schema.createTable('broken_half', (t) => t.integer('x'));
              await knex.raw('SELECT * FROM no_such_table');
            };
            exports.down = async () => {};
            """}),
    Tool(
        id="typeorm", fixture="typeorm-app", npm_bin="typeorm", db="typeorm_app",
        bookkeeping=("public.migrations",),
        book_sql="SELECT name FROM migrations ORDER BY id",
        book_head=["CreateGreetings1714000000001", "AddGreetedAt1714000000002"],
        book_rolled_back=["CreateGreetings1714000000001"],  # migration:revert: the last one
        tables_head=GREETINGS_HEAD, tables_rolled_back=GREETINGS_BACK,
        indexes_head=GREETINGS_INDEXES_HEAD, indexes_rolled_back=GREETINGS_INDEXES_BACK,
        applied_text="Migration AddGreetedAt1714000000002 has been executed successfully.",
        noop_text="No migrations are pending",
        broken={"dist/migrations/1714000000003-Broken.js": """\
            class Broken1714000000003 {
              async up(queryRunner) {
                await queryRunner.query('CREATE TABLE broken_half (x int)');
                await queryRunner.query('SELECT * FROM no_such_table');
              }
              async down() {}
            }
            module.exports = { Broken1714000000003 };
            """}),
    Tool(
        id="drizzle", fixture="drizzle-app", npm_bin="drizzle-kit", db="drizzle_app",
        bookkeeping=("drizzle.__drizzle_migrations",),
        book_sql="SELECT created_at FROM drizzle.__drizzle_migrations ORDER BY id",
        book_head=["1714000000001", "1714000000002"],
        book_rolled_back=["1714000000001"],   # drizzle/rollback.sql: the newest one
        tables_head=GREETINGS_HEAD, tables_rolled_back=GREETINGS_BACK,
        indexes_head=GREETINGS_INDEXES_HEAD, indexes_rolled_back=GREETINGS_INDEXES_BACK,
        # drizzle-kit prints the same line whether or not anything was new;
        # the bookkeeping rows tell the runs apart.
        applied_text="migrations applied successfully", noop_text="", applied_only=False,
        broken={"drizzle/0002_broken.sql": """\
            CREATE TABLE "broken_half" ("x" integer);--> statement-breakpoint
            SELECT * FROM no_such_table;
            """,
                "drizzle/meta/_journal.json": None},   # made by add_broken()
        # drizzle-kit 0.31 exits 1 without printing the database's error
        # when its output is not a terminal (also when run by hand so).
        failure_text="applying migrations"),
    Tool(
        id="alembic", fixture="alembic-app", npm_bin="", db="alembic_app",
        bookkeeping=("public.alembic_version",),
        book_sql="SELECT version_num FROM alembic_version",
        book_head=["0002"], book_rolled_back=["0001"],   # downgrade -1
        tables_head=GREETINGS_HEAD, tables_rolled_back=GREETINGS_BACK,
        indexes_head=GREETINGS_INDEXES_HEAD, indexes_rolled_back=GREETINGS_INDEXES_BACK,
        applied_text="Running upgrade 0001 -> 0002", noop_text="Will assume transactional DDL",
        broken={"migrations/versions/0003_broken.py": """\
            import sqlalchemy as sa
            from alembic import op

            revision = "0003"
            down_revision = "0002"


            def upgrade():
                op.create_table("broken_half", sa.Column("x", sa.Integer))
                op.execute("SELECT * FROM no_such_table")


            def downgrade():
                pass
            """}),
]


def add_broken(tool, app):
    """Adds TOOL's failing migration to the app copy APP."""
    for rel, text in tool.broken.items():
        if text is not None:
            (app / rel).write_text(textwrap.dedent(text))
    if tool.id == "drizzle":
        journal_path = app / "drizzle" / "meta" / "_journal.json"
        journal = json.loads(journal_path.read_text())
        journal["entries"].append({"idx": 2, "version": "7", "when": 1714000000003,
                                   "tag": "0002_broken", "breakpoints": True})
        journal_path.write_text(json.dumps(journal, indent=2))


# ---------------------------------------------------------------- helpers

def run_write(m, name, what, app):
    """echo APP > NAME/what: the errno, None on success."""
    return errno_of(write_file, m.p(name, what), f"{app}\n")


SCHEMA_COLUMNS = """
SELECT c.table_schema || '.' || c.table_name, c.column_name
  FROM information_schema.columns c
  JOIN information_schema.tables t USING (table_schema, table_name)
 WHERE t.table_type = 'BASE TABLE'
   AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
 ORDER BY 1, c.ordinal_position"""
SCHEMA_INDEXES = """
SELECT schemaname || '.' || tablename, schemaname || '.' || indexname FROM pg_indexes
 WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"""


def db_state(m, name, tool):
    """What psql sees in the tool's database: tables with their columns,
    the application tables' index names, and the tool's bookkeeping rows
    (None: no bookkeeping tables)."""
    tables = {}
    for line in psql(m, name, SCHEMA_COLUMNS, database=tool.db).stdout.splitlines():
        table, _, column = line.partition("|")
        tables.setdefault(table, []).append(column)
    indexes = set()
    for line in psql(m, name, SCHEMA_INDEXES, database=tool.db).stdout.splitlines():
        table, _, index = line.partition("|")
        if table not in tool.bookkeeping:
            indexes.add(index)
    book = None
    if set(tool.bookkeeping) <= set(tables):
        book = psql(m, name, tool.book_sql, database=tool.db).stdout.split()
    return {"tables": tables, "indexes": indexes, "book": book}


def app_tables(state, tool):
    return {t: c for t, c in state["tables"].items() if t not in tool.bookkeeping}


def assert_head(state, tool):
    assert app_tables(state, tool) == tool.tables_head
    assert set(tool.bookkeeping) <= set(state["tables"]), state["tables"]
    assert state["indexes"] == tool.indexes_head
    assert state["book"] == tool.book_head


class Workspace:
    """The module's instances and app copies."""

    def __init__(self, mount, tmp):
        self.m, self.tmp = mount, tmp
        self.names = {}
        self.first = {}   # tool id -> (errno, report, last_error) of the first migrate

    def instance(self, key):
        if key not in self.names:
            name = f"c{os.getpid() % 1000}_{key}"[:16]
            self.m.mkdir(name)
            self.names[key] = name
        return self.names[key]

    def app(self, tool):
        dest = self.tmp / tool.id
        if not (dest / tool.fixture).exists():
            dest.mkdir(exist_ok=True)
            modules = fixture_modules(tool.fixture, tool.npm_bin) if tool.npm_bin else None
            copy_app(tool.fixture, dest, modules)
        return dest / tool.fixture

    def at_head(self, tool):
        """The tool's instance with every migration applied: the first call
        runs the first migrate and keeps its outcome for test_migrate."""
        if not tool.npm_bin and not shutil.which("alembic"):
            pytest.fail("alembic is not installed (scripts/deps.sh installs Debian's "
                        "alembic, python3-alembic and python3-psycopg2)")
        app = self.app(tool)
        # The tools share one instance: each has its own application database.
        name = self.instance("tools")
        if tool.id not in self.first:
            e = run_write(self.m, name, "migrate", app)
            self.first[tool.id] = (e, self.m.read(name, "migrate"),
                                   self.m.read(name, "last_error"))
        e, report, err = self.first[tool.id]
        assert e is None, f"first migrate failed: {err}\n{report}"
        return name, app


@pytest.fixture(scope="module")
def ws(shared_local, tmp_path_factory):
    w = Workspace(shared_local, tmp_path_factory.mktemp("compat"))
    # No rmdir at the end: the module's mount and its state go as a whole.
    return w


tool_params = pytest.mark.parametrize("tool", TOOLS, ids=[t.id for t in TOOLS])


# ---------------------------------------------------------------- per tool

@tool_params
def test_migrate(ws, tool):
    name, app = ws.at_head(tool)
    _, report, _ = ws.first[tool.id]
    assert report.startswith(f"migrate {app} (dbos-config.yaml), database {tool.db}")
    assert f"created database {tool.db}\n" in report
    assert tool.applied_text in report
    assert "exit status: 0\n" in report
    assert report.endswith("result: ok (1 command)\n")
    assert_head(db_state(ws.m, name, tool), tool)


@tool_params
def test_migrate_again_is_a_noop(ws, tool):
    name, app = ws.at_head(tool)
    before = db_state(ws.m, name, tool)
    assert run_write(ws.m, name, "migrate", app) is None, ws.m.read(name, "last_error")
    report = ws.m.read(name, "migrate")
    assert tool.noop_text in report
    if tool.applied_only:
        assert tool.applied_text not in report
    assert "created database" not in report
    assert report.endswith("result: ok (1 command)\n")
    after = db_state(ws.m, name, tool)
    assert after == before
    assert_head(after, tool)


@tool_params
def test_rollback_then_migrate(ws, tool):
    name, app = ws.at_head(tool)
    assert run_write(ws.m, name, "rollback", app) is None, ws.m.read(name, "last_error")
    rb = ws.m.read(name, "rollback")
    assert rb.startswith(f"rollback {app} (dbos-config.yaml), database {tool.db}")
    assert rb.endswith("result: ok (1 command)\n")
    state = db_state(ws.m, name, tool)
    assert app_tables(state, tool) == tool.tables_rolled_back
    assert state["indexes"] == tool.indexes_rolled_back
    assert state["book"] == tool.book_rolled_back
    # The tool's bookkeeping agrees: migrate applies what was rolled back.
    assert run_write(ws.m, name, "migrate", app) is None, ws.m.read(name, "last_error")
    assert tool.applied_text in ws.m.read(name, "migrate")
    assert_head(db_state(ws.m, name, tool), tool)


@tool_params
def test_failing_migration(ws, tool, tmp_path):
    name, _ = ws.at_head(tool)
    before = db_state(ws.m, name, tool)
    # A copy of the app with one more migration, which fails half-way.
    broken_app = copy_app(tool.fixture, tmp_path,
                          fixture_modules(tool.fixture, tool.npm_bin) if tool.npm_bin
                          else None)
    add_broken(tool, broken_app)
    assert run_write(ws.m, name, "migrate", broken_app) == errno.EIO
    report = ws.m.read(name, "migrate")
    assert tool.failure_text in report
    assert re.search(r"\nexit status: [1-9]\d*\n", report), report
    assert re.search(r"result: failed: command 1 of 1 exited with status [1-9]\d*\n$", report)
    err = ws.m.read(name, "last_error")
    assert "command 1 of 1" in err and "exited with status" in err, err
    # Each tool runs the batch in one transaction: nothing of it stays.
    assert db_state(ws.m, name, tool) == before
    # The instance and the tool recover: the good app is up to date.
    assert run_write(ws.m, name, "migrate", ws.app(tool)) is None
    assert_head(db_state(ws.m, name, tool), tool)


def test_python_template_database_url(ws, tmp_path):
    """DBOS's Python template says `database_url: ${DBOS_DATABASE_URL}`. With
    the variable unset, the official tooling falls back to `name`."""
    tool = next(t for t in TOOLS if t.id == "alembic")
    name, _ = ws.at_head(tool)
    app = copy_app(tool.fixture, tmp_path)
    config = app / "dbos-config.yaml"
    config.write_text(config.read_text().replace(
        "language: python\n", "language: python\ndatabase_url: ${DBOS_DATABASE_URL}\n"))
    assert "DBOS_DATABASE_URL" not in os.environ
    assert run_write(ws.m, name, "migrate", app) is None, ws.m.read(name, "last_error")
    assert ws.m.read(name, "migrate").startswith(
        f"migrate {app} (dbos-config.yaml), database {tool.db}")
    assert_head(db_state(ws.m, name, tool), tool)


# ---------------------------------------------------------------- official CLI

SDK_APP_DB = "dbos_sdk_app"
SDK_SYS_DB = "dbos_sdk_app_dbos_sys"


def client_env(m, name):
    """A shell's environment after `source <(sed 's/^/export /' NAME/env)` and
    PGPASSWORD=$(cat NAME/password), with nothing else of ours."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "DBOS", "NODE_"))}
    for line in m.read(name, "env").splitlines():
        k, _, v = line.partition("=")
        env[k] = v
    env["PGPASSWORD"] = m.read(name, "password").strip()
    return env


def schema_dump(m, name, db):
    """pg_dump --schema-only of DB, without what differs between two
    otherwise equal databases (comments, settings, dump keys)."""
    r = subprocess.run(["pg_dump", "--schema-only", "--no-owner", "--no-privileges", db],
                       env=pg_env(m, name, db), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    keep = []
    for line in r.stdout.splitlines():
        if (not line.strip() or line.startswith(("--", "SET ", "\\restrict", "\\unrestrict"))
                or line.startswith("SELECT pg_catalog.set_config")):
            continue
        keep.append(line)
    return "\n".join(keep)


def databases(m, name):
    r = psql(m, name, "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")
    return r.stdout.split()


@pytest.fixture(scope="module")
def sdk_pair(ws):
    """The dbos-sdk-app migrated by `npx dbos migrate` on one fresh instance
    and by `echo APP > NAME/migrate` on another: (mount, official, dbosfs)."""
    modules = fixture_modules("dbos-sdk-app", "dbos")
    dest = ws.tmp / "sdk"
    dest.mkdir(exist_ok=True)
    app = copy_app("dbos-sdk-app", dest, modules)
    official, ours = ws.instance("sdk_cli"), ws.instance("sdk_fs")

    env = client_env(ws.m, official)
    # What a DBOS developer does by hand: the official CLI creates only the
    # system database, and DBOS Cloud hands the app its URL.
    psql(ws.m, official, f"CREATE DATABASE {SDK_APP_DB}")
    host = env["PGHOST"]
    host = f"[{host}]" if ":" in host else host
    env["DBOS_DATABASE_URL"] = (f"postgresql://{env['PGUSER']}:{env['PGPASSWORD']}@{host}:"
                                f"{env['PGPORT']}/{SDK_APP_DB}")
    if "PGSSLMODE" not in env:
        # A server without TLS (before issue 12): the SDK would ask for it.
        env["PGSSLMODE"] = "disable"
    r = subprocess.run(["npx", "dbos", "migrate"], cwd=app, env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, f"npx dbos migrate failed:\n{r.stdout}\n{r.stderr}"
    assert "Batch 1 run: 1 migrations" in r.stdout

    assert run_write(ws.m, ours, "migrate", app) is None, ws.m.read(ours, "last_error")
    return ws.m, official, ours


def test_official_cli_same_app_schema(sdk_pair):
    m, official, ours = sdk_pair
    theirs = schema_dump(m, official, SDK_APP_DB)
    assert "CREATE TABLE public.greetings" in theirs
    assert "CREATE TABLE public.knex_migrations" in theirs
    assert schema_dump(m, ours, SDK_APP_DB) == theirs


def test_official_cli_same_databases(sdk_pair):
    m, official, ours = sdk_pair
    assert SDK_SYS_DB in databases(m, official)
    assert databases(m, ours) == databases(m, official)


def test_official_cli_same_system_database_schema(sdk_pair):
    m, official, ours = sdk_pair
    theirs = schema_dump(m, official, SDK_SYS_DB)
    assert "CREATE TABLE dbos.workflow_status" in theirs
    assert schema_dump(m, ours, SDK_SYS_DB) == theirs


def test_official_cli_idiom_in_app_directory(sdk_pair, ws):
    """Where a developer types `npx dbos migrate`, `echo . > NAME/migrate`
    does the same."""
    m, _, ours = sdk_pair
    app = ws.tmp / "sdk" / "dbos-sdk-app"
    r = subprocess.run(["bash", "-c", f"cd {app} && echo . > {m.p(ours, 'migrate')}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + m.read(ours, "last_error")
    assert "Already up to date" in m.read(ours, "migrate")
