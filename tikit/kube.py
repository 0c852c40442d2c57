"""Kubernetes boilerplate, written once: labels, metadata, the Pod Security "restricted"
contexts, probes, resource blocks, spread constraints, PDBs and custom resources.

Components pass parameters for the shapes they need; they never copy these blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from tikit import names

MANAGED_BY = "pulumi"
ZONE_KEY = "topology.kubernetes.io/zone"
HOST_KEY = "kubernetes.io/hostname"


class TargetOptions(pulumi.ResourceOptions):
    """ResourceOptions that remember their Target, so ``custom()`` can make a custom
    resource wait for the add-on that serves its kind."""

    target: Optional["Target"] = None


@dataclass(frozen=True)
class Target:
    """Where a component's objects go: one region's cluster and namespace."""

    region: str
    namespace: str
    provider: pulumi.ProviderResource
    environment: str
    # Resources every object of the region waits for (the Namespace).  Carried here, not
    # as a component's depends_on: Pulumi records depends_on per resource and does not
    # hand a component's list down to its children.
    requires: tuple[pulumi.Resource, ...] = ()
    # API group -> the add-on (a Helm Chart) that serves it in this region's cluster; empty
    # where the cluster's own platform team runs the operators (regions[].addons: external).
    addons: Mapping[str, pulumi.Resource] = field(default_factory=dict)

    def opts(
        self, parent: pulumi.Resource, *, depends_on: Sequence[pulumi.Resource] = (), **kwargs: Any
    ) -> pulumi.ResourceOptions:
        options = TargetOptions(
            parent=parent, provider=self.provider, depends_on=[*self.requires, *depends_on], **kwargs
        )
        options.target = self
        return options

    def rname(self, name: str) -> str:
        """Pulumi resource name: unique per region, so URNs never collide."""
        return f"{name}-{self.region}"


def labels(name: str, component: str, target: Target, version: str = "") -> dict[str, str]:
    """The app.kubernetes.io recommended labels."""
    out = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": f"{name}-{target.region}",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": names.PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "tikit.app/region": target.region,
        "tikit.app/environment": target.environment,
    }
    if version:
        out["app.kubernetes.io/version"] = version
    return out


def selector(name: str, target: Target) -> dict[str, str]:
    """Stable selector labels (a subset of labels(); never includes the version)."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": f"{name}-{target.region}"}


def image_version(image: str) -> str:
    """Tag of an image reference, for app.kubernetes.io/version (label-safe)."""
    ref = image.partition("@")[0].rsplit("/", 1)[-1]
    tag = ref.partition(":")[2] or image.partition("@sha256:")[2][:12]
    # A tag may start with '_' and end with '.' or '-' and run to 128 characters; a label
    # value is at most 63 and starts and ends alphanumeric (IsValidLabelValue).
    return tag[:63].strip("._-")


def metadata(
    name: str,
    component: str,
    target: Target,
    *,
    app: Optional[str] = None,
    version: str = "",
    extra_labels: Optional[Mapping[str, str]] = None,
    annotations: Optional[Mapping[str, str]] = None,
    namespaced: bool = True,
) -> dict[str, Any]:
    """ObjectMeta with an explicit name and the recommended labels.

    ``app`` is the application the object belongs to (defaults to ``name``), so that a
    Service named ``redis-headless`` still carries ``app.kubernetes.io/name: redis``.
    """
    meta: dict[str, Any] = {"name": name, "labels": {**labels(app or name, component, target, version), **(extra_labels or {})}}
    if namespaced:
        meta["namespace"] = target.namespace
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


# --- Pod Security "restricted" ---------------------------------------------------------


