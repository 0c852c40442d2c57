"""Redis tier text: redis.conf, sentinel.conf, the pods' start scripts, the backup and restore
scripts, and the REDIS_URL the backend and workers read.

Pure functions: values in, text out, stable ordering, no I/O.  The Redis component puts the
config files and scripts into ConfigMaps; the integration tests (tests/integration/test_redis_daemons.py)
feed the very same text to real redis-server and redis-sentinel processes, rewriting only the
port, the directories and the host names, and run the very same shell scripts.

Redis is both the shared cache and the job queue (settings.workers.queue_name), so an
acknowledged queue entry is data: persistence is AOF (everysec) plus RDB snapshots, nothing
that carries the queue may be evicted, and the hourly backup is a verified RDB snapshot in the
object store (docs/runbooks/redis-restore.md restores it).

No password is ever part of this text.  The pods get it from the ``redis-auth`` Secret as an
environment variable and pass it at start: ``--requirepass``/``--masterauth`` on the
redis-server command line, a ``sentinel auth-pass`` line appended to a private copy of
sentinel.conf, ``REDISCLI_AUTH`` for redis-cli.  ``redis_url`` takes the password as a
parameter; the caller applies it to the Pulumi secret Output, which keeps the result secret.

Everything rendered here works on Redis 7.0 (Debian's, which the tests run) and on 7.4
(settings.redis.image): no directive newer than 7.0 is used.
"""

from __future__ import annotations

import shlex
import textwrap
import urllib.parse
from dataclasses import dataclass
from typing import Optional, Sequence, Union
from urllib.parse import quote

from tikit import names
from tikit import settings

# --------------------------------------------------------------------------------------
# Paths inside the pods.  The component mounts the ConfigMaps and volumes at these paths.
# --------------------------------------------------------------------------------------

DATA_DIR = "/data"                       # the PVC
TEMPLATE_DIR = "/etc/redis-template"     # ConfigMap (read-only): redis.conf, sentinel.conf, scripts
LIVE_DIR = "/etc/redis"                  # emptyDir: the writable copy each daemon runs from
DBFILENAME = "dump.rdb"
APPENDDIRNAME = "appendonlydir"
APPENDFILENAME = "appendonly.aof"
REDIS_CONF = "redis.conf"
SENTINEL_CONF = "sentinel.conf"
PASSWORD_ENV = "REDIS_PASSWORD"          # env var the pods fill from the redis-auth Secret

# Listen on every IPv4 and IPv6 address; '-' makes IPv6 optional, so the same line works in
# IPv4-only, IPv6-only and dual-stack pods (a plain 0.0.0.0 would miss IPv6-only clusters).
DEFAULT_BIND = "* -::*"

# Commands no Tikit client needs and whose accidental use would lose the queue (FLUSHALL,
# FLUSHDB) or stall the single-threaded server for seconds (KEYS on millions of keys; SCAN is
# the incremental alternative).  CONFIG stays: Sentinel sends CONFIG REWRITE on failover (a
# renamed CONFIG would need `sentinel rename-command` on every sentinel), the restore runbook
# uses CONFIG SET appendonly and the exporter reads CONFIG GET maxmemory.  DEBUG and MODULE
# are switched off by their own 7.0 directives instead of renames (see redis_settings).
DISABLED_COMMANDS = ("FLUSHALL", "FLUSHDB", "KEYS")

# A primary that has heard nothing from any replica for this long stops taking writes (when
# min-replicas-to-write is on): the bound on what a partitioned old primary can accept and
# then lose once Sentinel has promoted someone else.
MIN_REPLICAS_MAX_LAG_SECONDS = 10
# Detect dead peers (workers on reclaimed spot nodes) in about a minute instead of the
# kernel's two hours, so their connections and blocked pops do not pile up.
TCP_KEEPALIVE_SECONDS = 60
LATENCY_MONITOR_THRESHOLD_MS = 100
SLOWLOG_SLOWER_THAN_US = 10_000
SLOWLOG_MAX_LEN = 256
# How long the scripts wait for one redis-cli call that asks Sentinel or a replica.
ASK_TIMEOUT_SECONDS = 5
# A replica is in sync for a backup when its link is up and it heard from the primary this
# recently: the primary pings replicas every 10 s (repl-ping-replica-period), so two periods.
REPLICA_MAX_SILENCE_SECONDS = 20

Value = Union[str, int]
# (directive, value, why): `why` becomes a comment above the line; None for the obvious ones.
Entry = tuple[str, Value, Optional[str]]


# --------------------------------------------------------------------------------------
# Host names
# --------------------------------------------------------------------------------------


def pod_host(pod: str, namespace: str, service: str = names.REDIS_HEADLESS) -> str:
    """Stable DNS name of a StatefulSet pod behind its governing headless Service."""
    return f"{pod}.{names.service_host(service, namespace)}"


def bootstrap_primary_host(namespace: str) -> str:
    """Ordinal 0 is the primary until Sentinel says otherwise."""
    return pod_host(f"{names.REDIS}-0", namespace)


def sentinel_hosts(r: settings.Redis, namespace: str) -> list[tuple[str, int]]:
    """Every sentinel's address, assuming the sentinels are a StatefulSet named
    ``redis-sentinel`` governed by a headless Service of the same name."""
    return [
        (pod_host(f"{names.REDIS_SENTINEL}-{i}", namespace, names.REDIS_SENTINEL), names.REDIS_SENTINEL_PORT)
        for i in range(r.sentinels)
    ]


# --------------------------------------------------------------------------------------
# redis.conf
# --------------------------------------------------------------------------------------


