"""TLS on both hops, on the real daemons: the apps -> PgBouncer (client_tls_sslmode require,
PgBouncer's certificate from the internal CA, verified by the client as DATABASE_URL asks)
and PgBouncer -> PostgreSQL (server_tls_sslmode verify-full against the cluster's CA).

The certificates are made here with openssl (harness/tls.py): a stand-in for CNPG's
cluster CA signs PostgreSQL's certificate, a stand-in for the internal CA signs PgBouncer's.
Debian's pgbouncer (1.18) supports every TLS setting the rendered ini uses (they date from
1.7); the deployed image is 1.24.
"""

from __future__ import annotations

import dataclasses
import shutil
import urllib.parse
from pathlib import Path

import psycopg
import pytest

from tikit import names
from tikit import settings
from tikit.components import pgbouncer as pgb
from tikit.conf.pgbouncer import DEFAULT_ADMIN_USER
from conftest import unavailable
from harness import postgres as pgd
from harness import tls

pytestmark = pytest.mark.integration

STACK = "prod"


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
        yield t


def test_rendered_ini_asks_for_tls_on_both_hops(tier):
    ini = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in tier.ini.splitlines()) if _}
    assert ini["server_tls_sslmode"] == "verify-full"
    assert ini["client_tls_sslmode"] == "require"
    assert ini["server_tls_ca_file"] == str(tier.pki.cluster_ca.cert)


def test_the_app_connection_is_tls_verified_end_to_end(tier):
    with tier.via_pgbouncer() as conn, tier.admin_console(DEFAULT_ADMIN_USER) as admin:
        # App -> PgBouncer: TLS, the certificate verified against the internal CA.
        assert conn.pgconn.ssl_in_use
        # PgBouncer -> PostgreSQL: the server side of this very session is a TLS connection.
        ssl, version = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        # ... and PgBouncer's own view of both sides (SHOW CLIENTS / SERVERS, column tls).
        clients = admin.execute("SHOW CLIENTS")
        tls_col = [d.name for d in clients.description].index("tls")
        client_tls = {r[tls_col] for r in clients.fetchall()}
        servers = admin.execute("SHOW SERVERS")
        server_tls = {r[[d.name for d in servers.description].index("tls")] for r in servers.fetchall()}
    assert ssl is True and version in ("TLSv1.2", "TLSv1.3")
    assert client_tls and all(t.startswith(("TLSv1.2/", "TLSv1.3/")) for t in client_tls), client_tls
    assert server_tls and all(t.startswith(("TLSv1.2/", "TLSv1.3/")) for t in server_tls), server_tls
    with tier.pg.connect() as conn:
        # Every server connection PgBouncer holds is TLS, none plaintext.
        rows = conn.execute("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                            "WHERE a.usename = %s", (tier.app_user,)).fetchall()
    assert rows and all(r[0] for r in rows)


def test_plaintext_clients_are_refused(tier):
    with pytest.raises(psycopg.OperationalError, match="(?i)ssl"):
        tier.via_pgbouncer(sslmode="disable")


def test_a_client_verifies_pgbouncers_certificate(tier):
    # Not signed by the CA the client trusts: CNPG's cluster CA never signs PgBouncer.
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        tier.via_pgbouncer(sslrootcert=str(tier.pki.cluster_ca.cert))
    # Signed by the right CA but for other names: verify-full checks the host name too.
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        tier.via_pgbouncer(host="pgbouncer-rw.elsewhere.svc.cluster.local", hostaddr=pgd.HOST)


def test_database_url_carries_verify_full_and_the_ca(tier):
    """The rendered URL's query is what libpq-style clients (psql, node-postgres) obey; only
    the host, the port and the CA file's path are this machine's."""
    rendered = pgb.database_url(names.PG_OWNER, "pw", names.PGBOUNCER_RW, "tikit", names.PG_DATABASE)
    url = urllib.parse.urlsplit(rendered)
    query = dict(urllib.parse.parse_qsl(url.query))
    assert query == {"sslmode": "verify-full", "sslrootcert": names.DATABASE_CA_FILE}
    assert (url.hostname, url.port) == (names.service_host(names.PGBOUNCER_RW, "tikit"), names.PGBOUNCER_PORT)

    def local(sslrootcert: str) -> str:
        q = urllib.parse.urlencode({**query, "sslrootcert": sslrootcert})
        password = urllib.parse.quote(tier.passwords[tier.app_user], safe="")
        return f"postgresql://{tier.app_user}:{password}@{pgd.HOST}:{tier.pb.port}{url.path}?{q}"

    with psycopg.connect(local(str(tier.pki.internal_ca.cert)), connect_timeout=5) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user").fetchone()[0] == tier.app_user
    # Without the CA file the URL names, the client refuses to connect.
    with pytest.raises(psycopg.OperationalError, match="root certificate file"):
        psycopg.connect(local("/nonexistent/ca.crt"), connect_timeout=5)


def _refused_by_pgbouncer(t: pgd.PgTier) -> str:
    """A client of a pool whose PostgreSQL PgBouncer cannot verify never gets a server
    connection (PgBouncer retries every server_login_retry, the client times out); no
    plaintext fallback reaches PostgreSQL.  Returns PgBouncer's log, which says why."""
    with pytest.raises(psycopg.OperationalError, match="timeout"):
        with t.via_pgbouncer(connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    with t.pg.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (t.app_user,)).fetchone()[0] == 0
    return t.pb.log_text()


def test_pgbouncer_refuses_a_postgres_it_cannot_verify(binaries, pg_template):
    s = settings.load({}, stack=STACK)
    root = pgd.private_dir("tikit-pki-wrong-")
    try:
        base = pgd.TierPki.make(root)
        other = tls.ca(root, "other-ca", "not the cluster CA")
        cases = (
            # PostgreSQL's certificate is signed by another CA than server_tls_ca_file.
            (dataclasses.replace(base, postgres=tls.issue(root, other, "pg-other", ips=[pgd.HOST])),
             "certificate verify failed"),
            # Signed by the cluster CA, but for other names than the host PgBouncer dials.
            (dataclasses.replace(base, postgres=tls.issue(root, base.cluster_ca, "pg-named", dns=["pg-london-rw"])),
             "not present in server certificate"),
        )
        pgd.give_to_daemon_user(root)
        for pki, why in cases:
            with pgd.pg_tier(pg_template, binaries[1], s, pki=pki) as t:
                log = _refused_by_pgbouncer(t)
            assert "TLS handshake error" in log and why in log, log[-1500:]
    finally:
        shutil.rmtree(root, ignore_errors=True)
