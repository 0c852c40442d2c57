"""Capacity invariants across resources: numbers that live in different objects but must
add up.  Each failure spells out the arithmetic, with the objects the numbers came from.

- clients:   max app replicas x DB connections per replica <= PgBouncer replicas x max_client_conn
- servers:   PgBouncer replicas x (default_pool_size + reserve_pool_size) + reserved slots
             <= max_connections, for the primary and for the read replicas (WAL senders
             have had their own slots, max_wal_senders, since PostgreSQL 12)
- Redis:     maxmemory + fork headroom <= the container's memory limit
- scaling:   autoscaler minimum <= maximum, and PDB minAvailable < the minimum
- requests:  target users x requests per user per minute x (1 + headroom) <= max replicas x
             per-instance capacity (the Deployment's sustainable-requests-per-minute, not the
             autoscaler's scale-up threshold)
"""

from __future__ import annotations

import math
import re
from typing import Optional

from . import annotations as ann
from .base import Report, choice, integer, schema, stack_policy
from .model import Pool, Stack, Workload, command_line, containers
from .parse import as_float, as_int, fmt, get, int_or_percent, mib, quantity, redis_bytes

AREA = "capacity"


def _product(w: Workload, n: float, max_: Optional[int] = None) -> str:
    return f"{fmt(max_ if max_ is not None else (w.max_replicas or 0))} x {fmt(n)} ({w.obj.kind}/{w.name})"


# ---- clients into PgBouncer ----------------------------------------------------------------------


def _client_capacity(stack: Stack, cfg: dict, report: Report) -> None:
    pools = stack.pools()
    pool_workloads = {id(p.workload) for p in pools}
    for region in stack.regions:
        region_pools = [p for p in pools if p.workload.region == region]
        if not region_pools:
            continue  # no pooler tier here: nothing to size against
        clients: list[tuple[Workload, int]] = []
        for w in stack.workloads:
            if w.region != region or id(w) in pool_workloads:
                continue
            declared = w.obj.annotations.get(ann.DB_CONNECTIONS_PER_REPLICA)
            if declared is None:
                if w.database_client:
                    report(
                        f"{w.obj.ref}: reads a database URL but does not declare {ann.DB_CONNECTIONS_PER_REPLICA}; "
                        "annotate the Deployment with its pool size (settings db_connections_per_replica)",
                        w.obj,
                    )
                continue
            n = as_int(declared)
            if n is None or n < 0:
                report(f"{w.obj.ref}: {ann.DB_CONNECTIONS_PER_REPLICA} '{declared}' is not a whole number", w.obj)
                continue
            if w.max_replicas is None:
                continue
            clients.append((w, n))
        if not clients:
            continue
        demand = sum((w.max_replicas or 0) * n for w, n in clients)
        terms = " + ".join(_product(w, n) for w, n in clients)
        for p in region_pools:
            replicas, max_client = p.workload.min_replicas, p.setting("max_client_conn", 100)
            if replicas is None or max_client is None:
                continue
            # A metrics exporter next to PgBouncer holds one client login on each pod.
            exporters = sum(1 for _, c in containers(p.workload.pod_spec, init=False) if "exporter" in str(c.get("name", "")) + str(c.get("image", "")))
            capacity = replicas * (max_client - exporters)
            usable = capacity * cfg["maxUtilisationPercent"] / 100
            if demand > usable:
                share = f" ({cfg['maxUtilisationPercent']}% of {fmt(capacity)})" if cfg["maxUtilisationPercent"] < 100 else ""
                per_pod = f"(max_client_conn {fmt(max_client)} - {exporters} exporter login)" if exporters else f"max_client_conn {fmt(max_client)}"
                report(
                    f"pool {p.workload.name} in {region}: clients may open {terms} = {fmt(demand)} connections, more than "
                    f"{fmt(replicas)} PgBouncer replica(s) x {per_pod} = {fmt(usable)}{share} "
                    f"({p.config.kind}/{p.config.name} {p.key}; every client replica may connect to every pool); raise "
                    "pgbouncer.replicas or maxClientConn, or lower maxReplicas / dbConnectionsPerReplica",
                    p.workload.obj,
                )


