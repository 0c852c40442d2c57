"""What breaks under load or failure in prod although every object is valid: autoscalers
whose triggers can never fire, probes that turn a slow moment into a restart storm, and
stateful tiers that cannot survive the loss of a pod, a node or a zone.

Each check reads the rendered objects only: the autoscaler's triggers against its target's
containers, the probes against the containers' ports and the workload's boot time
(``tikit.app/boot-seconds``), the stateful tiers' replicas, volumes, placement and the
Sentinel configuration they mount."""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from . import annotations as ann
from .base import Report, integer, schema, stack_policy
from .model import Autoscaler, Stack, Workload, container_name, containers, mounted_config_maps
from .parse import as_dict, as_float, as_int, as_list, fmt, get, mib, quantity, redis_directives
from .reliability import ENV_PROD, _applies
from .simulation import HPA_TOLERANCE

AREA = "failure"
Say = Callable[[str], None]

# ---- autoscalers that can trigger -------------------------------------------------------------

# What a Prometheus trigger's query measures, by the metric it reads.
CPU_METRIC = "container_cpu_usage_seconds_total"
MEMORY_METRIC = "container_memory_working_set_bytes"
REQUESTS_METRIC = "http_requests_total"
# KEDA stops scaling a ScaledObject that carries either (paused-replicas pins a count).
KEDA_PAUSE_ANNOTATIONS = ("autoscaling.keda.sh/paused", "autoscaling.keda.sh/paused-replicas")
LABEL_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|=|!=|!~)\s*"((?:[^"\\]|\\.)*)"')
# Pod names the controllers create: <deployment>-<replicaset hash>-<5 characters>, and
# <statefulset>-<ordinal>.
SAMPLE_POD = {"Deployment": "{name}-5d8f7c9b6d-x2k4q", "StatefulSet": "{name}-0"}


