"""Real PostgreSQL and PgBouncer daemons on 127.0.0.1 for the integration tests and the
benchmark (bench/pgbouncer_bench.py).

The configuration text comes from tikit/conf/, so the daemons run exactly what the cluster
would; this module only adds process plumbing and ``pg_tier()``, which wires the two daemons
together the way the cluster does.  Every daemon is a context manager that kills its process
and removes its directory on exit, whatever happened inside.

Both daemons refuse to run as root; when we are root they run as the ``postgres`` user
(Debian's packages create it), in a private directory under /tmp that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence

import psycopg
from psycopg import sql

from tikit import names
from tikit import settings
from tikit.conf.pgbouncer import (
    DEFAULT_ADMIN_USER,
    DEFAULT_STATS_USER,
    MAX_PREPARED_STATEMENTS_SINCE,
    TlsFiles,
    pgbouncer_ini,
    scram_sha256_verifier,
    userlist_txt,
)
from tikit.conf.postgres import postgres_parameters
from harness import tls

HOST = "127.0.0.1"
SUPERUSER = "postgres"
DAEMON_USER = "postgres"  # who runs the daemons when the tests run as root
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


# --------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------


def pg_bin_dir() -> Optional[Path]:
    """Directory holding initdb/postgres/pgbench: $PG_BIN, else the newest Debian
    /usr/lib/postgresql/<major>/bin, else wherever initdb is on PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if versions:
        return Path(versions[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def pgbouncer_bin() -> Optional[str]:
    return os.environ.get("PGBOUNCER_BIN") or shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )


def missing_binaries() -> list[str]:
    """What is missing to run the PostgreSQL tier locally (empty when all is there)."""
    missing = []
    bin_dir = pg_bin_dir()
    tools = [t for t in ("initdb", "postgres", "pgbench") if not bin_dir or not (bin_dir / t).exists()]
    if tools:
        missing.append(f"{', '.join(tools)} (install postgresql, or set PG_BIN)")
    if not pgbouncer_bin():
        missing.append("pgbouncer (install pgbouncer, or set PGBOUNCER_BIN)")
    return missing


def pgbouncer_version(binary: str) -> tuple[int, int, int]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"PgBouncer (\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise RuntimeError(f"cannot read the PgBouncer version from {out!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


# --------------------------------------------------------------------------------------
# Process plumbing
# --------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def as_daemon_user() -> dict:
    """subprocess arguments that drop root for daemons that refuse to run as root."""
    if os.geteuid() != 0:
        return {}
    return {"user": DAEMON_USER, "group": DAEMON_USER, "extra_groups": []}


def private_dir(prefix: str) -> Path:
    """A fresh directory under the system temp dir, owned by whoever runs the daemons.
    (pytest's tmp_path sits under a root-only 0700 directory the daemon user cannot enter.)"""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    give_to_daemon_user(path)
    return path


def give_to_daemon_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(DAEMON_USER)
    os.chown(path, pw.pw_uid, pw.pw_gid)  # os.walk() yields nothing for a plain file
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, pw.pw_uid, pw.pw_gid)


def stop_process(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_daemon(argv: Sequence[str], log_path: Path, what: str, ready: Callable[[], bool],
                 interval: float, env: Optional[Mapping[str, str]] = None,
                 timeout: float = START_TIMEOUT) -> subprocess.Popen:
    """Start a daemon in the foreground (as the daemon user when we are root), its output
    in ``log_path``, and poll ``ready()`` until it says yes.  A daemon that exits or is not
    ready within ``timeout`` is killed and the error carries the end of its log.  ``env``
    replaces the environment (what archive_command and restore_command inherit)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, **as_daemon_user())
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} was not ready within {timeout:.0f}s:\n{tail(log_path)}")
            time.sleep(interval)
    except BaseException:
        stop_process(proc, signal.SIGKILL)
        raise
    return proc


@contextlib.contextmanager
def nofile_limit(wanted: int) -> Iterator[int]:
    """Raise RLIMIT_NOFILE for this process and its children (pgbench, pgbouncer), restoring
    it afterwards: 1000 clients need 1000 sockets in pgbench and 1000 + pool in PgBouncer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    new_hard = hard
    if hard != unlimited and hard < wanted and os.geteuid() == 0:
        new_hard = wanted  # only root may raise the hard limit
    new_soft = soft
    if soft != unlimited and soft < wanted:
        new_soft = wanted if new_hard == unlimited else min(wanted, new_hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, new_hard))
    try:
        yield new_soft
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def established_connections(port: int) -> int:
    """TCP connections established to ``port`` on this host, counted from the kernel's socket
    table (/proc/net/tcp), so counting them adds no client to the daemon being observed.

    The table is read in chunks while sockets come and go, so a socket can show up twice:
    count distinct peers, not lines."""
    peers = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:  # 01 = ESTABLISHED
                peers.add(remote)
    return len(peers)


# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------


def conf_line(name: str, value: str) -> str:
    """One postgresql.conf line, quoted the way CNPG writes its custom.conf."""
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    return f"{name} = '{escaped}'"


class PgTemplate:
    """An initdb'd data directory to copy from: initdb once per test session, not per server."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.superuser_password = secrets.token_urlsafe(24)
        self.root = private_dir("tikit-pg-template-")
        self.data = self.root / "data"
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        give_to_daemon_user(self.root)
        initdb = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D", str(self.data),
                "-U", SUPERUSER,
                f"--pwfile={pwfile}",
                # Every TCP login, superuser included, is a SCRAM login.
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",  # throwaway data: skip fsync, it costs seconds
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            **as_daemon_user(),
        )
        pwfile.unlink()
        if initdb.returncode != 0:
            self.cleanup()
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stderr[-3000:]}")

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresServer:
    """A running PostgreSQL copied from a template, with ``parameters`` in an included file
    (as CNPG puts spec.postgresql.parameters in custom.conf), listening on 127.0.0.1 only.

    What the operator owns in the cluster (port, listen_addresses, socket directories) is
    passed on the command line, so it never mixes with the rendered parameters; the rest of
    what CNPG adds (``operator``: archive_mode, archive_command, ...) goes into a second
    included file, read after the rendered one.  ``env`` is the postmaster's whole
    environment, which archive_command inherits (None: this process's).
    """

    def __init__(self, template: PgTemplate, parameters: Mapping[str, str], *,
                 operator: Optional[Mapping[str, str]] = None, env: Optional[Mapping[str, str]] = None) -> None:
        self.template = template
        self.parameters = dict(parameters)
        self.operator = dict(operator or {})
        self.env = dict(env) if env is not None else None
        self.port = free_port()
        self.root = private_dir("tikit-pg-")
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def bin_dir(self) -> Path:
        return self.template.bin_dir

    def __enter__(self) -> "PostgresServer":
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc:
            stop_process(self.proc, signal.SIGINT)  # SIGINT = fast shutdown: no waiting for clients
        shutil.rmtree(self.root, ignore_errors=True)

    def start(self) -> None:
        shutil.copytree(self.template.data, self.data)
        (self.data / "tikit.conf").write_text(
            "".join(conf_line(k, v) + "\n" for k, v in sorted(self.parameters.items()))
        )
        self.write_operator_conf()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\ninclude 'tikit.conf'\ninclude 'operator.conf'\n")
        give_to_daemon_user(self.root)
        self.launch()

    def write_operator_conf(self) -> None:
        (self.data / "operator.conf").write_text("".join(conf_line(k, v) + "\n" for k, v in sorted(self.operator.items())))

    def restart(self, **operator: str) -> None:
        """Fast shutdown, change what the operator owns, start again."""
        if self.proc:
            stop_process(self.proc, signal.SIGINT)
        self.operator.update(operator)
        self.write_operator_conf()
        give_to_daemon_user(self.data)
        self.launch()

    def launch(self) -> None:
        def accepts_connections() -> bool:
            try:
                self.connect().close()
                return True
            except psycopg.OperationalError:
                return False

        self.proc = start_daemon(
            [
                str(self.bin_dir / "postgres"),
                "-D", str(self.data),
                "-c", f"listen_addresses={HOST}",
                "-c", f"port={self.port}",
                "-c", "unix_socket_directories=",
            ],
            self.log, "postgres", accepts_connections, interval=0.1, env=self.env,
        )

    def conninfo(self, user: str = SUPERUSER, password: Optional[str] = None, dbname: str = "postgres") -> dict:
        return {
            "host": HOST,
            "port": self.port,
            "user": user,
            "password": self.template.superuser_password if password is None else password,
            "dbname": dbname,
        }

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(**self.conninfo(**kwargs), autocommit=True, connect_timeout=2)


# --------------------------------------------------------------------------------------
# PgBouncer
# --------------------------------------------------------------------------------------


class PgBouncerServer:
    """A running pgbouncer with the given ini and userlist.txt text.

    The caller renders the ini with this object's ``port`` and ``auth_file``, so the text the
    daemon reads is what the cluster gets except for where it listens and the file paths.
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.root = private_dir("tikit-pgbouncer-")
        self.ini_path = self.root / "pgbouncer.ini"
        self.auth_file = str(self.root / "userlist.txt")
        self.log = self.root / "pgbouncer.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, ini: str, userlist: str) -> "PgBouncerServer":
        self.ini_path.write_text(ini)
        Path(self.auth_file).write_text(userlist)
        os.chmod(self.auth_file, 0o600)
        give_to_daemon_user(self.root)

        def listens() -> bool:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                return s.connect_ex((HOST, self.port)) == 0

        # Foreground (no -d): logs go to stderr, as in the container, and we own the pid.
        self.proc = start_daemon([self.binary, str(self.ini_path)], self.log, "pgbouncer", listens, interval=0.05)
        return self

    def __enter__(self) -> "PgBouncerServer":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc:
            # No clients are left by now, so SIGTERM ends it promptly in every version
            # (immediate shutdown up to 1.22, "wait for clients" from 1.23).
            stop_process(self.proc, signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def drop_unsupported(ini: str, version: tuple[int, ...], since: Mapping[str, tuple[int, ...]]) -> tuple[str, list[str]]:
    """Remove the ``key = value`` lines a local PgBouncer is too old to parse (older versions
    refuse to start on an unknown key).  Returns the new text and the dropped lines so the
    caller can assert exactly what was dropped."""
    kept, dropped = [], []
    for line in ini.splitlines(keepends=True):
        key = line.split("=", 1)[0].strip()
        if key in since and version < since[key]:
            dropped.append(line.rstrip("\n"))
        else:
            kept.append(line)
    return "".join(kept), dropped


# --------------------------------------------------------------------------------------
# The tier: PostgreSQL running the rendered parameters, PgBouncer the rendered ini
# --------------------------------------------------------------------------------------


@dataclass
class PgTier:
    s: settings.Settings
    pg: PostgresServer
    pb: PgBouncerServer
    passwords: dict[str, str]  # user -> plaintext, known only to the clients
    verifiers: dict[str, str]  # user -> SCRAM verifier, what userlist.txt and pg_authid hold
    rendered: str  # pgbouncer_ini() for this machine
    ini: str  # what pgbouncer actually reads (``rendered`` minus ``dropped``)
    pki: "TierPki"
    dropped: list[str] = field(default_factory=list)

    @property
    def app_user(self) -> str:
        return names.PG_OWNER

    @property
    def database(self) -> str:
        return names.PG_DATABASE

    def direct(self) -> psycopg.Connection:
        """The app's connection straight to PostgreSQL."""
        return self.pg.connect(user=self.app_user, password=self.passwords[self.app_user], dbname=self.database)

    def via_pgbouncer(self, user: Optional[str] = None, password: Optional[str] = None,
                      dbname: Optional[str] = None, **kwargs) -> psycopg.Connection:
        """A client of the pool, with TLS as the apps' DATABASE_URL asks for it: verify-full
        against the internal CA (``sslmode=...`` in ``kwargs`` overrides it)."""
        user = user or self.app_user
        params = {
            "host": HOST, "port": self.pb.port, "user": user, "dbname": dbname or self.database,
            "password": self.passwords[user] if password is None else password,
            "sslmode": "verify-full", "sslrootcert": str(self.pki.internal_ca.cert),
            "autocommit": True, "connect_timeout": 5,
            # A local PgBouncer may predate max_prepared_statements: never auto-prepare.
            "prepare_threshold": None,
        }
        return psycopg.connect(**{**params, **kwargs})

    def admin_console(self, user: str = DEFAULT_STATS_USER) -> psycopg.Connection:
        # The admin console speaks only the simple query protocol.
        return self.via_pgbouncer(user=user, dbname="pgbouncer", cursor_factory=psycopg.ClientCursor)


@dataclass(frozen=True)
class TierPki:
    """The two CAs of the tier, as in the cluster: CNPG's per-cluster CA signs PostgreSQL's
    certificate (PgBouncer verifies it: server_tls_ca_file), the namespace's internal CA
    signs PgBouncer's (the apps verify it: DATABASE_URL's sslrootcert)."""

    cluster_ca: tls.Pair
    postgres: tls.Pair
    internal_ca: tls.Pair
    pgbouncer: tls.Pair

    @classmethod
    def make(cls, root: Path, *, postgres_names: Sequence[str] = (), pgbouncer_names: Sequence[str] = ()) -> "TierPki":
        """Both server certificates name 127.0.0.1 (where the daemons listen, so verify-full
        holds) plus any extra DNS names."""
        cluster_ca = tls.ca(root, "cluster-ca", "pg-lagos cluster CA (test)")
        internal_ca = tls.ca(root, "internal-ca", "tikit internal CA (test)")
        return cls(
            cluster_ca=cluster_ca,
            postgres=tls.issue(root, cluster_ca, "postgres", dns=postgres_names, ips=[HOST]),
            internal_ca=internal_ca,
            pgbouncer=tls.issue(root, internal_ca, "pgbouncer", dns=pgbouncer_names, ips=[HOST]),
        )


def server_tls(pair: tls.Pair) -> dict[str, str]:
    """What CNPG sets for a server certificate (operator-owned ssl* parameters)."""
    return {"ssl": "on", "ssl_cert_file": str(pair.cert), "ssl_key_file": str(pair.key)}


@contextlib.contextmanager
def pg_tier(template: PgTemplate, bouncer: str, s: settings.Settings,
            pki: Optional[TierPki] = None) -> Iterator[PgTier]:
    """PostgreSQL running ``postgres_parameters(s.postgres, s.derived)`` with the app role and database, and
    PgBouncer running ``pgbouncer_ini(s.pgbouncer)`` in front of it, authenticating the app,
    the exporter's stats user and the admin user with SCRAM verifiers from userlist.txt.
    Both hops are TLS as in the cluster, with ``pki`` (made here unless given)."""
    app, db = names.PG_OWNER, names.PG_DATABASE
    certs = private_dir("tikit-pki-")
    pki = pki or TierPki.make(certs)
    give_to_daemon_user(certs)
    # pgbench holds one socket per client, PgBouncer one per client plus its pools.
    try:
        with nofile_limit(2 * s.pgbouncer.max_client_conn + 1024), \
                PostgresServer(template, postgres_parameters(s.postgres, s.derived), operator=server_tls(pki.postgres)) as pg, \
                PgBouncerServer(bouncer) as pb:
            users = (app, DEFAULT_STATS_USER, DEFAULT_ADMIN_USER)
            passwords = {user: secrets.token_urlsafe(30) for user in users}
            verifiers = {user: scram_sha256_verifier(pw, secrets.token_bytes(16)) for user, pw in passwords.items()}
            with pg.connect() as conn:
                # The role's password IS our verifier, so PgBouncer's copy matches byte for byte
                # (SCRAM pass-through needs the same salt and iterations, not just the password).
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(app), sql.Literal(verifiers[app])))
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(app)))
            files = TlsFiles(server_ca=str(pki.cluster_ca.cert), cert=str(pki.pgbouncer.cert), key=str(pki.pgbouncer.key))
            rendered = pgbouncer_ini(s.pgbouncer, database=db, host=HOST, port=pg.port,
                                     listen_addr=HOST, listen_port=pb.port, auth_file=pb.auth_file, tls=files)
            ini, dropped = drop_unsupported(
                rendered, pgbouncer_version(bouncer), {"max_prepared_statements": MAX_PREPARED_STATEMENTS_SINCE})
            pb.start(ini, userlist_txt(verifiers))
            yield PgTier(s=s, pg=pg, pb=pb, passwords=passwords, verifiers=verifiers,
                         rendered=rendered, ini=ini, pki=pki, dropped=dropped)
    finally:
        shutil.rmtree(certs, ignore_errors=True)


# --------------------------------------------------------------------------------------
# pgbench
# --------------------------------------------------------------------------------------


def run_pgbench(bin_dir: Path, args: Sequence[str], *, port: int, user: str, password: str, dbname: str,
                timeout: float = 120.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGHOST": HOST, "PGPORT": str(port), "PGUSER": user, "PGPASSWORD": password,
           "PGDATABASE": dbname}
    return subprocess.run([str(bin_dir / "pgbench"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def parse_pgbench(output: str) -> dict[str, float]:
    """The summary numbers pgbench prints at the end of a run."""
    patterns = {
        "clients": r"number of clients: (\d+)",
        "processed": r"number of transactions actually processed: (\d+)",
        "failed": r"number of failed transactions: (\d+)",
        "latency_avg_ms": r"latency average = ([\d.]+) ms",
        "tps": r"tps = ([\d.]+) \(without initial connection time\)",
    }
    found = {}
    for key, rx in patterns.items():
        m = re.search(rx, output)
        if m:
            found[key] = float(m.group(1))
    return found
