"""Typed, validated stack settings.

Data flows one way: stack file -> ``load()`` (validated once, frozen) -> components.
Components never read ``pulumi.Config``; they receive the frozen sections below.

A setting is here only if an operator would change it for one stack; fixed facts (ports,
probe timings from the notes, protocol constants) are named constants beside the code that
uses them.  Every value starts from the environment's column of the preset table
(tikit/presets.py); a stack file (``Pulumi.<stack>.yaml``) holds only its deltas.  Numbers
computed from settings live in tikit/derived.py.

Field names are snake_case here and camelCase in the stack file.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from tikit import checks, cron, images, units
from tikit.conf import postgres as pg_conf
from tikit.derived import Derived, derive
from tikit.presets import ENVIRONMENTS, PRESETS, REGION_DEFAULTS, REGION_PRESETS, preset

try:  # Under the Pulumi engine a config error must print one line, not a traceback.
    from pulumi import RunError as _BaseError
except ImportError:  # pragma: no cover - pulumi is always installed with this project
    _BaseError = Exception

PROJECT = "tikit"
DEFAULT_NAMESPACE = "tikit"
# The peak hours are Lagos's evening (the notes: "6 PM - 11 PM WAT"): the KEDA cron
# trigger's time zone, and the zone the NodePools' peak disruption budgets convert from.
PEAK_TIMEZONE = "Africa/Lagos"
# The only node class kind the program can declare (any kind can be referenced).
EC2_NODE_CLASS_GROUP = "karpenter.k8s.aws"
EC2_NODE_CLASS_KIND = "EC2NodeClass"

__all__ = ["ConfigError", "Settings", "load", "from_pulumi", "ENVIRONMENTS", "PRESETS", "REGION_PRESETS"]


class ConfigError(_BaseError):
    """A stack setting is wrong.  ``str(err)`` is one line: ``<key>: <what is wrong>``."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        # One line of printable text whatever the user typed: keys and values may hold
        # line breaks and other control characters (a terminal escape sequence, U+2028).
        text = f"{key}: {message}"
        if not text.isprintable():
            text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
        super().__init__(text)


def camel(name: str) -> str:
    """A field's key in the stack file: snake_case joined as camelCase, each word as written
    ("k8gb_namespace" -> "k8gbNamespace", "latency_p99_warning_seconds" ->
    "latencyP99WarningSeconds"). pydantic's own to_camel also capitalises a letter after a
    digit ("k8GbNamespace"), which nobody would type."""
    first, *rest = name.split("_")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


class Section(BaseModel):
    """A frozen settings section: unknown keys, wrong types, non-finite numbers and text
    that is not printable are refused."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, alias_generator=camel, allow_inf_nan=False,
        validate_default=True,
    )

    @field_validator("*")
    @classmethod
    def _printable(cls, v: Any) -> Any:
        """No string setting is more than one line of printable text: a newline, a NUL, a
        bidi override or U+2028 in a name, a label or a config file line is never meant.
        (A map setting checks its own keys and values: postgres.parameters.)"""
        for text in [v] if isinstance(v, str) else v if isinstance(v, tuple) else ():
            if isinstance(text, str) and (char := checks.unprintable(text)):
                raise ValueError(f"contains the control character {char}; only printable text is allowed")
        return v


# A list in the stack file, a tuple here (sections are frozen).
def _strings(default: tuple[str, ...]) -> Any:
    return Field(default, strict=False)


# --------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------


# Read-only credentials Secrets end with this: the policy pack tells them from read-write
# ones by name (it cannot see the keys, which are created out of band).
READ_ONLY_SUFFIX = "-readonly"
# A whole S3 bucket name (3-63 characters), not just a prefix.
BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
OptionalBucketName = Annotated[
    str, AfterValidator(lambda v: _optional(v, BUCKET_NAME_RE, "an S3 bucket name (3-63 lowercase letters, digits, '.', '-')"))
]
OptionalDnsLabel = Annotated[
    str, AfterValidator(lambda v: _optional(v, checks.DNS_LABEL_RE, "a DNS label (lowercase letters, digits and '-', at most 63)"))
]


def _optional(value: str, rx: "re.Pattern[str]", what: str) -> str:
    if value and not rx.match(value):
        raise ValueError(f"must be {what}, got {value!r}")
    return value


class RegionObjectStorage(Section):
    """Where THIS region's backups live: its PostgreSQL WAL archive and base backups and its
    Redis snapshots (docs/postgres.md, "Object storage per region").  Every value left empty
    takes the stack-wide default; prod must state ``endpoint`` for every region."""

    # S3 endpoint of the storage that holds this region's bucket, used wherever the bucket
    # is read or written (in this region and by every peer).  "" = objectStorage.endpointUrl.
    endpoint: checks.OptionalUrl = ""
    # "" = <objectStorage.bucketPrefix>-<environment>-<region>.
    bucket: OptionalBucketName = ""
    # Secret with READ-WRITE keys to this bucket, in this region's cluster only.
    # "" = <objectStorage.credentialsSecret>-<region>.
    credentials_secret: OptionalDnsLabel = ""
    # Secret with READ-ONLY keys to this bucket, in every OTHER region's cluster (they
    # bootstrap, replay WAL and run restore drills from it).  Must end with "-readonly".
    # "" = <credentials secret>-readonly.
    read_only_credentials_secret: OptionalDnsLabel = ""


class NodeClass(Section):
    """The Karpenter node class a region's NodePools launch from (docs/nodes.md).

    ``declare: true`` (the default) declares an EC2NodeClass from ``role`` and the selector
    tags; ``declare: false`` only references an existing node class of ``group``/``kind``/
    ``name``: another cloud's (an AKSNodeClass, ...), or one the platform team owns."""

    group: checks.ApiGroup = "karpenter.k8s.aws"
    kind: checks.Kind = "EC2NodeClass"
    # Empty: the stack's namespace (node classes are cluster-scoped).
    name: str = ""
    declare: bool = True
    # IAM role of the nodes; empty: KarpenterNodeRole-<cluster> (Karpenter's install guide).
    role: checks.IamRole = ""
    # Subnets and security groups by tag; empty: {"karpenter.sh/discovery": <cluster>}.
    subnet_tags: dict[checks.AwsTag, checks.AwsTag] = {}
    security_group_tags: dict[checks.AwsTag, checks.AwsTag] = {}
    # "latest" follows every AMI release (nodes drift and are replaced, within the
    # disruption budgets); pin a version (al2023@v20250101) to roll AMIs by hand.
    ami_alias: checks.AmiAlias = "al2023@latest"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v and not checks.DNS_LABEL_RE.match(v):
            raise ValueError(f"must be a DNS label, got {v!r}")
        return v


