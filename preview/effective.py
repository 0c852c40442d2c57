"""What a stack actually runs, read back from the rendered objects for plan.md: where each
region deploys, the replicas, CPU, memory and image of every tier, the PostgreSQL clusters
and their backups, the Redis topology, and every image.

Everything comes from the plan (the objects `pulumi up` would apply), not from settings, so
the table shows the result of presets, stack overrides and derived values together."""

from __future__ import annotations

from typing import Any, Iterable, Optional

from tikit_policies.model import Obj, Stack, Workload, containers, container_name, get, to_obj
from tikit_policies.parse import as_dict, mib, redis_bytes

from tikit.images import is_app

from .plan import Plan

UNSET = "-"
ENVOY_PROXY = ("EnvoyProxy", "gateway.envoyproxy.io")
# What plan.md says for a region whose stack installs no operator (regions[].addons).
ADDONS_NOT_INSTALLED = {
    "external": "none: the cluster's own operators (`addons: external`)",
    "rendered": "none: YAML only, for a cluster that already runs the operators of `tikit/versions.py`",
}
ENVOY_IMAGE = "Envoy Gateway's default"


def stack_model(plan: Plan) -> Stack:
    return Stack(filter(None, (to_obj(r.type, r.inputs, r.urn, region=r.region) for r in plan.kubernetes_objects())))


def _resources(resources: Any) -> tuple[str, str]:
    """("request / limit" CPU, "request / limit" memory) of a container's resources."""
    req, lim = as_dict(get(resources, "requests")), as_dict(get(resources, "limits"))

    def pair(key: str) -> str:
        return f"{req.get(key, UNSET)} / {lim.get(key, UNSET)}"

    return pair("cpu"), pair("memory")


def _replicas(w: Workload) -> str:
    if w.kind == "DaemonSet":
        return "one per node"
    a = w.autoscaler
    if a is None:
        return str(w.spec_replicas if w.spec_replicas is not None else 1)
    floors = a.cron_floors()
    peak = f", peak floor {max(floors)}" if floors else ""
    return f"{a.min}-{a.max} ({a.obj.kind}{peak})"


def _container_rows(region: str, workload: str, replicas: str, spec: dict) -> Iterable[tuple]:
    for _, c in containers(spec):
        cpu, memory = _resources(c.get("resources"))
        yield region, workload, replicas, container_name(c), f"`{c.get('image', UNSET)}`", cpu, memory


def workload_rows(stack: Stack) -> list[tuple]:
    rows: list[tuple] = []
    for w in stack.workloads:
        rows += _container_rows(w.region or "global", f"{w.kind}/{w.name}", _replicas(w), w.pod_spec)
    for job in stack.kind("CronJob"):
        spec = as_dict(get(job.spec, "jobTemplate", "spec", "template", "spec"))
        rows += _container_rows(job.region or "global", f"CronJob/{job.name}", f"`{job.spec.get('schedule')}`", spec)
    for c in stack.clusters:
        cpu, memory = _resources(c.obj.spec.get("resources"))
        image = f"`{c.obj.spec.get('imageName', UNSET)}`"
        rows.append((c.obj.region or "global", f"Cluster/{c.name}", str(c.instances), "postgres", image, cpu, memory))
    for proxy in stack.kind(*ENVOY_PROXY):
        deployment = as_dict(get(proxy.spec, "provider", "kubernetes", "envoyDeployment"))
        hpa = as_dict(get(proxy.spec, "provider", "kubernetes", "envoyHpa"))
        replicas = f"{hpa.get('minReplicas', 1)}-{hpa.get('maxReplicas')} (HPA)" if hpa else str(deployment.get("replicas", 1))
        cpu, memory = _resources(get(deployment, "container", "resources"))
        image = f"`{get(deployment, 'container', 'image')}`" if get(deployment, "container", "image") else ENVOY_IMAGE
        rows.append((proxy.region or "global", f"EnvoyProxy/{proxy.name}", replicas, "envoy", image, cpu, memory))
    return sorted(rows, key=lambda r: (r[0], r[1], r[3]))


def _object_store(stack: Stack, region: Optional[str], namespace: Optional[str], name: str) -> Optional[Obj]:
    return stack.find("ObjectStore", region, namespace, name)