def min_replicas_to_write(r: settings.Redis) -> int:
    """1 when a Sentinel failover can happen and the primary has two replicas, else 0.

    Replication is asynchronous, so when Sentinel promotes a replica while the old primary is
    merely cut off, whatever clients still write to the old primary is lost when it rejoins as
    a replica.  With 1, a primary that has not heard from any replica for
    MIN_REPLICAS_MAX_LAG_SECONDS refuses writes (NOREPLICAS), which bounds that loss.  The
    price is availability: writes stop when no replica is in sync, so it is only on with at
    least two replicas (one may restart or resync without stopping writes), and never without
    Sentinel, where no failover can split the brain and a restarting replica would only cost
    writes.
    """
    return 1 if r.sentinels and r.replicas >= 3 else 0


def redis_settings(
    r: settings.Redis,
    *,
    maxmemory_bytes: int,
    port: int = names.REDIS_PORT,
    dir: str = DATA_DIR,
    bind: str = DEFAULT_BIND,
    replica_of: Optional[tuple[str, int]] = None,
) -> list[Entry]:
    """redis.conf as ordered (directive, value, why) entries; ``redis_conf`` renders them."""
    if maxmemory_bytes <= 0:
        raise ValueError(f"maxmemory_bytes must be positive, got {maxmemory_bytes}")
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    min_replicas = min_replicas_to_write(r)
    entries: list[Entry] = [
        # ---- network ----
        ("bind", bind, "Every interface of the pod; NetworkPolicy decides who may connect."),
        (
            "protected-mode",
            "yes",
            "Only bites when the default user has no password: then just loopback may connect."
            " The pods always start with --requirepass, so this is a fail-closed net should"
            " the password ever be missing.",
        ),
        ("port", port, None),
        ("timeout", 0, "Never drop idle clients: connection pools and blocked queue pops stay open."),
        ("tcp-keepalive", TCP_KEEPALIVE_SECONDS, "Notice dead peers (reclaimed spot nodes) within a minute."),
        ("daemonize", "no", None),
        ("logfile", '""', "Log to stdout, which the container runtime collects."),
        ("loglevel", "notice", None),
        # ---- persistence ----
        ("dir", dir, None),
        ("dbfilename", DBFILENAME, None),
        (
            "appendonly",
            "yes",
            "The queue is data: every write goes to the append-only file, replayed on restart.",
        ),
        ("appenddirname", APPENDDIRNAME, None),
        ("appendfilename", APPENDFILENAME, None),
        (
            "appendfsync",
            r.appendfsync,
            "everysec: fsync once a second, so a node crash loses at most about a second"
            " (two when the disk stalls) of acknowledged writes.",
        ),
        (
            "no-appendfsync-on-rewrite",
            "no",
            "Keep fsyncing while a rewrite or BGSAVE runs; 'yes' would widen the loss window.",
        ),
        ("auto-aof-rewrite-percentage", 100, None),
        ("auto-aof-rewrite-min-size", "64mb", None),
        (
            "aof-use-rdb-preamble",
            "yes",
            "Rewrites start with an RDB image: smaller files and faster restarts.",
        ),
        (
            "aof-load-truncated",
            "yes",
            "A crash can cut the last command in half; load what is whole instead of refusing to start.",
        ),
        (
            "save",
            " ".join(r.save_rules) or '""',
            "RDB snapshots (seconds changes pairs from settings.redis.saveRules): a second,"
            " compact copy on the volume next to the AOF.",
        ),
        (
            "stop-writes-on-bgsave-error",
            "yes",
            "A snapshot that cannot be written (disk full, fork refused) fails writes loudly"
            " instead of silently running without a restorable copy.",
        ),
        ("rdbcompression", "yes", None),
        ("rdbchecksum", "yes", None),
        # ---- memory ----
        (
            "maxmemory",
            maxmemory_bytes,
            "settings.derived.redis_maxmemory_bytes = redis.maxmemoryPercent of the container"
            " memory limit.  The rest of the limit is headroom for what maxmemory does not count:"
            " the copy-on-write fork of BGSAVE and AOF rewrites, replication and AOF buffers"
            " (docs/sizing.md shows the arithmetic).",
        ),
        (
            "maxmemory-policy",
            r.maxmemory_policy,
            "volatile-*: only keys with a TTL (the cache) are ever evicted.  Queue keys never"
            " carry a TTL, so when memory is full of them writes fail with OOM errors, loudly,"
            " instead of Redis silently dropping queued jobs.",
        ),
        # ---- replication ----
        ("replica-read-only", "yes", None),
        (
            "repl-diskless-sync",
            "yes",
            "Full syncs (new replicas, redis-cli --rdb backups) stream the snapshot over the"
            " socket instead of writing it to the volume first.",
        ),
        ("repl-diskless-sync-delay", 5, None),
        (
            "repl-diskless-sync-max-replicas",
            max(1, r.replicas - 1),
            "Start the transfer as soon as every replica we run is waiting instead of always"
            " waiting out the delay, which only exists to batch replicas into one fork.",
        ),
        (
            "min-replicas-to-write",
            min_replicas,
            "1 only with Sentinel and two replicas: bounds what a cut-off old primary can"
            " accept and then lose after a failover (see min_replicas_to_write in"
            " infra/conf/redis.py for the trade-off).",
        ),
        ("min-replicas-max-lag", MIN_REPLICAS_MAX_LAG_SECONDS, None),
    ]
    if replica_of is not None:
        host, primary_port = replica_of
        entries.append(("replicaof", f"{host} {primary_port}", None))
    entries += [
        # ---- safety ----
        *_disabled_commands(),
        ("enable-debug-command", "no", "DEBUG can crash or stall the server; nobody needs it in production."),
        ("enable-module-command", "no", None),
        (
            "enable-protected-configs",
            "no",
            "CONFIG SET may not change dir or dbfilename (the classic way to write files with"
            " a stolen password).",
        ),
        (
            "shutdown-timeout",
            r.shutdown_timeout_seconds,
            "On SIGTERM let replicas catch up first (settings.redis.shutdownTimeoutSeconds);"
            " the pods' terminationGracePeriodSeconds covers it plus the final save.",
        ),
        # ---- observability ----
        ("latency-monitor-threshold", LATENCY_MONITOR_THRESHOLD_MS, "Record events slower than 100 ms (LATENCY LATEST)."),
        ("slowlog-log-slower-than", SLOWLOG_SLOWER_THAN_US, "Microseconds: log commands slower than 10 ms."),
        ("slowlog-max-len", SLOWLOG_MAX_LEN, None),
    ]
    return entries


