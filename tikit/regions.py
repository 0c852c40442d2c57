"""The platform: one Region per configured region, plus what links regions.

Each Region owns one Kubernetes provider (a kubeconfig context, or YAML rendered to
build/<stack>/<region>/ when no context is set), the namespace, and the tiers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from tikit import kube
from tikit import names
from tikit.components import nodeapp
from tikit.components.addons import Addons, AddonsArgs
from tikit.components.backend import Backend, BackendArgs
from tikit.components.drills import Drills, DrillsArgs
from tikit.components.failover import Failover, FailoverArgs
from tikit.components.gateway import Gateway, GatewayArgs
from tikit.components.monitoring import Monitoring, MonitoringArgs
from tikit.components.network import NetworkArgs, NetworkPolicies
from tikit.components.nodes import Nodes, NodesArgs, peak_budget
from tikit.components.pgbouncer import PgBouncer, PgBouncerArgs
from tikit.components.postgres import Postgres, PostgresArgs
from tikit.components.redis import Redis, RedisArgs
from tikit.components.resilience import Resilience, ResilienceArgs
from tikit.components.tls import InternalCa, InternalCaArgs
from tikit.components.workers import Workers, WorkersArgs
from tikit.settings import Region as RegionSettings
from tikit.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
# Length of every generated password: letters and digits only, about 238 bits.
PASSWORD_LENGTH = 40


def render_dir(stack: str, region: str) -> str:
    """Where the provider writes manifests when the region has no kubeconfig context.

    Absolute, because the provider plugin does not share the program's working directory.
    """
    return str(REPO_ROOT / "build" / stack / region)


class Credentials(pulumi.ComponentResource):
    """Passwords shared by every region of the stack.

    One set for all regions: the London replica cluster replays Lagos's WAL, so its roles
    and passwords are Lagos's; PgBouncer and the apps must use the same ones there.
    """

    def __init__(self, *, sentinel: bool = False, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:platform:Credentials", "credentials", None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Alphanumeric only: the passwords go into connection URLs unescaped.
        self.postgres = random.RandomPassword("postgres-app-password", length=PASSWORD_LENGTH, special=False, opts=child)
        self.redis = random.RandomPassword("redis-password", length=PASSWORD_LENGTH, special=False, opts=child)
        self.postgres_password: pulumi.Output[str] = pulumi.Output.secret(self.postgres.result)
        self.redis_password: pulumi.Output[str] = pulumi.Output.secret(self.redis.result)
        # The sentinels' own password (where Sentinel runs), apart from the data password:
        # Sentinel access is control (SENTINEL FAILOVER, SET, MONITOR), and the exporter
        # and anything else that holds only the data password cannot reach it.
        self.redis_sentinel: Optional[random.RandomPassword] = None
        self.redis_sentinel_password: Optional[pulumi.Output[str]] = None
        if sentinel:
            self.redis_sentinel = random.RandomPassword(
                "redis-sentinel-password", length=PASSWORD_LENGTH, special=False, opts=child
            )
            self.redis_sentinel_password = pulumi.Output.secret(self.redis_sentinel.result)
        # PgBouncer's stats user (the metrics exporter) and one SCRAM salt per role: stable,
        # so every region computes identical verifiers, and distinct, as PostgreSQL would pick
        # them: with one salt for two roles, one precomputed guess list attacks both verifiers.
        self.pgbouncer_stats = random.RandomPassword(
            "pgbouncer-stats-password", length=PASSWORD_LENGTH, special=False, opts=child
        )
        self.scram_salt = random.RandomBytes("scram-salt", length=16, opts=child)
        self.pgbouncer_stats_salt = random.RandomBytes("pgbouncer-stats-scram-salt", length=16, opts=child)
        self.pgbouncer_stats_password: pulumi.Output[str] = pulumi.Output.secret(self.pgbouncer_stats.result)
        self.scram_salt_base64: pulumi.Output[str] = pulumi.Output.secret(self.scram_salt.base64)
        self.pgbouncer_stats_salt_base64: pulumi.Output[str] = pulumi.Output.secret(self.pgbouncer_stats_salt.base64)
        self.register_outputs({})


class Region(pulumi.ComponentResource):
    """Everything Tikit runs in one region's cluster."""

    def __init__(
        self,
        cfg: Settings,
        region: RegionSettings,
        credentials: Credentials,
        opts: Optional[pulumi.ResourceOptions] = None,
    ) -> None:
        super().__init__("tikit:platform:Region", region.name, None, opts)
        self.settings = cfg
        self.region = region
        if region.context:
            provider_args: dict[str, Any] = {"context": region.context}
        else:
            provider_args = {"render_yaml_to_directory": render_dir(cfg.stack, region.name)}
        self.provider = k8s.Provider(
            f"k8s-{region.name}",
            **provider_args,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.target = kube.Target(
            region=region.name, namespace=cfg.namespace, provider=self.provider, environment=cfg.environment
        )
        # The operators first: every custom resource below waits for the one serving it.
        self.addons: Optional[Addons] = None
        if region.installs_addons:
            self.addons = Addons(
                self.target.rname("addons"),
                AddonsArgs(
                    target=self.target,
                    addons=cfg.addons,
                    dns=cfg.dns,
                    gslb=cfg.gslb,
                    cluster_issuer=cfg.gateway.cluster_issuer,
                    gateway_class=cfg.gateway.class_name,
                    geo_tag=region.tag,
                    peer_geo_tags=tuple(r.tag for r in cfg.regions if r.name != region.name),
                    multi_region=len(cfg.regions) > 1,
                    resilience=cfg.resilience.enabled,
                    primary=region.role == "primary",
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.namespace = k8s.core.v1.Namespace(
            self.target.rname("namespace"),
            metadata=kube.metadata(
                cfg.namespace,
                "namespace",
                self.target,
                app=cfg.namespace,
                # Pod Security admission enforces the "restricted" profile on every pod.
                extra_labels={
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                },
                # What the policy pack sizes this region against (it runs apart from the program).
                annotations={
                    names.REGION_ROLE_ANNOTATION: region.role,
                    names.TARGET_USERS_ANNOTATION: str(cfg.capacity.target_concurrent_users),
                    names.REQUESTS_PER_USER_ANNOTATION: str(cfg.capacity.requests_per_user_per_minute),
                    # The load the capacity model replays (k6 stages) and its users' rate.
                    names.PROFILE_ANNOTATION: ",".join(f"{d}:{u}" for d, u in cfg.profile),
                    names.PROFILE_REQUESTS_PER_USER_ANNOTATION: str(cfg.capacity.profile_requests_per_user_per_minute),
                },
                namespaced=False,
            ),
            opts=self.target.opts(self),
        )
        # Every object the tiers declare waits for the namespace: Target.opts adds it to
        # each child's depends_on (a component's own depends_on would not reach them).
        self.target = dataclasses.replace(
            self.target, requires=(self.namespace,), addons=self.addons.by_group if self.addons else {}
        )
        self.tier_opts = pulumi.ResourceOptions(parent=self)
        # Node pools and PriorityClasses first: every pod names its tier's class, which the
        # API server must know before it admits the pod.
        self.nodes = Nodes(
            self.target.rname("nodes"),
            NodesArgs(
                target=self.target, nodes=cfg.nodes, region=region, backend=cfg.backend, workers=cfg.workers,
                pools=cfg.derived.pools[region.name], peak_budget=peak_budget(cfg.backend),
                cluster_name=cfg.cluster_name(region.name),
            ),
            opts=self.tier_opts,
        )
        self.target = dataclasses.replace(self.target, requires=(self.namespace, *self.nodes.priority_classes.values()))
        self.entry_points: dict[str, Any] = {
            "role": region.role,
            "namespace": cfg.namespace,
            "cluster": region.context or f"rendered to build/{cfg.stack}/{region.name}",
            "api": f"https://{cfg.gateway.hostname}",
            # What this cluster runs: the pinned releases installed here, "external" (the
            # cluster's own operators) or "rendered" (YAML only: no cluster to install into).
            "addons": dict(sorted(self.addons.versions.items())) if self.addons else region.addons_mode,
        }
        self.credentials = credentials
        self._build_tiers()
        self.register_outputs({"namespace": cfg.namespace})

    def _build_tiers(self) -> None:
        """Each tier is one component; tiers take typed args built from settings."""
        cfg, t = self.settings, self.target
        self.backend = Backend(
            t.rname("backend"),
            BackendArgs(target=t, backend=cfg.backend, prometheus_address=cfg.derived.prometheus_address),
            opts=self.tier_opts,
        )
        self.workers = Workers(
            t.rname("workers"),
            WorkersArgs(
                target=t, workers=cfg.workers, redis=cfg.redis, prometheus_address=cfg.derived.prometheus_address,
                spot_fallback=self.region.spot_fallback,
            ),
            opts=self.tier_opts,
        )
        self.entry_points["apiService"] = f"{names.service_host(names.BACKEND, cfg.namespace)}:{self.backend.port}"
        c = self.credentials
        self.postgres = Postgres(
            t.rname("postgres"),
            PostgresArgs(
                target=t, postgres=cfg.postgres, derived=cfg.derived,
                region=self.region.name, primary=cfg.primary.name,
                stores={r.name: cfg.object_store(r.name) for r in cfg.regions},
                password=c.postgres_password, scram_salt=c.scram_salt_base64,
            ),
            opts=self.tier_opts,
        )
        self.internal_ca = InternalCa(t.rname("internal-ca"), InternalCaArgs(target=t), opts=self.tier_opts)
        self.pgbouncer = PgBouncer(
            t.rname("pgbouncer"),
            PgBouncerArgs(
                target=t, pgbouncer=cfg.pgbouncer, database=names.PG_DATABASE, owner=names.PG_OWNER,
                write_service=self.postgres.write_service, read_service=self.postgres.read_service,
                cluster_ca_secret=names.cnpg_ca_secret(self.postgres.cluster_name), issuer=self.internal_ca.issuer,
                owner_password=c.postgres_password, owner_verifier=self.postgres.verifier,
                stats_password=c.pgbouncer_stats_password, stats_salt=c.pgbouncer_stats_salt_base64,
            ),
            opts=self.tier_opts,
        )
        self.entry_points.update(databaseWrite=self.pgbouncer.write_host, databaseRead=self.pgbouncer.read_host)
        self.redis = Redis(
            t.rname("redis"),
            RedisArgs(
                target=t, redis=cfg.redis, maxmemory_bytes=cfg.derived.redis_maxmemory_bytes,
                store=cfg.object_store(self.region.name), password=c.redis_password,
                sentinel_password=c.redis_sentinel_password,
            ),
            opts=self.tier_opts,
        )
        self.entry_points["redis"] = self.redis.url
        drilled = self.region.name in {r.name for r in cfg.drilled_regions}
        canary = cfg.restore_drills.enabled and self.region.role == "primary"
        if drilled or canary:
            self.drills = Drills(
                t.rname("restore-drills"),
                DrillsArgs(
                    target=t, drills=cfg.restore_drills, postgres=cfg.postgres, derived=cfg.derived, redis=cfg.redis,
                    primary=cfg.primary.name, primary_store=cfg.object_store(cfg.primary.name),
                    canary=canary, drill=drilled,
                    redis_backup_max_age_seconds=cfg.monitoring.redis_backup_max_age_seconds,
                ),
                opts=self.tier_opts,
            )
        self.gateway = Gateway(
            t.rname("gateway"),
            GatewayArgs(
                target=t,
                gateway=cfg.gateway,
                backend_service=self.backend.service_name,
                backend_port=self.backend.port,
                health_path=nodeapp.HEALTH_PATH,
                gslb_hostname=cfg.derived.gslb_hostname if len(cfg.regions) > 1 else None,
            ),
            opts=self.tier_opts,
        )
        # What clients use: the public address of this region's gateway (waited for at
        # `pulumi up`) and the hostnames that reach it.
        self.entry_points["gatewayAddress"] = self.gateway.address
        self.entry_points["hostnames"] = [cfg.gateway.hostname] + (
            [cfg.derived.gslb_hostname] if len(cfg.regions) > 1 else []
        )
        # A single region has nothing to fail over to (dev): no Gslb there, no k8gb needed.
        if len(cfg.regions) > 1:
            self.failover = Failover(
                t.rname("failover"),
                FailoverArgs(target=t, gslb=cfg.gslb, primary_geo_tag=cfg.primary.tag, route=self.gateway.rest_route_name),
                opts=self.tier_opts,
            )
        self.network = NetworkPolicies(
            t.rname("network"),
            NetworkArgs(
                target=t,
                network=cfg.network,
                addons=cfg.addons,
                backend_port=self.backend.port,
                redis_sentinels=cfg.redis.sentinels,
                pg_cluster=names.pg_cluster(self.region.name),
                k6=cfg.resilience.enabled and self.region.role == "primary",
                canary=canary,
                drills=drilled,
            ),
            opts=self.tier_opts,
        )
        # Load test and chaos Schedules (docs/resilience.md); nothing at all where disabled.
        if cfg.resilience.enabled:
            k6_policies = [p for n, p in self.network.policies.items() if n in (names.K6_RUNNER, names.K6_STARTER)]
            self.resilience = Resilience(
                t.rname("resilience"),
                ResilienceArgs(
                    target=t, resilience=cfg.resilience, gateway=cfg.gateway, monitoring=cfg.monitoring,
                    primary=self.region.role == "primary", pg_cluster=names.pg_cluster(self.region.name),
                    test_run_after=(self.backend.deployment, *k6_policies),
                ),
                opts=self.tier_opts,
            )
        self.monitoring = Monitoring(
            t.rname("monitoring"),
            MonitoringArgs(
                target=t, monitoring=cfg.monitoring, addons=cfg.addons, derived=cfg.derived, backend=cfg.backend,
                workers=cfg.workers, backup_schedule=cfg.postgres.backup_schedule, role=self.region.role,
                gslb=len(cfg.regions) > 1, drill_schedule=cfg.restore_drills.schedule if drilled else "",
            ),
            opts=self.tier_opts,
        )


class Platform:
    """All regions of a stack."""

    def __init__(self, cfg: Settings) -> None:
        self.settings = cfg
        self.credentials = Credentials(sentinel=cfg.redis.sentinels > 0)
        self.regions = [Region(cfg, r, self.credentials) for r in cfg.regions]

    def endpoints(self) -> dict[str, Any]:
        return {r.region.name: r.entry_points for r in self.regions}
