"""Background workers: jobs, cache warming and analytics, on spot capacity.

They drain the Redis list names.JOB_QUEUE and scale on its length
through KEDA's redis list trigger (redis-sentinel where Sentinel runs, so the trigger
follows a failover).  Outside prod the minimum may be 0: with an empty queue the workers
scale to zero and the queue trigger alone wakes them.  docs/autoscaling.md has the details.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names
from tikit.components import autoscaling, nodeapp
from tikit.settings import Redis as RedisSettings
from tikit.settings import Workers as WorkersSettings

COMPONENT = "workers"
# SIGTERM lets a worker finish or requeue its current job; spot reclaim notices (30 s to
# 2 min) are in the same range.
SHUTDOWN_SECONDS = 60
# Workers serve no traffic but expose the API's health contract on this small HTTP port:
# /health (event loop alive) and /ready (Redis and PostgreSQL reachable).
HEALTH_PORT = 8081
# Secret key of names.REDIS_AUTH_SECRET and names.REDIS_SENTINEL_AUTH_SECRET (written by the
# Redis tier).
REDIS_PASSWORD_KEY = "password"
# The container port the probes reach by name; its number is HEALTH_PORT.
HEALTH_PORT_NAME = "health"


@dataclass(frozen=True)
class WorkersArgs:
    target: kube.Target
    workers: WorkersSettings
    # Sentinel count and topology decide which KEDA trigger reads the queue.
    redis: RedisSettings
    # Where KEDA's sustained cpu and memory triggers query Prometheus.
    prometheus_address: str
    # The region lets workers fall back to on-demand nodes when spot capacity is short.
    spot_fallback: bool = True


def auth_name() -> str:
    return f"{names.WORKERS}-redis"


def trigger_secrets(r: RedisSettings) -> list[tuple[str, str, str]]:
    """(parameter, Secret, key) of the queue trigger's TriggerAuthentication: the Redis
    password, and where Sentinel runs the sentinels' own (KEDA's redis-sentinel scaler
    authenticates to them with sentinelPassword)."""
    refs = [("password", names.REDIS_AUTH_SECRET, REDIS_PASSWORD_KEY)]
    if r.sentinels > 0:
        refs.append(("sentinelPassword", names.REDIS_SENTINEL_AUTH_SECRET, REDIS_PASSWORD_KEY))
    return refs


def config_data(args: WorkersArgs) -> dict[str, str]:
    """The workers' non-secret environment: what the API's processes read too (queue,
    environment, region), plus HEALTH_PORT, where the process serves the probes'
    /health and /ready.  Not the API's PORT or METRICS_PATH: a worker serves neither."""
    return {**nodeapp.common_config(args.target), "HEALTH_PORT": str(HEALTH_PORT)}


def spot_placement(w: WorkersSettings, target: kube.Target, fallback: bool) -> dict[str, Any]:
    """Tolerate the spot pool's taint and the platform pools' dedicated one.  Where the
    region allows an on-demand fallback (``fallback``) spot nodes are PREFERRED, so the
    workers still run when the cloud has no spot capacity; elsewhere they are REQUIRED.
    Labels and taints come from settings because every cloud (and Karpenter) names them
    differently; the spot NodePool carries exactly these."""
    spot = {"matchExpressions": [{"key": w.spot_node_label_key, "operator": "In", "values": [w.spot_node_label_value]}]}
    if fallback:
        node_affinity: dict[str, Any] = {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": kube.STRONG_PREFERENCE, "preference": spot}]
        }
    else:
        node_affinity = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [spot]}}
    return {
        "priorityClassName": names.priority_class(target.namespace, names.PRIORITY_WORKERS),
        "tolerations": [
            {
                "key": w.spot_taint_key,
                "operator": "Equal",
                "value": w.spot_taint_value,
                "effect": w.spot_taint_effect,
            },
            kube.dedicated_toleration(target),
        ],
        "affinity": {"nodeAffinity": node_affinity},
    }


def queue_trigger(args: WorkersArgs) -> dict[str, Any]:
    w, r, ns = args.workers, args.redis, args.target.namespace
    if r.sentinels > 0:
        return autoscaling.redis_list_trigger(
            list_name=names.JOB_QUEUE,
            list_length=w.queue_length_per_replica,
            auth_name=auth_name(),
            sentinel_addresses=f"{names.service_host(names.REDIS_SENTINEL, ns)}:{names.REDIS_SENTINEL_PORT}",
            sentinel_master=names.REDIS_MASTER_NAME,
        )
    return autoscaling.redis_list_trigger(
        list_name=names.JOB_QUEUE,
        list_length=w.queue_length_per_replica,
        auth_name=auth_name(),
        address=f"{names.service_host(names.REDIS, ns)}:{names.REDIS_PORT}",
    )