def _disabled_commands() -> list[Entry]:
    why = "Disabled (renamed to nothing): see DISABLED_COMMANDS in infra/conf/redis.py."
    return [("rename-command", f'{c} ""', why if i == 0 else None) for i, c in enumerate(DISABLED_COMMANDS)]


def redis_conf(
    r: settings.Redis,
    *,
    maxmemory_bytes: int,
    port: int = names.REDIS_PORT,
    dir: str = DATA_DIR,
    bind: str = DEFAULT_BIND,
    replica_of: Optional[tuple[str, int]] = None,
) -> str:
    """redis.conf for every data pod (primary and replicas alike: roles are decided at start
    by ``redis_start_script``).  ``maxmemory_bytes`` is settings.derived.redis_maxmemory_bytes.
    ``replica_of`` is for running the file outside Kubernetes (the tests); the pods pass
    ``--replicaof`` at start instead."""
    entries = redis_settings(
        r, maxmemory_bytes=maxmemory_bytes, port=port, dir=dir, bind=bind, replica_of=replica_of
    )
    return _render("# Rendered by tikit-infra (infra/conf/redis.py). Do not edit by hand.", entries)


def _render(header: str, entries: Sequence[Entry]) -> str:
    lines = [header, "# No password here: it arrives at start from the redis-auth Secret.", ""]
    for key, value, why in entries:
        if why:
            lines.extend(f"# {line}" for line in textwrap.wrap(why, 96))
        lines.append(f"{key} {value}")
    return "\n".join(lines) + "\n"


def parse_directives(text: str) -> list[tuple[str, str]]:
    """Inverse of the renderers above: (directive, value) per line, comments and blank lines
    skipped, in file order.  The tests compare rendered files with it."""
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.append((key, value))
    return out


def redis_server_args(password_env: str = PASSWORD_ENV) -> list[str]:
    """Shell words that hand the password to redis-server from the environment.

    --masterauth on every node, not just replicas: after a failover any node may have to
    authenticate to a new primary.  Redis overwrites its process title, so the password does
    not stay visible in the process list; ``--requirepass ""`` would mean *no* password, which
    is why the start script refuses an empty variable first.
    """
    ref = f'"${password_env}"'
    return ["--requirepass", ref, "--masterauth", ref]


# --------------------------------------------------------------------------------------
# sentinel.conf
# --------------------------------------------------------------------------------------


def sentinel_settings(
    r: settings.Redis,
    *,
    primary_host: str,
    primary_port: int,
    port: int = names.REDIS_SENTINEL_PORT,
    master_name: str = names.REDIS_MASTER_NAME,
    dir: str = LIVE_DIR,
    bind: str = DEFAULT_BIND,
) -> list[Entry]:
    if not r.sentinels:
        raise ValueError("settings.redis.sentinels is 0: this environment runs no Sentinel")
    name = master_name
    return [
        ("bind", bind, None),
        ("port", port, None),
        (
            "protected-mode",
            "no",
            "Sentinel has no password of its own; with protected mode on it would only answer"
            " loopback.  NetworkPolicy must limit port 26379 to the Redis pods, the sentinels,"
            " the backup job and the app.",
        ),
        ("daemonize", "no", None),
        ("logfile", '""', None),
        ("dir", dir, None),
        (
            "sentinel resolve-hostnames",
            "yes",
            "Pods are addressed by their stable DNS names, never by IPs that change on"
            " restart.  Must come before the monitor line.",
        ),
        (
            "sentinel announce-hostnames",
            "yes",
            "Hand those names (not IPs) to clients and to the other sentinels.",
        ),
        (
            f"sentinel monitor {name}",
            f"{primary_host} {primary_port} {r.sentinel_quorum}",
            "Bootstrap primary and quorum: how many sentinels must agree it is down.  The start"
            " script replaces the address with the current primary when another sentinel knows it.",
        ),
        (f"sentinel down-after-milliseconds {name}", r.down_after_ms, None),
        (
            f"sentinel failover-timeout {name}",
            r.failover_timeout_ms,
            "A promotion must finish within down-after-milliseconds + failover-timeout.",
        ),
        (
            f"sentinel parallel-syncs {name}",
            1,
            "Replicas resync with the new primary one at a time, so the others keep serving.",
        ),
    ]


def sentinel_conf(
    r: settings.Redis,
    *,
    primary_host: str,
    primary_port: int,
    port: int = names.REDIS_SENTINEL_PORT,
    master_name: str = names.REDIS_MASTER_NAME,
    dir: str = LIVE_DIR,
    bind: str = DEFAULT_BIND,
) -> str:
    """sentinel.conf template (no auth-pass: ``sentinel_start_script`` appends it)."""
    entries = sentinel_settings(
        r,
        primary_host=primary_host,
        primary_port=primary_port,
        port=port,
        master_name=master_name,
        dir=dir,
        bind=bind,
    )
    return _render("# Rendered by tikit-infra (infra/conf/redis.py). Do not edit by hand.", entries)


# --------------------------------------------------------------------------------------
# Start scripts (POSIX sh; the redis image's /bin/sh is dash)
# --------------------------------------------------------------------------------------

# Print "<host> <port>" of the primary Sentinel reports, or nothing when no sentinel answers.
# redis-cli exits 0 even on error replies, so the answer is validated, not the exit status.
# timeout(1): redis-cli 7.0 has no connect timeout, and a Service without endpoints can leave
# a connect hanging for minutes on some networks.
_ASK_SENTINEL = f"""\
ask_sentinel() {{
    answer=$(timeout {ASK_TIMEOUT_SECONDS} redis-cli -h "$1" -p "$2" --raw SENTINEL get-master-addr-by-name "$3" 2>/dev/null) || return 0
    ask_host=$(printf '%s\\n' "$answer" | sed -n 1p)
    ask_port=$(printf '%s\\n' "$answer" | sed -n 2p)
    case "$ask_port" in ''|*[!0-9]*) return 0 ;; esac
    case "$ask_host" in ''|*' '*) return 0 ;; esac
    printf '%s %s\\n' "$ask_host" "$ask_port"
}}
"""


