"""The add-ons tier: each operator from its chart at the release tikit/versions.py pins, with
values from settings, in the namespaces the NetworkPolicies assume; the ClusterIssuer and
k8gb's DNS provider from settings.dns; nothing installed where a region says `external`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from preview import engine, plan as plan_mod
from tikit import settings, versions
from tikit.components import addons

CHART = "kubernetes:helm.sh/v4:Chart"
STACKS = ("staging", "prod")
KIND_DEV = [{"name": "lagos", "role": "primary", "context": "kind-tikit"}]


def charts(plan, region: str) -> dict[str, Any]:
    return {r.inputs["name"]: r for r in plan.resources if r.type == CHART and r.region == region}


def render(stack: str, **changes: Any):
    project, config, _ = engine.load_stack_config(stack)
    config = {**config, **{f"{project}:{k}": json.dumps(v) for k, v in changes.items()}}
    return plan_mod.build(engine.run_program(stack, config_override=config))


@pytest.mark.parametrize("stack", STACKS)
def test_every_chart_is_the_pinned_release_in_the_namespace_settings_name(rendered, stack):
    plan = rendered(stack).plan
    s = settings.load({}, stack=stack)
    pinned = {(c.name, c.version): o for o in versions.OPERATORS for c in o.charts}
    for region in plan.regions:
        found = charts(plan, region)
        assert found, f"{stack}/{region} installs no add-on"
        operators = set()
        for chart in found.values():
            operator = pinned[(chart.inputs["chart"], chart.inputs["version"])]
            operators.add(operator.key)
            assert chart.inputs["namespace"] == addons.namespace_of(operator.key, s.addons)
        # The operators whose kinds this region renders are all installed there.
        kinds = {(r.inputs["apiVersion"].rpartition("/")[0]) for r in plan.kubernetes_objects(region)}
        needed = {o.key for g in kinds for o in [versions.operator_for_group(g)] if o is not None and o.installed}
        assert needed <= operators, needed - operators


def test_operators_run_highly_available_in_prod_and_single_in_dev(rendered):
    def replicas(plan) -> dict[str, Any]:
        values = {name: r.inputs["values"] for name, r in charts(plan, "lagos").items()}
        return {
            "cert-manager": values["cert-manager"]["replicaCount"],
            "cert-manager webhook": values["cert-manager"]["webhook"]["replicaCount"],
            "cloudnative-pg": values["cloudnative-pg"]["replicaCount"],
            "keda operator": values["keda"]["operator"]["replicaCount"],
            "keda metrics": values["keda"]["metricsServer"]["replicaCount"],
            "envoy-gateway": values["envoy-gateway"]["deployment"]["replicas"],
            "prometheus": values["kube-prometheus-stack"]["prometheus"]["prometheusSpec"]["replicas"],
        }

    prod, dev = settings.load({}, stack="prod"), settings.load({}, stack="dev")
    assert prod.addons.replicas >= 2 and dev.addons.replicas == 1
    assert set(replicas(rendered("prod").plan).values()) == {prod.addons.replicas}
    assert set(replicas(render("dev", regions=KIND_DEV)).values()) == {dev.addons.replicas}
    prod_values = charts(rendered("prod").plan, "lagos")["keda"].inputs["values"]
    assert prod_values["podDisruptionBudget"]["operator"] == {"maxUnavailable": 1}
    assert prod_values["resources"]["operator"]["requests"]["memory"] == prod.addons.operator_memory


def test_a_region_that_renders_yaml_installs_nothing(rendered):
    """dev renders YAML (no context): Helm cannot template the charts without a cluster,
    so the rendered directory holds the platform's own objects; with a context it installs."""
    plan = rendered("dev").plan
    assert not [r for r in plan.resources if r.type == CHART]
    assert plan.outputs["regions"]["lagos"]["addons"] == "rendered"
    with pytest.raises(settings.ConfigError, match=r"regions\[0\]\.addons: 'install' needs a cluster"):
        settings.load({"regions": [{"name": "lagos", "role": "primary", "addons": "install"}]}, stack="dev")
    kind = render("dev", regions=KIND_DEV)
    assert {r.inputs["chart"] for r in kind.resources if r.type == CHART} >= {"cert-manager", "keda", "cloudnative-pg"}


def cluster_issuer(plan, region: str = "lagos") -> dict:
    (issuer,) = [r.inputs for r in plan.kubernetes_objects(region) if r.inputs["kind"] == "ClusterIssuer"]
    return issuer


