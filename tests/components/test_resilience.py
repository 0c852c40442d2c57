"""The resilience tier (load test and chaos Schedules) on rendered manifests.

The stack files as they are cover the presets (chaos on in staging only, the load test
nowhere); each stack is also re-rendered with the tier and the load test switched on, and
staging with the tier switched off, through the same config override path the CLI uses.
"""

from __future__ import annotations

import json
import re

import pytest

from tikit import kube
from tikit import names
from tikit import settings
from tikit.components import backend as backend_tier
from tikit.components import network as net
from tikit.components import resilience as res
from tikit.conf import loadtest
from conftest import STACKS, named, objects
from preview import engine, policies
from preview import plan as plan_mod
from preview.validate import validate
from test_network import Pod, allowed, pod_templates, selects
from test_traffic import stack_settings
from tikit_policies.parse import image_problem

# The notes' load test ("Testing Auto-Scaling"): the requirement itself.
NOTES_STAGES = (("2m", 100), ("5m", 100), ("2m", 1000), ("5m", 1000), ("2m", 0))
NOTES_THRESHOLDS = {"http_req_duration": ["p(95)<500"], "http_req_failed": ["rate<0.01"]}
SCHEDULES = (names.CHAOS_API_KILL, names.CHAOS_API_LATENCY, names.CHAOS_POSTGRES_KILL)
K6_POLICIES = (names.K6_RUNNER, names.K6_STARTER)
# Labels the k6-operator adds to the pods of a TestRun (pkg/resources/jobs: newLabels).
OPERATOR_LABELS = {"app": "k6", "k6_cr": names.LOAD_TEST}
CHAOS_KEYS = {"podChaos": "PodChaos", "networkChaos": "NetworkChaos"}
RESILIENCE_TYPE = "tikit:resilience:Resilience"


def render(stack: str, resilience: dict) -> plan_mod.Plan:
    project, config, _ = engine.load_stack_config(stack)
    config = {**config, f"{project}:resilience": json.dumps(resilience)}
    return plan_mod.build(engine.run_program(stack, config_override=config))


def override_settings(stack: str, resilience: dict) -> settings.Settings:
    return settings.load({"resilience": resilience}, stack=stack)


_cache: dict[tuple[str, str], plan_mod.Plan] = {}


@pytest.fixture(scope="module")
def switched_on():
    """stack -> plan with resilience.enabled and resilience.loadTest on."""

    def get(stack: str) -> plan_mod.Plan:
        key = (stack, "on")
        if key not in _cache:
            _cache[key] = render(stack, {"enabled": True, "loadTest": True})
        return _cache[key]

    return get


@pytest.fixture(scope="module")
def staging_off():
    return render("staging", {"enabled": False})


def resilience_objects(plan, region=None) -> list[dict]:
    """Every Kubernetes object whose parent is the resilience component, plus the k6 policies."""
    parents = {r.urn for r in plan.by_type(RESILIENCE_TYPE)}
    out = [r.manifest for r in plan.kubernetes_objects(region) if r.parent in parents]
    out += [p for p in objects(plan, "NetworkPolicy", region) if p["metadata"]["name"] in K6_POLICIES]
    return out


def script_text(plan, region) -> str:
    cm = named(plan, "ConfigMap", names.LOAD_TEST_SCRIPT, region)
    return cm["data"][loadtest.SCRIPT_FILE]


def primary_region(plan) -> str:
    """The region whose Namespace the platform marks primary."""
    (region,) = [
        r for r in plan.regions
        for ns in objects(plan, "Namespace", r)
        if (ns["metadata"].get("annotations") or {}).get(names.REGION_ROLE_ANNOTATION) == "primary"
    ]
    return region


# --- enablement -----------------------------------------------------------------------


def test_presets_chaos_in_staging_only_and_no_load_test_anywhere():
    assert settings.PRESETS["resilience.enabled"] == (False, True, False)
    for stack in STACKS:
        assert settings.load({}, stack=stack).resilience.load_test is False


def test_stack_files_render_what_their_settings_ask(rendered, stack):
    cfg = stack_settings(stack).resilience
    plan = rendered(stack).plan
    assert len(plan.by_type(RESILIENCE_TYPE)) == (len(plan.regions) if cfg.enabled else 0)
    assert objects(plan, "TestRun") == [] or cfg.load_test
    for region in plan.regions:
        schedules = sorted(s["metadata"]["name"] for s in objects(plan, "Schedule", region))
        assert schedules == (sorted(SCHEDULES) if cfg.enabled else [])
    if not cfg.enabled:
        assert resilience_objects(plan) == []
        assert [c for c in objects(plan, "ConfigMap") if c["metadata"]["name"] == names.LOAD_TEST_SCRIPT] == []


