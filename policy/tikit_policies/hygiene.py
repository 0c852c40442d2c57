"""Kubernetes hygiene: pinned images, resources, probes, Pod Security "restricted", no host
access, explicit names and recommended labels, no bare Pods, no stray external Services."""

from __future__ import annotations

import re
from typing import Callable

from tikit.images import APP_REPOSITORIES

from . import annotations as ann
from .base import ADVISORY, boolean, choice, resource_policy, schema, strings
from .model import CLUSTER_SCOPED, CNPG_GROUP, Obj, container_name, containers, pod_spec, pod_template
from .parse import UNKNOWN, as_dict, as_list, get, image_problem, mib, quantity

AREA = "hygiene"
Say = Callable[[str], None]

LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod")
RECOMMENDED_LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
]
# Volume types the "restricted" Pod Security profile allows.
RESTRICTED_VOLUMES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)


# ---- no latest or untagged images ------------------------------------------------------


def _images(obj: Obj, _cfg: dict, say: Say) -> None:
    spec = pod_spec(obj)
    if spec is not None:
        for field, c in containers(spec):
            problem = image_problem(c.get("image"))
            if problem:
                say(
                    f"{obj.ref}: {field} '{container_name(c)}' image '{c.get('image')}' {problem}; "
                    "pin a version tag or a sha256 digest"
                )
    if obj.is_("Cluster", CNPG_GROUP) and "imageName" in obj.spec:
        problem = image_problem(obj.spec["imageName"])
        if problem:
            say(f"{obj.ref}: spec.imageName '{obj.spec['imageName']}' {problem}; pin the PostgreSQL version (e.g. ':17.6')")


image_pinned = resource_policy(
    name="image-pinned",
    description="Container images are pinned to a version tag or digest: no 'latest', no untagged images.",
    check=_images,
    remediation="Set the image to an explicit version tag (repo/name:1.2.3) or a digest (@sha256:...) in the stack settings.",
    area=AREA,
)


# ---- digests -----------------------------------------------------------------------------


def _image_refs(obj: Obj) -> list[tuple[str, str]]:
    """(where, image) of every image an object runs: containers, a CNPG Cluster's
    imageName, an EnvoyProxy's container image when it sets one, a k6 TestRun's pods."""
    out = []
    spec = pod_spec(obj)
    if spec is not None:
        out += [(f"{field} '{container_name(c)}'", c.get("image")) for field, c in containers(spec)]
    if obj.is_("Cluster", CNPG_GROUP) and "imageName" in obj.spec:
        out.append(("spec.imageName", obj.spec["imageName"]))
    envoy = get(obj.spec, "provider", "kubernetes", "envoyDeployment", "container", "image")
    if obj.kind == "EnvoyProxy" and envoy:
        out.append(("envoyDeployment.container.image", envoy))
    if obj.kind == "TestRun" and obj.group == K6_GROUP:
        out += [(f"spec.{part}.image", get(obj.spec, part, "image")) for part in K6_PODS if get(obj.spec, part, "image")]
    return [(w, i) for w, i in out if isinstance(i, str)]


def _digests(obj: Obj, cfg: dict, say: Say) -> None:
    environment = obj.labels.get(ann.ENVIRONMENT_LABEL)
    if environment not in cfg["environments"]:
        return
    apps = tuple(cfg["appRepositories"])
    for where, image in _image_refs(obj):
        if DIGESTED.search(image):
            continue
        if image.startswith(apps):
            if cfg["requireAppDigest"]:
                say(
                    f"{obj.ref}: {where} image '{image}' has no digest; a deploy takes the platform's own images "
                    "from the release that built them, as name:tag@sha256:... (python -m preview app-images)"
                )
        else:
            say(
                f"{obj.ref}: {where} third-party image '{image}' is pinned by tag only in {environment}; "
                "a tag can move, a digest cannot: use name:tag@sha256:... from a public record (tikit/images.py)"
            )