def postgres_rows(stack: Stack) -> list[tuple]:
    rows = []
    for c in stack.clusters:
        o = c.obj
        role = f"replica of {c.upstream_name()}" if c.is_replica else "primary"
        schedules = [
            f"`{b.spec.get('schedule')}`"
            for b in stack.kind("ScheduledBackup")
            if b.region == o.region and get(b.spec, "cluster", "name") == c.name
        ]
        stores = [_object_store(stack, o.region, o.namespace, s) for s in c.wal_archiver_stores()]
        archive = ", ".join(
            f"{get(s.spec, 'configuration', 'destinationPath')} (keeps {s.spec.get('retentionPolicy', 'all')})"
            for s in stores
            if s is not None
        )
        rows.append(
            (
                o.region or "global",
                c.name,
                role,
                c.instances,
                get(o.spec, "storage", "size", default=UNSET),
                get(o.spec, "walStorage", "size", default=UNSET),
                c.parameter("max_connections", 100),
                ", ".join(schedules) or "none",
                archive or "none",
            )
        )
    return sorted(rows, key=lambda r: (r[0], r[1]))


def _persistence(d: dict[str, list[list[str]]]) -> str:
    def last(key: str) -> Optional[str]:
        values = d.get(key)
        return " ".join(values[-1]) if values else None

    aof = f"AOF fsync {last('appendfsync') or 'everysec'}" if last("appendonly") == "yes" else "no AOF"
    saves = [" ".join(v) for v in d.get("save", []) if v and v != [""] and v != ['""']]
    rdb = "RDB save " + ", ".join(saves) if saves else "no RDB"
    return f"{aof}; {rdb}"


def _bytes(value: str) -> str:
    n = redis_bytes(value)
    return UNSET if n is None else mib(n)


def redis_rows(stack: Stack) -> list[tuple]:
    rows = []
    for server in stack.redis_servers():
        w = server.workload
        sentinels = [
            s
            for s in stack.workloads
            if s.region == w.region
            and s.obj.namespace == w.obj.namespace
            and any("sentinel" in container_name(c).lower() for _, c in containers(s.pod_spec, init=False))
            and s is not w
        ]
        maxmemory = server.directives.get("maxmemory")
        rows.append(
            (
                w.region or "global",
                f"{w.kind}/{w.name}",
                _replicas(w),
                ", ".join(f"{s.kind}/{s.name} x {_replicas(s)}" for s in sentinels) or "none",
                _persistence(server.directives),
                _bytes(" ".join(maxmemory[-1])) if maxmemory else UNSET,
            )
        )
    return sorted(rows)


def target_rows(plan: Plan) -> list[tuple]:
    targets = plan.targets()
    regions = as_dict(plan.outputs.get("regions"))
    rows = []
    for region in plan.regions:
        out = as_dict(regions.get(region))
        addons = out.get("addons")
        if isinstance(addons, dict) and addons:
            installed = ", ".join(f"{k} {v}" for k, v in sorted(addons.items()))
        else:
            installed = ADDONS_NOT_INSTALLED.get(str(addons), f"none ({addons})")
        rows.append((region, out.get("role", UNSET), targets.get(region, "no provider"), installed))
    return rows


def pinning(image: str) -> str:
    """How an image reference (as shown, in backquotes) is pinned."""
    ref = image.strip("`")
    if ref == image:  # not a reference (the gateway's default image)
        return "by its chart's release"
    if "@sha256:" in ref:
        return "digest"
    return "digest supplied at deploy" if is_app(ref) else "tag only"


def images(rows: list[tuple]) -> list[tuple]:
    where: dict[str, list[str]] = {}
    for region, workload, _, container, image, *_ in rows:
        where.setdefault(image, []).append(f"{region} {workload} ({container})")
    return [(image, pinning(image), "; ".join(sorted(set(w)))) for image, w in sorted(where.items())]


def section(plan: Plan, table) -> list[str]:
    """The plan.md sections; ``table`` renders (header, rows) as Markdown lines."""
    stack = stack_model(plan)
    workloads = workload_rows(stack)
    return [
        "## Where each region deploys",
        "",
        *table(["region", "role", "deploys to", "add-ons this stack installs"], target_rows(plan)),
        "",
        "## Effective settings",
        "",
        "Read back from the rendered objects: presets, stack overrides and derived values together.",
        "",
        "### Workloads",
        "",
        *table(["region", "workload", "replicas / schedule", "container", "image", "CPU request / limit", "memory request / limit"], workloads),
        "",
        "### PostgreSQL",
        "",
        *table(
            ["region", "cluster", "role", "instances", "storage", "WAL storage", "max_connections", "base backups", "archive (retention)"],
            postgres_rows(stack),
        ),
        "",
        "### Redis",
        "",
        *table(["region", "servers", "replicas", "sentinels", "persistence", "maxmemory"], redis_rows(stack)),
        "",
        "### Images",
        "",
        "Third-party images carry the digests of `tikit/images.py`. The platform's own images keep "
        "a tag in the stack files; the deploy sets the digest of the release that built them "
        "(`python -m preview app-images`). The operators run the images of their pinned charts "
        "(`tikit/versions.py`).",
        "",
        *table(["image", "pinned", "used by"], images(workloads)),
        "",
    ]


__all__ = ["section", "stack_model"]
