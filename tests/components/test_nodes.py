"""Nodes on the rendered manifests of every stack: the NodePools and their node class, the
PriorityClasses, the warm headroom, and how the other tiers' pods are placed."""

from __future__ import annotations

import math

import pytest

from tikit import cron, derived, kube, names, settings, units
from tikit.components import nodes
from conftest import named, objects, regional
from preview.validate import validate


def cfg(stack: str) -> settings.Settings:
    return settings.load({}, stack=stack)


def test_every_region_has_both_pools_and_its_node_class(plan, stack):
    s = cfg(stack)
    for region in plan.regions:
        pools = {o["metadata"]["name"]: o for o in objects(plan, "NodePool", region)}
        assert set(pools) == {f"{s.namespace}-on-demand", f"{s.namespace}-spot"}
        (nc,) = objects(plan, "EC2NodeClass", region)
        assert nc["metadata"]["name"] == s.namespace and "namespace" not in nc["metadata"]
        cluster = s.cluster_name(region)
        assert nc["spec"]["role"] == f"KarpenterNodeRole-{cluster}"
        assert nc["spec"]["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": cluster}}]
        assert nc["spec"]["metadataOptions"]["httpPutResponseHopLimit"] == 1
        for pool in pools.values():
            assert pool["spec"]["template"]["spec"]["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": s.namespace}


def test_pool_limits_are_the_derived_ones(plan, stack):
    s = cfg(stack)
    for region in plan.regions:
        for name, pool in s.derived.pools[region].items():
            np = named(plan, "NodePool", f"{s.namespace}-{name}", region)
            assert np["spec"]["limits"] == {"cpu": str(pool.limit_cpu), "memory": f"{pool.limit_memory_gib}Gi"}
            # ... and they hold every tenant at its maximum plus the overhead plus the headroom.
            grow = 1 + s.nodes.headroom_percent / 100
            assert pool.limit_cpu * 1000 >= (pool.cpu_millis + pool.nodes * pool.overhead_cpu_millis) * grow
            assert pool.limit_memory_gib * units.GIB >= (pool.memory_bytes + pool.nodes * pool.overhead_memory_bytes) * grow


def test_nodes_hold_the_largest_pod_beside_the_overhead(plan, stack):
    s = cfg(stack)
    for region in plan.regions:
        for name, pool in s.derived.pools[region].items():
            largest = max(pool.tenants, key=lambda t: t.memory_bytes)
            alloc_cpu, alloc_mem = derived.node_allocatable(pool.node_cpu, pool.node_memory_mib, pool.overhead_cpu_millis, pool.overhead_memory_bytes)
            assert alloc_cpu >= max(t.cpu_millis for t in pool.tenants) and alloc_mem >= largest.memory_bytes
            reqs = named(plan, "NodePool", f"{s.namespace}-{name}", region)["spec"]["template"]["spec"]["requirements"]
            by = {(r["key"], r["operator"]): r["values"] for r in reqs}
            assert by[("karpenter.k8s.aws/instance-cpu", "Gt")] == [str(pool.node_cpu - 1)]
            assert by[("karpenter.k8s.aws/instance-memory", "Gt")] == [str(pool.node_memory_mib - 1)]
            assert by[("karpenter.k8s.aws/instance-cpu", "Lt")] == [str(s.nodes.max_instance_cpu + 1)]
            assert by[("karpenter.sh/capacity-type", "In")] == ["spot" if name == "spot" else "on-demand"]


def test_prod_on_demand_holds_postgres_and_its_sidecar():
    pool = cfg("prod").derived.pools["lagos"]["on-demand"]
    pg = next(t for t in pool.tenants if t.workload == "postgres")
    assert (pg.cpu_millis, pg.memory_bytes) == (2250, 8 * units.GIB + 256 * units.MIB)
    assert pool.node_memory_mib * units.MIB * 0.925 >= pg.memory_bytes + pool.overhead_memory_bytes


