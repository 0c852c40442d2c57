"""PostgreSQL backups and point-in-time restores with Barman Cloud (Debian's barman-cli-cloud)
against an S3 endpoint, for the integration tests and bench/pitr_bench.py.

What the cluster renders drives every command: a Barman Cloud plugin ObjectStore's
``configuration`` (destinationPath, wal/data compression) becomes the tools' arguments via
``BarmanStore.from_configuration``; only the endpoint is the local S3 standing in for the
rendered one.  In the cluster the plugin's sidecar archives and restores; here the same
configuration drives ``barman-cloud-wal-archive`` as PostgreSQL's archive_command,
``barman-cloud-backup`` for the base backup and ``barman-cloud-restore`` /
``barman-cloud-wal-restore`` for the restore.

The tools read PGDATA or write the new one, so when we are root they run as the daemon
user, like PostgreSQL itself (harness/postgres.py).  Their environment is built from scratch
(harness/objectstore.tool_env): archive_command and restore_command inherit the
postmaster's, so the keys must be in it when the server starts.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import psycopg

from harness import postgres as pgd

# barman-cloud's compression options, by the ObjectStore's wal/data ``compression`` value.
COMPRESSION_FLAGS = {"gzip": "--gzip", "bzip2": "--bzip2", "snappy": "--snappy"}
RECOVERY_TIMEOUT = 180.0


@dataclass(frozen=True)
class BarmanStore:
    """One ObjectStore as barman-cloud command-line arguments."""

    destination: str                 # configuration.destinationPath
    endpoint: str                    # where it is reached (the local S3 standing in for endpointURL)
    wal_compression: Optional[str]   # configuration.wal.compression
    data_compression: Optional[str]  # configuration.data.compression

    @classmethod
    def from_configuration(cls, configuration: Mapping[str, Any], *, endpoint: str) -> "BarmanStore":
        return cls(
            destination=configuration["destinationPath"],
            endpoint=endpoint,
            wal_compression=(configuration.get("wal") or {}).get("compression"),
            data_compression=(configuration.get("data") or {}).get("compression"),
        )

    @property
    def bucket(self) -> str:
        return self.destination.removeprefix("s3://").split("/", 1)[0]

    def cloud_args(self) -> list[str]:
        return ["--endpoint-url", self.endpoint, "--cloud-provider", "aws-s3"]

    @staticmethod
    def _compression(value: Optional[str]) -> list[str]:
        if value is None:
            return []
        if value not in COMPRESSION_FLAGS:
            raise ValueError(f"barman-cloud has no option for compression {value!r}")
        return [COMPRESSION_FLAGS[value]]

    def archive_command(self, server_name: str) -> str:
        """What the sidecar does for archive_command, as one shell command line."""
        return " ".join(["barman-cloud-wal-archive", *self.cloud_args(), *self._compression(self.wal_compression),
                         self.destination, server_name, "%p"])

    def restore_command(self, server_name: str) -> str:
        """barman-cloud-wal-restore detects the compression from the object names."""
        return " ".join(["barman-cloud-wal-restore", *self.cloud_args(), self.destination, server_name, "%f", "%p"])

    def backup_args(self, server_name: str, *, host: str, port: int, user: str) -> list[str]:
        return ["barman-cloud-backup", *self.cloud_args(), *self._compression(self.data_compression),
                "-h", host, "-p", str(port), "-U", user, "--immediate-checkpoint", "-J", "2",
                self.destination, server_name]


def run_tool(argv: Sequence[str], env: Mapping[str, str], *, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """A barman-cloud tool as the daemon user (root only), with ``env`` and nothing else."""
    proc = subprocess.run(list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **pgd.as_daemon_user())
    if check and proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def wait_archived(conn: psycopg.Connection, segment: str, timeout: float = 120.0) -> None:
    """Until pg_stat_archiver says ``segment`` (or a later one) is archived; an archive
    failure fails at once.  WAL file names sort in WAL order on one timeline."""
    deadline = time.monotonic() + timeout
    while True:
        last, failed, last_failed = conn.execute(
            "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver").fetchone()
        if failed:
            raise AssertionError(f"archive_command failed for {last_failed}")
        if last is not None and last[:24] >= segment:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{segment} not archived within {timeout:.0f}s (last {last})")
        time.sleep(0.05)


def switch_and_archive(conn: psycopg.Connection) -> str:
    """Close the current WAL segment and wait until it is in the store."""
    segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    wait_archived(conn, segment)
    return segment


def backups(store: BarmanStore, server_name: str, env: Mapping[str, str]) -> list[dict]:
    out = run_tool(["barman-cloud-backup-list", *store.cloud_args(), "--format", "json",
                    store.destination, server_name], env)
    return json.loads(out.stdout)["backups_list"]


def _postmaster_status(data: Path) -> str:
    """Line 8 of postmaster.pid (starting / standby / ready / stopping).  Polling it keeps the
    log free of 'the database system is starting up' errors a connection attempt makes."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return ""
    return lines[7].strip() if len(lines) >= 8 else ""


