"""Observability on the rendered manifests of every stack: the scrape objects and what they
select, the PrometheusRules (the notes' table with its thresholds, the whole-chain alerts,
labels, annotations and runbooks), and the Grafana dashboard.  Metric names are checked
against the one list of tikit/conf/metrics.py; promtool and a real Prometheus judge the same
rules in tests/integration/test_alert_rules.py."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tikit import images, names
from tikit import settings
from tikit import cron
from tikit.components import autoscaling
from tikit.components import monitoring as mon
from tikit.conf import alerts, dashboard, metrics
from conftest import REPO, STACKS, named, objects
from preview.validate import validate

RUNBOOKS = REPO / "docs" / "runbooks"
SCRAPE_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
TABLE = (  # the notes' alert table: (alert, warning setting, critical setting, comparison)
    ("TikitCpuHigh", "cpu_warning_percent", "cpu_critical_percent", ">"),
    ("TikitMemoryHigh", "memory_warning_percent", "memory_critical_percent", ">"),
    ("TikitApiErrorRateHigh", "error_rate_warning_percent", "error_rate_critical_percent", ">"),
    ("TikitApiLatencyP99High", "latency_p99_warning_seconds", "latency_p99_critical_seconds", ">"),
    ("TikitPostgresConnectionsHigh", "db_connections_warning_percent", "db_connections_critical_percent", ">"),
    ("TikitRedisCacheHitRateLow", "cache_hit_warning_percent", "cache_hit_critical_percent", "<"),
)


def stack_settings(stack: str) -> settings.Settings:
    """The stack's settings as the program sees them: preset plus the stack file's deltas."""
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = {k.split(":", 1)[1]: v for k, v in (doc.get("config") or {}).items()}
    return settings.load(config, stack=stack)


def mine(plan, region=None) -> list[dict]:
    return [
        r.manifest
        for r in plan.kubernetes_objects(region)
        if r.manifest["metadata"].get("labels", {}).get("app.kubernetes.io/component") == mon.COMPONENT
    ]


def rule_groups(plan, region: str) -> list[dict]:
    return [g for rule in objects(plan, "PrometheusRule", region) for g in rule["spec"]["groups"]]


def alert_rules(plan, region: str) -> list[dict]:
    return [r for g in rule_groups(plan, region) for r in g["rules"] if "alert" in r]


def rules_named(plan, region: str, alert: str) -> dict[str, dict]:
    found = [r for r in alert_rules(plan, region) if r["alert"] == alert]
    assert found, f"no {alert} in {region}"
    return {r["labels"]["severity"]: r for r in found}


def selects(selector: dict, labels: dict) -> bool:
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def pod_templates(plan, region: str) -> list[tuple[str, dict]]:
    out = []
    for kind in ("Deployment", "StatefulSet"):
        for obj in objects(plan, kind, region):
            out.append((obj["metadata"]["name"], obj["spec"]["template"]))
    return out


# --- objects -------------------------------------------------------------------------------


def test_every_monitoring_object_validates(plan):
    objs = mine(plan)
    assert {o["kind"] for o in objs} == {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    for obj in objs:
        assert validate(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_scrape_objects_carry_the_release_label(plan, stack):
    release = stack_settings(stack).addons.prometheus_release
    for region in plan.regions:
        found = [o for o in mine(plan, region) if o["kind"] in SCRAPE_KINDS]
        assert len(found) >= 10
        for obj in found:
            assert obj["metadata"]["labels"]["release"] == release, obj["metadata"]["name"]
            assert obj["metadata"]["namespace"] == stack_settings(stack).namespace


def test_api_service_monitor_scrapes_the_api_service_port(plan, stack):
    for region in plan.regions:
        sm = named(plan, "ServiceMonitor", alerts.MON_API, region)
        service = named(plan, "Service", names.BACKEND, region)
        assert selects(sm["spec"]["selector"], service["metadata"]["labels"])
        [ep] = sm["spec"]["endpoints"]
        assert ep["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert ep["path"] == names.BACKEND_METRICS_PATH
        assert ep["interval"] == stack_settings(stack).monitoring.scrape_interval
        # No other Service in the namespace is selected.
        others = [s for s in objects(plan, "Service", region) if s["metadata"]["name"] != names.BACKEND]
        assert not [s["metadata"]["name"] for s in others if selects(sm["spec"]["selector"], s["metadata"]["labels"])]


@pytest.mark.parametrize("monitor,workloads", [
    (alerts.MON_PGBOUNCER, {names.PGBOUNCER_RW, names.PGBOUNCER_RO}),
    (alerts.MON_REDIS, {names.REDIS}),
])
def test_pod_monitors_select_the_exporter_sidecars(plan, monitor, workloads):
    for region in plan.regions:
        pm = named(plan, "PodMonitor", monitor, region)
        assert "namespaceSelector" not in pm["spec"], "the exporters run in the app namespace"
        [ep] = pm["spec"]["podMetricsEndpoints"]
        selected = {
            name: tpl for name, tpl in pod_templates(plan, region) if selects(pm["spec"]["selector"], tpl["metadata"]["labels"])
        }
        scraped = {
            name
            for name, tpl in selected.items()
            if any(p.get("name") == ep["port"] for c in tpl["spec"]["containers"] for p in c.get("ports", []))
        }
        assert scraped == workloads, f"{monitor} in {region} scrapes {sorted(scraped)} (selects {sorted(selected)})"


def test_postgres_pod_monitor_selects_this_regions_cluster(plan):
    for region in plan.regions:
        pm = named(plan, "PodMonitor", alerts.MON_POSTGRES, region)
        cluster = named(plan, "Cluster", names.pg_cluster(region), region)
        assert pm["spec"]["selector"] == {"matchLabels": {names.CNPG_CLUSTER_LABEL: cluster["metadata"]["name"]}}
        assert names.CNPG_CLUSTER_LABEL == "cnpg.io/cluster"  # the operator's label, not ours to choose
        assert [ep["port"] for ep in pm["spec"]["podMetricsEndpoints"]] == [names.METRICS_PORT_NAME]


def test_operator_monitors_look_in_the_operators_namespaces(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        proxy = named(plan, "PodMonitor", alerts.MON_ENVOY_PROXY, region)
        assert proxy["spec"]["namespaceSelector"] == {"matchNames": [cfg.addons.envoy_gateway_namespace]}
        # The same pods the gateway's own spread constraints and the NetworkPolicies name.
        envoy_proxy = named(plan, "EnvoyProxy", names.GATEWAY_PROXY, region)
        spread = envoy_proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["topologySpreadConstraints"][0]
        assert proxy["spec"]["selector"]["matchLabels"] == spread["labelSelector"]["matchLabels"]
        assert proxy["spec"]["podMetricsEndpoints"][0]["path"] == "/stats/prometheus"
        controller = named(plan, "PodMonitor", alerts.MON_ENVOY_GATEWAY, region)
        assert controller["spec"]["namespaceSelector"] == {"matchNames": [cfg.addons.envoy_gateway_namespace]}
        keda = named(plan, "PodMonitor", alerts.MON_KEDA, region)
        # One KEDA namespace for the PodMonitor and the NetworkPolicies (addons.kedaNamespace).
        assert keda["spec"]["namespaceSelector"] == {"matchNames": [cfg.addons.keda_namespace]}
        assert keda["spec"]["podMetricsEndpoints"] == [
            {"port": mon.KEDA_METRICS_PORT, "path": "/metrics", "interval": cfg.monitoring.scrape_interval, "honorLabels": True}
        ]
        gslbs = objects(plan, "Gslb", region)
        k8gb = [o for o in objects(plan, "ServiceMonitor", region) if o["metadata"]["name"] == alerts.MON_K8GB]
        # k8gb is scraped exactly where a Gslb exists (not in the single-region dev stack).
        assert len(k8gb) == (1 if gslbs else 0)
        if k8gb:
            assert k8gb[0]["spec"]["namespaceSelector"] == {"matchNames": [cfg.addons.k8gb_namespace]}
            assert k8gb[0]["spec"]["endpoints"][0]["honorLabels"] is True


def test_rule_job_labels_name_rendered_monitors(plan, stack):
    """`job` in an expression is what Prometheus Operator sets: the Service name for a
    ServiceMonitor, <namespace>/<name> for a PodMonitor."""
    ns = stack_settings(stack).namespace
    for region in plan.regions:
        jobs = {f"{ns}/{pm['metadata']['name']}" for pm in objects(plan, "PodMonitor", region)}
        jobs |= {names.BACKEND}
        used = {j for r in rule_groups(plan, region) for rule in r["rules"] for j in re.findall(r'\bjob="([^"]+)"', rule["expr"])}
        assert used and used <= jobs, sorted(used - jobs)


# --- rules -----------------------------------------------------------------------------------


def test_one_prometheus_rule_per_tier(plan, stack):
    drilled = {r.name for r in stack_settings(stack).drilled_regions}
    for region in plan.regions:
        rules = objects(plan, "PrometheusRule", region)
        # The drills' rules only where the drills run (the backup region).
        tiers = [t for t in alerts.TIERS if t not in alerts.OPTIONAL_TIERS or region in drilled]
        assert sorted(r["metadata"]["name"] for r in rules) == sorted(f"tikit-{t}" for t in tiers)
        for r in rules:
            [group] = r["spec"]["groups"]
            assert group["name"] == r["metadata"]["name"]
            assert all(rule["labels"]["tier"] == group["name"].removeprefix("tikit-") for rule in group["rules"] if "alert" in rule)


def test_every_alert_is_labelled_annotated_and_has_a_runbook(plan, stack):
    base = stack_settings(stack).monitoring.runbook_base_url
    for region in plan.regions:
        for rule in alert_rules(plan, region):
            where = f"{rule['alert']} ({region})"
            assert rule["labels"]["severity"] in ("warning", "critical"), where
            assert rule["labels"]["region"] == region, where
            assert re.match(r"^Tikit[A-Z][A-Za-z0-9]+$", rule["alert"]), where
            ann = rule["annotations"]
            assert set(ann) == {"summary", "description", "runbook_url"}, where
            assert ann["summary"] and "$value" not in ann["summary"], where
            assert "{{ $value" in ann["description"], f"{where}: the description must quote the current value"
            assert ann["runbook_url"].startswith(base + "/") and ann["runbook_url"].endswith(".md"), where
            page = RUNBOOKS / ann["runbook_url"][len(base) + 1:]
            assert page.is_file(), f"{where}: {page} does not exist"


def test_runbooks_say_what_to_check_and_what_to_do(plan):
    referenced = {
        r["annotations"]["runbook_url"].rsplit("/", 1)[1] for region in plan.regions for r in alert_rules(plan, region)
    }
    assert len(referenced) >= 10
    for name in sorted(referenced):
        text = (RUNBOOKS / name).read_text()
        headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
        assert "Check" in headings and "Act" in headings, f"{name}: needs '## Check' and '## Act' sections"
        check = text.split("## Check", 1)[1].split("## Act", 1)[0]
        act = text.split("## Act", 1)[1]
        assert re.search(r"^\s*(1\.|-) ", check, re.MULTILINE) and re.search(r"^\s*(1\.|-) ", act, re.MULTILINE), name
        # Every alert the page is for is named in it.
        for region in plan.regions:
            for r in alert_rules(plan, region):
                if r["annotations"]["runbook_url"].endswith("/" + name):
                    assert r["alert"] in text, f"{name} does not mention {r['alert']}"
        # Links between runbooks point at pages that exist.
        for link in re.findall(r"\]\(([a-z0-9-]+\.md)\)", text):
            assert (RUNBOOKS / link).exists(), f"{name} links to missing {link}"


def test_the_notes_alert_table_with_its_thresholds(plan, stack):
    m = stack_settings(stack).monitoring
    for region in plan.regions:
        for alert, warn_key, crit_key, op in TABLE:
            by_workload: dict[str, dict[str, dict]] = {}
            for r in alert_rules(plan, region):
                if r["alert"] == alert:
                    by_workload.setdefault(r["labels"].get("workload", ""), {})[r["labels"]["severity"]] = r
            assert by_workload, f"{alert} missing in {region}"
            for rules in by_workload.values():
                assert set(rules) == {"warning", "critical"}, alert
                for severity, key in (("warning", warn_key), ("critical", crit_key)):
                    threshold = float(re.search(rf"{re.escape(op)} ([0-9.]+)", rules[severity]["expr"]).group(1))
                    assert threshold == getattr(m, key), f"{alert} {severity}: {threshold} != monitoring.{key}"
    # Both autoscaled workloads get CPU and memory alerts.
    for region in plan.regions:
        for alert in ("TikitCpuHigh", "TikitMemoryHigh"):
            workloads = {r["labels"].get("workload") for r in alert_rules(plan, region) if r["alert"] == alert}
            assert workloads == {names.BACKEND, names.WORKERS}


def test_whole_chain_alerts(plan, stack):
    cfg = stack_settings(stack)
    m = cfg.monitoring
    for region in plan.regions:
        role = next(r.role for r in cfg.regions if r.name == region)
        got = {r["alert"] for r in alert_rules(plan, region)}
        expected = {
            "TikitPostgresBackupTooOld", "TikitPostgresWalArchivingFailing", "TikitPostgresWalArchiveStalled",
            "TikitPgBouncerClientsWaiting",
            "TikitPgBouncerPoolSaturated", "TikitRedisRdbSaveFailing", "TikitRedisAofWriteFailing",
            "TikitRedisAofRewriteFailing", "TikitRedisBackupFailed", "TikitRedisBackupMissing",
            "TikitAutoscalerAtMaxReplicas", "TikitApiLatencySloBreached", "TikitApiErrorBudgetBurn",
            "TikitApiErrorBudgetBurnSlow", "TikitGatewayDown",
        }
        assert expected <= got, sorted(expected - got)
        # Cross-region lag only where a replica cluster runs; the Gslb only where there is one.
        assert ("TikitPostgresReplicationLagHigh" in got) == (role == "backup")
        assert ("TikitGslbUnhealthy" in got) == bool(objects(plan, "Gslb", region))
        if role == "backup":
            lag = rules_named(plan, region, "TikitPostgresReplicationLagHigh")["warning"]
            assert lag["expr"].endswith(f"> {m.replication_lag_alert_seconds}")
            assert f'pod=~"{names.pg_cluster(region)}-[0-9]+"' in lag["expr"]

        backup = rules_named(plan, region, "TikitPostgresBackupTooOld")["warning"]
        schedule = named(plan, "ScheduledBackup", names.PG_SCHEDULED_BACKUP, region)["spec"]["schedule"]
        limit_h = (cron.period_seconds(schedule) + m.backup_age_margin_seconds) / 3600
        assert backup["expr"].endswith(f"> {limit_h:g}") and limit_h == 24 + m.backup_age_margin_seconds / 3600

        missing = rules_named(plan, region, "TikitRedisBackupMissing")["critical"]
        cronjob = named(plan, "CronJob", names.REDIS_BACKUP, region)
        assert f'cronjob="{cronjob["metadata"]["name"]}"' in missing["expr"]
        assert f"> {m.redis_backup_max_age_seconds / 3600:g}" in missing["expr"]

        slo = rules_named(plan, region, "TikitApiLatencySloBreached")["warning"]
        assert slo["expr"].endswith(f"> {m.latency_slo_ms / 1000:g}") and "p95" in slo["expr"]

        at_max = rules_named(plan, region, "TikitAutoscalerAtMaxReplicas")["warning"]
        assert at_max["for"] == alerts.AT_MAX_REPLICAS_FOR == "15m"
        hpas = set(re.search(r'horizontalpodautoscaler=~"([^"]+)"', at_max["expr"]).group(1).split("|"))
        rendered = {
            so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"]: so["spec"]
            for so in objects(plan, "ScaledObject", region)
        }
        # Every HPA KEDA creates is watched unless its minimum equals its maximum.
        assert hpas == {n for n, spec in rendered.items() if spec["maxReplicaCount"] > max(1, spec["minReplicaCount"])}
        assert hpas <= {autoscaling.hpa_name(names.BACKEND), autoscaling.hpa_name(names.WORKERS)}


def test_burn_rate_alerts_follow_the_sre_workbook(plan, stack):
    m = stack_settings(stack).monitoring
    budget = 100 - m.availability_slo_percent
    for region in plan.regions:
        page = rules_named(plan, region, "TikitApiErrorBudgetBurn")
        ticket = rules_named(plan, region, "TikitApiErrorBudgetBurnSlow")
        assert set(page) == {"critical"} and set(ticket) == {"warning"}
        for rule, pairs in ((page["critical"], (("1h", "5m", 14.4), ("6h", "30m", 6))), (ticket["warning"], (("1d", "2h", 3), ("3d", "6h", 1)))):
            for long, short, rate in pairs:
                limit = f"{round(rate * budget, 9):g}"
                assert f"ratio_rate{long}" in rule["expr"] and f"ratio_rate{short}" in rule["expr"]
                assert re.search(rf"ratio_rate{long}\{{[^}}]*\}} > {re.escape(limit)}\b", rule["expr"]), (long, limit)
                assert re.search(rf"ratio_rate{short}\{{[^}}]*\}} > {re.escape(limit)}\b", rule["expr"]), (short, limit)


def test_rules_and_dashboard_read_only_metrics_that_exist(plan):
    known = metrics.exporter_metrics()
    for region in plan.regions:
        groups = rule_groups(plan, region)
        recorded = alerts.recorded(groups)
        assert recorded and all(r.startswith("tikit:") for r in recorded)
        for g in groups:
            for rule in g["rules"]:
                assert metrics.metric_names(rule["expr"]), rule
        assert alerts.unknown_metrics(groups) == {}
        board = dashboard_of(plan, region)
        for panel in board["panels"]:
            for target in panel["targets"]:
                used = metrics.metric_names(target["expr"])
                assert used and used <= known | recorded, f"panel {panel['title']!r}: {sorted(used - known - recorded)}"


def test_metric_names_are_pulled_out_of_promql():
    expr = (
        'sum by (namespace, le) (rate(http_request_duration_seconds_bucket{job="api", code=~"5.."}[5m] offset 1h))\n'
        "/ on (namespace) group_left (pod) tikit:api_requests:rate5m > 3 and absent(up{a=\"b\"}) unless vector(1)"
    )
    assert metrics.metric_names(expr) == {"http_request_duration_seconds_bucket", "tikit:api_requests:rate5m", "up"}


# --- dashboard -------------------------------------------------------------------------------


def dashboard_of(plan, region: str) -> dict:
    cm = named(plan, "ConfigMap", "grafana-dashboard", region)
    [(key, text)] = cm["data"].items()
    assert key.endswith(".json")
    return json.loads(text)


def test_dashboard_config_map_is_picked_up_by_the_sidecar(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        cm = named(plan, "ConfigMap", "grafana-dashboard", region)
        # kube-prometheus-stack's Grafana sidecar looks for this label by default.
        assert cm["metadata"]["labels"][mon.DASHBOARD_LABEL] == "1" and mon.DASHBOARD_LABEL == "grafana_dashboard"
        board = dashboard_of(plan, region)
        assert board["uid"] == f"tikit-{cfg.environment}-{region}" and len(board["uid"]) <= 40
        assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for p in board["panels"]:
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


def test_dashboard_shows_what_the_issue_lists(plan):
    for region in plan.regions:
        panels = {p["title"]: p for p in dashboard_of(plan, region)["panels"]}
        exprs = {title: " ".join(t["expr"] for t in p["targets"]) for title, p in panels.items()}
        legends = {title: [t["legendFormat"] for t in p["targets"]] for title, p in panels.items()}
        assert alerts.REQUESTS_RATE in exprs["Request rate"]
        assert legends["Latency p50 / p95 / p99"] == ["p50", "p95", "p99"]
        assert alerts.error_ratio("5m") in exprs["Error rate (5xx)"]
        for metric in ("current_replicas", "spec_min_replicas", "spec_max_replicas"):
            assert metric in exprs["Replicas against autoscaler bounds"]
        assert "container_cpu_usage_seconds_total" in exprs["CPU (% of requests)"]
        assert "container_memory_working_set_bytes" in exprs["Memory (% of limit)"]
        assert "max_connections" in exprs["Database connections (% of max_connections)"]
        assert "pgbouncer_pools_server_active_connections" in exprs["PgBouncer pool use"]
        assert alerts.CACHE_HIT_RATIO in exprs["Cache hit rate"]
        assert "cnpg_pg_replication_lag" in exprs["Replication lag"]
        assert "last_available_backup_timestamp" in exprs["Backup age"] and names.REDIS_BACKUP in exprs["Backup age"]


def primary_scope(cfg: settings.Settings) -> alerts.Scope:
    """The primary region's alert scope, built as the Monitoring component builds it."""
    return alerts.scope(
        region=cfg.primary.name,
        role=cfg.primary.role,
        namespace=cfg.namespace,
        backup_schedule=cfg.postgres.backup_schedule,
        server_connections_per_pod=cfg.derived.pgbouncer_server_connections_per_pod,
        autoscaled=mon.autoscaled(cfg.backend, cfg.workers),
    )