def test_the_spot_pool_carries_exactly_the_workers_taint_and_label(plan, stack):
    s = cfg(stack)
    w = s.workers
    for region in plan.regions:
        spot = named(plan, "NodePool", f"{s.namespace}-spot", region)["spec"]["template"]
        assert {"key": w.spot_taint_key, "value": w.spot_taint_value, "effect": w.spot_taint_effect} in spot["spec"]["taints"]
        # The label is Karpenter's own capacity-type label, set from the requirement.
        assert w.spot_node_label_key == nodes.CAPACITY_TYPE_KEY and w.spot_node_label_value == "spot"
        assert {"key": w.spot_node_label_key, "operator": "In", "values": ["spot"]} in spot["spec"]["requirements"]


def test_a_custom_spot_label_goes_on_the_template():
    from preview import engine, plan as plan_mod

    project, config, _ = engine.load_stack_config("dev")
    config = {**config, f"{project}:workers": '{"spotNodeLabelKey": "node.tikit.app/lifecycle", "spotNodeLabelValue": "spot"}'}
    rendered = plan_mod.build(engine.run_program("dev", config_override=config))
    spot = named(rendered, "NodePool", "tikit-spot", "lagos")["spec"]["template"]
    assert spot["metadata"]["labels"] == {"node.tikit.app/lifecycle": "spot"}


def test_both_pools_are_dedicated_to_the_namespace(plan, stack):
    s = cfg(stack)
    for region in plan.regions:
        for pool in objects(plan, "NodePool", region):
            assert {"key": kube.DEDICATED_TAINT_KEY, "value": s.namespace, "effect": "NoSchedule"} in pool["spec"]["template"]["spec"]["taints"]


def test_prod_holds_disruption_off_during_the_peak(plan, stack):
    s = cfg(stack)
    for region in plan.regions:
        for pool in objects(plan, "NodePool", region):
            budgets = pool["spec"]["disruption"]["budgets"]
            if stack == "prod":
                schedule, duration = cron.utc_window(s.backend.peak_start, s.backend.peak_end, settings.PEAK_TIMEZONE)
                assert (schedule, duration) == ("0 17 * * *", "6h")  # 18:00-24:00 Lagos, UTC+1
                assert budgets[0] == {"nodes": "0", "schedule": schedule, "duration": duration}
            else:
                assert budgets == [{"nodes": nodes.BUDGET_NODES}]
            assert pool["spec"]["template"]["spec"]["expireAfter"] == s.nodes.expire_after


def test_priority_classes_order_the_tiers(plan):
    for region in plan.regions:
        values = {o["metadata"]["name"].rsplit("-", 1)[-1]: o for o in objects(plan, "PriorityClass", region)}
        assert values["data"]["value"] > values["api"]["value"] > values["workers"]["value"] > values["buffer"]["value"]
        assert values["buffer"]["value"] < 0 and values["buffer"]["preemptionPolicy"] == "Never"
        assert not any(o.get("globalDefault") for o in values.values())


@pytest.mark.parametrize("kind, name, tier", [
    ("Deployment", names.BACKEND, names.PRIORITY_API),
    ("Deployment", names.PGBOUNCER_RW, names.PRIORITY_DATA),
    ("StatefulSet", names.REDIS, names.PRIORITY_DATA),
])
def test_pods_name_their_tier_and_tolerate_the_pools(plan, kind, name, tier):
    for region, obj in regional(plan, kind, name):
        spec = obj["spec"]["template"]["spec"]
        ns = obj["metadata"]["namespace"]
        assert spec["priorityClassName"] == f"{ns}-{tier}"
        assert {"key": kube.DEDICATED_TAINT_KEY, "operator": "Equal", "value": ns, "effect": "NoSchedule"} in spec["tolerations"]


