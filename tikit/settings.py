"""Typed, validated stack settings.

Data flows one way: stack file -> ``load()`` (validated once, frozen) -> components.
Components never read ``pulumi.Config``; they receive the frozen sections below.

Every value starts from the environment preset (``PRESETS``, one table for dev, staging
and prod); a stack file (``Pulumi.<stack>.yaml``) holds only its deltas.  docs/sizing.md
shows the same table and a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, get_args, get_origin, get_type_hints

try:  # Under the Pulumi engine a config error must print one line, not a traceback.
    from pulumi import RunError as _BaseError
except ImportError:  # pragma: no cover - pulumi is always installed with this project
    _BaseError = Exception

PROJECT = "tikit"
ENVIRONMENTS = ("dev", "staging", "prod")


class ConfigError(_BaseError):
    """A stack setting is wrong.  ``str(err)`` is one line: ``<key>: <what is wrong>``."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        # One line whatever the user typed: keys and values may hold control characters.
        text = f"{key}: {message}".replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(text)


# --------------------------------------------------------------------------------------
# Value checks used in field metadata
# --------------------------------------------------------------------------------------

_CPU_RE = re.compile(r"^([0-9]+)(m?)$|^([0-9]+\.[0-9]+)$")
_MEM_RE = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti)$")
_DNS_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_IMAGE_RE = re.compile(
    r"^[a-z0-9]+([._/:-][a-z0-9]+)*/?[a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
_CRON5_RE = re.compile(r"^\S+( \S+){4}$")
_CRON6_RE = re.compile(r"^\S+( \S+){5}$")
_DURATION_RE = re.compile(r"^[0-9]+(ms|s|m|h)$")
_RETENTION_RE = re.compile(r"^[1-9][0-9]*[dwm]$")
_LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?(/\S*)?$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]$")

_MEM_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def cpu_millis(quantity: str) -> int:
    """'500m' -> 500, '2' -> 2000, '0.5' -> 500."""
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return int(round(float(quantity) * 1000))


def memory_bytes(quantity: str) -> int:
    """'512Mi' -> 536870912."""
    m = _MEM_RE.match(quantity)
    if not m:
        raise ValueError(quantity)
    return int(m.group(1)) * _MEM_UNITS[m.group(2)]


def mebibytes(quantity: str) -> int:
    return memory_bytes(quantity) // _MEM_UNITS["Mi"]


def image_problem(image: str) -> Optional[str]:
    """Why an image reference is not pinned, or None when it is (tag or digest, never latest)."""
    if not _IMAGE_RE.match(image):
        return "is not a container image reference"
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    if tag is None and not digest:
        return "has no tag or digest; pin it"
    if tag == "latest":
        return "uses the 'latest' tag; pin a version or digest"
    return None


def _check_cpu(v: str) -> Optional[str]:
    if not _CPU_RE.match(v) or cpu_millis(v) <= 0:
        return "must be a CPU quantity such as '500m' or '2'"
    if cpu_millis(v) > 64000:
        return "must be at most 64 CPUs"
    return None


def _check_memory(v: str) -> Optional[str]:
    if not _MEM_RE.match(v):
        return "must be a memory quantity such as '512Mi' or '2Gi'"
    if not (64 * _MEM_UNITS["Mi"] <= memory_bytes(v) <= 512 * _MEM_UNITS["Gi"]):
        return "must be between 64Mi and 512Gi"
    return None


def _check_storage(v: str) -> Optional[str]:
    if not _MEM_RE.match(v) or memory_bytes(v) < _MEM_UNITS["Mi"]:
        return "must be a storage quantity such as '10Gi'"
    return None


def _regex(rx: re.Pattern, what: str):
    def check(v: str) -> Optional[str]:
        return None if rx.match(v) else f"must be {what}"

    return check


def _check_image(v: str) -> Optional[str]:
    problem = image_problem(v)
    return f"'{v}' {problem}" if problem else None


def _check_pg_image(v: str) -> Optional[str]:
    problem = _check_image(v)
    if problem:
        return problem
    tag = v.partition("@")[0].rsplit("/", 1)[-1].partition(":")[2]
    if not re.match(r"^[0-9]{2}(\.[0-9]+)?", tag):
        return "tag must start with the PostgreSQL major version (e.g. ':17.6')"
    return None


def _check_pg_param(v: Mapping[str, Any]) -> Optional[str]:
    for k, val in v.items():
        if not isinstance(val, str):
            return f"value of '{k}' must be a string (CNPG takes parameters as strings)"
    return None


def _f(*, min=None, max=None, choices=None, check=None, doc: str = ""):
    """Metadata for one setting: numeric range, allowed values or a custom check."""
    return {"min": min, "max": max, "choices": choices, "check": check, "doc": doc}


def setting(default: Any = dataclasses.MISSING, **meta):
    if isinstance(default, (list, dict)):
        frozen = default
        return field(default_factory=lambda: type(frozen)(frozen), metadata=_f(**meta))
    return field(default=default, metadata=_f(**meta))


# --------------------------------------------------------------------------------------
# Sections.  Field names are snake_case here and camelCase in the stack file.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Region:
    name: str = setting(check=_regex(_DNS_LABEL_RE, "a DNS label such as 'lagos'"))
    role: str = setting(choices=("primary", "backup"))
    # kubeconfig context; empty means: render YAML to build/<stack>/<region>/ instead.
    context: str = setting("")
    # k8gb geo tag of this cluster (k8gb install setting clusterGeoTag); defaults to the name.
    geo_tag: str = setting("", check=_regex(re.compile(r"^$|^[a-z0-9-]+$"), "lowercase letters, digits and '-'"))
    # S3 endpoint of the object storage that holds THIS region's bucket (PostgreSQL's
    # ObjectStore and the Redis backup job, in every region that reads it); empty means
    # objectStorage.endpointUrl.  Set it to storage in or near the region, or the
    # "cross-region" copy lives wherever the shared endpoint does (docs/postgres.md).
    object_storage_endpoint: str = setting("", check=lambda v: None if not v or _URL_RE.match(v) else "must be an http(s) URL")

    @property
    def tag(self) -> str:
        return self.geo_tag or self.name


@dataclass(frozen=True, kw_only=True)
class HealthChecks:
    """The health contract of the Node.js processes (API and workers), from the notes:
    liveness GET /health every 30 s, timeout 5 s, 3 failures; readiness GET /ready every
    10 s, timeout 5 s, 2 failures."""

    health_path: str = setting("/health", check=_regex(_PATH_RE, "an absolute path"))
    ready_path: str = setting("/ready", check=_regex(_PATH_RE, "an absolute path"))
    liveness_period_seconds: int = setting(30, min=1, max=300)
    liveness_timeout_seconds: int = setting(5, min=1, max=60)
    liveness_failure_threshold: int = setting(3, min=1, max=30)
    readiness_period_seconds: int = setting(10, min=1, max=300)
    readiness_timeout_seconds: int = setting(5, min=1, max=60)
    readiness_failure_threshold: int = setting(2, min=1, max=30)


