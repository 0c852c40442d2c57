"""Nodes: every pod can land in a Karpenter NodePool, the pools' limits hold everything
that can land there at maximum scale, spot capacity only for interruptible workloads, and
prod's simulated scale-out stays within the notes' 2 minutes (docs/autoscaling.md,
"Capacity model")."""

from __future__ import annotations

import dataclasses
import functools

from . import placement
from . import simulation as sim
from .base import Report, integer, schema, stack_policy, strings
from .model import Stack
from .parse import fmt

AREA = "nodes"
ENVIRONMENTS = ["dev", "staging", "prod"]


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:,.1f}Gi"


def _cores(millis: float) -> str:
    return fmt(round(millis / 1000, 2))


# ---- every pod can land somewhere ------------------------------------------------------------


def _schedulable(stack: Stack, _cfg: dict, report: Report) -> None:
    for region in stack.regions:
        pools = placement.node_pools(stack, region)
        shapes = [s for s in placement.pod_shapes(stack, region) if s.count > 0]
        if not pools:
            if shapes:
                report(f"{region}: {len(shapes)} pod template(s) but no NodePool to run them on", shapes[0].obj)
            continue
        for s in shapes:
            reasons = []
            for p in pools:
                why = placement.blocked_by(s, p) or placement.too_big(s, p)
                if why is None:
                    break
                reasons.append(f"{p.name}: {why}")
            else:
                report(f"{s.ref}: can land in no NodePool ({'; '.join(reasons)})", s.obj)


pod_schedulable = stack_policy(
    name="pod-schedulable",
    description="Every pod template can land in one of its region's Karpenter NodePools: it tolerates the pool's taints, its node selectors and required node affinity match the pool's nodes, and it fits the pool's smallest node beside the per-node overhead.",
    check=_schedulable,
    remediation="Give the pod the dedicated toleration and its tier's PriorityClass (kube.pool_placement), or adjust the pool's requirements (nodes.*).",
    area=AREA,
)


# ---- pool limits cover what can land there -----------------------------------------------------


def _limits(stack: Stack, _cfg: dict, report: Report) -> None:
    for region in stack.regions:
        shapes = placement.pod_shapes(stack, region)
        for pool in placement.node_pools(stack, region):
            lim_cpu, lim_mem = pool.limits
            members = placement.tenants(shapes, pool)
            if not members:
                continue
            if lim_cpu is None or lim_mem is None:
                report(f"NodePool/{pool.name} in {region}: sets no cpu and memory limits; nothing caps what it launches", pool.obj)
                continue
            n = placement.need(pool, members)
            oh_cpu, oh_mem = pool.overhead
            terms = ", ".join(f"{fmt(s.count)} x {s.ref}" for s in members)
            if n.cpu_millis > lim_cpu:
                report(
                    f"NodePool/{pool.name} in {region}: limits.cpu {_cores(lim_cpu)} < {_cores(n.pods_cpu)} requested at maximum "
                    f"({terms}) + {fmt(n.nodes)} nodes x {_cores(oh_cpu)} per-node overhead = {_cores(n.cpu_millis)}; "
                    "raise the limit (tikit/derived.py sizes it) or lower the maxima",
                    pool.obj,
                )
            if n.memory_bytes > lim_mem:
                report(
                    f"NodePool/{pool.name} in {region}: limits.memory {_gib(lim_mem)} < {_gib(n.pods_memory)} requested at maximum "
                    f"({terms}) + {fmt(n.nodes)} nodes x {_gib(oh_mem)} per-node overhead = {_gib(n.memory_bytes)}; "
                    "raise the limit (tikit/derived.py sizes it) or lower the maxima",
                    pool.obj,
                )


pool_limits = stack_policy(
    name="pool-limits",
    description="Each NodePool's cpu and memory limits hold every pod that can land there at its maximum replicas, plus the per-node overhead of the smallest nodes that hold them.",
    check=_limits,
    remediation="Keep the limits at tikit/derived.py's figures (size_pool), which count every tenant of the pool.",
    area=AREA,
)


# ---- spot capacity only for interruptible workloads --------------------------------------------


