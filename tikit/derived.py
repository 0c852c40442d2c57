"""Numbers computed from settings, each formula written once (docs/sizing.md shows them).

settings.load() computes ``Derived`` once; components, config generators and docs read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from tikit import units
from tikit.conf import pods
from tikit.conf import postgres as pg_conf

if TYPE_CHECKING:
    from tikit.settings import (
        Addons, Backend, Dns, Gateway, Monitoring, Nodes, PgBouncer, Postgres, Redis, Region, Resilience, Workers,
    )

# The write pool and the read pool: both may land on one PostgreSQL instance (the read pool
# targets -r in a single-instance cluster, and any standby can be promoted).
POOLS = 2
# kube-prometheus-stack's Prometheus Service: "<release>-prometheus" on 9090.
PROMETHEUS_PORT = 9090


def server_connections_per_pod(pb: PgBouncer) -> int:
    """Each PgBouncer pod opens at most default_pool_size + reserve_pool_size server
    connections (pgbouncer.ini's max_db_connections says the same)."""
    return pb.default_pool_size + pb.reserve_pool_size


# Karpenter (AWS) takes this share of an instance's memory off for the hypervisor before
# the kubelet's reservations (its VM_MEMORY_OVERHEAD_PERCENT setting, 0.075 by default).
VM_MEMORY_OVERHEAD_PERCENT = 7.5
ON_DEMAND, SPOT = "on-demand", "spot"
# Names of the workloads the pools hold (their Kubernetes names, tikit/names.py).
_TENANT_NAMES = {
    "api": "api", "buffer": "capacity-buffer", "workers": "workers", "pgbouncer-rw": "pgbouncer-rw",
    "pgbouncer-ro": "pgbouncer-ro", "redis": "redis", "redis-sentinel": "redis-sentinel", "redis-backup": "redis-backup",
    "postgres": "postgres", "envoy": "envoy", "k6": "k6",
}


@dataclass(frozen=True)
class Tenant:
    """A workload that can land in a pool: at most ``pods`` pods of this size (every
    container of one pod, the larger of the init containers and the rest)."""

    workload: str
    pods: int
    cpu_millis: int
    memory_bytes: int


def _pod(*containers: tuple[str, str]) -> tuple[int, int]:
    return sum(units.cpu_millis(c) for c, _ in containers), sum(units.memory_bytes(m) for _, m in containers)


@dataclass(frozen=True)
class Pool:
    """A NodePool's sizing: what can land there at maximum scale, the smallest node that
    holds the largest pod beside the per-node overhead, and the limits (docs/nodes.md)."""

    name: str
    tenants: tuple[Tenant, ...]
    overhead_cpu_millis: int
    overhead_memory_bytes: int
    node_cpu: int            # vCPUs of the smallest node the pool launches
    node_memory_mib: int     # MiB of the smallest node the pool launches
    nodes: int               # smallest nodes that hold every tenant at maximum
    limit_cpu: int           # cores
    limit_memory_gib: int

    @property
    def cpu_millis(self) -> int:
        return sum(t.pods * t.cpu_millis for t in self.tenants)

    @property
    def memory_bytes(self) -> int:
        return sum(t.pods * t.memory_bytes for t in self.tenants)


def node_allocatable(node_cpu: int, node_memory_mib: int, overhead_cpu: int, overhead_memory: int) -> tuple[int, int]:
    """(millicores, bytes) a node of this size leaves for pods after the hypervisor, the
    kubelet's reservations and the DaemonSets."""
    memory = node_memory_mib * units.MIB * (100 - VM_MEMORY_OVERHEAD_PERCENT) / 100
    return node_cpu * 1000 - overhead_cpu, int(memory) - overhead_memory


def size_pool(name: str, tenants: Sequence[Tenant], nodes: Nodes) -> Pool:
    """Limits = (every tenant at its maximum + per-node overhead x nodes) x (1 + headroom);
    nodes counted at the smallest size the pool launches, the most overhead it can cost."""
    tenants = tuple(t for t in tenants if t.pods > 0)
    oh_cpu = units.cpu_millis(nodes.daemon_set_cpu) + units.cpu_millis(nodes.reserved_cpu)
    oh_mem = units.memory_bytes(nodes.daemon_set_memory) + units.memory_bytes(nodes.reserved_memory)
    big_cpu = max((t.cpu_millis for t in tenants), default=0)
    big_mem = max((t.memory_bytes for t in tenants), default=0)
    node_cpu = max(nodes.min_instance_cpu, math.ceil((big_cpu + oh_cpu) / 1000))
    node_mib = math.ceil((big_mem + oh_mem) / units.MIB / ((100 - VM_MEMORY_OVERHEAD_PERCENT) / 100))
    alloc_cpu, alloc_mem = node_allocatable(node_cpu, node_mib, oh_cpu, oh_mem)
    cpu = sum(t.pods * t.cpu_millis for t in tenants)
    mem = sum(t.pods * t.memory_bytes for t in tenants)
    count = max(math.ceil(cpu / alloc_cpu), math.ceil(mem / alloc_mem), 1 if tenants else 0)
    grow = (100 + nodes.headroom_percent) / 100
    return Pool(
        name=name,
        tenants=tenants,
        overhead_cpu_millis=oh_cpu,
        overhead_memory_bytes=oh_mem,
        node_cpu=node_cpu,
        node_memory_mib=node_mib,
        nodes=count,
        limit_cpu=math.ceil((cpu + count * oh_cpu) * grow / 1000),
        limit_memory_gib=math.ceil((mem + count * oh_mem) * grow / units.GIB),
    )


def pool_tenants(
    *,
    backend: Backend,
    workers: Workers,
    postgres: Postgres,
    pgbouncer: PgBouncer,
    redis: Redis,
    gateway: Gateway,
    resilience: Resilience,
    nodes: Nodes,
    spot_fallback: bool,
    primary: bool,
) -> dict[str, list[Tenant]]:
    """Every pod the program can run in one region, by the pool it can land in."""
    api = _pod((backend.cpu, backend.memory))
    worker = _pod((workers.cpu, workers.memory))
    on_demand = [
        Tenant(_TENANT_NAMES["api"], backend.max_replicas, *api),
        Tenant(_TENANT_NAMES["buffer"], nodes.buffer_pods, *api),
        Tenant(_TENANT_NAMES["pgbouncer-rw"], pgbouncer.replicas, *_pod((pgbouncer.cpu, pgbouncer.memory), pods.PGBOUNCER_EXPORTER)),
        Tenant(_TENANT_NAMES["pgbouncer-ro"], pgbouncer.replicas, *_pod((pgbouncer.cpu, pgbouncer.memory), pods.PGBOUNCER_EXPORTER)),
        Tenant(_TENANT_NAMES["redis"], redis.replicas, *_pod((redis.cpu, redis.memory), pods.REDIS_EXPORTER)),
        Tenant(_TENANT_NAMES["redis-sentinel"], redis.sentinels, *_pod(pods.REDIS_SENTINEL)),
        Tenant(_TENANT_NAMES["redis-backup"], 1, *_pod(pods.REDIS_BACKUP)),
        Tenant(_TENANT_NAMES["postgres"], postgres.instances, *_pod((postgres.cpu, postgres.memory), pods.BARMAN_SIDECAR)),
        Tenant(_TENANT_NAMES["envoy"], gateway.envoy_replicas, *_pod((gateway.envoy_cpu, gateway.envoy_memory))),
    ]
    if resilience.enabled and resilience.load_test and primary:
        # The runners run together with the starter (the initializer finishes first).
        on_demand.append(Tenant(_TENANT_NAMES["k6"], resilience.parallelism, *_pod((resilience.runner_cpu, resilience.runner_memory))))
        on_demand.append(Tenant("k6-starter", 1, *_pod(pods.K6_STARTER)))
    if spot_fallback:
        on_demand.append(Tenant(_TENANT_NAMES["workers"], workers.max_replicas, *worker))
    spot = [Tenant(_TENANT_NAMES["workers"], workers.max_replicas, *worker)]
    return {ON_DEMAND: on_demand, SPOT: spot}


@dataclass(frozen=True, kw_only=True)
class Derived:
    pgbouncer_server_connections_per_pod: int
    # POOLS x pgbouncer.replicas x per pod.
    pool_server_connections: int
    # pools + superuser_reserved + admin headroom (WAL senders have their own slots since 12).
    postgres_max_connections: int
    postgres_shared_buffers_mb: int        # 25% of the memory limit
    postgres_effective_cache_size_mb: int  # 75% of the memory limit
    postgres_work_mem_mb: int              # (limit - shared_buffers) / max_connections / 2, at least 1
    postgres_maintenance_work_mem_mb: int  # 5% of the memory limit, at least 64
    redis_maxmemory_bytes: int             # maxmemory_percent of the container limit
    redis_fork_headroom_bytes: int         # the rest of the limit, kept for the COW fork
    client_connections: int                # backend max x per-replica + workers max x per-replica
    pgbouncer_client_capacity: int         # pgbouncer replicas x (max_client_conn - 1 exporter login)
    prometheus_address: str                # monitoring.prometheusAddress, or kube-prometheus-stack's
    # The name k8gb answers for the API in dns.gslbZone: gateway.hostname with dns.parentZone
    # swapped for it (api.tikit.app -> api.gslb.tikit.app); the public name is its CNAME.
    gslb_hostname: str
    # Per region, per pool (ON_DEMAND, SPOT): the NodePools' sizes and limits.
    pools: dict[str, dict[str, Pool]] = field(default_factory=dict)


def derive(
    *,
    backend: Backend,
    workers: Workers,
    postgres: Postgres,
    pgbouncer: PgBouncer,
    redis: Redis,
    monitoring: Monitoring,
    addons: Addons,
    gateway: Gateway,
    dns: Dns,
    resilience: Resilience,
    nodes: Nodes,
    regions: Sequence[Region] = (),
) -> Derived:
    per_pod = server_connections_per_pod(pgbouncer)
    pools = POOLS * pgbouncer.replicas * per_pod
    max_conn = pools + pg_conf.SUPERUSER_RESERVED_CONNECTIONS + pg_conf.ADMIN_CONNECTIONS
    mem_mb = units.mebibytes(postgres.memory)
    shared = mem_mb // 4
    limit = units.memory_bytes(redis.memory)
    maxmem = limit * redis.maxmemory_percent // 100
    prometheus = monitoring.prometheus_address or (
        f"http://{addons.prometheus_release}-prometheus.{addons.monitoring_namespace}.svc:{PROMETHEUS_PORT}"
    )
    return Derived(
        pgbouncer_server_connections_per_pod=per_pod,
        pool_server_connections=pools,
        postgres_max_connections=max_conn,
        postgres_shared_buffers_mb=shared,
        postgres_effective_cache_size_mb=mem_mb * 3 // 4,
        postgres_work_mem_mb=max(1, (mem_mb - shared) // max_conn // 2),
        postgres_maintenance_work_mem_mb=max(64, mem_mb // 20),
        redis_maxmemory_bytes=maxmem,
        redis_fork_headroom_bytes=limit - maxmem,
        client_connections=backend.max_replicas * backend.db_connections_per_replica
        + workers.max_replicas * workers.db_connections_per_replica,
        # The exporter's admin-console login holds one client slot in every pod.
        pgbouncer_client_capacity=pgbouncer.replicas * (pgbouncer.max_client_conn - 1),
        prometheus_address=prometheus,
        gslb_hostname=gslb_hostname(gateway.hostname, dns.parent_zone, dns.gslb_zone),
        pools={
            r.name: {
                name: size_pool(name, tenants, nodes)
                for name, tenants in pool_tenants(
                    backend=backend, workers=workers, postgres=postgres, pgbouncer=pgbouncer, redis=redis,
                    gateway=gateway, resilience=resilience, nodes=nodes, spot_fallback=r.spot_fallback,
                    primary=r.role == "primary",
                ).items()
            }
            for r in regions
        },
    )


def gslb_hostname(hostname: str, parent_zone: str, gslb_zone: str) -> str:
    """``hostname`` moved from the parent zone into the k8gb zone ('' when it is not in the
    parent zone; settings refuse that for stacks with a Gslb)."""
    suffix = "." + parent_zone
    return hostname[: -len(suffix)] + "." + gslb_zone if hostname.endswith(suffix) else ""
