"""Traffic on the rendered manifests of every stack: the Gateway and its TLS, the proxies'
client-IP preservation, the HTTP->HTTPS redirect, routes that reach real Services, the
REST and WebSocket traffic policies, the k8gb Gslb of every region and the failover
runbook's arithmetic."""

from __future__ import annotations

import re

import pytest
import yaml

from tikit import names
from tikit import settings
from tikit.components import failover as failover_mod
from tikit.components import gateway as gw
from tikit.components import nodeapp
from conftest import REPO, named, objects
from preview import engine, plan as plan_mod
from preview.validate import validate

TRAFFIC_KINDS = ("Gateway", "HTTPRoute", "BackendTrafficPolicy", "EnvoyProxy", "Certificate", "Gslb")


def stack_settings(stack: str) -> settings.Settings:
    """The stack's settings as the program sees them: preset plus the stack file's deltas."""
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = {k.split(":", 1)[1]: v for k, v in (doc.get("config") or {}).items()}
    return settings.load(config, stack=stack)


def routes(plan, region):
    return objects(plan, "HTTPRoute", region)


def policies_for(plan, region, route: str, rule: str) -> list[dict]:
    """BackendTrafficPolicies attached to one rule of a route (directly or route-wide)."""
    out = []
    for p in objects(plan, "BackendTrafficPolicy", region):
        for ref in p["spec"]["targetRefs"]:
            if ref["kind"] == "HTTPRoute" and ref["name"] == route and ref.get("sectionName", rule) == rule:
                out.append(p)
    return out


def rule_named(route: dict, rule: str) -> dict:
    (found,) = [r for r in route["spec"]["rules"] if r.get("name") == rule]
    return found


# --- Gateway, TLS, client IPs ----------------------------------------------------------


