"""Where pods can land, read from rendered objects alone: the pod shapes of every object
that makes pods (workloads, CNPG clusters, Envoy proxies, k6 test runs), the Karpenter
NodePools (taints, labels, requirements, limits, the smallest node), whether a pod can
land in a pool (tolerations, node selectors and required node affinity, size), and what a
pool needs at maximum scale.  The capacity model's inputs come from here too
(``capacity_model``): the policies and ``python -m preview capacity`` share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from . import annotations as ann
from . import simulation as sim
from .model import CNPG_GROUP, Obj, Stack, Workload, containers, pod_template
from .parse import as_dict, as_float, as_int, as_list, get, quantity

KARPENTER_GROUP = "karpenter.sh"
CAPACITY_TYPE_KEY = "karpenter.sh/capacity-type"
NODEPOOL_KEY = "karpenter.sh/nodepool"
# Labels Karpenter puts on every node it launches, whatever the requirements say.
WELL_KNOWN = (
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    CAPACITY_TYPE_KEY,
)
ANY = None  # a label key a pool's nodes carry with any value
REPELLING = ("NoSchedule", "NoExecute")
# Spot nodes get two minutes' notice before they go.
SPOT_NOTICE_SECONDS = 120


# --- pod shapes ------------------------------------------------------------------------------


@dataclass
class PodShape:
    """Pods of one shape an object makes: how many at most, their requests and placement."""

    obj: Obj
    name: str
    count: int
    cpu_millis: float
    memory_bytes: float
    tolerations: list = field(default_factory=list)
    node_selector: dict = field(default_factory=dict)
    required_terms: Optional[list] = None
    priority_class: str = ""
    annotations: dict = field(default_factory=dict)
    stateful: bool = False
    grace_seconds: Optional[int] = None
    concurrent: bool = True   # runs beside the others (an initializer does not)

    @property
    def ref(self) -> str:
        return f"{self.obj.ref} ({self.name})" if self.name != self.obj.name else self.obj.ref

    @property
    def interruptible(self) -> bool:
        return self.obj.annotations.get(ann.INTERRUPTIBLE) == "true" or self.annotations.get(ann.INTERRUPTIBLE) == "true"


def _requests(cs: list[dict]) -> tuple[float, float]:
    cpu = sum(quantity(get(c, "resources", "requests", "cpu")) or 0 for c in cs)
    mem = sum(quantity(get(c, "resources", "requests", "memory")) or 0 for c in cs)
    return cpu * 1000, mem


def _pod_requests(spec: dict) -> tuple[float, float]:
    """Sum of the containers; an init container runs alone, so the larger of the two."""
    main = _requests([c for _, c in containers(spec, init=False)])
    init = [_requests([c]) for c in as_list(spec.get("initContainers")) if isinstance(c, dict)]
    return max([main[0], *(i[0] for i in init)]), max([main[1], *(i[1] for i in init)])


def _affinity_terms(affinity: Any) -> Optional[list]:
    req = get(affinity, "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms")
    return req if isinstance(req, list) else None


def _from_pod_spec(obj: Obj, name: str, count: int, spec: dict, annotations: dict, **extra: Any) -> PodShape:
    cpu, mem = _pod_requests(spec)
    return PodShape(
        obj=obj,
        name=name,
        count=count,
        cpu_millis=cpu,
        memory_bytes=mem,
        tolerations=as_list(spec.get("tolerations")),
        node_selector=as_dict(spec.get("nodeSelector")),
        required_terms=_affinity_terms(spec.get("affinity")),
        priority_class=str(spec.get("priorityClassName") or ""),
        annotations=annotations,
        grace_seconds=as_int(spec.get("terminationGracePeriodSeconds")),
        **extra,
    )


def _cnpg(stack: Stack, obj: Obj) -> PodShape:
    spec = obj.spec
    cpu, mem = _requests([{"resources": spec.get("resources")}])
    # The Barman Cloud plugin's sidecar, sized in the ObjectStore the cluster archives to.
    for p in as_list(spec.get("plugins")):
        store = stack.find("ObjectStore", obj.region, obj.namespace, get(p, "parameters", "barmanObjectName"))
        if store is not None:
            c, m = _requests([{"resources": get(store.spec, "instanceSidecarConfiguration", "resources")}])
            cpu, mem = cpu + c, mem + m
    aff = as_dict(spec.get("affinity"))
    return PodShape(
        obj=obj, name=obj.name or "", count=as_int(spec.get("instances")) or 1, cpu_millis=cpu, memory_bytes=mem,
        tolerations=as_list(aff.get("tolerations")), node_selector=as_dict(aff.get("nodeSelector")),
        required_terms=_affinity_terms({"nodeAffinity": aff.get("nodeAffinity")}),
        priority_class=str(spec.get("priorityClassName") or ""),
        annotations=as_dict(get(spec, "inheritedMetadata", "annotations")), stateful=True,
    )


def _envoy(obj: Obj) -> PodShape:
    k8s = as_dict(get(obj.spec, "provider", "kubernetes"))
    dep = as_dict(k8s.get("envoyDeployment"))
    count = as_int(get(k8s, "envoyHpa", "maxReplicas")) or as_int(dep.get("replicas")) or 1
    cpu, mem = _requests([as_dict(dep.get("container"))])
    pod = as_dict(dep.get("pod"))
    return PodShape(
        obj=obj, name=f"{obj.name} envoy", count=count, cpu_millis=cpu, memory_bytes=mem,
        tolerations=as_list(pod.get("tolerations")), node_selector=as_dict(pod.get("nodeSelector")),
        required_terms=_affinity_terms(pod.get("affinity")), priority_class=str(pod.get("priorityClassName") or ""),
        annotations=as_dict(pod.get("annotations")),
    )


def _k6(obj: Obj) -> list[PodShape]:
    out = []
    parallelism = as_int(obj.spec.get("parallelism")) or 1
    for part, count, concurrent in (("runner", parallelism, True), ("starter", 1, True), ("initializer", 1, False)):
        pod = as_dict(obj.spec.get(part))
        if not pod:
            continue
        cpu, mem = _requests([{"resources": pod.get("resources")}])
        out.append(
            PodShape(
                obj=obj, name=f"{obj.name} {part}", count=count, cpu_millis=cpu, memory_bytes=mem,
                tolerations=as_list(pod.get("tolerations")), node_selector=as_dict(pod.get("nodeSelector")),
                required_terms=_affinity_terms(pod.get("affinity")), priority_class=str(pod.get("priorityClassName") or ""),
                concurrent=concurrent,
            )
        )
    return out


def pod_shapes(stack: Stack, region: Optional[str]) -> list[PodShape]:
    """Every pod the rendered objects of a region make, at its maximum count."""
    out: list[PodShape] = []
    for w in stack.workloads:
        if w.region != region or w.kind == "DaemonSet":
            continue
        template = pod_template(w.obj) or {}
        spec = as_dict(template.get("spec"))
        count = w.max_replicas if w.kind not in ("Job",) else 1
        out.append(
            _from_pod_spec(
                w.obj, w.name, count or 0, spec, as_dict(get(template, "metadata", "annotations")),
                stateful=w.kind == "StatefulSet" or bool(as_list(w.obj.spec.get("volumeClaimTemplates")))
                or any("persistentVolumeClaim" in as_dict(v) for v in as_list(spec.get("volumes"))),
            )
        )
    for o in stack.objects:
        if o.region != region:
            continue
        if o.kind == "CronJob":
            template = pod_template(o) or {}
            out.append(_from_pod_spec(o, o.name or "", 1, as_dict(template.get("spec")), as_dict(get(template, "metadata", "annotations"))))
        elif o.kind == "Cluster" and o.group == CNPG_GROUP:
            out.append(_cnpg(stack, o))
        elif o.kind == "EnvoyProxy":
            out.append(_envoy(o))
        elif o.kind == "TestRun":
            out.extend(_k6(o))
    return out


# --- node pools ------------------------------------------------------------------------------


@dataclass
class NodePool:
    obj: Obj

    @property
    def name(self) -> str:
        return self.obj.name or "<unnamed>"

    @property
    def template(self) -> dict:
        return as_dict(self.obj.spec.get("template"))

    @property
    def taints(self) -> list[dict]:
        return [t for t in as_list(get(self.template, "spec", "taints")) if isinstance(t, dict)]

    @property
    def requirements(self) -> list[dict]:
        return [r for r in as_list(get(self.template, "spec", "requirements")) if isinstance(r, dict)]

    def values(self, key: str) -> Optional[set]:
        """The values a node of this pool may carry for ``key``: a set, ANY, or an empty set
        when the label is absent."""
        fixed = as_dict(get(self.template, "metadata", "labels"))
        if key in fixed:
            return {fixed[key]}
        if key == NODEPOOL_KEY:
            return {self.name}
        allowed: Optional[set] = ANY
        seen = False
        for r in self.requirements:
            if r.get("key") != key:
                continue
            seen = True
            op, vals = r.get("operator"), set(as_list(r.get("values")))
            if op == "In":
                allowed = vals if allowed is ANY else allowed & vals
            elif op == "DoesNotExist":
                return set()
        if seen or key in WELL_KNOWN or key.startswith("karpenter.k8s.aws/"):
            return allowed
        return set()

    @property
    def capacity_types(self) -> set:
        vals = self.values(CAPACITY_TYPE_KEY)
        return {"on-demand", "spot", "reserved"} if vals is ANY else vals

    @property
    def spot(self) -> bool:
        return "spot" in self.capacity_types

    @property
    def limits(self) -> tuple[Optional[float], Optional[float]]:
        lim = as_dict(self.obj.spec.get("limits"))
        cpu = quantity(lim.get("cpu"))
        return (cpu * 1000 if cpu is not None else None), quantity(lim.get("memory"))

    @property
    def overhead(self) -> tuple[float, float]:
        a = self.obj.annotations
        cpu = quantity(a.get(ann.NODE_OVERHEAD_CPU)) or 0
        return cpu * 1000, quantity(a.get(ann.NODE_OVERHEAD_MEMORY)) or 0

    def _bound(self, key: str) -> Optional[int]:
        low = None
        for r in self.requirements:
            if r.get("key") != key or not as_list(r.get("values")):
                continue
            v = as_int(as_list(r.get("values"))[0])
            if v is None:
                continue
            if r.get("operator") == "Gt":
                low = max(low or 0, v + 1)
            elif r.get("operator") == "Gte":
                low = max(low or 0, v)
        return low

    @property
    def smallest_node(self) -> Optional[tuple[float, float]]:
        """(millicores, bytes) the smallest node leaves for pods, when the requirements
        bound the instance size from below."""
        cpu, mib = self._bound("karpenter.k8s.aws/instance-cpu"), self._bound("karpenter.k8s.aws/instance-memory")
        if cpu is None or mib is None:
            return None
        vm = as_float(self.obj.annotations.get(ann.VM_MEMORY_OVERHEAD_PERCENT)) or 0.0
        oh_cpu, oh_mem = self.overhead
        return cpu * 1000 - oh_cpu, mib * 1024 * 1024 * (100 - vm) / 100 - oh_mem

    @property
    def provisioning_seconds(self) -> Optional[int]:
        return as_int(self.obj.annotations.get(ann.PROVISIONING_SECONDS))

    @property
    def weight(self) -> int:
        return as_int(self.obj.spec.get("weight")) or 0


def node_pools(stack: Stack, region: Optional[str]) -> list[NodePool]:
    return [NodePool(o) for o in stack.kind("NodePool", KARPENTER_GROUP) if o.region == region]


# --- can a pod land in a pool -------------------------------------------------------------------


def _tolerates(tolerations: list, taint: dict) -> bool:
    for t in tolerations:
        if not isinstance(t, dict):
            continue
        if t.get("effect") not in (None, "", taint.get("effect")):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _expression_ok(pool: NodePool, expr: dict) -> bool:
    key, op, vals = expr.get("key"), expr.get("operator"), set(as_list(expr.get("values")))
    possible = pool.values(str(key))
    if op == "In":
        return possible is ANY or bool(possible & vals)
    if op == "NotIn":
        return possible is ANY or not possible or bool(possible - vals)
    if op == "Exists":
        return possible is ANY or bool(possible)
    if op == "DoesNotExist":
        return possible is not ANY and not possible
    return possible is ANY or bool(possible)  # Gt / Lt on a label the pool constrains


def blocked_by(shape: PodShape, pool: NodePool) -> Optional[str]:
    """Why ``shape`` cannot land in ``pool`` (None: it can)."""
    for taint in pool.taints:
        if taint.get("effect") in REPELLING and not _tolerates(shape.tolerations, taint):
            return f"does not tolerate the taint {taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}"
    for key, value in shape.node_selector.items():
        if not _expression_ok(pool, {"key": key, "operator": "In", "values": [value]}):
            return f"its nodeSelector {key}={value} matches no node of the pool"
    if shape.required_terms is not None:
        if not any(
            all(_expression_ok(pool, e) for e in as_list(get(term, "matchExpressions")) if isinstance(e, dict))
            for term in shape.required_terms
        ):
            return "its required node affinity matches no node of the pool"
    return None


def too_big(shape: PodShape, pool: NodePool) -> Optional[str]:
    node = pool.smallest_node
    if node is None:
        return None
    if shape.cpu_millis > node[0] or shape.memory_bytes > node[1]:
        return (
            f"requests {shape.cpu_millis / 1000:g} CPU and {shape.memory_bytes / 2**20:,.0f}Mi, more than the pool's smallest "
            f"node leaves for pods ({node[0] / 1000:g} CPU, {node[1] / 2**20:,.0f}Mi after the per-node overhead)"
        )
    return None


def tenants(shapes: list[PodShape], pool: NodePool) -> list[PodShape]:
    """The shapes that can land in ``pool`` and run at the same time."""
    return [s for s in shapes if s.concurrent and s.count > 0 and blocked_by(s, pool) is None]


@dataclass(frozen=True)
class Need:
    cpu_millis: float
    memory_bytes: float
    nodes: int
    pods_cpu: float
    pods_memory: float


def need(pool: NodePool, shapes: list[PodShape], extra: tuple[int, float, float] = (0, 0.0, 0.0)) -> Need:
    """What the pool holds with every tenant at its maximum (plus ``extra`` pods of a size):
    the pods' requests plus the per-node overhead of the smallest nodes that hold them."""
    cpu = sum(s.count * s.cpu_millis for s in shapes) + extra[0] * extra[1]
    mem = sum(s.count * s.memory_bytes for s in shapes) + extra[0] * extra[2]
    node = pool.smallest_node
    if node is None:
        nodes = sum(s.count for s in shapes) + extra[0]  # no size known: one node per pod
    else:
        nodes = max(math.ceil(cpu / node[0]) if node[0] > 0 else 0, math.ceil(mem / node[1]) if node[1] > 0 else 0)
    oh_cpu, oh_mem = pool.overhead
    return Need(cpu + nodes * oh_cpu, mem + nodes * oh_mem, nodes, cpu, mem)