class RecoveredServer:
    """A PostgreSQL restored from ``store``'s base backup ``backup_id`` and recovered to
    ``target_time`` by replaying the archived WAL, then promoted; killed on exit.

    ``env`` is the restoring side's (a peer region's read-only keys).  The restored
    postgresql.conf still names the source's archive_command: archive_mode off in
    postgresql.auto.conf (read last) keeps the copy from archiving into the source's path;
    in CNPG a restored cluster archives under its own serverName."""

    def __init__(self, template: pgd.PgTemplate, store: BarmanStore, server_name: str, backup_id: str,
                 target_time: str, env: Mapping[str, str]) -> None:
        self.template, self.store, self.server_name = template, store, server_name
        self.backup_id, self.target_time, self.env = backup_id, target_time, dict(env)
        self.port = pgd.free_port()
        self.root = pgd.private_dir("tikit-pg-restore-")
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.proc: Optional[subprocess.Popen] = None
        self.timings: dict[str, float] = {}

    def __enter__(self) -> "RecoveredServer":
        try:
            self.restore()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc:
            pgd.stop_process(self.proc, signal.SIGINT)
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)

    def restore(self) -> None:
        started = time.monotonic()
        run_tool(["barman-cloud-restore", *self.store.cloud_args(), self.store.destination, self.server_name,
                  self.backup_id, str(self.data)], self.env)
        self.timings["download"] = time.monotonic() - started
        overrides = {
            "port": str(self.port),
            "listen_addresses": pgd.HOST,
            "unix_socket_directories": "",
            "archive_mode": "off",
            "restore_command": self.store.restore_command(self.server_name),
            "recovery_target_time": self.target_time,
            "recovery_target_action": "promote",
        }
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.write("".join(pgd.conf_line(k, v) + "\n" for k, v in overrides.items()))
        (self.data / "recovery.signal").touch()
        pgd.give_to_daemon_user(self.root)
        self.data.chmod(0o700)
        replay = time.monotonic()
        self.proc = pgd.start_daemon([str(self.template.bin_dir / "postgres"), "-D", str(self.data)], self.log,
                                     "restored postgres", lambda: _postmaster_status(self.data) == "ready",
                                     interval=0.02, env=self.env, timeout=RECOVERY_TIMEOUT)
        # 'ready' comes at the consistent point, read-only; the target is reached later.
        with self.connect() as conn:
            deadline = time.monotonic() + RECOVERY_TIMEOUT
            while conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"recovery did not finish:\n{pgd.tail(self.log)}")
                time.sleep(0.02)
        self.timings["recovery"] = time.monotonic() - replay
        self.timings["total"] = time.monotonic() - started

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=pgd.HOST, port=self.port, user=pgd.SUPERUSER, dbname=dbname,
                               password=self.template.superuser_password, autocommit=True, connect_timeout=3)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def recovery_point(self) -> dict[str, Optional[str]]:
        """What PostgreSQL logs about where recovery stopped."""
        text = self.log_text()
        stop = re.search(r"recovery stopping before commit of transaction (\d+), time (.+)", text)
        last = re.search(r"last completed transaction was at log time (.+)", text)
        return {
            "stopped_before_xid": stop.group(1) if stop else None,
            "stopped_before_commit_at": stop.group(2).strip() if stop else None,
            "last_completed_transaction_at": last.group(1).strip() if last else None,
        }


# --------------------------------------------------------------------------------------
# The whole point-in-time round trip (the test asserts on it, bench/pitr_bench.py times it)
# --------------------------------------------------------------------------------------

TRANSACTIONS = 20          # per set: A before the target time, B after it
ROWS_PER_TRANSACTION = 5
# Between the last commit of A (the target is read right after it) and the first of B.
TARGET_GAP_SECONDS = 0.3


@dataclass
class PitrRun:
    figures: dict[str, Any]
    source_rows: list[tuple]      # (id, batch, payload, inserted_at) of the source at the end
    restored_rows: list[tuple]    # the same from the restored server
    target: str                   # the recovery target time, as the server printed it
    target_ts: Any                # ... parsed
    last_restored_commit: Any     # "last completed transaction was at log time ..."
    timeline: int


