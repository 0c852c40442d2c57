"""The workers on the rendered manifests of every stack: spot placement, queue-length
scaling (redis list trigger, redis-sentinel where Sentinel runs), scale to zero outside
prod, and the credentials the trigger uses."""

from __future__ import annotations

from tikit import kube
from tikit import names
from tikit import settings
from tikit import units
from tikit import checks
from tikit.components import autoscaling
from tikit.components import workers
from conftest import named, regional
from preview.validate import validate

REPLICAS = {"dev": (0, 2), "staging": (0, 3), "prod": (1, 10)}


def queue_trigger(so: dict) -> dict:
    (t,) = [t for t in so["spec"]["triggers"] if t["type"] in ("redis", "redis-sentinel")]
    return t


def test_workers_run_on_spot_capacity(plan, stack):
    s = settings.load({}, stack=stack)
    w = s.workers
    fallback = {r.name: r.spot_fallback for r in s.regions}
    spot = [{"key": w.spot_node_label_key, "operator": "In", "values": [w.spot_node_label_value]}]
    for region, dep in regional(plan, "Deployment", names.WORKERS):
        pod = dep["spec"]["template"]["spec"]
        assert {"key": w.spot_taint_key, "operator": "Equal", "value": w.spot_taint_value, "effect": w.spot_taint_effect} in pod[
            "tolerations"
        ]
        # The platform pools' own taint too: on-demand is where the fallback lands.
        assert {"key": "tikit.app/dedicated", "operator": "Equal", "value": s.namespace, "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["priorityClassName"] == f"{s.namespace}-workers"
        assert dep["metadata"]["annotations"][names.INTERRUPTIBLE_ANNOTATION] == "true"
        node = pod["affinity"]["nodeAffinity"]
        if fallback[region]:
            # Preferred: without spot capacity the workers still run (Lagos' Local Zone).
            assert "requiredDuringSchedulingIgnoredDuringExecution" not in node
            (pref,) = node["preferredDuringSchedulingIgnoredDuringExecution"]
            assert pref["preference"]["matchExpressions"] == spot
        else:
            # Required: the workers wait for spot capacity (London).
            assert node == {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": spot}]}}


def test_workers_resources_env_and_security(plan, stack):
    w = settings.load({}, stack=stack).workers
    for _, dep in regional(plan, "Deployment", names.WORKERS):
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert checks.image_problem(c["image"]) is None and c["image"] == w.image
        assert c["resources"]["requests"] == {"cpu": w.cpu, "memory": w.memory}
        assert c["resources"]["limits"]["memory"] == c["resources"]["requests"]["memory"]
        secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
        assert secrets == {names.APP_DATABASE_SECRET, names.APP_REDIS_SECRET}
        assert {e["name"] for e in c["env"] if "valueFrom" not in e} == {"DB_POOL_SIZE"}, "no secret in clear text"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["terminationGracePeriodSeconds"] == workers.SHUTDOWN_SECONDS == 60
        assert pod["enableServiceLinks"] is False
        assert "replicas" not in dep["spec"]


def test_workers_have_liveness_and_readiness_probes(plan):
    for _, dep in regional(plan, "Deployment", names.WORKERS):
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["ports"] == [{"name": "health", "containerPort": workers.HEALTH_PORT, "protocol": "TCP"}]
        live, ready = c["livenessProbe"], c["readinessProbe"]
        assert live["httpGet"] == {"path": "/health", "port": "health"}
        assert (live["periodSeconds"], live["timeoutSeconds"], live["failureThreshold"]) == (30, 5, 3)
        assert ready["httpGet"] == {"path": "/ready", "port": "health"}
        assert (ready["periodSeconds"], ready["timeoutSeconds"], ready["failureThreshold"]) == (10, 5, 2)


def test_workers_scale_on_queue_length(plan, stack):
    s = settings.load({}, stack=stack)
    low, high = REPLICAS[stack]
    for _, so in regional(plan, "ScaledObject", names.WORKERS):
        spec = so["spec"]
        assert spec["scaleTargetRef"]["name"] == names.WORKERS
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (low, high)
        t = queue_trigger(so)
        md = t["metadata"]
        assert (md["listName"], md["listLength"]) == (names.JOB_QUEUE, "100")
        assert t.get("metricType", "AverageValue") == "AverageValue", "pending jobs per replica"
        if s.redis.sentinels:
            # Follows a failover: asks the Sentinels for the current primary.
            assert t["type"] == "redis-sentinel"
            assert md["addresses"] == f"{names.REDIS_SENTINEL}.{s.namespace}.svc.cluster.local:{names.REDIS_SENTINEL_PORT}"
            assert md["sentinelMaster"] == names.REDIS_MASTER_NAME
        else:
            assert t["type"] == "redis"
            assert md["address"] == f"{names.REDIS}.{s.namespace}.svc.cluster.local:{names.REDIS_PORT}"
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
        # CPU and memory held for the notes' 2 minutes in the query, as for the API.
        sustained = {t["name"]: t for t in spec["triggers"] if t["type"] == "prometheus"}
        assert set(sustained) == {autoscaling.CPU_TRIGGER, autoscaling.MEMORY_TRIGGER}
        assert sustained[autoscaling.CPU_TRIGGER]["metadata"]["query"] == autoscaling.sustained_cpu_query(s.namespace, names.WORKERS)
        assert float(sustained[autoscaling.CPU_TRIGGER]["metadata"]["threshold"]) == units.cpu_millis(s.workers.cpu) * 0.7 / 1000
        # An idle worker's CPU and memory never reach 0: they must not keep it from zero.
        for t in sustained.values():
            assert t["metadata"]["activationThreshold"] == t["metadata"]["threshold"]
        assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
        # KEDA's idle time before 1 -> 0: the notes' 5-minute cooldown, its own constant.
        assert spec["cooldownPeriod"] == autoscaling.COOLDOWN_SECONDS == 300


def test_scale_to_zero_only_outside_prod(plan, stack):
    for _, so in regional(plan, "ScaledObject", names.WORKERS):
        if stack == "prod":
            assert so["spec"]["minReplicaCount"] >= 1
        else:
            assert so["spec"]["minReplicaCount"] == 0
            # KEDA can wake a workload at zero only through a trigger other than cpu/memory.
            assert {t["type"] for t in so["spec"]["triggers"]} - {"cpu", "memory"}


def test_trigger_credentials_come_from_the_redis_secret(plan, stack):
    sentinels = settings.load({}, stack=stack).redis.sentinels
    for region, so in regional(plan, "ScaledObject", names.WORKERS):
        ref = queue_trigger(so)["authenticationRef"]
        auth = named(plan, "TriggerAuthentication", ref["name"], region)
        expected = [{"parameter": "password", "name": names.REDIS_AUTH_SECRET, "key": "password"}]
        if sentinels:
            # KEDA's redis-sentinel scaler authenticates to the sentinels with their own password.
            expected.append({"parameter": "sentinelPassword", "name": names.REDIS_SENTINEL_AUTH_SECRET, "key": "password"})
        assert auth["spec"]["secretTargetRef"] == expected
        assert not any("password" in k.lower() for k in queue_trigger(so)["metadata"])
        assert validate(auth) == []


def test_workers_objects_validate(plan):
    for region in plan.regions:
        for kind in ("Deployment", "ScaledObject", "PodDisruptionBudget"):
            assert validate(named(plan, kind, names.WORKERS, region)) == [], f"{region} {kind}"


def test_workers_get_their_own_config_with_the_health_port(plan, stack):
    """The process learns where to serve /health and /ready (the port the probes hit), and
    none of the API's settings (its PORT, its METRICS_PATH)."""
    s = settings.load({}, stack=stack)
    for region, dep in regional(plan, "Deployment", names.WORKERS):
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["envFrom"] == [{"configMapRef": {"name": names.WORKERS_CONFIG}}]
        data = named(plan, "ConfigMap", names.WORKERS_CONFIG, region)["data"]
        assert data == {
            "NODE_ENV": "production",
            "JOB_QUEUE": names.JOB_QUEUE,
            "TIKIT_ENVIRONMENT": s.environment,
            "TIKIT_REGION": region,
            "HEALTH_PORT": str(workers.HEALTH_PORT),
        }
        (health,) = [p for p in c["ports"] if p["name"] == c["livenessProbe"]["httpGet"]["port"]]
        assert data["HEALTH_PORT"] == str(health["containerPort"])
        assert c["readinessProbe"]["httpGet"]["port"] == health["name"]
        # Producer (API) and consumer (workers) name the same queue.
        assert named(plan, "ConfigMap", names.BACKEND_CONFIG, region)["data"]["JOB_QUEUE"] == data["JOB_QUEUE"]
        assert validate(named(plan, "ConfigMap", names.WORKERS_CONFIG, region)) == []


def test_workers_are_told_their_pool_size_and_the_annotation_agrees(plan, stack):
    per_replica = settings.load({}, stack=stack).workers.db_connections_per_replica
    for _, dep in regional(plan, "Deployment", names.WORKERS):
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["DB_POOL_SIZE"] == {"name": "DB_POOL_SIZE", "value": str(per_replica)}
        assert dep["metadata"]["annotations"][names.DB_CONNECTIONS_ANNOTATION] == str(per_replica)


def test_cooldown_is_its_own_constant(monkeypatch):
    """autoscaling.COOLDOWN_SECONDS drives KEDA's cooldownPeriod; the HPA's scale-down
    period (a different mechanism) does not move with it.  workers.cooldownSeconds is no
    longer a setting: a stack file that still sets it is told so."""
    cfg = settings.load({}, stack="dev")
    target = kube.Target(region=cfg.primary.name, namespace=cfg.namespace, provider=None, environment=cfg.environment)
    args = workers.WorkersArgs(target=target, workers=cfg.workers, redis=cfg.redis, prometheus_address=cfg.derived.prometheus_address)
    monkeypatch.setattr(autoscaling, "COOLDOWN_SECONDS", 900)
    spec = workers.scaled_object_spec(args)
    assert spec["cooldownPeriod"] == 900
    down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert down["policies"][0]["periodSeconds"] == autoscaling.SCALE_DOWN_PERIOD_SECONDS == 300
    problem = None
    try:
        settings.load({"workers": {"cooldownSeconds": 900}}, stack="dev")
    except settings.ConfigError as exc:
        problem = exc
    assert problem is not None and problem.key == "workers.cooldownSeconds"
    assert problem.message.startswith("unknown key")
