"""The Grafana dashboard of one region, as data (JSON model, schemaVersion 39).

A pure function: settings in, dashboard out, stable ordering.  The Monitoring component puts
it into a ConfigMap that Grafana's dashboard sidecar loads (label from
components/monitoring.py DASHBOARD_LABEL).  Panels read the recording rules of
tikit/conf/alerts.py where one exists, so the dashboard and the alerts show the same
numbers; every other metric comes from tikit/conf/metrics.py, and a test checks that every
panel query names only metrics some rule or exporter provides.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence

from tikit import names
from tikit.conf import alerts

if TYPE_CHECKING:
    from tikit.settings import Monitoring

SCHEMA_VERSION = 39
WIDTH = 12   # two panels per row on Grafana's 24-column grid
HEIGHT = 8


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr, "legendFormat": legend, "refId": ref}


def _panel(title: str, unit: str, targets: Sequence[tuple[str, str]], description: str = "", **defaults: Any) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit, **defaults}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}},
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }


def _thresholds(*steps: tuple[str, float]) -> dict[str, Any]:
    return {
        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}] + [{"color": c, "value": v} for c, v in steps]},
        "custom": {"thresholdsStyle": {"mode": "line"}},
    }


def panels(m: Monitoring, sc: alerts.Scope) -> list[dict[str, Any]]:
    ns = sc.namespace
    here = f'{{namespace="{ns}"}}'
    pg = f'namespace="{ns}", pod=~"{sc.pg_cluster}-[0-9]+"'
    db = sc.database
    out: list[dict[str, Any]] = []

    out.append(
        _panel(
            "Request rate",
            "reqps",
            [(f"{alerts.REQUESTS_RATE}{here}", "requests/s")],
            "All API requests per second (recorded over 5m).",
        )
    )
    out.append(
        _panel(
            "Latency p50 / p95 / p99",
            "s",
            [(f"{alerts.LATENCY[q]}{here}", f"p{q}") for q in (50, 95, 99)],
            f"Objective: p95 under {m.latency_slo_ms} ms; alerts at p99 over "
            f"{m.latency_p99_warning_seconds:g} s / {m.latency_p99_critical_seconds:g} s.",
            **_thresholds(("orange", m.latency_slo_ms / 1000), ("red", m.latency_p99_critical_seconds)),
        )
    )
    out.append(
        _panel(
            "Error rate (5xx)",
            "percent",
            [(f"100 * {alerts.error_ratio(alerts.RATE_WINDOW)}{here}", "5m"), (f"100 * {alerts.error_ratio('1h')}{here}", "1h")],
            f"Warning over {m.error_rate_warning_percent:g} %, critical over {m.error_rate_critical_percent:g} %.",
            **_thresholds(("orange", m.error_rate_warning_percent), ("red", m.error_rate_critical_percent)),
        )
    )
    hpas = "|".join(a.hpa for a in sc.autoscaled)
    hsel = f'namespace="{ns}", horizontalpodautoscaler=~"{hpas}"'
    out.append(
        _panel(
            "Replicas against autoscaler bounds",
            "short",
            [
                (f"kube_horizontalpodautoscaler_status_current_replicas{{{hsel}}}", "{{horizontalpodautoscaler}} current"),
                (f"kube_horizontalpodautoscaler_status_desired_replicas{{{hsel}}}", "{{horizontalpodautoscaler}} desired"),
                (f"kube_horizontalpodautoscaler_spec_min_replicas{{{hsel}}}", "{{horizontalpodautoscaler}} min"),
                (f"kube_horizontalpodautoscaler_spec_max_replicas{{{hsel}}}", "{{horizontalpodautoscaler}} max"),
            ],
            f"KEDA owns these HPAs; a workload pinned at max for {alerts.AT_MAX_REPLICAS_FOR} raises "
            "TikitAutoscalerAtMaxReplicas.",
        )
    )
    workloads = [a.workload for a in sc.autoscaled]
    cpu, mem = [], []
    for w in workloads:
        sel = f'namespace="{ns}", pod=~"{alerts.deployment_pods(w)}", container="{w}"'
        cpu.append(
            (
                f"100 * sum(rate(container_cpu_usage_seconds_total{{{sel}}}[{alerts.RATE_WINDOW}]))"
                f' / sum(kube_pod_container_resource_requests{{{sel}, resource="cpu"}})',
                w,
            )
        )
        mem.append(
            (
                f"100 * max(sum by (pod) (container_memory_working_set_bytes{{{sel}}})"
                f' / sum by (pod) (kube_pod_container_resource_limits{{{sel}, resource="memory"}}))',
                f"{w} (fullest pod)",
            )
        )
    out.append(
        _panel(
            "CPU (% of requests)",
            "percent",
            cpu,
            "What the autoscaler targets.",
            **_thresholds(("orange", m.cpu_warning_percent), ("red", m.cpu_critical_percent)),
        )
    )
    out.append(
        _panel(
            "Memory (% of limit)",
            "percent",
            mem,
            "At 100 % the kernel kills the pod.",
            **_thresholds(("orange", m.memory_warning_percent), ("red", m.memory_critical_percent)),
        )
    )
    out.append(
        _panel(
            "Database connections (% of max_connections)",
            "percent",
            [
                (
                    f"100 * sum by (pod) (cnpg_backends_total{{{pg}}})"
                    f' / max by (pod) (cnpg_pg_settings_setting{{{pg}, name="max_connections"}})',
                    "{{pod}}",
                )
            ],
            **_thresholds(("orange", m.db_connections_warning_percent), ("red", m.db_connections_critical_percent)),
        )
    )
    pools = f'namespace="{ns}", database="{db}"'
    out.append(
        _panel(
            "PgBouncer pool use",
            "percent",
            [
                (alerts.pool_saturation(ns, db, by="pod"), "{{pod}} servers in use"),
                (f"sum by (pod) (pgbouncer_pools_client_waiting_connections{{{pools}}})", "{{pod}} clients waiting"),
            ],
            "Server connections in use as a share of max_db_connections (pool_size + reserve_pool_size), "
            "and clients queued for one.",
            **_thresholds(("orange", m.pool_saturation_warning_percent), ("red", m.pool_saturation_critical_percent)),
        )
    )
    out.append(
        _panel(
            "Cache hit rate",
            "percent",
            [(f"100 * {alerts.CACHE_HIT_RATIO}{here}", "hit rate")],
            f"Warning under {m.cache_hit_warning_percent} %, critical under {m.cache_hit_critical_percent} %.",
            min=0,
            max=100,
        )
    )
    out.append(
        _panel(
            "Replication lag",
            "s",
            [(f"cnpg_pg_replication_lag{{{pg}}}", "{{pod}}")],
            "Seconds each instance replays behind its source; in the backup region this is the lag behind "
            f"the primary region (alert over {m.replication_lag_alert_seconds} s).",
        )
    )
    out.append(
        _panel(
            "Backup age",
            "h",
            [
                (
                    f"(time() - max(barman_cloud_cloudnative_pg_io_last_available_backup_timestamp{{{pg}}})) / 3600",
                    "PostgreSQL base backup",
                ),
                (
                    f'(time() - max(kube_cronjob_status_last_successful_time{{namespace="{ns}", cronjob="{names.REDIS_BACKUP}"}})) / 3600',
                    "Redis snapshot",
                ),
            ],
            "Hours since the last successful backup of each store.",
        )
    )
    for i, p in enumerate(out):
        p["id"] = i + 1
        p["gridPos"] = {"h": HEIGHT, "w": WIDTH, "x": (i % 2) * WIDTH, "y": (i // 2) * HEIGHT}
    return out


def dashboard(m: Monitoring, sc: alerts.Scope, environment: str) -> dict[str, Any]:
    return {
        "uid": f"tikit-{environment}-{sc.region}",
        "title": f"Tikit {environment} / {sc.region}",
        "tags": ["tikit", environment, sc.region],
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels(m, sc),
    }


def dashboard_json(m: Monitoring, sc: alerts.Scope, environment: str) -> str:
    return json.dumps(dashboard(m, sc, environment), indent=2, sort_keys=True) + "\n"
