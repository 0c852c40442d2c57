"""Nodes for the platform's pods in one region: Karpenter NodePools, their node class, the
PriorityClasses that rank the tiers, and the warm headroom (docs/nodes.md).

Karpenter itself (its controller, IAM and interruption queue) is a prerequisite of the
cluster, outside this program.  Two pools, both tainted for the platform's namespace so
that only its pods land there and the limits count every pod that can:

* ``<namespace>-on-demand``: the API, PgBouncer, Redis, PostgreSQL, the gateway's Envoy
  pods, the placeholders, and the workers where the region allows a fallback;
* ``<namespace>-spot``: the workers only, with the spot taint and label the workers'
  settings name.

The limits come from tikit/derived.py (one computation; the policy pack checks the same
numbers against the rendered pods).  The placeholders (``capacity-buffer``) hold
``nodes.bufferPods`` API-sized slots on warm nodes at the lowest priority: a new API pod
preempts one at once instead of waiting for a node, and Karpenter then brings a node for
the evicted placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import cron, kube, names
from tikit import derived as derived_mod
from tikit import settings as settings_mod
from tikit import units
from tikit.derived import Pool
from tikit.settings import Backend as BackendSettings
from tikit.settings import Nodes as NodesSettings
from tikit.settings import Region as RegionSettings
from tikit.settings import Workers as WorkersSettings

COMPONENT = "nodes"
NODEPOOL_API = "karpenter.sh/v1"
CAPACITY_TYPE_KEY = "karpenter.sh/capacity-type"
# PriorityClass values: data > API > workers > buffer.  A pending data pod may evict an API
# pod when the pool is full; nothing real ever waits for a placeholder.
PRIORITIES = {
    names.PRIORITY_DATA: 100_000,
    names.PRIORITY_API: 10_000,
    names.PRIORITY_WORKERS: 1_000,
    # Negative and never preempting: the cluster-autoscaler FAQ's overprovisioning class.
    names.PRIORITY_BUFFER: -10,
}
PRIORITY_DESCRIPTIONS = {
    names.PRIORITY_DATA: "PostgreSQL, PgBouncer and Redis: the last to give way when the pool is full.",
    names.PRIORITY_API: "The API and the gateway's Envoy pods.",
    names.PRIORITY_WORKERS: "Background workers, the Redis backup job and load tests.",
    names.PRIORITY_BUFFER: "Placeholder pods of the warm headroom: every real pod preempts them.",
}
# Instance generations older than 5 (c4, m4, r4) are out: Local Zones offer 5th-generation
# families (c5, m5, r5) and newer.
MIN_GENERATION_EXCLUSIVE = 4
# Karpenter may consolidate a node once no pod came or went for this long.  The HPA removes
# one API pod per 5 minutes, so waiting as long keeps a scale-down from repacking nodes
# after every pod.
CONSOLIDATE_AFTER = "5m"
# Outside the peak: at most this share of a pool's nodes disrupted at once (Karpenter's
# own default, written out).
BUDGET_NODES = "10%"
# The spot pool's nodes go after this long once drained (spot gives 2 minutes' notice; the
# workers' grace period is 60 s).
SPOT_TERMINATION_GRACE = "2m"
# The placeholders' container: it only sleeps.
BUFFER_USER = 65535


@dataclass(frozen=True)
class NodesArgs:
    target: kube.Target
    nodes: NodesSettings
    region: RegionSettings
    backend: BackendSettings
    workers: WorkersSettings
    # settings.derived.pools[region]: the pools' sizes and limits.
    pools: dict[str, Pool]
    # The peak window in UTC for the disruption budgets, or None where there is no peak floor.
    peak_budget: Optional[tuple[str, str]]
    cluster_name: str


def peak_budget(backend: BackendSettings) -> Optional[tuple[str, str]]:
    """(UTC schedule, duration) of the peak window, where a peak floor exists."""
    if backend.peak_min_replicas <= backend.min_replicas:
        return None
    return cron.utc_window(backend.peak_start, backend.peak_end, settings_mod.PEAK_TIMEZONE)


def node_class_name(args: NodesArgs) -> str:
    return args.region.node_class.name or args.target.namespace


def node_class_spec(args: NodesArgs) -> dict[str, Any]:
    """An EC2NodeClass: the node role, subnets and security groups by tag (Karpenter's
    discovery tag of the cluster unless the region says otherwise), the AMI alias, IMDSv2
    with a hop limit of 1 (pods cannot reach the node's credentials)."""
    nc, t = args.region.node_class, args.target
    discovery = {"karpenter.sh/discovery": args.cluster_name}
    return {
        "role": nc.role or f"KarpenterNodeRole-{args.cluster_name}",
        "amiSelectorTerms": [{"alias": nc.ami_alias}],
        "subnetSelectorTerms": [{"tags": dict(nc.subnet_tags or discovery)}],
        "securityGroupSelectorTerms": [{"tags": dict(nc.security_group_tags or discovery)}],
        "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1},
        "tags": {"tikit.app/environment": t.environment, "tikit.app/region": t.region, "app.kubernetes.io/part-of": names.PART_OF},
    }


def _aws(args: NodesArgs) -> bool:
    return args.region.node_class.group == settings_mod.EC2_NODE_CLASS_GROUP


def requirements(args: NodesArgs, pool: Pool, capacity_type: str) -> list[dict[str, Any]]:
    """Capacity type, architecture and OS everywhere; on AWS also instance category,
    generation and size: every node holds the pool's largest pod beside the overhead
    (``pool.node_cpu`` / ``node_memory_mib``, tikit/derived.py), none exceeds
    nodes.maxInstanceCpu; the region's zones where it names them."""
    n = args.nodes
    reqs: list[dict[str, Any]] = [
        {"key": CAPACITY_TYPE_KEY, "operator": "In", "values": [capacity_type]},
        {"key": "kubernetes.io/arch", "operator": "In", "values": list(n.architectures)},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]
    if _aws(args):
        reqs += [
            {"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": list(n.instance_categories)},
            {"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": [str(MIN_GENERATION_EXCLUSIVE)]},
            {"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gt", "values": [str(pool.node_cpu - 1)]},
            {"key": "karpenter.k8s.aws/instance-cpu", "operator": "Lt", "values": [str(n.max_instance_cpu + 1)]},
            {"key": "karpenter.k8s.aws/instance-memory", "operator": "Gt", "values": [str(pool.node_memory_mib - 1)]},
        ]
    if args.region.zones:
        reqs.append({"key": kube.ZONE_KEY, "operator": "In", "values": list(args.region.zones)})
    return reqs


def disruption(args: NodesArgs) -> dict[str, Any]:
    """Consolidate underused nodes, a tenth of the pool at a time; during the peak window
    (where there is a peak floor) nothing at all: no consolidation, no drift replacement."""
    budgets: list[dict[str, Any]] = []
    if args.peak_budget:
        schedule, duration = args.peak_budget
        budgets.append({"nodes": "0", "schedule": schedule, "duration": duration})
    budgets.append({"nodes": BUDGET_NODES})
    return {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": CONSOLIDATE_AFTER, "budgets": budgets}


def _spot_taint(w: WorkersSettings) -> dict[str, Any]:
    return {"key": w.spot_taint_key, "value": w.spot_taint_value, "effect": w.spot_taint_effect}


def node_pool_spec(args: NodesArgs, pool: Pool) -> dict[str, Any]:
    t, n, w = args.target, args.nodes, args.workers
    spot = pool.name == derived_mod.SPOT
    nc = args.region.node_class
    labels = {}
    taints = [kube.dedicated_taint(t)]
    template_spec: dict[str, Any] = {
        "nodeClassRef": {"group": nc.group, "kind": nc.kind, "name": node_class_name(args)},
        "requirements": requirements(args, pool, "spot" if spot else "on-demand"),
        "expireAfter": n.expire_after,
    }
    if spot:
        # Exactly the taint the workers tolerate and the label they prefer; Karpenter sets
        # karpenter.sh/capacity-type itself (from the requirement above).
        taints.append(_spot_taint(w))
        if w.spot_node_label_key != CAPACITY_TYPE_KEY:
            labels[w.spot_node_label_key] = w.spot_node_label_value
        template_spec["terminationGracePeriod"] = SPOT_TERMINATION_GRACE
    template_spec["taints"] = taints
    spec: dict[str, Any] = {
        "template": {"spec": template_spec},
        "limits": {"cpu": str(pool.limit_cpu), "memory": f"{pool.limit_memory_gib}Gi"},
        "disruption": disruption(args),
        # Workers that may fall back to on-demand try the spot pool first.
        "weight": 50 if spot else 10,
    }
    if labels:
        spec["template"]["metadata"] = {"labels": labels}
    return spec


def node_pool_annotations(args: NodesArgs, pool: Pool) -> dict[str, str]:
    """What the policy pack and the capacity model need and no NodePool field carries."""
    return {
        names.PROVISIONING_SECONDS_ANNOTATION: str(args.nodes.provisioning_seconds),
        names.NODE_OVERHEAD_CPU_ANNOTATION: f"{pool.overhead_cpu_millis}m",
        names.NODE_OVERHEAD_MEMORY_ANNOTATION: f"{pool.overhead_memory_bytes // units.MIB}Mi",
        names.VM_MEMORY_OVERHEAD_ANNOTATION: str(derived_mod.VM_MEMORY_OVERHEAD_PERCENT),
    }


def buffer_deployment_spec(args: NodesArgs) -> dict[str, Any]:
    """``nodes.bufferPods`` pause containers of one API pod's size at the buffer priority,
    on the on-demand pool, spread like the API; grace 0, so a preemption frees the slot
    at once.  Pod Security "restricted" like every pod here."""
    t, b, n = args.target, args.backend, args.nodes
    sel = kube.selector(names.CAPACITY_BUFFER, t)
    container = {
        "name": "pause",
        "image": n.buffer_image,
        "imagePullPolicy": "IfNotPresent",
        "resources": kube.resources(b.cpu, b.memory),
        "securityContext": kube.container_security(),
    }
    return {
        "replicas": n.buffer_pods,
        "selector": {"matchLabels": sel},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%", "maxSurge": 0}},
        "template": {
            "metadata": {"labels": kube.labels(names.CAPACITY_BUFFER, COMPONENT, t, kube.image_version(n.buffer_image))},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": kube.pod_security(run_as_user=BUFFER_USER),
                "terminationGracePeriodSeconds": 0,
                "topologySpreadConstraints": kube.spread(sel),
                **kube.pool_placement(t, names.PRIORITY_BUFFER),
                "containers": [container],
            },
        },
    }


class Nodes(pulumi.ComponentResource):
    """PriorityClasses, the node class, the on-demand and spot NodePools and the
    placeholders of one region."""

    priority_classes: dict[str, k8s.scheduling.v1.PriorityClass]
    node_class: Optional[k8s.apiextensions.CustomResource]
    node_pools: dict[str, k8s.apiextensions.CustomResource]
    buffer: Optional[k8s.apps.v1.Deployment]

    def __init__(self, name: str, args: NodesArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:platform:Nodes", name, None, opts)
        t = args.target
        child = t.opts(self)
        self.priority_classes = {}
        for tier, value in PRIORITIES.items():
            cls = names.priority_class(t.namespace, tier)
            self.priority_classes[tier] = k8s.scheduling.v1.PriorityClass(
                t.rname(cls),
                metadata=kube.metadata(cls, COMPONENT, t, namespaced=False),
                value=value,
                global_default=False,
                preemption_policy="Never" if value < 0 else "PreemptLowerPriority",
                description=PRIORITY_DESCRIPTIONS[tier],
                opts=child,
            )

        self.node_class = None
        nc = args.region.node_class
        pool_deps: list[pulumi.Resource] = []
        if nc.declare:
            self.node_class = kube.custom(
                t.rname(f"nodeclass-{node_class_name(args)}"),
                f"{nc.group}/v1",
                nc.kind,
                kube.metadata(node_class_name(args), COMPONENT, t, namespaced=False),
                node_class_spec(args),
                child,
            )
            pool_deps.append(self.node_class)

        self.node_pools = {}
        for pool_name, pool in args.pools.items():
            np_name = names.node_pool(t.namespace, pool_name)
            self.node_pools[pool_name] = kube.custom(
                t.rname(np_name),
                NODEPOOL_API,
                "NodePool",
                kube.metadata(np_name, COMPONENT, t, namespaced=False, annotations=node_pool_annotations(args, pool)),
                node_pool_spec(args, pool),
                t.opts(self, depends_on=pool_deps),
            )

        self.buffer = None
        if args.nodes.buffer_pods > 0:
            self.buffer = kube.workload(
                k8s.apps.v1.Deployment,
                t.rname(names.CAPACITY_BUFFER),
                metadata=kube.metadata(names.CAPACITY_BUFFER, COMPONENT, t),
                spec=buffer_deployment_spec(args),
                opts=t.opts(self, depends_on=[self.priority_classes[names.PRIORITY_BUFFER], *self.node_pools.values()]),
                placeholder=True,
            )
        self.register_outputs({"nodePools": [names.node_pool(t.namespace, p) for p in args.pools]})