@dataclass(frozen=True, kw_only=True)
class Backend(HealthChecks):
    image: str = setting("ghcr.io/tikit/backend:1.0.0", check=_check_image)
    min_replicas: int = setting(min=1, max=100)
    max_replicas: int = setting(min=1, max=100)
    cpu: str = setting(check=_check_cpu)
    memory: str = setting(check=_check_memory)
    port: int = setting(3000, min=1024, max=65535)
    # Autoscaling targets from the notes (docs/autoscaling.md maps each rule).
    cpu_target_percent: int = setting(70, min=10, max=100)
    memory_target_percent: int = setting(80, min=10, max=100)
    requests_per_minute_per_instance: int = setting(1000, min=1, max=1_000_000)
    scale_up_window_seconds: int = setting(120, min=0, max=3600)
    scale_down_window_seconds: int = setting(300, min=0, max=3600)
    scale_down_period_seconds: int = setting(300, min=1, max=1800)
    # Peak-hour schedule (KEDA cron: five fields + IANA timezone).  0 disables it.
    peak_min_replicas: int = setting(0, min=0, max=100)
    peak_start: str = setting("0 18 * * *", check=_regex(_CRON5_RE, "a five-field cron expression"))
    peak_end: str = setting("0 0 * * *", check=_regex(_CRON5_RE, "a five-field cron expression"))
    timezone: str = setting("Africa/Lagos", check=_regex(re.compile(r"^[A-Za-z_]+(/[A-Za-z_+-]+)*$"), "an IANA timezone"))
    # Connections each API replica opens to PgBouncer ("100 connections each" in the notes).
    db_connections_per_replica: int = setting(100, min=1, max=1000)
    # Graceful shutdown: preStop sleep lets endpoints drain before SIGTERM.
    pre_stop_seconds: int = setting(10, min=0, max=120)
    shutdown_seconds: int = setting(20, min=1, max=600)
    startup_failure_threshold: int = setting(30, min=1, max=120)
    # The startup probe (GET health_path every startup_period_seconds, up to
    # startup_failure_threshold times) holds liveness off while a slow boot finishes.
    startup_period_seconds: int = setting(5, min=1, max=60)
    # Scale down by at most this many pods per scale_down_period_seconds (the notes' cooldown).
    scale_down_pods_per_period: int = setting(1, min=1, max=100)
    # PromQL rate() window of the request-rate trigger.
    request_rate_window: str = setting("2m", check=_regex(re.compile(r"^[1-9][0-9]*[smh]$"), "a PromQL duration such as '2m'"))


@dataclass(frozen=True, kw_only=True)
class Workers(HealthChecks):
    image: str = setting("ghcr.io/tikit/worker:1.0.0", check=_check_image)
    min_replicas: int = setting(min=0, max=100)
    max_replicas: int = setting(min=1, max=100)
    cpu: str = setting(check=_check_cpu)
    memory: str = setting(check=_check_memory)
    queue_name: str = setting("tikit:jobs", check=_regex(re.compile(r"^[A-Za-z0-9:_.-]{1,100}$"), "a Redis key name"))
    queue_length_per_replica: int = setting(100, min=1, max=100_000)
    db_connections_per_replica: int = setting(10, min=1, max=1000)
    # Spot capacity: clouds label and taint spot nodes differently.
    spot_node_label_key: str = setting("karpenter.sh/capacity-type", check=_regex(_LABEL_KEY_RE, "a label key"))
    spot_node_label_value: str = setting("spot")
    spot_taint_key: str = setting("karpenter.sh/capacity-type", check=_regex(_LABEL_KEY_RE, "a label key"))
    spot_taint_value: str = setting("spot")
    spot_taint_effect: str = setting("NoSchedule", choices=("NoSchedule", "PreferNoSchedule", "NoExecute"))
    shutdown_seconds: int = setting(60, min=1, max=3600)
    # Queue length drives the workers; CPU and memory add capacity for heavy jobs while
    # pods run (docs/autoscaling.md).  Same windows and cooldown as the API by default.
    cpu_target_percent: int = setting(70, min=10, max=100)
    memory_target_percent: int = setting(80, min=10, max=100)
    scale_up_window_seconds: int = setting(120, min=0, max=3600)
    scale_down_window_seconds: int = setting(300, min=0, max=3600)
    scale_down_period_seconds: int = setting(300, min=1, max=1800)
    scale_down_pods_per_period: int = setting(1, min=1, max=100)
    # KEDA cooldownPeriod: how long the queue must stay empty before the last worker goes
    # (1 -> 0; only where minReplicas is 0).  The notes' 5-minute cooldown.  Not an HPA
    # setting: the HPA never scales to zero, KEDA does.
    cooldown_seconds: int = setting(300, min=0, max=86400)
    # Workers serve no traffic but expose the same health contract as the API on a
    # small HTTP port: /health (event loop alive) and /ready (Redis and PostgreSQL reachable).
    health_port: int = setting(8081, min=1024, max=65535)


@dataclass(frozen=True, kw_only=True)
class Postgres:
    image: str = setting("ghcr.io/cloudnative-pg/postgresql:17.6", check=_check_pg_image)
    instances: int = setting(min=1, max=9)
    cpu: str = setting(check=_check_cpu)
    memory: str = setting(check=_check_memory)
    storage_size: str = setting(check=_check_storage)
    wal_storage_size: str = setting(check=_check_storage)
    storage_class: str = setting("")
    database: str = setting("tikit", check=_regex(re.compile(r"^[a-z_][a-z0-9_]{0,62}$"), "a PostgreSQL identifier"))
    owner: str = setting("tikit", check=_regex(re.compile(r"^[a-z_][a-z0-9_]{0,62}$"), "a PostgreSQL identifier"))
    # Six fields, seconds first: CNPG's ScheduledBackup dialect (runs in UTC).
    backup_schedule: str = setting("0 0 2 * * *", check=_regex(_CRON6_RE, "a six-field cron expression (seconds first)"))
    retention: str = setting(check=_regex(_RETENTION_RE, "a retention such as '7d', '2w' or '1m'"))
    # Connections kept for superusers and the operator, on top of the pools.
    superuser_reserved_connections: int = setting(3, min=1, max=50)
    # Headroom for the metrics exporter, CNPG's own probes and an operator's psql.
    admin_connections: int = setting(10, min=0, max=200)
    # Standbys, backups and pg_basebackup.  Since PostgreSQL 12 WAL senders have slots of
    # their own and are not part of max_connections.
    max_wal_senders: int = setting(10, min=2, max=100)
    # log_min_duration_statement: the notes' "slow queries > 1 s" (milliseconds; -1 off).
    slow_query_ms: int = setting(1000, min=-1, max=3_600_000)
    # With transaction pooling an idle open transaction pins a pooled server connection:
    # idle_in_transaction_session_timeout ends it (seconds; 0 off).
    idle_in_transaction_timeout_seconds: int = setting(60, min=0, max=86400)
    # wal_keep_size for standbys without a slot, capped at this (and at what slots may pin).
    wal_keep_size_max_mb: int = setting(512, min=0, max=1_048_576)
    # Planner costs for network SSDs: random reads cost about what sequential ones do.
    random_page_cost: float = setting(1.1, min=0.1, max=100.0)
    effective_io_concurrency: int = setting(200, min=0, max=1000)
    # Extra postgresql.conf parameters (strings), merged over the derived ones.  Parameters
    # the operator owns and a wal_level that cannot replicate are refused.
    parameters: dict = setting({}, check=_check_pg_param)
    password_length: int = setting(40, min=32, max=128)
    # Zone anti-affinity of the instances (instances never share a node either way):
    # "required" only where every region has at least `instances` zones, or pods stay
    # Pending; "preferred" spreads over the zones there are (docs/postgres.md).
    pod_anti_affinity: str = setting("preferred", choices=("preferred", "required"))
    # The Barman Cloud plugin's sidecar in every instance pod; requests == limits, so the
    # pod stays in the Guaranteed QoS class.
    backup_sidecar_cpu: str = setting("250m", check=_check_cpu)
    backup_sidecar_memory: str = setting("256Mi", check=_check_memory)
    # Controlled switchover (docs/runbooks/postgres-switchover.md): the former primary
    # cluster's status.demotionToken, handed to the primary region's cluster.  Empty when
    # the primary region changes means promotion WITHOUT a token: an unplanned failover.
    promotion_token: str = setting("", check=_regex(re.compile(r"^[A-Za-z0-9+/=]*$"), "a base64 demotion token"))


