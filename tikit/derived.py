"""Numbers computed from settings, each formula written once (docs/sizing.md shows them).

settings.load() computes ``Derived`` once; components, config generators and docs read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tikit import units
from tikit.conf import postgres as pg_conf

if TYPE_CHECKING:
    from tikit.settings import Addons, Backend, Dns, Gateway, Monitoring, PgBouncer, Postgres, Redis, Workers

# The write pool and the read pool: both may land on one PostgreSQL instance (the read pool
# targets -r in a single-instance cluster, and any standby can be promoted).
POOLS = 2
# kube-prometheus-stack's Prometheus Service: "<release>-prometheus" on 9090.
PROMETHEUS_PORT = 9090


def server_connections_per_pod(pb: PgBouncer) -> int:
    """Each PgBouncer pod opens at most default_pool_size + reserve_pool_size server
    connections (pgbouncer.ini's max_db_connections says the same)."""
    return pb.default_pool_size + pb.reserve_pool_size


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
    )


def gslb_hostname(hostname: str, parent_zone: str, gslb_zone: str) -> str:
    """``hostname`` moved from the parent zone into the k8gb zone ('' when it is not in the
    parent zone; settings refuse that for stacks with a Gslb)."""
    suffix = "." + parent_zone
    return hostname[: -len(suffix)] + "." + gslb_zone if hostname.endswith(suffix) else ""
