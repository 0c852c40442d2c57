"""Security: the namespace's NetworkPolicies.

Deny everything in and out, then allow exactly the flows the platform needs
(docs/traffic.md has the table):

* the gateway's proxies -> API (traffic and active health checks);
* API and workers -> the PgBouncer pools -> PostgreSQL;
* API, workers, the KEDA operator and the backup job -> Redis and, where it runs, Sentinel;
  Redis <-> Redis (replication), Sentinel <-> Redis and Sentinel <-> Sentinel; nothing else
  reaches Sentinel's port;
* CloudNativePG's own traffic: operator -> instances, instance <-> instance, instances ->
  object storage and the Kubernetes API.  No PostgreSQL port crosses the cluster boundary:
  the backup region's replica cluster follows the primary through the object store;
* Prometheus -> every metrics port;
* where the load test may run: k6 runners -> the gateway's public hostname (HTTPS), the
  k6-operator and the starter pod -> the runners' REST API;
* every pod -> cluster DNS.

Pods are selected by the ``app.kubernetes.io/name`` label every tier sets through
kube.metadata / kube.labels (= the names.py name), CloudNativePG's pods by the
``cnpg.io/cluster`` label the operator sets.  Kubelet probes come from the node and are
not subject to these policies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names
from tikit.components.gateway import envoy_pod_labels
from tikit.settings import Addons as AddonsSettings
from tikit.settings import Network as NetworkSettings

COMPONENT = "network-policy"
APP = "network-policy"

NAME_LABEL = "app.kubernetes.io/name"
NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace
CNPG_OPERATOR_NAME = "cloudnative-pg"            # app.kubernetes.io/name of the operator pod (Helm chart)
KEDA_OPERATOR_NAME = "keda-operator"             # app.kubernetes.io/name of KEDA's operator pod (Helm chart), which runs the scalers
CNPG_STATUS_PORT = 8000                          # instance manager's status endpoint (operator and peers)
DNS_LABELS = {"k8s-app": "kube-dns"}             # CoreDNS keeps kube-dns's label for compatibility
DNS_PORT = 53
HTTPS_PORT = 443
# Envoy Gateway binds a privileged listener port + 10000 in the proxy container (443 -> 10443).
ENVOY_PORT_SHIFT = 10000

DEFAULT_DENY = "default-deny"


@dataclass(frozen=True)
class NetworkArgs:
    target: kube.Target
    network: NetworkSettings
    # Where the operators, the gateway's proxies and Prometheus run.
    addons: AddonsSettings
    backend_port: int
    # Sentinel traffic is allowed only where the environment runs Sentinel.
    redis_sentinels: int
    pg_cluster: str
    # k6-operator pods may run here (settings.resilience.enabled, primary region).
    k6: bool = False
    # The restore canary writes here (primary region) / the restore drills run here.
    canary: bool = False
    drills: bool = False


# --- building blocks -------------------------------------------------------------------


def apps(*app_names: str) -> dict[str, Any]:
    """Pod selector for one or more workloads by their app.kubernetes.io/name."""
    if len(app_names) == 1:
        return {"matchLabels": {NAME_LABEL: app_names[0]}}
    return {"matchExpressions": [{"key": NAME_LABEL, "operator": "In", "values": sorted(set(app_names))}]}


def namespace(ns: str, pods: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: ns}}}
    if pods is not None:
        peer["podSelector"] = pods
    return peer


def pods(selector: dict[str, Any]) -> dict[str, Any]:
    return {"podSelector": selector}


def cidr(block: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": block}}


def tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def rule(peers: Iterable[dict[str, Any]], ports: list[dict[str, Any]], direction: str) -> dict[str, Any]:
    return {("from" if direction == "ingress" else "to"): list(peers), "ports": ports}


def policy(selector: dict[str, Any], *, ingress: list | None = None, egress: list | None = None) -> dict[str, Any]:
    """A policy declares only the directions it has rules for; the default deny covers the rest."""
    spec: dict[str, Any] = {"podSelector": selector, "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = egress
    return spec


# --- the policies ----------------------------------------------------------------------


def policy_specs(args: NetworkArgs) -> dict[str, dict[str, Any]]:
    """Kubernetes name -> NetworkPolicy spec, in a stable order."""
    n = args.network
    monitoring = namespace(args.addons.monitoring_namespace)
    clients = pods(apps(names.BACKEND, names.WORKERS))
    pools = apps(names.PGBOUNCER_RW, names.PGBOUNCER_RO)
    # The Redis tier: the data pods on 6379 and, where Sentinel runs, the sentinels on 26379.
    # Whoever asks Sentinel for the primary also talks to the data pods: the sentinels' peers
    # are the data pods' peers plus the sentinels themselves.
    redis_data = apps(names.REDIS)
    sentinels = apps(names.REDIS_SENTINEL)
    redis_clients = [clients, pods(apps(names.REDIS_BACKUP)), namespace(args.addons.keda_namespace, apps(KEDA_OPERATOR_NAME))]
    to_redis = [rule([pods(redis_data)], tcp(names.REDIS_PORT), "egress")]
    if args.redis_sentinels:
        to_redis.append(rule([pods(sentinels)], tcp(names.REDIS_SENTINEL_PORT), "egress"))
    postgres = {"matchLabels": {names.CNPG_CLUSTER_LABEL: args.pg_cluster}}
    external = cidr(n.external_cidr)

    app_egress = [
        rule([pods(pools)], tcp(names.PGBOUNCER_PORT), "egress"),
        *to_redis,
        # Third-party HTTPS APIs (Firebase and the like): the only way out of the cluster.
        rule([external], tcp(HTTPS_PORT), "egress"),
    ]

    specs: dict[str, dict[str, Any]] = {
        # Selects every pod, allows nothing: anything not allowed below is dropped.
        DEFAULT_DENY: {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "allow-dns": policy(
            {},
            egress=[
                {
                    "to": [namespace(n.dns_namespace, {"matchLabels": dict(DNS_LABELS)})],
                    "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}],
                }
            ],
        ),
        names.BACKEND: policy(
            apps(names.BACKEND),
            ingress=[
                # Requests and active health checks from this Gateway's proxies only.
                rule(
                    [namespace(args.addons.envoy_gateway_namespace, {"matchLabels": envoy_pod_labels(args.target.namespace)})],
                    tcp(args.backend_port),
                    "ingress",
                ),
                # /metrics is served on the API port.
                rule([monitoring], tcp(args.backend_port), "ingress"),
            ],
            egress=app_egress,
        ),
        names.WORKERS: policy(apps(names.WORKERS), egress=app_egress),
        "pgbouncer": policy(
            pools,
            ingress=[
                rule([clients], tcp(names.PGBOUNCER_PORT), "ingress"),
                rule([monitoring], tcp(names.PGBOUNCER_EXPORTER_PORT), "ingress"),
            ],
            egress=[rule([pods(postgres)], tcp(names.POSTGRES_PORT), "egress")],
        ),
        names.REDIS: policy(
            redis_data,
            ingress=[
                # The apps, the hourly backup job and KEDA's operator (the queue-length
                # trigger); replication between data pods; the sentinels watching them.
                rule(
                    [*redis_clients, pods(apps(names.REDIS, names.REDIS_SENTINEL))],
                    tcp(names.REDIS_PORT),
                    "ingress",
                ),
                rule([monitoring], tcp(names.REDIS_EXPORTER_PORT), "ingress"),
            ],
            # Replication; and the start and handover scripts ask every sentinel.
            egress=to_redis,
        ),
        names.REDIS_BACKUP: policy(
            apps(names.REDIS_BACKUP),
            egress=[
                *to_redis,
                rule([external], tcp(HTTPS_PORT), "egress"),  # object storage
            ],
        ),
    }
    if args.redis_sentinels:
        # Sentinel's port, only from those that ask it: the same clients, the data pods (their
        # start and handover scripts) and the other sentinels.  Not Prometheus: no exporter
        # runs beside a sentinel.
        specs[names.REDIS_SENTINEL] = policy(
            sentinels,
            ingress=[
                rule(
                    [*redis_clients, pods(apps(names.REDIS, names.REDIS_SENTINEL))],
                    tcp(names.REDIS_SENTINEL_PORT),
                    "ingress",
                )
            ],
            egress=to_redis,
        )

    pg_ingress = [
        rule([pods(pools)], tcp(names.POSTGRES_PORT), "ingress"),
        # Streaming replication and the instance managers' status checks on each other.
        rule([pods(postgres)], tcp(names.POSTGRES_PORT, CNPG_STATUS_PORT), "ingress"),
        rule(
            [namespace(args.addons.cnpg_namespace, apps(CNPG_OPERATOR_NAME))],
            tcp(names.POSTGRES_PORT, CNPG_STATUS_PORT),
            "ingress",
        ),
        rule([monitoring], tcp(names.CNPG_METRICS_PORT), "ingress"),
    ]
    pg_egress = [
        rule([pods(postgres)], tcp(names.POSTGRES_PORT, CNPG_STATUS_PORT), "egress"),
        # WAL archive and base backups (object storage over HTTPS) and the instance
        # manager's watch on the Kubernetes API (443 on managed clusters, else api_server_port).
        rule([external], tcp(*sorted({HTTPS_PORT, n.api_server_port})), "egress"),
    ]
    specs["postgres"] = policy(postgres, ingress=pg_ingress, egress=pg_egress)
    if args.canary:
        # The canary reaches the write pool like the apps (and nothing else).
        specs[names.PG_CANARY] = policy(
            apps(names.PG_CANARY), egress=[rule([pods(apps(names.PGBOUNCER_RW))], tcp(names.PGBOUNCER_PORT), "egress")]
        )
        specs["pgbouncer"]["ingress"].append(rule([pods(apps(names.PG_CANARY))], tcp(names.PGBOUNCER_PORT), "ingress"))
    if args.drills:
        specs.update(drill_policy_specs(args))
    if args.k6:
        specs.update(k6_policy_specs(args))
    return specs


def drill_policy_specs(args: NetworkArgs) -> dict[str, dict[str, Any]]:
    """The restore drills (components/drills.py): the PostgreSQL drill's job talks to the
    Kubernetes API only (kubectl; its psql runs inside the drill instance through exec); the
    throwaway Cluster's instance needs what any CNPG instance needs (the operator, itself,
    object storage and the API over HTTPS) and nothing of the live cluster; the Redis drill
    reads object storage."""
    n = args.network
    api = tcp(*sorted({HTTPS_PORT, n.api_server_port}))
    external = cidr(n.external_cidr)
    drill_cluster = {"matchLabels": {names.CNPG_CLUSTER_LABEL: names.PG_RESTORE_DRILL}}
    return {
        names.PG_RESTORE_DRILL: policy(apps(names.PG_RESTORE_DRILL), egress=[rule([external], api, "egress")]),
        f"{names.PG_RESTORE_DRILL}-instance": policy(
            drill_cluster,
            ingress=[
                rule([pods(drill_cluster)], tcp(names.POSTGRES_PORT, CNPG_STATUS_PORT), "ingress"),
                rule([namespace(args.addons.cnpg_namespace, apps(CNPG_OPERATOR_NAME))],
                     tcp(names.POSTGRES_PORT, CNPG_STATUS_PORT), "ingress"),
            ],
            egress=[
                rule([pods(drill_cluster)], tcp(names.POSTGRES_PORT, CNPG_STATUS_PORT), "egress"),
                rule([external], api, "egress"),
            ],
        ),
        names.REDIS_RESTORE_DRILL: policy(apps(names.REDIS_RESTORE_DRILL), egress=[rule([external], tcp(HTTPS_PORT), "egress")]),
    }


def k6_policy_specs(args: NetworkArgs) -> dict[str, dict[str, Any]]:
    """The load test's pods (components/resilience.py).  The runners reach the gateway by its
    public hostname, as users do: out of the cluster to the load balancer, or, where
    kube-proxy short-cuts traffic to a LoadBalancer address, straight to this Gateway's
    proxies.  The initializer needs nothing but DNS."""
    runners = apps(names.K6_RUNNER)
    proxies = namespace(args.addons.envoy_gateway_namespace, {"matchLabels": envoy_pod_labels(args.target.namespace)})
    return {
        names.K6_RUNNER: policy(
            runners,
            ingress=[
                rule(
                    [pods(apps(names.K6_STARTER)), namespace(args.addons.k6_operator_namespace)],
                    tcp(names.K6_API_PORT),
                    "ingress",
                )
            ],
            egress=[
                rule([cidr(args.network.external_cidr)], tcp(HTTPS_PORT), "egress"),
                rule([proxies], tcp(HTTPS_PORT + ENVOY_PORT_SHIFT), "egress"),
            ],
        ),
        names.K6_STARTER: policy(apps(names.K6_STARTER), egress=[rule([pods(runners)], tcp(names.K6_API_PORT), "egress")]),
    }


class NetworkPolicies(pulumi.ComponentResource):
    """Default deny plus one allow policy per workload in one region's namespace."""

    policies: dict[str, k8s.networking.v1.NetworkPolicy]

    def __init__(self, name: str, args: NetworkArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:security:NetworkPolicies", name, None, opts)
        t = args.target
        self.policies = {
            policy_name: k8s.networking.v1.NetworkPolicy(
                t.rname(f"netpol-{policy_name}"),
                metadata=kube.metadata(policy_name, COMPONENT, t, app=APP),
                spec=spec,
                opts=t.opts(self),
            )
            for policy_name, spec in policy_specs(args).items()
        }
        self.register_outputs({"policies": sorted(self.policies)})
