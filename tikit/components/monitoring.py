"""Observability of one region: what Prometheus scrapes, the alert rules, the Grafana dashboard.

Prometheus Operator objects, all labelled ``release: <settings.addons.prometheus_release>``
so kube-prometheus-stack picks them up:

* a ServiceMonitor for the API's /metrics (on its ``http`` port);
* PodMonitors for the CloudNativePG instances, the PgBouncer and Redis exporter sidecars
  (container port ``metrics``), the KEDA operator and the Envoy Gateway proxies and
  controller (in their own namespaces), and a ServiceMonitor for k8gb;
* one PrometheusRule per tier, with the groups of tikit/conf/alerts.py;
* a ConfigMap with the dashboard of tikit/conf/dashboard.py for Grafana's sidecar.

docs/observability.md lists the alerts and docs/runbooks/ says what to do about each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names
from tikit import cron
from tikit.components import autoscaling, backend, drills, gateway
from tikit.conf import alerts, dashboard
from tikit.derived import Derived
from tikit.settings import Addons as AddonsSettings
from tikit.settings import Backend as BackendSettings
from tikit.settings import Monitoring as MonitoringSettings
from tikit.settings import Workers as WorkersSettings

COMPONENT = "monitoring"
API_VERSION = "monitoring.coreos.com/v1"

# Upstream facts the charts do not let us change (see docs/observability.md):
# Envoy Gateway names the proxies' stats port "metrics" (19001) and serves Prometheus text
# on the admin path below; its controller pods carry control-plane=envoy-gateway and expose
# "metrics" (19001, /metrics).  KEDA's chart labels the operator pods app=keda-operator.
# k8gb's chart gives its metrics Service (k8gb-metrics, created by k8gb.exposeMetrics)
# app.kubernetes.io/name=k8gb and a "metrics" port.
ENVOY_STATS_PATH = "/stats/prometheus"
ENVOY_METRICS_PORT = "metrics"
ENVOY_GATEWAY_SELECTOR = {"control-plane": "envoy-gateway"}
KEDA_OPERATOR_SELECTOR = {"app": "keda-operator"}
K8GB_SELECTOR = {names.APP_NAME_LABEL: "k8gb"}
METRICS_PATH = "/metrics"
# The KEDA operator's metrics port: its chart names it "metrics" when
# prometheus.operator.enabled (components/addons.py sets it).
KEDA_METRICS_PORT = "metrics"
# Grafana's dashboard sidecar (kube-prometheus-stack) loads ConfigMaps with this label.
DASHBOARD_LABEL = "grafana_dashboard"


@dataclass(frozen=True)
class MonitoringArgs:
    target: kube.Target
    monitoring: MonitoringSettings
    addons: AddonsSettings
    derived: Derived
    # The autoscaled workloads' bounds, and the PostgreSQL backup schedule the backup-age
    # alerts follow.
    backend: BackendSettings
    workers: WorkersSettings
    backup_schedule: str
    # This region's role (primary | backup).
    role: str
    # Whether a k8gb Gslb serves this region (multi-region stacks only).
    gslb: bool = True
    # The restore drills' schedule where they run here ("" elsewhere).
    drill_schedule: str = ""


def autoscaled(b: BackendSettings, w: WorkersSettings) -> tuple[alerts.Autoscaled, ...]:
    """The workloads whose HPA KEDA owns, with KEDA's effective bounds (an HPA minimum is at least 1)."""
    return (
        alerts.Autoscaled(names.BACKEND, autoscaling.hpa_name(names.BACKEND), max(1, b.min_replicas), b.max_replicas),
        alerts.Autoscaled(names.WORKERS, autoscaling.hpa_name(names.WORKERS), max(1, w.min_replicas), w.max_replicas),
    )


def scope(args: MonitoringArgs) -> alerts.Scope:
    return alerts.scope(
        region=args.target.region,
        role=args.role,
        namespace=args.target.namespace,
        backup_schedule=args.backup_schedule,
        server_connections_per_pod=args.derived.pgbouncer_server_connections_per_pod,
        autoscaled=autoscaled(args.backend, args.workers),
        gslb=args.gslb,
        **drill_scope(args.drill_schedule),
    )


def drill_scope(schedule: str) -> dict[str, Any]:
    """The drill CronJobs a region runs and the age their last success may reach: one
    period of the schedule plus the longest a run may take (components/drills.py)."""
    if not schedule:
        return {}
    period = cron.weekly_period_seconds(schedule)
    if period is None:  # settings.load refuses such a schedule
        raise ValueError(f"restore drill schedule {schedule!r} has no fixed period")
    return {
        "drills": (names.PG_RESTORE_DRILL, names.REDIS_RESTORE_DRILL),
        "drill_schedule": schedule,
        "drill_max_age_seconds": period + drills.DRILL_MAX_RUN_SECONDS,
    }


def endpoint(port: str, interval: str, *, path: str = METRICS_PATH, honor_labels: bool = False) -> dict[str, Any]:
    ep: dict[str, Any] = {"port": port, "path": path, "interval": interval}
    if honor_labels:
        # The exporter's own `namespace` label names the object it reports on (a
        # ScaledObject's or Gslb's namespace); without this Prometheus would rename it
        # exported_namespace and put the operator's namespace in its place.
        ep["honorLabels"] = True
    return ep


def pod_monitor_spec(
    selector: dict[str, Any], endpoints: list[dict[str, Any]], namespaces: Optional[list[str]] = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector, "podMetricsEndpoints": endpoints}
    if namespaces:
        spec["namespaceSelector"] = {"matchNames": namespaces}
    return spec


