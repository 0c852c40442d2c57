"""KEDA ScaledObject builders shared by the API and the workers.

One ScaledObject per workload owns that workload's HPA (KEDA creates it, named in
advanced.horizontalPodAutoscalerConfig); nothing else may declare an HPA for the same
Deployment, or KEDA's admission webhook rejects the ScaledObject.  docs/autoscaling.md maps
each rule of the notes onto these triggers and the HPA behaviour.

Trigger metadata values are strings: the CRD types them as map[string]string.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube

API_VERSION = "keda.sh/v1alpha1"
# KEDA's admission webhook rejects longer ScaledObject names (it derives label values from them).
MAX_NAME_LENGTH = 54

# The notes' scaling rules (docs/autoscaling.md maps each one): scale up on a signal held
# for 2 minutes, scale down after 5 minutes of calm, one pod per 5 minutes ("Cooldown: 5
# minutes between scaling events"); the same for the API and the workers.
SCALE_UP_WINDOW_SECONDS = 120
SCALE_DOWN_WINDOW_SECONDS = 300
SCALE_DOWN_PODS_PER_PERIOD = 1
SCALE_DOWN_PERIOD_SECONDS = 300
# KEDA cooldownPeriod: how long the queue must stay empty before the last worker goes
# (1 -> 0, only where minReplicas is 0): the notes' 5-minute cooldown.
COOLDOWN_SECONDS = 300
# PromQL rate() window of the request-rate trigger.
REQUEST_RATE_WINDOW = "2m"
# The peak hours are Lagos's evening (the notes: "6 PM - 11 PM WAT").
PEAK_TIMEZONE = "Africa/Lagos"
# KEDA fallback (docs/autoscaling.md, "When Prometheus is down"): after this many failed
# reads of a trigger in a row (KEDA counts > threshold, at every HPA sync and poll), the
# trigger reports the fallback replicas instead of an error; "currentReplicasIfHigher"
# never scales below what runs.  Only non-cpu/memory triggers fall back.
FALLBACK_FAILURE_THRESHOLD = 3
FALLBACK_BEHAVIOR = "currentReplicasIfHigher"


def hpa_name(workload: str) -> str:
    """The HPA KEDA creates; named explicitly, with KEDA's own prefix so `kubectl` users find it."""
    return f"keda-hpa-{workload}"


def behavior(
    *,
    up_window: int = SCALE_UP_WINDOW_SECONDS,
    down_window: int = SCALE_DOWN_WINDOW_SECONDS,
    down_pods: int = SCALE_DOWN_PODS_PER_PERIOD,
    down_period: int = SCALE_DOWN_PERIOD_SECONDS,
) -> dict[str, Any]:
    """autoscaling/v2 behaviour: a sustained signal before scaling up, and one step down
    (``down_pods`` pods) per ``down_period`` seconds after a ``down_window`` of calm.
    Scale-up policies stay at the HPA defaults (max of 100 % and 4 pods per 15 s)."""
    return {
        "scaleUp": {"stabilizationWindowSeconds": up_window},
        "scaleDown": {
            "stabilizationWindowSeconds": down_window,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": down_pods, "periodSeconds": down_period}],
        },
    }


def utilization_trigger(resource: str, percent: int) -> dict[str, Any]:
    """cpu / memory as a percentage of the container requests (metadata.type was removed in KEDA 2.18)."""
    return {"type": resource, "metricType": "Utilization", "metadata": {"value": str(percent)}}


def request_rate_query(metric: str, namespace: str, workload: str, window: str = REQUEST_RATE_WINDOW) -> str:
    """Requests per MINUTE over all pods of one Deployment in one namespace.

    A total, not a per-pod figure: with metricType AverageValue the HPA divides it by the
    current replica count and compares the quotient with the threshold.  Pods of a
    Deployment are named ``<deployment>-<pod-template-hash>-<suffix>``; PromQL regexes are
    anchored, so the pattern matches this Deployment's pods and no other workload's.
    """
    pods = f"{workload}-[a-z0-9]+-[a-z0-9]+"
    return f'sum(rate({metric}{{namespace="{namespace}",pod=~"{pods}"}}[{window}])) * 60'


