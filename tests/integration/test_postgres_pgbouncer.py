"""The PostgreSQL tier on real daemons: PostgreSQL runs every preset's rendered parameters,
and PgBouncer runs the rendered pgbouncer.ini in front of it, authenticates with the SCRAM
verifiers from userlist.txt and carries 1000 concurrent clients on at most
default_pool_size + reserve_pool_size server connections without breaking transactions.

The text the daemons read is what the cluster gets; the only differences are where they
listen, where PostgreSQL is, and file paths (asserted in test_local_ini_differs_...).
"""

from __future__ import annotations

import base64
import math
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Optional

import psycopg
import pytest
from psycopg import sql

from tikit import settings
from tikit.components import pgbouncer as pgb
from tikit.conf.pgbouncer import (
    DEFAULT_ADMIN_USER,
    DEFAULT_STATS_USER,
    MAX_PREPARED_STATEMENTS,
    MAX_PREPARED_STATEMENTS_SINCE,
    POOL_MODE,
    pgbouncer_ini,
    scram_sha256_verifier,
)
from tikit.conf.postgres import postgres_parameters
from conftest import unavailable
from harness import postgres as pgd

pytestmark = pytest.mark.integration

STACK = "prod"  # the PgBouncer tests run the production preset
# Enough work that all 1000 clients stay connected for a few seconds after they log in.
TRANSACTIONS_PER_CLIENT = 10
CLUSTER_ARGS = dict(host="pg-lagos-rw.tikit.svc.cluster.local", port=5432, listen_port=6432,
                    auth_file="/etc/pgbouncer/auth/userlist.txt", tls=pgb.TLS_FILES)


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binaries() -> tuple[Path, str]:
    missing = pgd.missing_binaries()
    if missing:
        unavailable("missing daemon binaries: " + "; ".join(missing))
    return pgd.pg_bin_dir(), pgd.pgbouncer_bin()


@pytest.fixture(scope="module")
def pg_template(binaries):
    template = pgd.PgTemplate(binaries[0])
    yield template
    template.cleanup()


@pytest.fixture(scope="module")
def tier(binaries, pg_template):
    with pgd.pg_tier(pg_template, binaries[1], settings.load({}, stack=STACK)) as t:
        with t.direct() as conn:
            conn.execute("CREATE TABLE pool_check (client_id int NOT NULL, xid bigint NOT NULL, kept boolean NOT NULL)")
            conn.execute("""
                CREATE FUNCTION check_ok(ok boolean, client int) RETURNS void LANGUAGE plpgsql AS $$
                BEGIN
                    IF NOT ok THEN
                        RAISE EXCEPTION 'client % did not see its own row inside its transaction', client;
                    END IF;
                END $$""")
        yield t


# --------------------------------------------------------------------------------------
# PostgreSQL runs every preset's parameters
# --------------------------------------------------------------------------------------

_MEMORY = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def _unit_size(unit: str) -> float:
    """pg_settings.unit ('8kB', 'kB', 'ms', 's', ...) in bytes or milliseconds."""
    m = re.fullmatch(r"(\d*)([A-Za-z]+)", unit)
    return int(m.group(1) or 1) * (_MEMORY.get(m.group(2)) or _TIME_MS[m.group(2)])


def same_value(rendered: str, setting: str, unit: Optional[str], vartype: str) -> bool:
    """Whether PostgreSQL's setting (in its base unit) equals the rendered string."""
    if vartype == "bool":
        truthy = {"on", "true", "yes", "1"}
        return (rendered.lower() in truthy) == (setting.lower() in truthy)
    if vartype in ("integer", "real"):
        m = re.fullmatch(r"\s*(-?[0-9.]+)\s*([A-Za-z]*)\s*", rendered)
        assert m, f"cannot read {rendered!r} as a number"
        number, suffix = float(m.group(1)), m.group(2)
        if not unit:
            return not suffix and math.isclose(number, float(setting))
        size = _unit_size(unit)
        expected = number * ((_MEMORY.get(suffix) or _TIME_MS[suffix]) if suffix else size)
        return math.isclose(expected, float(setting) * size)
    return rendered.lower() == setting.lower()