class Region(Section):
    name: checks.RegionName
    role: Literal["primary", "backup"]
    # kubeconfig context; empty means: render YAML to build/<stack>/<region>/ instead.
    context: checks.KubeContext = ""
    # k8gb geo tag of this cluster (k8gb install setting clusterGeoTag); defaults to the name.
    geo_tag: checks.GeoTag = ""
    # This region's own object store (endpoint, bucket, credentials).
    object_storage: RegionObjectStorage = Field(default_factory=RegionObjectStorage, strict=False)
    # "install": the add-ons tier installs the operators (tikit/versions.py) in this
    # cluster; "external": the cluster's platform team already runs them (README lists
    # what must then be present) and nothing is installed here.  Unset: "install" where
    # the region has a context; a region that renders YAML installs nothing (Helm cannot
    # template the operators' charts without a cluster, see ADDONS_NEED_A_CLUSTER).
    addons: Optional[Literal["install", "external"]] = None
    # Karpenter: the node class, the zones the pools may use (empty: every zone the node
    # class's subnets are in), and whether workers may fall back to on-demand nodes when
    # spot capacity is short (docs/nodes.md says where and why).
    node_class: NodeClass = NodeClass()
    zones: tuple[checks.LabelValue, ...] = _strings(())
    spot_fallback: bool = True

    @property
    def tag(self) -> str:
        return self.geo_tag or self.name

    @property
    def installs_addons(self) -> bool:
        return bool(self.context) and self.addons != "external"

    @property
    def addons_mode(self) -> str:
        """"install", "external" or "rendered" (no cluster: the platform's own objects only)."""
        if not self.context:
            return "rendered"
        return self.addons or "install"


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


class Backend(Section):
    """The API tier (docs/autoscaling.md maps the notes' scaling rules onto these)."""

    image: checks.Image = "ghcr.io/tikit/backend:1.0.0"
    min_replicas: int = Field(ge=1, le=100)
    max_replicas: int = Field(ge=1, le=100)
    cpu: checks.Cpu
    memory: checks.Memory
    cpu_target_percent: int = Field(70, ge=10, le=100)
    memory_target_percent: int = Field(80, ge=10, le=100)
    # The notes' scale-up threshold: the HPA adds pods above this many requests per minute
    # per instance.  Not the capacity of an instance (sustainableRequestsPerMinute).
    requests_per_minute_per_instance: int = Field(1000, ge=1, le=1_000_000)
    # What one instance serves at 100 % of its CPU request within the latency SLO: the
    # capacity the request-capacity policy and the capacity model count (docs/sizing.md).
    # An assumption until the k6 test measures it.
    sustainable_requests_per_minute: int = Field(ge=1, le=10_000_000)
    # From container start to /health answering on a node that has the image (the startup
    # probe tolerates up to 150 s): what the capacity model waits for a new pod.
    boot_seconds: int = Field(20, ge=1, le=600)
    # Peak-hour floor (KEDA cron, five fields, in autoscaling.PEAK_TIMEZONE).  0 disables it.
    peak_min_replicas: int = Field(0, ge=0, le=100)
    peak_start: checks.Cron5 = "0 18 * * *"
    peak_end: checks.Cron5 = "0 0 * * *"
    # Connections each API replica opens to PgBouncer ("100 connections each" in the notes).
    db_connections_per_replica: int = Field(100, ge=1, le=1000)


class Workers(Section):
    """Background jobs, cache warming and analytics, on spot capacity."""

    image: checks.Image = "ghcr.io/tikit/worker:1.0.0"
    min_replicas: int = Field(ge=0, le=100)
    max_replicas: int = Field(ge=1, le=100)
    cpu: checks.Cpu
    memory: checks.Memory
    queue_length_per_replica: int = Field(100, ge=1, le=100_000)
    db_connections_per_replica: int = Field(10, ge=1, le=1000)
    # Queue length drives the workers; CPU and memory add capacity for heavy jobs.
    cpu_target_percent: int = Field(70, ge=10, le=100)
    memory_target_percent: int = Field(80, ge=10, le=100)
    # Spot capacity: clouds (and Karpenter) label and taint spot nodes differently.
    spot_node_label_key: checks.LabelKey = "karpenter.sh/capacity-type"
    spot_node_label_value: checks.LabelValue = "spot"
    spot_taint_key: checks.LabelKey = "karpenter.sh/capacity-type"
    spot_taint_value: checks.LabelValue = "spot"
    spot_taint_effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class Postgres(Section):
    image: checks.Image = images.ref("postgresql")
    instances: int = Field(ge=1, le=9)
    cpu: checks.Cpu
    memory: checks.Memory
    storage_size: checks.Storage
    wal_storage_size: checks.Storage
    storage_class: checks.StorageClass = ""
    # Six fields, seconds first: CNPG's ScheduledBackup dialect (runs in UTC).
    backup_schedule: checks.Cron6 = "0 0 2 * * *"
    retention: checks.Retention
    # Extra postgresql.conf parameters (strings), merged over the derived ones.  Parameters
    # the operator owns and a wal_level that cannot replicate are refused.
    parameters: dict[str, str] = {}
    # Zone anti-affinity of the instances (they never share a node either way): "required"
    # only where every region has at least `instances` zones (docs/postgres.md).
    pod_anti_affinity: Literal["preferred", "required"] = "preferred"
    # Controlled switchover (docs/runbooks/postgres-switchover.md): the former primary
    # cluster's status.demotionToken, handed to the primary region's cluster.
    promotion_token: checks.Base64 = ""

    @field_validator("image")
    @classmethod
    def _major_first(cls, v: str) -> str:
        tag = v.partition("@")[0].rsplit("/", 1)[-1].partition(":")[2]
        if not (len(tag) >= 2 and tag[:2].isdigit()):
            raise ValueError("tag must start with the PostgreSQL major version (e.g. ':17.6')")
        return v

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, v: dict[str, str]) -> dict[str, str]:
        problem = pg_conf.parameters_problem(v)
        if problem:
            raise ValueError(problem)
        return dict(sorted(v.items()))


class PgBouncer(Section):
    image: checks.Image = images.ref("pgbouncer")
    exporter_image: checks.Image = images.ref("pgbouncer-exporter")
    replicas: int = Field(ge=1, le=20)
    # The notes' pgbouncer.ini: 1000 clients, pool 20, reserve 5 after 3 s.
    max_client_conn: int = Field(1000, ge=10, le=100_000)
    default_pool_size: int = Field(20, ge=1, le=1000)
    reserve_pool_size: int = Field(5, ge=0, le=1000)
    reserve_pool_timeout: int = Field(3, ge=0, le=600)
    cpu: checks.Cpu = "250m"
    memory: checks.Memory = "256Mi"


