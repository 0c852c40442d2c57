"""Redis tier text: redis.conf, sentinel.conf, the pods' start scripts, the backup and restore
scripts, and the REDIS_URL the backend and workers read.

Pure functions: values in, text out, stable ordering, no I/O.  The Redis component puts the
config files and scripts into ConfigMaps; the integration tests (tests/integration/test_redis_daemons.py)
feed the very same text to real redis-server and redis-sentinel processes, rewriting only the
port, the directories and the host names, and run the very same shell scripts.

Redis is both the shared cache and the job queue (names.JOB_QUEUE), so an
acknowledged queue entry is data: persistence is AOF (everysec) plus RDB snapshots, nothing
that carries the queue may be evicted, and the hourly backup is a verified RDB snapshot in the
object store (docs/runbooks/redis-restore.md restores it).

No password is ever part of this text.  The pods get the Redis password from the
``redis-auth`` Secret and the sentinels' own password from ``redis-sentinel-auth`` as
environment variables and pass them at start: ``--requirepass``/``--masterauth`` on the
redis-server command line, ``requirepass``, ``sentinel sentinel-pass`` and ``sentinel
auth-pass`` lines appended to a private copy of sentinel.conf, ``REDISCLI_AUTH`` for
redis-cli.  ``redis_url`` takes the passwords as parameters; the caller applies them to the
Pulumi secret Outputs, which keeps the result secret.

Where Sentinel runs, no pod ever guesses a role: the data pods start as standbys and take the
role a quorum of sentinels names (``redis_start_script``), the sentinels decide what to monitor
before they start (``sentinel_start_script``), and a primary hands its role over before it
stops (``handover_script``, the preStop hook).  docs/redis.md has the protocol.

Everything rendered here works on Redis 7.0 (Debian's, which the tests run) and on 7.4
(settings.redis.image): no directive newer than 7.0 is used.
"""

from __future__ import annotations

import shlex
import textwrap
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Union
from urllib.parse import quote

from tikit import names
from tikit.conf import templates

if TYPE_CHECKING:
    from tikit.settings import Redis

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
# In LIVE_DIR while a sentinel's start script decides what to monitor (the liveness probe
# leaves it alone meanwhile).
SENTINEL_DISCOVERING = "discovering"
PASSWORD_ENV = "REDIS_PASSWORD"          # env var the pods fill from the redis-auth Secret
SENTINEL_PASSWORD_ENV = "SENTINEL_PASSWORD"  # env var filled from the redis-sentinel-auth Secret

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
# volatile-lru evicts only keys with a TTL (the cache); queue keys never carry one.
MAXMEMORY_POLICY = "volatile-lru"
# fsync the AOF once a second: a node crash loses at most about a second of writes.
APPENDFSYNC = "everysec"
# RDB snapshot rules, "<seconds> <changes>": a second, compact copy next to the AOF.
SAVE_RULES = ("3600 1", "300 100", "60 10000")
# redis.conf shutdown-timeout: on SIGTERM wait this long for replicas to catch up, then
# save the RDB; the data pods' grace period covers both (components/redis.py).
SHUTDOWN_TIMEOUT_SECONDS = 10
# How long backup.sh waits for its BGSAVE (and restore.sh for loading the snapshot and
# rewriting the AOF) before it gives up.
BACKUP_WAIT_SECONDS = 600
# How long the backup script waits for one redis-cli call that asks Sentinel or a replica.
ASK_TIMEOUT_SECONDS = 5
# A replica is in sync for a backup when its link is up and it heard from the primary this
# recently: the primary pings replicas every 10 s (repl-ping-replica-period), so two periods.
REPLICA_MAX_SILENCE_SECONDS = 20
# The pods' grace period covers the final RDB save and AOF fsync on top of shutdown-timeout.
SHUTDOWN_SAVE_MARGIN_SECONDS = 5