@pytest.mark.parametrize(
    "rendered, setting, unit, vartype, same",
    [("2048MB", "262144", "8kB", "integer", True), ("2048", "262144", "8kB", "integer", False),
     ("60s", "60000", "ms", "integer", True), ("1000", "1000", "ms", "integer", True),
     ("10MB", "10240", "kB", "integer", True), ("0.9", "0.9", None, "real", True),
     ("on", "on", None, "bool", True), ("on", "off", None, "bool", False),
     ("scram-sha-256", "scram-sha-256", None, "enum", True)],
)
def test_same_value_compares_in_base_units(rendered, setting, unit, vartype, same):
    assert same_value(rendered, setting, unit, vartype) is same


@pytest.mark.parametrize("stack", settings.ENVIRONMENTS)
def test_postgres_runs_the_rendered_parameters(pg_template, stack):
    s = settings.load({}, stack=stack)
    params = postgres_parameters(s.postgres, s.derived)
    with pgd.PostgresServer(pg_template, params) as pg, pg.connect() as conn:
        bad_lines = conn.execute(
            "SELECT name, setting, error FROM pg_file_settings"
            " WHERE sourcefile LIKE '%%/tikit.conf' AND (error IS NOT NULL OR NOT applied)").fetchall()
        assert bad_lines == []
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT name, setting, unit, vartype, source, sourcefile FROM pg_settings WHERE name = ANY(%s)",
                (list(params),),
            )
        }
        assert sorted(rows) == sorted(params), "every rendered name is a real parameter"
        for name, value in params.items():
            setting, unit, vartype, source, sourcefile = rows[name]
            # From our file, not a default or the harness's command line.
            assert (source, Path(sourcefile).name) == ("configuration file", "tikit.conf"), name
            assert same_value(value, setting, unit, vartype), f"{name}: rendered {value!r}, server has {setting} {unit}"


# --------------------------------------------------------------------------------------
# PgBouncer: the rendered ini, SCRAM verifiers, the admin console
# --------------------------------------------------------------------------------------


def test_local_ini_differs_from_the_cluster_ini_only_in_addresses_and_paths(tier):
    cluster = pgbouncer_ini(tier.s.pgbouncer, database=tier.database, **CLUSTER_ARGS)
    local, remote = tier.rendered.splitlines(), cluster.splitlines()
    assert len(local) == len(remote)
    changed = {a.split("=", 1)[0].strip() for a, b in zip(local, remote) if a != b}
    assert changed == {tier.database, "listen_addr", "listen_port", "auth_file",
                       "server_tls_ca_file", "client_tls_cert_file", "client_tls_key_file"}
    # The only other change: a PgBouncer older than 1.21 cannot parse max_prepared_statements
    # (1.18 refuses to start on it), so exactly that line goes.
    version = pgd.pgbouncer_version(tier.pb.binary)
    expected = [f"max_prepared_statements = {MAX_PREPARED_STATEMENTS}"]
    assert tier.dropped == (expected if version < MAX_PREPARED_STATEMENTS_SINCE else [])
    assert tier.ini == "".join(f"{line}\n" for line in local if line not in tier.dropped)