@dataclass(frozen=True, kw_only=True)
class PgBouncer:
    image: str = setting("ghcr.io/cloudnative-pg/pgbouncer:1.24.1", check=_check_image)
    exporter_image: str = setting("quay.io/prometheuscommunity/pgbouncer-exporter:v0.10.2", check=_check_image)
    replicas: int = setting(min=1, max=20)
    pool_mode: str = setting("transaction", choices=("transaction", "session", "statement"))
    max_client_conn: int = setting(1000, min=10, max=100_000)
    default_pool_size: int = setting(20, min=1, max=1000)
    reserve_pool_size: int = setting(5, min=0, max=1000)
    reserve_pool_timeout: int = setting(3, min=0, max=600)
    # Protocol-level prepared statements tracked per server connection (PgBouncer >= 1.21);
    # lets ORM clients keep prepared statements safely in transaction mode.
    max_prepared_statements: int = setting(200, min=0, max=10_000)
    server_idle_timeout: int = setting(600, min=0, max=86400)
    query_wait_timeout: int = setting(120, min=1, max=3600)
    cpu: str = setting("250m", check=_check_cpu)
    memory: str = setting("256Mi", check=_check_memory)
    exporter_cpu: str = setting("50m", check=_check_cpu)
    exporter_memory: str = setting("64Mi", check=_check_memory)
    # TCP probes on the pool port (and the exporter's metrics port).
    probe_period_seconds: int = setting(10, min=1, max=300)
    probe_timeout_seconds: int = setting(3, min=1, max=60)
    probe_failure_threshold: int = setting(3, min=1, max=30)
    # Rollouts and drains: the preStop sleep lets the Service drop the pod before SIGTERM;
    # PgBouncer then waits for its clients to leave, up to shutdown_seconds.
    pre_stop_seconds: int = setting(10, min=0, max=120)
    shutdown_seconds: int = setting(30, min=1, max=600)


@dataclass(frozen=True, kw_only=True)
class Redis:
    image: str = setting("docker.io/library/redis:7.4.2", check=_check_image)
    exporter_image: str = setting("docker.io/oliver006/redis_exporter:v1.67.0", check=_check_image)
    replicas: int = setting(min=1, max=9)  # data pods: one primary + (replicas - 1) replicas
    sentinels: int = setting(min=0, max=9)
    sentinel_quorum: int = setting(2, min=1, max=9)
    down_after_ms: int = setting(5000, min=1000, max=600_000)
    failover_timeout_ms: int = setting(30000, min=5000, max=3_600_000)
    cpu: str = setting(check=_check_cpu)
    memory: str = setting(check=_check_memory)
    storage_size: str = setting(check=_check_storage)
    # maxmemory = this share of the container limit; the rest is headroom for the
    # copy-on-write fork during BGSAVE / AOF rewrite (docs/sizing.md shows the arithmetic).
    maxmemory_percent: int = setting(60, min=10, max=90)
    # volatile-lru evicts only keys with a TTL (cache); queue keys never carry one.
    maxmemory_policy: str = setting("volatile-lru", choices=("volatile-lru", "volatile-lfu", "volatile-ttl", "noeviction"))
    appendfsync: str = setting("everysec", choices=("everysec", "always"))
    save_rules: list = setting(["3600 1", "300 100", "60 10000"])
    backup_schedule: str = setting("0 * * * *", check=_regex(_CRON5_RE, "a five-field cron expression"))
    backup_retention_hours: int = setting(min=1, max=24 * 90)
    backup_image: str = setting("docker.io/library/redis:7.4.2", check=_check_image)
    password_length: int = setting(40, min=32, max=128)
    # The backup job runs backup_image (redis-cli, redis-check-rdb) with rclone and a CA
    # bundle that an init container copies from this image (a static binary).
    rclone_image: str = setting("docker.io/rclone/rclone:1.68.2", check=_check_image)
    storage_class: str = setting("")  # "" = the cluster's default StorageClass
    # Data pods (and sentinels) on separate nodes: "required" keeps a primary and its
    # replica off one node (needs as many nodes as pods); "preferred" only tries.
    node_anti_affinity: str = setting("required", choices=("required", "preferred"))
    exporter_cpu: str = setting("50m", check=_check_cpu)
    exporter_memory: str = setting("64Mi", check=_check_memory)
    sentinel_cpu: str = setting("100m", check=_check_cpu)
    sentinel_memory: str = setting("64Mi", check=_check_memory)
    backup_cpu: str = setting("250m", check=_check_cpu)
    backup_memory: str = setting("256Mi", check=_check_memory)
    # Backup CronJob (docs/redis.md): a run that cannot start within the deadline is skipped
    # (the next hour's takes over); one that runs past active_deadline is killed and counts
    # as failed; runs never overlap (concurrencyPolicy Forbid).  The active deadline must
    # cover backup_wait_seconds plus the upload (a cross-check).
    backup_starting_deadline_seconds: int = setting(900, min=60, max=3600)
    backup_active_deadline_seconds: int = setting(1800, min=60, max=86400)
    backup_backoff_limit: int = setting(2, min=0, max=10)
    backup_history_limit: int = setting(3, min=1, max=100)
    # How long backup.sh waits for its BGSAVE (and restore.sh for loading the snapshot and
    # rewriting the AOF) before it gives up.
    backup_wait_seconds: int = setting(600, min=10, max=7200)
    # redis.conf shutdown-timeout: on SIGTERM wait this long for replicas to catch up, then
    # save the RDB; terminationGraceSeconds must cover both (a cross-check).
    shutdown_timeout_seconds: int = setting(10, min=0, max=600)
    termination_grace_seconds: int = setting(60, min=1, max=3600)
    # exec probes: redis-cli PING (liveness), PING plus a replication check (readiness).
    probe_period_seconds: int = setting(10, min=1, max=300)
    probe_timeout_seconds: int = setting(5, min=1, max=60)
    liveness_failure_threshold: int = setting(6, min=1, max=30)
    readiness_failure_threshold: int = setting(2, min=1, max=30)