pgbouncer_client_capacity = stack_policy(
    name="pgbouncer-client-capacity",
    description="For each PgBouncer pool: max app replicas x DB connections per app replica <= PgBouncer replicas x max_client_conn (less an exporter sidecar's login).",
    check=_client_capacity,
    remediation="Raise pgbouncer.replicas or pgbouncer.maxClientConn, or lower the apps' maxReplicas or dbConnectionsPerReplica.",
    area=AREA,
    config=schema(
        maxUtilisationPercent=integer(
            100, "Share of the pools' client slots the apps may fill at maximum scale.", minimum=1, maximum=100
        )
    ),
)


# ---- server connections into PostgreSQL ------------------------------------------------------------

_SERVICE_RE = re.compile(r"^(?P<cluster>.+)-(?P<role>rw|ro|r)$")


def _pool_target(host: str) -> Optional[tuple[str, str]]:
    """'pg-lagos-rw.tikit.svc.cluster.local' -> ('pg-lagos', 'rw'): the CNPG cluster and service."""
    m = _SERVICE_RE.match(host.split(".", 1)[0])
    return (m.group("cluster"), m.group("role")) if m else None


def _budget(stack: Stack, cfg: dict, report: Report) -> None:
    pools = stack.pools()
    for c in stack.clusters:
        max_conn = c.parameter("max_connections", 100)
        reserved = {
            "superuser_reserved_connections": c.parameter("superuser_reserved_connections", 3),
            "reserved_connections": c.parameter("reserved_connections", 0),
        }
        if max_conn is None or any(v is None for v in reserved.values()):
            continue
        users: dict[str, list[tuple[Pool, int, int]]] = {"rw": [], "ro": [], "r": []}
        for p in pools:
            for host in p.hosts():
                target = _pool_target(host)
                if not target or target[0] != c.name:
                    continue
                local = p.workload.region == c.obj.region
                if not local and stack.cluster(p.workload.region, c.name) is not None:
                    continue  # a same-named cluster in the pool's own region is its target
                per_pod, replicas = p.server_connections_per_pod, p.workload.max_replicas
                if per_pod is not None and replicas is not None:
                    users[target[1]].append((p, replicas, per_pod))
        roles = [("primary", users["rw"] + users["r"])]
        if c.instances > 1:
            roles.append(("each read replica", users["ro"] + users["r"]))
        for role, members in roles:
            if not members:
                continue
            pooled = sum(r * n for _, r, n in members)
            total = pooled + sum(reserved.values()) + cfg["extraConnections"]  # type: ignore[arg-type]
            if total <= max_conn:
                continue
            terms = " + ".join(
                f"{fmt(r)} x {fmt(n)} ({p.workload.name}: default_pool_size + reserve_pool_size)" for p, r, n in members
            )
            slots = " + ".join(f"{k} {fmt(v)}" for k, v in reserved.items())  # type: ignore[arg-type]
            extra = f" + extraConnections {fmt(cfg['extraConnections'])}" if cfg["extraConnections"] else ""
            report(
                f"{c.obj.ref} ({role}): {terms} + {slots}{extra} = {fmt(total)} > max_connections {fmt(max_conn)}; "
                "raise max_connections (postgres.parameters) or lower pgbouncer replicas / defaultPoolSize / reservePoolSize",
                c.obj,
            )


postgres_connection_budget = stack_policy(
    name="postgres-connection-budget",
    description="PgBouncer replicas x (default_pool_size + reserve_pool_size), plus the reserved slots, fit PostgreSQL's max_connections on the primary and on the read replicas.",
    check=_budget,
    remediation="Derive max_connections from the pool sizes (settings.Derived) or shrink the pools.",
    area=AREA,
    config=schema(
        extraConnections=integer(0, "Connections to keep free beyond the pools and the reserved slots.")
    ),
)