def test_dashboard_quotes_the_at_max_window_from_the_constant(plan, monkeypatch):
    for region in plan.regions:
        [replicas] = [p for p in dashboard_of(plan, region)["panels"] if p["title"] == "Replicas against autoscaler bounds"]
        assert f"pinned at max for {alerts.AT_MAX_REPLICAS_FOR} raises TikitAutoscalerAtMaxReplicas" in replicas["description"]
    # The panel and the alert read the one constant: change it and both follow.
    monkeypatch.setattr(alerts, "AT_MAX_REPLICAS_FOR", "30m")
    cfg = settings.load({}, stack="prod")
    sc = primary_scope(cfg)
    [replicas] = [p for p in dashboard.panels(cfg.monitoring, sc) if p["title"] == "Replicas against autoscaler bounds"]
    assert "for 30m raises" in replicas["description"] and "15" not in replicas["description"]
    [at_max] = [r for g in alerts.rule_groups(cfg.monitoring, sc) for r in g["rules"] if r.get("alert") == "TikitAutoscalerAtMaxReplicas"]
    assert at_max["for"] == "30m"


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("override,key", [
    ({"cpuWarningPercent": 95}, "monitoring.cpuWarningPercent"),
    ({"latencyP99WarningSeconds": 3.0}, "monitoring.latencyP99WarningSeconds"),
    ({"cacheHitWarningPercent": 50}, "monitoring.cacheHitWarningPercent"),
    ({"volumeUsageWarningPercent": 90}, "monitoring.volumeUsageWarningPercent"),
    ({"scrapeInterval": "soon"}, "monitoring.scrapeInterval"),
    ({"runbookBaseUrl": "docs/runbooks"}, "monitoring.runbookBaseUrl"),
])
def test_bad_monitoring_settings_are_refused(override, key):
    with pytest.raises(settings.ConfigError) as err:
        settings.load({"monitoring": override}, stack="dev")
    assert err.value.key == key