class Redis(Section):
    image: checks.Image = images.ref("redis")
    # The sentinels' image: the same release by default, upgraded on its own schedule.
    sentinel_image: checks.Image = images.ref("redis")
    exporter_image: checks.Image = images.ref("redis-exporter")
    # The backup job copies rclone (a static binary) and a CA bundle from this image.
    rclone_image: checks.Image = images.ref("rclone")
    replicas: int = Field(ge=1, le=9)  # data pods: one primary + (replicas - 1) replicas
    sentinels: int = Field(ge=0, le=9)
    sentinel_quorum: int = Field(2, ge=1, le=9)
    down_after_ms: int = Field(5000, ge=1000, le=600_000)
    failover_timeout_ms: int = Field(30000, ge=5000, le=3_600_000)
    cpu: checks.Cpu
    memory: checks.Memory
    storage_size: checks.Storage
    storage_class: checks.StorageClass = ""  # "" = the cluster's default StorageClass
    # maxmemory = this share of the container limit; the rest is headroom for the
    # copy-on-write fork during BGSAVE / AOF rewrite (docs/sizing.md shows the arithmetic).
    maxmemory_percent: int = Field(60, ge=10, le=90)
    backup_schedule: checks.Cron5 = "0 * * * *"
    backup_retention_hours: int = Field(ge=1, le=24 * 90)
    # Data pods (and sentinels) on separate nodes: "required" keeps a primary and its
    # replica off one node (needs as many nodes as pods); "preferred" only tries.
    node_anti_affinity: Literal["required", "preferred"] = "required"


class ObjectStorage(Section):
    """S3-compatible storage for PostgreSQL and Redis backups: the stack-wide defaults of
    each region's own store (regions[].objectStorage overrides them per region)."""

    # The shared default endpoint of dev and staging.  prod has none: each region states
    # its own (regions[].objectStorage.endpoint), so the copies really are apart.
    endpoint_url: checks.Url = "https://s3.eu-west-2.amazonaws.com"
    # Bucket per region: "<bucketPrefix>-<environment>-<region>".
    bucket_prefix: checks.Bucket = "tikit-backups"
    # Prefix of each region's credentials Secrets (created out of band, e.g. by External
    # Secrets): "<this>-<region>" with read-write keys, "<this>-<region>-readonly" with
    # read-only ones.  Both Secrets hold the keys under the two names below.
    credentials_secret: checks.DnsLabel = "tikit-backup-s3"
    access_key_id_key: checks.SecretKey = "ACCESS_KEY_ID"
    secret_access_key_key: checks.SecretKey = "ACCESS_SECRET_KEY"


class Gateway(Section):
    class_name: checks.DnsLabel = "eg"
    hostname: checks.Hostname
    cluster_issuer: checks.DnsLabel = "letsencrypt-prod"
    # The notes: round robin for the stateless REST API (LeastRequest is the alternative).
    rest_load_balancer: Literal["RoundRobin", "LeastRequest"] = "RoundRobin"
    request_timeout: checks.Duration = "15s"
    websocket_idle_timeout: checks.Duration = "3600s"
    retries: int = Field(2, ge=0, le=5)
    envoy_replicas: int = Field(ge=1, le=50)
    envoy_cpu: checks.Cpu = "500m"
    envoy_memory: checks.Memory = "512Mi"


class Gslb(Section):
    dns_ttl_seconds: int = Field(30, ge=5, le=3600)
    # k8gb's controller reconcile interval (k8gb install setting), for the failover estimate.
    reconcile_seconds: int = Field(30, ge=5, le=600)


class Monitoring(Section):
    # Where KEDA's request-rate trigger queries Prometheus.  Empty: kube-prometheus-stack's
    # Service in addons.monitoringNamespace (derived.prometheus_address).
    prometheus_address: checks.OptionalUrl = ""
    # Every alert links to docs/runbooks/<file>.md under this URL.
    runbook_base_url: checks.Url = "https://github.com/tikit/tikit-infra/blob/main/docs/runbooks"
    scrape_interval: checks.PromDuration = "30s"
    latency_slo_ms: int = Field(500, ge=10, le=60_000)
    availability_slo_percent: float = Field(99.9, ge=90.0, le=99.999)
    # The notes' alert table (docs/observability.md): warning / critical thresholds.
    cpu_warning_percent: int = Field(70, ge=1, le=100)
    cpu_critical_percent: int = Field(90, ge=1, le=100)
    memory_warning_percent: int = Field(80, ge=1, le=100)
    memory_critical_percent: int = Field(95, ge=1, le=100)
    error_rate_warning_percent: float = Field(1.0, ge=0.01, le=100.0)
    error_rate_critical_percent: float = Field(5.0, ge=0.01, le=100.0)
    latency_p99_warning_seconds: float = Field(1.0, ge=0.01, le=60.0)
    latency_p99_critical_seconds: float = Field(3.0, ge=0.01, le=60.0)
    db_connections_warning_percent: int = Field(80, ge=1, le=100)
    db_connections_critical_percent: int = Field(95, ge=1, le=100)
    cache_hit_warning_percent: int = Field(80, ge=1, le=100)  # alert BELOW these
    cache_hit_critical_percent: int = Field(60, ge=1, le=100)
    # PgBouncer: server connections in use as a share of max_db_connections.
    pool_saturation_warning_percent: int = Field(80, ge=1, le=100)
    pool_saturation_critical_percent: int = Field(95, ge=1, le=100)
    # Persistent volumes (PostgreSQL data and WAL, Redis): used space as a share of capacity.
    volume_usage_warning_percent: int = Field(80, ge=1, le=100)
    volume_usage_critical_percent: int = Field(90, ge=1, le=100)
    # Oldest client waiting for a server connection (SHOW POOLS maxwait).
    pool_wait_critical_seconds: int = Field(10, ge=1, le=3600)
    # London replays WAL from the object store: a segment reaches it after archive_timeout
    # (5 min) plus the upload and the next restore poll, so the threshold sits well above.
    replication_lag_alert_seconds: int = Field(900, ge=10, le=86400)
    # WAL segments wait to be archived and nothing has reached the object store this long.
    wal_archive_stall_alert_seconds: int = Field(900, ge=60, le=86400)
    # A PostgreSQL base backup is late after one schedule period plus this margin.
    backup_age_margin_seconds: int = Field(7200, ge=0, le=7 * 86400)
    redis_backup_max_age_seconds: int = Field(7200, ge=60, le=7 * 86400)


# k6 stages, "<duration>:<virtual users>": the load test's and the capacity model's profile.
STAGE_PATTERN = r"^([1-9][0-9]*(?:s|m|h)):([0-9]{1,6})$"
# The longest profile, all stages together: a day is already far beyond any load test, and
# the capacity model replays it second by second.
MAX_PROFILE_SECONDS = 24 * 3600
_STAGE_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def _stage_problems(stages: tuple[str, ...], what: str) -> None:
    """Each stage '<duration>:<users>', and all of them within MAX_PROFILE_SECONDS."""
    total = 0
    for stage in stages:
        m = re.fullmatch(STAGE_PATTERN, stage)
        if not m:
            raise ValueError(f"stage {stage!r} must be '<duration>:<{what}>' such as '2m:100'")
        duration = m.group(1)
        total += int(duration[:-1]) * _STAGE_UNIT_SECONDS[duration[-1]]
        if total > MAX_PROFILE_SECONDS:
            raise ValueError(f"the stages last more than {MAX_PROFILE_SECONDS // 3600} h in all (at {stage!r})")