def scaled_object_spec(args: WorkersArgs) -> dict[str, Any]:
    """Queue length first; cpu and memory (held for 2 minutes, as for the API) add capacity
    for heavy jobs while pods run.  The queue trigger decides 0 <-> 1, the HPA the max over
    all three from 1 up."""
    w, ns, prom = args.workers, args.target.namespace, args.prometheus_address
    return autoscaling.scaled_object_spec(
        workload=names.WORKERS,
        min_replicas=w.min_replicas,
        max_replicas=w.max_replicas,
        hpa_behavior=autoscaling.behavior(),
        triggers=[
            queue_trigger(args),
            autoscaling.cpu_trigger(prom, ns, names.WORKERS, w.cpu, w.cpu_target_percent),
            autoscaling.memory_trigger(prom, ns, names.WORKERS, w.memory, w.memory_target_percent),
        ],
        cooldown_seconds=autoscaling.COOLDOWN_SECONDS,
    )


class Workers(pulumi.ComponentResource):
    """The workers' ConfigMap, Deployment and PDB, the queue TriggerAuthentication and ScaledObject."""

    config_map: k8s.core.v1.ConfigMap
    deployment: k8s.apps.v1.Deployment
    pdb: k8s.policy.v1.PodDisruptionBudget
    trigger_auth: k8s.apiextensions.CustomResource
    scaled_object: k8s.apiextensions.CustomResource

    def __init__(self, name: str, args: WorkersArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:app:Workers", name, None, opts)
        t, w = args.target, args.workers
        app = names.WORKERS
        version = kube.image_version(w.image)
        sel = kube.selector(app, t)
        child = t.opts(self)

        self.config_map = k8s.core.v1.ConfigMap(
            t.rname(names.WORKERS_CONFIG),
            metadata=kube.metadata(names.WORKERS_CONFIG, COMPONENT, t, app=app),
            data=config_data(args),
            opts=child,
        )

        container = nodeapp.container(
            app,
            w.image,
            config_map=names.WORKERS_CONFIG,
            db_connections_per_replica=w.db_connections_per_replica,
            cpu=w.cpu,
            memory=w.memory,
            ports=[{"name": HEALTH_PORT_NAME, "containerPort": HEALTH_PORT, "protocol": "TCP"}],
            # Not ready (Redis or PostgreSQL unreachable) keeps a new worker out of the
            # rollout's availability count instead of letting it crash-loop.
            **nodeapp.health_probes(HEALTH_PORT_NAME),
        )
        self.deployment = kube.workload(
            k8s.apps.v1.Deployment,
            t.rname(app),
            metadata=nodeapp.deployment_metadata(
                app, COMPONENT, t, version=version, db_connections_per_replica=w.db_connections_per_replica,
                # Jobs are safe to retry (docs/autoscaling.md): the only pods allowed on spot.
                extra_annotations={names.INTERRUPTIBLE_ANNOTATION: "true"},
            ),
            spec={
                # No spec.replicas: the HPA that KEDA owns sets it (and scales to zero).
                "selector": {"matchLabels": sel},
                "template": {
                    "metadata": {"labels": kube.labels(app, COMPONENT, t, version)},
                    # The zone and node spread keeps one reclaimed spot node from taking
                    # every worker.
                    "spec": nodeapp.pod_spec(sel, container, grace_seconds=SHUTDOWN_SECONDS, **spot_placement(w, t, args.spot_fallback)),
                },
            },
            # Pods read the ConfigMap at start: create it first.
            opts=t.opts(self, depends_on=[self.config_map]),
        )

        # Keeps spot node consolidation from evicting every worker at once when several
        # run (kube.disruption_rule: never blocks a drain, even at 0 or 1 replicas).
        self.pdb = kube.pdb(t.rname(app), app, COMPONENT, t, sel, child)

        self.trigger_auth = autoscaling.trigger_authentication(
            t.rname(auth_name()),
            kube.metadata(auth_name(), COMPONENT, t, app=app),
            trigger_secrets(args.redis),
            child,
        )

        self.scaled_object = autoscaling.scaled_object(
            t.rname(app),
            kube.metadata(app, COMPONENT, t),
            scaled_object_spec(args),
            t.opts(self, depends_on=[self.deployment, self.trigger_auth]),
        )

        self.register_outputs({"deployment": app})