@pytest.mark.parametrize("key", [
    "alertFor", "fastAlertFor", "utilizationAlertFor", "atMaxReplicasFor", "cacheMinLookupsPerSecond",
    "requestMetric", "latencyMetric", "requestCodeLabel", "dashboardLabel", "kedaMetricsPort",
    "releaseLabel", "namespace", "k8gbNamespace",
])
def test_former_monitoring_settings_are_unknown_keys(key):
    """These became constants (or addons.* settings): a stack file that still sets one is
    told so, instead of the value being silently ignored."""
    with pytest.raises(settings.ConfigError) as err:
        settings.load({"monitoring": {key: "5m"}}, stack="dev")
    assert err.value.key == f"monitoring.{key}"
    assert err.value.message.startswith("unknown key")


def test_backup_limits_are_settings_errors_before_any_resource():
    """Both used to raise from inside the monitoring component, after other resources were
    registered (and one as a bare ValueError); settings.load refuses them now (the cases
    themselves are in tests/test_settings.py)."""
    with pytest.raises(settings.ConfigError) as err:
        settings.load({"monitoring": {"redisBackupMaxAgeSeconds": 3600}}, stack="dev")
    assert err.value.key == "monitoring.redisBackupMaxAgeSeconds"
    with pytest.raises(settings.ConfigError) as err:
        settings.load({"postgres": {"backupSchedule": "0 0 2 * * 1-5"}}, stack="dev")
    assert err.value.key == "postgres.backupSchedule"
    cfg = settings.load({"postgres": {"backupSchedule": "0 0 */6 * * *"}}, stack="dev")
    assert primary_scope(cfg).backup_period_seconds == 6 * 3600