def prometheus_trigger(server_address: str, query: str, threshold: int) -> dict[str, Any]:
    return {
        "type": "prometheus",
        "metricType": "AverageValue",
        "metadata": {"serverAddress": server_address, "query": query, "threshold": str(threshold)},
    }


def cron_trigger(*, start: str, end: str, desired_replicas: int, timezone: str = PEAK_TIMEZONE) -> dict[str, Any]:
    """A dynamic minimum: at least ``desired_replicas`` between ``start`` and ``end`` (five-field cron)."""
    return {
        "type": "cron",
        "metadata": {"timezone": timezone, "start": start, "end": end, "desiredReplicas": str(desired_replicas)},
    }


def redis_list_trigger(
    *,
    list_name: str,
    list_length: int,
    auth_name: str,
    address: Optional[str] = None,
    sentinel_addresses: Optional[str] = None,
    sentinel_master: Optional[str] = None,
) -> dict[str, Any]:
    """Queue length per replica (AverageValue): KEDA's ``redis`` trigger against one
    address, or ``redis-sentinel`` asking the Sentinels for the current primary, so the
    trigger follows a failover."""
    metadata: dict[str, str] = {}
    if sentinel_addresses:
        kind = "redis-sentinel"
        metadata["addresses"] = sentinel_addresses
        metadata["sentinelMaster"] = str(sentinel_master)
    else:
        kind = "redis"
        metadata["address"] = str(address)
    metadata.update({"listName": list_name, "listLength": str(list_length)})
    return {"type": kind, "metadata": metadata, "authenticationRef": {"name": auth_name}}


def trigger_authentication(
    resource_name: str,
    meta: Mapping[str, Any],
    secret_refs: Sequence[tuple[str, str, str]],
    opts: pulumi.ResourceOptions,
) -> k8s.apiextensions.CustomResource:
    """TriggerAuthentication from (parameter, secret name, key): credentials stay in Secrets."""
    refs = [{"parameter": p, "name": n, "key": k} for p, n, k in secret_refs]
    return kube.custom(resource_name, API_VERSION, "TriggerAuthentication", meta, {"secretTargetRef": refs}, opts)


def fallback(replicas: int) -> dict[str, Any]:
    """What a failing external trigger reports instead of nothing: ``replicas`` (at least
    the running count, with FALLBACK_BEHAVIOR)."""
    return {"failureThreshold": FALLBACK_FAILURE_THRESHOLD, "replicas": replicas, "behavior": FALLBACK_BEHAVIOR}


def scaled_object_spec(
    *,
    workload: str,
    min_replicas: int,
    max_replicas: int,
    hpa_behavior: Mapping[str, Any],
    triggers: Sequence[Mapping[str, Any]],
    cooldown_seconds: Optional[int] = None,
    fallback_spec: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload},
        # Always explicit: KEDA's default minimum is 0.
        "minReplicaCount": min_replicas,
        "maxReplicaCount": max_replicas,
        "advanced": {"horizontalPodAutoscalerConfig": {"name": hpa_name(workload), "behavior": dict(hpa_behavior)}},
        "triggers": [dict(t) for t in triggers],
    }
    if cooldown_seconds is not None:
        spec["cooldownPeriod"] = cooldown_seconds
    if fallback_spec is not None:
        # KEDA's webhook accepts a fallback only next to a trigger that can fall back.
        if all(t["type"] in ("cpu", "memory") for t in triggers):
            raise ValueError(f"ScaledObject {workload}: a fallback needs a trigger other than cpu/memory")
        spec["fallback"] = dict(fallback_spec)
    return spec


def scaled_object(
    resource_name: str,
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    opts: pulumi.ResourceOptions,
) -> k8s.apiextensions.CustomResource:
    name = meta["name"]
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"ScaledObject name '{name}' is {len(name)} characters; KEDA allows {MAX_NAME_LENGTH}")
    return kube.custom(resource_name, API_VERSION, "ScaledObject", meta, spec, opts)
