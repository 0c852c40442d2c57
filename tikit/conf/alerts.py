"""Prometheus rule groups for one region, as data (the ``spec.groups`` of PrometheusRules).

Pure functions: settings in, rule groups out, stable ordering, no I/O.  The Monitoring
component puts each group into its own PrometheusRule; tests/integration/test_alert_rules.py
feeds the very same groups to ``promtool check rules``, to ``promtool test rules`` and to a
real Prometheus scraping a real redis_exporter.

What the alerts are and why each threshold is what it is: docs/observability.md.  Every alert
carries ``severity``, ``tier`` and ``region`` labels, a summary, a description that quotes the
current value, and a ``runbook_url`` to docs/runbooks/<file>.md.

Metric names come from tikit/conf/metrics.py, the one list of what each exporter emits.
Recorded series are named ``tikit:<what>:<how>``, Prometheus's level:metric:operations.

Annotation templates use only ``{{ $value | printf "..." }}`` and ``{{ $labels.<name> }}``:
the promtool unit tests render the expected annotations with the same two constructs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

from tikit import cron, names
from tikit.conf import metrics
from tikit.conf.pgbouncer import QUERY_WAIT_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from tikit.settings import Monitoring

# Kubernetes names of the scrape objects.  A PodMonitor's series carry job="<namespace>/<name>";
# a ServiceMonitor's carry the Service name.
MON_API = names.BACKEND
MON_POSTGRES = "postgres"
MON_PGBOUNCER = "pgbouncer"
MON_REDIS = "redis"
MON_KEDA = "keda-operator"
MON_ENVOY_PROXY = "envoy-proxy"
MON_ENVOY_GATEWAY = "envoy-gateway"
MON_K8GB = "k8gb"

TIERS = ("api", "workers", "autoscaling", "postgres", "pgbouncer", "redis", "traffic", "scrape", "drills")
# Tiers only some regions have: the restore drills run in the backup region(s).
OPTIONAL_TIERS = ("drills",)

# Google SRE workbook, "Alerting on SLOs", multiwindow multi-burn-rate alerts:
# (long window, short window, burn rate, page?).  14.4x for 1h spends 2 % of a 30-day
# budget; 6x for 6h 5 %; 3x for 1d 10 %; 1x for 3d 10 %.
BURN_RATE_WINDOWS = (
    ("1h", "5m", 14.4, True),
    ("6h", "30m", 6.0, True),
    ("1d", "2h", 3.0, False),
    ("3d", "6h", 1.0, False),
)
ERROR_RATIO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
RATE_WINDOW = "5m"
# How long a condition must hold before its alert fires: most alerts, the fast ones (a
# daemon down, persistence failing), CPU and memory (they hover around the autoscaler's own
# targets: only a sustained excess counts), and an autoscaler pinned at its maximum.
ALERT_FOR = "5m"
FAST_ALERT_FOR = "1m"
UTILIZATION_ALERT_FOR = "10m"
AT_MAX_REPLICAS_FOR = "15m"
# Below this many lookups per second a cache hit rate says nothing (a handful of misses).
CACHE_MIN_LOOKUPS_PER_SECOND = 1.0

V0 = '{{ $value | printf "%.0f" }}'
V1 = '{{ $value | printf "%.1f" }}'
V2 = '{{ $value | printf "%.2f" }}'


def L(label: str) -> str:
    return "{{ $labels." + label + " }}"


@dataclass(frozen=True)
class Autoscaled:
    """A workload whose HPA KEDA owns."""

    workload: str
    hpa: str
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class Scope:
    """What one region's rules watch."""

    region: str
    namespace: str
    pg_cluster: str
    database: str
    # London's cluster is a replica of Lagos's: its lag is the cross-region lag.
    replica_cluster: bool
    # Every region's cluster runs a ScheduledBackup; its period sets the backup-age limit.
    backup_schedule: str
    backup_period_seconds: int
    # What one PgBouncer pod may open (derived.pgbouncer_server_connections_per_pod).
    server_connections_per_pod: int
    autoscaled: tuple[Autoscaled, ...]
    # The k8gb Gslb this region serves (None: a single-region stack has no Gslb).
    gslb: Optional[str]
    # The restore drill CronJobs of this region (none where no drill runs), their schedule,
    # and how old their last success may be: one period plus the longest run.
    drills: tuple[str, ...] = ()
    drill_schedule: str = ""
    drill_max_age_seconds: int = 0