# --- findings the rule expressions must not regress on -------------------------------------


def test_pool_saturation_reads_metrics_the_pinned_exporter_emits(plan, stack):
    """No rule or panel reads a name the pinned exporter does not emit (`x + <empty>` is
    empty: the alert could never fire).  The denominator is max_db_connections, which every
    exporter version emits and the rendered pgbouncer.ini sets to pool + reserve."""
    cfg = stack_settings(stack)
    for region in plan.regions:
        board = dashboard_of(plan, region)
        panel_exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
        rule_exprs = [r["expr"] for g in rule_groups(plan, region) for r in g["rules"]]
        for expr in rule_exprs + panel_exprs:
            assert not metrics.metric_names(expr) & set(metrics.NOT_EMITTED), expr
        for rule in rules_named(plan, region, "TikitPgBouncerPoolSaturated").values():
            assert "pgbouncer_databases_max_connections" in rule["expr"]
            assert "pgbouncer_pools_server_active_connections" in rule["expr"]
            # An unlimited database (0) is filtered out instead of dividing into +Inf.
            assert re.search(r"pgbouncer_databases_max_connections\{[^}]*\}\) > 0\)", rule["expr"])
        [pool_panel] = [p for p in board["panels"] if p["title"] == "PgBouncer pool use"]
        assert "pgbouncer_databases_max_connections" in pool_panel["targets"][0]["expr"]
        for pool in (names.PGBOUNCER_RW, names.PGBOUNCER_RO):
            ini = named(plan, "ConfigMap", pool, region)["data"]["pgbouncer.ini"]
            [cap] = re.findall(r"^max_db_connections = (\d+)$", ini, re.MULTILINE)
            assert int(cap) == cfg.pgbouncer.default_pool_size + cfg.pgbouncer.reserve_pool_size > 0


