"""Invariants of every rendered ScaledObject (whoever declares it): one autoscaler per
workload, KEDA's name limit, string metadata, explicit minimum, schema-valid."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from tikit import names
from tikit import settings
from tikit.components import autoscaling
from conftest import REPO, objects
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


# The HPA controller's sync period: the wait docs/autoscaling.md adds to the settings' own.
HPA_SYNC_SECONDS = 15


def test_peak_floor_arrival_in_the_docs_matches_the_settings():
    """The cron floor is evaluated on the HPA's next sync (no KEDA polling between 1 and N,
    no scale-up window); the doc's arithmetic is the prod settings' and the named
    constants' (a changed window or startup budget must change the doc)."""
    import re

    from tikit import settings
    from tikit.components import autoscaling, backend
    from conftest import REPO

    text = (REPO / "docs" / "autoscaling.md").read_text()
    b = settings.load({}, stack="prod").backend
    minute, hour = (int(f) for f in b.peak_start.split()[:2])
    assert autoscaling.SCALE_UP_WINDOW_SECONDS == 0
    startup = backend.STARTUP.period * backend.STARTUP.failures
    worst = HPA_SYNC_SECONDS + startup

    def clock(seconds_after_start: int) -> str:
        total = hour * 3600 + minute * 60 + seconds_after_start
        return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"

    assert f"(`backend.peakStart`, `{b.peak_start}`)" in text
    assert f"{backend.STARTUP.period} x {backend.STARTUP.failures} = {startup} s" in text
    assert f"worst case = {HPA_SYNC_SECONDS} s + {startup} s = {worst} s   -> ready by {clock(worst)}" in text
    # The lead-time example: ready before the notes' 18:00 even in the worst case.
    example = re.search(r'`backend\.peakStart: "(\d+) (\d+) \* \* \*"`: the floor is then\s+ready by (\S+) at the latest', text)
    assert example, "docs/autoscaling.md shows no earlier peakStart"
    early = int(example.group(2)) * 3600 + int(example.group(1)) * 60 + worst
    assert example.group(3) == f"{early // 3600:02d}:{early % 3600 // 60:02d}:{early % 60:02d}"
    assert early <= hour * 3600 + minute * 60


def test_the_readme_configuration_example_is_a_valid_prod_stack():
    """The README's Pulumi.prod.yaml example loads, keeps the prod preset's cost cap on API
    replicas, and passes every mandatory policy (the earlier peakStart included)."""
    import json
    import re

    import yaml

    from tikit import settings
    from conftest import REPO
    from preview import engine, plan as plan_mod, policies

    text = (REPO / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "# Pulumi.prod.yaml" in b]
    config = yaml.safe_load(block)["config"]
    cfg = settings.load({k.split(":", 1)[1]: v for k, v in config.items()}, stack="prod")
    assert cfg.backend.max_replicas <= settings.load({}, stack="prod").backend.max_replicas
    assert cfg.backend.peak_start == "45 17 * * *"
    project, _, _ = engine.load_stack_config("prod")
    override = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    result = policies.evaluate(plan_mod.build(engine.run_program("prod", config_override=override)), None)
    assert result.mandatory == [], [f.message for f in result.mandatory]
    assert all(k.startswith(f"{project}:") for k in config)


def test_a_prometheus_trigger_falls_back_instead_of_freezing_scaling(plan, stack):
    """KEDA's fallback on every ScaledObject that reads Prometheus: after
    FALLBACK_FAILURE_THRESHOLD failed reads the trigger reports the peak floor (never less
    than what runs); the cpu/memory triggers keep working meanwhile."""
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text()) or {}
    cfg = settings.load({k.split(":", 1)[1]: v for k, v in (doc.get("config") or {}).items()}, stack=stack)
    for region in plan.regions:
        for so in objects(plan, "ScaledObject", region):
            spec = so["spec"]
            # The workers keep scaling on their queue (Redis) while Prometheus is down: the
            # HPA acts on the metrics it can read, so only the API needs the fallback.
            if so["metadata"]["name"] != names.BACKEND:
                assert "fallback" not in spec, so["metadata"]["name"]
                assert any(t["type"] != "prometheus" for t in spec["triggers"])
                continue
            b = cfg.backend
            assert spec["fallback"] == {
                "failureThreshold": autoscaling.FALLBACK_FAILURE_THRESHOLD,
                "replicas": max(b.min_replicas, b.peak_min_replicas),
                "behavior": "currentReplicasIfHigher",
            }
            assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
            # The triggers that fall back are AverageValue ones (KEDA's condition for it).
            prom = [t for t in spec["triggers"] if t["type"] == "prometheus"]
            assert prom and {t["metricType"] for t in prom} == {"AverageValue"}
    if stack == "prod":
        assert objects(plan, "ScaledObject", "lagos")[0]["spec"]["fallback"]["replicas"] == 5


def test_a_fallback_needs_a_trigger_that_can_fall_back():
    with pytest.raises(ValueError, match="a fallback needs a trigger other than cpu/memory"):
        autoscaling.scaled_object_spec(
            workload="x", min_replicas=1, max_replicas=2, hpa_behavior={},
            triggers=[{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}],
            fallback_spec=autoscaling.fallback(2),
        )