@dataclass(frozen=True, kw_only=True)
class ObjectStorage:
    """S3-compatible storage for PostgreSQL and Redis backups, one bucket per region."""

    endpoint_url: str = setting("https://s3.eu-west-2.amazonaws.com", check=_regex(_URL_RE, "an http(s) URL"))
    # Bucket per region: "<bucketPrefix>-<environment>-<region>".
    bucket_prefix: str = setting("tikit-backups", check=_regex(_BUCKET_RE, "a bucket name prefix"))
    # Secret (created out of band, e.g. by External Secrets) holding the S3 keys.
    credentials_secret: str = setting("tikit-backup-s3", check=_regex(_DNS_LABEL_RE, "a Kubernetes Secret name"))
    access_key_id_key: str = setting("ACCESS_KEY_ID")
    secret_access_key_key: str = setting("ACCESS_SECRET_KEY")
    wal_compression: str = setting("gzip", choices=("gzip", "bzip2", "snappy", "lz4", "zstd"))
    # Base backups: barman-cloud-backup supports fewer codecs than the WAL archive.
    data_compression: str = setting("gzip", choices=("gzip", "bzip2", "snappy", "lz4"))


@dataclass(frozen=True, kw_only=True)
class Gateway:
    class_name: str = setting("eg", check=_regex(_DNS_LABEL_RE, "a GatewayClass name"))
    hostname: str = setting(check=_regex(_HOSTNAME_RE, "a DNS hostname such as 'api.tikit.app'"))
    cluster_issuer: str = setting("letsencrypt-prod", check=_regex(_DNS_LABEL_RE, "a ClusterIssuer name"))
    api_prefix: str = setting("/api", check=_regex(_PATH_RE, "an absolute path prefix"))
    websocket_paths: list = setting(["/socket.io"])
    rest_load_balancer: str = setting("RoundRobin", choices=("RoundRobin", "LeastRequest"))
    request_timeout: str = setting("15s", check=_regex(_DURATION_RE, "a duration such as '15s'"))
    websocket_idle_timeout: str = setting("3600s", check=_regex(_DURATION_RE, "a duration such as '3600s'"))
    retries: int = setting(2, min=0, max=5)
    # First retry waits up to this long (jittered exponential backoff, capped at 10x).
    retry_backoff: str = setting("100ms", check=_regex(_DURATION_RE, "a duration such as '100ms'"))
    # Active health checks from the gateway to each API pod (path: backend.healthPath).
    health_check_interval: str = setting("10s", check=_regex(_DURATION_RE, "a duration such as '10s'"))
    health_check_timeout: str = setting("5s", check=_regex(_DURATION_RE, "a duration such as '5s'"))
    health_check_unhealthy_threshold: int = setting(3, min=1, max=20)
    health_check_healthy_threshold: int = setting(1, min=1, max=20)
    # Envoy Gateway runs the proxies in its own namespace (controller-namespace mode, its
    # default); the NetworkPolicies admit the gateway's pods from there.
    envoy_namespace: str = setting("envoy-gateway-system", check=_regex(_DNS_LABEL_RE, "a namespace name"))
    envoy_replicas: int = setting(min=1, max=50)
    envoy_cpu: str = setting("500m", check=_check_cpu)
    envoy_memory: str = setting("512Mi", check=_check_memory)


@dataclass(frozen=True, kw_only=True)
class Gslb:
    dns_ttl_seconds: int = setting(30, min=5, max=3600)
    # k8gb's controller reconcile interval (k8gb install setting), used for the failover estimate.
    reconcile_seconds: int = setting(30, min=5, max=600)
    primary_geo_tag: str = setting("lagos")