# ---- Redis memory ----------------------------------------------------------------------------------


def _redis_memory(stack: Stack, cfg: dict, report: Report) -> None:
    for r in stack.redis_servers():
        w, c = r.workload, r.container
        where = f"{w.obj.ref} container '{c.get('name')}'"
        values = [a[0] for a in r.directives.get("maxmemory", []) if a]
        words = command_line(c)
        for i, word in enumerate(words[:-1]):
            if word == "--maxmemory":
                values.append(words[i + 1])
        maxmemory = redis_bytes(values[-1]) if values else 0
        limit = quantity(get(c, "resources", "limits", "memory"))
        if maxmemory is None:
            continue
        if not maxmemory:
            report(
                f"{where}: maxmemory is not set ({r.config.name} {r.key}); Redis grows until the kernel kills it; set "
                "maxmemory to a share of the memory limit (settings.redis.maxmemoryPercent)",
                w.obj,
            )
            continue
        if limit is None:
            report(f"{where}: has no memory limit to hold maxmemory {mib(maxmemory)} plus the fork; set resources.limits.memory", w.obj)
            continue
        headroom = maxmemory * cfg["forkHeadroomPercent"] / 100
        if maxmemory + headroom > limit:
            report(
                f"{where}: maxmemory {mib(maxmemory)} + fork headroom {cfg['forkHeadroomPercent']}% ({mib(headroom)}) = "
                f"{mib(maxmemory + headroom)} > memory limit {mib(limit)}; a BGSAVE or AOF rewrite fork copies pages while "
                f"clients write, so lower maxmemoryPercent (at most {math.floor(100 * 100 / (100 + cfg['forkHeadroomPercent']))}% "
                "of the limit) or raise redis.memory",
                w.obj,
            )


redis_memory_headroom = stack_policy(
    name="redis-memory-headroom",
    description="Redis maxmemory plus headroom for the copy-on-write fork (BGSAVE, AOF rewrite) fits the container's memory limit.",
    check=_redis_memory,
    remediation="Keep maxmemory at settings.redis.maxmemoryPercent of the limit (60%) or raise redis.memory.",
    area=AREA,
    config=schema(
        forkHeadroomPercent=integer(
            50, "Memory kept free for the fork, as a share of maxmemory (pages written while a child saves).", maximum=200
        )
    ),
)


# ---- autoscaler bounds ------------------------------------------------------------------------------


def _bounds(stack: Stack, _cfg: dict, report: Report) -> None:
    for a in stack.autoscalers:
        lo, hi = a.min, a.max
        what = "minReplicaCount/maxReplicaCount" if a.is_keda else "minReplicas/maxReplicas"
        if lo is None or hi is None:
            continue
        if lo > hi:
            report(f"{a.obj.ref}: minimum {fmt(lo)} > maximum {fmt(hi)} ({what}); the autoscaler cannot satisfy both; fix the tier's settings", a.obj)
            continue
        for floor in a.cron_floors():
            if floor > hi:
                report(
                    f"{a.obj.ref}: cron trigger asks for {fmt(floor)} replicas but maxReplicaCount is {fmt(hi)}; the peak "
                    "floor is silently capped; raise the maximum or lower peakMinReplicas",
                    a.obj,
                )
        w = stack.workload(a.obj.region, a.obj.namespace, *a.target)
        if w is None or lo < 1:
            continue
        for pdb in w.pdbs:
            if pdb.min_available is None:
                continue
            need = int_or_percent(pdb.min_available, lo, round_up=True)
            if need is not None and need >= lo:
                report(
                    f"{pdb.obj.ref}: minAvailable {pdb.min_available} is not below the autoscaler minimum {fmt(lo)} of "
                    f"{w.obj.kind}/{w.name} ({a.obj.kind}/{a.obj.name}); at minimum scale no pod can be evicted; use "
                    "maxUnavailable 1 or a minAvailable below the minimum",
                    pdb.obj,
                )