def test_stateful_pods_ask_not_to_be_disrupted(plan):
    for region in plan.regions:
        redis = named(plan, "StatefulSet", names.REDIS, region)
        assert redis["spec"]["template"]["metadata"]["annotations"][kube.DO_NOT_DISRUPT] == "true"
        pg = named(plan, "Cluster", names.pg_cluster(region), region)
        assert pg["spec"]["inheritedMetadata"]["annotations"] == {kube.DO_NOT_DISRUPT: "true"}
        assert pg["spec"]["priorityClassName"].endswith("-data")


def test_the_warm_headroom_per_environment(plan, stack):
    s = cfg(stack)
    for region in plan.regions:
        found = [o for o in objects(plan, "Deployment", region) if o["metadata"]["name"] == names.CAPACITY_BUFFER]
        if s.nodes.buffer_pods == 0:
            assert found == []
            continue
        (buf,) = found
        assert buf["spec"]["replicas"] == s.nodes.buffer_pods
        pod = buf["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["resources"]["requests"] == {"cpu": s.backend.cpu, "memory": s.backend.memory}
        assert pod["priorityClassName"] == f"{s.namespace}-buffer" and pod["terminationGracePeriodSeconds"] == 0
        assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["allowPrivilegeEscalation"] is False


def test_dev_has_no_headroom_and_prod_covers_its_largest_step():
    assert cfg("dev").nodes.buffer_pods == 0
    prod = cfg("prod")
    # The peak floor's step (2 -> 5) lands at once.
    assert prod.nodes.buffer_pods >= prod.backend.peak_min_replicas - prod.backend.min_replicas


def test_every_nodes_object_validates(plan):
    for kind in ("NodePool", "EC2NodeClass", "PriorityClass"):
        for obj in objects(plan, kind):
            assert validate(obj) == [], f"{kind}/{obj['metadata']['name']}"
    for obj in objects(plan, "Deployment"):
        assert validate(obj) == []


def test_a_referenced_node_class_is_not_declared():
    from preview import engine, plan as plan_mod

    project, config, _ = engine.load_stack_config("dev")
    config = {
        **config,
        f"{project}:regions": '[{"name": "lagos", "role": "primary", "nodeClass": {"declare": false, "group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"}}]',
    }
    rendered = plan_mod.build(engine.run_program("dev", config_override=config))
    assert objects(rendered, "EC2NodeClass") == []
    pool = named(rendered, "NodePool", "tikit-on-demand", "lagos")["spec"]["template"]["spec"]
    assert pool["nodeClassRef"] == {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"}
    # No AWS instance keys for another cloud's nodes.
    assert not any(r["key"].startswith("karpenter.k8s.aws/") for r in pool["requirements"])


def test_node_count_behind_the_limits_is_the_smallest_nodes():
    pool = cfg("prod").derived.pools["lagos"]["on-demand"]
    alloc_cpu, alloc_mem = derived.node_allocatable(pool.node_cpu, pool.node_memory_mib, pool.overhead_cpu_millis, pool.overhead_memory_bytes)
    assert pool.nodes == max(math.ceil(pool.cpu_millis / alloc_cpu), math.ceil(pool.memory_bytes / alloc_mem))


def test_docs_pool_table_is_the_derived_one():
    """docs/nodes.md's table of pools is what tikit/derived.py computes for each preset."""
    from conftest import REPO

    text = (REPO / "docs" / "nodes.md").read_text()
    table = text.split("<!-- pools:begin", 1)[1].split("<!-- pools:end -->", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| stack") ]
    want = []
    for st in ("dev", "staging", "prod"):
        s = cfg(st)
        for r, pools in s.derived.pools.items():
            for n, p in pools.items():
                tenants = ", ".join(f"{t.workload} {t.pods}" for t in p.tenants)
                want.append(
                    f"| {st} | {r} | {n} | {tenants} | {p.cpu_millis / 1000:g} CPU, {p.memory_bytes / units.GIB:.1f}Gi | "
                    f"{p.node_cpu} vCPU, {p.node_memory_mib} MiB | {p.nodes} | {p.limit_cpu} CPU, {p.limit_memory_gib}Gi |"
                )
    assert rows == want