def scope(
    *,
    region: str,
    role: str,
    namespace: str,
    backup_schedule: str,
    server_connections_per_pod: int,
    autoscaled: Sequence[Autoscaled],
    gslb: bool = True,
    drills: Sequence[str] = (),
    drill_schedule: str = "",
    drill_max_age_seconds: int = 0,
) -> Scope:
    # settings.load has refused schedules without a known period (and a Redis backup limit
    # within one period), so this cannot fail on loaded settings.
    period = cron.period_seconds(backup_schedule)
    if period is None:
        raise ValueError(f"backup schedule {backup_schedule!r} has no fixed period")
    return Scope(
        region=region,
        namespace=namespace,
        pg_cluster=names.pg_cluster(region),
        database=names.PG_DATABASE,
        replica_cluster=role == "backup",
        backup_schedule=backup_schedule,
        backup_period_seconds=period,
        server_connections_per_pod=server_connections_per_pod,
        autoscaled=tuple(autoscaled),
        gslb=names.GSLB if gslb else None,
        drills=tuple(drills),
        drill_schedule=drill_schedule,
        drill_max_age_seconds=drill_max_age_seconds,
    )


def pod_monitor_job(namespace: str, monitor: str) -> str:
    return f"{namespace}/{monitor}"


def deployment_pods(workload: str) -> str:
    """Pods of a Deployment are <deployment>-<pod-template-hash>-<suffix>; PromQL regexes are
    anchored, so this matches one Deployment's pods and no other workload's."""
    return f"{workload}-[a-z0-9]+-[a-z0-9]+"


def _num(x: float) -> str:
    """A threshold as PromQL text: no float noise (1 - 0.999 is 0.0010000000000000009)."""
    return format(round(float(x), 9), ".10g")


def duration_seconds(duration: str) -> int:
    n, unit = int(duration[:-1]), duration[-1]
    return n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def record_name(what: str, how: str) -> str:
    return f"tikit:{what}:{how}"


REQUESTS_RATE = record_name("api_requests", f"rate{RATE_WINDOW}")
LATENCY = {q: record_name("api_request_duration_seconds", f"p{q}_rate{RATE_WINDOW}") for q in (50, 95, 99)}
CACHE_HIT_RATIO = record_name("redis_keyspace_hits", f"ratio_rate{RATE_WINDOW}")
CACHE_LOOKUPS_RATE = record_name("redis_keyspace_lookups", f"rate{RATE_WINDOW}")


def error_ratio(window: str) -> str:
    return record_name("api_request_errors", f"ratio_rate{window}")


class _Rules:
    """Collects one tier's rules with the labels and annotations every alert shares."""

    def __init__(self, m: Monitoring, sc: Scope, tier: str) -> None:
        self.m, self.sc, self.tier = m, sc, tier
        self.rules: list[dict[str, Any]] = []

    def record(self, name: str, expr: str) -> None:
        self.rules.append({"record": name, "expr": expr})

    def alert(
        self,
        name: str,
        expr: str,
        *,
        severity: str,
        summary: str,
        description: str,
        runbook: str,
        for_: Optional[str] = None,
        labels: Optional[dict[str, str]] = None,
    ) -> None:
        rule: dict[str, Any] = {"alert": name, "expr": expr}
        if for_ and duration_seconds(for_) > 0:
            rule["for"] = for_
        rule["labels"] = {"severity": severity, "tier": self.tier, "region": self.sc.region, **(labels or {})}
        rule["annotations"] = {
            "summary": summary,
            "description": description,
            "runbook_url": f"{self.m.runbook_base_url}/{runbook}.md",
        }
        self.rules.append(rule)

    def group(self) -> dict[str, Any]:
        return {"name": f"tikit-{self.tier}", "rules": self.rules}


# --- tiers ----------------------------------------------------------------------------------


def _utilization(r: _Rules, workload: str) -> None:
    """CPU against requests (what the HPA targets) and memory against the limit (what the
    OOM killer enforces), with the notes' warning and critical levels."""
    m, ns = r.m, r.sc.namespace
    pods = deployment_pods(workload)
    sel = f'namespace="{ns}", pod=~"{pods}", container="{workload}"'
    cpu = (
        f"100 * sum by (namespace) (rate(container_cpu_usage_seconds_total{{{sel}}}[{RATE_WINDOW}]))\n"
        f'/ sum by (namespace) (kube_pod_container_resource_requests{{{sel}, resource="cpu"}})'
    )
    mem = (
        f"100 * sum by (namespace, pod) (container_memory_working_set_bytes{{{sel}}})\n"
        f'/ sum by (namespace, pod) (kube_pod_container_resource_limits{{{sel}, resource="memory"}})'
    )
    for severity, threshold in (("warning", m.cpu_warning_percent), ("critical", m.cpu_critical_percent)):
        r.alert(
            "TikitCpuHigh",
            f"{cpu}\n> {threshold}",
            severity=severity,
            for_=UTILIZATION_ALERT_FOR,
            labels={"workload": workload},
            summary=f"{workload} CPU above {threshold}% of requests in {r.sc.region}",
            description=(
                f"The {workload} pods in {r.sc.region} use {V1}% of their CPU requests "
                f"(threshold {threshold}%, for {UTILIZATION_ALERT_FOR}). The autoscaler should be adding pods."
            ),
            runbook="saturation",
        )
    for severity, threshold in (("warning", m.memory_warning_percent), ("critical", m.memory_critical_percent)):
        r.alert(
            "TikitMemoryHigh",
            f"{mem}\n> {threshold}",
            severity=severity,
            for_=UTILIZATION_ALERT_FOR,
            labels={"workload": workload},
            summary=f"{workload} memory above {threshold}% of the limit in {r.sc.region}",
            description=(
                f"Pod {L('pod')} uses {V1}% of its memory limit (threshold {threshold}%, "
                f"for {UTILIZATION_ALERT_FOR}); at 100% the kernel kills it."
            ),
            runbook="saturation",
        )