def test_unknown_metrics_names_what_no_exporter_emits():
    groups = [{"name": "g", "rules": [
        {"record": "tikit:x:sum", "expr": "sum(pgbouncer_databases_pool_size)"},
        {"alert": "A", "expr": "tikit:x:sum + pgbouncer_stats_queries_pooled_total > 0"},
        {"alert": "B", "expr": "redis_up == 0"},
    ]}]
    assert alerts.unknown_metrics(groups) == {"A": {"pgbouncer_stats_queries_pooled_total"}}
    assert set(metrics.NOT_EMITTED).isdisjoint(metrics.exporter_metrics())


def test_pgbouncer_metric_list_names_the_versions_it_was_checked_against():
    """The PgBouncer names hold for one exporter and one daemon version: bumping either
    image fails here until someone re-checks metrics.PGBOUNCER against the new ones."""
    pb = settings.load({}, stack="prod").pgbouncer
    exporter_tag = images.split(pb.exporter_image)[1]
    daemon_minor = ".".join(images.split(pb.image)[1].split(".")[:2])
    assert f"pgbouncer_exporter {exporter_tag} " in metrics.PGBOUNCER.source
    assert f"PgBouncer {daemon_minor} " in metrics.PGBOUNCER.source


def test_wal_that_does_not_reach_the_store_alerts_on_the_source_side(plan, stack):
    """London's lag alert cannot tell an idle Lagos from a stuck archiver; the source side
    can: WAL waits to be archived and nothing was archived for the threshold."""
    m = stack_settings(stack).monitoring
    for region in plan.regions:
        [stalled] = rules_named(plan, region, "TikitPostgresWalArchiveStalled").values()
        expr = stalled["expr"]
        assert stalled["labels"]["severity"] == "critical"
        assert f"> {m.wal_archive_stall_alert_seconds}\n" in expr
        assert 'cnpg_collector_pg_wal_archive_status{' in expr and 'value="ready"' in expr
        assert f'pod=~"{names.pg_cluster(region)}-[0-9]+"' in expr
        # A failing archiver is TikitPostgresWalArchivingFailing's: one page per cause.
        assert "unless on (namespace, pod)" in expr and "last_failed_time" in expr.split("unless", 1)[1]


