"""Invariants of every rendered ScaledObject (whoever declares it): one autoscaler per
workload, KEDA's name limit, string metadata, explicit minimum, schema-valid."""

from __future__ import annotations

from collections import Counter

from conftest import objects
from preview.validate import validate


def _target(obj: dict) -> tuple[str, str]:
    ref = obj["spec"]["scaleTargetRef"]
    return ref.get("kind", "Deployment"), ref["name"]


def test_every_stack_has_scaled_objects(plan):
    for region in plan.regions:
        assert len(objects(plan, "ScaledObject", region)) >= 2


def test_no_workload_has_both_an_hpa_and_a_scaled_object(plan):
    for region in plan.regions:
        scaled = [_target(o) for o in objects(plan, "ScaledObject", region)]
        hpas = [_target(o) for o in objects(plan, "HorizontalPodAutoscaler", region)]
        assert not set(scaled) & set(hpas)
        # ... and no workload has two ScaledObjects (two HPAs fighting over one Deployment).
        assert [t for t, n in Counter(scaled).items() if n > 1] == []
        assert [t for t, n in Counter(hpas).items() if n > 1] == []
        # The HPA KEDA creates must not collide with a declared one either.
        owned = {o["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] for o in objects(plan, "ScaledObject", region)}
        assert not owned & {o["metadata"]["name"] for o in objects(plan, "HorizontalPodAutoscaler", region)}


def test_scaled_objects_target_rendered_deployments(plan):
    for region in plan.regions:
        deployments = {("Deployment", o["metadata"]["name"]) for o in objects(plan, "Deployment", region)}
        for so in objects(plan, "ScaledObject", region):
            assert _target(so) in deployments


def test_scaled_object_names_fit_kedas_limit(plan):
    for so in objects(plan, "ScaledObject"):
        assert len(so["metadata"]["name"]) <= 54, so["metadata"]["name"]


def test_every_trigger_metadata_value_is_a_string(plan):
    for so in objects(plan, "ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            assert trigger["metadata"], trigger["type"]
            bad = {k: v for k, v in trigger["metadata"].items() if not isinstance(v, str)}
            assert bad == {}, f"{so['metadata']['name']}/{trigger['type']}"


def test_min_replica_count_is_always_explicit(plan):
    for so in objects(plan, "ScaledObject"):
        spec = so["spec"]
        assert isinstance(spec.get("minReplicaCount"), int), "KEDA's default minimum is 0"
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]


def test_cpu_and_memory_triggers_have_requests_to_measure(plan):
    """KEDA rejects cpu/memory triggers on containers without resource requests."""
    for region in plan.regions:
        deployments = {o["metadata"]["name"]: o for o in objects(plan, "Deployment", region)}
        for so in objects(plan, "ScaledObject", region):
            kinds = {t["type"] for t in so["spec"]["triggers"]} & {"cpu", "memory"}
            for c in deployments[so["spec"]["scaleTargetRef"]["name"]]["spec"]["template"]["spec"]["containers"]:
                assert kinds <= set(c["resources"]["requests"])


def test_every_scaled_object_and_deployment_validates(plan):
    for kind in ("ScaledObject", "TriggerAuthentication", "Deployment"):
        for obj in objects(plan, kind):
            assert validate(obj) == [], f"{kind}/{obj['metadata']['name']}"