def _api(m: Monitoring, sc: Scope) -> dict[str, Any]:
    r = _Rules(m, sc, "api")
    ns = sc.namespace
    sel = f'namespace="{ns}", job="{MON_API}"'
    errors = f'{sel}, {metrics.API_REQUEST_CODE_LABEL}=~"5.."'
    r.record(REQUESTS_RATE, f"sum by (namespace) (rate({metrics.API_REQUESTS}{{{sel}}}[{RATE_WINDOW}]))")
    for window in ERROR_RATIO_WINDOWS:
        r.record(
            error_ratio(window),
            f"sum by (namespace) (rate({metrics.API_REQUESTS}{{{errors}}}[{window}]))\n"
            f"/ sum by (namespace) (rate({metrics.API_REQUESTS}{{{sel}}}[{window}]))",
        )
    for q, name in LATENCY.items():
        r.record(
            name,
            f"histogram_quantile(0.{q}, sum by (namespace, le) "
            f"(rate({metrics.API_LATENCY}_bucket{{{sel}}}[{RATE_WINDOW}])))",
        )
    here = f'{{namespace="{ns}"}}'

    for severity, threshold in (("warning", m.error_rate_warning_percent), ("critical", m.error_rate_critical_percent)):
        r.alert(
            "TikitApiErrorRateHigh",
            f"100 * {error_ratio(RATE_WINDOW)}{here} > {_num(threshold)}",
            severity=severity,
            for_=ALERT_FOR,
            summary=f"API error rate above {_num(threshold)}% in {sc.region}",
            description=f"{V2}% of API requests in {sc.region} answer 5xx (threshold {_num(threshold)}%).",
            runbook="api-errors",
        )
    for severity, threshold in (("warning", m.latency_p99_warning_seconds), ("critical", m.latency_p99_critical_seconds)):
        r.alert(
            "TikitApiLatencyP99High",
            f"{LATENCY[99]}{here} > {_num(threshold)}",
            severity=severity,
            for_=ALERT_FOR,
            summary=f"API p99 latency above {_num(threshold)} s in {sc.region}",
            description=f"99% of API requests in {sc.region} finish within {V2} s; the limit is {_num(threshold)} s.",
            runbook="api-latency",
        )
    slo = m.latency_slo_ms / 1000
    r.alert(
        "TikitApiLatencySloBreached",
        f"{LATENCY[95]}{here} > {_num(slo)}",
        severity="warning",
        for_=ALERT_FOR,
        summary=f"API p95 latency over the {m.latency_slo_ms} ms objective in {sc.region}",
        description=f"p95 latency in {sc.region} is {V2} s; the objective is {m.latency_slo_ms} ms.",
        runbook="api-latency",
    )
    budget = 1 - m.availability_slo_percent / 100
    for page in (True, False):
        windows = [w for w in BURN_RATE_WINDOWS if w[3] == page]
        branches = []
        for long, short, rate, _ in windows:
            limit = _num(100 * rate * budget)
            branches.append(
                f"(100 * {error_ratio(long)}{here} > {limit}\n"
                f"and 100 * {error_ratio(short)}{here} > {limit})"
            )
        spans = " or ".join(f"{rate:g}x the budget over {long}/{short}" for long, short, rate, _ in windows)
        r.alert(
            "TikitApiErrorBudgetBurn" if page else "TikitApiErrorBudgetBurnSlow",
            "\nor\n".join(branches),
            severity="critical" if page else "warning",
            summary=(
                f"API burns its {_num(m.availability_slo_percent)}% availability budget "
                f"{'fast' if page else 'steadily'} in {sc.region}"
            ),
            description=(
                f"{V2}% of API requests in {sc.region} failed over the long window; the error budget is "
                f"{_num(100 * budget)}% and this alert fires at {spans} (long and short window both)."
            ),
            runbook="error-budget",
        )
    _utilization(r, names.BACKEND)
    return r.group()


def _workers(m: Monitoring, sc: Scope) -> dict[str, Any]:
    r = _Rules(m, sc, "workers")
    _utilization(r, names.WORKERS)
    return r.group()