def test_verifier_equals_what_postgresql_computes(tier):
    with tier.pg.connect() as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        for i, password in enumerate(["pencil", secrets.token_urlsafe(40), "p\u00e4ss w\u00f6rd", "\uff50\u00a0x\u00ad"]):
            role = f"verifier_check_{i}"
            conn.execute(sql.SQL("CREATE ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
            try:
                stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()[0]
            finally:
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
            iterations, salt = stored.split("$")[1].split(":")
            assert scram_sha256_verifier(password, base64.b64decode(salt), int(iterations)) == stored


def test_role_holds_our_verifier_and_the_plaintext_logs_in(tier):
    with tier.pg.connect() as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (tier.app_user,)).fetchone()[0]
    assert stored == tier.verifiers[tier.app_user]
    with tier.direct() as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == tier.app_user
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        tier.pg.connect(user=tier.app_user, password="wrong", dbname=tier.database)


def test_app_logs_in_through_pgbouncer_with_scram(tier):
    with tier.via_pgbouncer() as conn:
        user, port = conn.execute("SELECT current_user, inet_server_port()").fetchone()
    assert (user, port) == (tier.app_user, tier.pg.port)  # PgBouncer logged in to PostgreSQL as the app
    with pytest.raises(psycopg.OperationalError, match="SASL authentication failed"):
        tier.via_pgbouncer(password="wrong")


def test_orm_startup_parameters_are_accepted(tier):
    # Prisma sends `options`; without ignore_startup_parameters PgBouncer refuses the login.
    with tier.via_pgbouncer(options="-c geqo=off") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_admin_console_runs_the_rendered_pool_settings(tier):
    with tier.admin_console(DEFAULT_STATS_USER) as conn:
        config = {row[0]: row[1] for row in conn.execute("SHOW CONFIG")}
        pools = conn.execute("SHOW POOLS").fetchall()
    pb = tier.s.pgbouncer
    assert config["pool_mode"] == POOL_MODE
    assert int(config["max_client_conn"]) == pb.max_client_conn
    assert int(config["default_pool_size"]) == pb.default_pool_size
    assert int(config["reserve_pool_size"]) == pb.reserve_pool_size
    assert float(config["reserve_pool_timeout"]) == pb.reserve_pool_timeout
    assert int(config["max_db_connections"]) == pb.default_pool_size + pb.reserve_pool_size
    assert config["server_reset_query_always"] == "0"
    assert config["auth_type"] == "scram-sha-256"
    assert pools, "SHOW POOLS answers the stats user (the exporter)"


def test_stats_user_cannot_administer(tier):
    with tier.admin_console(DEFAULT_STATS_USER) as conn, pytest.raises(psycopg.Error, match="admin access needed"):
        conn.execute("PAUSE")
    with tier.admin_console(DEFAULT_ADMIN_USER) as conn:
        conn.execute("RELOAD")  # the admin user may


# --------------------------------------------------------------------------------------
# 1000 concurrent clients
# --------------------------------------------------------------------------------------

# One committed and one rolled-back transaction per run of the script.  The committed row must
# be visible inside its own transaction: every statement of a transaction ran on the same
# server connection, or txid_current() would differ and check_ok() would raise.
PGBENCH_SCRIPT = """\
BEGIN;
INSERT INTO pool_check (client_id, xid, kept) VALUES (:client_id, txid_current(), true);
SELECT check_ok(count(*) = 1, :client_id) FROM pool_check WHERE client_id = :client_id AND xid = txid_current();
COMMIT;
BEGIN;
INSERT INTO pool_check (client_id, xid, kept) VALUES (:client_id, txid_current(), false);
ROLLBACK;
"""


class LoadObserver(threading.Thread):
    """Watches a pgbench run from outside PgBouncer: PostgreSQL's pg_stat_activity for server
    connections, the kernel's socket table for client connections (neither adds a PgBouncer
    client).  At the client limit it checks that PgBouncer refuses one more client and that
    the admin console still answers (admin logins are exempt from max_client_conn)."""

    def __init__(self, tier: pgd.PgTier, clients: int) -> None:
        super().__init__(daemon=True)
        self.tier, self.clients = tier, clients
        self.done = threading.Event()
        self.samples = 0
        self.max_server_connections = 0
        self.max_client_connections = 0
        self.refused: Optional[str] = None
        self.pool_clients_at_limit: Optional[int] = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            with self.tier.pg.connect() as conn:
                while not self.done.is_set():
                    n = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend'",
                        (self.tier.app_user,),
                    ).fetchone()[0]
                    self.max_server_connections = max(self.max_server_connections, n)
                    clients = pgd.established_connections(self.tier.pb.port)
                    self.max_client_connections = max(self.max_client_connections, clients)
                    self.samples += 1
                    if clients >= self.clients and self.refused is None:
                        self._at_the_limit()
                    time.sleep(0.01)
        except BaseException as e:  # surfaced by the test
            self.error = e

    def _at_the_limit(self) -> None:
        # Established in the kernel is not yet accepted by PgBouncer: give the last pgbench
        # logins a moment, or our extra client could take the 1000th slot instead.
        time.sleep(0.5)
        try:
            self.tier.via_pgbouncer().close()
            self.refused = "(accepted)"
        except psycopg.OperationalError as e:
            self.refused = str(e)
        with self.tier.admin_console(DEFAULT_STATS_USER) as admin:
            for row in admin.execute("SHOW POOLS"):
                if row[0] == self.tier.database and row[1] == self.tier.app_user:
                    self.pool_clients_at_limit = row[2] + row[3]  # cl_active + cl_waiting