class Capacity(Section):
    """What the stack must carry, and the load the capacity model replays (docs/sizing.md)."""

    target_concurrent_users: int = Field(ge=1, le=10_000_000)
    # A concurrent user of the app: one request every 10 s.  The notes size their k6 test
    # for the 10,000-user target at 1000 virtual users x 1 request/s = 60,000 per minute.
    requests_per_user_per_minute: float = Field(6.0, ge=0.01, le=1000.0)
    # The replayed profile: k6 stages ("<duration>:<users>"); empty: resilience.stages, the
    # notes' k6 test.  Its users are k6 virtual users: one request, then sleep(1).
    profile: tuple[str, ...] = _strings(())
    profile_requests_per_user_per_minute: float = Field(60.0, ge=0.01, le=100_000.0)

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        _stage_problems(v, "users")
        return v


class Nodes(Section):
    """Karpenter NodePools in every region: an on-demand pool and a spot pool for the
    workers, their limits (tikit/derived.py), the warm headroom (docs/nodes.md)."""

    # API-sized placeholder pods kept on warm nodes, preempted by real pods.
    buffer_pods: int = Field(ge=0, le=100)
    buffer_image: checks.Image = images.ref("pause")
    # Pool limits: what may land there at maximum scale, plus per-node overhead, plus this.
    headroom_percent: int = Field(20, ge=0, le=500)
    # From a pod going pending to a new node Ready with the image pulled: Karpenter's batch
    # window (up to 10 s), the EC2 launch and kubelet registration (30-60 s on AL2023,
    # up to 100 s reported) and the image pull.
    provisioning_seconds: int = Field(90, ge=1, le=1800)
    # Per node, outside the pods' requests: the cluster's DaemonSets (CNI, kube-proxy, CSI,
    # node exporter, log agent) and the kubelet's reservations (kube- and system-reserved,
    # eviction threshold).
    daemon_set_cpu: checks.Cpu = "250m"
    daemon_set_memory: checks.Memory = "512Mi"
    reserved_cpu: checks.Cpu = "100m"
    reserved_memory: checks.Memory = "1Gi"
    # Non-empty: a NodePool requirement `In []` matches no instance type.
    instance_categories: tuple[checks.LabelValue, ...] = Field(("c", "m", "r"), strict=False, min_length=1)
    architectures: tuple[Literal["amd64", "arm64"], ...] = Field(("amd64",), strict=False, min_length=1)
    # The smallest and largest node a pool may launch (vCPUs).  Nodes are at least as big
    # as the largest pod of their pool plus the per-node overhead, and at least
    # minInstanceCpu, so the overhead does not eat small nodes; at most maxInstanceCpu, which
    # bounds what one lost node takes down.
    min_instance_cpu: int = Field(4, ge=1, le=448)
    max_instance_cpu: int = Field(16, ge=1, le=448)
    # Nodes are replaced after this long (forceful: not held by disruption budgets).
    expire_after: checks.KarpenterDuration = "720h"


class Network(Section):
    """Where the namespace's neighbours live, for the NetworkPolicies (docs/traffic.md)."""

    dns_namespace: checks.DnsLabel = "kube-system"
    # Everything outside the cluster (object storage, the Kubernetes API endpoints, the
    # third-party APIs the app calls) is reached in this range, on HTTPS only.
    external_cidr: checks.Cidr = "0.0.0.0/0"
    # Port the API server's endpoints listen on after the Service NAT: 443 on managed
    # clusters, 6443 on kubeadm ones.  CNPG's instance manager talks to it.
    api_server_port: int = Field(443, ge=1, le=65535)


class Addons(Section):
    """The operators the platform's custom resources need (versions: tikit/versions.py),
    where they run and how big they are (components/addons.py)."""

    cert_manager_namespace: checks.DnsLabel = "cert-manager"
    cnpg_namespace: checks.DnsLabel = "cnpg-system"
    keda_namespace: checks.DnsLabel = "keda"
    envoy_gateway_namespace: checks.DnsLabel = "envoy-gateway-system"
    monitoring_namespace: checks.DnsLabel = "monitoring"
    k8gb_namespace: checks.DnsLabel = "k8gb"
    chaos_mesh_namespace: checks.DnsLabel = "chaos-mesh"
    k6_operator_namespace: checks.DnsLabel = "k6-operator-system"
    # kube-prometheus-stack's Helm release: its Prometheus selects ServiceMonitors,
    # PodMonitors and PrometheusRules labelled release=<this>.
    prometheus_release: checks.HelmRelease = "kube-prometheus-stack"
    # Replicas of every operator whose chart supports more than one (leader election),
    # and of Prometheus and Alertmanager.
    replicas: int = Field(ge=1, le=5)
    operator_cpu: checks.Cpu = "100m"
    operator_memory: checks.Memory = "256Mi"
    prometheus_cpu: checks.Cpu = "500m"
    prometheus_memory: checks.Memory = "2Gi"
    prometheus_retention: checks.Retention = "15d"
    prometheus_storage_size: checks.Storage = "50Gi"
    # The container runtime of the nodes, for Chaos Mesh's daemon (resilience tier only).
    container_runtime: Literal["containerd", "crio", "docker"] = "containerd"