def _autoscaling(m: Monitoring, sc: Scope) -> dict[str, Any]:
    r = _Rules(m, sc, "autoscaling")
    ns = sc.namespace
    # A workload whose minimum equals its maximum is always "at max": nothing to learn there.
    hpas = [a.hpa for a in sc.autoscaled if a.max_replicas > a.min_replicas]
    if hpas:
        sel = f'namespace="{ns}", horizontalpodautoscaler=~"{"|".join(hpas)}"'
        by = "max by (namespace, horizontalpodautoscaler)"
        r.alert(
            "TikitAutoscalerAtMaxReplicas",
            f"{by} (kube_horizontalpodautoscaler_status_current_replicas{{{sel}}})\n"
            f">= {by} (kube_horizontalpodautoscaler_spec_max_replicas{{{sel}}})",
            severity="warning",
            for_=AT_MAX_REPLICAS_FOR,
            summary=f"{L('horizontalpodautoscaler')} pinned at its maximum in {sc.region}",
            description=(
                f"{L('horizontalpodautoscaler')} has run {V0} replicas, its maximum, for {AT_MAX_REPLICAS_FOR}: "
                "load beyond this is not absorbed, and the maximum is the cost ceiling."
            ),
            runbook="autoscaling",
        )
    r.alert(
        "TikitAutoscalerScalerErrors",
        f'sum by (namespace, scaledObject) (increase(keda_scaled_object_errors_total{{namespace="{ns}"}}[{RATE_WINDOW}])) > 0',
        severity="warning",
        for_=ALERT_FOR,
        summary=f"KEDA cannot read a trigger of {L('scaledObject')} in {sc.region}",
        description=(
            f"KEDA counted {V0} errors in {RATE_WINDOW} for ScaledObject {L('scaledObject')}; "
            "its HPA scales on the remaining triggers only."
        ),
        runbook="autoscaling",
    )
    return r.group()


def _postgres(m: Monitoring, sc: Scope) -> dict[str, Any]:
    r = _Rules(m, sc, "postgres")
    pods = f'namespace="{sc.namespace}", pod=~"{sc.pg_cluster}-[0-9]+"'
    r.alert(
        "TikitPostgresDown",
        f"cnpg_collector_up{{{pods}}} == 0",
        severity="critical",
        for_=FAST_ALERT_FOR,
        summary=f"PostgreSQL instance {L('pod')} is down in {sc.region}",
        description=f"The exporter of {L('pod')} reports PostgreSQL up = {V0}.",
        runbook="postgres-down",
    )
    conns = (
        f"100 * sum by (namespace, pod) (cnpg_backends_total{{{pods}}})\n"
        f'/ max by (namespace, pod) (cnpg_pg_settings_setting{{{pods}, name="max_connections"}})'
    )
    for severity, threshold in (
        ("warning", m.db_connections_warning_percent),
        ("critical", m.db_connections_critical_percent),
    ):
        r.alert(
            "TikitPostgresConnectionsHigh",
            f"{conns}\n> {threshold}",
            severity=severity,
            for_=ALERT_FOR,
            summary=f"PostgreSQL connections above {threshold}% of max_connections in {sc.region}",
            description=f"{L('pod')} has {V1}% of max_connections in use (threshold {threshold}%).",
            runbook="postgres-connections",
        )
    limit = sc.backup_period_seconds + m.backup_age_margin_seconds
    r.alert(
        "TikitPostgresBackupTooOld",
        "(time() - max by (namespace) (barman_cloud_cloudnative_pg_io_last_available_backup_timestamp"
        f"{{{pods}}})) / 3600\n> {_num(limit / 3600)}",
        severity="warning",
        for_=ALERT_FOR,
        summary=f"No PostgreSQL base backup of {sc.pg_cluster} for over {_num(limit / 3600)} h",
        description=(
            f"The newest available base backup of {sc.pg_cluster} is {V1} h old; the schedule "
            f"'{sc.backup_schedule}' plus {_num(m.backup_age_margin_seconds / 3600)} h margin "
            f"allows {_num(limit / 3600)} h (0 = never backed up reads as very old)."
        ),
        runbook="postgres-backups",
    )
    last_archived = f"max by (namespace, pod) (cnpg_pg_stat_archiver_last_archived_time{{{pods}}})"
    failed_since = (
        f"(max by (namespace, pod) (cnpg_pg_stat_archiver_last_failed_time{{{pods}}})\n> {last_archived})"
    )
    r.alert(
        "TikitPostgresWalArchivingFailing",
        f"(time() - {last_archived}) / 60\nand on (namespace, pod)\n{failed_since}",
        severity="critical",
        for_=ALERT_FOR,
        summary=f"WAL archiving of {L('pod')} is failing in {sc.region}",
        description=(
            f"The last WAL archive attempt of {L('pod')} failed and the last success was {V0} min ago: "
            "point-in-time recovery stops at that point and WAL piles up on the volume."
        ),
        runbook="postgres-backups",
    )
    # Archiving that neither succeeds nor fails (a hung upload, a stuck plugin sidecar):
    # finished segments wait (.ready files) and nothing reached the store for longer than
    # archive_timeout allows.  An idle primary has nothing waiting, so it stays quiet; a
    # failing archiver is TikitPostgresWalArchivingFailing's.  Never archived (-1) counts
    # as long ago.
    stall = m.wal_archive_stall_alert_seconds
    r.alert(
        "TikitPostgresWalArchiveStalled",
        f"time() - {last_archived} > {stall}\n"
        "and on (namespace, pod)\n"
        f'max by (namespace, pod) (cnpg_collector_pg_wal_archive_status{{{pods}, value="ready"}}) > 0\n'
        f"unless on (namespace, pod)\n{failed_since}",
        severity="critical",
        for_=ALERT_FOR,
        summary=f"WAL of {L('pod')} is not reaching the object store in {sc.region}",
        description=(
            f"{L('pod')} has WAL segments waiting to be archived and none has been archived for {V0} s "
            f"(threshold {stall} s) without a reported failure: point-in-time recovery and the replica "
            "cluster that replays this store fall behind, and WAL piles up on the volume."
        ),
        runbook="postgres-backups",
    )
    _volume_alerts(
        r, "TikitPostgresDataVolumeFull", f"{sc.pg_cluster}-[0-9]+", "PostgreSQL data volume",
        "A full data volume stops PostgreSQL: it cannot write table files or checkpoints.", "postgres-volumes",
    )
    _volume_alerts(
        r, "TikitPostgresWalVolumeFull", f"{sc.pg_cluster}-[0-9]+-wal", "PostgreSQL WAL volume",
        "WAL that cannot be archived piles up here; a full WAL volume stops every write.", "postgres-volumes",
    )
    if sc.replica_cluster:
        lag = m.replication_lag_alert_seconds
        r.alert(
            "TikitPostgresReplicationLagHigh",
            f"max by (namespace) (cnpg_pg_replication_lag{{{pods}}}) > {lag}",
            severity="warning",
            for_=ALERT_FOR,
            summary=f"{sc.region} replica cluster more than {lag} s behind the primary region",
            description=(
                f"{sc.pg_cluster} last replayed a transaction of the primary region {V0} s ago (threshold "
                f"{lag} s): a failover now would lose up to that much. An idle primary also makes this grow; "
                "no TikitPostgresWalArchiveStalled in the primary region points that way."
            ),
            runbook="postgres-replication",
        )
    return r.group()