def pod_security(run_as_user: int = 10001, fs_group: Optional[int] = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    ctx["fsGroup"] = fs_group if fs_group is not None else run_as_user
    return ctx


def container_security(read_only_root: bool = True) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --- Probes and resources --------------------------------------------------------------


@dataclass(frozen=True)
class ProbeTiming:
    """How often a probe runs, how long one try may take, how many failures in a row count."""

    period: int
    timeout: int
    failures: int


def http_probe(path: str, port: Any, *, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def tcp_probe(port: Any, *, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "tcpSocket": {"port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def exec_probe(command: Sequence[str], *, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": list(command)},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def resources(cpu: str, memory: str, *, guaranteed: bool = False) -> dict[str, Any]:
    """Memory request == limit always (no OOM surprises); CPU limited only for Guaranteed QoS."""
    limits = {"memory": memory}
    if guaranteed:
        limits["cpu"] = cpu
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}


def env_from_secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


# --- Rollouts and shutdown -------------------------------------------------------------


def rolling_surge() -> dict[str, Any]:
    """Deployment strategy that surges first: a new pod must be ready before an old one
    goes, so a rollout never runs below the current replica count."""
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def pre_stop_sleep(seconds: int) -> Optional[dict[str, Any]]:
    """Container lifecycle with a preStop sleep: endpoint removal reaches the gateway,
    kube-proxy and Service clients while the pod still serves, so a scale-down or rollout
    drops no request.  The kubelet's own sleep action (beta and on by default since
    Kubernetes 1.30, GA in 1.34) needs no shell or `sleep` binary in the image.  A zero
    sleep is valid only from 1.33 on, so 0 means no hook (None)."""
    if seconds == 0:
        return None
    return {"preStop": {"sleep": {"seconds": seconds}}}


# --- Placement -------------------------------------------------------------------------

# The platform's node pools carry this taint (value: the namespace), so only its own pods
# land there and the pools' limits count every pod that can (docs/nodes.md).
DEDICATED_TAINT_KEY = "tikit.app/dedicated"
# Karpenter's pod annotation: no voluntary disruption (consolidation, drift) of the node
# while the pod runs; expiry and spot interruptions still happen.
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"


def dedicated_taint(target: "Target") -> dict[str, Any]:
    return {"key": DEDICATED_TAINT_KEY, "value": target.namespace, "effect": "NoSchedule"}


def dedicated_toleration(target: "Target") -> dict[str, Any]:
    return {"key": DEDICATED_TAINT_KEY, "operator": "Equal", "value": target.namespace, "effect": "NoSchedule"}


def pool_placement(target: "Target", tier: str) -> dict[str, Any]:
    """What lets a pod onto the platform's node pools, and its rank when they are full:
    the dedicated taint's toleration and the tier's PriorityClass (names.PRIORITY_*)."""
    return {"priorityClassName": names.priority_class(target.namespace, tier), "tolerations": [dedicated_toleration(target)]}



# Weights of preferred scheduling terms (the scheduler accepts 1-100): a strong
# preference outweighs a weak one when both cannot be met.
STRONG_PREFERENCE = 100
WEAK_PREFERENCE = 50


def spread(sel: Mapping[str, str], *, zone_skew: int = 1, node_skew: int = 1) -> list[dict[str, Any]]:
    """Spread over zones (best effort: a region may have one zone) and nodes."""
    return [
        {
            "maxSkew": zone_skew,
            "topologyKey": ZONE_KEY,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(sel)},
        },
        {
            "maxSkew": node_skew,
            "topologyKey": HOST_KEY,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(sel)},
        },
    ]


def anti_affinity(sel: Mapping[str, str], *, required_on_nodes: bool = False) -> dict[str, Any]:
    """Keep replicas of one workload apart: across zones preferred, across nodes required or preferred."""
    term_zone = {"labelSelector": {"matchLabels": dict(sel)}, "topologyKey": ZONE_KEY}
    term_node = {"labelSelector": {"matchLabels": dict(sel)}, "topologyKey": HOST_KEY}
    affinity: dict[str, Any] = {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": STRONG_PREFERENCE, "podAffinityTerm": term_zone}]
    }
    if required_on_nodes:
        affinity["requiredDuringSchedulingIgnoredDuringExecution"] = [term_node]
    else:
        affinity["preferredDuringSchedulingIgnoredDuringExecution"].append({"weight": WEAK_PREFERENCE, "podAffinityTerm": term_node})
    return {"podAntiAffinity": affinity}