def test_1000_clients_share_the_pool_without_breaking_transactions(tier, binaries, tmp_path):
    bin_dir, _ = binaries
    pb = tier.s.pgbouncer
    clients = pb.max_client_conn  # exactly the limit: PgBouncer admits clients while count <= limit
    assert clients == 1000
    script = tmp_path / "pool_check.sql"
    script.write_text(PGBENCH_SCRIPT)

    observer = LoadObserver(tier, clients)
    observer.start()
    started = time.monotonic()
    try:
        run = pgd.run_pgbench(
            bin_dir,
            ["--no-vacuum", f"--client={clients}", "--jobs=2", f"--transactions={TRANSACTIONS_PER_CLIENT}",
             f"--file={script}"],
            port=tier.pb.port, user=tier.app_user, password=tier.passwords[tier.app_user], dbname=tier.database,
        )
    finally:
        observer.done.set()
        observer.join(10)
    elapsed = time.monotonic() - started
    report = f"pgbench exit {run.returncode} after {elapsed:.1f}s\n{run.stdout}\n{run.stderr[-3000:]}\n" \
             f"pgbouncer log:\n{tier.pb.log_text()[-2000:]}"

    # pgbench: every client connected (a failed connection aborts the run) and committed.
    summary = pgd.parse_pgbench(run.stdout)
    assert run.returncode == 0, report
    assert summary["clients"] == clients, report
    assert summary["processed"] == clients * TRANSACTIONS_PER_CLIENT, report
    assert summary["failed"] == 0, report

    # The database: one committed row per client and run, nothing from the rolled-back ones.
    with tier.direct() as conn:
        kept, rolled_back, distinct, lo, hi = conn.execute("""
            SELECT count(*) FILTER (WHERE kept), count(*) FILTER (WHERE NOT kept),
                   (SELECT count(DISTINCT client_id) FROM pool_check),
                   (SELECT min(n) FROM (SELECT count(*) n FROM pool_check GROUP BY client_id) c),
                   (SELECT max(n) FROM (SELECT count(*) n FROM pool_check GROUP BY client_id) c)
            FROM pool_check""").fetchone()
    assert (kept, rolled_back) == (clients * TRANSACTIONS_PER_CLIENT, 0)
    assert (distinct, lo, hi) == (clients, TRANSACTIONS_PER_CLIENT, TRANSACTIONS_PER_CLIENT)

    # PostgreSQL never saw more than the pool's server connections, while 1000 clients were on.
    assert observer.error is None, repr(observer.error)
    assert observer.samples >= 10, f"only {observer.samples} samples in {elapsed:.1f}s"
    assert 0 < observer.max_server_connections <= pb.default_pool_size + pb.reserve_pool_size, report
    assert observer.max_client_connections == clients, report
    # The 1001st client is refused, and the exporter's admin login still gets in.
    assert observer.refused and "no more connections allowed (max_client_conn)" in observer.refused, report
    assert observer.pool_clients_at_limit == clients, report