DIGESTED = re.compile(r"@sha256:[a-f0-9]{64}$")
# The k6-operator's TestRun and the pods it starts.
K6_GROUP = "k6.io"
K6_PODS = ("runner", "initializer", "starter")

image_digest = resource_policy(
    name="image-digest",
    description="In staging and prod every third-party image is pinned by digest; with requireAppDigest (deploys) the platform's own images too.",
    check=_digests,
    remediation="Use the pins of tikit/images.py (refresh them with `make images`); deploys set the app images with `python -m preview app-images`.",
    area=AREA,
    config=schema(
        environments=strings(["staging", "prod"], "Environments (tikit.app/environment) whose images must carry a digest."),
        appRepositories=strings(list(APP_REPOSITORIES), "Repository prefixes of the platform's own images."),
        requireAppDigest=boolean(False, "Refuse app images without a digest (the deploy workflow's policy config sets it)."),
    ),
)


# ---- requests and limits ----------------------------------------------------------------


def _resources(obj: Obj, cfg: dict, say: Say) -> None:
    def check(where: str, res: dict) -> None:
        requests, limits = as_dict(res.get("requests")), as_dict(res.get("limits"))
        missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in requests]
        missing += ["limits.memory"] if "memory" not in limits else []
        if cfg["requireCpuLimit"] and "cpu" not in limits:
            missing.append("limits.cpu")
        if missing:
            say(f"{where} has no {', '.join(missing)}; set them with kube.resources(cpu, memory)")
        req_mem, lim_mem = quantity(requests.get("memory")), quantity(limits.get("memory"))
        if req_mem is not None and lim_mem is not None and req_mem > lim_mem:
            say(f"{where} requests.memory {mib(req_mem)} exceeds limits.memory {mib(lim_mem)}; the pod cannot be scheduled")

    spec = pod_spec(obj)
    if spec is not None:
        for field, c in containers(spec):
            if field == "ephemeralContainers":  # debug containers take no resources
                continue
            check(f"{obj.ref}: {field} '{container_name(c)}'", as_dict(c.get("resources")))
    if obj.is_("Cluster", CNPG_GROUP):
        check(f"{obj.ref}: spec.resources", as_dict(obj.spec.get("resources")))


container_resources = resource_policy(
    name="container-resources",
    description="Every container sets CPU and memory requests and a memory limit, and requests never exceed limits.",
    check=_resources,
    remediation="Build the resources block with kube.resources(cpu, memory) from the tier's settings.",
    area=AREA,
    config=schema(requireCpuLimit=boolean(False, "Also require a CPU limit (Guaranteed QoS everywhere).")),
)


# ---- probes ------------------------------------------------------------------------------


def _probes(obj: Obj, cfg: dict, say: Say) -> None:
    if obj.kind not in LONG_RUNNING or obj.name in cfg["exemptWorkloads"]:
        return
    spec = pod_spec(obj) or {}
    for _, c in containers(spec, init=False):
        # A container with ports serves something: readiness gates its endpoints.  One
        # without (a queue consumer) still needs liveness, or a hung process runs forever.
        required = cfg["serving"] if as_list(c.get("ports")) else cfg["other"]
        missing = [p for p in required if p not in c]
        if missing:
            say(
                f"{obj.ref}: container '{container_name(c)}' has no {', '.join(missing)}; add "
                f"{'one' if len(missing) == 1 else 'them'} with kube.http_probe/tcp_probe/exec_probe"
            )


_PROBES = ["livenessProbe", "readinessProbe", "startupProbe"]
container_probes = resource_policy(
    name="container-probes",
    description="Long-running containers declare a liveness probe, and a readiness probe when they expose ports.",
    check=_probes,
    remediation="Add livenessProbe (and readinessProbe for containers with ports) with kube.http_probe, kube.tcp_probe or kube.exec_probe.",
    area=AREA,
    config=schema(
        serving=strings(["livenessProbe", "readinessProbe"], "Probes a container with ports must declare.", enum=_PROBES),
        other=strings(["livenessProbe"], "Probes a container without ports must declare.", enum=_PROBES),
        exemptWorkloads=strings(
            ["capacity-buffer"],
            "Workloads whose containers run no process that can hang or serve: the warm headroom's pause containers.",
        ),
    ),
)