# --- Objects ---------------------------------------------------------------------------


def disruption_rule() -> dict[str, Any]:
    """The one disruption rule of every PodDisruptionBudget Tikit declares (its own, and the
    one Envoy Gateway creates from envoyPDB): maxUnavailable 1, never minAvailable.  A drain
    can always evict one pod, even at the minimum replica count or at 0 and 1 replicas, so
    node maintenance never blocks; and voluntary evictions still go one pod at a time."""
    return {"maxUnavailable": 1}


def pdb(
    resource_name: str,
    name: str,
    component: str,
    target: Target,
    sel: Mapping[str, str],
    opts: pulumi.ResourceOptions,
    *,
    app: Optional[str] = None,
) -> k8s.policy.v1.PodDisruptionBudget:
    """A PodDisruptionBudget with disruption_rule() over the pods ``sel`` selects."""
    return k8s.policy.v1.PodDisruptionBudget(
        resource_name,
        metadata=metadata(name, component, target, app=app),
        spec={**disruption_rule(), "selector": {"matchLabels": dict(sel)}},
        opts=opts,
    )


def api_group(api_version: str) -> str:
    """'keda.sh/v1alpha1' -> 'keda.sh'; 'v1' (the core group) -> ''."""
    return api_version.rpartition("/")[0]


def with_addon(api_version: str, opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
    """``opts`` plus a dependency on the add-on that serves ``api_version``'s group in the
    target's cluster, so that one `pulumi up` installs the operator (and its CRDs) first."""
    target = getattr(opts, "target", None)
    chart = target.addons.get(api_group(api_version)) if target is not None else None
    if chart is None:
        return opts
    merged = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[chart]))
    return merged


# The pulumi-kubernetes provider's generic await for any object (4.18+): `pulumi up` waits
# until the JSONPath or condition holds.
WAIT_FOR_ANNOTATION = "pulumi.com/waitFor"


class CustomResourceWithStatus(pulumi.CustomResource):
    """A custom resource whose ``status`` is an output as well (the generic
    apiextensions.CustomResource exposes only what it was given): the same type token, so
    the same URN and the same object; ``status`` is what the cluster reported."""

    status: pulumi.Output[Any]

    def __init__(
        self, resource_name: str, api_version: str, kind: str, meta: Mapping[str, Any], spec: Any,
        opts: pulumi.ResourceOptions,
    ) -> None:
        props = {"apiVersion": api_version, "kind": kind, "metadata": dict(meta), "spec": spec, "status": None}
        # The provider plugin release, as pulumi-kubernetes' own classes request it.
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(version=k8s._utilities.get_version()))
        super().__init__(f"kubernetes:{api_version}:{kind}", resource_name, props, opts)


def custom_with_status(
    resource_name: str, api_version: str, kind: str, meta: Mapping[str, Any], spec: Any, opts: pulumi.ResourceOptions
) -> CustomResourceWithStatus:
    """Like ``custom()``, with the object's status as an output."""
    return CustomResourceWithStatus(resource_name, api_version, kind, meta, spec, with_addon(api_version, opts))


def custom(
    resource_name: str,
    api_version: str,
    kind: str,
    meta: Mapping[str, Any],
    spec: Any,
    opts: pulumi.ResourceOptions,
) -> k8s.apiextensions.CustomResource:
    """A custom resource; it waits for the add-on that serves its kind (with_addon)."""
    return k8s.apiextensions.CustomResource(
        resource_name, api_version=api_version, kind=kind, metadata=dict(meta), spec=spec,
        opts=with_addon(api_version, opts),
    )