@dataclass(frozen=True, kw_only=True)
class Monitoring:
    release_label: str = setting("kube-prometheus-stack")
    # Namespace Prometheus scrapes from; the NetworkPolicies admit scrapes from it only.
    namespace: str = setting("monitoring", check=_regex(_DNS_LABEL_RE, "a namespace name"))
    # Where KEDA's request-rate trigger queries Prometheus.  Empty: kube-prometheus-stack's
    # Service in `namespace` (filled in below, so the namespace is written once); set it
    # when Prometheus runs elsewhere or under another release name.
    prometheus_address: str = setting("", check=lambda v: None if not v or _URL_RE.match(v) else "must be an http(s) URL")
    # Counter of HTTP requests the backend exports, labelled by namespace and pod.
    request_metric: str = setting("http_requests_total", check=_regex(re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"), "a metric name"))
    latency_metric: str = setting(
        "http_request_duration_seconds", check=_regex(re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"), "a metric name")
    )
    dashboard_label: str = setting("grafana_dashboard")
    # London replays WAL only from the object store (no streaming): a segment reaches it
    # after CNPG's archive_timeout (5 min) plus the upload and the next restore poll, and
    # with no writes in Lagos the lag (seconds since the last replayed transaction) keeps
    # growing on wall-clock time.  So the threshold sits well above 300 s + upload.
    replication_lag_alert_seconds: int = setting(900, min=10, max=86400)
    # The source side of the same chain: WAL segments wait to be archived and nothing has
    # reached the object store for this long.  Above archive_timeout + upload, since a
    # finished segment may wait up to archive_timeout after the previous upload.
    wal_archive_stall_alert_seconds: int = setting(900, min=60, max=86400)
    latency_slo_ms: int = setting(500, min=10, max=60_000)
    availability_slo_percent: float = setting(99.9, min=90.0, max=99.999)
    # Label of request_metric that carries the HTTP status code (5xx counts as an error).
    request_code_label: str = setting("code", check=_regex(re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$"), "a label name"))
    # Every alert links to docs/runbooks/<file>.md under this URL.
    runbook_base_url: str = setting(
        "https://github.com/tikit/tikit-infra/blob/main/docs/runbooks", check=_regex(_URL_RE, "an http(s) URL")
    )
    scrape_interval: str = setting("30s", check=_regex(re.compile(r"^[1-9][0-9]*[sm]$"), "a duration such as '30s'"))
    # The notes' alert table (docs/observability.md): warning / critical thresholds.
    cpu_warning_percent: int = setting(70, min=1, max=100)
    cpu_critical_percent: int = setting(90, min=1, max=100)
    memory_warning_percent: int = setting(80, min=1, max=100)
    memory_critical_percent: int = setting(95, min=1, max=100)
    error_rate_warning_percent: float = setting(1.0, min=0.01, max=100.0)
    error_rate_critical_percent: float = setting(5.0, min=0.01, max=100.0)
    latency_p99_warning_seconds: float = setting(1.0, min=0.01, max=60.0)
    latency_p99_critical_seconds: float = setting(3.0, min=0.01, max=60.0)
    db_connections_warning_percent: int = setting(80, min=1, max=100)
    db_connections_critical_percent: int = setting(95, min=1, max=100)
    cache_hit_warning_percent: int = setting(80, min=1, max=100)   # alert BELOW these
    cache_hit_critical_percent: int = setting(60, min=1, max=100)
    # Below this many lookups per second a hit rate says nothing (a handful of misses).
    cache_min_lookups_per_second: float = setting(1.0, min=0.0, max=1_000_000.0)
    # PgBouncer: server connections in use as a share of max_db_connections, which the ini
    # sets to default_pool_size + reserve_pool_size.
    pool_saturation_warning_percent: int = setting(80, min=1, max=100)
    pool_saturation_critical_percent: int = setting(95, min=1, max=100)
    # Oldest client waiting for a server connection (SHOW POOLS maxwait).
    pool_wait_critical_seconds: int = setting(10, min=1, max=3600)
    # A PostgreSQL base backup is late after one schedule period plus this margin.
    backup_age_margin_seconds: int = setting(7200, min=0, max=7 * 86400)
    redis_backup_max_age_seconds: int = setting(7200, min=60, max=7 * 86400)
    # How long a condition must hold before the alert fires.
    alert_for: str = setting("5m", check=_regex(re.compile(r"^[0-9]+[smh]$"), "a duration such as '5m'"))
    fast_alert_for: str = setting("1m", check=_regex(re.compile(r"^[0-9]+[smh]$"), "a duration such as '1m'"))
    # CPU and memory hover around the autoscaler's own targets: only a sustained excess counts.
    utilization_alert_for: str = setting("10m", check=_regex(re.compile(r"^[0-9]+[smh]$"), "a duration such as '10m'"))
    at_max_replicas_for: str = setting("15m", check=_regex(re.compile(r"^[0-9]+[smh]$"), "a duration such as '15m'"))
    # Operators' metrics live in their own namespaces (install settings of those charts);
    # KEDA's namespace is network.kedaNamespace.
    keda_metrics_port: str = setting("http", check=_regex(_DNS_LABEL_RE, "a container port name"))
    k8gb_namespace: str = setting("k8gb", check=_regex(_DNS_LABEL_RE, "a namespace name"))

    def __post_init__(self) -> None:
        if not self.prometheus_address:
            # kube-prometheus-stack (release kube-prometheus-stack) names its Service so.
            # Filled in once, at construction (the section is frozen), so every reader of
            # prometheus_address sees the effective address.
            derived = f"http://kube-prometheus-stack-prometheus.{self.namespace}.svc:9090"
            object.__setattr__(self, "prometheus_address", derived)


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """What the stack must carry; the capacity policy checks it against max replicas."""

    target_concurrent_users: int = setting(min=1, max=10_000_000)
    requests_per_user_per_minute: float = setting(1.0, min=0.01, max=1000.0)


def _check_cidr(v: str) -> Optional[str]:
    import ipaddress

    try:
        ipaddress.ip_network(v, strict=True)
    except ValueError:
        return f"must be a CIDR such as '0.0.0.0/0' or '10.20.0.0/16', got {v!r}"
    return None


@dataclass(frozen=True, kw_only=True)
class Network:
    """Where the namespace's neighbours live, for the NetworkPolicies (docs/traffic.md)."""

    cnpg_operator_namespace: str = setting("cnpg-system", check=_regex(_DNS_LABEL_RE, "a namespace name"))
    # KEDA's install namespace: its operator reads the workers' Redis queue (a NetworkPolicy
    # admits it) and Prometheus scrapes it there (the monitoring tier's PodMonitor).
    keda_namespace: str = setting("keda", check=_regex(_DNS_LABEL_RE, "a namespace name"))
    dns_namespace: str = setting("kube-system", check=_regex(_DNS_LABEL_RE, "a namespace name"))
    # Everything outside the cluster (object storage, the Kubernetes API endpoints, the
    # third-party APIs the app calls) is reached in this range, on HTTPS only.
    external_cidr: str = setting("0.0.0.0/0", check=_check_cidr)
    # Port the API server's endpoints listen on after the Service NAT: 443 on managed
    # clusters, 6443 on kubeadm ones.  CNPG's instance manager talks to it.
    api_server_port: int = setting(443, min=1, max=65535)
    # The k6-operator's namespace: the operator polls and starts the load-test runners there.
    k6_operator_namespace: str = setting("k6-operator-system", check=_regex(_DNS_LABEL_RE, "a namespace name"))


# k6 stage "<duration>:<virtual users>"; Chaos Mesh durations (its CRDs' own pattern).
_STAGE_RE = re.compile(r"^([1-9][0-9]*(?:s|m|h)):([0-9]{1,6})$")
_CHAOS_DURATION_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h)$")


def _check_stages(v: tuple) -> Optional[str]:
    if not v:
        return "must list at least one stage such as '2m:100'"
    for s in v:
        if not _STAGE_RE.match(s):
            return f"stage {s!r} must be '<duration>:<virtual users>' such as '2m:100'"
    return None


@dataclass(frozen=True, kw_only=True)
class Resilience:
    """The notes' "Testing Auto-Scaling": a k6 load test (k6-operator TestRun) and Chaos Mesh
    experiments on a schedule (docs/resilience.md).  The thresholds of the load test are
    monitoring.latencySloMs and monitoring.errorRateWarningPercent, not settings of their own."""

    # The chaos Schedules (and the script ConfigMap) in every region of the stack.
    enabled: bool = setting()
    # The TestRun itself, primary region only.  Creating a TestRun STARTS the test: turning
    # this on in a stack file and running `pulumi up` is running the load test.
    load_test: bool = setting(False)
    # k6: the notes' stages ("<duration>:<virtual users>", totals over all runners: the
    # operator splits them with execution segments), the think time of sleep(1), and the
    # path under gateway.apiPrefix the virtual users GET.
    stages: list = setting(["2m:100", "5m:100", "2m:1000", "5m:1000", "2m:0"], check=_check_stages)
    think_time_seconds: int = setting(1, min=0, max=60)
    path: str = setting("/events", check=_regex(_PATH_RE, "an absolute path such as '/events'"))
    parallelism: int = setting(4, min=1, max=100)
    k6_image: str = setting("docker.io/grafana/k6:1.3.0", check=_check_image)
    # The starter pod only curls the runners' REST API to start them together.
    starter_image: str = setting("docker.io/curlimages/curl:8.11.1", check=_check_image)
    runner_cpu: str = setting("1", check=_check_cpu)
    runner_memory: str = setting("2Gi", check=_check_memory)
    starter_cpu: str = setting("50m", check=_check_cpu)
    starter_memory: str = setting("64Mi", check=_check_memory)
    # Chaos Mesh Schedules: five-field cron on the controller's clock (UTC), outside the
    # 18:00-24:00 Lagos peak and on working days, when people watch.
    api_kill_schedule: str = setting("0 10 * * 1-5", check=_regex(_CRON5_RE, "a five-field cron expression"))
    network_delay_schedule: str = setting("30 10 * * 1-5", check=_regex(_CRON5_RE, "a five-field cron expression"))
    database_kill_schedule: str = setting("0 11 * * 3", check=_regex(_CRON5_RE, "a five-field cron expression"))
    network_latency: str = setting("200ms", check=_regex(_CHAOS_DURATION_RE, "a duration such as '200ms'"))
    network_delay_duration: str = setting("5m", check=_regex(_CHAOS_DURATION_RE, "a duration such as '5m'"))
    # "all": the whole API tier answers late, as on a degraded network; "one": a single pod.
    network_delay_mode: str = setting("all", choices=("all", "one"))
    # 0: the pod is killed outright, as a crash would.
    kill_grace_period_seconds: int = setting(0, min=0, max=3600)
    history_limit: int = setting(5, min=1, max=100)
    # A run the controller missed by more than this is skipped, not started late.
    starting_deadline_seconds: int = setting(300, min=1, max=86400)

    @property
    def stage_list(self) -> tuple[tuple[str, int], ...]:
        """The stages as (duration, virtual users)."""
        return tuple((m.group(1), int(m.group(2))) for m in (_STAGE_RE.match(s) for s in self.stages) if m)


SECTIONS: dict[str, type] = {
    "backend": Backend,
    "workers": Workers,
    "postgres": Postgres,
    "pgbouncer": PgBouncer,
    "redis": Redis,
    "objectStorage": ObjectStorage,
    "gateway": Gateway,
    "gslb": Gslb,
    "monitoring": Monitoring,
    "capacity": Capacity,
    "network": Network,
    "resilience": Resilience,
}

# --------------------------------------------------------------------------------------
# The preset table: one row per setting that differs by environment (dev, staging, prod).
# --------------------------------------------------------------------------------------

PRESETS: dict[str, tuple[Any, Any, Any]] = {
    #                                       dev        staging    prod
    "backend.minReplicas":                  (1,        2,         2),
    "backend.maxReplicas":                  (1,        2,         10),
    "backend.cpu":                          ("500m",   "1",       "2"),
    "backend.memory":                       ("512Mi",  "1Gi",     "2Gi"),
    "backend.peakMinReplicas":              (0,        0,         5),
    "workers.minReplicas":                  (0,        0,         1),
    "workers.maxReplicas":                  (2,        3,         10),
    "workers.cpu":                          ("250m",   "500m",    "1"),
    "workers.memory":                       ("256Mi",  "512Mi",   "1Gi"),
    "postgres.instances":                   (1,        2,         3),
    "postgres.cpu":                         ("500m",   "1",       "2"),
    "postgres.memory":                      ("1Gi",    "2Gi",     "8Gi"),
    "postgres.storageSize":                 ("5Gi",    "20Gi",    "100Gi"),
    "postgres.walStorageSize":              ("2Gi",    "5Gi",     "20Gi"),
    "postgres.retention":                   ("3d",     "7d",      "14d"),
    "pgbouncer.replicas":                   (1,        2,         2),
    "redis.replicas":                       (1,        2,         3),
    "redis.sentinels":                      (0,        0,         3),
    "redis.cpu":                            ("250m",   "500m",    "1"),
    "redis.memory":                         ("256Mi",  "512Mi",   "2Gi"),
    "redis.storageSize":                    ("1Gi",    "5Gi",     "20Gi"),
    "redis.backupRetentionHours":           (24,       72,        168),
    "gateway.hostname":                     ("api.dev.tikit.app", "api.staging.tikit.app", "api.tikit.app"),
    "gateway.envoyReplicas":                (1,        2,         3),
    "capacity.targetConcurrentUsers":       (100,      1000,      10000),
    # Chaos experiments run where people rehearse failures, not in prod by default.
    "resilience.enabled":                   (False,    True,      False),
}

REGION_PRESETS: dict[str, list[dict[str, str]]] = {
    "dev": [{"name": "lagos", "role": "primary"}],
    "staging": [{"name": "lagos", "role": "primary"}, {"name": "london", "role": "backup"}],
    "prod": [{"name": "lagos", "role": "primary"}, {"name": "london", "role": "backup"}],
}

TOP_LEVEL_KEYS = ("environment", "namespace", "regions", *SECTIONS)


# --------------------------------------------------------------------------------------
# The frozen result
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Derived:
    """Numbers computed from other settings, in one place (formulas in docs/sizing.md)."""

    # Each PgBouncer pod opens at most default_pool_size + reserve_pool_size server connections.
    pgbouncer_server_connections_per_pod: int
    # Both pools (write and read) may land on one instance: the read pool targets `-r` in a
    # single-instance cluster and any standby can be promoted.
    pool_server_connections: int
    # max_connections = pools + superuser_reserved + admin headroom (WAL senders have their
    # own slots since PostgreSQL 12).
    postgres_max_connections: int
    postgres_shared_buffers_mb: int       # 25% of the memory limit
    postgres_effective_cache_size_mb: int  # 75% of the memory limit
    postgres_work_mem_mb: int             # (limit - shared_buffers) / max_connections / 2, at least 1
    postgres_maintenance_work_mem_mb: int  # 5% of the memory limit, at least 64
    redis_maxmemory_bytes: int            # maxmemory_percent of the container limit
    redis_fork_headroom_bytes: int        # the rest of the limit, kept for the COW fork
    client_connections: int               # backend max x per-replica + workers max x per-replica
    pgbouncer_client_capacity: int        # pgbouncer replicas x (max_client_conn - 1 exporter login)


@dataclass(frozen=True, kw_only=True)
class Settings:
    project: str
    stack: str
    environment: str
    namespace: str
    regions: tuple[Region, ...]
    backend: Backend
    workers: Workers
    postgres: Postgres
    pgbouncer: PgBouncer
    redis: Redis
    object_storage: ObjectStorage
    gateway: Gateway
    gslb: Gslb
    monitoring: Monitoring
    capacity: Capacity
    network: Network
    resilience: Resilience
    derived: Derived

    @property
    def primary(self) -> Region:
        return next(r for r in self.regions if r.role == "primary")

    @property
    def backups(self) -> tuple[Region, ...]:
        return tuple(r for r in self.regions if r.role == "backup")

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    def bucket(self, region: str) -> str:
        return f"{self.object_storage.bucket_prefix}-{self.environment}-{region}"

    def object_storage_endpoint(self, region: str) -> str:
        """S3 endpoint of ``region``'s bucket: the region's own, else objectStorage.endpointUrl."""
        own = next(r.object_storage_endpoint for r in self.regions if r.name == region)
        return own or self.object_storage.endpoint_url


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _type_name(t: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a map"}.get(t, str(t))


def _coerce(key: str, value: Any, t: Any, meta: Mapping[str, Any]) -> Any:
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if t is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if (isinstance(value, bool) and t is not bool) or not isinstance(value, t):
        raise ConfigError(key, f"must be {_type_name(t)}, got {json.dumps(value, default=str)[:60]}")
    if t in (int, float):
        if meta.get("min") is not None and value < meta["min"]:
            raise ConfigError(key, f"must be >= {meta['min']}, got {value}")
        if meta.get("max") is not None and value > meta["max"]:
            raise ConfigError(key, f"must be <= {meta['max']}, got {value}")
    if t is list:
        if not all(isinstance(v, str) and v for v in value):
            raise ConfigError(key, "must be a list of non-empty strings")
        value = tuple(value)
    if t is dict:
        if not all(isinstance(k, str) for k in value):
            raise ConfigError(key, "must be a map with string keys")
        value = dict(sorted(value.items()))
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(key, f"must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
    check = meta.get("check")
    if check:
        problem = check(value)
        if problem:
            raise ConfigError(key, problem)
    return value


def _build(cls: type, prefix: str, values: Mapping[str, Any]) -> Any:
    """Build a frozen section from camelCase values, rejecting unknown and missing keys."""
    if not isinstance(values, Mapping):
        raise ConfigError(prefix, f"must be a map, got {json.dumps(values, default=str)[:60]}")
    hints = get_type_hints(cls)
    fields = {camel(f.name): f for f in dataclasses.fields(cls)}
    for k in values:
        if k not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"{prefix}.{k}", f"unknown key; allowed: {allowed}")
    kwargs = {}
    for ck, f in fields.items():
        key = f"{prefix}.{ck}"
        if ck in values:
            value = values[ck]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        else:
            raise ConfigError(key, "is required")
        t = hints[f.name]
        t = get_origin(t) or t
        if t is Optional:  # pragma: no cover - no optional fields today
            t = get_args(hints[f.name])[0]
        kwargs[f.name] = _coerce(key, value, t, f.metadata)
    return cls(**kwargs)


def _preset(environment: str) -> dict[str, dict[str, Any]]:
    index = ENVIRONMENTS.index(environment)
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for dotted, row in PRESETS.items():
        section, key = dotted.split(".", 1)
        out[section][key] = row[index]
    return out


def _regions(value: Any) -> tuple[Region, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError("regions", "must be a non-empty list of {name, role[, context, geoTag, objectStorageEndpoint]}")
    regions = tuple(_build(Region, f"regions[{i}]", r) for i, r in enumerate(value))
    primaries = [r for r in regions if r.role == "primary"]
    if not primaries:
        raise ConfigError("regions", "no primary region; exactly one region needs role 'primary'")
    if len(primaries) > 1:
        names = ", ".join(r.name for r in primaries)
        raise ConfigError("regions", f"exactly one primary region allowed, got {names}")
    seen: set[str] = set()
    for r in regions:
        if r.name in seen:
            if r.role == "backup" and r.name == primaries[0].name:
                raise ConfigError("regions", f"backup region '{r.name}' equals the primary region")
            raise ConfigError("regions", f"duplicate region name '{r.name}'")
        seen.add(r.name)
    # Primary first, then backups in declaration order: stable URNs and outputs.
    return tuple(primaries) + tuple(r for r in regions if r.role == "backup")


def _derive(s: Settings) -> Derived:
    pb, pg, rd = s.pgbouncer, s.postgres, s.redis
    per_pod = pb.default_pool_size + pb.reserve_pool_size
    pools = 2 * pb.replicas * per_pod  # write pool + read pool
    max_conn = pools + pg.superuser_reserved_connections + pg.admin_connections
    mem_mb = mebibytes(pg.memory)
    shared = mem_mb // 4
    limit = memory_bytes(rd.memory)
    maxmem = limit * rd.maxmemory_percent // 100
    return Derived(
        pgbouncer_server_connections_per_pod=per_pod,
        pool_server_connections=pools,
        postgres_max_connections=max_conn,
        postgres_shared_buffers_mb=shared,
        postgres_effective_cache_size_mb=mem_mb * 3 // 4,
        postgres_work_mem_mb=max(1, (mem_mb - shared) // max_conn // 2),
        postgres_maintenance_work_mem_mb=max(64, mem_mb // 20),
        redis_maxmemory_bytes=maxmem,
        redis_fork_headroom_bytes=limit - maxmem,
        client_connections=s.backend.max_replicas * s.backend.db_connections_per_replica
        + s.workers.max_replicas * s.workers.db_connections_per_replica,
        # The exporter's admin-console login holds one client slot in every pod.
        pgbouncer_client_capacity=pb.replicas * (pb.max_client_conn - 1),
    )


def _cross_checks(s: Settings) -> None:
    b, w, r = s.backend, s.workers, s.redis
    if b.min_replicas > b.max_replicas:
        raise ConfigError("backend.minReplicas", f"{b.min_replicas} is greater than backend.maxReplicas {b.max_replicas}")
    if b.peak_min_replicas > b.max_replicas:
        raise ConfigError(
            "backend.peakMinReplicas", f"{b.peak_min_replicas} is greater than backend.maxReplicas {b.max_replicas}"
        )
    if w.min_replicas > w.max_replicas:
        raise ConfigError("workers.minReplicas", f"{w.min_replicas} is greater than workers.maxReplicas {w.max_replicas}")
    if b.pre_stop_seconds >= b.shutdown_seconds:
        raise ConfigError(
            "backend.preStopSeconds", f"{b.pre_stop_seconds} must be less than backend.shutdownSeconds {b.shutdown_seconds}"
        )
    if r.sentinels and r.sentinel_quorum > r.sentinels:
        raise ConfigError("redis.sentinelQuorum", f"{r.sentinel_quorum} is greater than redis.sentinels {r.sentinels}")
    if r.sentinels and r.replicas < 2:
        raise ConfigError("redis.sentinels", "Sentinel needs at least one replica to promote (redis.replicas >= 2)")
    if r.sentinels and r.sentinels < 3:
        raise ConfigError("redis.sentinels", f"must be 0 or at least 3 for a safe quorum, got {r.sentinels}")
    if s.is_prod and r.maxmemory_policy.startswith("allkeys"):  # pragma: no cover - not in choices
        raise ConfigError("redis.maxmemoryPolicy", "must not evict queue keys")
    for i, path in enumerate(s.gateway.websocket_paths):
        if not _PATH_RE.match(path):
            raise ConfigError(f"gateway.websocketPaths[{i}]", f"must be an absolute path, got {path!r}")
    for i, rule in enumerate(r.save_rules):
        if not re.match(r"^[1-9][0-9]* [1-9][0-9]*$", rule):
            raise ConfigError(f"redis.saveRules[{i}]", f"must be '<seconds> <changes>', got {rule!r}")
    if s.gslb.primary_geo_tag != s.primary.tag:
        raise ConfigError(
            "gslb.primaryGeoTag", f"'{s.gslb.primary_geo_tag}' must be the primary region's geo tag '{s.primary.tag}'"
        )
    if s.resilience.load_test and not s.resilience.enabled:
        # Not silently ignored: the whole resilience tier is off without `enabled`.
        raise ConfigError("resilience.loadTest", "true needs resilience.enabled: true as well")
    _redis_wait_checks(r)
    _postgres_parameter_checks(s.postgres)
    _monitoring_checks(s.monitoring)
    _backup_age_checks(s)


# What the Redis deadlines must leave on top of the waits they cover.
REDIS_BACKUP_UPLOAD_MARGIN_SECONDS = 60  # stream, check and upload the snapshot after the BGSAVE
REDIS_SHUTDOWN_SAVE_MARGIN_SECONDS = 5   # the final RDB save and AOF fsync after shutdown-timeout


def _redis_wait_checks(r: Redis) -> None:
    need = r.backup_wait_seconds + REDIS_BACKUP_UPLOAD_MARGIN_SECONDS
    if r.backup_active_deadline_seconds < need:
        raise ConfigError(
            "redis.backupActiveDeadlineSeconds",
            f"{r.backup_active_deadline_seconds} must be at least redis.backupWaitSeconds {r.backup_wait_seconds}"
            f" + {REDIS_BACKUP_UPLOAD_MARGIN_SECONDS} s for the upload ({need})",
        )
    need = r.shutdown_timeout_seconds + REDIS_SHUTDOWN_SAVE_MARGIN_SECONDS
    if r.termination_grace_seconds < need:
        raise ConfigError(
            "redis.terminationGraceSeconds",
            f"{r.termination_grace_seconds} must be at least redis.shutdownTimeoutSeconds {r.shutdown_timeout_seconds}"
            f" + {REDIS_SHUTDOWN_SAVE_MARGIN_SECONDS} s for the final save ({need})",
        )


def _postgres_parameter_checks(pg: Postgres) -> None:
    """postgres.parameters overrides the operator would reject, or that cannot replicate."""
    # Imported here: conf.postgres imports this module, and keeps the one list of what the
    # operator owns next to the parameters it renders.
    from tikit.conf import postgres as pg_conf

    problem = pg_conf.parameters_problem(pg.parameters)
    if problem:
        raise ConfigError("postgres.parameters", problem)


def _monitoring_checks(m: Monitoring) -> None:
    """Warning thresholds come before critical ones (cache hit rate alerts BELOW its thresholds)."""
    pairs = (
        ("cpuWarningPercent", m.cpu_warning_percent, m.cpu_critical_percent),
        ("memoryWarningPercent", m.memory_warning_percent, m.memory_critical_percent),
        ("errorRateWarningPercent", m.error_rate_warning_percent, m.error_rate_critical_percent),
        ("latencyP99WarningSeconds", m.latency_p99_warning_seconds, m.latency_p99_critical_seconds),
        ("dbConnectionsWarningPercent", m.db_connections_warning_percent, m.db_connections_critical_percent),
        ("poolSaturationWarningPercent", m.pool_saturation_warning_percent, m.pool_saturation_critical_percent),
    )
    for key, warn, crit in pairs:
        if warn >= crit:
            critical_key = key.replace("Warning", "Critical")
            raise ConfigError(f"monitoring.{key}", f"{warn} must be below monitoring.{critical_key} {crit}")
    if m.cache_hit_warning_percent <= m.cache_hit_critical_percent:
        raise ConfigError(
            "monitoring.cacheHitWarningPercent",
            f"{m.cache_hit_warning_percent} must be above monitoring.cacheHitCriticalPercent {m.cache_hit_critical_percent}",
        )


def cron_period_seconds(schedule: str) -> Optional[int]:
    """Period of a regular cron schedule (five fields, or six with seconds first): daily at
    a fixed time, hourly at a fixed minute, or every N hours (N divides 24).  None for
    anything else: weekdays only, monthly, every few minutes.  Day-of-month and weekday
    may be "*" or "?" (CNPG's cron library reads "?" as "*")."""
    fields = schedule.split()
    if len(fields) == 6:
        second, *fields = fields
        if not (second.isdigit() and int(second) < 60):
            return None
    if len(fields) != 5:
        return None
    minute, hour, dom, month, dow = fields
    if month != "*" or dom not in ("*", "?") or dow not in ("*", "?"):
        return None
    if not (minute.isdigit() and int(minute) < 60):
        return None
    if hour.isdigit():
        return 86400 if int(hour) < 24 else None
    if hour == "*":
        return 3600
    every = re.fullmatch(r"\*/([1-9][0-9]?)", hour)
    if every and 24 % int(every.group(1)) == 0:
        return int(every.group(1)) * 3600
    return None


def backup_period_seconds(key: str, schedule: str) -> int:
    """The period of a backup schedule, which the backup-age alerts add their margin to;
    a schedule without a known period is refused rather than guessed."""
    period = cron_period_seconds(schedule)
    if period is None:
        raise ConfigError(
            key, f"the backup-age alert needs a daily, hourly or every-N-hours schedule, got '{schedule}'"
        )
    return period


def _backup_age_checks(s: Settings) -> None:
    backup_period_seconds("postgres.backupSchedule", s.postgres.backup_schedule)
    redis_period = backup_period_seconds("redis.backupSchedule", s.redis.backup_schedule)
    max_age = s.monitoring.redis_backup_max_age_seconds
    if max_age <= redis_period:
        raise ConfigError(
            "monitoring.redisBackupMaxAgeSeconds",
            f"{max_age} must exceed the Redis backup period of {redis_period} s "
            f"(redis.backupSchedule '{s.redis.backup_schedule}')",
        )


def load(config: Mapping[str, Any], *, stack: str, project: str = PROJECT) -> Settings:
    """Validate a stack's config (keys without the project prefix, values already parsed)."""
    if not isinstance(config, Mapping):
        raise ConfigError("config", "must be a map")
    for k in config:
        if k not in TOP_LEVEL_KEYS:
            raise ConfigError(k, f"unknown key; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    environment = config.get("environment", stack if stack in ENVIRONMENTS else None)
    if environment not in ENVIRONMENTS:
        raise ConfigError("environment", f"must be one of {', '.join(ENVIRONMENTS)}; got {environment!r}")
    namespace = config.get("namespace", "tikit")
    if not isinstance(namespace, str) or not _DNS_LABEL_RE.match(namespace):
        raise ConfigError("namespace", f"must be a DNS label such as 'tikit', got {namespace!r}")
    preset = _preset(environment)
    sections = {}
    for name, cls in SECTIONS.items():
        override = config.get(name, {})
        if not isinstance(override, Mapping):
            raise ConfigError(name, f"must be a map, got {json.dumps(override, default=str)[:60]}")
        sections[name] = _build(cls, name, {**preset[name], **override})
    regions = _regions(config.get("regions", REGION_PRESETS[environment]))
    partial = Settings(
        project=project,
        stack=stack,
        environment=environment,
        namespace=namespace,
        regions=regions,
        backend=sections["backend"],
        workers=sections["workers"],
        postgres=sections["postgres"],
        pgbouncer=sections["pgbouncer"],
        redis=sections["redis"],
        object_storage=sections["objectStorage"],
        gateway=sections["gateway"],
        gslb=sections["gslb"],
        monitoring=sections["monitoring"],
        capacity=sections["capacity"],
        network=sections["network"],
        resilience=sections["resilience"],
        derived=None,  # type: ignore[arg-type]
    )
    _cross_checks(partial)
    return dataclasses.replace(partial, derived=_derive(partial))


def _parse_value(key: str, raw: Any) -> Any:
    """The CLI hands structured values over as JSON strings and scalars as strings."""
    if not isinstance(raw, str):
        return raw
    if key in ("environment", "namespace"):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(key, f"must be {'a list' if key == 'regions' else 'a map'} (structured config), got {raw[:60]!r}")


def from_pulumi() -> Settings:
    """Read this stack's config the way the Pulumi engine provides it and validate it."""
    import pulumi
    from pulumi.runtime import config as rc

    all_config = {**rc.get_config_env(), **rc.CONFIG.get()}
    prefix = f"{pulumi.get_project()}:"
    raw = {k[len(prefix):]: v for k, v in all_config.items() if k.startswith(prefix)}
    parsed = {k: _parse_value(k, v) for k, v in sorted(raw.items())}
    return load(parsed, stack=pulumi.get_stack(), project=pulumi.get_project())