def redis_start_script(
    r: settings.Redis,
    *,
    namespace: str,
    port: int = names.REDIS_PORT,
    sentinel_service: Optional[tuple[str, int]] = None,
    master_name: str = names.REDIS_MASTER_NAME,
    template: str = f"{TEMPLATE_DIR}/{REDIS_CONF}",
    live_dir: str = LIVE_DIR,
    announce_host: Optional[str] = None,
    password_env: str = PASSWORD_ENV,
) -> str:
    """Entry point of the data pods (StatefulSet ``redis``, headless Service ``redis-headless``).

    With Sentinel, the pod asks the sentinels for the current primary and starts as its
    replica (or as primary when that is itself); when no sentinel answers (first boot) and
    without Sentinel, ordinal 0 is the primary and the others replicate ``redis-0``.  The pod
    name comes from POD_NAME (downward API) or, failing that, hostname(1).

    Each pod announces ``announce_host`` (default: its stable DNS name
    ``$pod.redis-headless.<namespace>.svc.cluster.local``) to its primary, so Sentinel and
    clients see names that survive pod restarts, and compares it with Sentinel's answer to
    know whether it is itself the primary.
    """
    headless = names.service_host(names.REDIS_HEADLESS, namespace)
    live_conf = shlex.quote(f"{live_dir}/{REDIS_CONF}")
    primary0 = f"{bootstrap_primary_host(namespace)} {port}"
    if sentinel_service is None:
        sentinel_service = (names.service_host(names.REDIS_SENTINEL, namespace), names.REDIS_SENTINEL_PORT)
    lines = [
        "#!/bin/sh",
        "# Redis data pod entry point. Rendered by tikit-infra (infra/conf/redis.py).",
        "set -eu",
        f': "${{{password_env}:?{password_env} is empty: refusing to start a Redis without a password}}"',
        'pod="${POD_NAME:-$(hostname)}"',
        f'self="{announce_host or "$pod." + headless}"',
        "# Sentinel's failover sends CONFIG REWRITE, which needs a writable file: run from a copy.",
        f"mkdir -p {shlex.quote(live_dir)}",
        f"cp {shlex.quote(template)} {live_conf}",
        'primary=""',
    ]
    if r.sentinels:
        s_host, s_port = sentinel_service
        lines += [
            _ASK_SENTINEL.rstrip("\n"),
            "# After a failover the primary is whoever Sentinel says, not necessarily ordinal 0.",
            f'primary=$(ask_sentinel {s_host} {s_port} {master_name})',
        ]
    lines += [
        'if [ -z "$primary" ]; then',
        "    # First boot (or no Sentinel): ordinal 0 is the primary.  Should ordinal 0 come back",
        "    # as primary while the sentinels are down, they turn it into a replica once they are up.",
        '    case "$pod" in',
        "        *-0) ;;",
        f'        *) primary="{primary0}" ;;',
        "    esac",
        "fi",
        f'if [ "$primary" = "$self {port}" ]; then primary=""; fi',
        f'set -- {live_conf} {" ".join(redis_server_args(password_env))} --replica-announce-ip "$self"',
        'if [ -n "$primary" ]; then',
        "    # shellcheck disable=SC2086 # two words: host and port",
        "    set -- \"$@\" --replicaof $primary",
        "fi",
        'exec redis-server "$@"',
    ]
    return "\n".join(lines) + "\n"


