"""PgBouncer configuration text: pgbouncer.ini, userlist.txt and SCRAM verifiers.

Pure functions: values in, text out, stable ordering, no I/O and no randomness (the SCRAM
salt is an argument).  The PgBouncer component puts ``pgbouncer_ini`` into a ConfigMap and
``userlist_txt`` into a Secret; the integration tests feed the very same text to a real
pgbouncer in front of a real PostgreSQL (tests/integration/test_postgres_pgbouncer.py).

The ini never holds a secret: passwords live only in userlist.txt, and there only as SCRAM
verifiers.  PgBouncer can log in to PostgreSQL with a verifier (SCRAM pass-through) only when
the client also authenticated with SCRAM, the ``[databases]`` entry names no user, and the
verifier is byte-for-byte the one PostgreSQL stores for the role (same salt and iterations,
not merely the same password).  So the role's password must be set *from this verifier*
(``ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'``), never re-hashed from the plaintext.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import stringprep
import textwrap
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence, Union

from tikit.derived import server_connections_per_pod

if TYPE_CHECKING:
    from tikit.settings import PgBouncer

# The release that introduced max_prepared_statements.  Older ones refuse to start on it
# (1.18: "unknown parameter", FATAL); the deployed image (settings.PgBouncer.image) is 1.25.
MAX_PREPARED_STATEMENTS_SINCE = (1, 21)

# Transaction pooling: the notes' pool_mode, and what the pool sizes assume.
POOL_MODE = "transaction"
# Protocol-level prepared statements tracked per server connection (PgBouncer >= 1.21);
# lets ORM clients keep prepared statements safely in transaction mode.
MAX_PREPARED_STATEMENTS = 200
# Close server connections idle this long (seconds), so quiet pools shrink.
SERVER_IDLE_TIMEOUT_SECONDS = 600
# A client waiting this long (seconds) for a server connection gets an error.
QUERY_WAIT_TIMEOUT_SECONDS = 120

DEFAULT_ADMIN_USER = "pgbouncer_admin"
# The metrics exporter only needs SHOW commands, which stats_users may run.
DEFAULT_STATS_USER = "pgbouncer_exporter"

# Caller-supplied values end up inside `key = value` lines and the libpq-style connection
# string; a space, newline, ';' or '=' in one would let it rewrite the rest of the file.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:/*@+-]+")

Value = Union[str, int]
# (key, value, why): `why` becomes a comment above the setting; None for the obvious ones.
Entry = tuple[str, Value, Union[str, None]]

# PgBouncer -> PostgreSQL: TLS, the server's certificate checked against the CA that signed
# it and its host name against the certificate's names (CNPG's server certificate names the
# cluster's -rw, -ro and -r Services, short and fully qualified).
SERVER_TLS_SSLMODE = "verify-full"
# App -> PgBouncer: TLS or no connection at all.  Verifying PgBouncer's certificate is the
# client's part (sslmode=verify-full in DATABASE_URL, docs/postgres.md).
CLIENT_TLS_SSLMODE = "require"


@dataclass(frozen=True)
class TlsFiles:
    """Where PgBouncer finds its TLS material (mounted read-only from Secrets)."""

    server_ca: str  # the CA that signed PostgreSQL's certificate (CNPG's <cluster>-ca, ca.crt)
    cert: str       # PgBouncer's own certificate for its clients (cert-manager, tls.crt)
    key: str        # ... and its key (tls.key)


def _safe(name: str, value: Value) -> str:
    text = str(value)
    if not _SAFE_VALUE.fullmatch(text):
        raise ValueError(f"{name}: {text!r} may only contain letters, digits and _.:/*@+-")
    return text


def pgbouncer_settings(
    pb: PgBouncer,
    *,
    listen_port: int,
    auth_file: str,
    tls: TlsFiles,
    listen_addr: str = "*",
    admin_user: str = DEFAULT_ADMIN_USER,
    stats_user: str = DEFAULT_STATS_USER,
) -> list[Entry]:
    """The ``[pgbouncer]`` section as ordered (key, value, why) entries."""
    for name, value in (
        ("listen_port", listen_port),
        ("auth_file", auth_file),
        ("listen_addr", listen_addr),
        ("admin_user", admin_user),
        ("stats_user", stats_user),
        ("server_tls_ca_file", tls.server_ca),
        ("client_tls_cert_file", tls.cert),
        ("client_tls_key_file", tls.key),
    ):
        _safe(name, value)
    return [
        ("listen_addr", listen_addr, None),
        ("listen_port", listen_port, None),
        (
            "unix_socket_dir",
            "",
            "No Unix socket: clients arrive over TCP, and a socket file needs a writable directory.",
        ),
        ("auth_type", "scram-sha-256", None),
        (
            "auth_file",
            auth_file,
            "userlist.txt comes from a Secret and holds SCRAM verifiers, never plaintext.",
        ),
        ("admin_users", admin_user, None),
        ("stats_users", stats_user, "The metrics exporter runs SHOW STATS/POOLS/LISTS as this user."),
        ("pool_mode", POOL_MODE, None),
        ("max_client_conn", pb.max_client_conn, None),
        ("default_pool_size", pb.default_pool_size, None),
        (
            "reserve_pool_size",
            pb.reserve_pool_size,
            "Extra server connections for a pool whose clients waited reserve_pool_timeout seconds.",
        ),
        ("reserve_pool_timeout", pb.reserve_pool_timeout, None),
        (
            "max_db_connections",
            server_connections_per_pod(pb),
            "Hard cap per pod whatever the number of users: PostgreSQL's max_connections counts"
            " exactly default_pool_size + reserve_pool_size per pod (docs/sizing.md).",
        ),
        (
            "max_prepared_statements",
            MAX_PREPARED_STATEMENTS,
            "Transaction pooling hands each transaction any server connection; PgBouncer"
            " (>= 1.21) tracks protocol-level prepared statements so ORM clients (Prisma,"
            " node-postgres) may keep using them.",
        ),
        (
            "server_reset_query",
            "DISCARD ALL",
            "Only session pooling runs the reset query. In transaction mode a transaction"
            " leaves nothing behind, and DISCARD ALL after each one would also drop the"
            " prepared statements PgBouncer tracks, so it is not forced (_always = 0).",
        ),
        ("server_reset_query_always", 0, None),
        (
            "ignore_startup_parameters",
            "extra_float_digits,options",
            "Drivers send these at connect (JDBC/Prisma extra_float_digits, Prisma options);"
            " PgBouncer refuses unknown startup parameters unless told to ignore them.",
        ),
        (
            "server_tls_sslmode",
            SERVER_TLS_SSLMODE,
            "To PostgreSQL: TLS, its certificate checked against CNPG's CA (the cluster's <cluster>-ca"
            " Secret, mounted) and its name against the host above; CNPG's certificate names the"
            " -rw, -ro and -r Services.",
        ),
        ("server_tls_ca_file", tls.server_ca, None),
        (
            "client_tls_sslmode",
            CLIENT_TLS_SSLMODE,
            "From the apps: TLS or no connection. The certificate is cert-manager's, issued for this"
            " pool's Service names by the namespace's internal CA; the apps verify it"
            " (sslmode=verify-full and sslrootcert in DATABASE_URL).",
        ),
        ("client_tls_cert_file", tls.cert, None),
        ("client_tls_key_file", tls.key, None),
        (
            "server_idle_timeout",
            SERVER_IDLE_TIMEOUT_SECONDS,
            "Close server connections idle this long (seconds), so quiet pools shrink.",
        ),
        (
            "query_wait_timeout",
            QUERY_WAIT_TIMEOUT_SECONDS,
            "A client waiting this long (seconds) for a server connection gets an error"
            " instead of hanging forever.",
        ),
        (
            "log_connections",
            0,
            "Connection churn from up to max_client_conn clients would flood the log;"
            " the per-minute stats line and the exporter show the trend instead.",
        ),
        ("log_disconnections", 0, None),
        ("log_pooler_errors", 1, None),
        ("log_stats", 1, None),
        ("stats_period", 60, None),
    ]


def pgbouncer_ini(
    pb: PgBouncer,
    *,
    database: str,
    host: str,
    port: int,
    listen_port: int,
    auth_file: str,
    tls: TlsFiles,
    listen_addr: str = "*",
    admin_user: str = DEFAULT_ADMIN_USER,
    stats_user: str = DEFAULT_STATS_USER,
) -> str:
    """pgbouncer.ini for one pool: clients connect to ``database`` on ``listen_port`` over
    TLS and are pooled onto ``host:port`` (a CNPG ``-rw``/``-ro`` service), over TLS that
    PgBouncer verifies.  Logs go to stderr."""
    entries = pgbouncer_settings(
        pb,
        listen_port=listen_port,
        auth_file=auth_file,
        tls=tls,
        listen_addr=listen_addr,
        admin_user=admin_user,
        stats_user=stats_user,
    )
    # No user= in the connection string: SCRAM pass-through only works when PgBouncer logs
    # in as the client's own user (see the module docstring).
    target = f"host={_safe('host', host)} port={_safe('port', port)} dbname={_safe('database', database)}"
    lines = [
        ";; Rendered by tikit-infra (tikit/conf/pgbouncer.py). Do not edit by hand.",
        "",
        "[databases]",
        f"{_safe('database', database)} = {target}",
        "",
        "[pgbouncer]",
    ]
    for key, value, why in entries:
        if why:
            lines.extend(f"; {line}" for line in textwrap.wrap(why, 96))
        # rstrip: unix_socket_dir is the one deliberately empty value.
        lines.append(f"{key} = {value}".rstrip())
    return "\n".join(lines) + "\n"


def userlist_txt(entries: Mapping[str, str]) -> str:
    """userlist.txt: one ``"user" "secret"`` line per user, sorted by user.

    Holds SCRAM verifiers (or passwords), so it belongs in a Secret, never a ConfigMap.
    A double quote inside a field is written twice, as PgBouncer's parser expects.
    """
    lines = []
    for user, secret in sorted(entries.items()):
        for what, text in (("user", user), ("secret", secret)):
            if not text or any(c in text for c in "\r\n\0"):
                raise ValueError(f"userlist {what} for {user!r} must be non-empty and on one line")
        lines.append(f'"{_quote(user)}" "{_quote(secret)}"')
    return "\n".join(lines) + ("\n" if lines else "")


def _quote(text: str) -> str:
    return text.replace('"', '""')


def scram_sha256_verifier(password: str, salt: bytes, iterations: int = 4096) -> str:
    """PostgreSQL's stored SCRAM-SHA-256 secret for ``password``, exactly as ``pg_authid``
    holds it: ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (RFC 5803).

    ``salt`` is an argument so the result is deterministic; PostgreSQL itself uses 16 random
    bytes and 4096 iterations.  The password goes through SASLprep the way PostgreSQL's
    ``pg_saslprep`` does it, so non-ASCII passwords hash to the same verifier.
    """
    if not salt:
        raise ValueError("salt must not be empty")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# RFC 4013 section 2.3 (C.1.2 is absent: those characters were already mapped to spaces).
_PROHIBITED: Sequence = (
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
    stringprep.in_table_a1,  # unassigned code points
)


def _saslprep(password: str) -> bytes:
    """SASLprep (RFC 4013) as PostgreSQL applies it (src/common/saslprep.c).

    PostgreSQL leaves ASCII untouched and, when a password cannot be prepared (empty after
    mapping, prohibited characters, bad bidi), hashes the raw UTF-8 bytes instead of
    rejecting it; it checks prohibitions on the mapped text, before normalisation.
    """
    raw = password.encode("utf-8")
    if password.isascii():
        return raw
    mapped = [" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)]
    if not mapped or any(table(c) for c in mapped for table in _PROHIBITED):
        return raw
    if any(stringprep.in_table_d1(c) for c in mapped):
        if any(stringprep.in_table_d2(c) for c in mapped):
            return raw
        if not (stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1])):
            return raw
    return unicodedata.normalize("NFKC", "".join(mapped)).encode("utf-8")