def service_monitor_spec(
    selector: dict[str, Any], endpoints: list[dict[str, Any]], namespaces: Optional[list[str]] = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector, "endpoints": endpoints}
    if namespaces:
        spec["namespaceSelector"] = {"matchNames": namespaces}
    return spec


class Monitoring(pulumi.ComponentResource):
    """Scrape targets, PrometheusRules and the Grafana dashboard of one region."""

    service_monitors: dict[str, k8s.apiextensions.CustomResource]
    pod_monitors: dict[str, k8s.apiextensions.CustomResource]
    rules: dict[str, k8s.apiextensions.CustomResource]   # tier -> PrometheusRule
    dashboard: k8s.core.v1.ConfigMap

    def __init__(self, name: str, args: MonitoringArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:observability:Monitoring", name, None, opts)
        t, m, a = args.target, args.monitoring, args.addons
        child = t.opts(self)
        sc = scope(args)
        release = {"release": a.prometheus_release}

        def meta(obj_name: str) -> dict[str, Any]:
            # app=monitoring: a ServiceMonitor named "api" is not part of the API application.
            return kube.metadata(obj_name, COMPONENT, t, app=COMPONENT, extra_labels=release)

        def monitor(kind: str, obj_name: str, spec: dict[str, Any]) -> k8s.apiextensions.CustomResource:
            return kube.custom(t.rname(f"{kind.lower()}-{obj_name}"), API_VERSION, kind, meta(obj_name), spec, child)

        interval = m.scrape_interval
        metrics_port = names.METRICS_PORT_NAME
        self.service_monitors = {
            alerts.MON_API: monitor(
                "ServiceMonitor",
                alerts.MON_API,
                service_monitor_spec(
                    {"matchLabels": kube.selector(names.BACKEND, t)},
                    [endpoint(backend.PORT_NAME, interval, path=names.BACKEND_METRICS_PATH)],
                ),
            ),
        }
        if sc.gslb:
            self.service_monitors[alerts.MON_K8GB] = monitor(
                "ServiceMonitor",
                alerts.MON_K8GB,
                service_monitor_spec(
                    {"matchLabels": dict(K8GB_SELECTOR)},
                    [endpoint(metrics_port, interval, honor_labels=True)],
                    [a.k8gb_namespace],
                ),
            )
        self.pod_monitors = {
            alerts.MON_POSTGRES: monitor(
                "PodMonitor",
                alerts.MON_POSTGRES,
                pod_monitor_spec({"matchLabels": {names.CNPG_CLUSTER_LABEL: sc.pg_cluster}}, [endpoint(metrics_port, interval)]),
            ),
            alerts.MON_PGBOUNCER: monitor(
                "PodMonitor",
                alerts.MON_PGBOUNCER,
                pod_monitor_spec(
                    {
                        "matchExpressions": [
                            {
                                "key": names.APP_NAME_LABEL,
                                "operator": "In",
                                "values": [names.PGBOUNCER_RW, names.PGBOUNCER_RO],
                            }
                        ]
                    },
                    [endpoint(metrics_port, interval)],
                ),
            ),
            alerts.MON_REDIS: monitor(
                "PodMonitor",
                alerts.MON_REDIS,
                pod_monitor_spec({"matchLabels": kube.selector(names.REDIS, t)}, [endpoint(metrics_port, interval)]),
            ),
            alerts.MON_KEDA: monitor(
                "PodMonitor",
                alerts.MON_KEDA,
                pod_monitor_spec(
                    {"matchLabels": dict(KEDA_OPERATOR_SELECTOR)},
                    [endpoint(KEDA_METRICS_PORT, interval, honor_labels=True)],
                    [a.keda_namespace],
                ),
            ),
            alerts.MON_ENVOY_PROXY: monitor(
                "PodMonitor",
                alerts.MON_ENVOY_PROXY,
                pod_monitor_spec(
                    {"matchLabels": gateway.envoy_pod_labels(t.namespace)},
                    [endpoint(ENVOY_METRICS_PORT, interval, path=ENVOY_STATS_PATH)],
                    [a.envoy_gateway_namespace],
                ),
            ),
            alerts.MON_ENVOY_GATEWAY: monitor(
                "PodMonitor",
                alerts.MON_ENVOY_GATEWAY,
                pod_monitor_spec(
                    {"matchLabels": dict(ENVOY_GATEWAY_SELECTOR)},
                    [endpoint(ENVOY_METRICS_PORT, interval)],
                    [a.envoy_gateway_namespace],
                ),
            ),
        }

        self.groups = alerts.rule_groups(m, sc)
        self.rules = {}
        for group in self.groups:
            tier = group["name"].removeprefix("tikit-")
            self.rules[tier] = kube.custom(
                t.rname(f"rules-{tier}"),
                API_VERSION,
                "PrometheusRule",
                meta(group["name"]),
                {"groups": [group]},
                child,
            )

        board_key = f"tikit-{t.environment}-{t.region}.json"
        self.dashboard = k8s.core.v1.ConfigMap(
            t.rname("grafana-dashboard"),
            metadata=kube.metadata("grafana-dashboard", COMPONENT, t, app=COMPONENT, extra_labels={DASHBOARD_LABEL: "1"}),
            data={board_key: dashboard.dashboard_json(m, sc, t.environment)},
            opts=child,
        )
        self.register_outputs({"rules": sorted(self.rules), "dashboard": board_key})