class Route53(Section):
    """DNS-01 for cert-manager and the k8gb zone delegation through Amazon Route 53."""

    # The hosted zone of dns.parentZone ("" lets the solver look it up).
    hosted_zone_id: str = Field("", pattern=r"^[A-Z0-9]{0,32}$")
    # A region for the Route 53 API calls (Route 53 is global; any region works).
    region: str = Field("eu-west-2", pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
    # IAM role (IRSA) the cert-manager and external-dns service accounts assume; "" uses
    # the nodes' or the pod identity's own credentials.
    role_arn: str = Field("", pattern=r"^$|^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")


class Cloudflare(Section):
    # A Secret (created out of band) in the cert-manager and k8gb namespaces holding the
    # API token, with DNS edit rights on dns.parentZone.
    api_token_secret: checks.DnsLabel = "cloudflare-api-token"
    api_token_key: checks.SecretKey = "api-token"


class Dns(Section):
    """The public zone: TLS certificates by ACME DNS-01 (cert-manager's ClusterIssuer) and
    the failover zone k8gb serves (docs/traffic.md)."""

    # The zone the DNS provider hosts; gateway.hostname lives in it.
    parent_zone: checks.Hostname = "tikit.app"
    # The zone delegated to k8gb's CoreDNS in every region: the Gslb answers
    # <first label of gateway.hostname>.<gslbZone>, which gateway.hostname is a CNAME of.
    gslb_zone: checks.Hostname = "gslb.tikit.app"
    provider: Literal["route53", "cloudflare"] = "route53"
    route53: Route53 = Route53()
    cloudflare: Cloudflare = Cloudflare()
    # Resolvers k8gb asks to check the delegation (host or IP, optional :port).
    edge_dns_servers: tuple[checks.DnsServer, ...] = Field(("1.1.1.1", "8.8.8.8"), strict=False, min_length=1)
    acme_email: str = Field("platform@tikit.app", pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
    acme_server: checks.Url = "https://acme-v02.api.letsencrypt.org/directory"


class RestoreDrills(Section):
    """Restore drills (docs/runbooks/restore-drills.md): in each backup region (the primary
    when there is none), a throwaway CNPG cluster recovered from the primary region's store
    to a recent time, checked against the restore canary, then deleted; and the newest
    Redis snapshot restored and checked.  The primary region writes the canary."""

    enabled: bool
    # Five fields, Etc/UTC: weekly, after the daily base backup and outside the Lagos peak.
    schedule: checks.Cron5 = "0 4 * * 2"
    # The drill job's shell and kubectl (it creates, watches and deletes the drill Cluster).
    kubectl_image: checks.Image = images.ref("kubectl")




class Resilience(Section):
    """The notes' "Testing Auto-Scaling": a k6 load test (k6-operator TestRun) and Chaos Mesh
    experiments on a schedule (docs/resilience.md)."""

    # The chaos Schedules (and the script ConfigMap) in every region of the stack.
    enabled: bool
    # The TestRun itself, primary region only.  Creating a TestRun STARTS the test.
    load_test: bool = False
    # k6: the notes' stages ("<duration>:<virtual users>", totals over all runners).
    stages: tuple[str, ...] = _strings(("2m:100", "5m:100", "2m:1000", "5m:1000", "2m:0"))
    think_time_seconds: int = Field(1, ge=0, le=60)
    path: checks.Path = "/events"
    parallelism: int = Field(4, ge=1, le=100)
    k6_image: checks.Image = images.ref("k6")
    # The starter pod only curls the runners' REST API to start them together.
    starter_image: checks.Image = images.ref("curl")
    runner_cpu: checks.Cpu = "1"
    runner_memory: checks.Memory = "2Gi"
    # Chaos Mesh Schedules: five-field cron on the controller's clock (UTC), outside the
    # 18:00-24:00 Lagos peak and on working days, when people watch.
    api_kill_schedule: checks.Cron5 = "0 10 * * 1-5"
    network_delay_schedule: checks.Cron5 = "30 10 * * 1-5"
    database_kill_schedule: checks.Cron5 = "0 11 * * 3"
    network_latency: checks.ChaosDuration = "200ms"
    network_delay_duration: checks.ChaosDuration = "5m"
    # "all": the whole API tier answers late, as on a degraded network; "one": a single pod.
    network_delay_mode: Literal["all", "one"] = "all"

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("must list at least one stage such as '2m:100'")
        _stage_problems(v, "virtual users")
        return v

    @property
    def stage_list(self) -> tuple[tuple[str, int], ...]:
        """The stages as (duration, virtual users)."""
        return tuple((d, int(u)) for d, _, u in (s.rpartition(":") for s in self.stages))


SECTIONS: dict[str, type[Section]] = {
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
    "nodes": Nodes,
    "network": Network,
    "addons": Addons,
    "dns": Dns,
    "resilience": Resilience,
    "restoreDrills": RestoreDrills,
}
TOP_LEVEL_KEYS = ("environment", "namespace", "regions", "renderOnly", *SECTIONS)


# --------------------------------------------------------------------------------------
# The frozen result
# --------------------------------------------------------------------------------------


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
    nodes: Nodes
    network: Network
    addons: Addons
    dns: Dns
    resilience: Resilience
    restore_drills: RestoreDrills
    derived: Derived
    # Regions without a kubeconfig context render YAML; staging and prod must ask for it.
    render_only: bool = False

    @property
    def primary(self) -> Region:
        return next(r for r in self.regions if r.role == "primary")

    @property
    def backups(self) -> tuple[Region, ...]:
        return tuple(r for r in self.regions if r.role == "backup")

    @property
    def drilled_regions(self) -> tuple[Region, ...]:
        """Where restore drills run: the backup regions (they restore the primary's backups
        with its read-only keys), else the primary itself; none when drills are off."""
        if not self.restore_drills.enabled:
            return ()
        return self.backups or (self.primary,)

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def profile(self) -> tuple[tuple[str, int], ...]:
        """The capacity model's load profile: capacity.profile, else the k6 test's stages."""
        stages = self.capacity.profile or self.resilience.stages
        return tuple((d, int(u)) for d, _, u in (st.rpartition(":") for st in stages))

    def cluster_name(self, region: str) -> str:
        """What the cluster of one region is called in its cloud (Karpenter's discovery tag
        and node role name default to it): <project>-<environment>-<region>."""
        return f"{self.project}-{self.environment}-{region}"

    def bucket(self, region: str) -> str:
        return self.object_store(region).bucket

    def object_store(self, region: str) -> "ObjectStore":
        """``region``'s own object store, every default resolved."""
        r = next(r for r in self.regions if r.name == region)
        own, o = r.object_storage, self.object_storage
        credentials = own.credentials_secret or f"{o.credentials_secret}-{region}"
        return ObjectStore(
            region=region,
            endpoint=own.endpoint or o.endpoint_url,
            bucket=own.bucket or f"{o.bucket_prefix}-{self.environment}-{region}",
            credentials_secret=credentials,
            read_only_credentials_secret=own.read_only_credentials_secret or f"{credentials}{READ_ONLY_SUFFIX}",
            access_key_id_key=o.access_key_id_key,
            secret_access_key_key=o.secret_access_key_key,
        )


@dataclass(frozen=True)
class ObjectStore:
    """One region's bucket, resolved: where it is, and the two Secrets that open it (the
    read-write one exists in the region's own cluster, the read-only one in every peer's)."""

    region: str
    endpoint: str
    bucket: str
    credentials_secret: str
    read_only_credentials_secret: str
    access_key_id_key: str
    secret_access_key_key: str

    def credentials(self, *, read_only: bool) -> str:
        return self.read_only_credentials_secret if read_only else self.credentials_secret


# --------------------------------------------------------------------------------------
# Errors: pydantic's first complaint as one line naming the key
# --------------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)[:60]


def _key(prefix: str, loc: tuple[Any, ...]) -> str:
    key = prefix
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


_TYPE_NAMES = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a map",
    "model_type": "a map",
    "tuple_type": "a list",
    "list_type": "a list",
}


def _message(error: Mapping[str, Any], allowed: list[str]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
        return f"unknown key{hint}"
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]}, got {_shown(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {value}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be >= {ctx.get('ge', ctx.get('gt'))}, got {value}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be <= {ctx.get('le', ctx.get('lt'))}, got {value}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(choices)}; got {_shown(value)}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}, got {_shown(value)}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"])