def test_disabled_renders_nothing_and_enabled_adds_only_the_tier(rendered, staging_off):
    on = rendered("staging").plan
    assert stack_settings("staging").resilience.enabled, "staging's preset switches the tier on"
    assert staging_off.by_type(RESILIENCE_TYPE) == []
    assert resilience_objects(staging_off) == []
    # Switching the tier on adds its component, its children, the k6 policies and the two
    # operators it needs (Chaos Mesh, the k6-operator) with their namespaces; nothing else.
    off_urns = {r.urn for r in staging_off.resources}
    added = [r for r in on.resources if r.urn not in off_urns]
    assert off_urns <= {r.urn for r in on.resources}
    tier = {r.urn for r in on.by_type(RESILIENCE_TYPE)}
    addons = {r.urn for r in on.by_type("tikit:platform:Addons")}
    a = stack_settings("staging").addons
    for r in added:
        is_k6_policy = r.type.endswith("NetworkPolicy") and r.manifest["metadata"]["name"] in K6_POLICIES
        operator = r.parent in addons and (
            (r.type == "kubernetes:helm.sh/v4:Chart" and r.inputs["chart"] in ("chaos-mesh", "k6-operator"))
            or (r.type == "kubernetes:core/v1:Namespace" and r.name.rsplit("-", 1)[0] == f"ns-{a.chaos_mesh_namespace}")
            or (r.type == "kubernetes:core/v1:Namespace" and r.name.rsplit("-", 1)[0] == f"ns-{a.k6_operator_namespace}")
        )
        assert r.urn in tier or r.parent in tier or is_k6_policy or operator, r.urn


def test_load_test_switch(rendered, switched_on, stack):
    assert objects(rendered("staging").plan, "TestRun") == []  # enabled, loadTest off
    plan = switched_on(stack)
    primary = primary_region(plan)
    for region in plan.regions:
        runs = objects(plan, "TestRun", region)
        assert len(runs) == (1 if region == primary else 0), region
        scripts = [c for c in objects(plan, "ConfigMap", region) if c["metadata"]["name"] == names.LOAD_TEST_SCRIPT]
        assert len(scripts) == (1 if region == primary else 0), region


def test_load_test_needs_the_tier():
    with pytest.raises(settings.ConfigError, match=r"^resilience\.loadTest: true needs resilience\.enabled"):
        settings.load({"resilience": {"enabled": False, "loadTest": True}}, stack="staging")
    with pytest.raises(settings.ConfigError, match=r"^resilience\.enabled: must be true or false"):
        settings.load({"resilience": {"enabled": "yes"}}, stack="staging")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("stages", ["2m-100"], "must be '<duration>:<virtual users>'"),
        ("stages", [], "at least one stage"),
        ("apiKillSchedule", "0 0 10 * * 1-5", "five-field cron"),
        ("databaseKillSchedule", "@every 1h", "five-field cron"),
        ("networkLatency", "200", "must be a duration such as '200ms'"),
        ("networkDelayMode", "fixed", "must be one of all, one"),
        ("parallelism", 0, "must be >= 1"),
        ("k6Image", "grafana/k6:latest", "latest"),
        ("path", "events", "absolute path"),
    ],
)
def test_settings_are_validated(key, value, message):
    with pytest.raises(settings.ConfigError, match=rf"^resilience\.{key}: .*{re.escape(message)}"):
        settings.load({"resilience": {key: value}}, stack="staging")


# --- the k6 script --------------------------------------------------------------------


def parse_script(text: str) -> dict:
    stages = tuple((d, int(t)) for d, t in re.findall(r"\{ duration: \"([^\"]+)\", target: (\d+) \}", text))
    thresholds = {m: json.loads(v) for m, v in re.findall(r"^\s+(http_req_\w+): (\[.*\]),$", text, re.M)}
    (url,) = re.findall(r"http\.get\((\"[^\"]+\")\)", text)
    (sleep,) = re.findall(r"^\s+sleep\((\d+)\);$", text, re.M)
    checks = re.findall(r"^\s+'([^']+)': \(r\) => (.+),$", text, re.M)
    return {"stages": stages, "thresholds": thresholds, "url": json.loads(url), "sleep": int(sleep), "checks": checks}