def _spot(stack: Stack, _cfg: dict, report: Report) -> None:
    for region in stack.regions:
        shapes = placement.pod_shapes(stack, region)
        for pool in placement.node_pools(stack, region):
            if not pool.spot:
                continue
            for s in shapes:
                if s.count <= 0 or placement.blocked_by(s, pool) is not None:
                    continue
                problems = []
                if not s.interruptible:
                    problems.append(f"does not declare {placement.ann.INTERRUPTIBLE}: \"true\"")
                if s.stateful:
                    problems.append("keeps state on volumes")
                if s.annotations.get("karpenter.sh/do-not-disrupt") == "true":
                    problems.append("asks not to be disrupted (karpenter.sh/do-not-disrupt)")
                if s.grace_seconds is not None and s.grace_seconds > placement.SPOT_NOTICE_SECONDS:
                    problems.append(f"needs {s.grace_seconds} s to stop, more than spot's {placement.SPOT_NOTICE_SECONDS} s notice")
                if problems:
                    report(
                        f"{s.ref} can land in the spot pool NodePool/{pool.name} but {'; '.join(problems)}; keep it "
                        "off spot (no spot toleration) or make it interruptible",
                        s.obj,
                    )


spot_interruptible = stack_policy(
    name="spot-interruptible",
    description="Only workloads that tolerate interruption can land on spot capacity: declared interruptible, no volumes, no do-not-disrupt, a grace period within spot's 2-minute notice.",
    check=_spot,
    remediation="Tolerate the spot taint only in interruptible workloads (the workers), and keep the spot pool's taint NoSchedule.",
    area=AREA,
)


# ---- the simulated scale-out ---------------------------------------------------------------------


def worst_case(m: sim.Model, profile: sim.Profile, headroom: bool = True) -> tuple[sim.Run, tuple[sim.Step, ...]]:
    """sim.worst_case, remembered: the policy and plan.md ask for the same runs, and regions
    whose serving tiers are alike share them (the replay never reads the region's name)."""
    return _worst_case(dataclasses.replace(m, region=""), profile, headroom)


@functools.lru_cache(maxsize=32)
def _worst_case(m: sim.Model, profile: sim.Profile, headroom: bool) -> tuple[sim.Run, tuple[sim.Step, ...]]:
    run, steps = sim.worst_case(m, profile, headroom=headroom)
    return run, tuple(steps)


def scenarios(m: sim.Model, names: list[str]) -> list[sim.Profile]:
    out = []
    if "profile" in names:
        p = placement.profile_for(m)
        if p is not None:
            out.append(p)
    if "peak" in names:
        p = sim.peak_profile(m)
        if p is not None:
            out.append(p)
    return out


def _scale_out(stack: Stack, cfg: dict, report: Report) -> None:
    if stack.environment not in cfg["environments"]:
        return
    for region in stack.regions:
        m = placement.capacity_model(stack, region)
        if m is None:
            continue
        obj = placement.serving_workload(stack, region)
        for profile in scenarios(m, cfg["scenarios"]):
            _, steps = worst_case(m, profile, True)
            for st in steps:
                if st.time_to_capacity is None or st.time_to_capacity > cfg["maxSeconds"]:
                    took = "never reaches it" if st.time_to_capacity is None else f"takes {st.time_to_capacity} s"
                    report(
                        f"{region}: {profile.name} step {st.label}: capacity for {fmt(st.goal_rpm)} requests/min "
                        f"({st.goal_replicas} ready replicas of {m.workload}) {took}, more than {cfg['maxSeconds']} s "
                        f"(worst case over the HPA sync and scrape phases; {fmt(round(st.requests_above))} requests above "
                        "capacity); raise nodes.bufferPods (warm headroom) or find what is slow in "
                        "`python -m preview capacity`",
                        obj.obj if obj else None,
                    )


scale_out_time = stack_policy(
    name="scale-out-time",
    description="The capacity model's worst-case time to capacity, for every step of the load profile and the peak floor, stays within the notes' auto-scale time of 2 minutes.",
    check=_scale_out,
    remediation="Keep enough warm headroom (nodes.bufferPods) for the largest step, or shorten what the model shows is slow.",
    area=AREA,
    config=schema(
        environments=strings(["prod"], "Environments (tikit.app/environment) the policy applies to.", enum=ENVIRONMENTS),
        maxSeconds=integer(120, "Longest time to capacity allowed for a step, in seconds.", minimum=1),
        scenarios=strings(["profile", "peak"], "What to replay: the load profile, the peak floor's step.", enum=["profile", "peak"]),
    ),
)


POLICIES = [pod_schedulable, pool_limits, spot_interruptible, scale_out_time]
