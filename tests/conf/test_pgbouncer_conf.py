"""tikit/conf/pgbouncer.py: pgbouncer.ini for every preset, userlist.txt and SCRAM verifiers."""

from __future__ import annotations

import base64
import configparser
import dataclasses
import hashlib
import hmac
import re

import pytest
from hypothesis import given, strategies as st

from tikit import names
from tikit import settings
from tikit.conf import pgbouncer as pgb_conf
from tikit.conf.pgbouncer import pgbouncer_ini, scram_sha256_verifier, userlist_txt

STACKS = settings.ENVIRONMENTS
TLS = pgb_conf.TlsFiles(server_ca="/etc/pgbouncer-server-ca/ca.crt", cert="/etc/pgbouncer-tls/tls.crt",
                        key="/etc/pgbouncer-tls/tls.key")
CLUSTER = dict(host="pg-lagos-rw.tikit.svc.cluster.local", port=5432, listen_port=6432,
               auth_file="/etc/pgbouncer/auth/userlist.txt", tls=TLS)


def render(stack: str, **overrides) -> str:
    s = settings.load({}, stack=stack)
    return pgbouncer_ini(s.pgbouncer, database=names.PG_DATABASE, **{**CLUSTER, **overrides})


def parse(ini: str) -> configparser.ConfigParser:
    # strict: a key written twice is an error, as it would be a silent override in PgBouncer.
    cp = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=(";",))
    cp.read_string(ini)
    return cp


@pytest.mark.parametrize("stack", STACKS)
def test_pool_numbers_are_the_notes(stack):
    pb = parse(render(stack))["pgbouncer"]
    # The notes' [pgbouncer] block, the same in every environment.
    assert pb["pool_mode"] == "transaction"
    assert (pb["max_client_conn"], pb["default_pool_size"]) == ("1000", "20")
    assert (pb["reserve_pool_size"], pb["reserve_pool_timeout"]) == ("5", "3")


@pytest.mark.parametrize("stack", STACKS)
def test_every_value_comes_from_settings_or_the_constants(stack):
    s = settings.load({}, stack=stack)
    pb = parse(render(stack))["pgbouncer"]
    assert pb["pool_mode"] == pgb_conf.POOL_MODE
    assert pb["max_prepared_statements"] == str(pgb_conf.MAX_PREPARED_STATEMENTS)
    assert pb["server_idle_timeout"] == str(pgb_conf.SERVER_IDLE_TIMEOUT_SECONDS)
    assert pb["query_wait_timeout"] == str(pgb_conf.QUERY_WAIT_TIMEOUT_SECONDS)
    assert pb["max_db_connections"] == str(s.derived.pgbouncer_server_connections_per_pod)


def test_settings_overrides_reach_the_ini():
    s = settings.load({"pgbouncer": {"defaultPoolSize": 30, "reservePoolSize": 2, "maxClientConn": 500}},
                      stack="dev")
    pb = parse(pgbouncer_ini(s.pgbouncer, database="tikit", **CLUSTER))["pgbouncer"]
    assert (pb["default_pool_size"], pb["reserve_pool_size"], pb["max_client_conn"]) == ("30", "2", "500")
    assert pb["max_db_connections"] == "32"
    # Pool mode and prepared-statement tracking are fixed: transaction pooling is what the
    # pool sizes assume.
    assert (pb["pool_mode"], pb["max_prepared_statements"]) == ("transaction", str(pgb_conf.MAX_PREPARED_STATEMENTS))


@pytest.mark.parametrize("stack", STACKS)
def test_database_entry_points_at_the_service_without_a_user(stack):
    db = parse(render(stack))["databases"]
    assert dict(db) == {"tikit": "host=pg-lagos-rw.tikit.svc.cluster.local port=5432 dbname=tikit"}
    # SCRAM pass-through only works when the entry names no user (see the module docstring).
    assert "user=" not in db["tikit"] and "password" not in db["tikit"]