# PersistentVolumeClaims, as their owners name them: CNPG "<cluster>-<n>" (PGDATA) and
# "<cluster>-<n>-wal" (the WAL volume); the Redis StatefulSet's claim template "data" gives
# "data-redis-<n>" (tests/components/test_monitoring.py checks both against the render).
REDIS_CLAIM_PREFIX = f"data-{names.REDIS}"


def volume_usage(namespace: str, claims: str) -> str:
    """Used space of the PVCs whose names match ``claims`` (a PromQL regex), in percent of
    their capacity, per claim."""
    sel = f'namespace="{namespace}", persistentvolumeclaim=~"{claims}"'
    by = "max by (namespace, persistentvolumeclaim)"
    return (
        f"100 * (1 - {by} (kubelet_volume_stats_available_bytes{{{sel}}})\n"
        f"/ {by} (kubelet_volume_stats_capacity_bytes{{{sel}}}))"
    )


def _volume_alerts(r: "_Rules", alert: str, claims: str, what: str, consequence: str, runbook: str) -> None:
    m, sc = r.m, r.sc
    for severity, threshold in (("warning", m.volume_usage_warning_percent), ("critical", m.volume_usage_critical_percent)):
        r.alert(
            alert,
            f"{volume_usage(sc.namespace, claims)}\n> {threshold}",
            severity=severity,
            for_=ALERT_FOR,
            summary=f"{what} {L('persistentvolumeclaim')} over {threshold}% full in {sc.region}",
            description=f"{what} {L('persistentvolumeclaim')} is {V1}% full (threshold {threshold}%). {consequence}",
            runbook=runbook,
        )


def pool_saturation(namespace: str, database: str, *, by: str) -> str:
    """Server connections in use as a percentage of the database's max_db_connections (SHOW
    DATABASES max_connections), which pgbouncer.ini sets to default_pool_size +
    reserve_pool_size.  Not pool_size + reserve_pool: PgBouncer 1.24 renamed that column
    reserve_pool_size and exporters before v0.12.1 map only the old name, so the sum would
    be empty with them; max_connections is emitted by every version.  "> 0" keeps an unlimited database (0) from dividing into +Inf."""
    pools = f'namespace="{namespace}", database="{database}"'
    dbs = f'namespace="{namespace}", name="{database}"'
    return (
        f"100 * sum by ({by}) (pgbouncer_pools_server_active_connections{{{pools}}})\n"
        f"/ (max by ({by}) (pgbouncer_databases_max_connections{{{dbs}}}) > 0)"
    )