def sentinel_start_script(
    r: settings.Redis,
    *,
    sentinel_service: tuple[str, int],
    master_name: str = names.REDIS_MASTER_NAME,
    template: str = f"{TEMPLATE_DIR}/{SENTINEL_CONF}",
    live_dir: str = LIVE_DIR,
    announce_domain: Optional[str] = None,
    announce_port: int = names.REDIS_SENTINEL_PORT,
    password_env: str = PASSWORD_ENV,
) -> str:
    """Entry point of the sentinel pods: copy the template to a writable dir (Sentinel
    rewrites its own config file), follow the primary the other sentinels already agree on,
    append ``sentinel auth-pass`` from the environment, exec redis-sentinel.

    ``announce_domain``: when the sentinels are a StatefulSet, pass their headless Service
    domain so each announces ``$POD_NAME.<domain>``.  A stable name matters: a sentinel that
    comes back under a new IP would otherwise linger in its peers' tables as a dead sentinel
    that still counts toward the majority a failover needs.
    """
    if not r.sentinels:
        raise ValueError("settings.redis.sentinels is 0: this environment runs no Sentinel")
    s_host, s_port = sentinel_service
    conf = shlex.quote(f"{live_dir}/{SENTINEL_CONF}")
    template = shlex.quote(template)
    lines = [
        "#!/bin/sh",
        "# Sentinel entry point. Rendered by tikit-infra (infra/conf/redis.py).",
        "set -eu",
        f': "${{{password_env}:?{password_env} is empty}}"',
        _ASK_SENTINEL.rstrip("\n"),
        f"mkdir -p {shlex.quote(live_dir)}",
        f"current=$(ask_sentinel {s_host} {s_port} {master_name})",
        'if [ -n "$current" ]; then',
        "    # The template names the bootstrap primary; after a failover that is a replica, or gone.",
        f'    sed "s|^sentinel monitor {master_name} .*|sentinel monitor {master_name} $current {r.sentinel_quorum}|"'
        f" {template} > {conf}",
        "else",
        f"    cp {template} {conf}",
        "fi",
        "# Quoted for Redis' config parser: backslash and double quote escaped.",
        f"password=$(printf '%s' \"${password_env}\" | sed 's/[\\\\\"]/\\\\&/g')",
        f"printf 'sentinel auth-pass {master_name} \"%s\"\\n' \"$password\" >> {conf}",
    ]
    if announce_domain:
        lines += [
            'pod="${POD_NAME:-$(hostname)}"',
            f'printf \'sentinel announce-ip %s\\nsentinel announce-port %s\\n\' "$pod.{announce_domain}" {announce_port} >> {conf}',
        ]
    lines.append(f"exec redis-sentinel {conf}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Backup and restore (POSIX sh)
# --------------------------------------------------------------------------------------
#
# Design: the backup CronJob connects to Redis over the network; it cannot read the PVC,
# which only the data pod mounts (ReadWriteOnce).  So it
#   1. sends BGSAVE to the chosen node (see below) and waits until INFO persistence shows it
#      finished (rdb_bgsave_in_progress:0, rdb_last_bgsave_status:ok) with a newer LASTSAVE:
#      proof the node's own persistence works, and a fresh dump.rdb on the volume, the
#      quickest restore source while the volume survives;
#   2. streams a fresh snapshot with `redis-cli --rdb` (the replication protocol: the server
#      forks and sends an RDB; it works remotely), checks it with redis-check-rdb, uploads it;
#   3. prunes timestamped backups older than the retention.
# The RDB is the backup artifact.  The AOF cannot be fetched remotely and stays on the
# volume: it covers crashes, the object-store RDB covers losing the volume or the region.
#
# Which node: an in-sync replica when there is one, else the primary.  A replica's snapshot
# lags the primary by the replication delay (milliseconds when the link is up, which the
# script checks), nothing next to an hourly schedule, and it keeps both forks off the node
# that serves every write.  It also keeps Sentinel clean: Sentinel learns replicas from the
# primary's INFO, where the `redis-cli --rdb` connection shows up as a replica with port 0,
# and it would remember one such phantom per backup (the job's pod IP changes every run).
# The memory headroom left by maxmemory covers the forks on whichever node it is.
#
# Layout: <STORE>/redis/<region>/<UTC timestamp YYYYmmddTHHMMSSZ>/{dump.rdb,backup.info}.
# backup.info is written last and carries the checksum: a directory without it is an
# incomplete upload, which restore skips.
#
# Where backups live is pluggable: four shell functions (store_put, store_get, store_list,
# store_delete) chosen by the STORE URL.  s3://bucket[/prefix] uses rclone (a static binary
# the CronJob's init container copies from settings.redis.rclone_image into the redis image,
# with that image's CA bundle for SSL_CERT_FILE, since the redis image has none; S3 keys from
# the credentials Secret as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY);
# file:///path uses cp and ls, which is how the tests run the very same script.

TIMESTAMP_GLOB = "[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z"


def _s3_settings(endpoint_url: str) -> list[tuple[str, str]]:
    """rclone's S3 backend options as environment variables (no config file needed)."""
    host = urllib.parse.urlsplit(endpoint_url).hostname or ""
    out = [("RCLONE_S3_ENDPOINT", endpoint_url), ("RCLONE_S3_ENV_AUTH", "true"),
           ("RCLONE_S3_NO_CHECK_BUCKET", "true")]
    if host.endswith(".amazonaws.com"):
        out.append(("RCLONE_S3_PROVIDER", "AWS"))
        parts = host.split(".")  # s3.<region>.amazonaws.com
        if len(parts) == 4 and parts[0] == "s3":
            out.append(("RCLONE_S3_REGION", parts[1]))
    else:
        out.append(("RCLONE_S3_PROVIDER", "Other"))
    return sorted(out)


def _store_functions(endpoint_url: str) -> str:
    exports = "\n".join(f'    export {k}="${{{k}:-{v}}}"' for k, v in _s3_settings(endpoint_url))
    return f"""\
# ---- the store: the only part that knows where backups live ----
case "$STORE" in
file://*)
    root="${{STORE#file://}}"
    store_put() {{ mkdir -p "$root/$(dirname "$2")" && cp "$1" "$root/$2.part" && mv "$root/$2.part" "$root/$2"; }}
    store_get() {{ cp "$root/$1" "$2"; }}
    store_list() {{ if [ -d "$root/$1" ]; then ls -1 "$root/$1"; fi; }}
    store_delete() {{ rm -rf "${{root:?}}/$1"; }}
    ;;
s3://*)
    remote=":s3:${{STORE#s3://}}"
{exports}
    export HOME="${{HOME:-/tmp}}"
    store_put() {{ rclone copyto "$1" "$remote/$2"; }}
    store_get() {{ rclone copyto "$remote/$1" "$2"; }}
    store_list() {{ rclone lsf "$remote/$1" | sed 's:/$::'; }}
    store_delete() {{ rclone purge "$remote/$1"; }}
    ;;
*) die "STORE must be file:///path or s3://bucket[/prefix], got '$STORE'" ;;
esac
"""


# Print "<host> <port>" of each replica Sentinel considers healthy (flags exactly "slave":
# not down; master link ok).  --raw prints one field name, then its value, per line.
_SENTINEL_REPLICAS = """\
sentinel_replicas() {
    timeout @ASK_TIMEOUT@ redis-cli -h "$1" -p "$2" --raw SENTINEL replicas "$3" 2>/dev/null | tr -d '\\r' | awk '
        function flush() { if (ip != "" && flags == "slave" && link == "ok") print ip, port; ip = port = flags = link = "" }
        NR % 2 == 1 { key = $0; if (key == "name") flush(); next }
        key == "ip" { ip = $0 } key == "port" { port = $0 } key == "flags" { flags = $0 }
        key == "master-link-status" { link = $0 }
        END { flush() }'
}
"""

# Read "<host> <port>" lines; print the first replica that is in sync right now.
_PICK_REPLICA = """\
pick_replica() {
    while read -r h p; do
        info=$(timeout @ASK_TIMEOUT@ redis-cli -h "$h" -p "$p" INFO replication 2>/dev/null </dev/null) || continue
        [ "$(field role "$info")" = slave ] || continue
        [ "$(field master_link_status "$info")" = up ] || continue
        [ "$(field master_sync_in_progress "$info")" = 0 ] || continue
        silence=$(field master_last_io_seconds_ago "$info")
        case "$silence" in ''|*[!0-9]*) continue ;; esac
        [ "$silence" -le "$REPLICA_MAX_SILENCE" ] || continue
        printf '%s %s\\n' "$h" "$p"
        return 0
    done
}
"""

_COMMON = """\
log() { printf '%s %s: %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SCRIPT" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
field() { printf '%s\\n' "$2" | tr -d '\\r' | sed -n "s/^$1://p"; }
"""


def backup_prefix(region: str) -> str:
    return f"redis/{region}"


def backup_script(
    r: settings.Redis,
    *,
    namespace: str,
    region: str,
    store: str,
    s3_endpoint: str,
    port: int = names.REDIS_PORT,
    master_name: str = names.REDIS_MASTER_NAME,
) -> str:
    """The hourly backup (CronJob ``redis-backup``, redis image + rclone, restricted).

    Environment: REDISCLI_AUTH (the password, from the Secret); for s3:// stores
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, rclone on PATH and SSL_CERT_FILE.  STORE,
    REDIS_HOST/REDIS_PORT (skip choosing a node), SENTINEL_HOST/SENTINEL_PORT and TMPDIR
    override the rendered defaults; the tests use them to point the same script at local
    daemons and a local directory.
    """
    if not store.startswith("s3://") and not store.startswith("file://"):
        raise ValueError(f"store must be s3://bucket[/prefix] or file:///path, got {store!r}")
    sentinel_host = names.service_host(names.REDIS_SENTINEL, namespace)
    if r.sentinels:
        discover = f"""\
    SENTINEL_HOST="${{SENTINEL_HOST:-{sentinel_host}}}"
    SENTINEL_PORT="${{SENTINEL_PORT:-{names.REDIS_SENTINEL_PORT}}}"
    primary=$(ask_sentinel "$SENTINEL_HOST" "$SENTINEL_PORT" {master_name})
    [ -n "$primary" ] || die "no sentinel at $SENTINEL_HOST:$SENTINEL_PORT knows the primary"
    replica=$(sentinel_replicas "$SENTINEL_HOST" "$SENTINEL_PORT" {master_name} | pick_replica)"""
    else:
        replicas = "".join(
            f"{pod_host(f'{names.REDIS}-{i}', namespace)} {port}\\n" for i in range(1, r.replicas)
        )
        discover = f"""\
    primary="{bootstrap_primary_host(namespace)} {port}"
    replica=$(printf '{replicas}' | pick_replica)"""
    sentinel_functions = _ASK_SENTINEL + _SENTINEL_REPLICAS if r.sentinels else ""
    sentinel_functions = sentinel_functions.replace("@ASK_TIMEOUT@", str(ASK_TIMEOUT_SECONDS))
    pick_replica = _PICK_REPLICA.replace("@ASK_TIMEOUT@", str(ASK_TIMEOUT_SECONDS))
    fallback_note = (
        '    [ -n "$replica" ] || log "no in-sync replica: backing up the primary $primary"\n'
        if r.replicas > 1
        else ""
    )
    return f"""\
#!/bin/sh
# Redis backup to the object store. Rendered by tikit-infra (infra/conf/redis.py).
# Restore: docs/runbooks/redis-restore.md (restore script rendered next to this one).
set -eu
SCRIPT=redis-backup
STORE="${{STORE:-{store}}}"
PREFIX={backup_prefix(region)}
RETENTION_HOURS={r.backup_retention_hours}
WAIT_SECONDS={r.backup_wait_seconds}
REPLICA_MAX_SILENCE={REPLICA_MAX_SILENCE_SECONDS}
: "${{REDISCLI_AUTH:?REDISCLI_AUTH (the Redis password) is not set}}"
export REDISCLI_AUTH
{_COMMON}{sentinel_functions}{pick_replica}{_store_functions(s3_endpoint)}
# ---- which node: an in-sync replica, else the primary (REDIS_HOST/REDIS_PORT override) ----
if [ -z "${{REDIS_HOST:-}}" ]; then
{discover}
    target=${{replica:-$primary}}
{fallback_note}    REDIS_HOST=${{target% *}}
    REDIS_PORT=${{target#* }}
fi
REDIS_PORT="${{REDIS_PORT:-{port}}}"
cli() {{ redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }}
role=$(field role "$(cli INFO replication)")
case "$role" in master|slave) ;; *) die "cannot talk to $REDIS_HOST:$REDIS_PORT (check the password)" ;; esac
log "backing up $REDIS_HOST:$REDIS_PORT (role $role)"

# 1. BGSAVE and wait for it.  LASTSAVE has one-second resolution: let the current second
#    pass, so a save we start cannot end with the LASTSAVE we read.
before=$(cli LASTSAVE)
case "$before" in ''|*[!0-9]*) die "LASTSAVE failed: $before" ;; esac
sleep 1
# SCHEDULE: during an AOF rewrite the save runs right after it instead of failing.
reply=$(cli BGSAVE SCHEDULE)
case "$reply" in
*"Background saving started"*|*"Background saving scheduled"*|*"already in progress"*) ;;
*) die "BGSAVE refused: $reply" ;;
esac
deadline=$(( $(date +%s) + WAIT_SECONDS ))
while :; do
    info=$(cli INFO persistence)
    if [ "$(field rdb_bgsave_in_progress "$info")" = 0 ] && [ "$(field aof_rewrite_in_progress "$info")" = 0 ]; then
        last=$(cli LASTSAVE)
        if [ "$last" -gt "$before" ] && [ "$(field rdb_last_bgsave_status "$info")" = ok ]; then
            break
        fi
        [ "$(field rdb_last_bgsave_status "$info")" = ok ] || die "BGSAVE failed on $REDIS_HOST (rdb_last_bgsave_status:err)"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || die "BGSAVE did not finish within $WAIT_SECONDS s"
    sleep 1
done
log "BGSAVE done on $REDIS_HOST:$REDIS_PORT (LASTSAVE $before -> $last)"

# 2. Stream a snapshot over the network, check it, upload it.
work=$(mktemp -d "${{TMPDIR:-/tmp}}/redis-backup.XXXXXX")
trap 'rm -rf "$work"' EXIT
cli --rdb "$work/{DBFILENAME}" >&2
redis-check-rdb "$work/{DBFILENAME}" >/dev/null || die "the fetched snapshot fails redis-check-rdb"
ts=$(date -u +%Y%m%dT%H%M%SZ)
version=$(field redis_version "$(cli INFO server)")
sha=$(sha256sum "$work/{DBFILENAME}" | cut -d' ' -f1)
bytes=$(wc -c < "$work/{DBFILENAME}" | tr -d ' ')
store_put "$work/{DBFILENAME}" "$PREFIX/$ts/{DBFILENAME}"
printf 'timestamp=%s\\nsource=%s:%s\\nredis_version=%s\\nlastsave=%s\\nbytes=%s\\nsha256=%s\\n' \\
    "$ts" "$REDIS_HOST" "$REDIS_PORT" "$version" "$last" "$bytes" "$sha" > "$work/backup.info"
store_put "$work/backup.info" "$PREFIX/$ts/backup.info"
log "uploaded $STORE/$PREFIX/$ts ($bytes bytes, sha256 $sha)"

# 3. Prune: timestamped names sort by time, so compare them as 14-digit numbers.  Names that
#    are not ours are never touched; the backup just written is always newer than the cutoff.
cutoff=$(date -u -d "@$(( $(date +%s) - RETENTION_HOURS * 3600 ))" +%Y%m%dT%H%M%SZ)
entries=$(store_list "$PREFIX")
for name in $entries; do
    case "$name" in {TIMESTAMP_GLOB}) ;; *) continue ;; esac
    if [ "$(printf '%s' "$name" | tr -d TZ)" -lt "$(printf '%s' "$cutoff" | tr -d TZ)" ]; then
        store_delete "$PREFIX/$name"
        log "pruned $PREFIX/$name (older than $RETENTION_HOURS h)"
    fi
done
"""


def restore_script(
    r: settings.Redis,
    *,
    region: str,
    store: str,
    s3_endpoint: str,
    conf: str = f"{TEMPLATE_DIR}/{REDIS_CONF}",
    data_dir: str = DATA_DIR,
) -> str:
    """Restore a backup onto a data volume (docs/runbooks/redis-restore.md runs it in a
    one-off pod that mounts redis-0's PVC while the StatefulSet is scaled to 0).

    Redis started with ``appendonly yes`` next to a dump.rdb but no AOF starts EMPTY and
    writes an empty AOF (7.0 and later), so the RDB is loaded by a private redis-server with
    appendonly off (Unix socket only, no TCP), then ``CONFIG SET appendonly yes`` makes Redis
    write the AOF from memory; after that the normal pod loads the AOF.  Existing data is
    moved aside, never deleted.

    Environment: BACKUP (a timestamp; default the latest complete one), STORE and PREFIX
    (another region's backups, with RCLONE_S3_ENDPOINT and RCLONE_S3_REGION when that
    region's bucket is behind another endpoint), DATA_DIR, CONF, TMPDIR; AWS_* for s3:// stores.
    """
    return f"""\
#!/bin/sh
# Redis restore from the object store. Rendered by tikit-infra (infra/conf/redis.py).
# Run with the StatefulSet scaled to 0: see docs/runbooks/redis-restore.md.
set -eu
SCRIPT=redis-restore
STORE="${{STORE:-{store}}}"
# Override (with STORE) to restore another region's backup, e.g. PREFIX=redis/lagos in London.
PREFIX="${{PREFIX:-{backup_prefix(region)}}}"
BACKUP="${{BACKUP:-latest}}"
DATA_DIR="${{DATA_DIR:-{data_dir}}}"
CONF="${{CONF:-{conf}}}"
WAIT_SECONDS={r.backup_wait_seconds}
{_COMMON}{_store_functions(s3_endpoint)}
work=$(mktemp -d "${{TMPDIR:-/tmp}}/redis-restore.XXXXXX")
pid=""
cleanup() {{ if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$work"; }}
trap cleanup EXIT

if [ "$BACKUP" = latest ]; then
    BACKUP=""
    entries=$(store_list "$PREFIX" | sort -r)
    for name in $entries; do
        case "$name" in {TIMESTAMP_GLOB}) ;; *) continue ;; esac
        if store_list "$PREFIX/$name" | grep -qx backup.info; then BACKUP=$name; break; fi
    done
    [ -n "$BACKUP" ] || die "no complete backup under $STORE/$PREFIX"
fi
log "restoring $STORE/$PREFIX/$BACKUP into $DATA_DIR"
store_get "$PREFIX/$BACKUP/backup.info" "$work/backup.info"
store_get "$PREFIX/$BACKUP/{DBFILENAME}" "$work/{DBFILENAME}"
want=$(sed -n 's/^sha256=//p' "$work/backup.info")
got=$(sha256sum "$work/{DBFILENAME}" | cut -d' ' -f1)
[ "$want" = "$got" ] || die "checksum mismatch: backup.info says $want, file is $got"
redis-check-rdb "$work/{DBFILENAME}" >/dev/null || die "$BACKUP/{DBFILENAME} fails redis-check-rdb"

aside="$DATA_DIR/before-restore-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$aside"
for f in {DBFILENAME} {APPENDDIRNAME}; do
    if [ -e "$DATA_DIR/$f" ]; then mv "$DATA_DIR/$f" "$aside/"; fi
done
log "previous data moved to $aside"
cp "$work/{DBFILENAME}" "$DATA_DIR/{DBFILENAME}"

# Load the RDB with AOF off, on a Unix socket only (port 0: nobody else can connect).
sock="$work/redis.sock"
redis-server "$CONF" --dir "$DATA_DIR" --port 0 --unixsocket "$sock" --appendonly no --save "" >&2 &
pid=$!
cli() {{ redis-cli -s "$sock" "$@"; }}
deadline=$(( $(date +%s) + WAIT_SECONDS ))
until [ "$(cli PING 2>/dev/null)" = PONG ]; do
    kill -0 "$pid" 2>/dev/null || die "redis-server exited while loading $DBFILENAME"
    [ "$(date +%s)" -lt "$deadline" ] || die "redis-server did not load within $WAIT_SECONDS s"
    sleep 1
done
keys=$(cli DBSIZE)
log "loaded $keys keys"

# Let Redis write the AOF from memory, then stop it cleanly.
reply=$(cli CONFIG SET appendonly yes)
[ "$reply" = OK ] || die "CONFIG SET appendonly yes: $reply"
while :; do
    info=$(cli INFO persistence)
    if [ "$(field aof_rewrite_in_progress "$info")" = 0 ] && [ "$(field aof_rewrite_scheduled "$info")" = 0 ]; then
        [ "$(field aof_last_bgrewrite_status "$info")" = ok ] || die "AOF rewrite failed"
        break
    fi
    [ "$(date +%s)" -lt "$deadline" ] || die "AOF rewrite did not finish within $WAIT_SECONDS s"
    sleep 1
done
[ -f "$DATA_DIR/{APPENDDIRNAME}/{APPENDFILENAME}.manifest" ] || die "no AOF manifest was written"
cli SHUTDOWN >/dev/null 2>&1 || true
wait "$pid" || true
pid=""
log "done: $keys keys in $DATA_DIR/{DBFILENAME} and $DATA_DIR/{APPENDDIRNAME}/; start the pod"
"""


# --------------------------------------------------------------------------------------
# REDIS_URL
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisTarget:
    """What a REDIS_URL says: either one server or a set of sentinels plus a master name."""

    password: Optional[str]
    db: int
    host: Optional[str] = None
    port: Optional[int] = None
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: Optional[str] = None


def _hostport(host: str, port: int) -> str:
    if not host or any(c in host for c in "/@,?# ") or not 0 < port < 65536:
        raise ValueError(f"bad address {host!r}:{port}")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redis_url(
    password: str,
    *,
    host: Optional[str] = None,
    port: int = names.REDIS_PORT,
    sentinels: Sequence[tuple[str, int]] = (),
    master_name: str = names.REDIS_MASTER_NAME,
    db: int = 0,
) -> str:
    """REDIS_URL for the backend and workers.

    Without Sentinel: ``redis://:<password>@<host>:<port>/<db>``; ``host`` must reach the
    primary and only the primary, never a Service over all pods, which would hand writes to
    read-only replicas.  The component passes the ``redis`` client Service, which selects
    ``redis-0`` alone where no Sentinel runs (nothing moves the primary there); the pod
    name (``bootstrap_primary_host``) works too.  With Sentinel: ``redis+sentinel://:<password>@s1:26379,s2:26379/<master>/<db>``;
    the client asks the sentinels for the primary and asks again after a failover.  The
    password is percent-encoded; the sentinels themselves take no password.
    """
    if (host is None) == (not sentinels):
        raise ValueError("give exactly one of host= (plain Redis) or sentinels= (Sentinel)")
    if db < 0:
        raise ValueError(f"db must be >= 0, got {db}")
    auth = f":{quote(password, safe='')}@" if password else ""
    if host is not None:
        return f"redis://{auth}{_hostport(host, port)}/{db}"
    if not master_name or "/" in master_name:
        raise ValueError(f"bad master name {master_name!r}")
    hosts = ",".join(_hostport(h, p) for h, p in sentinels)
    return f"redis+sentinel://{auth}{hosts}/{quote(master_name, safe='')}/{db}"


def sentinel_list(sentinels: Sequence[tuple[str, int]]) -> str:
    """REDIS_SENTINELS: ``host:port,host:port,...`` ("" without Sentinel), the list that
    ioredis (``sentinels``) and node-redis (``sentinelRootNodes``) take once split on commas
    and the last colon; for clients that cannot parse a redis+sentinel:// URL."""
    return ",".join(_hostport(h, p) for h, p in sentinels)


def parse_sentinel_list(text: str) -> tuple[tuple[str, int], ...]:
    """Inverse of ``sentinel_list``."""
    return tuple(_split_hostport(item) for item in text.split(",")) if text else ()


def _split_hostport(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {text!r}")
    return host, int(port)


def parse_redis_url(url: str) -> RedisTarget:
    """Inverse of ``redis_url``: the tests build a (Sentinel-aware) client from it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "redis+sentinel"):
        raise ValueError(f"not a redis:// or redis+sentinel:// URL: {url[:20]!r}...")
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    password = urllib.parse.unquote(userinfo.partition(":")[2]) if at else None
    parts = path.split("/") if path else []
    if scheme == "redis":
        if len(parts) > 1:
            raise ValueError("redis:// URL path must be /<db>")
        host, port = _split_hostport(hosts)
        return RedisTarget(password=password, db=int(parts[0]) if parts and parts[0] else 0, host=host, port=port)
    if not parts or not parts[0] or len(parts) > 2:
        raise ValueError("redis+sentinel:// URL path must be /<master>[/<db>]")
    sentinels = tuple(_split_hostport(h) for h in hosts.split(","))
    db = int(parts[1]) if len(parts) == 2 and parts[1] else 0
    return RedisTarget(
        password=password, db=db, sentinels=sentinels, master_name=urllib.parse.unquote(parts[0])
    )