# ---- Sentinel: roles at start, the HA stamp, the handover (docs/redis.md) ----
# One redis-cli call of the start, sentinel start and handover scripts (a sentinel or a data
# pod that is gone must not hold a decision up for long; answers take milliseconds).
HA_ASK_TIMEOUT_SECONDS = 2
# A standby without a decision asks again after RETRY_MIN, doubling up to RETRY_MAX seconds,
# for ever (so is a sentinel that cannot decide what to monitor).
ROLE_RETRY_MIN_SECONDS = 0.5
ROLE_RETRY_MAX_SECONDS = 5
# A primary that finds a newer HA stamp on another pod (back on an empty volume) asks the
# sentinels to fail over at most this often.
FAILOVER_REQUEST_INTERVAL_SECONDS = 10
# The HA stamp: "<term> <unix ms> <host:port>" in this key of this database, refreshed by the
# primary this often.  The application uses database 0 only; the stamp is part of backups.
STAMP_DB = 15
STAMP_KEY = "__redis_ha:stamp"
STAMP_INTERVAL_SECONDS = 1
# A standby runs with replica-priority 0 (never promoted); the role raises it to this
# (redis.conf's default: every data pod is an equally good candidate).
REPLICA_PRIORITY = 100
# The handover (preStop hook): every wait ends by HANDOVER_DEADLINE_SECONDS, and the pod runs
# the hook under timeout(1) with that deadline.  Within it: up to ELIGIBLE for a sentinel to see
# a promotable replica (it caches a replica's INFO for 10 s), up to CATCHUP for the replicas to
# reach the paused primary's offset, up to QUORUM for the sentinels to name the new primary.
HANDOVER_DEADLINE_SECONDS = 30
HANDOVER_ELIGIBLE_SECONDS = 12
HANDOVER_CATCHUP_SECONDS = 5
HANDOVER_QUORUM_SECONDS = 5

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
    """Ordinal 0: the primary where no Sentinel runs, and where Sentinel runs the first
    primary of a truly empty set."""
    return pod_host(f"{names.REDIS}-0", namespace)


def data_pod_hosts(r: Redis, namespace: str, port: int = names.REDIS_PORT) -> list[tuple[str, int]]:
    """Every data pod's stable address (StatefulSet ``redis`` behind ``redis-headless``)."""
    return [(pod_host(f"{names.REDIS}-{i}", namespace), port) for i in range(r.replicas)]


def sentinel_hosts(r: Redis, namespace: str) -> list[tuple[str, int]]:
    """Every sentinel's address, assuming the sentinels are a StatefulSet named
    ``redis-sentinel`` governed by a headless Service of the same name."""
    return [
        (pod_host(f"{names.REDIS_SENTINEL}-{i}", namespace, names.REDIS_SENTINEL), names.REDIS_SENTINEL_PORT)
        for i in range(r.sentinels)
    ]


# --------------------------------------------------------------------------------------
# redis.conf
# --------------------------------------------------------------------------------------


def min_replicas_to_write(r: Redis) -> int:
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
    r: Redis,
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
            APPENDFSYNC,
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
            " ".join(SAVE_RULES),
            "RDB snapshots (seconds changes pairs, SAVE_RULES in tikit/conf/redis.py): a second,"
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
            MAXMEMORY_POLICY,
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
            " tikit/conf/redis.py for the trade-off).",
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
            SHUTDOWN_TIMEOUT_SECONDS,
            "On SIGTERM let replicas catch up first (SHUTDOWN_TIMEOUT_SECONDS in tikit/conf/redis.py);"
            " the pods' terminationGracePeriodSeconds covers it plus the final save.",
        ),
        # ---- observability ----
        ("latency-monitor-threshold", LATENCY_MONITOR_THRESHOLD_MS, "Record events slower than 100 ms (LATENCY LATEST)."),
        ("slowlog-log-slower-than", SLOWLOG_SLOWER_THAN_US, "Microseconds: log commands slower than 10 ms."),
        ("slowlog-max-len", SLOWLOG_MAX_LEN, None),
    ]
    return entries


def _disabled_commands() -> list[Entry]:
    why = "Disabled (renamed to nothing): see DISABLED_COMMANDS in tikit/conf/redis.py."
    return [("rename-command", f'{c} ""', why if i == 0 else None) for i, c in enumerate(DISABLED_COMMANDS)]