def test_script_is_the_notes_load_test(switched_on, stack):
    plan = switched_on(stack)
    cfg = stack_settings(stack)
    s = parse_script(script_text(plan, primary_region(plan)))
    assert s["stages"] == NOTES_STAGES == cfg.resilience.stage_list
    assert s["thresholds"] == NOTES_THRESHOLDS
    assert s["thresholds"]["http_req_duration"] == [f"p(95)<{cfg.monitoring.latency_slo_ms}"]
    assert s["url"] == f"https://{cfg.gateway.hostname}/api/events"
    assert s["sleep"] == 1
    assert s["checks"] == [
        ("status is 200", "r.status === 200"),
        ("response time < 500ms", "r.timings.duration < 500"),
    ]
    assert "import http from 'k6/http';" in script_text(plan, primary_region(plan))


def test_script_follows_the_settings():
    cfg = override_settings("staging", {"stages": ["30s:5", "1m:0"], "path": "/health", "thinkTimeSeconds": 3})
    monitoring = settings.load({"monitoring": {"latencySloMs": 300, "errorRateWarningPercent": 2.5}}, stack="staging").monitoring
    s = parse_script(loadtest.k6_script(cfg.resilience, cfg.gateway, monitoring))
    assert s["stages"] == (("30s", 5), ("1m", 0))
    assert s["thresholds"] == {"http_req_duration": ["p(95)<300"], "http_req_failed": ["rate<0.025"]}
    assert s["url"] == f"https://{cfg.gateway.hostname}{names.API_PREFIX}/health"
    assert s["sleep"] == 3
    assert s["checks"][1] == ("response time < 300ms", "r.timings.duration < 300")


# --- the TestRun ----------------------------------------------------------------------


def the_testrun(plan) -> tuple[str, dict]:
    region = primary_region(plan)
    return region, named(plan, "TestRun", names.LOAD_TEST, region)


def test_testrun_runs_the_script_with_the_settings(switched_on, stack):
    plan = switched_on(stack)
    cfg = stack_settings(stack).resilience
    region, run = the_testrun(plan)
    spec = run["spec"]
    assert run["apiVersion"] == "k6.io/v1alpha1"
    assert spec["parallelism"] == cfg.parallelism
    assert spec["cleanup"] == "post"
    ref = spec["script"]["configMap"]
    assert ref == {"name": names.LOAD_TEST_SCRIPT, "file": loadtest.SCRIPT_FILE}
    assert named(plan, "ConfigMap", ref["name"], region)["data"][ref["file"]]
    assert spec["runner"]["resources"] == kube.resources(cfg.runner_cpu, cfg.runner_memory)
    assert spec["starter"]["resources"] == kube.resources(res.STARTER_CPU, res.STARTER_MEMORY)
    assert spec["runner"]["image"] == spec["initializer"]["image"] == cfg.k6_image
    assert spec["starter"]["image"] == cfg.starter_image