def test_gateway_listeners_tls_and_hostname(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        gateway = named(plan, "Gateway", names.GATEWAY, region)
        spec = gateway["spec"]
        assert spec["gatewayClassName"] == cfg.gateway.class_name
        listeners = {l["name"]: l for l in spec["listeners"]}
        https, http = listeners[gw.HTTPS_LISTENER], listeners[gw.HTTP_LISTENER]
        assert (https["protocol"], https["port"], https["hostname"]) == ("HTTPS", 443, cfg.gateway.hostname)
        assert (http["protocol"], http["port"], http["hostname"]) == ("HTTP", 80, cfg.gateway.hostname)
        assert https["tls"]["mode"] == "Terminate"
        (ref,) = https["tls"]["certificateRefs"]
        # The Secret the listener serves is the one a cert-manager Certificate issues.
        certs = [c for c in objects(plan, "Certificate", region) if c["spec"]["secretName"] == ref["name"]]
        assert len(certs) == 1, f"{region}: no Certificate issues Secret {ref['name']}"
        cert = certs[0]["spec"]
        assert cfg.gateway.hostname in cert["dnsNames"]
        assert cert["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": cfg.gateway.cluster_issuer}


def test_proxy_service_preserves_client_ip(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        ref = named(plan, "Gateway", names.GATEWAY, region)["spec"]["infrastructure"]["parametersRef"]
        assert (ref["group"], ref["kind"]) == ("gateway.envoyproxy.io", "EnvoyProxy")
        proxy = named(plan, "EnvoyProxy", ref["name"], region)["spec"]["provider"]
        assert proxy["type"] == "Kubernetes"
        k = proxy["kubernetes"]
        assert k["envoyService"] == {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}
        assert k["envoyDeployment"]["replicas"] == cfg.gateway.envoy_replicas
        # Local traffic policy: a zone without a proxy would get no traffic, so spread them.
        keys = {c["topologyKey"] for c in k["envoyDeployment"]["pod"]["topologySpreadConstraints"]}
        assert "topology.kubernetes.io/zone" in keys
        # The one disruption rule every PodDisruptionBudget of ours follows.
        assert k["envoyPDB"] == {"maxUnavailable": 1}
        for pdb in objects(plan, "PodDisruptionBudget", region):
            assert {key: v for key, v in pdb["spec"].items() if key != "selector"} == k["envoyPDB"]


def test_http_only_redirects_to_https(plan):
    for region in plan.regions:
        on_http = [
            r for r in routes(plan, region)
            if any(p.get("sectionName") == gw.HTTP_LISTENER for p in r["spec"]["parentRefs"])
        ]
        assert on_http, f"{region}: nothing answers on the HTTP listener"
        for route in on_http:
            for rule in route["spec"]["rules"]:
                assert not rule.get("backendRefs"), f"{route['metadata']['name']} serves plain HTTP"
                (f,) = rule["filters"]
                assert f == {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}


# --- routes reach real Services --------------------------------------------------------


def test_every_route_references_an_existing_gateway_listener_service_and_port(plan):
    for region in plan.regions:
        services = {s["metadata"]["name"]: s for s in objects(plan, "Service", region)}
        gateways = {g["metadata"]["name"]: g for g in objects(plan, "Gateway", region)}
        assert routes(plan, region)
        for route in routes(plan, region):
            rname = route["metadata"]["name"]
            for parent in route["spec"]["parentRefs"]:
                assert parent["name"] in gateways, f"{region}/{rname}: no Gateway {parent['name']}"
                listeners = {l["name"] for l in gateways[parent["name"]]["spec"]["listeners"]}
                assert parent["sectionName"] in listeners
            for rule in route["spec"]["rules"]:
                for ref in rule.get("backendRefs", []):
                    assert ref.get("kind", "Service") == "Service" and ref.get("group", "") == ""
                    assert ref["name"] in services, f"{region}/{rname}: no Service {ref['name']} rendered"
                    ports = {p["port"] for p in services[ref["name"]]["spec"]["ports"]}
                    assert ref["port"] in ports, f"{region}/{rname}: Service {ref['name']} has no port {ref['port']}"


def test_every_policy_targets_an_existing_route_rule_and_every_rule_has_one(plan):
    for region in plan.regions:
        by_name = {r["metadata"]["name"]: r for r in routes(plan, region)}
        for p in objects(plan, "BackendTrafficPolicy", region):
            for ref in p["spec"]["targetRefs"]:
                assert ref["kind"] == "HTTPRoute" and ref["name"] in by_name
                if "sectionName" in ref:
                    rule_named(by_name[ref["name"]], ref["sectionName"])
        for route in by_name.values():
            for rule in route["spec"]["rules"]:
                if rule.get("backendRefs"):
                    got = policies_for(plan, region, route["metadata"]["name"], rule.get("name", ""))
                    assert len(got) == 1, f"{route['metadata']['name']}/{rule.get('name')}: {len(got)} policies"


# --- REST: algorithm, health checks, timeouts, retries ---------------------------------


def test_rest_routes_cover_the_api_prefix_split_by_idempotency(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        route = named(plan, "HTTPRoute", names.REST_ROUTE, region)
        # The public name, and in a stack with a Gslb the name k8gb answers (its CNAME target).
        gslb_names = [cfg.derived.gslb_hostname] if len(cfg.regions) > 1 else []
        assert route["spec"]["hostnames"] == [cfg.gateway.hostname, *gslb_names]
        # k8gb follows this route to its Gateway and accepts exactly one parent.
        assert len(route["spec"]["parentRefs"]) == 1
        idempotent, writes = rule_named(route, gw.IDEMPOTENT_RULE), rule_named(route, gw.WRITES_RULE)
        assert gw.IDEMPOTENT_RULE == "idempotent", "the rule carries PUT and DELETE too: not only reads"
        prefixed = [m for m in idempotent["matches"] if m["path"] == {"type": "PathPrefix", "value": names.API_PREFIX}]
        assert {m["method"] for m in prefixed} == set(gw.IDEMPOTENT_METHODS)
        health = {m["method"] for m in idempotent["matches"] if m["path"]["value"] == nodeapp.HEALTH_PATH}
        assert health == {"GET", "HEAD"}
        # Everything else under the prefix (POST, PATCH, ...) lands on the writes rule.
        assert writes["matches"] == [{"path": {"type": "PathPrefix", "value": names.API_PREFIX}}]


def test_rest_policies_carry_algorithm_health_checks_and_timeout(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        for rule in (gw.IDEMPOTENT_RULE, gw.WRITES_RULE):
            (p,) = policies_for(plan, region, names.REST_ROUTE, rule)
            spec = p["spec"]
            assert spec["loadBalancer"] == {"type": cfg.gateway.rest_load_balancer}
            active = spec["healthCheck"]["active"]
            assert active["type"] == "HTTP" and active["http"]["path"] == nodeapp.HEALTH_PATH
            assert active["interval"] == gw.HEALTH_CHECK_INTERVAL
            assert active["timeout"] == gw.HEALTH_CHECK_TIMEOUT
            assert active["unhealthyThreshold"] == gw.HEALTH_CHECK_UNHEALTHY_THRESHOLD
            assert active["healthyThreshold"] == gw.HEALTH_CHECK_HEALTHY_THRESHOLD
            assert spec["timeout"]["http"]["requestTimeout"] == cfg.gateway.request_timeout


def test_only_idempotent_methods_are_retried(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        route = named(plan, "HTTPRoute", names.REST_ROUTE, region)
        retried = set()
        for rule in route["spec"]["rules"]:
            (p,) = policies_for(plan, region, names.REST_ROUTE, rule["name"])
            retries = p["spec"].get("retry", {}).get("numRetries", 0)
            if retries:
                retried.add(rule["name"])
                # A rule may retry only when every match pins an idempotent method.
                methods = [m.get("method") for m in rule["matches"]]
                assert all(m in gw.IDEMPOTENT_METHODS for m in methods), f"{rule['name']} retries {methods}"
                assert retries == cfg.gateway.retries
                assert set(p["spec"]["retry"]["retryOn"]["triggers"]) >= {"connect-failure", "reset"}
            else:
                assert p["spec"]["retry"] == {"numRetries": 0}, "non-idempotent rules say so explicitly"
        assert retried == ({gw.IDEMPOTENT_RULE} if cfg.gateway.retries else set())


def test_least_request_switch_reaches_the_rest_policies():
    project, config, secrets = engine.load_stack_config("dev")
    config = {**config, f"{project}:gateway": '{"restLoadBalancer": "LeastRequest"}'}
    plan = plan_mod.build(engine.run_program("dev", config_override=config))
    for region in plan.regions:
        for rule in (gw.IDEMPOTENT_RULE, gw.WRITES_RULE):
            (p,) = policies_for(plan, region, names.REST_ROUTE, rule)
            assert p["spec"]["loadBalancer"] == {"type": "LeastRequest"}
        (ws,) = policies_for(plan, region, names.WEBSOCKET_ROUTE, gw.WEBSOCKET_RULE)
        assert ws["spec"]["loadBalancer"]["type"] == "ConsistentHash"


# --- WebSocket -------------------------------------------------------------------------


def test_websocket_route_hashes_client_ip_with_long_idle_timeout(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        route = named(plan, "HTTPRoute", names.WEBSOCKET_ROUTE, region)
        rule = rule_named(route, gw.WEBSOCKET_RULE)
        assert [m["path"]["value"] for m in rule["matches"]] == list(names.WEBSOCKET_PATHS)
        assert all(m["path"]["type"] == "PathPrefix" and "method" not in m for m in rule["matches"])
        (p,) = policies_for(plan, region, names.WEBSOCKET_ROUTE, gw.WEBSOCKET_RULE)
        spec = p["spec"]
        assert spec["loadBalancer"] == {"type": "ConsistentHash", "consistentHash": {"type": "SourceIP"}}
        http = spec["timeout"]["http"]
        assert http["streamIdleTimeout"] == cfg.gateway.websocket_idle_timeout
        assert http["requestTimeout"] == "0s", "a total deadline would cut every socket"
        assert "retry" not in spec


# --- failover --------------------------------------------------------------------------


def test_every_region_of_a_multi_region_stack_has_the_same_gslb(plan, stack):
    cfg = stack_settings(stack)
    gslbs = {region: objects(plan, "Gslb", region) for region in plan.regions}
    if len(plan.regions) == 1:
        assert gslbs == {plan.regions[0]: []}, "a single region has nothing to fail over to"
        return
    strategies = set()
    for region, found in gslbs.items():
        (gslb,) = found
        assert gslb["metadata"]["name"] == names.GSLB
        strategy = gslb["spec"]["strategy"]
        assert strategy == {
            "type": "failover",
            "primaryGeoTag": cfg.primary.tag,
            "dnsTtlSeconds": cfg.gslb.dns_ttl_seconds,
        }
        strategies.add(tuple(sorted(strategy.items())))
        ref = gslb["spec"]["resourceRef"]
        route = named(plan, ref["kind"], ref["name"], region)
        assert ref["apiVersion"] == route["apiVersion"]
        # The public name, and in a stack with a Gslb the name k8gb answers (its CNAME target).
        gslb_names = [cfg.derived.gslb_hostname] if len(cfg.regions) > 1 else []
        assert route["spec"]["hostnames"] == [cfg.gateway.hostname, *gslb_names]
    assert len(strategies) == 1


@pytest.mark.parametrize("stack_name", ["staging", "prod"])
def test_failover_runbook_numbers_match_the_settings(stack_name):
    text = (REPO / "docs" / "runbooks" / "failover.md").read_text()
    cfg = stack_settings(stack_name)
    est = failover_mod.failover_estimate(cfg.gslb)
    row = re.search(rf"^\| {stack_name} \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", text, re.M)
    assert row, f"docs/runbooks/failover.md has no estimate row for {stack_name}"
    assert tuple(map(int, row.groups())) == (
        est.dns_ttl_seconds,
        est.reconcile_seconds,
        est.worst_case_seconds,
        est.typical_seconds,
    )
    assert "postgres-switchover.md" in text


def test_failover_estimate_arithmetic():
    est = failover_mod.FailoverEstimate(reconcile_seconds=30, dns_ttl_seconds=30)
    assert (est.worst_case_seconds, est.typical_seconds) == (60, 30)
    assert est.with_resolver_floor(300) == 330 and est.with_resolver_floor(10) == 60


# --- schema ----------------------------------------------------------------------------


def test_every_traffic_object_validates(plan):
    checked = 0
    for region in plan.regions:
        for kind in TRAFFIC_KINDS:
            for obj in objects(plan, kind, region):
                assert validate(obj) == [], f"{region} {kind}/{obj['metadata']['name']}"
                checked += 1
    assert checked >= 8 * len(plan.regions)