def test_listen_and_auth():
    pb = parse(render("prod"))["pgbouncer"]
    assert (pb["listen_addr"], pb["listen_port"]) == ("*", "6432")
    assert pb["auth_type"] == "scram-sha-256"
    assert pb["auth_file"] == CLUSTER["auth_file"]
    assert pb["unix_socket_dir"] == ""
    assert pb["stats_users"] == "pgbouncer_exporter"
    assert pb["admin_users"] == "pgbouncer_admin"


def test_transaction_mode_is_safe_for_orm_clients():
    pb = parse(render("prod"))["pgbouncer"]
    assert pb["server_reset_query"] == "DISCARD ALL"
    assert pb["server_reset_query_always"] == "0"
    assert set(pb["ignore_startup_parameters"].split(",")) >= {"extra_float_digits", "options"}
    assert int(pb["max_prepared_statements"]) > 0


def test_non_obvious_settings_say_why():
    lines = render("prod").splitlines()
    for key in ("max_prepared_statements", "server_reset_query", "ignore_startup_parameters",
                "max_db_connections", "reserve_pool_size", "query_wait_timeout", "log_connections"):
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
        assert lines[i - 1].startswith("; "), f"{key} has no comment saying why"


def test_both_hops_are_tls_and_the_server_is_verified():
    pb = parse(render("prod"))["pgbouncer"]
    # To PostgreSQL: verified against CNPG's CA and the host name (the Service's).
    assert pb["server_tls_sslmode"] == "verify-full" == pgb_conf.SERVER_TLS_SSLMODE
    assert pb["server_tls_ca_file"] == TLS.server_ca
    # From the apps: TLS or nothing, with the pool's certificate.
    assert pb["client_tls_sslmode"] == "require" == pgb_conf.CLIENT_TLS_SSLMODE
    assert (pb["client_tls_cert_file"], pb["client_tls_key_file"]) == (TLS.cert, TLS.key)
    for key in ("server_tls_sslmode", "client_tls_sslmode"):
        lines = render("prod").splitlines()
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
        assert lines[i - 1].startswith("; "), f"{key} has no comment saying why"


@pytest.mark.parametrize("field", ["server_ca", "cert", "key"])
def test_tls_paths_that_would_rewrite_the_file_are_refused(field):
    s = settings.load({}, stack="dev")
    bad = dataclasses.replace(TLS, **{field: "/x\nauth_type = trust"})
    with pytest.raises(ValueError, match="tls_"):
        pgbouncer_ini(s.pgbouncer, database="tikit", **{**CLUSTER, "tls": bad})


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_in_the_ini(stack):
    ini = render(stack).lower()
    assert "scram-sha-256$" not in ini
    assert not re.search(r"^\s*[^;]*password\s*=", ini, re.M)


def test_rendering_is_deterministic_and_ends_with_newline():
    assert render("staging") == render("staging")
    assert render("staging").endswith("\n")


@pytest.mark.parametrize(
    "arg, value",
    [("host", "evil host"), ("host", "h\nadmin_users = x"), ("database", "tikit;x"), ("auth_file", "/a b"),
     ("listen_addr", "0.0.0.0\n"), ("port", "5432 user=postgres")],
)
def test_values_that_would_rewrite_the_file_are_refused(arg, value):
    s = settings.load({}, stack="dev")
    args = {**CLUSTER, "database": "tikit", arg: value}
    with pytest.raises(ValueError, match=arg):
        pgbouncer_ini(s.pgbouncer, **args)


# --------------------------------------------------------------------------------------
# userlist.txt
# --------------------------------------------------------------------------------------


def test_userlist_is_sorted_and_quoted():
    text = userlist_txt({"tikit": "SCRAM-SHA-256$4096:c2FsdA==$a:b", "pgbouncer_exporter": 'pa"ss'})
    assert text == '"pgbouncer_exporter" "pa""ss"\n"tikit" "SCRAM-SHA-256$4096:c2FsdA==$a:b"\n'