# ---- Pod Security "restricted" -------------------------------------------------------------


def _restricted(obj: Obj, _cfg: dict, say: Say) -> None:
    spec = pod_spec(obj)
    if spec is None:
        return
    pod_ctx = as_dict(spec.get("securityContext"))
    problems: list[str] = []
    if get(pod_ctx, "runAsUser") == 0:
        problems.append("pod securityContext.runAsUser is 0 (root)")
    pod_seccomp = get(pod_ctx, "seccompProfile", "type")
    for field, c in containers(spec):
        ctx = as_dict(c.get("securityContext"))
        who = f"{field} '{container_name(c)}'"
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        if non_root is not True and non_root is not UNKNOWN:
            problems.append(f"{who} does not set runAsNonRoot: true")
        if ctx.get("runAsUser") == 0:
            problems.append(f"{who} runs as user 0")
        if ctx.get("allowPrivilegeEscalation") is not False and field != "ephemeralContainers":
            problems.append(f"{who} does not set allowPrivilegeEscalation: false")
        drop = [str(x).upper() for x in as_list(get(ctx, "capabilities", "drop"))]
        if "ALL" not in drop and field != "ephemeralContainers":
            problems.append(f"{who} does not drop ALL capabilities")
        added = [str(x) for x in as_list(get(ctx, "capabilities", "add")) if str(x).upper() not in ("NET_BIND_SERVICE",)]
        if added:
            problems.append(f"{who} adds capabilities {', '.join(added)} (only NET_BIND_SERVICE is allowed)")
        seccomp = get(ctx, "seccompProfile", "type", default=pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost", UNKNOWN):
            problems.append(f"{who} has seccompProfile {seccomp or 'unset'} (RuntimeDefault or Localhost required)")
    for vol in as_list(spec.get("volumes")):
        kinds = [k for k in as_dict(vol) if k != "name"]
        bad = [k for k in kinds if k not in RESTRICTED_VOLUMES and k != "hostPath"]  # hostPath: no-host-path
        if bad:
            problems.append(f"volume '{get(vol, 'name')}' is of type {bad[0]}")
    for problem in problems:
        say(f"{obj.ref}: {problem}; use kube.pod_security() and kube.container_security()")


restricted_security_context = resource_policy(
    name="restricted-security-context",
    description='Pods meet the Pod Security "restricted" profile: non-root, no privilege escalation, ALL capabilities dropped, RuntimeDefault seccomp, restricted volume types.',
    check=_restricted,
    remediation="Use kube.pod_security() for the pod and kube.container_security() for every container.",
    area=AREA,
)


# ---- privileged, host namespaces, hostPath ------------------------------------------------


def _privileged(obj: Obj, _cfg: dict, say: Say) -> None:
    spec = pod_spec(obj)
    for field, c in containers(spec or {}):
        if get(c, "securityContext", "privileged") is True:
            say(f"{obj.ref}: {field} '{container_name(c)}' is privileged; remove securityContext.privileged")


no_privileged = resource_policy(
    name="no-privileged-containers",
    description="No container runs privileged.",
    check=_privileged,
    remediation="Remove securityContext.privileged (kube.container_security() sets it to false).",
    area=AREA,
)


def _host_namespaces(obj: Obj, _cfg: dict, say: Say) -> None:
    spec = pod_spec(obj)
    if spec is None:
        return
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag) is True:
            say(f"{obj.ref}: spec.{flag} is true; pods must not share the node's namespaces")
    for field, c in containers(spec):
        for port in as_list(c.get("ports")):
            if get(port, "hostPort") not in (None, 0):
                say(f"{obj.ref}: {field} '{container_name(c)}' binds hostPort {get(port, 'hostPort')}; expose it through a Service")