# --- scanners ---------------------------------------------------------------------------
#
# Checks of the checkov scanner the platform answers differently on purpose, with the
# reason each object carries as `checkov.io/skip<N>: <check>=<reason>` (checkov reads
# them from the object's own annotations; a reason may not contain "=").  workload()
# derives which apply from the pod spec it declares, so a skip appears only where its
# reason holds: an image pinned by tag alone (third-party) or a CPU limit nobody chose
# to leave out still fails the scan.
SCANNER_ANNOTATION = "checkov.io/skip{n}"
CPU_LIMIT_CHECK = "CKV_K8S_11"
SECRET_ENV_CHECK = "CKV_K8S_35"
DIGEST_CHECK = "CKV_K8S_43"
PULL_ALWAYS_CHECK = "CKV_K8S_15"
LIVENESS_CHECK = "CKV_K8S_8"
READINESS_CHECK = "CKV_K8S_9"
SA_TOKEN_CHECK = "CKV_K8S_38"
SCANNER_REASONS = {
    CPU_LIMIT_CHECK: "no CPU limit by design: throttling adds tail latency, and the CPU requests size the nodes and the autoscalers (docs/sizing.md)",
    SECRET_ENV_CHECK: "the image reads this credential only from its environment; the value comes from a Secret by secretKeyRef and never appears in the manifest",
    DIGEST_CHECK: "the platform's own image: the release supplies its digest at deploy and the image-digest policy refuses a deploy without one (docs/images.md)",
    PULL_ALWAYS_CHECK: "the platform's own image runs by the digest the deploy sets (docs/images.md), so a cached copy is the same image",
    LIVENESS_CHECK: "a placeholder pause container that holds warm node capacity: it serves nothing a probe could check",
    READINESS_CHECK: "a placeholder pause container that holds warm node capacity: it receives no traffic",
    SA_TOKEN_CHECK: "the job acts on the Kubernetes API (kubectl) through a Role limited to the objects it creates and reads",
}


def _pod_spec_of(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    template = spec.get("template") or (spec.get("jobTemplate") or {}).get("spec", {}).get("template") or {}
    return template.get("spec") or {}


def scanner_skips(spec: Mapping[str, Any], *, placeholder: bool = False) -> list[str]:
    """The checks a workload (its spec) answers differently on purpose, see SCANNER_REASONS."""
    from tikit import images

    pod = _pod_spec_of(spec)
    running = [c for c in pod.get("containers") or [] if isinstance(c, Mapping)]
    every = running + [c for c in pod.get("initContainers") or [] if isinstance(c, Mapping)]
    found = []
    if any(isinstance(c.get("resources"), Mapping) and "cpu" not in (c["resources"].get("limits") or {}) for c in every):
        found.append(CPU_LIMIT_CHECK)
    if any(isinstance(e, Mapping) and "secretKeyRef" in (e.get("valueFrom") or {}) for c in every for e in c.get("env") or []):
        found.append(SECRET_ENV_CHECK)
    app_by_tag = [c for c in every if isinstance(c.get("image"), str) and images.is_app(c["image"]) and "@sha256:" not in c["image"]]
    if app_by_tag:
        found += [DIGEST_CHECK, PULL_ALWAYS_CHECK]
    if placeholder:
        found += [LIVENESS_CHECK, READINESS_CHECK]
    if pod.get("automountServiceAccountToken") is True:
        found.append(SA_TOKEN_CHECK)
    return found


def scanner_annotations(spec: Mapping[str, Any], *, placeholder: bool = False) -> dict[str, str]:
    return {
        SCANNER_ANNOTATION.format(n=i): f"{check}={SCANNER_REASONS[check]}"
        for i, check in enumerate(scanner_skips(spec, placeholder=placeholder), start=1)
    }


def workload(cls: Any, resource_name: str, *, metadata: Mapping[str, Any], spec: Mapping[str, Any],
             opts: Optional[pulumi.ResourceOptions] = None, placeholder: bool = False) -> Any:
    """A Deployment, StatefulSet or CronJob (``cls``) whose metadata carries the scanner
    skips its spec justifies (``placeholder``: pods that only hold capacity)."""
    notes = scanner_annotations(spec, placeholder=placeholder)
    meta = dict(metadata)
    if notes:
        meta["annotations"] = {**(meta.get("annotations") or {}), **notes}
    return cls(resource_name, metadata=meta, spec=spec, opts=opts)