def test_testrun_pods_are_restricted_and_pinned(switched_on, stack):
    _, run = the_testrun(switched_on(stack))
    for role in ("runner", "initializer", "starter"):
        pod = run["spec"][role]
        assert image_problem(pod["image"]) is None, role
        ctx, cctx = pod["securityContext"], pod["containerSecurityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0 and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        assert cctx["allowPrivilegeEscalation"] is False and cctx["capabilities"] == {"drop": ["ALL"]}
        assert cctx["readOnlyRootFilesystem"] is True
        assert pod["automountServiceAccountToken"] == "false"
        mounts = {m["mountPath"] for m in pod.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert all(set(v) - {"name"} <= {"emptyDir"} for v in volumes.values()), role
        if role != "starter":  # k6 archives the script under /tmp
            assert "/tmp" in mounts
    env = {e["name"]: e["value"] for e in run["spec"]["runner"]["env"]}
    assert env["K6_NO_USAGE_REPORT"] == "true"


def test_testrun_waits_for_its_script_the_api_and_the_network(switched_on, stack):
    plan = switched_on(stack)
    region = primary_region(plan)
    (record,) = [r for r in plan.kubernetes_objects(region) if r.manifest.get("kind") == "TestRun"]
    by_urn = {r.urn: r.manifest for r in plan.kubernetes_objects(region)}
    deps = {(by_urn[u]["kind"], by_urn[u]["metadata"]["name"]) for u in record.dependencies if u in by_urn}
    assert {("ConfigMap", names.LOAD_TEST_SCRIPT), ("Deployment", names.BACKEND)} <= deps
    assert {("NetworkPolicy", p) for p in K6_POLICIES} <= deps


# --- the chaos Schedules --------------------------------------------------------------


def test_schedules_follow_the_crd_and_the_settings(switched_on, stack):
    plan = switched_on(stack)
    cfg = stack_settings(stack).resilience
    crons = {
        names.CHAOS_API_KILL: cfg.api_kill_schedule,
        names.CHAOS_API_LATENCY: cfg.network_delay_schedule,
        names.CHAOS_POSTGRES_KILL: cfg.database_kill_schedule,
    }
    for region in plan.regions:
        for name in SCHEDULES:
            spec = named(plan, "Schedule", name, region)["spec"]
            assert spec["schedule"] == crons[name] and len(spec["schedule"].split()) == 5
            assert spec["concurrencyPolicy"] == "Forbid"
            assert spec["historyLimit"] == res.HISTORY_LIMIT
            assert spec["startingDeadlineSeconds"] == res.STARTING_DEADLINE_SECONDS
            embedded = [k for k in spec if k.endswith("Chaos") or k == "workflow"]
            assert len(embedded) == 1 and CHAOS_KEYS[embedded[0]] == spec["type"], (region, name)


def test_the_notes_scenarios(switched_on, stack):
    plan = switched_on(stack)
    cfg = stack_settings(stack).resilience
    for region in plan.regions:
        kill = named(plan, "Schedule", names.CHAOS_API_KILL, region)["spec"]["podChaos"]
        # Killed outright, as a crash would.
        assert (kill["action"], kill["mode"], kill["gracePeriod"]) == ("pod-kill", "one", res.KILL_GRACE_PERIOD_SECONDS)
        assert res.KILL_GRACE_PERIOD_SECONDS == 0
        delay = named(plan, "Schedule", names.CHAOS_API_LATENCY, region)["spec"]["networkChaos"]
        assert delay["action"] == "delay" and delay["mode"] == cfg.network_delay_mode
        assert delay["delay"] == {"latency": cfg.network_latency} and cfg.network_latency == "200ms"
        assert delay["duration"] == cfg.network_delay_duration
        db = named(plan, "Schedule", names.CHAOS_POSTGRES_KILL, region)["spec"]["podChaos"]
        assert (db["action"], db["mode"]) == ("pod-kill", "one")


def selector_matches(chaos_selector: dict, namespace: str, labels: dict) -> bool:
    """Chaos Mesh's pod selection by namespaces and labelSelectors (both must match)."""
    return namespace in chaos_selector["namespaces"] and all(
        labels.get(k) == v for k, v in chaos_selector["labelSelectors"].items()
    )


def test_api_experiments_select_the_api_pods_only(switched_on, stack):
    plan = switched_on(stack)
    for region in plan.regions:
        dep = named(plan, "Deployment", names.BACKEND, region)
        api_labels, ns = dep["spec"]["template"]["metadata"]["labels"], dep["metadata"]["namespace"]
        for name, key in ((names.CHAOS_API_KILL, "podChaos"), (names.CHAOS_API_LATENCY, "networkChaos")):
            sel = named(plan, "Schedule", name, region)["spec"][key]["selector"]
            assert selector_matches(sel, ns, api_labels), (region, name)
            # The Deployment's own selector: stable across image versions.
            assert sel["labelSelectors"] == dep["spec"]["selector"]["matchLabels"]
            others = [(k, n) for k, n, labels in pod_templates(plan, region) if n != names.BACKEND and selector_matches(sel, ns, labels)]
            assert others == [], (region, name, others)
            assert not selector_matches(sel, "other", api_labels)


def cnpg_instance_labels(cluster: dict, role: str) -> dict:
    """The labels CloudNativePG puts on an instance pod of ``cluster``: its inheritedMetadata
    plus the operator's own (cluster name, pod role, instance role)."""
    return {
        **cluster["spec"].get("inheritedMetadata", {}).get("labels", {}),
        names.CNPG_CLUSTER_LABEL: cluster["metadata"]["name"],
        "cnpg.io/podRole": "instance",
        names.CNPG_INSTANCE_ROLE_LABEL: role,
    }


def test_database_experiment_selects_the_primary_instance_only(switched_on, stack):
    plan = switched_on(stack)
    for region in plan.regions:
        (cluster,) = objects(plan, "Cluster", region)
        sel = named(plan, "Schedule", names.CHAOS_POSTGRES_KILL, region)["spec"]["podChaos"]["selector"]
        ns = cluster["metadata"]["namespace"]
        assert selector_matches(sel, ns, cnpg_instance_labels(cluster, "primary")), region
        assert not selector_matches(sel, ns, cnpg_instance_labels(cluster, "replica")), region
        for kind, name, labels in pod_templates(plan, region):
            assert not selector_matches(sel, ns, labels), (region, kind, name)


def test_every_object_of_the_tier_validates(switched_on, rendered, stack):
    for plan in (switched_on(stack), rendered(stack).plan):
        for region in plan.regions:
            for obj in resilience_objects(plan, region):
                assert validate(obj) == [], (region, obj["kind"], obj["metadata"]["name"], validate(obj))


def test_policy_pack_passes_with_everything_on(switched_on, stack):
    result = policies.evaluate(switched_on(stack), None)
    assert result.mandatory == [], [f.message for f in result.mandatory]


# --- network --------------------------------------------------------------------------


def k6_pods(plan, region) -> dict[str, Pod]:
    """The pods the operator creates from the rendered TestRun, with the labels it gives them."""
    _, run = the_testrun(plan)
    ns = run["metadata"]["namespace"]
    out = {}
    for role in ("runner", "initializer", "starter"):
        labels = {**run["spec"][role]["metadata"]["labels"], **OPERATOR_LABELS}
        if role == "runner":
            labels["runner"] = "true"
        out[role] = Pod(ns, labels)
    return out


def test_k6_policies_only_where_the_load_test_can_run(rendered, switched_on, stack):
    for plan in (rendered(stack).plan, switched_on(stack)):
        enabled = bool(plan.by_type(RESILIENCE_TYPE))
        primary = primary_region(plan)
        for region in plan.regions:
            present = {p["metadata"]["name"] for p in objects(plan, "NetworkPolicy", region)} & set(K6_POLICIES)
            assert present == (set(K6_POLICIES) if enabled and region == primary else set()), (region, present)


def test_k6_pods_have_their_own_allow_policies(switched_on, stack):
    plan = switched_on(stack)
    region = primary_region(plan)
    policies_ = objects(plan, "NetworkPolicy", region)
    for role in ("runner", "starter"):
        labels = k6_pods(plan, region)[role].labels
        own = [p for p in policies_ if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], labels)]
        assert own and all(p["spec"].get("ingress") or p["spec"].get("egress") for p in own), role


