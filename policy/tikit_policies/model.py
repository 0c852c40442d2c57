"""The rendered platform as the policies see it: Kubernetes objects grouped per region,
workloads with their autoscalers and PDBs, PostgreSQL clusters, PgBouncer pools and Redis
servers, all read from resource properties alone.

Nothing here imports the program: under ``pulumi preview --policy-pack policy`` the pack
runs in its own process, so every fact a policy needs is read from the rendered objects
(labels, ConfigMaps holding pgbouncer.ini / redis.conf, CNPG parameters, ScaledObjects) or
from the few annotations in ``annotations.py``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

from . import annotations as ann
from .parse import as_dict, as_float, as_int, as_list, get, ini_sections, libpq_params, plain, redis_directives

REGION_TYPE = "tikit:platform:Region"
ZONE_KEY = "topology.kubernetes.io/zone"

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod")
POD_TEMPLATE_KINDS = (*WORKLOAD_KINDS, "Job", "CronJob")
# Kinds that are not namespaced (everything else we render is).
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "RuntimeClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "IngressClass",
        "GatewayClass",
        "ClusterIssuer",
        "CSIDriver",
        "VolumeSnapshotClass",
        "NodePool",
        "NodeClaim",
        "EC2NodeClass",
    }
)
CNPG_GROUP = "postgresql.cnpg.io"
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"


# --------------------------------------------------------------------------------------
# One Kubernetes object
# --------------------------------------------------------------------------------------


@dataclass
class Obj:
    """A rendered Kubernetes object (plain values) and where it goes."""

    urn: str
    type: str
    body: dict
    region: Optional[str] = None

    @property
    def kind(self) -> str:
        return str(self.body.get("kind") or "")

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion") or "")

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0] if "/" in self.api_version else ""

    @property
    def metadata(self) -> dict:
        return as_dict(self.body.get("metadata"))

    @property
    def name(self) -> Optional[str]:
        name = self.metadata.get("name")
        return name if isinstance(name, str) else None

    @property
    def namespace(self) -> Optional[str]:
        ns = self.metadata.get("namespace")
        return ns if isinstance(ns, str) else None

    @property
    def labels(self) -> dict:
        return as_dict(self.metadata.get("labels"))

    @property
    def annotations(self) -> dict:
        return as_dict(self.metadata.get("annotations"))

    @property
    def spec(self) -> dict:
        return as_dict(self.body.get("spec"))

    def is_(self, kind: str, group: Optional[str] = None) -> bool:
        return self.kind == kind and (group is None or self.group == group)

    @property
    def ref(self) -> str:
        """'Deployment/api in lagos': how messages name an object."""
        where = f" in {self.region}" if self.region else ""
        return f"{self.kind}/{self.name or '<unnamed>'}{where}"


def is_kubernetes(resource_type: str, body: Any) -> bool:
    return (
        resource_type.startswith("kubernetes:")
        and isinstance(body, dict)
        and isinstance(body.get("kind"), str)
        and isinstance(body.get("apiVersion"), str)
    )


# Component types whose children are a Helm chart's own objects.
CHART_TYPE_PREFIX = "kubernetes:helm.sh/"


def from_chart(urn: str) -> bool:
    """Whether a resource is one of a Helm chart's objects: under `pulumi up` a helm.v4.Chart
    registers every object it templates as its child.  Those are the operator's own
    manifests at the release tikit/versions.py pins (the add-on policies check the pin);
    Tikit's rules for its own objects (labels, names, Pod Security "restricted", digests)
    do not apply to them."""
    parts = urn.split("::")
    chain = parts[2].split("$") if len(parts) >= 4 else []
    return any(t.startswith(CHART_TYPE_PREFIX) for t in chain[:-1])


def to_obj(resource_type: str, props: Any, urn: str, region: Optional[str] = None) -> Optional[Obj]:
    """The Kubernetes object behind a resource's properties, or None for anything else
    (a Helm chart's own objects included, see from_chart)."""
    if from_chart(urn):
        return None
    body = plain(props)
    if not is_kubernetes(resource_type, body):
        return None
    label_region = as_dict(get(body, "metadata", "labels")).get(ann.REGION_LABEL)
    return Obj(urn=urn, type=resource_type, body=body, region=label_region if isinstance(label_region, str) else region)


# --------------------------------------------------------------------------------------
# Pods inside workloads
# --------------------------------------------------------------------------------------


def pod_template(obj: Obj) -> Optional[dict]:
    """{metadata, spec} of the pods an object creates (the Pod itself for a bare Pod)."""
    if obj.kind == "Pod":
        return {"metadata": obj.metadata, "spec": obj.spec}
    if obj.kind == "CronJob":
        template = get(obj.spec, "jobTemplate", "spec", "template")
    elif obj.kind in POD_TEMPLATE_KINDS:
        template = obj.spec.get("template")
    else:
        return None
    return template if isinstance(template, dict) else None


def pod_spec(obj: Obj) -> Optional[dict]:
    template = pod_template(obj)
    spec = template.get("spec") if template else None
    return spec if isinstance(spec, dict) else None


def containers(spec: dict, *, init: bool = True) -> list[tuple[str, dict]]:
    """(field, container) for containers, and initContainers / ephemeralContainers when ``init``."""
    fields = ("containers", "initContainers", "ephemeralContainers") if init else ("containers",)
    return [(f, c) for f in fields for c in as_list(spec.get(f)) if isinstance(c, dict)]


def container_name(c: dict) -> str:
    return str(c.get("name") or "<unnamed>")


def command_line(c: dict) -> list[str]:
    return [str(x) for x in as_list(c.get("command")) + as_list(c.get("args")) if isinstance(x, str)]


def mounted_config_maps(spec: dict) -> set[str]:
    """ConfigMaps a pod mounts as volumes (directly or through a projected volume)."""
    names: set[str] = set()
    for vol in as_list(spec.get("volumes")):
        cm = get(vol, "configMap", "name")
        if isinstance(cm, str):
            names.add(cm)
        for source in as_list(get(vol, "projected", "sources")):
            cm = get(source, "configMap", "name")
            if isinstance(cm, str):
                names.add(cm)
    return names


def selector_matches(selector: Any, labels: dict, *, empty_matches_all: bool = False) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against a label set.

    A missing selector selects nothing; an empty one selects nothing, except for a
    policy/v1 PodDisruptionBudget, where it selects every pod of the namespace."""
    if not isinstance(selector, dict):
        return False
    match_labels = as_dict(selector.get("matchLabels"))
    expressions = as_list(selector.get("matchExpressions"))
    if not match_labels and not expressions:
        return empty_matches_all
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in expressions:
        key, op, values = get(expr, "key"), get(expr, "operator"), as_list(get(expr, "values"))
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def spreads_over_zones(spec: dict) -> bool:
    """A topology spread constraint or pod anti-affinity term keyed on the zone label."""
    if any(get(c, "topologyKey") == ZONE_KEY for c in as_list(spec.get("topologySpreadConstraints"))):
        return True
    anti = as_dict(get(spec, "affinity", "podAntiAffinity"))
    terms = as_list(anti.get("requiredDuringSchedulingIgnoredDuringExecution")) + [
        get(t, "podAffinityTerm") for t in as_list(anti.get("preferredDuringSchedulingIgnoredDuringExecution"))
    ]
    return any(get(t, "topologyKey") == ZONE_KEY for t in terms)


# --------------------------------------------------------------------------------------
# Cross-resource views
# --------------------------------------------------------------------------------------


@dataclass
class Autoscaler:
    """A KEDA ScaledObject or an autoscaling/v2 HorizontalPodAutoscaler."""

    obj: Obj

    @property
    def is_keda(self) -> bool:
        return self.obj.kind == "ScaledObject"

    @property
    def target(self) -> tuple[str, Optional[str]]:
        ref = as_dict(self.obj.spec.get("scaleTargetRef"))
        return str(ref.get("kind") or "Deployment"), ref.get("name") if isinstance(ref.get("name"), str) else None

    @property
    def min_raw(self) -> Any:
        return self.obj.spec.get("minReplicaCount" if self.is_keda else "minReplicas")

    @property
    def max_raw(self) -> Any:
        return self.obj.spec.get("maxReplicaCount" if self.is_keda else "maxReplicas")

    @property
    def min(self) -> Optional[int]:
        """Effective minimum: KEDA defaults to 0, the HPA to 1."""
        if self.min_raw is None:
            return 0 if self.is_keda else 1
        return as_int(self.min_raw)

    @property
    def max(self) -> Optional[int]:
        """Effective maximum: KEDA defaults to 100; the HPA requires one."""
        if self.max_raw is None:
            return 100 if self.is_keda else None
        return as_int(self.max_raw)

    @property
    def triggers(self) -> list[dict]:
        return [t for t in as_list(self.obj.spec.get("triggers")) if isinstance(t, dict)]

    def cron_floors(self) -> list[int]:
        return [
            n
            for t in self.triggers
            if t.get("type") == "cron"
            for n in [as_int(get(t, "metadata", "desiredReplicas"))]
            if n is not None
        ]

    def requests_per_minute_per_instance(self) -> Optional[float]:
        """Threshold of a Prometheus request-rate trigger whose query is per minute.

        With metricType AverageValue the HPA holds every replica at this many requests
        per minute: it is the per-instance capacity the autoscaler plans with."""
        for t in self.triggers:
            if t.get("type") != "prometheus" or t.get("metricType", "AverageValue") != "AverageValue":
                continue
            query = str(get(t, "metadata", "query") or "")
            if "rate(" in query and query.replace(" ", "").endswith("*60"):
                return as_float(get(t, "metadata", "threshold"))
        return None


@dataclass
class Pdb:
    obj: Obj

    @property
    def selector(self) -> Any:
        return self.obj.spec.get("selector")

    @property
    def min_available(self) -> Any:
        return self.obj.spec.get("minAvailable")

    @property
    def max_unavailable(self) -> Any:
        return self.obj.spec.get("maxUnavailable")


@dataclass
class Workload:
    obj: Obj
    autoscalers: list[Autoscaler] = field(default_factory=list)
    pdbs: list[Pdb] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.obj.name or "<unnamed>"

    @property
    def kind(self) -> str:
        return self.obj.kind

    @property
    def region(self) -> Optional[str]:
        return self.obj.region

    @property
    def pod_labels(self) -> dict:
        return as_dict(get(pod_template(self.obj) or {}, "metadata", "labels"))

    @property
    def pod_spec(self) -> dict:
        return pod_spec(self.obj) or {}

    @property
    def spec_replicas(self) -> Optional[int]:
        return as_int(self.obj.spec.get("replicas"))

    @property
    def autoscaler(self) -> Optional[Autoscaler]:
        return self.autoscalers[0] if len(self.autoscalers) == 1 else None

    @property
    def min_replicas(self) -> Optional[int]:
        """The fewest pods it runs: its autoscaler's minimum, or spec.replicas (default 1)."""
        if self.kind in ("DaemonSet", "Pod"):
            return None if self.kind == "DaemonSet" else 1
        if self.autoscaler:
            return self.autoscaler.min
        replicas = self.obj.spec.get("replicas")
        return 1 if replicas is None else as_int(replicas)

    @property
    def max_replicas(self) -> Optional[int]:
        if self.kind in ("DaemonSet", "Pod"):
            return None if self.kind == "DaemonSet" else 1
        if self.autoscaler:
            return self.autoscaler.max
        replicas = self.obj.spec.get("replicas")
        return 1 if replicas is None else as_int(replicas)

    def replica_source(self) -> str:
        """Where min/max come from, for messages."""
        if self.autoscaler:
            return f"{self.autoscaler.obj.kind}/{self.autoscaler.obj.name}"
        return "spec.replicas"

    @property
    def database_client(self) -> bool:
        """Reads a DATABASE_*URL: it opens connections to the PgBouncer pools."""
        for _, c in containers(self.pod_spec):
            for env in as_list(c.get("env")):
                name = str(get(env, "name") or "")
                if name.startswith("DATABASE") and name.endswith("URL"):
                    return True
        return False


@dataclass
class PgCluster:
    """A CloudNativePG Cluster."""

    obj: Obj

    @property
    def name(self) -> str:
        return self.obj.name or "<unnamed>"

    @property
    def instances(self) -> int:
        n = as_int(self.obj.spec.get("instances"))
        return 1 if n is None else n

    @property
    def parameters(self) -> dict:
        return as_dict(get(self.obj.spec, "postgresql", "parameters"))

    def parameter(self, name: str, default: int) -> Optional[int]:
        value = self.parameters.get(name)
        return default if value is None else as_int(value)

    @property
    def replica(self) -> dict:
        return as_dict(self.obj.spec.get("replica"))

    @property
    def is_replica(self) -> bool:
        """A replica cluster: replica.enabled, or a distributed topology whose primary is another cluster."""
        enabled = self.replica.get("enabled")
        if isinstance(enabled, bool):
            return enabled
        primary = self.replica.get("primary")
        return isinstance(primary, str) and primary != self.name

    @property
    def enable_pdb(self) -> bool:
        return self.obj.spec.get("enablePDB") is not False

    def wal_archiver_stores(self) -> list[str]:
        """ObjectStores the Barman Cloud plugin archives WAL to."""
        out = []
        for p in as_list(self.obj.spec.get("plugins")):
            if get(p, "name") == BARMAN_PLUGIN and get(p, "isWALArchiver") is True and get(p, "enabled") is not False:
                store = get(p, "parameters", "barmanObjectName")
                if isinstance(store, str):
                    out.append(store)
        return out

    @property
    def legacy_object_store(self) -> Optional[dict]:
        store = get(self.obj.spec, "backup", "barmanObjectStore")
        return store if isinstance(store, dict) else None

    def external_cluster(self, name: Any) -> Optional[dict]:
        for ext in as_list(self.obj.spec.get("externalClusters")):
            if get(ext, "name") == name:
                return ext
        return None

    def upstream_name(self) -> Optional[str]:
        """The cluster this replica cluster follows: replica.source resolved through
        externalClusters (the plugin's serverName names the source cluster)."""
        source = self.replica.get("source")
        if not isinstance(source, str):
            return None
        ext = self.external_cluster(source)
        server = get(ext or {}, "plugin", "parameters", "serverName")
        return server if isinstance(server, str) else source


@dataclass
class Pool:
    """One PgBouncer pool: the Deployment and the pgbouncer.ini it runs with."""

    workload: Workload
    config: Obj
    key: str
    sections: dict

    @property
    def settings(self) -> dict:
        return as_dict(self.sections.get("pgbouncer"))

    @property
    def databases(self) -> dict[str, dict[str, str]]:
        return {db: libpq_params(conn) for db, conn in as_dict(self.sections.get("databases")).items()}

    def setting(self, name: str, default: int) -> Optional[int]:
        value = self.settings.get(name)
        return default if value is None else as_int(value)

    @property
    def pool_mode(self) -> str:
        return str(self.settings.get("pool_mode", "session")).strip().lower()

    @property
    def server_connections_per_pod(self) -> Optional[int]:
        """default_pool_size + reserve_pool_size, capped by max_db_connections when set."""
        default, reserve = self.setting("default_pool_size", 20), self.setting("reserve_pool_size", 0)
        cap = self.setting("max_db_connections", 0)
        if default is None or reserve is None or cap is None:
            return None
        per_pod = default + reserve
        return min(per_pod, cap) if cap > 0 else per_pod

    def hosts(self) -> list[str]:
        return sorted({p["host"] for p in self.databases.values() if p.get("host")})


@dataclass
class RedisServer:
    """A workload running redis-server with a redis.conf from a ConfigMap."""

    workload: Workload
    container: dict
    config: Obj
    key: str
    directives: dict


class Stack:
    """Every Kubernetes object of a stack, with the links the cross-resource policies need."""

    def __init__(self, objects: Iterable[Obj]) -> None:
        self.objects = [o for o in objects if o is not None]
        self._by_kind: dict[str, list[Obj]] = {}
        for o in self.objects:
            self._by_kind.setdefault(o.kind, []).append(o)
        self.workloads = [Workload(o) for o in self.objects if o.kind in WORKLOAD_KINDS]
        self.autoscalers = [
            Autoscaler(o)
            for o in self.objects
            if (o.kind == "ScaledObject" and o.group == "keda.sh") or o.kind == "HorizontalPodAutoscaler"
        ]
        self.pdbs = [Pdb(o) for o in self.kind("PodDisruptionBudget")]
        for a in self.autoscalers:
            w = self.workload(a.obj.region, a.obj.namespace, *a.target)
            if w:
                w.autoscalers.append(a)
        for p in self.pdbs:
            for w in self.workloads:
                if self._same_place(w.obj, p.obj) and selector_matches(p.selector, w.pod_labels, empty_matches_all=True):
                    w.pdbs.append(p)
        self.clusters = [PgCluster(o) for o in self.kind("Cluster", CNPG_GROUP)]

    # ---- lookups ---------------------------------------------------------------------

    @classmethod
    def from_resources(cls, resources: Iterable[Any]) -> "Stack":
        """From StackValidationArgs.resources (PolicyResource: resource_type, props, urn, parent)."""
        objs = []
        for r in resources:
            obj = to_obj(r.resource_type, r.props, r.urn, region=_region_from_parents(r))
            if obj:
                objs.append(obj)
        return cls(objs)

    def kind(self, kind: str, group: Optional[str] = None) -> list[Obj]:
        return [o for o in self._by_kind.get(kind, []) if group is None or o.group == group]

    @staticmethod
    def _same_place(a: Obj, b: Obj) -> bool:
        return a.region == b.region and a.namespace == b.namespace

    def workload(self, region: Optional[str], namespace: Optional[str], kind: str, name: Optional[str]) -> Optional[Workload]:
        for w in self.workloads:
            if w.region == region and w.obj.namespace == namespace and w.kind == kind and w.obj.name == name:
                return w
        return None

    def find(self, kind: str, region: Optional[str], namespace: Optional[str], name: Any, group: Optional[str] = None) -> Optional[Obj]:
        for o in self.kind(kind, group):
            if o.region == region and o.namespace == namespace and o.name == name:
                return o
        return None

    @property
    def regions(self) -> list[str]:
        return sorted({o.region for o in self.objects if o.region})

    def namespaces(self, region: Optional[str] = None) -> list[Obj]:
        return [o for o in self.kind("Namespace") if region is None or o.region == region]

    @property
    def environment(self) -> Optional[str]:
        """The stack's environment from the tikit.app/environment label (Namespaces first)."""
        for ns in self.namespaces():
            env = ns.labels.get(ann.ENVIRONMENT_LABEL)
            if isinstance(env, str):
                return env
        counts = Counter(o.labels.get(ann.ENVIRONMENT_LABEL) for o in self.objects)
        counts.pop(None, None)
        return counts.most_common(1)[0][0] if counts else None

    def region_role(self, region: str) -> Optional[str]:
        for ns in self.namespaces(region):
            role = ns.annotations.get(ann.REGION_ROLE)
            if isinstance(role, str):
                return role
        return None

    @property
    def primary_region(self) -> Optional[str]:
        """The region annotated primary; else the only region; else the non-replica database's."""
        for region in self.regions:
            if self.region_role(region) == "primary":
                return region
        if len(self.regions) == 1:
            return self.regions[0]
        primaries = {c.obj.region for c in self.clusters if not c.is_replica}
        return primaries.pop() if len(primaries) == 1 else None

    @property
    def backup_regions(self) -> list[str]:
        primary = self.primary_region
        return [r for r in self.regions if r != primary and self.region_role(r) in (None, "backup")]

    def namespace_annotation(self, region: str, key: str) -> Any:
        for ns in self.namespaces(region):
            if key in ns.annotations:
                return ns.annotations[key]
        return None

    # ---- data tiers ------------------------------------------------------------------

    def config_entries(self, region: Optional[str], namespace: Optional[str], names: set[str]) -> Iterator[tuple[Obj, str, str]]:
        """(ConfigMap, key, text) for ConfigMaps with one of ``names`` in a region/namespace."""
        for cm in self.kind("ConfigMap"):
            if cm.region == region and cm.namespace == namespace and cm.name in names:
                for key, text in as_dict(cm.body.get("data")).items():
                    if isinstance(text, str):
                        yield cm, key, text

    def pools(self) -> list[Pool]:
        """PgBouncer pools: each workload mounting a ConfigMap that holds a [pgbouncer] ini."""
        pools = []
        for w in self.workloads:
            spec = w.pod_spec
            candidates = [
                (cm, key, sections)
                for cm, key, text in self.config_entries(w.region, w.obj.namespace, mounted_config_maps(spec))
                if key.endswith(".ini")
                for sections in [ini_sections(text)]
                if "pgbouncer" in sections
            ]
            if len(candidates) > 1:  # several ini files in the mounted ConfigMaps: the one its command names
                words = " ".join(w for _, c in containers(spec) for w in command_line(c))
                named = [c for c in candidates if c[1] in words]
                candidates = named or candidates[:1]
            for cm, key, sections in candidates[:1]:
                pools.append(Pool(workload=w, config=cm, key=key, sections=sections))
        return pools

    def redis_servers(self) -> list[RedisServer]:
        servers = []
        for w in self.workloads:
            spec = w.pod_spec
            confs = [
                (cm, key, text)
                for cm, key, text in self.config_entries(w.region, w.obj.namespace, mounted_config_maps(spec))
                if key.endswith("redis.conf")
            ]
            if not confs:
                continue
            container = redis_server_container(spec)
            if container is None:
                continue
            cm, key, text = confs[0]
            servers.append(RedisServer(workload=w, container=container, config=cm, key=key, directives=redis_directives(text)))
        return servers

    def cluster(self, region: Optional[str], name: Any) -> Optional[PgCluster]:
        for c in self.clusters:
            if c.obj.region == region and c.name == name:
                return c
        return None


def redis_server_container(spec: dict) -> Optional[dict]:
    """The container running redis-server (not Sentinel, not an exporter)."""
    found = []
    for _, c in containers(spec, init=False):
        words = " ".join(command_line(c)).lower()
        name = container_name(c).lower()
        if "sentinel" in words or "sentinel" in name or "exporter" in name:
            continue
        if "redis-server" in words or name == "redis":
            found.append(c)
    return found[0] if found else None


def _region_from_parents(resource: Any) -> Optional[str]:
    """The tikit:platform:Region component a resource sits under (its name is the region)."""
    seen = 0
    cur = getattr(resource, "parent", None)
    while cur is not None and seen < 50:
        if getattr(cur, "resource_type", None) == REGION_TYPE:
            return getattr(cur, "name", None)
        cur = getattr(cur, "parent", None)
        seen += 1
    return None