autoscaler_bounds = stack_policy(
    name="autoscaler-bounds",
    description="Autoscaler minimum <= maximum (peak floors included), and a PDB's minAvailable stays below the autoscaler minimum.",
    check=_bounds,
    remediation="Keep min <= max in the presets; prefer PDBs with maxUnavailable 1 (kube.pdb()).",
    area=AREA,
)


# ---- requests ----------------------------------------------------------------------------------------


def _per_instance(w: Workload) -> tuple[Optional[float], str]:
    """Requests per minute one replica serves: its declared capacity, not the autoscaler's
    request-rate threshold (that is where the HPA adds pods, far below what one carries)."""
    value = as_float(w.obj.annotations.get(ann.SUSTAINABLE_REQUESTS_PER_MINUTE))
    if value:
        return value, ann.SUSTAINABLE_REQUESTS_PER_MINUTE
    return None, ""


def _requests(stack: Stack, cfg: dict, report: Report) -> None:
    regions = stack.regions if cfg["scope"] == "all-regions" else [r for r in [stack.primary_region] if r]
    for region in regions:
        users = as_float(stack.namespace_annotation(region, ann.TARGET_CONCURRENT_USERS))
        per_user = as_float(stack.namespace_annotation(region, ann.REQUESTS_PER_USER_PER_MINUTE))
        if users is None or per_user is None:
            continue  # the region declares no target
        deployments = [w for w in stack.workloads if w.region == region and w.kind == "Deployment"]
        serving = [(w, *_per_instance(w)) for w in deployments]
        serving = [(w, n, src) for w, n, src in serving if n]
        if not serving:
            if deployments:
                report(
                    f"{region}: targets {fmt(users)} users but no Deployment declares its request capacity (the "
                    f"{ann.SUSTAINABLE_REQUESTS_PER_MINUTE} annotation, requests per minute per instance)",
                    deployments[0].obj,
                )
            continue
        demand = users * per_user
        needed = demand * (100 + cfg["headroomPercent"]) / 100
        capacity = sum((w.max_replicas or 0) * n for w, n, _ in serving)
        if needed <= capacity:
            continue
        terms = " + ".join(f"{fmt(w.max_replicas or 0)} x {fmt(n)} ({w.obj.kind}/{w.name} max replicas x {src})" for w, n, src in serving)
        head = f" + {cfg['headroomPercent']}% headroom = {fmt(needed)}" if cfg["headroomPercent"] else ""
        hint = ""
        if len(serving) == 1:
            w, n, _ = serving[0]
            hint = f" (at least {fmt(math.ceil(needed / n))} replicas)"
        report(
            f"{region}: {fmt(users)} concurrent users x {fmt(per_user)} requests/min = {fmt(demand)} requests/min{head} > "
            f"{terms} = {fmt(capacity)}; raise backend.maxReplicas{hint}, or measure one instance and set "
            "backend.sustainableRequestsPerMinute",
            serving[0][0].obj,
        )


request_capacity = stack_policy(
    name="request-capacity",
    description="Target concurrent users x requests per user per minute, plus headroom, <= max replicas x per-instance capacity (not the scale-up threshold), in every region that may take the traffic.",
    check=_requests,
    remediation="Raise backend.maxReplicas (or measure the per-instance capacity) until it covers capacity.targetConcurrentUsers.",
    area=AREA,
    config=schema(
        headroomPercent=integer(20, "Extra capacity required above the target load, in percent.", maximum=1000),
        scope=choice(
            "all-regions",
            ["all-regions", "primary"],
            "Regions that must carry the whole target: all of them (DNS failover sends every user to the backup) or the primary only.",
        ),
    ),
)


POLICIES = [
    pgbouncer_client_capacity,
    postgres_connection_budget,
    redis_memory_headroom,
    autoscaler_bounds,
    request_capacity,
]