def redis_conf(
    r: Redis,
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
    return _render("# Rendered by tikit-infra (tikit/conf/redis.py). Do not edit by hand.", entries)


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


def redis_server_args() -> list[str]:
    """Shell words that hand the password to redis-server from the environment.

    --masterauth on every node, not just replicas: after a failover any node may have to
    authenticate to a new primary.  Redis overwrites its process title, so the password does
    not stay visible in the process list; ``--requirepass ""`` would mean *no* password, which
    is why the start script refuses an empty variable first.
    """
    ref = f'"${PASSWORD_ENV}"'
    return ["--requirepass", ref, "--masterauth", ref]


# --------------------------------------------------------------------------------------
# sentinel.conf
# --------------------------------------------------------------------------------------


def sentinel_settings(
    r: Redis,
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
            "yes",
            "Clients authenticate: the start script appends requirepass (and sentinel-pass for"
            " the other sentinels) from the redis-sentinel-auth Secret.  Protected mode only"
            " bites without a password, when just loopback may connect.  NetworkPolicy limits"
            " port 26379 to the workloads that ask Sentinel.",
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
            " script replaces the address with the primary it finds (other sentinels, or the"
            " data pods themselves).",
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
    r: Redis,
    *,
    primary_host: str,
    primary_port: int,
    port: int = names.REDIS_SENTINEL_PORT,
    master_name: str = names.REDIS_MASTER_NAME,
    dir: str = LIVE_DIR,
    bind: str = DEFAULT_BIND,
) -> str:
    """sentinel.conf template (no password: ``sentinel_start_script`` appends requirepass,
    sentinel-pass and auth-pass from the environment)."""
    entries = sentinel_settings(
        r,
        primary_host=primary_host,
        primary_port=primary_port,
        port=port,
        master_name=master_name,
        dir=dir,
        bind=bind,
    )
    return _render("# Rendered by tikit-infra (tikit/conf/redis.py). Do not edit by hand.", entries)


# --------------------------------------------------------------------------------------
# Shell programs (POSIX sh; the redis image's /bin/sh is dash): templates/redis/*.sh
# --------------------------------------------------------------------------------------

def _lib(name: str) -> str:
    """A function library of templates/redis/: ask_sentinel prints "<host> <port>" of the
    primary a sentinel reports (redis-cli exits 0 even on error replies, so the answer is
    validated; timeout(1) because redis-cli 7.0 has no connect timeout); sentinel_replicas
    prints each replica Sentinel considers healthy; pick_replica the first one in sync."""
    return templates.render(f"redis/{name}.sh", **({"ASK_TIMEOUT": ASK_TIMEOUT_SECONDS} if name != "common" else {}))


Address = tuple[str, int]


def sentinel_agreement(r: Redis) -> int:
    """How many sentinels must name the same primary before a pod takes a role from them (or
    a sentinel follows its peers): the quorum, and never fewer than a majority, so two
    disjoint groups can never both agree."""
    return max(r.sentinel_quorum, r.sentinels // 2 + 1)


def _hostports(addresses: Sequence[Address]) -> str:
    """Space-separated host:port words for the scripts (DNS names or IPv4 addresses)."""
    words = []
    for host, port in addresses:
        if not host or any(c in host for c in " :'\"$`\\") or not 0 < port < 65536:
            raise ValueError(f"bad address {host!r}:{port}")
        words.append(f"{host}:{port}")
    return " ".join(words)


def _seconds(value: float) -> str:
    """A duration for sleep(1) and awk: 0.5, 5 (GNU sleep takes fractions)."""
    return f"{value:g}"


def _ha_where(
    r: Redis, namespace: str, sentinels: Optional[Sequence[Address]], peers: Optional[Sequence[Address]]
) -> dict[str, str]:
    """The addresses every HA script lists: every sentinel and every data pod, stable DNS
    names by default; the integration tests pass their local ones."""
    if not r.sentinels:
        raise ValueError("settings.redis.sentinels is 0: this environment runs no Sentinel")
    sentinels = list(sentinels if sentinels is not None else sentinel_hosts(r, namespace))
    peers = list(peers if peers is not None else data_pod_hosts(r, namespace))
    return {"SENTINELS": _hostports(sentinels), "PEERS": _hostports(peers), "BOOTSTRAP": _hostports(peers[:1])}


def _ha_constants(r: Redis, master_name: str, *, discovery: bool = True) -> dict[str, Value]:
    libraries = ["common", "ha-lib"] + (["ha-discovery"] if discovery else [])
    return {
        "MASTER": master_name,
        "AGREE": sentinel_agreement(r),
        "ASK_TIMEOUT": HA_ASK_TIMEOUT_SECONDS,
        "FUNCTIONS": "".join(templates.render(f"redis/{name}.sh") for name in libraries),
    }


def redis_start_script(
    r: Redis,
    *,
    namespace: str,
    port: int = names.REDIS_PORT,
    master_name: str = names.REDIS_MASTER_NAME,
    template: str = f"{TEMPLATE_DIR}/{REDIS_CONF}",
    live_dir: str = LIVE_DIR,
    data_dir: str = DATA_DIR,
    announce_host: Optional[str] = None,
    sentinels: Optional[Sequence[Address]] = None,
    peers: Optional[Sequence[Address]] = None,
) -> str:
    """Entry point of the data pods (StatefulSet ``redis``, headless Service ``redis-headless``).

    Without Sentinel nothing moves the primary: ordinal 0 is the primary and every other pod
    replicates ``redis-0`` (templates/redis/start.sh).

    With Sentinel (templates/redis/start-ha.sh) the pod starts redis-server at once as a
    standby, which takes no write and is never promoted, and an agent beside it takes the role
    that ``sentinel_agreement`` sentinels agree on, asking every sentinel; ordinal 0 becomes
    primary without them only when every data pod is empty.  Without an answer it waits and
    asks again, for ever.  Once primary, it refreshes the HA stamp the sentinels rank pods by
    after a full restart.

    Each pod announces ``announce_host`` (default: its stable DNS name
    ``$POD_NAME.redis-headless.<namespace>.svc.cluster.local``), so Sentinel and clients see
    names that survive restarts, and compares it with what the sentinels name.
    ``sentinels`` and ``peers`` (every sentinel, every data pod) default to the stable names;
    the tests pass their local addresses, as they pass ``port`` and the directories.
    """
    headless = names.service_host(names.REDIS_HEADLESS, namespace)
    if not r.sentinels:
        return templates.render(
            "redis/start.sh",
            SELF=announce_host or "$pod." + headless,
            LIVE_DIR=shlex.quote(live_dir),
            TEMPLATE=shlex.quote(template),
            LIVE_CONF=shlex.quote(f"{live_dir}/{REDIS_CONF}"),
            PRIMARY0_HOST=bootstrap_primary_host(namespace),
            PORT=port,
            SERVER_ARGS=" ".join(redis_server_args()),
        )
    return templates.render(
        "redis/start-ha.sh",
        SELF=announce_host or "${POD_NAME:-$(hostname)}." + headless,
        PORT=port,
        **_ha_where(r, namespace, sentinels, peers),
        DATA_DIR=shlex.quote(data_dir),
        TEMPLATE=shlex.quote(template),
        LIVE_DIR=shlex.quote(live_dir),
        **_ha_constants(r, master_name),
        RETRY_MIN=_seconds(ROLE_RETRY_MIN_SECONDS),
        RETRY_MAX=_seconds(ROLE_RETRY_MAX_SECONDS),
        FAILOVER_REQUEST_INTERVAL=FAILOVER_REQUEST_INTERVAL_SECONDS,
        STAMP_DB=STAMP_DB,
        STAMP_KEY=STAMP_KEY,
        STAMP_INTERVAL=_seconds(STAMP_INTERVAL_SECONDS),
        REPLICA_PRIORITY=REPLICA_PRIORITY,
        DBFILENAME=DBFILENAME,
        APPENDDIRNAME=APPENDDIRNAME,
        REDIS_CONF=REDIS_CONF,
        SERVER_ARGS=" ".join(redis_server_args()),
    )


def sentinel_start_script(
    r: Redis,
    *,
    namespace: str,
    port: int = names.REDIS_SENTINEL_PORT,
    master_name: str = names.REDIS_MASTER_NAME,
    template: str = f"{TEMPLATE_DIR}/{SENTINEL_CONF}",
    live_dir: str = LIVE_DIR,
    announce_host: Optional[str] = None,
    sentinels: Optional[Sequence[Address]] = None,
    peers: Optional[Sequence[Address]] = None,
) -> str:
    """Entry point of the sentinel pods (templates/redis/sentinel-start.sh): decide which data
    pod to monitor (what ``sentinel_agreement`` other sentinels name; else the one data pod
    that is master; else, with every data pod answering, the newest HA stamp, or ordinal 0
    when all are empty; else wait), then write the private, writable copy of sentinel.conf
    Sentinel rewrites, with that primary, the passwords from the environment, the announced
    address and every other data pod as a known replica, and exec redis-sentinel.

    Each sentinel announces ``announce_host`` (default ``$POD_NAME.redis-sentinel.<namespace>
    .svc.cluster.local``).  A stable name matters: a sentinel that comes back under a new IP
    would otherwise linger in its peers' tables as a dead sentinel that still counts toward
    the majority a failover needs.
    """
    return templates.render(
        "redis/sentinel-start.sh",
        SELF=announce_host or "${POD_NAME:-$(hostname)}." + names.service_host(names.REDIS_SENTINEL, namespace),
        PORT=port,
        **_ha_where(r, namespace, sentinels, peers),
        TEMPLATE=shlex.quote(template),
        LIVE_DIR=shlex.quote(live_dir),
        **_ha_constants(r, master_name),
        QUORUM=r.sentinel_quorum,
        RETRY_MIN=_seconds(ROLE_RETRY_MIN_SECONDS),
        RETRY_MAX=_seconds(ROLE_RETRY_MAX_SECONDS),
        STAMP_DB=STAMP_DB,
        STAMP_KEY=STAMP_KEY,
        SENTINEL_CONF=SENTINEL_CONF,
        DISCOVERING=SENTINEL_DISCOVERING,
    )


def handover_script(
    r: Redis,
    *,
    namespace: str,
    port: int = names.REDIS_PORT,
    master_name: str = names.REDIS_MASTER_NAME,
    announce_host: Optional[str] = None,
    sentinels: Optional[Sequence[Address]] = None,
) -> str:
    """The data pods' preStop hook where Sentinel runs (templates/redis/handover.sh): a
    primary pauses writes, lets its replicas catch up, demotes itself and asks Sentinel to
    fail over, follows the promoted replica and releases its clients once the sentinels name
    it.  Every wait ends within HANDOVER_DEADLINE_SECONDS; the pause outlives the hook by
    shutdown-timeout plus the final save, so a primary whose failover was accepted never
    takes another write."""
    return templates.render(
        "redis/handover.sh",
        SELF=announce_host or "${POD_NAME:-$(hostname)}." + names.service_host(names.REDIS_HEADLESS, namespace),
        PORT=port,
        SENTINELS=_ha_where(r, namespace, sentinels, None)["SENTINELS"],
        **_ha_constants(r, master_name, discovery=False),
        DEADLINE=HANDOVER_DEADLINE_SECONDS,
        ELIGIBLE_TIMEOUT=HANDOVER_ELIGIBLE_SECONDS,
        CATCHUP_TIMEOUT=HANDOVER_CATCHUP_SECONDS,
        QUORUM_TIMEOUT=HANDOVER_QUORUM_SECONDS,
        PAUSE_AFTER=SHUTDOWN_TIMEOUT_SECONDS + SHUTDOWN_SAVE_MARGIN_SECONDS,
    )


# --------------------------------------------------------------------------------------
# Backup and restore
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
# store_delete) chosen by the STORE URL (templates/redis/store.sh).  s3://bucket[/prefix]
# uses rclone (a static binary the CronJob's init container copies from
# settings.redis.rclone_image into the redis image, with that image's CA bundle for
# SSL_CERT_FILE, since the redis image has none; S3 keys from the credentials Secret as
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); file:///path uses cp and ls, which is how the
# tests run the very same script.

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
    return templates.render("redis/store.sh", S3_EXPORTS=exports)


def script_functions(endpoint_url: str) -> str:
    """log/die/field and the store functions, for scripts elsewhere that read the Redis
    backups (the restore drill, tikit/conf/drills.py)."""
    return _lib("common") + _store_functions(endpoint_url)


def backup_prefix(region: str) -> str:
    return f"redis/{region}"


def backup_script(
    r: Redis,
    *,
    namespace: str,
    region: str,
    store: str,
    s3_endpoint: str,
    port: int = names.REDIS_PORT,
    master_name: str = names.REDIS_MASTER_NAME,
) -> str:
    """The hourly backup (CronJob ``redis-backup``, redis image + rclone, restricted).

    Environment: REDISCLI_AUTH (the password, from the Secret), SENTINEL_PASSWORD where
    Sentinel runs (from its own Secret: the sentinels are asked with it); for s3:// stores
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, rclone on PATH and SSL_CERT_FILE.  STORE,
    REDIS_HOST/REDIS_PORT (skip choosing a node), SENTINEL_HOST/SENTINEL_PORT and TMPDIR
    override the rendered defaults; the tests use them to point the same script at local
    daemons and a local directory.
    """
    if not store.startswith("s3://") and not store.startswith("file://"):
        raise ValueError(f"store must be s3://bucket[/prefix] or file:///path, got {store!r}")
    functions = [_lib("common")]
    if r.sentinels:
        functions += [_lib("ask-sentinel"), _lib("sentinel-replicas")]
        discover = templates.render(
            "redis/backup-discover-sentinel.sh",
            SENTINEL_HOST=names.service_host(names.REDIS_SENTINEL, namespace),
            SENTINEL_PORT=names.REDIS_SENTINEL_PORT,
            MASTER=master_name,
        )
    else:
        replicas = "".join(f"{pod_host(f'{names.REDIS}-{i}', namespace)} {port}\\n" for i in range(1, r.replicas))
        discover = templates.render(
            "redis/backup-discover-static.sh", PRIMARY=bootstrap_primary_host(namespace), PORT=port, REPLICAS=replicas
        )
    functions += [_lib("pick-replica"), _store_functions(s3_endpoint)]
    fallback_note = (
        '    [ -n "$replica" ] || log "no in-sync replica: backing up the primary $primary"' if r.replicas > 1 else ""
    )
    return templates.render(
        "redis/backup.sh",
        STORE=store,
        PREFIX=backup_prefix(region),
        RETENTION_HOURS=r.backup_retention_hours,
        WAIT_SECONDS=BACKUP_WAIT_SECONDS,
        REPLICA_MAX_SILENCE=REPLICA_MAX_SILENCE_SECONDS,
        FUNCTIONS="".join(functions),
        DISCOVER=discover,
        FALLBACK_NOTE=fallback_note,
        PORT=port,
        DBFILENAME=DBFILENAME,
        TIMESTAMP_GLOB=TIMESTAMP_GLOB,
    )


def restore_script(
    r: Redis,
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
    return templates.render(
        "redis/restore.sh",
        STORE=store,
        PREFIX=backup_prefix(region),
        DATA_DIR=data_dir,
        CONF=conf,
        WAIT_SECONDS=BACKUP_WAIT_SECONDS,
        FUNCTIONS=_lib("common") + _store_functions(s3_endpoint),
        DBFILENAME=DBFILENAME,
        APPENDDIRNAME=APPENDDIRNAME,
        APPENDFILENAME=APPENDFILENAME,
        TIMESTAMP_GLOB=TIMESTAMP_GLOB,
    )


# --------------------------------------------------------------------------------------
# REDIS_URL
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisTarget:
    """What a REDIS_URL says: either one server or a set of sentinels plus a master name
    (and the sentinels' own password)."""

    password: Optional[str]
    db: int
    host: Optional[str] = None
    port: Optional[int] = None
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: Optional[str] = None
    sentinel_password: Optional[str] = None


# The query parameter of a redis+sentinel:// URL that carries the sentinels' password (the
# userinfo is the data nodes' password); named after ioredis' option.
SENTINEL_PASSWORD_PARAM = "sentinelPassword"


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
    sentinel_password: str = "",
) -> str:
    """REDIS_URL for the backend and workers.

    Without Sentinel: ``redis://:<password>@<host>:<port>/<db>``; ``host`` must reach the
    primary and only the primary, never a Service over all pods, which would hand writes to
    read-only replicas.  The component passes the ``redis`` client Service, which selects
    ``redis-0`` alone where no Sentinel runs (nothing moves the primary there); the pod
    name (``bootstrap_primary_host``) works too.  With Sentinel:
    ``redis+sentinel://:<password>@s1:26379,s2:26379/<master>/<db>?sentinelPassword=<password>``;
    the client asks the sentinels (authenticating with the second password) for the primary
    and asks again after a failover.  Both passwords are percent-encoded.
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
    query = f"?{SENTINEL_PASSWORD_PARAM}={quote(sentinel_password, safe='')}" if sentinel_password else ""
    return f"redis+sentinel://{auth}{hosts}/{quote(master_name, safe='')}/{db}{query}"


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
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    password = urllib.parse.unquote(userinfo.partition(":")[2]) if at else None
    parts = path.split("/") if path else []
    params = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    if set(params) - ({SENTINEL_PASSWORD_PARAM} if scheme == "redis+sentinel" else set()):
        raise ValueError(f"unknown URL parameters {sorted(params)}")
    if scheme == "redis":
        if len(parts) > 1:
            raise ValueError("redis:// URL path must be /<db>")
        host, port = _split_hostport(hosts)
        return RedisTarget(password=password, db=int(parts[0]) if parts and parts[0] else 0, host=host, port=port)
    if not parts or not parts[0] or len(parts) > 2:
        raise ValueError("redis+sentinel:// URL path must be /<master>[/<db>]")
    sentinels = tuple(_split_hostport(h) for h in hosts.split(","))
    db = int(parts[1]) if len(parts) == 2 and parts[1] else 0
    sentinel_password = params.get(SENTINEL_PASSWORD_PARAM, [None])[-1]
    return RedisTarget(
        password=password, db=db, sentinels=sentinels, master_name=urllib.parse.unquote(parts[0]),
        sentinel_password=sentinel_password,
    )