def test_thresholds_sit_above_cnpg_archive_timeout():
    """Without streaming, London trails Lagos by up to archive_timeout (CNPG: 300 s) plus the
    upload, and an idle Lagos makes the lag grow: 300 s alerted on normal operation."""
    m = settings.load({}, stack="prod").monitoring
    cnpg_archive_timeout = 300
    assert m.replication_lag_alert_seconds >= 3 * cnpg_archive_timeout
    assert m.wal_archive_stall_alert_seconds > cnpg_archive_timeout


def test_docs_list_every_alert_and_the_counts_per_tier(rendered):
    text = (REPO / "docs" / "observability.md").read_text()
    documented = set(re.findall(r"^\| (Tikit[A-Za-z0-9]+)", text, re.MULTILINE))
    every = {r["alert"] for stack in STACKS for plan in [rendered(stack).plan] for reg in plan.regions for r in alert_rules(plan, reg)}
    assert documented == every, f"undocumented: {sorted(every - documented)}; gone: {sorted(documented - every)}"
    plan = rendered("prod").plan
    for group in rule_groups(plan, "lagos"):
        tier = group["name"].removeprefix("tikit-")
        alerts_ = [r["alert"] for r in group["rules"] if "alert" in r]
        row = re.search(rf"^\| {tier} \| (\d+) \((\d+)\)", text, re.MULTILINE)
        assert row, f"no row for tier {tier}"
        assert (int(row.group(1)), int(row.group(2))) == (len(set(alerts_)), len(alerts_)), tier


