"""Every policy of the pack fails on a real rendered plan with one thing broken.

Each case takes a stack's rendered plan, checks the policy is silent on it, applies one
mutation (or adds one object the program never renders, such as a bare Pod or a second
autoscaler) and asserts the exact violation: the policy's name, its enforcement level and
the message with the numbers a reviewer needs."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pytest

import math

from tikit import names
import policy_fixtures as F
from tikit import settings
from tikit import units
from tikit.conf import postgres as pg_conf
from preview.plan import Plan

import tikit_policies
from tikit_policies.parse import fmt

REDACTED = "[secret]"

# Figures the expected messages quote come from the presets and the policies' defaults,
# not from a past run's output: a preset change moves them with the rendered plan.
DEV, STAGING, PROD = (settings.load({}, stack=s) for s in ("dev", "staging", "prod"))


def default(policy: str, key: str) -> Any:
    (p,) = [p for p in tikit_policies.ALL if p.name == policy]
    return p.config_schema.properties[key]["default"]


def mi(quantity: str) -> str:
    return f"{fmt(units.mebibytes(quantity))}Mi"


# Mutations that set a number, and what the messages derive from it.
API_CONNECTIONS = 1000  # per API replica, far above what PgBouncer admits
CLIENTS = PROD.backend.max_replicas * API_CONNECTIONS + PROD.workers.max_replicas * PROD.workers.db_connections_per_replica
REDIS_LIMIT_MI = units.mebibytes(PROD.redis.memory)
# One pool's server connections plus the superuser slots: what max_connections must hold
# on one instance (the same in prod's primary and staging's replicas).
PRIMARY_BUDGET = PROD.pgbouncer.replicas * PROD.derived.pgbouncer_server_connections_per_pod + pg_conf.SUPERUSER_RESERVED_CONNECTIONS
FORK_PERCENT = default("redis-memory-headroom", "forkHeadroomPercent")
FORK_MI = REDIS_LIMIT_MI * FORK_PERCENT / 100
SHORT_MAX = PROD.backend.max_replicas // 2  # request capacity for half the target
DEMAND = PROD.capacity.target_concurrent_users * PROD.capacity.requests_per_user_per_minute
NEEDED = math.ceil(
    DEMAND * (100 + default("request-capacity", "headroomPercent")) / 100 / PROD.backend.sustainable_requests_per_minute
)


PROD_ENDPOINT = {r.name: PROD.object_store(r.name).endpoint for r in PROD.regions}


def store_keys(secret: str) -> Callable[[dict], None]:
    """An ObjectStore whose keys both come from ``secret``."""

    def apply(o: dict) -> None:
        for ref in o["spec"]["configuration"]["s3Credentials"].values():
            ref["name"] = secret

    return apply


@dataclass(frozen=True)
class Case:
    id: str
    policy: str
    stack: str
    mutate: Callable[[Plan], Plan]
    expect: tuple[str, ...]
    level: str = "mandatory"
    config: Optional[dict] = field(default=None)


def container(o: dict, i: int = 0) -> dict:
    return o["spec"]["template"]["spec"]["containers"][i]


def steps(path: "str | tuple") -> list:
    """'a.b.0' -> ['a', 'b', 0]; a tuple is taken as is (for keys with dots)."""
    return list(path) if isinstance(path, tuple) else [int(p) if p.isdigit() else p for p in path.split(".")]


def set_in(path: "str | tuple", value: Any) -> Callable[[dict], None]:
    """o[a][b]... = value (integers index lists)."""

    def apply(o: dict) -> None:
        *head, last = steps(path)
        for p in head:
            o = o[p]
        o[last] = value

    return apply


def delete(path: "str | tuple") -> Callable[[dict], None]:
    def apply(o: dict) -> None:
        *head, last = steps(path)
        for p in head:
            o = o[p]
        del o[last]

    return apply


def api(fn: Callable[[dict], Any], region: str = "lagos") -> Callable[[Plan], Plan]:
    return lambda plan: F.edit(plan, "Deployment", names.BACKEND, region, fn)


def obj(kind: str, name: str, fn: Callable[[dict], Any], region: str = "lagos") -> Callable[[Plan], Plan]:
    return lambda plan: F.edit(plan, kind, name, region, fn)


def redis_conf(fn: Callable[[str], str], region: str = "lagos") -> Callable[[Plan], Plan]:
    def mutate(plan: Plan) -> Plan:
        name = F.config_map_with(plan, region, "redis.conf")

        def apply(o: dict) -> None:
            key = next(k for k in o["data"] if k.endswith("redis.conf"))
            o["data"][key] = fn(o["data"][key])

        return F.edit(plan, "ConfigMap", name, region, apply)

    return mutate


def pgbouncer_ini(fn: Callable[[str], str], region: str = "lagos") -> Callable[[Plan], Plan]:
    def mutate(plan: Plan) -> Plan:
        name = F.pgbouncer_config_map(plan, region)

        def apply(o: dict) -> None:
            for key, text in o["data"].items():
                if "[pgbouncer]" in text:
                    o["data"][key] = fn(text)

        return F.edit(plan, "ConfigMap", name, region, apply)

    return mutate


def redis_statefulset(plan: Plan, region: str = "lagos") -> str:
    name = F.config_map_with(plan, region, "redis.conf")
    for r in F.find(plan, "StatefulSet", region=region):
        volumes = r.inputs["spec"]["template"]["spec"].get("volumes", [])
        if any((v.get("configMap") or {}).get("name") == name for v in volumes):
            return r.inputs["metadata"]["name"]
    raise AssertionError("no Redis StatefulSet")


def add_pod(plan: Plan) -> Plan:
    deployment = F.one(plan, "Deployment", names.BACKEND, "lagos")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**deployment["spec"]["template"]["metadata"], "name": "debug", "namespace": deployment["metadata"]["namespace"]},
        "spec": deployment["spec"]["template"]["spec"],
    }
    return F.add(plan, "lagos", pod)


def add_hpa(plan: Plan) -> Plan:
    deployment = F.one(plan, "Deployment", names.BACKEND, "lagos")
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {**deployment["metadata"], "name": "api-cpu"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.BACKEND},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
        },
    }
    return F.add(plan, "lagos", hpa)


def chart(name: str, version: str, region: str = "lagos") -> Callable[[Plan], Plan]:
    """The add-on chart ``name`` in ``region`` asks for ``version`` instead of the pinned release."""

    def mutate(plan: Plan) -> Plan:
        def match(r) -> bool:
            return r.type.startswith("kubernetes:helm.sh/") and r.inputs.get("chart") == name and r.region == region

        return F.replace(plan, match, lambda r: dataclasses.replace(r, inputs={**r.inputs, "version": version}))

    return mutate


def without_dependencies(kind: str, name: str, region: str = "lagos") -> Callable[[Plan], Plan]:
    """``kind/name`` declared without depends_on: nothing orders it after its operator."""

    def mutate(plan: Plan) -> Plan:
        (target,) = F.find(plan, kind, name, region)
        return F.replace(plan, lambda r: r.urn == target.urn, lambda r: dataclasses.replace(r, dependencies=()))

    return mutate


def keda_cron(fn: Callable[[dict], None]) -> Callable[[dict], None]:
    def apply(o: dict) -> None:
        fn(next(t for t in o["spec"]["triggers"] if t["type"] == "cron")["metadata"])

    return apply


def annotate(key: str, value: str) -> Callable[[dict], None]:
    return lambda o: o["metadata"].setdefault("annotations", {}).__setitem__(key, value)


def env(name: str, value: str) -> Callable[[dict], None]:
    return lambda o: container(o).setdefault("env", []).append({"name": name, "value": value})


def pdb_min_available(n: int) -> Callable[[dict], None]:
    def apply(o: dict) -> None:
        o["spec"].pop("maxUnavailable", None)
        o["spec"]["minAvailable"] = n

    return apply


def standalone(o: dict) -> None:
    o["spec"].pop("replica")
    o["spec"].pop("externalClusters", None)
    o["spec"]["bootstrap"] = {"initdb": {"database": "tikit", "owner": "tikit"}}


def redis_maxmemory_at_limit(plan: Plan) -> Plan:
    sts = F.one(plan, "StatefulSet", redis_statefulset(plan), "lagos")
    redis = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "redis")
    limit_mi = int(redis["resources"]["limits"]["memory"].removesuffix("Gi")) * 1024
    return redis_conf(lambda t: re.sub(r"(?m)^maxmemory \d+$", f"maxmemory {limit_mi}mb", t))(plan)


CASES = [
    # ---- hygiene ----
    Case("latest", "image-pinned", "dev", api(set_in("spec.template.spec.containers.0.image", "ghcr.io/tikit/backend:latest")),
         ("Deployment/api in lagos: containers 'api' image 'ghcr.io/tikit/backend:latest' uses the floating tag 'latest'",)),
    Case("untagged", "image-pinned", "prod", api(set_in("spec.template.spec.containers.0.image", "ghcr.io/tikit/backend"), "london"),
         ("Deployment/api in london", "has no tag or digest")),
    Case("no-limits", "container-resources", "dev", api(delete("spec.template.spec.containers.0.resources.limits")),
         ("Deployment/api in lagos: containers 'api' has no limits.memory",)),
    Case("request-over-limit", "container-resources", "staging",
         api(set_in("spec.template.spec.containers.0.resources.requests.memory", "2Gi")),
         (f"requests.memory 2,048Mi exceeds limits.memory {mi(STAGING.backend.memory)}",)),
    Case("no-readiness", "container-probes", "dev", api(delete("spec.template.spec.containers.0.readinessProbe")),
         ("Deployment/api in lagos: container 'api' has no readinessProbe",)),
    Case("no-liveness", "container-probes", "prod",
         obj("Deployment", names.WORKERS, delete("spec.template.spec.containers.0.livenessProbe")),
         ("Deployment/workers in lagos: container 'workers' has no livenessProbe",)),
    Case("privilege-escalation", "restricted-security-context", "dev",
         api(set_in("spec.template.spec.containers.0.securityContext.allowPrivilegeEscalation", True)),
         ("containers 'api' does not set allowPrivilegeEscalation: false",)),
    Case("root", "restricted-security-context", "dev", api(set_in("spec.template.spec.securityContext.runAsUser", 0)),
         ("pod securityContext.runAsUser is 0 (root)",)),
    Case("privileged", "no-privileged-containers", "dev", api(set_in("spec.template.spec.containers.0.securityContext.privileged", True)),
         ("Deployment/api in lagos: containers 'api' is privileged",)),
    Case("host-network", "no-host-namespaces", "dev", api(set_in("spec.template.spec.hostNetwork", True)),
         ("Deployment/api in lagos: spec.hostNetwork is true",)),
    Case("host-path", "no-host-path", "dev",
         api(lambda o: o["spec"]["template"]["spec"]["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})),
         ("volume 'docker' mounts hostPath /var/run/docker.sock",)),
    Case("auto-named", "explicit-names", "dev", obj("ConfigMap", names.BACKEND_CONFIG, delete("metadata.name")),
         ("ConfigMap (api-config-lagos) has no metadata.name",)),
    Case("labels", "recommended-labels", "staging", obj("Service", names.BACKEND, delete(("metadata", "labels", "app.kubernetes.io/part-of"))),
         ("Service/api in lagos: missing label(s) app.kubernetes.io/part-of",)),
    Case("bare-pod", "no-bare-pods", "dev", add_pod, ("Pod/debug in lagos: is a bare Pod",)),
    Case("load-balancer", "service-exposure", "prod", obj("Service", names.BACKEND, set_in("spec.type", "LoadBalancer")),
         ("Service/api in lagos: is of type LoadBalancer",)),
    Case("pss-baseline", "namespace-pod-security", "dev",
         obj("Namespace", "tikit", set_in(("metadata", "labels", "pod-security.kubernetes.io/enforce"), "baseline")),
         ("Namespace/tikit in lagos: pod-security.kubernetes.io/enforce is baseline, expected restricted",)),
    Case("default-namespace", "namespaced-objects", "dev", obj("ConfigMap", names.BACKEND_CONFIG, set_in("metadata.namespace", "default")),
         ("ConfigMap/api-config in lagos: is in namespace 'default'",), level="advisory"),
    # ---- reliability ----
    Case("prod-one-replica", "prod-min-replicas", "prod", obj("ScaledObject", names.BACKEND, set_in("spec.minReplicaCount", 1)),
         ("Deployment/api in lagos: runs as few as 1 replica(s) (ScaledObject/api); prod needs at least 2",)),
    Case("prod-one-instance", "prod-min-replicas", "prod", obj("Cluster", names.pg_cluster("lagos"), set_in("spec.instances", 1)),
         ("Cluster/pg-lagos in lagos: has 1 instance(s); needs at least 2",)),
    Case("prod-one-envoy", "prod-min-replicas", "prod",
         obj("EnvoyProxy", names.GATEWAY_PROXY, set_in("spec.provider.kubernetes.envoyDeployment.replicas", 1), "london"),
         ("EnvoyProxy/tikit-proxy in london: runs 1 Envoy replica(s)", "needs at least 2 in prod")),
    Case("prod-envoy-no-pdb", "prod-pdb", "prod", obj("EnvoyProxy", names.GATEWAY_PROXY, delete("spec.provider.kubernetes.envoyPDB")),
         ("EnvoyProxy/tikit-proxy in lagos: sets no envoyPDB",)),
    Case("prod-envoy-no-spread", "prod-zone-spread", "prod",
         obj("EnvoyProxy", names.GATEWAY_PROXY, delete("spec.provider.kubernetes.envoyDeployment.pod.topologySpreadConstraints")),
         ("EnvoyProxy/tikit-proxy in lagos: Envoy pods are not spread over zones",)),
    Case("prod-no-pdb", "prod-pdb", "prod", lambda p: F.remove(p, "PodDisruptionBudget", names.BACKEND, "london"),
         ("Deployment/api in london: has no PodDisruptionBudget",)),
    Case("prod-no-spread", "prod-zone-spread", "prod", api(delete("spec.template.spec.topologySpreadConstraints")),
         ("Deployment/api in lagos: pods are not spread over zones",)),
    Case("pdb-zero", "pdb-allows-drain", "dev", obj("PodDisruptionBudget", names.BACKEND, set_in("spec.maxUnavailable", 0)),
         (f"PodDisruptionBudget/api in lagos: maxUnavailable 0 lets no pod of Deployment/api ({DEV.backend.min_replicas} at minimum) be evicted",)),
    Case("pdb-single-instance", "pdb-allows-drain", "dev", obj("Cluster", names.pg_cluster("lagos"), set_in("spec.enablePDB", True)),
         ("Cluster/pg-lagos in lagos: 1 instance with enablePDB (default true)",)),
    Case("two-autoscalers", "one-autoscaler-per-workload", "prod", add_hpa,
         ("Deployment/api in lagos: 2 autoscalers (ScaledObject/api, HorizontalPodAutoscaler/api-cpu)",)),
    Case("keda-no-min", "keda-replica-counts", "staging", obj("ScaledObject", names.WORKERS, delete("spec.minReplicaCount")),
         ("ScaledObject/workers in lagos: minReplicaCount is not set; KEDA then defaults it to 0",)),
    Case("replicas-set", "autoscaled-replicas-unset", "dev", api(set_in("spec.replicas", 3)),
         ("Deployment/api in lagos: sets spec.replicas 3 although ScaledObject/api owns the count",), level="advisory"),
    Case("backup-five-fields", "cron-dialect", "dev", obj("ScheduledBackup", names.PG_SCHEDULED_BACKUP, set_in("spec.schedule", "0 2 * * *")),
         ("ScheduledBackup/pg-daily in lagos: schedule '0 2 * * *' has 5 fields, expected 6",)),
    Case("keda-six-fields", "cron-dialect", "prod", obj("ScaledObject", names.BACKEND, keda_cron(lambda m: m.__setitem__("start", "0 0 18 * * *"))),
         ("ScaledObject/api in lagos: cron trigger 3 start '0 0 18 * * *' has 6 fields, expected 5",)),
    Case("keda-timezone", "cron-dialect", "prod", obj("ScaledObject", names.BACKEND, keda_cron(lambda m: m.__setitem__("timezone", "WAT"))),
         ("cron trigger 3 timezone 'WAT' is not an IANA time zone",)),
    Case("cronjob-range", "cron-dialect", "staging",
         lambda p: F.edit(p, "CronJob", F.find(p, "CronJob", region="lagos")[0].inputs["metadata"]["name"], "lagos", set_in("spec.schedule", "0 24 * * *")),
         ("schedule '0 24 * * *' hour '24' is outside 0-23",)),
    Case("no-wal-archive", "backups-enabled", "staging", obj("Cluster", names.pg_cluster("lagos"), delete("spec.plugins")),
         ("Cluster/pg-lagos in lagos: archives no WAL",)),
    Case("no-scheduled-backup", "backups-enabled", "prod", lambda p: F.remove(p, "ScheduledBackup", names.PG_SCHEDULED_BACKUP, "lagos"),
         ("Cluster/pg-lagos in lagos: no active ScheduledBackup targets it",)),
    Case("no-redis-backup", "backups-enabled", "dev",
         lambda p: F.remove(p, "CronJob", F.find(p, "CronJob", region="lagos")[0].inputs["metadata"]["name"], "lagos"),
         ("runs Redis but no active backup CronJob",)),
    Case("short-retention", "backup-retention", "staging", obj("ObjectStore", names.pg_object_store("lagos"), set_in("spec.retentionPolicy", "3d")),
         ("ObjectStore/pg-backups-lagos in lagos: retentionPolicy '3d' keeps 3 day(s) of backups for pg-lagos; staging needs a recovery window of at least 7 days",)),
    # London's own store moved behind Lagos's endpoint: both copies in af-south-1.
    Case("same-endpoint-backups", "backup-cross-region", "prod",
         obj("ObjectStore", names.pg_object_store("london"), set_in("spec.configuration.endpointURL", PROD_ENDPOINT["lagos"]), "london"),
         ("Cluster/pg-lagos in lagos: every backup of the primary database lands in one place, af-south-1: "
          f"pg-backups-lagos in lagos ({PROD_ENDPOINT['lagos']}), pg-backups-london in london ({PROD_ENDPOINT['lagos']})",)),
    # Another form of the same AWS endpoint is the same place, whatever the store's name says.
    Case("peer-in-same-region", "backup-cross-region", "prod",
         obj("ObjectStore", names.pg_object_store("lagos"), set_in("spec.configuration.endpointURL", "https://s3.dualstack.eu-west-2.amazonaws.com/"), "london"),
         ("ObjectStore/pg-backups-lagos in london: pg-london reads pg-lagos's backups behind "
          "https://s3.dualstack.eu-west-2.amazonaws.com (eu-west-2), the same place as its own store (pg-backups-london)",)),
    Case("peer-with-own-keys", "backup-stores", "prod",
         obj("ObjectStore", names.pg_object_store("lagos"), store_keys(PROD.object_store("london").credentials_secret), "london"),
         ("ObjectStore/pg-backups-lagos in london: pg-london reads pg-lagos's backups with tikit-backup-s3-london, "
          "the keys of its own store",)),
    Case("peer-with-writable-keys", "backup-stores", "staging",
         obj("ObjectStore", names.pg_object_store("london"), store_keys("tikit-backup-s3-london"), "lagos"),
         ("ObjectStore/pg-backups-london in lagos: pg-lagos reads pg-london's backups with tikit-backup-s3-london, "
          "not a read-only Secret (name ending with '-readonly')",)),
    Case("archive-with-read-only-keys", "backup-stores", "prod",
         obj("ObjectStore", names.pg_object_store("lagos"), store_keys("tikit-backup-s3-lagos-readonly"), "lagos"),
         ("ObjectStore/pg-backups-lagos in lagos: pg-lagos archives into it with tikit-backup-s3-lagos-readonly, a read-only Secret",)),
    Case("peer-reads-elsewhere", "backup-stores", "prod",
         obj("ObjectStore", names.pg_object_store("london"), set_in("spec.configuration.endpointURL", PROD_ENDPOINT["lagos"]), "lagos"),
         (f"ObjectStore/pg-backups-london in lagos: pg-lagos reads pg-london's backups at {PROD_ENDPOINT['lagos']} "
          "s3://tikit-backups-prod-london/postgres, but pg-london archives to "
          f"{PROD_ENDPOINT['london']} s3://tikit-backups-prod-london/postgres (ObjectStore/pg-backups-london in london)",)),
    Case("no-replica-cluster", "prod-replica-cluster", "prod", obj("Cluster", names.pg_cluster("london"), standalone, "london"),
         ("london: no replica cluster of pg-lagos",)),
    Case("aof-off", "redis-persistence", "staging", redis_conf(lambda t: t.replace("appendonly yes", "appendonly no")),
         ("redis.conf has appendonly no",)),
    Case("rdb-off", "redis-persistence", "dev", redis_conf(lambda t: re.sub(r"(?m)^save .*$", 'save ""', t)),
         ("redis.conf declares no RDB save rules",)),
    Case("session-mode", "pgbouncer-transaction-mode", "prod", pgbouncer_ini(lambda t: t.replace("pool_mode = transaction", "pool_mode = session")),
         ("pgbouncer.ini has pool_mode session",)),
    # ---- capacity ----
    Case("too-many-clients", "pgbouncer-client-capacity", "prod", api(annotate(names.DB_CONNECTIONS_ANNOTATION, str(API_CONNECTIONS))),
         (f"clients may open {fmt(PROD.backend.max_replicas)} x {fmt(API_CONNECTIONS)} (Deployment/api) + "
          f"{fmt(PROD.workers.max_replicas)} x {fmt(PROD.workers.db_connections_per_replica)} (Deployment/workers) = "
          f"{fmt(CLIENTS)} connections, more than {PROD.pgbouncer.replicas} PgBouncer replica(s)",)),
    Case("undeclared-client", "pgbouncer-client-capacity", "dev",
         api(lambda o: o["metadata"]["annotations"].pop(names.DB_CONNECTIONS_ANNOTATION)),
         ("Deployment/api in lagos: reads a database URL but does not declare tikit.app/db-connections-per-replica",)),
    Case("max-connections", "postgres-connection-budget", "prod",
         obj("Cluster", names.pg_cluster("lagos"), set_in("spec.postgresql.parameters.max_connections", "50")),
         (f"Cluster/pg-lagos in lagos (primary): {PROD.pgbouncer.replicas} x {PROD.derived.pgbouncer_server_connections_per_pod} "
          f"(pgbouncer-rw: default_pool_size + reserve_pool_size) + superuser_reserved_connections "
          f"{pg_conf.SUPERUSER_RESERVED_CONNECTIONS} + reserved_connections 0 = {PRIMARY_BUDGET} > max_connections 50",)),
    Case("replica-budget", "postgres-connection-budget", "staging",
         obj("Cluster", names.pg_cluster("london"), set_in("spec.postgresql.parameters.max_connections", "40"), "london"),
         ("Cluster/pg-london in london (each read replica): 2 x 25 (pgbouncer-ro", f"= {PRIMARY_BUDGET} > max_connections 40")),
    Case("redis-no-headroom", "redis-memory-headroom", "prod", redis_maxmemory_at_limit,
         (f"maxmemory {fmt(REDIS_LIMIT_MI)}Mi + fork headroom {FORK_PERCENT}% ({fmt(FORK_MI)}Mi) = "
          f"{fmt(REDIS_LIMIT_MI + FORK_MI)}Mi > memory limit {fmt(REDIS_LIMIT_MI)}Mi",)),
    Case("min-over-max", "autoscaler-bounds", "prod",
         obj("ScaledObject", names.BACKEND, set_in("spec.minReplicaCount", PROD.backend.max_replicas + 1)),
         (f"ScaledObject/api in lagos: minimum {PROD.backend.max_replicas + 1} > maximum {PROD.backend.max_replicas}",)),
    Case("pdb-min-available", "autoscaler-bounds", "staging",
         obj("PodDisruptionBudget", names.BACKEND, pdb_min_available(STAGING.backend.min_replicas)),
         (f"PodDisruptionBudget/api in lagos: minAvailable {STAGING.backend.min_replicas} is not below the autoscaler "
          f"minimum {STAGING.backend.min_replicas} of Deployment/api",)),
    Case("not-enough-replicas", "request-capacity", "prod", obj("ScaledObject", names.BACKEND, set_in("spec.maxReplicaCount", SHORT_MAX)),
         (f"lagos: {fmt(PROD.capacity.target_concurrent_users)} concurrent users x {fmt(PROD.capacity.requests_per_user_per_minute)} "
          f"requests/min = {fmt(DEMAND)} requests/min",
          f"> {fmt(SHORT_MAX)} x {fmt(PROD.backend.sustainable_requests_per_minute)}",
          f"= {fmt(SHORT_MAX * PROD.backend.sustainable_requests_per_minute)}", f"(at least {fmt(NEEDED)} replicas)")),
    # ---- nodes ----
    Case("no-dedicated-toleration", "pod-schedulable", "prod", api(delete("spec.template.spec.tolerations")),
         ("Deployment/api in lagos: can land in no NodePool",
          f"tikit-on-demand: does not tolerate the taint tikit.app/dedicated={PROD.namespace}:NoSchedule")),
    Case("pod-too-big", "pod-schedulable", "staging", api(set_in("spec.template.spec.containers.0.resources.requests.memory", "64Gi")),
         ("Deployment/api in lagos: can land in no NodePool", "more than the pool's smallest node leaves for pods")),
    Case("pool-limit-low", "pool-limits", "prod",
         obj("NodePool", f"{PROD.namespace}-on-demand", set_in("spec.limits.cpu", "20")),
         ("NodePool/tikit-on-demand in lagos: limits.cpu 20 <", f"{fmt(PROD.backend.max_replicas)} x Deployment/api",
          "per-node overhead")),
    Case("stateful-on-spot", "spot-interruptible", "prod",
         obj("StatefulSet", names.REDIS, lambda o: o["spec"]["template"]["spec"]["tolerations"].append(
             {"key": PROD.workers.spot_taint_key, "operator": "Equal", "value": PROD.workers.spot_taint_value, "effect": "NoSchedule"})),
         ("StatefulSet/redis in lagos can land in the spot pool NodePool/tikit-spot but does not declare tikit.app/interruptible",
          "keeps state on volumes", "asks not to be disrupted")),
    Case("no-headroom", "scale-out-time", "prod", lambda p: F.remove(p, "Deployment", names.CAPACITY_BUFFER, "lagos"),
         ("lagos: profile step 100 -> 1000 users: capacity for 60,000 requests/min (10 ready replicas of api) takes",
          "more than 120 s")),
    # ---- failure: autoscalers that can trigger ----
    Case("memory-threshold-above-limit", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.BACKEND, lambda o: next(t for t in o["spec"]["triggers"] if t["name"] == "memory-sustained")
             ["metadata"].__setitem__("threshold", str(3 * 1024**3))),
         ("ScaledObject/api in lagos trigger memory-sustained: memory threshold 3,072Mi per pod is at or above the memory limit",
          "OOM-killed before the average gets there")),
    # 95 % of the limit (the rendered threshold is backend.memoryTargetPercent of it): below the
    # limit, but the HPA adds a pod only above 110 % of the target, past the OOM kill.
    Case("memory-threshold-inside-tolerance", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.BACKEND, lambda o: (lambda md: md.__setitem__(
             "threshold", str(int(float(md["threshold"]) * 95 / PROD.backend.memory_target_percent))))(
             next(t for t in o["spec"]["triggers"] if t["name"] == "memory-sustained")["metadata"])),
         ("ScaledObject/api in lagos trigger memory-sustained: memory threshold",
          "is at or above the memory limit 2,048Mi once the HPA acts only above 110 % of the target")),
    Case("rate-threshold-inside-tolerance", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.BACKEND, lambda o: next(t for t in o["spec"]["triggers"] if t["name"] == "request-rate")
             ["metadata"].__setitem__("threshold", str(int(PROD.backend.sustainable_requests_per_minute * 0.95)))),
         ("request-rate threshold", "is at or above what one pod serves", "once the HPA acts only above 110 % of the target")),
    Case("query-on-other-pods", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.BACKEND, lambda o: next(t for t in o["spec"]["triggers"] if t["name"] == "request-rate")
             ["metadata"].__setitem__("query", 'sum(rate(http_requests_total{namespace="tikit",pod=~"web-.*"}[1m])) * 60')),
         ("ScaledObject/api in lagos trigger request-rate: the query's pod matcher 'web-.*' selects none of Deployment/api",)),
    Case("rate-threshold-above-capacity", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.BACKEND, lambda o: next(t for t in o["spec"]["triggers"] if t["name"] == "request-rate")
             ["metadata"].__setitem__("threshold", str(PROD.backend.sustainable_requests_per_minute * 2))),
         ("request-rate threshold", "is at or above what one pod serves")),
    Case("min-equals-max", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.WORKERS, lambda o: o["spec"].update(minReplicaCount=3, maxReplicaCount=3)),
         ("ScaledObject/workers in lagos: minimum and maximum replicas are both 3; it can never scale",)),
    Case("scale-up-disabled", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.BACKEND, set_in("spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleUp.selectPolicy", "Disabled")),
         ("its HPA behavior disables scaling up",)),
    # ---- failure: probes that cause restart storms ----
    Case("liveness-is-readiness", "probe-restart-storm", "prod",
         api(lambda o: container(o)["livenessProbe"]["httpGet"].__setitem__("path", container(o)["readinessProbe"]["httpGet"]["path"])),
         ("Deployment/api in lagos container 'api': the liveness probe is the readiness check (httpGet /ready on http)",)),
    Case("liveness-hair-trigger", "probe-restart-storm", "prod",
         api(lambda o: container(o)["livenessProbe"].update(periodSeconds=5, failureThreshold=1, timeoutSeconds=1)),
         ("the liveness probe restarts the container after 5 s of failures (periodSeconds x failureThreshold)",)),
    Case("liveness-hasty-timeout", "probe-restart-storm", "prod",
         api(lambda o: container(o)["livenessProbe"].update(timeoutSeconds=1)),
         ("Deployment/api in lagos container 'api': the liveness probe times out after 1 s",)),
    Case("no-time-to-boot", "probe-restart-storm", "prod",
         api(lambda o: container(o).pop("startupProbe") and container(o)["livenessProbe"].update(periodSeconds=5, failureThreshold=3)),
         ("livenessProbe (no startupProbe) allows 15 s to start", "crash loop")),
    Case("undeclared-probe-port", "probe-restart-storm", "prod",
         obj("Deployment", names.PGBOUNCER_RW, lambda o: container(o)["livenessProbe"]["tcpSocket"].__setitem__("port", "postgres")),
         ("livenessProbe uses port 'postgres', which the container does not declare; it fails on every pod",)),
    # ---- failure: stateful tiers that survive a pod, a node or a zone ----
    Case("pg-instances-may-share-a-node", "stateful-ha", "prod",
         obj("Cluster", names.pg_cluster("lagos"), lambda o: o["spec"]["affinity"].pop("additionalPodAntiAffinity")),
         ("Cluster/pg-lagos in lagos: nothing keeps its 3 instances on different nodes",)),
    Case("redis-data-on-emptydir", "stateful-ha", "prod",
         lambda plan: F.edit(plan, "StatefulSet", redis_statefulset(plan), "lagos", lambda o: (
             o["spec"].pop("volumeClaimTemplates"),
             o["spec"]["template"]["spec"]["volumes"].append({"name": "data", "emptyDir": {}}))),
         ("StatefulSet/redis in lagos: Redis keeps its data directory outside a volume claim",)),
    Case("even-sentinels", "stateful-ha", "prod", obj("StatefulSet", names.REDIS_SENTINEL, set_in("spec.replicas", 4)),
         ("StatefulSet/redis-sentinel in lagos: 4 sentinels; an even count survives no more failures than 3",)),
    Case("quorum-below-majority-of-more-sentinels", "stateful-ha", "prod", obj("StatefulSet", names.REDIS_SENTINEL, set_in("spec.replicas", 5)),
         ("sentinel monitor tikit quorum 2 with 5 sentinels; it must be a majority (3)",)),
    Case("minority-quorum", "stateful-ha", "prod",
         lambda plan: F.edit(plan, "ConfigMap", F.config_map_with(plan, "lagos", "sentinel.conf"), "lagos", lambda o: o["data"].update(
             {k: v.replace(" 6379 2", " 6379 1") for k, v in o["data"].items() if k.endswith("sentinel.conf")})),
         ("sentinel monitor tikit quorum 1 with 3 sentinels; it must be a majority (2)",)),
    Case("quorum-of-every-sentinel", "stateful-ha", "prod",
         lambda plan: F.edit(plan, "ConfigMap", F.config_map_with(plan, "lagos", "sentinel.conf"), "lagos", lambda o: o["data"].update(
             {k: v.replace(" 6379 2", " 6379 3") for k, v in o["data"].items() if k.endswith("sentinel.conf")})),
         ("sentinel monitor tikit quorum 3 with 3 sentinels; it must be a majority (2) and at most 2",
          "with one sentinel lost, no failover can start")),
    Case("no-sentinel", "stateful-ha", "prod", lambda plan: F.remove(plan, "StatefulSet", names.REDIS_SENTINEL, "lagos"),
         ("StatefulSet/redis in lagos: 3 Redis pods and no Sentinel beside them",)),
    Case("writes-to-a-cut-off-primary", "stateful-ha", "prod", redis_conf(lambda t: t.replace("min-replicas-to-write 1", "min-replicas-to-write 0")),
         ("redis.conf min-replicas-to-write is 0",)),
    Case("sentinels-may-share-a-node", "stateful-ha", "prod",
         obj("StatefulSet", names.REDIS_SENTINEL, lambda o: o["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].pop(
             "requiredDuringSchedulingIgnoredDuringExecution")),
         ("StatefulSet/redis-sentinel in lagos: nothing keeps its sentinels on different nodes",)),
    # ---- disruptions and rollouts that take a tier down ----
    Case("redis-pdb-lets-all-go", "prod-pdb", "prod", obj("PodDisruptionBudget", names.REDIS, set_in("spec.maxUnavailable", 3)),
         ("PodDisruptionBudget/redis in lagos: maxUnavailable 3 lets one drain evict 3 of the 3 pods of StatefulSet/redis at once",)),
    Case("sentinel-pdb-min-zero", "prod-pdb", "prod",
         obj("PodDisruptionBudget", names.REDIS_SENTINEL, lambda o: (o["spec"].pop("maxUnavailable", None), o["spec"].update(minAvailable=0))),
         ("PodDisruptionBudget/redis-sentinel in lagos: minAvailable 0 lets one drain evict 3 of the 3 pods",)),
    Case("pgbouncer-recreate", "prod-rollout", "prod",
         obj("Deployment", names.PGBOUNCER_RW, lambda o: o["spec"].update(strategy={"type": "Recreate"})),
         ("Deployment/pgbouncer-rw in lagos: strategy Recreate stops every pod before the new ones start",)),
    Case("api-rolls-all-at-once", "prod-rollout", "prod",
         api(set_in("spec.strategy.rollingUpdate.maxUnavailable", "100%")),
         ("Deployment/api in lagos: a rollout may take 2 of its 2 pods down at once",)),
    Case("redis-rolls-all-at-once", "prod-rollout", "prod",
         lambda plan: F.edit(plan, "StatefulSet", redis_statefulset(plan), "lagos",
                             set_in("spec.updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 3}})),
         ("StatefulSet/redis in lagos: a rollout may take 3 of its 3 pods down at once",)),
    # ---- stateful tiers that stop on one loss ----
    Case("redis-anti-affinity-selects-nothing", "stateful-ha", "prod",
         lambda plan: F.edit(plan, "StatefulSet", redis_statefulset(plan), "lagos", lambda o: o["spec"]["template"]["spec"]["affinity"]
                             ["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]["matchLabels"]
                             .__setitem__("app.kubernetes.io/name", "redis-x")),
         ("StatefulSet/redis in lagos: nothing keeps its Redis pods on different nodes", "that selects its own pods")),
    Case("pg-anti-affinity-other-cluster", "stateful-ha", "prod",
         obj("Cluster", names.pg_cluster("lagos"), lambda o: o["spec"]["affinity"]["additionalPodAntiAffinity"]
             ["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]["matchLabels"].__setitem__("cnpg.io/cluster", "pg-other")),
         ("Cluster/pg-lagos in lagos: nothing keeps its 3 instances on different nodes",)),
    Case("writes-need-every-replica", "stateful-ha", "prod", redis_conf(lambda t: t.replace("min-replicas-to-write 1", "min-replicas-to-write 2")),
         ("redis.conf min-replicas-to-write is 2 with 2 replica(s) beside the primary: losing one replica",)),
    Case("redis-killed-mid-handover", "stateful-ha", "prod",
         lambda plan: F.edit(plan, "StatefulSet", redis_statefulset(plan), "lagos", set_in("spec.template.spec.terminationGracePeriodSeconds", 5)),
         ("StatefulSet/redis in lagos: terminationGracePeriodSeconds 5 does not cover the handover (30 s), shutdown-timeout (10 s)",)),
    Case("redis-shutdown-outlasts-grace", "stateful-ha", "prod", redis_conf(lambda t: t.replace("shutdown-timeout 10", "shutdown-timeout 60")),
         ("terminationGracePeriodSeconds 45 does not cover", "shutdown-timeout (60 s)")),
    Case("sentinel-slow-to-notice", "stateful-ha", "prod",
         lambda plan: F.edit(plan, "ConfigMap", F.config_map_with(plan, "lagos", "sentinel.conf"), "lagos", lambda o: o["data"].update(
             {k: re.sub(r"down-after-milliseconds tikit [0-9]+", "down-after-milliseconds tikit 600000", v)
              for k, v in o["data"].items() if k.endswith("sentinel.conf")})),
         ("sentinel down-after-milliseconds tikit 600000: a lost primary goes unnoticed for 600 s",)),
    Case("queue-asks-for-another-master", "stateful-ha", "prod",
         obj("ScaledObject", names.WORKERS, lambda o: next(t for t in o["spec"]["triggers"] if t["type"] == "redis-sentinel")
             ["metadata"].__setitem__("sentinelMaster", "mymaster")),
         ("ScaledObject/workers in lagos: trigger", "asks Sentinel for master 'mymaster', which it does not monitor (tikit)")),
    Case("redis-without-handover", "stateful-ha", "prod",
         lambda plan: F.edit(plan, "StatefulSet", redis_statefulset(plan), "lagos",
                             lambda o: container(o).pop("lifecycle")),
         ("StatefulSet/redis in lagos: Redis has no preStop handover",)),
    Case("every-standby-synchronous", "stateful-ha", "prod",
         obj("Cluster", names.pg_cluster("lagos"), lambda o: o["spec"].update(minSyncReplicas=2, maxSyncReplicas=2)),
         ("Cluster/pg-lagos in lagos: waits for 2 synchronous standby(s) out of 2: losing one standby",)),
    # ---- autoscalers that never act ----
    Case("autoscaler-paused", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.BACKEND, lambda o: o["metadata"].setdefault("annotations", {}).__setitem__("autoscaling.keda.sh/paused-replicas", "2")),
         ("ScaledObject/api in lagos: is paused (autoscaling.keda.sh/paused-replicas: 2)",)),
    Case("workers-without-triggers", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.WORKERS, set_in("spec.triggers", [])),
         ("ScaledObject/workers in lagos: has no trigger",)),
    Case("queue-trigger-on-another-list", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.WORKERS, lambda o: next(t for t in o["spec"]["triggers"] if t["type"] == "redis-sentinel")
             ["metadata"].__setitem__("listName", "tikit:job")),
         ("ScaledObject/workers in lagos trigger", "watches list 'tikit:job', which Deployment/workers in lagos's configuration never names",)),
    Case("fallback-below-peak-floor", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.BACKEND, set_in("spec.fallback.replicas", 1)),
         ("ScaledObject/api in lagos: falls back to 1 replica(s) when its metrics fail, below the 5 its cron floor holds",)),
    Case("cpu-threshold-above-request", "autoscaler-can-trigger", "prod",
         obj("ScaledObject", names.BACKEND, lambda o: next(t for t in o["spec"]["triggers"] if t["name"] == "cpu-sustained")
             ["metadata"].__setitem__("threshold", "20")),
         ("trigger cpu-sustained: CPU threshold 20 cores per pod is above the pods' request of 2",)),
    # ---- probes that restart or kill healthy pods ----
    Case("liveness-on-undeclared-number", "probe-restart-storm", "prod",
         api(lambda o: container(o)["livenessProbe"]["httpGet"].__setitem__("port", 8080)),
         ("Deployment/api in lagos container 'api': livenessProbe uses port 8080, which the container does not declare",)),
    Case("liveness-asks-another-host", "probe-restart-storm", "prod",
         api(lambda o: container(o)["livenessProbe"]["httpGet"].__setitem__("host", "status.example.com")),
         ("livenessProbe asks 'status.example.com', not the pod",)),
    Case("liveness-is-readiness-in-other-words", "probe-restart-storm", "prod",
         api(lambda o: container(o)["livenessProbe"]["httpGet"].update(path="/ready/?deep=1", port=3000)),
         ("the liveness probe is the readiness check (httpGet /ready on http)",)),
    Case("startup-is-readiness", "probe-restart-storm", "prod",
         api(lambda o: container(o)["startupProbe"]["httpGet"].__setitem__("path", "/ready")),
         ("the startup probe is the readiness check",)),
    Case("liveness-one-strike", "probe-restart-storm", "prod",
         api(lambda o: container(o)["livenessProbe"].update(failureThreshold=1, periodSeconds=30)),
         ("the liveness probe restarts the container after 1 failed check(s)",)),
    # ---- digests ----
    Case("tag-only-postgres", "image-digest", "prod",
         obj("Cluster", names.pg_cluster("lagos"), set_in("spec.imageName", "ghcr.io/cloudnative-pg/postgresql:17.6")),
         ("Cluster/pg-lagos in lagos: spec.imageName third-party image 'ghcr.io/cloudnative-pg/postgresql:17.6' "
          "is pinned by tag only in prod",)),
    Case("tag-only-sidecar", "image-digest", "staging",
         lambda plan: F.edit(plan, "StatefulSet", redis_statefulset(plan), "lagos",
                             lambda o: container(o, 1).__setitem__("image", "docker.io/oliver006/redis_exporter:v1.67.0")),
         ("third-party image 'docker.io/oliver006/redis_exporter:v1.67.0' is pinned by tag only in staging",)),
    # A load test's pods come from the TestRun, not a pod template.
    Case("tag-only-load-test", "image-digest", "prod",
         lambda plan: F.add(plan, "lagos", {
             "apiVersion": "k6.io/v1alpha1", "kind": "TestRun",
             "metadata": {"name": "load-test", "namespace": "tikit", "labels": {"tikit.app/environment": "prod"}},
             "spec": {"runner": {"image": "grafana/k6:0.55.0"}, "starter": {"image": "curlimages/curl:8.11.0"}}}),
         ("TestRun/load-test", "spec.runner.image third-party image 'grafana/k6:0.55.0' is pinned by tag only in prod")),
    Case("app-without-digest-at-deploy", "image-digest", "prod", lambda plan: plan,
         (f"Deployment/api in lagos: containers 'api' image '{PROD.backend.image}' has no digest",),
         config={"image-digest": {"requireAppDigest": True}}),
    # ---- add-ons ----
    Case("chart-range", "addon-pinned", "staging", chart("keda", "^2.20.0"),
         ("Helm chart keda (keda-lagos) is not pinned to an exact release (version '^2.20.0')",)),
    Case("chart-unpinned-release", "addon-pinned", "prod", chart("cloudnative-pg", "0.28.0", "london"),
         ("Helm chart cloudnative-pg 0.28.0 (cloudnative-pg-london) is not a release tikit/versions.py pins",)),
    Case("kind-not-served", "custom-resource-served", "prod",
         obj("ScaledObject", names.BACKEND, set_in("apiVersion", "keda.sh/v1beta1")),
         ("ScaledObject/api in lagos: keda.sh/v1beta1 ScaledObject is not served by the pinned CRDs",
          "the pinned release serves keda.sh/v1alpha1")),
    Case("group-without-operator", "custom-resource-served", "dev",
         lambda plan: F.add(plan, "lagos", {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "tikit"}}),
         ("Widget/w in lagos: example.com/v1 Widget is not served by the pinned CRDs (no pinned operator serves group 'example.com')",)),
    Case("custom-resource-first", "custom-resource-after-addon", "staging", without_dependencies("ScaledObject", names.BACKEND),
         ("ScaledObject api-lagos in lagos does not wait for", "its chart is not among its dependencies")),
    # ---- secrets ----
    Case("env-password", "no-secret-in-env", "dev", api(env("DB_PASSWORD", "hunter2")),
         ("Deployment/api in lagos: containers 'api' env DB_PASSWORD is a literal secret value",)),
    Case("env-url", "no-secret-in-env", "prod", api(env("DATABASE_URL", "postgres://tikit:s3cret@pgbouncer-rw:6432/tikit")),
         ("env DATABASE_URL holds a URL with a password",)),
    Case("env-pulumi-secret", "no-secret-in-env", "staging", api(env("SESSION_KEY", REDACTED)),
         ("env SESSION_KEY holds a Pulumi secret in clear text",)),
    Case("configmap-key", "no-secret-in-configmaps", "dev", obj("ConfigMap", names.BACKEND_CONFIG, set_in("data.REDIS_PASSWORD", "hunter2")),
         ("ConfigMap/api-config in lagos: key REDIS_PASSWORD holds a secret value",)),
    Case("configmap-requirepass", "no-secret-in-configmaps", "prod", redis_conf(lambda t: t + "requirepass hunter2\n"),
         ("redis.conf line", "sets requirepass")),
    Case("annotation", "no-secret-in-annotations", "dev", api(annotate("tikit.app/api-token", "abc123")),
         ("Deployment/api in lagos: annotation tikit.app/api-token looks like a secret value",)),
    Case("annotation-secret", "no-secret-in-annotations", "prod", obj("Service", names.BACKEND, annotate("tikit.app/note", f"key={REDACTED}")),
         ("Service/api in lagos: annotation tikit.app/note holds a Pulumi secret",)),
]


_BASELINE: dict[str, Any] = {}


def baseline(rendered, stack: str):
    if stack not in _BASELINE:
        plan = rendered(stack).plan
        _BASELINE[stack] = (plan, F.run(plan))
    return _BASELINE[stack]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy_reports_the_exact_violation(rendered, case: Case):
    plan, before = baseline(rendered, case.stack)
    assert not F.of(before, case.policy), [f.message for f in F.of(before, case.policy)]
    after = F.run(case.mutate(plan), case.config)
    found = F.of(after, case.policy)
    assert any(all(s in f.message for s in case.expect) for f in found), [f.message for f in found]
    assert {f.enforcement for f in found} == {case.level}
    # The broken object is named, so the finding points at it (or the stack for region-wide gaps).
    assert all(f.urn is None or f.urn.startswith(f"urn:pulumi:{case.stack}::tikit::") for f in found)


def test_every_policy_has_a_violating_case():
    assert {c.policy for c in CASES} == {p.name for p in tikit_policies.ALL}


def test_two_clusters_sharing_a_bucket_collide(rendered):
    plan, _ = baseline(rendered, "prod")

    def share(o: dict) -> None:
        o["spec"]["configuration"]["destinationPath"] = "s3://tikit-backups-prod-shared/"

    broken = F.edit(F.edit(plan, "ObjectStore", names.pg_object_store("london"), "london", share),
                    "ObjectStore", names.pg_object_store("lagos"), "lagos", share)
    broken = F.edit(broken, "Cluster", names.pg_cluster("london"),
                    "london", lambda o: o["spec"]["plugins"][0]["parameters"].__setitem__("serverName", names.pg_cluster("lagos")))
    messages = [f.message for f in F.of(F.run(broken), "backups-enabled")]
    assert any("archive to the same s3://tikit-backups-prod-shared with serverName pg-lagos" in m for m in messages), messages


def test_surge_first_rollouts_of_a_large_tier_pass(rendered):
    """maxUnavailable 0 (surge first) at any size: 0 is a value, not a missing one."""
    plan, _ = baseline(rendered, "prod")
    bigger = F.edit(plan, "ScaledObject", names.BACKEND, "lagos", set_in("spec.minReplicaCount", 8))
    bigger = F.edit(bigger, "Deployment", names.BACKEND, "lagos", set_in("spec.strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 2}}))
    assert not F.of(F.run(bigger), "prod-rollout")
    unset = F.edit(bigger, "Deployment", names.BACKEND, "lagos", set_in("spec.strategy", {"type": "RollingUpdate"}))
    assert [f.message for f in F.of(F.run(unset), "prod-rollout")] == [
        "Deployment/api in lagos: a rollout may take 2 of its 8 pods down at once (rollingUpdate.maxUnavailable); prod rolls at most 1 at a time (surge instead)"
    ]
