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
from tikit import settings
from tikit import units
from tikit.conf import metrics

API_VERSION = "keda.sh/v1alpha1"
# KEDA's admission webhook rejects longer ScaledObject names (it derives label values from them).
MAX_NAME_LENGTH = 54

# The HPA's own scale-up window is 0 s (the Kubernetes default): each signal carries its
# own sustain period in its trigger (docs/autoscaling.md), so a request spike or the peak
# cron acts at the next HPA sync instead of waiting for one HPA-wide window.
SCALE_UP_WINDOW_SECONDS = 0
# Scale-up rate: the HPA defaults written out (the larger of +4 pods and +100 % per 15 s),
# so the rendered behaviour is the whole behaviour (the capacity model reads it).
SCALE_UP_PODS = 4
SCALE_UP_PERCENT = 100
SCALE_UP_PERIOD_SECONDS = 15
# The notes' scale-down rules: after 5 minutes of calm, one pod per 5 minutes ("Cooldown:
# 5 minutes between scaling events"); the same for the API and the workers.
SCALE_DOWN_WINDOW_SECONDS = 300
SCALE_DOWN_PODS_PER_PERIOD = 1
SCALE_DOWN_PERIOD_SECONDS = 300
# KEDA cooldownPeriod: how long the queue must stay empty before the last worker goes
# (1 -> 0, only where minReplicas is 0): the notes' 5-minute cooldown.
COOLDOWN_SECONDS = 300
# PromQL rate() window of the request-rate trigger: two scrapes at the 30 s scrape
# interval, the shortest window rate() can read, so a spike shows within a scrape or two.
REQUEST_RATE_WINDOW = "1m"
# The notes' "CPU > 70 % for 2 minutes" and "memory > 80 % for 2 minutes", as a Prometheus
# alert's `for: 2m` would hold them: each trigger reports the LOWEST value its signal took
# at every SUBQUERY_STEP evaluation of the last SUSTAIN, so it exceeds the threshold only
# once the signal has stayed above it for the whole period.  CPU is a counter, read as its
# CPU_RATE_WINDOW rate (two scrapes at 30 s); memory is a gauge.
SUSTAIN = "2m"
CPU_RATE_WINDOW = "1m"
SUBQUERY_STEP = "15s"
# The peak hours are Lagos's evening (the notes: "6 PM - 11 PM WAT"); settings.PEAK_TIMEZONE.
PEAK_TIMEZONE = settings.PEAK_TIMEZONE
# Trigger names (unique per ScaledObject): what `kubectl describe` and the capacity model
# call each signal.
CPU_TRIGGER = "cpu-sustained"
MEMORY_TRIGGER = "memory-sustained"
REQUEST_RATE_TRIGGER = "request-rate"
PEAK_TRIGGER = "peak-floor"
QUEUE_TRIGGER = "queue-length"

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
    """autoscaling/v2 behaviour: scale up at once, at the HPA's default rate (the triggers
    hold their own sustain periods), and one step down (``down_pods`` pods) per
    ``down_period`` seconds after a ``down_window`` of calm."""
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": up_window,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Pods", "value": SCALE_UP_PODS, "periodSeconds": SCALE_UP_PERIOD_SECONDS},
                {"type": "Percent", "value": SCALE_UP_PERCENT, "periodSeconds": SCALE_UP_PERIOD_SECONDS},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": down_window,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": down_pods, "periodSeconds": down_period}],
        },
    }


def pod_pattern(workload: str) -> str:
    """Pods of a Deployment are named ``<deployment>-<pod-template-hash>-<suffix>``; PromQL
    regexes are anchored, so the pattern matches this Deployment's pods and no other's."""
    return f"{workload}-[a-z0-9]+-[a-z0-9]+"


def _container_selector(namespace: str, workload: str) -> str:
    # The workload's own container only: not the pod-level cgroup series (container="").
    return f'namespace="{namespace}",pod=~"{pod_pattern(workload)}",container="{workload}"'