no_host_namespaces = resource_policy(
    name="no-host-namespaces",
    description="Pods do not use the host network, PID or IPC namespaces, nor host ports.",
    check=_host_namespaces,
    remediation="Drop hostNetwork/hostPID/hostIPC/hostPort; reach pods through Services.",
    area=AREA,
)


def _host_path(obj: Obj, _cfg: dict, say: Say) -> None:
    for vol in as_list((pod_spec(obj) or {}).get("volumes")):
        if "hostPath" in as_dict(vol):
            say(f"{obj.ref}: volume '{get(vol, 'name')}' mounts hostPath {get(vol, 'hostPath', 'path')}; use an emptyDir or a PVC")
    if obj.kind == "PersistentVolume" and "hostPath" in obj.spec:
        say(f"{obj.ref}: is a hostPath PersistentVolume; use a StorageClass")


no_host_path = resource_policy(
    name="no-host-path",
    description="Pods mount no hostPath volumes, and no PersistentVolume is backed by a host path.",
    check=_host_path,
    remediation="Replace hostPath volumes with emptyDir (scratch) or a PersistentVolumeClaim (data).",
    area=AREA,
)


# ---- names and labels ---------------------------------------------------------------------


def _explicit_name(obj: Obj, _cfg: dict, say: Say) -> None:
    if not obj.name:
        say(f"{obj.kind} ({obj.urn.rsplit('::', 1)[-1]}) has no metadata.name: Pulumi would auto-name it; set an explicit name from tikit/names.py")
    elif obj.annotations.get("pulumi.com/autonamed") == "true" or obj.metadata.get("generateName"):
        say(f"{obj.ref}: is auto-named; set an explicit metadata.name from tikit/names.py")


explicit_names = resource_policy(
    name="explicit-names",
    description="Every Kubernetes object sets metadata.name explicitly (no auto-naming).",
    check=_explicit_name,
    remediation="Pass an explicit metadata.name (kube.metadata(name, ...)) with the name from tikit/names.py.",
    area=AREA,
)


def _labels(obj: Obj, cfg: dict, say: Say) -> None:
    required = list(cfg["labels"])
    missing = [k for k in required if not obj.labels.get(k)]
    if missing:
        say(f"{obj.ref}: missing label(s) {', '.join(missing)}; build metadata with kube.metadata()")
    template = pod_template(obj)
    if template is not None and obj.kind != "Pod":
        labels = as_dict(get(template, "metadata", "labels"))
        missing = [k for k in required if not labels.get(k)]
        if missing:
            say(f"{obj.ref}: pod template misses label(s) {', '.join(missing)}; use kube.labels() for the template")


recommended_labels = resource_policy(
    name="recommended-labels",
    description="Every object and pod template carries the app.kubernetes.io recommended labels.",
    check=_labels,
    remediation="Build metadata with kube.metadata() and pod template labels with kube.labels().",
    area=AREA,
    config=schema(labels=strings(RECOMMENDED_LABELS, "Labels every object must carry.")),
)


def _bare_pod(obj: Obj, _cfg: dict, say: Say) -> None:
    if obj.kind == "Pod":
        say(f"{obj.ref}: is a bare Pod; nothing reschedules it when its node goes; run it from a Deployment, StatefulSet or Job")


no_bare_pods = resource_policy(
    name="no-bare-pods",
    description="No bare Pods: every pod belongs to a controller that reschedules it.",
    check=_bare_pod,
    remediation="Wrap the pod in a Deployment (stateless), StatefulSet (stateful) or Job/CronJob (batch).",
    area=AREA,
)


# ---- Services ------------------------------------------------------------------------------

GATEWAY_OWNER_LABEL = "gateway.envoyproxy.io/owning-gateway-name"