def _pgbouncer(m: Monitoring, sc: Scope) -> dict[str, Any]:
    r = _Rules(m, sc, "pgbouncer")
    ns, db = sc.namespace, sc.database
    pools = f'namespace="{ns}", database="{db}"'
    r.alert(
        "TikitPgBouncerDown",
        f'pgbouncer_up{{namespace="{ns}"}} == 0',
        severity="warning",
        for_=FAST_ALERT_FOR,
        summary=f"PgBouncer {L('pod')} does not answer in {sc.region}",
        description=f"The exporter beside {L('pod')} cannot query PgBouncer (pgbouncer_up = {V0}).",
        runbook="pgbouncer",
    )
    r.alert(
        "TikitPgBouncerClientsWaiting",
        f"sum by (namespace, pod) (pgbouncer_pools_client_waiting_connections{{{pools}}}) > 0",
        severity="warning",
        for_=ALERT_FOR,
        summary=f"Clients queue for PostgreSQL connections in {L('pod')} ({sc.region})",
        description=f"{V0} clients of {L('pod')} wait for a server connection, continuously for {ALERT_FOR}.",
        runbook="pgbouncer",
    )
    r.alert(
        "TikitPgBouncerClientsWaiting",
        f"max by (namespace, pod) (pgbouncer_pools_client_maxwait_seconds{{{pools}}}) > {m.pool_wait_critical_seconds}",
        severity="critical",
        for_=FAST_ALERT_FOR,
        summary=f"Clients of {L('pod')} wait over {m.pool_wait_critical_seconds} s for a connection ({sc.region})",
        description=(
            f"The oldest client of {L('pod')} has waited {V0} s for a server connection "
            f"(threshold {m.pool_wait_critical_seconds} s; query_wait_timeout {QUERY_WAIT_TIMEOUT_SECONDS} s "
            "drops it)."
        ),
        runbook="pgbouncer",
    )
    saturation = pool_saturation(ns, db, by="namespace, pod")
    for severity, threshold in (
        ("warning", m.pool_saturation_warning_percent),
        ("critical", m.pool_saturation_critical_percent),
    ):
        r.alert(
            "TikitPgBouncerPoolSaturated",
            f"{saturation}\n> {threshold}",
            severity=severity,
            for_=ALERT_FOR,
            summary=f"PgBouncer pool of {L('pod')} above {threshold}% in {sc.region}",
            description=(
                f"{L('pod')} uses {V1}% of its server connections (max_db_connections = "
                f"{sc.server_connections_per_pod}, pool_size + reserve_pool_size; threshold {threshold}%)."
            ),
            runbook="pgbouncer",
        )
    return r.group()