def sustained_cpu_query(namespace: str, workload: str, sustain: str = SUSTAIN) -> str:
    """CPU cores used by all of a Deployment's containers (the CPU_RATE_WINDOW rate), the
    LOWEST of its SUBQUERY_STEP evaluations over ``sustain``."""
    inner = f"sum(rate({metrics.CONTAINER_CPU}{{{_container_selector(namespace, workload)}}}[{CPU_RATE_WINDOW}]))"
    return f"min_over_time({inner}[{sustain}:{SUBQUERY_STEP}])"


def sustained_memory_query(namespace: str, workload: str, sustain: str = SUSTAIN) -> str:
    """Working-set bytes of all of a Deployment's containers, the LOWEST over ``sustain``."""
    inner = f"sum({metrics.CONTAINER_MEMORY}{{{_container_selector(namespace, workload)}}})"
    return f"min_over_time({inner}[{sustain}:{SUBQUERY_STEP}])"


def _number(x: float) -> str:
    return format(round(x, 6), ".10g")


def sustained_trigger(server_address: str, query: str, threshold: float, name: str) -> dict[str, Any]:
    """A Prometheus trigger whose query returns a TOTAL over the workload: with AverageValue
    the HPA wants ceil(total / threshold) pods, the same arithmetic as a Utilization target
    when ``threshold`` is target percent x the per-pod request.

    Active (KEDA's 0 <-> 1 decision, which matters where the minimum is 0) only above the
    threshold itself: an idle pod's CPU and memory are never 0, and an activation
    threshold of 0 would keep a workload from ever scaling to zero."""
    trigger = prometheus_trigger(server_address, query, _number(threshold), name)
    trigger["metadata"]["activationThreshold"] = _number(threshold)
    return trigger


def cpu_trigger(server_address: str, namespace: str, workload: str, cpu_request: str, percent: int) -> dict[str, Any]:
    """cpu > ``percent`` % of the request for SUSTAIN: threshold in cores per pod."""
    cores = units.cpu_millis(cpu_request) * percent / 100 / 1000
    return sustained_trigger(server_address, sustained_cpu_query(namespace, workload), cores, CPU_TRIGGER)


def memory_trigger(server_address: str, namespace: str, workload: str, memory_request: str, percent: int) -> dict[str, Any]:
    """memory > ``percent`` % of the request (= limit) for SUSTAIN: threshold in bytes per pod."""
    limit = units.memory_bytes(memory_request) * percent // 100
    return sustained_trigger(server_address, sustained_memory_query(namespace, workload), limit, MEMORY_TRIGGER)


def request_rate_query(metric: str, namespace: str, workload: str, window: str = REQUEST_RATE_WINDOW) -> str:
    """Requests per MINUTE over all pods of one Deployment in one namespace.

    A total, not a per-pod figure: with metricType AverageValue the HPA divides it by the
    current replica count and compares the quotient with the threshold."""
    return f'sum(rate({metric}{{namespace="{namespace}",pod=~"{pod_pattern(workload)}"}}[{window}])) * 60'


def prometheus_trigger(server_address: str, query: str, threshold: "int | str", name: str = REQUEST_RATE_TRIGGER) -> dict[str, Any]:
    return {
        "type": "prometheus",
        "name": name,
        "metricType": "AverageValue",
        "metadata": {"serverAddress": server_address, "query": query, "threshold": str(threshold)},
    }


def cron_trigger(*, start: str, end: str, desired_replicas: int, timezone: str = PEAK_TIMEZONE) -> dict[str, Any]:
    """A dynamic minimum: at least ``desired_replicas`` between ``start`` and ``end`` (five-field cron)."""
    return {
        "type": "cron",
        "name": PEAK_TRIGGER,
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
    return {"type": kind, "name": QUEUE_TRIGGER, "metadata": metadata, "authenticationRef": {"name": auth_name}}


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