def _service_exposure(obj: Obj, cfg: dict, say: Say) -> None:
    if obj.kind != "Service":
        return
    type_ = obj.spec.get("type", "ClusterIP")
    gateway = GATEWAY_OWNER_LABEL in obj.labels or obj.labels.get("app.kubernetes.io/component") in cfg["gatewayComponents"]
    if type_ in ("NodePort", "LoadBalancer") and not gateway:
        say(
            f"{obj.ref}: is of type {type_}; only the gateway's Service may be reachable from outside the cluster; "
            "use ClusterIP and route through the Gateway"
        )
    if as_list(obj.spec.get("externalIPs")):
        say(f"{obj.ref}: sets externalIPs {', '.join(map(str, obj.spec['externalIPs']))}; remove them and route through the Gateway")


service_exposure = resource_policy(
    name="service-exposure",
    description="No NodePort or LoadBalancer Services (nor externalIPs) except the gateway's.",
    check=_service_exposure,
    remediation="Make the Service ClusterIP and expose it through an HTTPRoute on the Gateway.",
    area=AREA,
    config=schema(
        gatewayComponents=strings(["gateway"], "app.kubernetes.io/component values of the gateway's own Services.")
    ),
)


# ---- namespaces -----------------------------------------------------------------------------


def _namespace_pss(obj: Obj, cfg: dict, say: Say) -> None:
    """The platform's namespace always enforces the level; an operator's namespace may enforce
    less only with its reason written on it (the annotation), never Tikit's own namespace
    (the one that carries the region-role annotation)."""
    if obj.kind != "Namespace":
        return
    level = obj.labels.get("pod-security.kubernetes.io/enforce")
    if level == cfg["level"]:
        return
    reason = (obj.annotations.get(ann.POD_SECURITY_EXCEPTION) or "").strip()
    if reason and ann.REGION_ROLE not in obj.annotations and level in ("baseline", "privileged"):
        return
    hint = "" if ann.REGION_ROLE in obj.annotations else f", or give an operator's reason in {ann.POD_SECURITY_EXCEPTION}"
    say(
        f"{obj.ref}: pod-security.kubernetes.io/enforce is {level or 'unset'}, expected {cfg['level']}; "
        f"label the namespace so admission rejects non-compliant pods{hint}"
    )


namespace_pod_security = resource_policy(
    name="namespace-pod-security",
    description='Namespaces enforce the Pod Security "restricted" profile through admission labels.',
    check=_namespace_pss,
    remediation="Label the Namespace pod-security.kubernetes.io/enforce=restricted (regions.py does).",
    area=AREA,
    config=schema(level=choice("restricted", ["baseline", "restricted"], "Pod Security level namespaces must enforce.")),
)


def _namespaced(obj: Obj, cfg: dict, say: Say) -> None:
    if obj.kind in CLUSTER_SCOPED:
        return
    ns = obj.namespace
    if not ns:
        say(f"{obj.ref}: has no metadata.namespace; it would land in the provider's default namespace; set it from the Target")
    elif ns in cfg["forbidden"]:
        say(f"{obj.ref}: is in namespace '{ns}'; put it in the platform namespace")


namespaced_objects = resource_policy(
    name="namespaced-objects",
    description="Namespaced objects set metadata.namespace explicitly and never use default or kube-system.",
    check=_namespaced,
    remediation="Build metadata with kube.metadata(..., target) so the namespace comes from the Target.",
    area=AREA,
    level=ADVISORY,
    config=schema(forbidden=strings(["default", "kube-system", "kube-public"], "Namespaces objects must not use.")),
)


POLICIES = [
    image_pinned,
    image_digest,
    container_resources,
    container_probes,
    restricted_security_context,
    no_privileged,
    no_host_namespaces,
    no_host_path,
    explicit_names,
    recommended_labels,
    no_bare_pods,
    service_exposure,
    namespace_pod_security,
    namespaced_objects,
]