def _matchers(query: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for label, op, value in LABEL_MATCHER.findall(query):
        out.setdefault(label, []).append((op, value))
    return out


def _selects(matchers: list[tuple[str, str]], value: str) -> bool:
    for op, pattern in matchers:
        try:
            hit = re.fullmatch(pattern, value) is not None if "~" in op else pattern == value
        except re.error:
            return False
        if hit != (not op.startswith("!")):
            return False
    return True


def _limit(w: Workload, container: Optional[str], resource: str) -> Optional[float]:
    """The per-pod ceiling of a resource: the sum of the selected containers' limits (None when
    any of them is unlimited)."""
    total = 0.0
    for _, c in containers(w.pod_spec, init=False):
        if container is not None and container_name(c) != container:
            continue
        limit = quantity(get(c, "resources", "limits", resource))
        if limit is None:
            return None
        total += limit
    return total or None


def _request(w: Workload, container: Optional[str], resource: str) -> float:
    """The selected containers' requests of a resource, summed per pod."""
    return sum(
        quantity(get(c, "resources", "requests", resource)) or 0
        for _, c in containers(w.pod_spec, init=False)
        if container is None or container_name(c) == container
    )


def _unreachable(target: float, ceiling: float) -> bool:
    """The HPA adds pods only when usage exceeds the target by more than its tolerance (10 %):
    a target whose tolerance band reaches the ceiling (a limit, a pod's capacity) never does."""
    return target * (1 + HPA_TOLERANCE) >= ceiling


# The words that say so, after "<target> is at or above ...".
TOLERANCE_NOTE = f"the HPA acts only above {100 + round(HPA_TOLERANCE * 100)} % of the target"


def _resource_target(t: dict, w: Workload, resource: str, say: Say, where: str) -> None:
    """A KEDA cpu/memory trigger (the HPA's resource metric) against the containers' requests."""
    value = as_float(get(t, "metadata", "value"))
    kind = t.get("metricType") or get(t, "metadata", "type") or "Utilization"
    container = get(t, "metadata", "containerName")
    limit = _limit(w, container, resource)
    if value is None or value <= 0:
        say(f"{where}: target {get(t, 'metadata', 'value')!r} is not a positive number; it never scales")
        return
    if limit is None:
        return
    if kind == "Utilization":
        request = _request(w, container, resource)
        if request and _unreachable(value, limit / request * 100):
            say(
                f"{where}: {resource} utilization target {fmt(value)}% is at or above what the limit allows "
                f"({fmt(limit / request * 100)}% of the request) once {TOLERANCE_NOTE}; usage never gets there, "
                "so it never scales"
            )
    elif _unreachable(value, limit):
        say(f"{where}: {resource} target {fmt(value)} is at or above the limit {fmt(limit)} once {TOLERANCE_NOTE}; it never scales")


def _prometheus_target(t: dict, a: Autoscaler, w: Workload, cfg: dict, say: Say, where: str) -> None:
    query = str(get(t, "metadata", "query") or "")
    threshold = as_float(get(t, "metadata", "threshold"))
    if threshold is None or threshold <= 0:
        say(f"{where}: threshold {get(t, 'metadata', 'threshold')!r} is not a positive number; the HPA cannot act on it")
        return
    m = _matchers(query)
    namespace = m.get("namespace")
    if namespace and not _selects(namespace, a.obj.namespace or ""):
        say(f"{where}: the query selects namespace {namespace[0][1]!r}, not {a.obj.namespace!r}: it measures another workload")
    pod = m.get("pod")
    sample = SAMPLE_POD.get(w.kind, "{name}-0").format(name=w.name)
    if pod and not _selects(pod, sample):
        say(f"{where}: the query's pod matcher {pod[0][1]!r} selects none of {w.obj.ref}'s pods (such as {sample}); it reads nothing")
    container = m.get("container")
    names = [container_name(c) for _, c in containers(w.pod_spec, init=False)]
    if container and not any(_selects(container, n) for n in names):
        say(f"{where}: the query's container matcher {container[0][1]!r} names no container of {w.obj.ref} ({', '.join(names)})")
    per_pod = t.get("metricType", "AverageValue") == "AverageValue"
    if not per_pod:
        return
    chosen = container[0][1] if container and container[0][0] == "=" else None
    if MEMORY_METRIC in query:
        limit = _limit(w, chosen, "memory")
        if limit is not None and _unreachable(threshold, limit):
            say(
                f"{where}: memory threshold {mib(threshold)} per pod is at or above the memory limit {mib(limit)} "
                f"once {TOLERANCE_NOTE}; the container is OOM-killed before the average gets there, so it never scales"
            )
    elif CPU_METRIC in query:
        limit = _limit(w, chosen, "cpu")
        request = _request(w, chosen, "cpu")
        if limit is None and request and threshold > request:
            say(
                f"{where}: CPU threshold {fmt(threshold)} cores per pod is above the pods' request of {fmt(request)}; "
                "with no limit it fires only once pods compete for spare node CPU, after latency has already grown"
            )
        if limit is not None and _unreachable(threshold, limit):
            say(
                f"{where}: CPU threshold {fmt(threshold)} cores per pod is at or above the CPU limit {fmt(limit)} "
                f"once {TOLERANCE_NOTE}; it never scales"
            )
    elif REQUESTS_METRIC in query:
        capacity = as_float(w.obj.annotations.get(ann.SUSTAINABLE_REQUESTS_PER_MINUTE))
        if capacity is not None and _unreachable(threshold, capacity):
            say(
                f"{where}: request-rate threshold {fmt(threshold)}/min per pod is at or above what one pod serves "
                f"({fmt(capacity)}/min, {ann.SUSTAINABLE_REQUESTS_PER_MINUTE}) once {TOLERANCE_NOTE}; "
                "pods saturate before it is reached"
            )


def _environment_values(stack: Stack, w: Workload) -> set[str]:
    """Every value a workload's containers get as environment: env values and the data of the
    ConfigMaps they load with envFrom."""
    values: set[str] = set()
    maps: set[str] = set()
    for _, c in containers(w.pod_spec, init=False):
        values |= {str(e["value"]) for e in as_list(c.get("env")) if isinstance(e, dict) and "value" in e}
        maps |= {n for n in (get(e, "configMapRef", "name") for e in as_list(c.get("envFrom"))) if isinstance(n, str)}
    values |= {text for _, _, text in stack.config_entries(w.region, w.obj.namespace, maps)}
    return values


def _can_trigger(stack: Stack, cfg: dict, report: Report) -> None:
    if not _applies(stack, cfg["environments"]):
        return
    for w in stack.workloads:
        for a in w.autoscalers:
            say = lambda message, obj=a.obj: report(message, obj)  # noqa: E731
            ref = a.obj.ref
            if a.min is not None and a.max is not None and a.min == a.max:
                say(f"{ref}: minimum and maximum replicas are both {a.min}; it can never scale {w.obj.ref}")
            paused = {k: v for k, v in a.obj.annotations.items() if k in KEDA_PAUSE_ANNOTATIONS}
            if a.is_keda and paused and str(paused.get(KEDA_PAUSE_ANNOTATIONS[0], "true")).lower() != "false":
                say(f"{ref}: is paused ({', '.join(f'{k}: {v}' for k, v in sorted(paused.items()))}); {w.obj.ref} does not scale at all")
            if a.is_keda and not a.triggers:
                say(f"{ref}: has no trigger; nothing ever asks for more pods of {w.obj.ref}")
            fallback = as_dict(a.obj.spec.get("fallback")) if a.is_keda else {}
            floors = a.cron_floors()
            if fallback and floors and (as_int(fallback.get("replicas")) or 0) < max(floors):
                say(
                    f"{ref}: falls back to {fallback.get('replicas')} replica(s) when its metrics fail, below the "
                    f"{max(floors)} its cron floor holds: a metrics outage at the peak takes capacity away"
                )
            behavior = as_dict(get(a.obj.spec, "advanced", "horizontalPodAutoscalerConfig", "behavior")) if a.is_keda else as_dict(a.obj.spec.get("behavior"))
            up = as_dict(behavior.get("scaleUp"))
            policies = as_list(up.get("policies"))
            if up.get("selectPolicy") == "Disabled" or (policies and all((as_int(p.get("value")) or 0) <= 0 for p in policies)):
                say(f"{ref}: its HPA behavior disables scaling up (scaleUp selectPolicy Disabled or no policy adds a pod)")
            for i, t in enumerate(a.triggers):
                where = f"{ref} trigger {t.get('name') or i}"
                kind = t.get("type")
                if kind in ("cpu", "memory"):
                    _resource_target(t, w, kind, say, where)
                elif kind == "prometheus":
                    _prometheus_target(t, a, w, cfg, say, where)
                elif kind in ("redis", "redis-sentinel", "redis-cluster"):
                    length = as_float(get(t, "metadata", "listLength"))
                    if length is not None and length <= 0:
                        say(f"{where}: listLength {fmt(length)} is not positive; the HPA cannot act on it")
                    list_name = get(t, "metadata", "listName")
                    if not list_name:
                        say(f"{where}: names no list; it reads nothing")
                    else:
                        known = _environment_values(stack, w)
                        if known and str(list_name) not in known:
                            say(
                                f"{where}: watches list {list_name!r}, which {w.obj.ref}'s configuration never names; "
                                "it counts a queue the workers do not read, so it never scales them"
                            )


autoscaler_can_trigger = stack_policy(
    name="autoscaler-can-trigger",
    description="In prod every autoscaler can actually scale: not paused, with triggers, a range to scale in, scale-up allowed, every trigger's query selecting its target's pods with a target the pods can exceed by the HPA's 10 % tolerance below their limits, requests and capacity, queue triggers on a list the workers read, and a metrics fallback no lower than the cron floor.",
    check=_can_trigger,
    remediation="Keep thresholds below the containers' limits and the per-pod capacity (components/autoscaling.py derives them from the tier's settings), and queries on the target's namespace, pods and container.",
    area=AREA,
    config=schema(environments=ENV_PROD),
)


# ---- probes that cause restart storms -------------------------------------------------------


def _handler(probe: dict) -> Optional[tuple[str, str]]:
    for kind in ("httpGet", "exec", "grpc", "tcpSocket"):
        if kind in probe:
            body = as_dict(probe[kind])
            if kind == "httpGet":
                return kind, f"{body.get('path', '/')} on {body.get('port')}"
            if kind == "exec":
                return kind, " ".join(str(a) for a in as_list(body.get("command")))
            return kind, str(body.get("port"))
    return None


def _window(probe: dict) -> float:
    """Seconds of failure before the kubelet acts: initialDelay + period x failureThreshold."""
    period = as_int(probe.get("periodSeconds")) or 10
    failures = as_int(probe.get("failureThreshold")) or 3
    return (as_int(probe.get("initialDelaySeconds")) or 0) + period * failures


def _ports(c: dict) -> set[str]:
    return {str(p.get("name")) for p in as_list(c.get("ports")) if isinstance(p, dict) and p.get("name")}


def _port_numbers(c: dict) -> dict[str, str]:
    """Declared ports: name -> number and number -> number, as strings."""
    out: dict[str, str] = {}
    for p in as_list(c.get("ports")):
        if isinstance(p, dict) and p.get("containerPort") is not None:
            number = str(p["containerPort"])
            out[number] = number
            if p.get("name"):
                out[str(p["name"])] = number
    return out


def _endpoint(probe: dict, c: dict) -> Optional[tuple[str, str]]:
    """What a probe really asks: the handler with its port resolved to a number and an
    HTTP path without trailing slash or query, so '/ready/' on 3000 is '/ready' on 'http'."""
    handler = _handler(probe)
    if handler is None or handler[0] != "httpGet":
        return handler
    body = as_dict(probe.get("httpGet"))
    port = str(body.get("port"))
    path = str(body.get("path", "/")).split("?", 1)[0].rstrip("/") or "/"
    return "httpGet", f"{path} on {_port_numbers(c).get(port, port)}"


def _storms(stack: Stack, cfg: dict, report: Report) -> None:
    if not _applies(stack, cfg["environments"]):
        return
    for w in stack.workloads:
        boot = as_float(w.obj.annotations.get(ann.BOOT_SECONDS))
        for _, c in containers(w.pod_spec, init=False):
            name = f"{w.obj.ref} container '{container_name(c)}'"
            live, ready, startup = (as_dict(c.get(p)) for p in ("livenessProbe", "readinessProbe", "startupProbe"))
            say = lambda message, obj=w.obj: report(message, obj)  # noqa: E731
            for probe_name, probe in (("livenessProbe", live), ("readinessProbe", ready), ("startupProbe", startup)):
                port = get(probe, "httpGet", "port") or get(probe, "tcpSocket", "port") or get(probe, "grpc", "port")
                if isinstance(port, str) and not port.isdigit() and port not in _ports(c):
                    say(f"{name}: {probe_name} uses port {port!r}, which the container does not declare; it fails on every pod")
                elif port is not None and str(port).isdigit() and str(port) not in _port_numbers(c):
                    say(f"{name}: {probe_name} uses port {port}, which the container does not declare; it fails on every pod")
                host = get(probe, "httpGet", "host")
                if host:
                    say(
                        f"{name}: {probe_name} asks {host!r}, not the pod: when that host is slow or down every pod "
                        "fails at once; probe the container itself"
                    )
            ready_endpoint = _endpoint(ready, c) if ready else None
            if startup and ready_endpoint and _endpoint(startup, c) == ready_endpoint and ready_endpoint[0] != "tcpSocket":
                shown = _handler(ready) or ready_endpoint
                say(
                    f"{name}: the startup probe is the readiness check ({shown[0]} {shown[1]}); while a "
                    "dependency is down every new pod is killed before it starts, and scale-out crash-loops"
                )
            if not live:
                continue
            handler = _endpoint(live, c)
            if handler and handler == ready_endpoint and handler[0] != "tcpSocket":
                shown = _handler(ready) or handler
                say(
                    f"{name}: the liveness probe is the readiness check ({shown[0]} {shown[1]}); when a dependency "
                    "is down every pod fails it at once and is restarted: liveness must check the process only"
                )
            failures = as_int(live.get("failureThreshold")) or 3
            if failures < cfg["minLivenessFailures"]:
                say(
                    f"{name}: the liveness probe restarts the container after {failures} failed check(s); one slow "
                    f"answer under load restarts a healthy pod: allow at least {cfg['minLivenessFailures']}"
                )
            window = _window(live) - (as_int(live.get("initialDelaySeconds")) or 0)
            if window < cfg["minLivenessWindowSeconds"]:
                say(
                    f"{name}: the liveness probe restarts the container after {fmt(window)} s of failures "
                    f"(periodSeconds x failureThreshold); under load or a GC pause that restarts healthy pods, "
                    f"whose traffic then overloads the rest: allow at least {cfg['minLivenessWindowSeconds']} s"
                )
            timeout = as_int(live.get("timeoutSeconds")) or 1
            if timeout < cfg["minLivenessTimeoutSeconds"]:
                say(
                    f"{name}: the liveness probe times out after {timeout} s; a pod slowed by load fails it and is "
                    f"restarted: allow at least {cfg['minLivenessTimeoutSeconds']} s"
                )
            if boot is not None:
                grace = _window(startup) if startup else _window(live)
                if grace < boot:
                    which = "startupProbe" if startup else "livenessProbe (no startupProbe)"
                    say(
                        f"{name}: {which} allows {fmt(grace)} s to start, but the workload takes {fmt(boot)} s to boot "
                        f"({ann.BOOT_SECONDS}); every new pod is killed before it is up: a crash loop"
                    )


probe_restart_storm = stack_policy(
    name="probe-restart-storm",
    description="In prod no probe turns a slow moment into a restart storm: liveness and startup check the process (not the readiness endpoint, not another host), liveness tolerates several failures, a window of failures and slow answers, a pod gets time to boot, and probes use declared ports.",
    check=_storms,
    remediation="Keep liveness on a cheap self-check with several failures' tolerance, give slow starters a startupProbe, and name ports the container declares (tikit/kube.py probe helpers).",
    area=AREA,
    config=schema(
        environments=ENV_PROD,
        minLivenessWindowSeconds=integer(30, "Fewest seconds of failed liveness probes before a restart.", minimum=1),
        minLivenessTimeoutSeconds=integer(2, "Shortest liveness probe timeout, seconds.", minimum=1),
        minLivenessFailures=integer(3, "Fewest failed liveness checks in a row before a restart.", minimum=1),
    ),
)


# ---- stateful tiers that survive a pod, a node or a zone ---------------------------------------

HOSTNAME_KEY = "kubernetes.io/hostname"


def _selects_labels(selector: Any, labels: dict) -> bool:
    """A label selector (matchLabels, matchExpressions) selects a pod with ``labels``."""
    sel = as_dict(selector)
    if not sel:
        return False  # an absent selector matches no pod in an affinity term
    if any(labels.get(k) != v for k, v in as_dict(sel.get("matchLabels")).items()):
        return False
    for e in as_list(sel.get("matchExpressions")):
        e = as_dict(e)
        key, op, values = e.get("key"), e.get("operator"), [str(v) for v in as_list(e.get("values"))]
        have = labels.get(key)
        if (op == "In" and have not in values) or (op == "NotIn" and have in values) or \
                (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def _required_terms(anti_affinity: dict, key: str = HOSTNAME_KEY, labels: Optional[dict] = None) -> bool:
    """A PodAntiAffinity with a required term on ``key`` (that selects pods with ``labels``,
    the pods it is meant to keep apart, when given)."""
    terms = as_list(anti_affinity.get("requiredDuringSchedulingIgnoredDuringExecution"))
    return any(
        isinstance(t, dict) and t.get("topologyKey") == key and (labels is None or _selects_labels(t.get("labelSelector"), labels))
        for t in terms
    )


def _required_apart(affinity: dict, key: str = HOSTNAME_KEY, labels: Optional[dict] = None) -> bool:
    """A pod's affinity keeps its replicas apart by ``key`` (no two on one node)."""
    return _required_terms(as_dict(affinity.get("podAntiAffinity")), key, labels)


# Labels CloudNativePG puts on every instance pod of a cluster.
CNPG_CLUSTER_LABEL = "cnpg.io/cluster"
CNPG_INSTANCE_LABELS = {"cnpg.io/podRole": "instance"}


def _pg_apart(c) -> bool:
    aff = as_dict(c.obj.spec.get("affinity"))
    # CNPG's own rule (enablePodAntiAffinity, on by default) is required only with
    # podAntiAffinityType "required"; additionalPodAntiAffinity is a PodAntiAffinity of ours,
    # which must select this cluster's instances.
    if _required_terms(as_dict(aff.get("additionalPodAntiAffinity")), labels={CNPG_CLUSTER_LABEL: c.obj.name, **CNPG_INSTANCE_LABELS}):
        return True
    return (
        aff.get("enablePodAntiAffinity", True) is not False
        and aff.get("podAntiAffinityType") == "required"
        and aff.get("topologyKey", HOSTNAME_KEY) == HOSTNAME_KEY
    )


# Seconds Redis needs after shutdown-timeout for the final RDB save and AOF fsync: the margin
# the program adds to the data pods' grace period (tikit/conf/redis.py,
# SHUTDOWN_SAVE_MARGIN_SECONDS; a test keeps them equal).
REDIS_SAVE_MARGIN_SECONDS = 5
# What applies when a pod or redis.conf leaves them out: Kubernetes' grace period and Redis 7's
# shutdown-timeout.
DEFAULT_GRACE_SECONDS = 30
REDIS_DEFAULT_SHUTDOWN_TIMEOUT = 10


def _redis_shutdown(server, w: Workload, report: Report) -> None:
    """A primary hands over (preStop) and then shuts down within the pod's grace period:
    killed before that, it loses what its replicas had not yet received."""
    pre_stop = [str(a) for a in as_list(get(server.container, "lifecycle", "preStop", "exec", "command"))]
    if not pre_stop:
        report(
            f"{w.obj.ref}: Redis has no preStop handover; every rollout or drain of the primary is an unplanned "
            "failover, and writes in flight are lost until Sentinel notices",
            w.obj,
        )
    hook = as_int(pre_stop[1]) or 0 if pre_stop[:1] == ["timeout"] and len(pre_stop) > 1 else 0
    shutdown = as_int((server.directives.get("shutdown-timeout") or [[str(REDIS_DEFAULT_SHUTDOWN_TIMEOUT)]])[-1][0]) or 0
    grace = as_int(w.pod_spec.get("terminationGracePeriodSeconds"))
    grace = DEFAULT_GRACE_SECONDS if grace is None else grace
    need = hook + shutdown + REDIS_SAVE_MARGIN_SECONDS
    if grace < need:
        report(
            f"{w.obj.ref}: terminationGracePeriodSeconds {grace} does not cover the handover ({hook} s), "
            f"shutdown-timeout ({shutdown} s) and the final save ({REDIS_SAVE_MARGIN_SECONDS} s): {need} s; the primary "
            "is killed before its replicas have every acknowledged write",
            w.obj,
        )


def _synchronous_standbys(spec: dict) -> int:
    """Standbys every commit must wait for: minSyncReplicas, or postgresql.synchronous.number
    when its dataDurability is required (the default)."""
    legacy = as_int(spec.get("minSyncReplicas")) or 0
    sync = as_dict(get(spec, "postgresql", "synchronous"))
    number = as_int(sync.get("number")) or 0 if sync.get("dataDurability", "required") == "required" else 0
    return max(legacy, number)


def _sentinel_directives(stack: Stack, w: Workload, what: str) -> list[list[str]]:
    """The `sentinel <what> ...` lines of the sentinel.conf a Sentinel workload mounts."""
    out = []
    for _, key, text in stack.config_entries(w.region, w.obj.namespace, mounted_config_maps(w.pod_spec)):
        if key.endswith("sentinel.conf"):
            out += [args for args in redis_directives(text).get("sentinel", []) if args[:1] == [what]]
    return out


def _sentinel_monitors(stack: Stack, w: Workload) -> list[list[str]]:
    return _sentinel_directives(stack, w, "monitor")


def _sentinel_clients(stack: Stack, s: Workload, cfg: dict, report: Report) -> None:
    """Sentinel notices a lost primary in time, and the autoscalers ask it for the master it watches."""
    monitored = {args[1] for args in _sentinel_monitors(stack, s) if len(args) > 1}
    for args in _sentinel_directives(stack, s, "down-after-milliseconds"):
        ms = as_int(args[2]) if len(args) > 2 else None
        if ms is not None and ms > cfg["maxDownAfterMilliseconds"]:
            report(
                f"{s.obj.ref}: sentinel down-after-milliseconds {args[1]} {ms}: a lost primary goes unnoticed for "
                f"{fmt(ms / 1000)} s and writes fail all that time; at most {cfg['maxDownAfterMilliseconds']} ms",
                s.obj,
            )
    for w in stack.workloads:
        for a in w.autoscalers:
            if a.obj.region != s.region or a.obj.namespace != s.obj.namespace:
                continue
            for t in a.triggers:
                master = get(t, "metadata", "sentinelMaster")
                if t.get("type") == "redis-sentinel" and isinstance(master, str) and monitored and master not in monitored:
                    report(
                        f"{a.obj.ref}: trigger {t.get('name') or 'redis-sentinel'} asks Sentinel for master {master!r}, "
                        f"which it does not monitor ({', '.join(sorted(monitored))}); the queue is never read",
                        a.obj,
                    )


def _persistent_dir(server) -> bool:
    """redis.conf's `dir` is on a volume claim of the StatefulSet (not an emptyDir)."""
    w = server.workload
    directory = " ".join((server.directives.get("dir") or [["/data"]])[-1]) or "/data"
    claims = {get(v, "metadata", "name") for v in as_list(w.obj.spec.get("volumeClaimTemplates"))}
    for m in as_list(server.container.get("volumeMounts")):
        if isinstance(m, dict) and str(m.get("mountPath", "")).rstrip("/") == directory.rstrip("/"):
            return m.get("name") in claims
    return False


def _stateful_ha(stack: Stack, cfg: dict, report: Report) -> None:
    if not _applies(stack, cfg["environments"]):
        return
    for c in stack.clusters:
        sync = _synchronous_standbys(c.obj.spec)
        if sync and c.instances >= 2 and sync > c.instances - 2:
            report(
                f"{c.obj.ref}: waits for {sync} synchronous standby(s) out of {c.instances - 1}: losing one standby "
                "(its node, a rollout) blocks every commit; require at most instances - 2",
                c.obj,
            )
        if c.instances >= 2 and not _pg_apart(c):
            report(
                f"{c.obj.ref}: nothing keeps its {c.instances} instances on different nodes (no required pod "
                f"anti-affinity on {HOSTNAME_KEY}); one node can take the primary and its standby together",
                c.obj,
            )
    sentinels = [
        w for w in stack.workloads
        if any("sentinel" in container_name(ct).lower() for _, ct in containers(w.pod_spec, init=False))
    ]
    for server in stack.redis_servers():
        w = server.workload
        here = [s for s in sentinels if s.region == w.region and s.obj.namespace == w.obj.namespace and s is not w]
        if not _persistent_dir(server):
            report(f"{w.obj.ref}: Redis keeps its data directory outside a volume claim; a restarted pod comes back empty", w.obj)
        if not _required_apart(as_dict(w.pod_spec.get("affinity")), labels=w.pod_labels):
            report(
                f"{w.obj.ref}: nothing keeps its Redis pods on different nodes (no required pod anti-affinity on {HOSTNAME_KEY} "
                "that selects its own pods)",
                w.obj,
            )
        if (w.max_replicas or 0) > 1 and not here:
            report(
                f"{w.obj.ref}: {w.max_replicas} Redis pods and no Sentinel beside them: when the primary is lost nothing "
                "promotes a replica, and writes stop until someone does",
                w.obj,
            )
        min_replicas = as_int((server.directives.get("min-replicas-to-write") or [["0"]])[-1][0]) or 0
        replicas = (w.min_replicas or 1) - 1
        if here and min_replicas > replicas - 1:
            report(
                f"{w.obj.ref}: redis.conf min-replicas-to-write is {min_replicas} with {replicas} replica(s) beside the "
                "primary: losing one replica (a node, a rollout) stops every write; keep it at most one fewer than the "
                "replicas (3 Redis pods for min-replicas-to-write 1)",
                w.obj,
            )
        if here:
            _redis_shutdown(server, w, report)
        if here and min_replicas < cfg["minReplicasToWrite"]:
            report(
                f"{w.obj.ref}: redis.conf min-replicas-to-write is {min_replicas}; a primary cut off from its replicas "
                "keeps accepting writes that the promoted replica never sees (they are lost when it rejoins)",
                w.obj,
            )
        for s in here:
            count = s.min_replicas or 0
            if count < 3:
                report(f"{s.obj.ref}: {count} sentinel(s); losing one leaves no majority to authorize a failover (run at least 3)", s.obj)
            elif count % 2 == 0:
                report(f"{s.obj.ref}: {count} sentinels; an even count survives no more failures than {count - 1} (run an odd number)", s.obj)
            if not _required_apart(as_dict(s.pod_spec.get("affinity")), labels=s.pod_labels):
                report(f"{s.obj.ref}: nothing keeps its sentinels on different nodes; one node can take the majority", s.obj)
            _sentinel_clients(stack, s, cfg, report)
            for args in _sentinel_monitors(stack, s):
                quorum = as_int(args[4]) if len(args) > 4 else None
                # At most count - 1: with a quorum of every sentinel, losing one of them (its
                # node, a partition) means the primary can never be agreed down.
                if quorum is not None and count and not (count // 2 + 1 <= quorum <= count - 1):
                    report(
                        f"{s.obj.ref}: sentinel monitor {args[1] if len(args) > 1 else '?'} quorum {quorum} with {count} "
                        f"sentinels; it must be a majority ({count // 2 + 1}) and at most {count - 1}, or a minority "
                        "declares the primary down (or, with one sentinel lost, no failover can start)",
                        s.obj,
                    )


stateful_ha = stack_policy(
    name="stateful-ha",
    description="In prod every stateful tier survives losing a pod or a node: PostgreSQL instances and Redis and Sentinel pods on different nodes, Redis data on volume claims, Sentinel beside replicated Redis with an odd count of at least 3 and a majority quorum, min-replicas-to-write against a cut-off primary that one lost replica cannot stop, synchronous standbys that one lost standby cannot stop, a Redis primary that hands over and shuts down within its grace period, and Sentinel that notices a lost primary in time under the master name its clients ask for.",
    check=_stateful_ha,
    remediation="Keep the data tiers as components/postgres.py and components/redis.py build them (required node anti-affinity, volume claims, redis.sentinels >= 3 and odd, redis.sentinelQuorum a majority).",
    area=AREA,
    config=schema(
        environments=ENV_PROD,
        minReplicasToWrite=integer(1, "Fewest connected replicas a Redis primary needs to accept writes.", minimum=0),
        maxDownAfterMilliseconds=integer(30000, "Longest time Sentinel may take to call a silent primary down, milliseconds.", minimum=1000),
    ),
)


POLICIES = [autoscaler_can_trigger, probe_restart_storm, stateful_ha]
