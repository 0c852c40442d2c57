"""Helpers for the policy tests: copy a real rendered plan, mutate or add objects, and run
the pack over it."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Optional

from preview import policies
from preview.plan import Plan, Resource
from preview.report import Finding, PolicyResult

# --------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------


def kube_type(obj: dict) -> str:
    api = obj["apiVersion"]
    return f"kubernetes:{api if '/' in api else 'core/' + api}:{obj['kind']}"


def find(plan: Plan, kind: str, name: Optional[str] = None, region: Optional[str] = None) -> list[Resource]:
    return [
        r
        for r in plan.kubernetes_objects(region)
        if r.inputs.get("kind") == kind and (name is None or r.inputs.get("metadata", {}).get("name") == name)
    ]


def one(plan: Plan, kind: str, name: str, region: str) -> dict:
    found = find(plan, kind, name, region)
    assert len(found) == 1, f"expected one {kind}/{name} in {region}, found {len(found)}"
    return found[0].inputs


def edit(plan: Plan, kind: str, name: str, region: str, fn: Callable[[dict], Any]) -> Plan:
    """A copy of ``plan`` where ``fn`` has mutated (a deep copy of) one object's inputs."""
    target = find(plan, kind, name, region)
    assert len(target) == 1, f"expected one {kind}/{name} in {region}, found {len(target)}"
    urn = target[0].urn
    resources = []
    for r in plan.resources:
        if r.urn == urn:
            inputs = copy.deepcopy(r.inputs)
            fn(inputs)
            r = dataclasses.replace(r, inputs=inputs)
        resources.append(r)
    return dataclasses.replace(plan, resources=tuple(resources))


def replace(plan: Plan, match: Callable[[Resource], bool], fn: Callable[[Resource], Resource]) -> Plan:
    """A copy of ``plan`` where ``fn`` has replaced every resource ``match`` selects (any
    resource type: a Helm Chart component, a dependency list)."""
    hits = [r for r in plan.resources if match(r)]
    assert hits, "no resource matched"
    return dataclasses.replace(plan, resources=tuple(fn(r) if match(r) else r for r in plan.resources))


def remove(plan: Plan, kind: str, name: str, region: str) -> Plan:
    urns = {r.urn for r in find(plan, kind, name, region)}
    assert urns, f"no {kind}/{name} in {region}"
    return dataclasses.replace(plan, resources=tuple(r for r in plan.resources if r.urn not in urns))


def add(plan: Plan, region: str, *objs: dict) -> Plan:
    """Add Kubernetes objects under a region, as a component of that region would."""
    parent = next(r.urn for r in plan.resources if r.type == "tikit:platform:Region" and r.name == region)
    extra = []
    for obj in objs:
        type_ = kube_type(obj)
        name = f"{obj['metadata']['name']}-{obj['kind'].lower()}-{region}"
        extra.append(
            Resource(
                urn=f"urn:pulumi:{plan.stack}::{plan.project}::tikit:platform:Region$tikit:test:Tier${type_}::{name}",
                type=type_,
                name=name,
                parent=parent,
                region=region,
                custom=True,
                inputs=copy.deepcopy(obj),
            )
        )
    return dataclasses.replace(plan, resources=tuple(sorted((*plan.resources, *extra), key=lambda r: r.urn)))


def run(plan: Plan, config: Optional[dict] = None) -> PolicyResult:
    return policies.evaluate_config(plan, config or {})


def of(result: PolicyResult, policy: str) -> list[Finding]:
    return [f for f in result.findings if f.policy == policy]


def config_map_with(plan: Plan, region: str, suffix: str) -> str:
    """Name of the ConfigMap in ``region`` holding a key ending in ``suffix`` (e.g. redis.conf)."""
    found = sorted(
        r.inputs["metadata"]["name"]
        for r in find(plan, "ConfigMap", region=region)
        if any(k.endswith(suffix) for k in (r.inputs.get("data") or {}))
    )
    assert found, f"no ConfigMap with a {suffix} in {region}"
    return found[0]


def pgbouncer_config_map(plan: Plan, region: str) -> str:
    found = sorted(
        r.inputs["metadata"]["name"]
        for r in find(plan, "ConfigMap", region=region)
        if any(isinstance(v, str) and "[pgbouncer]" in v for v in (r.inputs.get("data") or {}).values())
    )
    assert found, f"no pgbouncer.ini ConfigMap in {region}"
    return found[0]
