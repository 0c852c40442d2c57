"""PostgreSQL parameters for the CloudNativePG ``Cluster`` (``spec.postgresql.parameters``).

A pure function of the settings: every value is a string (CNPG's API takes a map of
strings), ordering is stable, and nothing here does I/O.  The integration tests start a real
PostgreSQL with exactly this map (tests/integration/test_postgres_pgbouncer.py).
"""

from __future__ import annotations

import fnmatch
import math
import re
from typing import TYPE_CHECKING, Mapping, Optional

from tikit import units
from tikit.checks import unprintable

if TYPE_CHECKING:
    from tikit.derived import Derived
    from tikit.settings import Postgres

# Connections kept for superusers and the operator, on top of the pools.
SUPERUSER_RESERVED_CONNECTIONS = 3
# Headroom for the metrics exporter, CNPG's own probes and an operator's psql.
ADMIN_CONNECTIONS = 10
# Standbys, backups and pg_basebackup.  Since PostgreSQL 12 WAL senders have slots of their
# own and are not part of max_connections.
MAX_WAL_SENDERS = 10
# log_min_duration_statement: the notes' "slow queries > 1 s" (milliseconds).
SLOW_QUERY_MS = 1000
# With transaction pooling an idle open transaction pins a pooled server connection:
# idle_in_transaction_session_timeout ends it (seconds).
IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 60
# wal_keep_size for standbys without a slot, capped at this (and at what slots may pin).
WAL_KEEP_SIZE_MAX_MB = 512
# Planner costs for network SSDs: random reads cost about what sequential ones do
# (postgres.parameters overrides them for other storage).
RANDOM_PAGE_COST = "1.1"
EFFECTIVE_IO_CONCURRENCY = 200

# Parameters the CNPG webhook rejects because the operator owns them (reference:
# platform-apis.md, CloudNativePG).  Entries ending in '*' are prefixes.
OPERATOR_OWNED: tuple[str, ...] = (
    "archive_command",
    "archive_mode",
    "cluster_name",
    "data_directory",
    "hba_file",
    "hot_standby",
    "listen_addresses",
    "log_destination",
    "log_directory",
    "logging_collector",
    "port",
    "primary_conninfo",
    "recovery_target*",
    "restore_command",
    "shared_preload_libraries",
    "ssl*",
    "synchronous_standby_names",
    "unix_socket_*",
)

# wal_level 'minimal' cannot feed streaming replicas, so CNPG refuses it with > 1 instance
# and it would also break the London replica cluster; keep it out entirely.
WAL_LEVELS = ("replica", "logical")

# Share of the WAL volume that replication slots may pin.  A standby (or the London replica
# cluster) that falls further behind loses its slot and catches up from the WAL archive
# instead of filling pg_wal and stopping the primary.  The rest of the volume holds
# max_wal_size (1GB default) between checkpoints.
SLOT_WAL_SHARE_PERCENT = 25


# A parameter (GUC) name: an identifier of letters, digits and '_' not starting with a digit,
# or two of them joined by one '.' for an extension's parameter (pg_stat_statements.max).
# PostgreSQL truncates identifiers to NAMEDATALEN - 1 = 63 bytes.  Anything else (a
# newline, '=', a space) would not be one parameter in postgresql.conf.
GUC_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?", re.ASCII)
# Longer than any real setting (search_path, log_line_prefix, ...); keeps conf lines sane.
GUC_VALUE_MAX = 1024
# PostgreSQL refuses NaN for a real-valued parameter and infinity is outside every
# parameter's range: a value spelt like one is a typo or worse, whatever the parameter.
NON_FINITE_RE = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)