def test_alert_counts_per_tier_are_stable_across_stacks(rendered):
    """The same tiers everywhere; only the region-dependent alerts come and go."""
    counts = {}
    for stack in STACKS:
        plan = rendered(stack).plan
        for region in plan.regions:
            counts[(stack, region)] = {
                g["name"]: len({r["alert"] for r in g["rules"] if "alert" in r}) for g in rule_groups(plan, region)
            }
    assert counts[("staging", "lagos")] == counts[("prod", "lagos")]
    assert counts[("prod", "london")]["tikit-postgres"] == counts[("prod", "lagos")]["tikit-postgres"] + 1
    assert counts[("dev", "lagos")]["tikit-traffic"] == counts[("prod", "lagos")]["tikit-traffic"] - 1


def _claims(rule: dict) -> str:
    (claims,) = set(re.findall(r'persistentvolumeclaim=~"([^"]+)"', rule["expr"]))
    return claims


def test_volume_alerts_select_the_claims_their_owners_create(plan, stack):
    """CNPG names an instance's claims <cluster>-<n> and <cluster>-<n>-wal; the Redis
    StatefulSet's claim template gives <template>-<statefulset>-<ordinal>.  Each alert's
    regex (anchored, as PromQL's are) takes its own kind of claim and no other."""
    m = stack_settings(stack).monitoring
    for region in plan.regions:
        cluster = names.pg_cluster(region)
        sts = named(plan, "StatefulSet", names.REDIS, region)
        (template,) = sts["spec"]["volumeClaimTemplates"]
        redis_claims = [f"{template['metadata']['name']}-{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])]
        kinds = {
            "TikitPostgresDataVolumeFull": [f"{cluster}-1", f"{cluster}-12"],
            "TikitPostgresWalVolumeFull": [f"{cluster}-1-wal", f"{cluster}-12-wal"],
            "TikitRedisVolumeFull": redis_claims,
        }
        every = [c for claims in kinds.values() for c in claims] + ["pg-restore-drill-1", f"{cluster}-1-wal-x"]
        for alert, mine in kinds.items():
            rules = [r for r in alert_rules(plan, region) if r["alert"] == alert]
            assert {r["labels"]["severity"] for r in rules} == {"warning", "critical"}
            thresholds = {r["labels"]["severity"]: r["expr"].rsplit(">", 1)[1].strip() for r in rules}
            assert thresholds == {"warning": str(m.volume_usage_warning_percent), "critical": str(m.volume_usage_critical_percent)}
            pattern = re.compile(_claims(rules[0]))
            assert [c for c in every if pattern.fullmatch(c)] == mine, alert
            assert all("kubelet_volume_stats_available_bytes" in r["expr"] and "kubelet_volume_stats_capacity_bytes" in r["expr"]
                       for r in rules)