def test_empty_userlist():
    assert userlist_txt({}) == ""


@pytest.mark.parametrize("entries", [{"a": "x\ny"}, {"a\n": "x"}, {"": "x"}, {"a": ""}])
def test_userlist_refuses_multiline_or_empty_fields(entries):
    with pytest.raises(ValueError):
        userlist_txt(entries)


# --------------------------------------------------------------------------------------
# SCRAM verifiers
# --------------------------------------------------------------------------------------

# Computed by PostgreSQL 15.18 itself (CREATE ROLE ... PASSWORD '<plaintext>' with
# password_encryption = scram-sha-256, then pg_authid.rolpassword); the integration test
# repeats the comparison against the live server.
POSTGRES_VECTORS = [
    ("pencil",
     "SCRAM-SHA-256$4096:SqIhmGc+HsdLdbRv7d4LoA==$Lj1tpBVROYwGLl+FXWWD4qBU4yQsWVh1usi9oHIH2cI="
     ":HOeqkRzfpIRBOhT+Tt+BfRbAAr7jFwa+NpRlhZyWp3g="),
    # SASLprep: fullwidth letters are NFKC-normalised, NBSP becomes a space, soft hyphen vanishes.
    ("\uff50\uff41\uff53\uff53\u00a0word\u00ad",
     "SCRAM-SHA-256$4096:y6LnPn6SyhI9FvDlMC2Zzw==$eUatqBkZAi3/XbwGlGmLQabjYGu/8mGs6KvNT6SEV+k="
     ":XEP8aRVgq6lssRR0CxQpScEiaqRJsfPf9m2++cNn+1U="),
    # Mixed left-to-right and right-to-left text fails SASLprep: PostgreSQL hashes the raw bytes.
    ("a\u0627",
     "SCRAM-SHA-256$4096:Hn5oYVYiLPP3aq0ee6aZWQ==$oS5VqnnQ+rO8eU5gn9fmX5TP9VfxDSeIk6J+G18cRPA="
     ":0I8xCeS6+kXJXXnCl9YHDcBLdy7ektTLubRLkTbigxs="),
]


@pytest.mark.parametrize("password, expected", POSTGRES_VECTORS)
def test_verifier_matches_postgresql(password, expected):
    iterations, salt = expected.split("$")[1].split(":")
    assert scram_sha256_verifier(password, base64.b64decode(salt), int(iterations)) == expected


def test_verifier_proves_the_rfc7677_exchange():
    """RFC 7677 section 3: the server's stored keys must verify the client's proof and
    reproduce the server signature of the published exchange."""
    verifier = scram_sha256_verifier("pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    stored_key, server_key = (base64.b64decode(k) for k in verifier.split("$")[2].split(":"))
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
                    f"c=biws,r={nonce}").encode()
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
    assert hashlib.sha256(client_key).digest() == stored_key
    server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


@given(st.text(min_size=1, max_size=40), st.binary(min_size=1, max_size=32), st.integers(1, 64))
def test_verifier_format_and_determinism(password, salt, iterations):
    v = scram_sha256_verifier(password, salt, iterations)
    assert v == scram_sha256_verifier(password, salt, iterations)
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]{44}):([A-Za-z0-9+/=]{44})", v)
    assert m and int(m.group(1)) == iterations and base64.b64decode(m.group(2)) == salt


def test_verifier_never_contains_the_password():
    password = "correct-horse-battery-staple-0123456789"
    assert password not in scram_sha256_verifier(password, b"0123456789abcdef")


@pytest.mark.parametrize("salt, iterations", [(b"", 4096), (b"salt", 0)])
def test_verifier_refuses_empty_salt_or_no_iterations(salt, iterations):
    with pytest.raises(ValueError):
        scram_sha256_verifier("pencil", salt, iterations)