def _quoted(text: str, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def parameter_name_problem(name: str) -> Optional[str]:
    """Why ``name`` is not a parameter name postgresql.conf can hold, or None."""
    if not GUC_NAME_RE.fullmatch(name):
        return (
            f"{_quoted(name)} is not a PostgreSQL parameter name (letters, digits and '_', not starting with a "
            "digit, at most 63; one '.' for an extension's parameter)"
        )
    return None


def parameter_value_problem(name: str, value: str) -> Optional[str]:
    """Why ``value`` cannot be the value of parameter ``name``, or None: one line of
    printable text, not too long, never a non-finite number."""
    if len(value) > GUC_VALUE_MAX:
        return f"the value of '{name}' is {len(value)} characters; at most {GUC_VALUE_MAX} allowed"
    if char := unprintable(value):
        return f"the value of '{name}' contains the control character {char}"
    if NON_FINITE_RE.fullmatch(value.strip()) or _overflows(value):
        return f"the value of '{name}' is {value.strip()!r}, not a finite number"
    return None


def _overflows(value: str) -> bool:
    """'1e999': a number PostgreSQL cannot hold (Python reads it as infinity)."""
    try:
        return not math.isfinite(float(value))
    except ValueError:
        return False


# Overrides that would give up what the platform promises: durability after a crash, a
# bounded recovery point for the backup region, a WAL volume that cannot be filled by a slot.
BOOLEAN_ON = ("on", "true", "yes", "1", "t", "tr", "tru", "y", "ye")
MUST_STAY_ON = {
    "fsync": "without it a crash can corrupt the database",
    "full_page_writes": "without it a crash can leave torn pages that WAL cannot repair",
}
ZERO_DURATION_RE = re.compile(r"0+\s*(us|ms|s|min|h|d)?", re.IGNORECASE)
# PostgreSQL sizes: a number and an optional unit (wal_keep_size and max_slot_wal_keep_size
# count MB when no unit is given).
PG_SIZE_RE = re.compile(r"([0-9]{1,20})\s*(B|kB|MB|GB|TB)?")
PG_SIZE_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
# The parameters that keep WAL on the WAL volume, which they must fit.
WAL_VOLUME_PARAMETERS = ("wal_keep_size", "max_slot_wal_keep_size")


def pg_size_bytes(value: str, default_unit: str = "MB") -> Optional[int]:
    """'512MB' -> 536870912 (None for anything else, such as -1)."""
    m = PG_SIZE_RE.fullmatch(value.strip())
    return int(m.group(1)) * PG_SIZE_UNITS[m.group(2) or default_unit] if m else None


def unsafe_parameter(name: str, value: str) -> Optional[str]:
    """Why an override gives up durability or bounded WAL, or None."""
    key, v = name.lower(), value.strip()
    if key in MUST_STAY_ON and v.lower() not in BOOLEAN_ON:
        return f"{name} = {v!r}: {key} must stay on; {MUST_STAY_ON[key]}"
    if key == "archive_timeout" and ZERO_DURATION_RE.fullmatch(v):
        return f"{name} = {v!r} never forces a WAL switch: a quiet primary would leave the backup region and PITR arbitrarily far behind"
    if key == "max_slot_wal_keep_size" and v.startswith("-"):
        return f"{name} = {v!r} lets a lagging replication slot keep WAL until the WAL volume is full and PostgreSQL stops"
    return None


def wal_volume_problem(parameters: Mapping[str, str], wal_volume_bytes: int) -> Optional[str]:
    """Why a WAL-keeping override does not fit the WAL volume, or None."""
    for name, value in parameters.items():
        if name.lower() in WAL_VOLUME_PARAMETERS:
            size = pg_size_bytes(value)
            if size is not None and size >= wal_volume_bytes:
                return f"{name} = {value!r} keeps at least as much WAL as the whole WAL volume ({wal_volume_bytes // units.MIB}MB) holds"
    return None


def is_operator_owned(name: str) -> bool:
    """True when CNPG owns ``name`` (GUC names are case-insensitive)."""
    return any(fnmatch.fnmatchcase(name.lower(), pattern) for pattern in OPERATOR_OWNED)


def parameters_problem(parameters: Mapping[str, str]) -> Optional[str]:
    """Why ``postgres.parameters`` overrides cannot be applied, or None.

    settings.load() calls this before any resource exists: a name that is not a parameter
    name, a value that is not one line of finite text, a parameter given twice (names are
    case-insensitive), a parameter the operator owns (its webhook would reject the Cluster)
    or a wal_level that cannot replicate."""
    seen: dict[str, str] = {}
    for name, value in parameters.items():
        if problem := parameter_name_problem(name):
            return problem
        if name.lower() in seen:
            return f"'{name}' is given more than once (as '{seen[name.lower()]}' too; parameter names are case-insensitive)"
        seen[name.lower()] = name
        if is_operator_owned(name):
            return f"'{name}' is managed by the CloudNativePG operator and cannot be set; remove it"
        if problem := parameter_value_problem(name, value) or unsafe_parameter(name, value):
            return problem
    wal_level = {name.lower(): value for name, value in parameters.items()}.get("wal_level")
    if wal_level is not None and wal_level not in WAL_LEVELS:
        return f"wal_level must be one of {', '.join(WAL_LEVELS)}; got {wal_level!r}"
    return None


def derived_parameters(pg: Postgres, d: Derived) -> dict[str, str]:
    """The parameters we compute from settings, before the user's overrides."""
    slot_wal_mb = units.mebibytes(pg.wal_storage_size) * SLOT_WAL_SHARE_PERCENT // 100
    return {
        # max_connections = 2 x pgbouncer.replicas x (default_pool_size + reserve_pool_size)
        #                   + superuser_reserved + admin headroom
        # (both pools may land on one instance; docs/sizing.md shows the arithmetic).  WAL
        # senders are not in it: since PostgreSQL 12 they have slots of their own.
        "max_connections": str(d.postgres_max_connections),
        "superuser_reserved_connections": str(SUPERUSER_RESERVED_CONNECTIONS),
        "max_wal_senders": str(MAX_WAL_SENDERS),
        # Memory: 25% / 75% of the limit, work_mem shared among all connections (docs/sizing.md).
        "shared_buffers": f"{d.postgres_shared_buffers_mb}MB",
        "effective_cache_size": f"{d.postgres_effective_cache_size_mb}MB",
        "work_mem": f"{d.postgres_work_mem_mb}MB",
        "maintenance_work_mem": f"{d.postgres_maintenance_work_mem_mb}MB",
        # WAL retention: keep a little for standbys without slots, cap what slots may pin.
        "wal_keep_size": f"{min(WAL_KEEP_SIZE_MAX_MB, slot_wal_mb)}MB",
        "max_slot_wal_keep_size": f"{slot_wal_mb}MB",
        "checkpoint_completion_target": "0.9",
        # Network SSDs: random reads cost about the same as sequential ones.
        "random_page_cost": RANDOM_PAGE_COST,
        "effective_io_concurrency": str(EFFECTIVE_IO_CONCURRENCY),
        # The notes' "slow queries > 1s": statements slower than SLOW_QUERY_MS are logged
        # with their duration (milliseconds).
        "log_min_duration_statement": str(SLOW_QUERY_MS),
        "log_lock_waits": "on",
        "log_temp_files": "10MB",
        "track_io_timing": "on",
        # With transaction pooling an idle open transaction pins one of only
        # default_pool_size server connections; end it after
        # IDLE_IN_TRANSACTION_TIMEOUT_SECONDS.  There is no global statement_timeout:
        # backups, migrations and VACUUM legitimately run long, so the application sets one
        # per session or role instead.
        "idle_in_transaction_session_timeout": f"{IDLE_IN_TRANSACTION_TIMEOUT_SECONDS}s",
        # PgBouncer's SCRAM pass-through needs SCRAM verifiers on the server side.
        "password_encryption": "scram-sha-256",
    }


def postgres_parameters(pg: Postgres, d: Derived) -> dict[str, str]:
    """``spec.postgresql.parameters``: derived values merged with ``postgres.parameters``
    (already checked by settings.load() against ``parameters_problem``)."""
    # GUC names are case-insensitive: lower-case them so an override replaces, not duplicates.
    overrides = {name.lower(): value for name, value in pg.parameters.items()}
    merged = {**derived_parameters(pg, d), **overrides}
    return dict(sorted(merged.items()))