def _redis(m: Monitoring, sc: Scope) -> dict[str, Any]:
    r = _Rules(m, sc, "redis")
    ns = sc.namespace
    sel = f'namespace="{ns}"'
    hits = f"sum by (namespace) (rate(redis_keyspace_hits_total{{{sel}}}[{RATE_WINDOW}]))"
    misses = f"sum by (namespace) (rate(redis_keyspace_misses_total{{{sel}}}[{RATE_WINDOW}]))"
    r.record(CACHE_LOOKUPS_RATE, f"{hits}\n+ {misses}")
    r.record(CACHE_HIT_RATIO, f"{hits}\n/ ({hits} + {misses})")
    r.alert(
        "TikitRedisDown",
        f"redis_up{{{sel}}} == 0",
        severity="critical",
        for_=FAST_ALERT_FOR,
        summary=f"Redis {L('pod')} is down in {sc.region}",
        description=f"The exporter beside {L('pod')} cannot reach Redis (redis_up = {V0}).",
        runbook="redis-down",
    )
    for severity, threshold in (("warning", m.cache_hit_warning_percent), ("critical", m.cache_hit_critical_percent)):
        r.alert(
            "TikitRedisCacheHitRateLow",
            f"100 * {CACHE_HIT_RATIO}{{{sel}}} < {threshold}\n"
            f"and on (namespace) {CACHE_LOOKUPS_RATE}{{{sel}}} > {_num(CACHE_MIN_LOOKUPS_PER_SECOND)}",
            severity=severity,
            for_=ALERT_FOR,
            summary=f"Redis cache hit rate below {threshold}% in {sc.region}",
            description=f"Only {V1}% of Redis lookups in {sc.region} hit (threshold {threshold}%).",
            runbook="redis-cache",
        )
    # The value is what a restart would lose: changes made since the last good snapshot.
    r.alert(
        "TikitRedisRdbSaveFailing",
        f"redis_rdb_changes_since_last_save{{{sel}}}\nand on (namespace, pod) (redis_rdb_last_bgsave_status{{{sel}}} == 0)",
        severity="critical",
        for_=FAST_ALERT_FOR,
        summary=f"Redis {L('pod')} cannot write its RDB snapshot in {sc.region}",
        description=(
            f"The last BGSAVE of {L('pod')} failed; {V0} changes are not in any snapshot, and Redis refuses "
            "writes until a save succeeds."
        ),
        runbook="redis-persistence",
    )
    r.alert(
        "TikitRedisAofWriteFailing",
        f"redis_aof_last_write_status{{{sel}}} == 0",
        severity="critical",
        for_=FAST_ALERT_FOR,
        summary=f"Redis {L('pod')} cannot write its append-only file in {sc.region}",
        description=f"aof_last_write_status of {L('pod')} is {V0} (0 = failed): Redis refuses writes until it recovers.",
        runbook="redis-persistence",
    )
    r.alert(
        "TikitRedisAofRewriteFailing",
        f"redis_aof_last_bgrewrite_status{{{sel}}} == 0",
        severity="warning",
        for_=FAST_ALERT_FOR,
        summary=f"Redis {L('pod')} cannot rewrite its append-only file in {sc.region}",
        description=f"aof_last_bgrewrite_status of {L('pod')} is {V0} (0 = failed): the AOF keeps growing.",
        runbook="redis-persistence",
    )
    _volume_alerts(
        r, "TikitRedisVolumeFull", f"{REDIS_CLAIM_PREFIX}-[0-9]+", "Redis volume",
        "The AOF and the RDB snapshots live here; when it is full Redis refuses writes (the job queue stops).",
        "redis-volumes",
    )
    cron = names.REDIS_BACKUP
    max_age = m.redis_backup_max_age_seconds
    jobs = f'namespace="{ns}", job_name=~"{cron}-[0-9]+"'
    r.alert(
        "TikitRedisBackupFailed",
        f"sum by (namespace, job_name) (kube_job_status_failed{{{jobs}}}) > 0\n"
        f"and on (namespace, job_name) (time() - max by (namespace, job_name) (kube_job_status_start_time{{{jobs}}}) < {max_age})",
        severity="warning",
        summary=f"A Redis backup Job failed in {sc.region}",
        description=f"Job {L('job_name')} of CronJob {cron} has {V0} failed pods.",
        runbook="redis-backups",
    )
    cj = f'namespace="{ns}", cronjob="{cron}"'
    r.alert(
        "TikitRedisBackupMissing",
        f"(time() - max by (namespace, cronjob) (kube_cronjob_status_last_successful_time{{{cj}}})) / 3600 > {_num(max_age / 3600)}\n"
        f"or\n((time() - max by (namespace, cronjob) (kube_cronjob_created{{{cj}}})) / 3600 > {_num(max_age / 3600)}\n"
        f" unless on (namespace, cronjob) kube_cronjob_status_last_successful_time{{{cj}}})",
        severity="critical",
        summary=f"No successful Redis backup for over {_num(max_age / 3600)} h in {sc.region}",
        description=(
            f"CronJob {cron} last succeeded {V1} h ago (or never, since it was created that long ago); "
            f"the limit is {_num(max_age / 3600)} h."
        ),
        runbook="redis-backups",
    )
    return r.group()


def _traffic(m: Monitoring, sc: Scope) -> dict[str, Any]:
    r = _Rules(m, sc, "traffic")
    ns = sc.namespace
    proxy = f'job="{pod_monitor_job(ns, MON_ENVOY_PROXY)}"'
    if sc.gslb:
        r.alert(
            "TikitGslbUnhealthy",
            f'k8gb_gslb_healthy_records{{namespace="{ns}", name="{sc.gslb}"}} < 1',
            severity="critical",
            for_=FAST_ALERT_FOR,
            summary=f"Gslb {sc.gslb} sees no healthy region ({sc.region})",
            description=f"k8gb in {sc.region} counts {V0} healthy records for {sc.gslb}: DNS answers with no address.",
            runbook="gslb",
        )
    r.alert(
        "TikitGatewayDown",
        f"(sum(envoy_server_live{{{proxy}}}) or vector(0)) < 1",
        severity="critical",
        for_=FAST_ALERT_FOR,
        summary=f"No live gateway proxy in {sc.region}",
        description=f"{V0} Envoy proxies of gateway {names.GATEWAY} in {sc.region} are live; the region takes no traffic.",
        runbook="gateway",
    )
    r.alert(
        "TikitGatewayNoHealthyBackends",
        f"sum by (envoy_cluster_name) (envoy_cluster_membership_healthy{{{proxy}, "
        f'envoy_cluster_name=~"httproute/{ns}/.+"}}) < 1',
        severity="critical",
        for_=FAST_ALERT_FOR,
        summary=f"Gateway route {L('envoy_cluster_name')} has no healthy API pod in {sc.region}",
        description=f"Envoy counts {V0} healthy endpoints behind {L('envoy_cluster_name')}.",
        runbook="gateway",
    )
    r.alert(
        "TikitGatewayControllerDown",
        f'(sum(up{{job="{pod_monitor_job(ns, MON_ENVOY_GATEWAY)}"}}) or vector(0)) < 1',
        severity="warning",
        for_=ALERT_FOR,
        summary=f"Envoy Gateway controller not scraped in {sc.region}",
        description=f"{V0} Envoy Gateway controller pods answer: route and certificate changes do not reach the proxies.",
        runbook="gateway",
    )
    return r.group()


