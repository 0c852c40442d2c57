"""What each scrape target exposes: the one list of metric names the alert rules, the Grafana
dashboard and the tests agree on.

Each entry names the source its names were read from.  An alert or a dashboard panel that
names a metric outside this list (or outside the recording rules of tikit/conf/alerts.py)
fails tests/components/test_monitoring.py: a typo in a metric name is otherwise an alert
that can never fire.

What the list cannot promise: that the exporter version we pin emits a name against the
daemon version we run.  An exporter that maps a daemon's columns by name silently drops a
metric when the daemon renames the column.  So the PgBouncer entry lists what
pgbouncer_exporter v0.12.1 (settings.PgBouncer.exporter_image) maps from the SHOW DATABASES
and SHOW POOLS columns of PgBouncer 1.25 (settings.PgBouncer.image), not everything its
collector.go knows; a test pins both versions, so whoever bumps either image re-checks
that entry.

``metric_names(expr)`` pulls the metric names out of a PromQL expression, so the tests can
check every rendered expression against the list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The API's own /metrics contract: a request counter labelled by namespace, pod and the
# HTTP status code (5xx counts as an error), and a latency histogram in seconds.
API_REQUESTS = "http_requests_total"
API_REQUEST_CODE_LABEL = "code"
API_LATENCY = "http_request_duration_seconds"
# cAdvisor's per-container CPU counter and memory gauge (kubelet /metrics/cadvisor, scraped
# by kube-prometheus-stack): what the autoscalers' sustained cpu and memory triggers read.
CONTAINER_CPU = "container_cpu_usage_seconds_total"
CONTAINER_MEMORY = "container_memory_working_set_bytes"


@dataclass(frozen=True)
class Source:
    key: str
    source: str  # where the names come from (repository and file)
    metrics: frozenset[str]


def _source(key: str, source: str, *names: str) -> Source:
    return Source(key, source, frozenset(names))


CNPG = _source(
    "cnpg",
    "cloudnative-pg/cloudnative-pg config/manager/default-monitoring.yaml (cnpg_<query>_<column>) "
    "and the instance manager's collector (cnpg_collector_up, cnpg_collector_pg_wal_archive_status "
    "with value=ready|done: WAL segments waiting for / done with archiving)",
    "cnpg_collector_up",
    "cnpg_collector_pg_wal_archive_status",
    "cnpg_backends_total",
    "cnpg_pg_settings_setting",
    "cnpg_pg_replication_lag",
    "cnpg_pg_replication_in_recovery",
    "cnpg_pg_replication_is_wal_receiver_up",
    "cnpg_pg_stat_archiver_archived_count",
    "cnpg_pg_stat_archiver_failed_count",
    "cnpg_pg_stat_archiver_last_archived_time",
    "cnpg_pg_stat_archiver_last_failed_time",
    "cnpg_pg_stat_archiver_seconds_since_last_archival",
    "cnpg_pg_database_size_bytes",
)

# The Barman Cloud plugin's backup metrics, relayed by the instance's own exporter.  They
# replace the in-core cnpg_collector_last_available_backup_timestamp, which stays 0 with the
# plugin.  0 also means "no backup recorded yet".
BARMAN_CLOUD = _source(
    "barman-cloud",
    "cloudnative-pg/plugin-barman-cloud internal/cnpgi/instance/metrics.go",
    "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp",
    "barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp",
    "barman_cloud_cloudnative_pg_io_first_recoverability_point",
)

# PgBouncer 1.24 renamed SHOW DATABASES reserve_pool to reserve_pool_size; v0.12.1 maps
# both to pgbouncer_databases_reserve_pool (older exporters emit nothing for it: the
# saturation alert divides by max_connections, max_db_connections in pgbouncer.ini =
# pool_size + reserve_pool_size, which every version emits).
PGBOUNCER = _source(
    "pgbouncer",
    "prometheus-community/pgbouncer_exporter v0.12.1 collector.go metricMaps (pgbouncer_<SHOW list>_<column>) "
    "against PgBouncer 1.25 src/admin.c (SHOW DATABASES, SHOW POOLS columns)",
    "pgbouncer_up",
    "pgbouncer_pools_client_active_connections",
    "pgbouncer_pools_client_waiting_connections",
    "pgbouncer_pools_server_active_connections",
    "pgbouncer_pools_server_idle_connections",
    "pgbouncer_pools_client_maxwait_seconds",
    "pgbouncer_databases_pool_size",
    "pgbouncer_databases_reserve_pool",
    "pgbouncer_databases_max_connections",
    "pgbouncer_databases_current_connections",
    "pgbouncer_config_max_client_connections",
)

# Names an exporter's source mentions but that the pinned versions never emit, and why: a
# rule or panel that reads one is an alert that cannot fire (the tests refuse them).
NOT_EMITTED: dict[str, str] = {
    # Documented in the exporter's README, but its collector.go (v0.11.0 on) names the SHOW
    # STATS counters pgbouncer_stats_totals_*.
    "pgbouncer_stats_queries_pooled_total": "pgbouncer_exporter v0.11.0 renamed it pgbouncer_stats_totals_queries_pooled_total",
}

REDIS = _source(
    "redis",
    "oliver006/redis_exporter exporter/exporter.go (metricMapGauges / metricMapCounters)",
    "redis_up",
    "redis_rdb_last_bgsave_status",
    "redis_rdb_changes_since_last_save",
    "redis_rdb_last_save_timestamp_seconds",
    "redis_aof_enabled",
    "redis_aof_last_write_status",
    "redis_aof_last_bgrewrite_status",
    "redis_keyspace_hits_total",
    "redis_keyspace_misses_total",
    "redis_evicted_keys_total",
    "redis_memory_used_bytes",
    "redis_memory_max_bytes",
    "redis_connected_clients",
)

KUBE_STATE_METRICS = _source(
    "kube-state-metrics",
    "kubernetes/kube-state-metrics docs/metrics (shipped by kube-prometheus-stack)",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_spec_min_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_cronjob_status_last_successful_time",
    "kube_cronjob_created",
    "kube_job_status_failed",
    "kube_job_status_succeeded",
    "kube_job_status_start_time",
    "kube_pod_container_resource_requests",
    "kube_pod_container_resource_limits",
)

KUBELET = _source(
    "kubelet",
    "kubelet /metrics (pkg/kubelet/metrics/collectors/volume_stats.go: one series per mounted "
    "PersistentVolumeClaim, labels namespace and persistentvolumeclaim; scraped by kube-prometheus-stack)",
    "kubelet_volume_stats_available_bytes",
    "kubelet_volume_stats_capacity_bytes",
)

CADVISOR = _source(
    "cadvisor",
    "kubelet /metrics/cadvisor (scraped by kube-prometheus-stack)",
    CONTAINER_CPU,
    CONTAINER_MEMORY,
)

KEDA = _source(
    "keda",
    "kedacore/keda pkg/metricscollector/prommetrics.go",
    "keda_build_info",
    "keda_scaled_object_errors_total",
    "keda_scaler_detail_errors_total",
    "keda_scaler_metrics_value",
    "keda_scaler_active",
)

ENVOY = _source(
    "envoy",
    "Envoy admin /stats/prometheus (envoy_<stat>, cluster names as envoy_cluster_name)",
    "envoy_server_live",
    "envoy_cluster_membership_healthy",
    "envoy_cluster_upstream_rq_xx",
    "envoy_http_downstream_rq_xx",
)

K8GB = _source(
    "k8gb",
    "k8gb-io/k8gb controllers/providers/metrics/prometheus.go",
    "k8gb_gslb_healthy_records",
)

PROMETHEUS = _source("prometheus", "Prometheus itself (one series per scrape target)", "up")

SOURCES: tuple[Source, ...] = (CNPG, BARMAN_CLOUD, PGBOUNCER, REDIS, KUBE_STATE_METRICS, KUBELET, CADVISOR, KEDA, ENVOY, K8GB, PROMETHEUS)


BACKEND = _source(
    "backend",
    "the Tikit API (/metrics)",
    API_REQUESTS,
    f"{API_LATENCY}_bucket",
    f"{API_LATENCY}_count",
    f"{API_LATENCY}_sum",
)


def exporter_metrics() -> frozenset[str]:
    """Every metric some scrape target provides."""
    out: set[str] = set(BACKEND.metrics)
    for s in SOURCES:
        out |= s.metrics
    return frozenset(out)


# --- PromQL metric-name extraction ---------------------------------------------------------

_KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
        "offset", "atan2", "inf", "nan", "start", "end",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_IDENT = re.compile(r"(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+", re.IGNORECASE)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: identifiers that are neither functions,
    keywords, label names (inside ``{}`` or grouping clauses) nor durations."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    text = _OFFSET.sub("", text)
    found = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        found.add(name)
    return found