def pitr(template: pgd.PgTemplate, parameters: Mapping[str, str], writer: BarmanStore, reader: BarmanStore,
         server_name: str, rw_env: Mapping[str, str], ro_env: Mapping[str, str], rows: int,
         while_running=None, before_target=None, after_target=None, with_restored=None) -> PitrRun:
    """A source running ``parameters`` archives through ``writer`` (read-write keys in
    ``rw_env``); ``rows`` base rows, a base backup, set A, the target time T, set B, the WAL
    archived; then ``reader`` (the peer's view, ``ro_env``) restores the backup and
    replays WAL to T.  Hooks: ``before_target(pg)`` right before set A, ``after_target(pg)``
    between the two halves of set B, ``while_running(pg)`` before the source stops,
    ``with_restored(restored, target)`` while the restored server runs."""
    figures: dict[str, Any] = {"rows": rows}
    started_all = time.monotonic()
    # What CNPG adds for archiving.  The bulk load runs with archiving off: its WAL
    # predates the base backup and is never needed (dense WAL costs seconds to gzip).
    operator = {"archive_mode": "off", "archive_command": writer.archive_command(server_name), "archive_timeout": "5min"}
    with pgd.PostgresServer(template, parameters, operator=operator, env=rw_env) as pg:
        with pg.connect() as conn:
            conn.execute("CREATE TABLE pitr_rows (id bigint PRIMARY KEY, batch text NOT NULL, "
                         "inserted_at timestamptz NOT NULL DEFAULT clock_timestamp(), payload text NOT NULL)")
            conn.execute("INSERT INTO pitr_rows (id, batch, payload) SELECT i, 'base', md5(i::text) || md5((i * 7)::text) "
                         "FROM generate_series(1, %s) i", (rows,))
            conn.execute("SELECT pg_switch_wal()")
            cluster, table = conn.execute("SELECT (SELECT sum(pg_database_size(oid)) FROM pg_database), "
                                          "pg_total_relation_size('pitr_rows')").fetchone()
            figures["cluster_mb"] = round(float(cluster) / 1e6, 1)
            figures["table_and_index_mb"] = round(float(table) / 1e6, 1)
        pg.restart(archive_mode="on")

        started = time.monotonic()
        run_tool(writer.backup_args(server_name, host=pgd.HOST, port=pg.port, user=pgd.SUPERUSER), rw_env)
        figures["base_backup_seconds"] = round(time.monotonic() - started, 2)

        with pg.connect() as conn:
            def insert(batch: str, first: int) -> None:
                for t in range(TRANSACTIONS):
                    conn.execute(
                        "INSERT INTO pitr_rows (id, batch, payload) SELECT %s + i, %s, %s || i "
                        "FROM generate_series(0, %s) i",
                        (first + t * ROWS_PER_TRANSACTION, batch, batch.lower() + "-", ROWS_PER_TRANSACTION - 1))

            if before_target is not None:
                before_target(pg)
            insert("A", 10_000_000)
            target = conn.execute("SELECT clock_timestamp()::text").fetchone()[0]  # T, after A committed
            target_ts = conn.execute("SELECT %s::timestamptz", (target,)).fetchone()[0]
            time.sleep(TARGET_GAP_SECONDS)
            insert("B", 20_000_000)  # the commits after T that recovery must stop before
            if after_target is not None:
                after_target(pg)
                insert("B", 30_000_000)
            switch_and_archive(conn)
            source_rows = conn.execute("SELECT id, batch, payload, inserted_at FROM pitr_rows ORDER BY id").fetchall()
        if while_running is not None:
            while_running(pg)

    (backup,) = backups(reader, server_name, ro_env)
    if backup["status"] != "DONE":
        raise AssertionError(f"backup {backup['backup_id']} is {backup['status']}")
    with RecoveredServer(template, reader, server_name, backup["backup_id"], target, ro_env) as restored:
        figures["restore_seconds"] = {k: round(v, 2) for k, v in restored.timings.items()}
        with restored.connect() as conn:
            restored_rows = conn.execute("SELECT id, batch, payload, inserted_at FROM pitr_rows ORDER BY id").fetchall()
            timeline = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0]
            conn.execute("CREATE TABLE written_after_promotion (x int)")  # read-write: promoted
            point = restored.recovery_point()
            if not point["last_completed_transaction_at"]:
                raise AssertionError(f"no recovery point in the log:\n{restored.log_text()[-2000:]}")
            last = conn.execute("SELECT %s::timestamptz", (point["last_completed_transaction_at"],)).fetchone()[0]
        if with_restored is not None:
            with_restored(restored, target)
    figures.update(
        target_time=target,
        recovery_point=point,
        target_minus_last_restored_commit_ms=round((target_ts - last).total_seconds() * 1000, 3),
        rows_restored=len(restored_rows),
        total_seconds=round(time.monotonic() - started_all, 2),
    )
    return PitrRun(figures, source_rows, restored_rows, target, target_ts, last, timeline)