DRILL_AGE = record_name("restore_drill_last_success", "age_seconds")


def _drill_jobs(expr: str, cronjobs: str) -> str:
    """``expr`` (per namespace, job_name) with the drill CronJob a Job belongs to as the
    label ``cronjob``: Jobs are named <cronjob>-<suffix> (scheduled runs and the
    runbook's manual ones alike)."""
    return f'label_replace({expr}, "cronjob", "$1", "job_name", "({cronjobs})-.+")'


def _drills(m: Monitoring, sc: Scope) -> dict[str, Any]:
    """The restore drills' own health, from kube-state-metrics: the age of each drill's last
    success (a recorded series), an alert when it is older than a period plus the longest
    run (or the drill never succeeded that long after its creation), and one when a drill
    Job failed and no later run of the same drill succeeded."""
    r = _Rules(m, sc, "drills")
    ns, names_re = sc.namespace, "|".join(sc.drills)
    cj = f'namespace="{ns}", cronjob=~"{names_re}"'
    jobs = f'namespace="{ns}", job_name=~"({names_re})-.+"'
    r.record(DRILL_AGE, f"time() - max by (namespace, cronjob) (kube_cronjob_status_last_successful_time{{{cj}}})")
    limit_h = sc.drill_max_age_seconds / 3600
    r.alert(
        "TikitRestoreDrillMissing",
        f"{DRILL_AGE}{{{cj}}} / 3600 > {_num(limit_h)}\n"
        f"or\n((time() - max by (namespace, cronjob) (kube_cronjob_created{{{cj}}})) / 3600 > {_num(limit_h)}\n"
        f" unless on (namespace, cronjob) kube_cronjob_status_last_successful_time{{{cj}}})",
        severity="warning",
        summary=f"Restore drill {L('cronjob')} has not passed for over {_num(limit_h)} h in {sc.region}",
        description=(
            f"{L('cronjob')} last succeeded {V1} h ago (or never, since it was created that long ago); its schedule "
            f"'{sc.drill_schedule}' plus the longest run allows {_num(limit_h)} h. Nobody knows whether the backups "
            "still restore."
        ),
        runbook="restore-drills",
    )
    by_job = "max by (namespace, job_name)"
    started = f"{by_job} (kube_job_status_start_time{{{jobs}}})"
    failed = _drill_jobs(f"{started}\nand on (namespace, job_name) ({by_job} (kube_job_status_failed{{{jobs}}}) > 0)", names_re)
    passed = _drill_jobs(f"{started}\nand on (namespace, job_name) ({by_job} (kube_job_status_succeeded{{{jobs}}}) > 0)", names_re)
    r.alert(
        "TikitRestoreDrillFailed",
        f"{failed}\n> on (namespace, cronjob) group_left ()\n"
        f"(max by (namespace, cronjob) ({passed})\nor max by (namespace, cronjob) (kube_cronjob_created{{{cj}}}) * 0)",
        severity="critical",
        summary=f"Restore drill {L('job_name')} failed in {sc.region}",
        description=(
            f"Job {L('job_name')} of {L('cronjob')} (started at Unix time {V0}) failed and no later run of it passed: "
            "the last drill could not restore the backups, or what it restored was not what the platform wrote."
        ),
        runbook="restore-drills",
    )
    return r.group()


def _scrape(m: Monitoring, sc: Scope) -> dict[str, Any]:
    r = _Rules(m, sc, "scrape")
    r.alert(
        "TikitScrapeTargetDown",
        f'up{{namespace="{sc.namespace}"}} == 0',
        severity="warning",
        for_=ALERT_FOR,
        summary=f"Prometheus cannot scrape {L('job')} {L('pod')} in {sc.region}",
        description=f"up = {V0} for {L('pod')} ({L('job')}): the alerts that read its metrics are blind.",
        runbook="scrape-targets",
    )
    return r.group()


def rule_groups(m: Monitoring, sc: Scope) -> list[dict[str, Any]]:
    """Every rule group of one region, one per tier, in TIERS order."""
    return [
        _api(m, sc),
        _workers(m, sc),
        _autoscaling(m, sc),
        _postgres(m, sc),
        _pgbouncer(m, sc),
        _redis(m, sc),
        _traffic(m, sc),
        _scrape(m, sc),
        *([_drills(m, sc)] if sc.drills else []),
    ]


def recorded(groups: Sequence[dict[str, Any]]) -> set[str]:
    return {rule["record"] for g in groups for rule in g["rules"] if "record" in rule}


def unknown_metrics(groups: Sequence[dict[str, Any]]) -> dict[str, set[str]]:
    """Metric names each rule reads that no exporter and no recording rule provides."""
    known = metrics.exporter_metrics() | recorded(groups)
    out = {}
    for g in groups:
        for rule in g["rules"]:
            missing = metrics.metric_names(rule["expr"]) - known
            if missing:
                out[rule.get("alert") or rule["record"]] = missing
    return out