# --- the capacity model's inputs ------------------------------------------------------------------


def serving_workload(stack: Stack, region: Optional[str]) -> Optional[Workload]:
    """The region's Deployment that declares its per-instance capacity (the API)."""
    for w in stack.workloads:
        if w.region == region and w.kind == "Deployment" and as_float(w.obj.annotations.get(ann.SUSTAINABLE_REQUESTS_PER_MINUTE)):
            return w
    return None


def _priority(stack: Stack, name: str) -> Optional[int]:
    for pc in stack.kind("PriorityClass"):
        if pc.name == name:
            return as_int(pc.body.get("value"))
    return None


def _probe(c: dict, key: str) -> Optional[dict]:
    p = c.get(key)
    return p if isinstance(p, dict) else None


def _scrape_seconds(stack: Stack, w: Workload) -> int:
    for sm in stack.kind("ServiceMonitor"):
        if sm.region == w.region and sm.namespace == w.obj.namespace and sm.name == w.name:
            interval = get(sm.spec, "endpoints", 0, "interval")
            if isinstance(interval, str):
                return sim.seconds(interval)
    return sim.DEFAULT_SCRAPE_SECONDS


def capacity_model(stack: Stack, region: Optional[str]) -> Optional[sim.Model]:
    """The capacity model of one region's serving tier, from the rendered objects."""
    w = serving_workload(stack, region)
    if w is None or w.autoscaler is None or not w.autoscaler.is_keda:
        return None
    so = w.autoscaler.obj.spec
    behavior = as_dict(get(so, "advanced", "horizontalPodAutoscalerConfig", "behavior"))
    spec = w.pod_spec
    (_, c), *_ = containers(spec, init=False) or [(None, {})]
    startup, readiness = _probe(c, "startupProbe"), _probe(c, "readinessProbe") or {}
    shape = _from_pod_spec(w.obj, w.name, w.max_replicas or 0, spec, {})
    shapes = pod_shapes(stack, region)
    pools = sorted((p for p in node_pools(stack, region) if blocked_by(shape, p) is None), key=lambda p: -p.weight)
    pool = pools[0] if pools else None
    slots, pool_max, node_pods, provisioning = 0, None, 1, 0
    if pool is not None:
        provisioning = pool.provisioning_seconds or 0
        others = [s for s in tenants(shapes, pool) if not (s.obj is w.obj)]
        for s in others:
            pc = _priority(stack, s.priority_class)
            if pc is not None and pc < 0 and shape.cpu_millis and shape.memory_bytes:
                per = min(s.cpu_millis / shape.cpu_millis, s.memory_bytes / shape.memory_bytes)
                slots += int(s.count * per + 1e-9)
        limit_cpu, limit_mem = pool.limits
        if limit_cpu is not None and limit_mem is not None:
            pool_max = 0
            for k in range((w.max_replicas or 0) + 1):
                n = need(pool, others, (k, shape.cpu_millis, shape.memory_bytes))
                if n.cpu_millis <= limit_cpu and n.memory_bytes <= limit_mem:
                    pool_max = k
        node = pool.smallest_node
        if node and shape.cpu_millis and shape.memory_bytes:
            node_pods = max(1, int(min(node[0] / shape.cpu_millis, node[1] / shape.memory_bytes)))
    ns = next((o for o in stack.namespaces(region)), None)
    stages = str((ns.annotations if ns else {}).get(ann.LOAD_PROFILE) or "")
    per_user = as_float((ns.annotations if ns else {}).get(ann.PROFILE_REQUESTS_PER_USER_PER_MINUTE)) or 0.0
    return sim.Model(
        region=region or "",
        workload=w.name,
        min_replicas=w.autoscaler.min or 1,
        max_replicas=w.autoscaler.max or sim.KEDA_MAX_REPLICAS,
        triggers=tuple(sim.trigger_of(t) for t in w.autoscaler.triggers),
        up=sim.rules(behavior.get("scaleUp"), sim.DEFAULT_SCALE_UP),
        down=sim.rules(behavior.get("scaleDown"), sim.DEFAULT_SCALE_DOWN),
        polling_seconds=as_int(so.get("pollingInterval")) or sim.KEDA_POLLING_SECONDS,
        per_instance=as_float(w.obj.annotations.get(ann.SUSTAINABLE_REQUESTS_PER_MINUTE)) or 0.0,
        cpu_request=shape.cpu_millis / 1000,
        boot_seconds=as_int(w.obj.annotations.get(ann.BOOT_SECONDS)) or 0,
        startup=(
            (as_int(startup.get("initialDelaySeconds")) or 0, as_int(startup.get("periodSeconds")) or 10, as_int(startup.get("failureThreshold")) or 3)
            if startup else None
        ),
        readiness=(as_int(readiness.get("initialDelaySeconds")) or 0, as_int(readiness.get("periodSeconds")) or 10),
        scrape_seconds=_scrape_seconds(stack, w),
        provisioning_seconds=provisioning,
        buffer_slots=slots,
        pool_max_pods=pool_max,
        pool=pool.name if pool else "",
        node_pods=node_pods,
        profile=tuple(sim.profile_of(stages, per_user).stages) if stages else (),
        requests_per_user=per_user,
    )


def profile_for(m: sim.Model) -> Optional[sim.Profile]:
    """The region's load profile (its Namespace's annotations), on the peak's clock."""
    if not m.profile:
        return None
    tz = next((t.timezone for t in m.triggers if t.kind == "cron"), "UTC")
    return sim.Profile(name="profile", stages=m.profile, requests_per_user=m.requests_per_user, start=sim.default_start(tz))
