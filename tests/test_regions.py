"""tikit/regions.py: what every region's objects wait for.

Pulumi records depends_on per resource and does not hand a component's list down to its
children, so the region's Namespace reaches each object through kube.Target.requires.
The engine records (preview.engine) carry the dependencies each resource registered with."""

from __future__ import annotations

import pytest

from preview import engine, plan as plan_mod

NAMESPACE_TYPE = "kubernetes:core/v1:Namespace"


@pytest.fixture(scope="module")
def registered(stack):
    """(records, urn -> region) of one run of the program."""
    run = engine.run_program(stack)
    regions = {r.urn: r.region for r in plan_mod.build(run).resources}
    return run.records, regions


def test_every_namespaced_object_depends_on_its_regions_namespace(registered, stack):
    """Every object in a namespace waits for that namespace: Tikit's own (through
    Target.requires) or an operator's (the add-ons tier creates it first)."""
    records, regions = registered
    namespaces = {
        (regions[r.urn], r.inputs["metadata"]["name"]): r.urn for r in records if r.type == NAMESPACE_TYPE
    }
    assert namespaces and all(region for region, _ in namespaces)
    checked = 0
    for r in records:
        if not r.custom or not r.type.startswith("kubernetes:") or r.type == NAMESPACE_TYPE:
            continue
        ns = (r.inputs.get("metadata") or {}).get("namespace")
        if not ns:
            continue
        assert namespaces[(regions[r.urn], ns)] in r.dependencies, f"{stack}: {r.urn} does not wait for namespace {ns}"
        checked += 1
    assert checked >= 20 * len({region for region, _ in namespaces})


def test_charts_wait_for_their_namespace(registered):
    records, regions = registered
    namespaces = {
        (regions[r.urn], r.inputs["metadata"]["name"]): r.urn for r in records if r.type == NAMESPACE_TYPE
    }
    charts = [r for r in records if r.type == "kubernetes:helm.sh/v4:Chart"]
    # A stack whose regions render YAML (dev) installs no chart; the others install them.
    assert bool(charts) == any(not p.inputs.get("renderYamlToDirectory") for p in records if p.type == "pulumi:providers:kubernetes")
    for chart in charts:
        assert namespaces[(regions[chart.urn], chart.inputs["namespace"])] in chart.dependencies


def test_explicit_dependencies_are_kept_next_to_the_namespace(registered):
    """Target.opts merges a caller's depends_on with the namespace: the API Deployment still
    waits for its ConfigMap."""
    records, _ = registered
    by_name = {r.name: r for r in records}
    deployments = [r for r in records if r.type == "kubernetes:apps/v1:Deployment" and r.name.startswith("api-")]
    assert deployments
    for dep in deployments:
        region = dep.name.removeprefix("api-")
        assert by_name[f"api-config-{region}"].urn in dep.dependencies
        assert by_name[f"namespace-{region}"].urn in dep.dependencies