def test_the_certificate_names_the_cluster_issuer_with_a_dns01_solver(rendered):
    plan = rendered("prod").plan
    issuer = cluster_issuer(plan)
    # Certificates from a ClusterIssuer (the gateway's; the internal ones come from namespace Issuers).
    certificates = [r.inputs for r in plan.kubernetes_objects("lagos") if r.inputs["kind"] == "Certificate"
                    and r.inputs["spec"]["issuerRef"].get("kind") == "ClusterIssuer"]
    assert certificates
    assert {c["spec"]["issuerRef"]["name"] for c in certificates} == {issuer["metadata"]["name"]}
    assert settings.load({}, stack="prod").gateway.cluster_issuer == issuer["metadata"]["name"]
    (solver,) = issuer["spec"]["acme"]["solvers"]
    assert solver["dns01"]["route53"]["region"] == settings.load({}, stack="prod").dns.route53.region


def test_cloudflare_provider_changes_issuer_and_k8gb_together():
    dns = {"provider": "cloudflare", "cloudflare": {"apiTokenSecret": "cf-token", "apiTokenKey": "token"},
           "parentZone": "example.org", "gslbZone": "gslb.example.org"}
    plan = render("prod", dns=dns, gateway={"hostname": "api.example.org"})
    (solver,) = cluster_issuer(plan)["spec"]["acme"]["solvers"]
    assert solver["dns01"] == {"cloudflare": {"apiTokenSecretRef": {"name": "cf-token", "key": "token"}}}
    k8gb = charts(plan, "london")["k8gb"].inputs["values"]
    assert k8gb["extdns"]["provider"] == {"name": "cloudflare"}
    (env,) = k8gb["extdns"]["env"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "cf-token", "key": "token"}
    assert k8gb["k8gb"]["dnsZones"] == [{"parentZone": "example.org", "loadBalancedZone": "gslb.example.org"}]
    assert k8gb["k8gb"]["clusterGeoTag"] == "london" and k8gb["k8gb"]["extGslbClustersGeoTags"] == "lagos"
    assert "gslb.example.org" in json.dumps(plan.outputs)


def test_an_external_region_installs_nothing_and_its_resources_wait_for_no_chart():
    regions = [
        {"name": "lagos", "role": "primary", "context": "tikit-prod-lagos", "objectStorage": {"endpoint": "https://s3.af-south-1.amazonaws.com"}},
        {"name": "london", "role": "backup", "context": "platform-london", "addons": "external", "objectStorage": {"endpoint": "https://s3.eu-west-2.amazonaws.com"}},
    ]
    plan = render("prod", regions=regions)
    assert charts(plan, "lagos") and not charts(plan, "london")
    london = [r for r in plan.resources if r.region == "london"]
    assert not [r for r in london if r.type == "tikit:platform:Addons"]
    s = settings.load({}, stack="prod")
    operator_namespaces = {addons.namespace_of(o.key, s.addons) for o in versions.OPERATORS if o.installed}
    assert not [r for r in plan.kubernetes_objects("london")
                if r.inputs["kind"] == "Namespace" and r.inputs["metadata"]["name"] in operator_namespaces]
    chart_urns = {r.urn for r in plan.resources if r.type == CHART}
    assert not [r.urn for r in london if set(r.dependencies) & chart_urns]
    assert plan.outputs["regions"]["london"]["addons"] == "external"


def test_every_custom_resource_waits_for_the_chart_serving_its_kind(rendered):
    plan = rendered("prod").plan
    by_urn = {r.urn: r for r in plan.resources}

    def closure(r) -> set[str]:
        seen, todo = set(), list(r.dependencies)
        while todo:
            u = todo.pop()
            if u not in seen:
                seen.add(u)
                todo += list(by_urn[u].dependencies) if u in by_urn else []
        return seen

    checked = 0
    for r in plan.kubernetes_objects():
        operator = versions.operator_for_group(r.inputs["apiVersion"].rpartition("/")[0])
        if operator is None or not operator.installed:
            continue
        serving = {c.urn for c in plan.resources if c.type == CHART and c.region == r.region
                   and any(c.inputs["chart"] == ch.name for ch in operator.charts)}
        assert serving & closure(r), f"{r.urn} does not wait for {operator.key}"
        checked += 1
    assert checked >= 20


def test_outputs_name_gateway_address_hostnames_and_versions(rendered):
    outputs = rendered("prod").plan.outputs["regions"]
    s = settings.load({}, stack="prod")
    for region, out in outputs.items():
        assert out["hostnames"][0] == f"api.{s.dns.parent_zone}"
        assert out["hostnames"][1] == f"api.{s.dns.gslb_zone}"
        assert "gatewayAddress" in out
        assert out["addons"]["cloudnative-pg"] == "1.30.0" and out["addons"]["keda"] == "2.20.2"
        assert out["addons"]["prometheus-operator"] == "0.93.0" and out["addons"]["k8gb"] == "0.20.0"


def test_architecture_doc_lists_every_chart_at_its_pinned_release():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    section = doc[doc.index("## Platform add-ons") :]
    for operator in versions.OPERATORS:
        if not operator.installed:
            continue
        assert f"{operator.version}" in section, operator.key
        for chart in operator.charts:
            assert f"`{chart.name.rsplit('/', 1)[-1]}` {chart.version}" in section, chart.name