def test_k6_flows(switched_on, stack):
    plan = switched_on(stack)
    cfg = stack_settings(stack)
    region = primary_region(plan)
    pols = objects(plan, "NetworkPolicy", region)
    pods = k6_pods(plan, region)
    runner, starter, init = pods["runner"], pods["starter"], pods["initializer"]
    ns = runner.namespace
    internet = Pod(None, ip="52.95.150.10")
    proxies = Pod(cfg.addons.envoy_gateway_namespace, {"gateway.envoyproxy.io/owning-gateway-name": names.GATEWAY,
                                                 "gateway.envoyproxy.io/owning-gateway-namespace": ns})
    operator = Pod(cfg.addons.k6_operator_namespace, {"app.kubernetes.io/name": "k6-operator"})
    dns = Pod(cfg.network.dns_namespace, dict(net.DNS_LABELS))
    api = Pod(ns, named(plan, "Deployment", names.BACKEND, region)["spec"]["template"]["metadata"]["labels"])
    (cluster,) = objects(plan, "Cluster", region)
    postgres = Pod(ns, cnpg_instance_labels(cluster, "primary"))
    backend_port = backend_tier.PORT
    must = [
        ("runner -> gateway load balancer", runner, internet, 443),
        ("runner -> gateway proxies (hairpin)", runner, proxies, 443 + net.ENVOY_PORT_SHIFT),
        ("starter -> runner API", starter, runner, names.K6_API_PORT),
        ("operator -> runner API", operator, runner, names.K6_API_PORT),
    ]
    must_not = [
        ("runner -> api, bypassing the gateway", runner, api, backend_port),
        ("runner -> postgres", runner, postgres, names.POSTGRES_PORT),
        ("runner -> internet on another port", runner, internet, 80),
        ("starter -> internet", starter, internet, 443),
        ("initializer -> internet", init, internet, 443),
        ("another namespace -> runner API", Pod("default", {"app": "x"}), runner, names.K6_API_PORT),
        ("internet -> runner API", internet, runner, names.K6_API_PORT),
    ]
    for what, src, dst, port in must:
        assert allowed(pols, src, dst, port), f"{region}: {what} ({port}) is blocked"
    for what, src, dst, port in must_not:
        assert not allowed(pols, src, dst, port), f"{region}: {what} ({port}) is allowed"
    for pod in (runner, starter, init):
        assert allowed(pols, pod, dns, 53, "UDP")