def _section(cls: type[Section], prefix: str, values: Any) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(prefix, f"must be a map, got {_shown(values)}")
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        # The innermost section the error is in (regions[].objectStorage is one of its own).
        owner, depth = cls, 0
        while depth < len(loc) - 1:
            field = next((f for n, f in owner.model_fields.items() if (f.alias or n) == loc[depth]), None)
            inner = field.annotation if field is not None else None
            if not (isinstance(inner, type) and issubclass(inner, Section)):
                break
            owner, depth = inner, depth + 1
        allowed = sorted(f.alias or name for name, f in owner.model_fields.items())
        if error["type"] == "extra_forbidden":
            # Nested maps (postgres.parameters) have no extra keys; this is the section's own.
            loc = loc[: depth + 1]
        raise ConfigError(_key(prefix, loc), _message(error, allowed)) from None


def _allowed(cls: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The keys of the (nested) section at ``path`` (aliases), for unknown-key messages."""
    for part in path:
        field = next((f for n, f in cls.model_fields.items() if part in (n, f.alias)), None)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        cls = annotation
    return sorted(f.alias or name for name, f in cls.model_fields.items())


# --------------------------------------------------------------------------------------
# Checks across settings
# --------------------------------------------------------------------------------------


def _regions(value: Any) -> tuple[Region, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError("regions", "must be a non-empty list of {name, role[, context, geoTag, objectStorage]}")
    regions = tuple(
        _section(Region, f"regions[{i}]", {**REGION_DEFAULTS.get(r.get("name"), {}), **r} if isinstance(r, Mapping) else r)
        for i, r in enumerate(value)
    )
    primaries = [r for r in regions if r.role == "primary"]
    if not primaries:
        raise ConfigError("regions", "no primary region; exactly one region needs role 'primary'")
    if len(primaries) > 1:
        raise ConfigError("regions", f"exactly one primary region allowed, got {', '.join(r.name for r in primaries)}")
    seen: set[str] = set()
    for r in regions:
        if r.name in seen:
            if r.role == "backup" and r.name == primaries[0].name:
                raise ConfigError("regions", f"backup region '{r.name}' equals the primary region")
            raise ConfigError("regions", f"duplicate region name '{r.name}'")
        seen.add(r.name)
    # Primary first, then backups in declaration order: stable URNs and outputs.
    return tuple(primaries) + tuple(r for r in regions if r.role == "backup")


def _not_above(key: str, value: int, other_key: str, other: int) -> None:
    if value > other:
        raise ConfigError(key, f"{value} is greater than {other_key} {other}")


def backup_period_seconds(key: str, schedule: str) -> int:
    """The period of a backup schedule, which the backup-age alerts add their margin to;
    a schedule without a known period is refused rather than guessed."""
    period = cron.period_seconds(schedule)
    if period is None:
        raise ConfigError(key, f"the backup-age alert needs a daily, hourly or every-N-hours schedule, got '{schedule}'")
    return period


def _monitoring_checks(m: Monitoring) -> None:
    """Warning thresholds come before critical ones (cache hit rate alerts BELOW its thresholds)."""
    pairs = (
        ("cpuWarningPercent", m.cpu_warning_percent, m.cpu_critical_percent),
        ("memoryWarningPercent", m.memory_warning_percent, m.memory_critical_percent),
        ("errorRateWarningPercent", m.error_rate_warning_percent, m.error_rate_critical_percent),
        ("latencyP99WarningSeconds", m.latency_p99_warning_seconds, m.latency_p99_critical_seconds),
        ("dbConnectionsWarningPercent", m.db_connections_warning_percent, m.db_connections_critical_percent),
        ("poolSaturationWarningPercent", m.pool_saturation_warning_percent, m.pool_saturation_critical_percent),
        ("volumeUsageWarningPercent", m.volume_usage_warning_percent, m.volume_usage_critical_percent),
    )
    for key, warn, crit in pairs:
        if warn >= crit:
            raise ConfigError(f"monitoring.{key}", f"{warn} must be below monitoring.{key.replace('Warning', 'Critical')} {crit}")
    if m.cache_hit_warning_percent <= m.cache_hit_critical_percent:
        raise ConfigError(
            "monitoring.cacheHitWarningPercent",
            f"{m.cache_hit_warning_percent} must be above monitoring.cacheHitCriticalPercent {m.cache_hit_critical_percent}",
        )


def _gslb_zone_checks(s: Settings) -> None:
    """k8gb serves gateway.hostname's name in dns.gslbZone, delegated from dns.parentZone."""
    dns = s.dns
    if not s.gateway.hostname.endswith("." + dns.parent_zone):
        raise ConfigError("gateway.hostname", f"'{s.gateway.hostname}' must be a name in dns.parentZone '{dns.parent_zone}'")
    if not dns.gslb_zone.endswith("." + dns.parent_zone):
        raise ConfigError("dns.gslbZone", f"'{dns.gslb_zone}' must be a zone under dns.parentZone '{dns.parent_zone}'")


# S3's bucket naming rules: 3 to 63 characters (Settings.bucket builds the name).
S3_BUCKET_MAX = 63




def _object_store_checks(s: Settings, declared: list[str]) -> None:
    """Each region's store is its own: its own bucket and Secrets, read-only keys named as
    such for the peers, and in prod an endpoint the stack file states (no shared default).
    ``declared`` is the regions' names in stack-file order (errors name that index)."""
    seen_buckets: dict[str, str] = {}
    secrets: dict[str, str] = {}
    by_name = {r.name: r for r in s.regions}
    for i, name in enumerate(declared):
        region = by_name[name]
        key = f"regions[{i}].objectStorage"
        store = s.object_store(region.name)
        if s.is_prod and not region.object_storage.endpoint:
            raise ConfigError(
                f"{key}.endpoint",
                f"prod states where {region.name}'s backups live (e.g. https://s3.af-south-1.amazonaws.com); "
                "there is no shared default",
            )
        if s.environment in DEPLOYED_ENVIRONMENTS and not store.endpoint.startswith("https://"):
            raise ConfigError(
                f"{key}.endpoint",
                f"{s.environment} sends backup keys and data to {store.endpoint}; use https://",
            )
        if store.bucket in seen_buckets:
            raise ConfigError(f"{key}.bucket", f"'{store.bucket}' is {seen_buckets[store.bucket]}'s bucket too; each region has its own")
        seen_buckets[store.bucket] = region.name
        if store.credentials_secret.endswith(READ_ONLY_SUFFIX):
            raise ConfigError(f"{key}.credentialsSecret", f"'{store.credentials_secret}' holds read-write keys; it may not end with '{READ_ONLY_SUFFIX}'")
        if not store.read_only_credentials_secret.endswith(READ_ONLY_SUFFIX):
            raise ConfigError(
                f"{key}.readOnlyCredentialsSecret",
                f"'{store.read_only_credentials_secret}' must end with '{READ_ONLY_SUFFIX}' (the policy pack reads the name)",
            )
        for field, name in (("credentialsSecret", store.credentials_secret), ("readOnlyCredentialsSecret", store.read_only_credentials_secret)):
            if name in secrets:
                raise ConfigError(f"{key}.{field}", f"'{name}' is already {secrets[name]}; each store has its own keys")
            secrets[name] = f"{region.name}'s {field}"


# The smallest PostgreSQL volumes: a database and its WAL need room for a checkpoint's worth of
# 16 MB segments and for what the derived wal_keep_size keeps.
MIN_POSTGRES_VOLUME = "1Gi"
# A Redis volume holds the AOF (which grows to about twice the dataset before a rewrite) and
# the RDB snapshot being written beside the last one: a rewrite or BGSAVE that cannot finish
# stops writes (stop-writes-on-bgsave-error).
REDIS_VOLUME_PER_MAXMEMORY = 3
# Staging and prod keep a day of Redis snapshots at least, so a corrupt newest one is not the
# only one.
MIN_REDIS_RETENTION_HOURS = 24
# Operators elect a leader: prod runs a standby of each, so losing a node never stops failover.
MIN_PROD_OPERATOR_REPLICAS = 2


def _storage_checks(s: Settings) -> None:
    pg, r = s.postgres, s.redis
    floor = units.memory_bytes(MIN_POSTGRES_VOLUME)
    for key, size in (("postgres.storageSize", pg.storage_size), ("postgres.walStorageSize", pg.wal_storage_size)):
        if units.memory_bytes(size) < floor:
            raise ConfigError(key, f"{size} is smaller than the smallest PostgreSQL volume, {MIN_POSTGRES_VOLUME}")
    if problem := pg_conf.wal_volume_problem(pg.parameters, units.memory_bytes(pg.wal_storage_size)):
        raise ConfigError("postgres.parameters", f"{problem}; raise postgres.walStorageSize or lower the override")
    need = REDIS_VOLUME_PER_MAXMEMORY * s.derived.redis_maxmemory_bytes
    if units.memory_bytes(r.storage_size) < need:
        raise ConfigError(
            "redis.storageSize",
            f"{r.storage_size} cannot hold the AOF and RDB of a {s.derived.redis_maxmemory_bytes // units.MIB}Mi dataset "
            f"(maxmemory); at least {REDIS_VOLUME_PER_MAXMEMORY} x that, {-(-need // units.MIB)}Mi, or writes stop when a "
            "snapshot fails",
        )


def _cross_checks(s: Settings, declared: list[str]) -> None:
    b, w, r = s.backend, s.workers, s.redis
    _storage_checks(s)
    for region in s.regions:
        bucket = s.bucket(region.name)
        if len(bucket) > S3_BUCKET_MAX:
            raise ConfigError(
                "objectStorage.bucketPrefix",
                f"bucket '{bucket}' of region '{region.name}' is {len(bucket)} characters; S3 allows at most {S3_BUCKET_MAX}",
            )
    _not_above("backend.minReplicas", b.min_replicas, "backend.maxReplicas", b.max_replicas)
    _not_above("backend.peakMinReplicas", b.peak_min_replicas, "backend.maxReplicas", b.max_replicas)
    _not_above("workers.minReplicas", w.min_replicas, "workers.maxReplicas", w.max_replicas)
    if r.sentinels:
        _not_above("redis.sentinelQuorum", r.sentinel_quorum, "redis.sentinels", r.sentinels)
        if r.replicas < 2:
            raise ConfigError("redis.sentinels", "Sentinel needs at least one replica to promote (redis.replicas >= 2)")
        if r.sentinels < 3:
            raise ConfigError("redis.sentinels", f"must be 0 or at least 3 for a safe quorum, got {r.sentinels}")
        if r.sentinel_quorum >= r.sentinels:
            raise ConfigError(
                "redis.sentinelQuorum",
                f"{r.sentinel_quorum} of {r.sentinels} sentinels: with one sentinel lost no failover could start; "
                f"at most {r.sentinels - 1}",
            )
    if s.postgres.pod_anti_affinity == "required":
        # CNPG spreads instances over zones with a required anti-affinity: a region whose
        # pools may use fewer zones than there are instances leaves the rest Pending.
        for region in s.regions:
            if region.zones and len(region.zones) < s.postgres.instances:
                raise ConfigError(
                    "postgres.podAntiAffinity",
                    f"'required' puts each of the {s.postgres.instances} instances in its own zone, but region "
                    f"'{region.name}' offers {len(region.zones)} ({', '.join(region.zones)}); the rest would never "
                    "schedule. Use 'preferred', or fewer instances",
                )
    if s.environment in DEPLOYED_ENVIRONMENTS:
        # Restores that are never exercised are hopes: staging and prod drill every week.
        if not s.restore_drills.enabled:
            raise ConfigError("restoreDrills.enabled", f"{s.environment} drills its restores every week; keep it true")
        if r.backup_retention_hours < MIN_REDIS_RETENTION_HOURS:
            raise ConfigError(
                "redis.backupRetentionHours",
                f"{r.backup_retention_hours} h keeps too few snapshots to fall back past a bad one; "
                f"{s.environment} keeps at least {MIN_REDIS_RETENTION_HOURS} h",
            )
    if s.is_prod and s.addons.replicas < MIN_PROD_OPERATOR_REPLICAS:
        raise ConfigError(
            "addons.replicas",
            f"prod runs the operators (CloudNativePG's failover among them) with at least {MIN_PROD_OPERATOR_REPLICAS} "
            f"replicas, got {s.addons.replicas}",
        )
    if b.peak_start.split() == b.peak_end.split():
        # KEDA's cron scaler refuses it, and the disruption budget would last all day.
        raise ConfigError("backend.peakEnd", f"'{b.peak_end}' is also the start; the peak window must end at another time")
    if b.peak_min_replicas > b.min_replicas:
        # The NodePools' budgets hold consolidation off during the peak window, in UTC.
        try:
            cron.utc_window(b.peak_start, b.peak_end, PEAK_TIMEZONE)
        except ValueError as exc:
            raise ConfigError("backend.peakStart", f"the peak window cannot become a node disruption budget: {exc}") from None
    for region, pools in s.derived.pools.items():
        for pool in pools.values():
            if pool.node_cpu > s.nodes.max_instance_cpu:
                raise ConfigError(
                    "nodes.maxInstanceCpu",
                    f"{s.nodes.max_instance_cpu} vCPUs is below the {pool.node_cpu} the {pool.name} pool in {region} needs "
                    "for its largest pod beside the per-node overhead",
                )
    for i, region in enumerate(s.regions):
        nc = region.node_class
        if nc.declare and (nc.group, nc.kind) != (EC2_NODE_CLASS_GROUP, EC2_NODE_CLASS_KIND):
            raise ConfigError(
                f"regions[{i}].nodeClass.declare",
                f"the program declares only {EC2_NODE_CLASS_KIND} ({EC2_NODE_CLASS_GROUP}); set declare: false to reference "
                f"an existing {nc.kind}",
            )
    if s.resilience.load_test and not s.resilience.enabled:
        # Not silently ignored: the whole resilience tier is off without `enabled`.
        raise ConfigError("resilience.loadTest", "true needs resilience.enabled: true as well")
    _monitoring_checks(s.monitoring)
    if len(s.regions) > 1:
        _gslb_zone_checks(s)
    _object_store_checks(s, declared)
    if s.restore_drills.enabled and cron.weekly_period_seconds(s.restore_drills.schedule) is None:
        raise ConfigError(
            "restoreDrills.schedule",
            f"the drill-age alert needs a weekly, daily or every-N-hours schedule, got '{s.restore_drills.schedule}'",
        )
    backup_period_seconds("postgres.backupSchedule", s.postgres.backup_schedule)
    redis_period = backup_period_seconds("redis.backupSchedule", r.backup_schedule)
    max_age = s.monitoring.redis_backup_max_age_seconds
    if max_age <= redis_period:
        raise ConfigError(
            "monitoring.redisBackupMaxAgeSeconds",
            f"{max_age} must exceed the Redis backup period of {redis_period} s (redis.backupSchedule '{r.backup_schedule}')",
        )


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load(config: Mapping[str, Any], *, stack: str, project: str = PROJECT, deploying: bool = False) -> Settings:
    """Validate a stack's config (keys without the project prefix, values already parsed).

    ``deploying``: the config is a stack the Pulumi engine runs (from_pulumi), which must
    also say where each region deploys (_targets)."""
    if not isinstance(config, Mapping):
        raise ConfigError("config", "must be a map")
    for k in config:
        if k not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(str(k), TOP_LEVEL_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(TOP_LEVEL_KEYS)}"
            raise ConfigError(str(k), f"unknown key; {hint}")
    environment = config.get("environment", stack if stack in ENVIRONMENTS else None)
    if environment not in ENVIRONMENTS:
        raise ConfigError("environment", f"must be one of {', '.join(ENVIRONMENTS)}; got {environment!r}")
    namespace = config.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not checks.DNS_LABEL_RE.fullmatch(namespace):
        raise ConfigError("namespace", f"must be a DNS label such as 'tikit', got {_shown(namespace)}")
    render_only = config.get("renderOnly", False)
    if not isinstance(render_only, bool):
        raise ConfigError("renderOnly", f"must be true or false, got {_shown(render_only)}")
    defaults = preset(environment)
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        override = config.get(name, {})
        if not isinstance(override, Mapping):
            raise ConfigError(name, f"must be a map, got {_shown(override)}")
        sections[name] = _section(cls, name, {**defaults.get(name, {}), **override})
    raw_regions = config.get("regions", REGION_PRESETS[environment])
    regions = _regions(raw_regions)
    by_field = {_snake(name): section for name, section in sections.items()}
    inputs = {name: by_field[name] for name in _DERIVE_INPUTS}
    s = Settings(
        project=project,
        stack=stack,
        environment=environment,
        namespace=namespace,
        regions=regions,
        render_only=render_only,
        derived=derive(**inputs, regions=regions),
        **by_field,
    )
    order = [r.get("name") if isinstance(r, Mapping) else None for r in raw_regions]
    _cross_checks(s, order)
    _addons_targets(s, order)
    if deploying:
        _targets(s, order)
    return s


# Why a region that renders YAML cannot install the operators: helm.v4.Chart templates each
# chart in the provider, and with no cluster to ask, Helm checks the charts' kubeVersion
# constraints (cert-manager >= 1.22, CloudNativePG >= 1.29, ...) against its offline default,
# Kubernetes 1.20, and refuses them.
ADDONS_NEED_A_CLUSTER = (
    "Helm templates the operators' charts against a live cluster; offline it assumes "
    "Kubernetes 1.20 and the pinned charts require newer"
)


def _region_key(region: "Region", order: list[Any]) -> str:
    return f"regions[{order.index(region.name)}]" if region.name in order else "regions"


def _addons_targets(s: "Settings", order: list[Any]) -> None:
    for region in s.regions:
        if region.addons == "install" and not region.context:
            raise ConfigError(
                f"{_region_key(region, order)}.addons",
                f"'install' needs a cluster, and region '{region.name}' renders YAML (no context): "
                f"{ADDONS_NEED_A_CLUSTER}; set regions[].context, or leave addons unset",
            )


# Environments whose stacks deploy to clusters: a region must name its kubeconfig context
# (or the stack says renderOnly: true).
DEPLOYED_ENVIRONMENTS = ("staging", "prod")


def _targets(s: Settings, order: list[Any]) -> None:
    """Every region says where it deploys: a kubeconfig context, or (renderOnly) YAML
    rendered to build/<stack>/<region>/.  dev renders by default; staging and prod must not
    "succeed" at deploying nothing because a context went missing."""
    for region in s.regions:
        key = _region_key(region, order)
        if s.render_only and region.context:
            raise ConfigError(
                f"{key}.context", f"'{region.context}' with renderOnly: true; a region deploys or renders, not both"
            )
        if not region.context and not s.render_only and s.environment in DEPLOYED_ENVIRONMENTS:
            raise ConfigError(
                f"{key}.context",
                f"{s.environment} region '{region.name}' has no kubeconfig context: set regions[].context to the "
                f"cluster it deploys to, or renderOnly: true to render YAML to build/{s.stack}/{region.name}/ only",
            )


# The sections tikit/derived.py computes from.
_DERIVE_INPUTS = (
    "backend", "workers", "postgres", "pgbouncer", "redis", "monitoring", "addons", "gateway", "dns", "resilience", "nodes",
)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _parse_value(key: str, raw: Any) -> Any:
    """The CLI hands structured values over as JSON strings and scalars as strings."""
    if not isinstance(raw, str) or key in ("environment", "namespace"):
        return raw
    try:
        return json.loads(raw, parse_constant=_non_finite, parse_float=_finite_float)
    except _NonFinite as exc:
        raise ConfigError(key, f"holds the number {exc}; only finite numbers are allowed") from None
    except ValueError:  # JSONDecodeError, and integers beyond Python's 4300-digit limit
        raise ConfigError(key, f"must be {'a list' if key == 'regions' else 'a map'} (structured config), got {raw[:60]!r}") from None


class _NonFinite(ValueError):
    pass


def _non_finite(text: str) -> float:
    """json.loads takes NaN and Infinity (not JSON) by default: refuse them."""
    raise _NonFinite(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to inf
        raise _NonFinite(text[:40])
    return value


def from_pulumi() -> Settings:
    """Read this stack's config the way the Pulumi engine provides it and validate it."""
    import pulumi
    from pulumi.runtime import config as rc

    all_config = {**rc.get_config_env(), **rc.CONFIG.get()}
    prefix = f"{pulumi.get_project()}:"
    raw = {k[len(prefix):]: v for k, v in all_config.items() if k.startswith(prefix)}
    parsed = {k: _parse_value(k, v) for k, v in sorted(raw.items())}
    return load(parsed, stack=pulumi.get_stack(), project=pulumi.get_project(), deploying=True)
