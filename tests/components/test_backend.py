"""The API tier on the rendered manifests of every stack: probes, resources, shutdown,
security, placement, Service, PDB and the ScaledObject's exact triggers and behaviour."""

from __future__ import annotations

import pytest

from tikit import names
from tikit import settings
from tikit import checks
from tikit.components import autoscaling, backend
from tikit import units
from tikit.conf import metrics
from conftest import named, objects, regional
from preview.validate import validate

# The notes' numbers, per environment: (min, max) replicas and (cpu, memory) per instance.
# Maxima above the notes' 2 and 10: the target users with 20 % headroom (docs/sizing.md).
REPLICAS = {"dev": (1, 1), "staging": (2, 3), "prod": (2, 12)}
RESOURCES = {"dev": ("500m", "512Mi"), "staging": ("1", "1Gi"), "prod": ("2", "2Gi")}
PEAK_MIN = {"prod": 5}


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def triggers_by_type(scaled_object: dict) -> dict[str, dict]:
    triggers = scaled_object["spec"]["triggers"]
    by_type = {t["type"]: t for t in triggers}
    assert len(by_type) == len(triggers), "one trigger per type"
    return by_type


def test_every_region_has_the_api_tier(plan):
    assert plan.regions
    for region in plan.regions:
        for kind, name in [
            ("Deployment", names.BACKEND),
            ("Service", names.BACKEND),
            ("PodDisruptionBudget", names.BACKEND),
            ("ConfigMap", names.BACKEND_CONFIG),
            ("ScaledObject", names.BACKEND),
        ]:
            named(plan, kind, name, region)


def test_image_is_pinned_and_from_settings(plan, stack):
    for _, dep in regional(plan, "Deployment", names.BACKEND):
        image = container(dep)["image"]
        assert image == settings.load({}, stack=stack).backend.image
        assert checks.image_problem(image) is None and not image.endswith(":latest")


def test_probes_are_the_notes_values(plan):
    for _, dep in regional(plan, "Deployment", names.BACKEND):
        c = container(dep)
        assert c["livenessProbe"] == {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 30,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
            "successThreshold": 1,
        }
        assert c["readinessProbe"] == {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 2,
            "successThreshold": 1,
        }
        startup = c["startupProbe"]
        assert startup["httpGet"] == {"path": "/health", "port": "http"}
        # A slow boot gets period x threshold before liveness may restart it.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
        assert [p["name"] for p in c["ports"]] == ["http"]


def test_resources_per_environment_with_memory_request_equal_to_limit(plan, stack):
    cpu, memory = RESOURCES[stack]
    for _, dep in regional(plan, "Deployment", names.BACKEND):
        res = container(dep)["resources"]
        assert res["requests"] == {"cpu": cpu, "memory": memory}
        assert res["limits"]["memory"] == res["requests"]["memory"] == memory


def test_env_comes_from_secrets_and_the_config_map(plan, stack):
    s = settings.load({}, stack=stack)
    for region, dep in regional(plan, "Deployment", names.BACKEND):
        c = container(dep)
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
        assert refs == {
            "DATABASE_URL": {"name": names.APP_DATABASE_SECRET, "key": "DATABASE_URL"},
            "DATABASE_REPLICA_URL": {"name": names.APP_DATABASE_SECRET, "key": "DATABASE_REPLICA_URL"},
            **{
                key: {"name": names.APP_REDIS_SECRET, "key": key}
                for key in (
                    "REDIS_URL", "REDIS_PASSWORD", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD",
                )
            },
        }
        literal = {e["name"]: e["value"] for e in c["env"] if "valueFrom" not in e}
        assert set(literal) == {"DB_POOL_SIZE"}, "no connection string in clear text"
        assert c["envFrom"] == [{"configMapRef": {"name": names.BACKEND_CONFIG}}]
        data = named(plan, "ConfigMap", names.BACKEND_CONFIG, region)["data"]
        assert data == {
            "NODE_ENV": "production",
            "PORT": str(c["ports"][0]["containerPort"]),
            "JOB_QUEUE": names.JOB_QUEUE,
            "METRICS_PATH": names.BACKEND_METRICS_PATH,
            "TIKIT_ENVIRONMENT": s.environment,
            "TIKIT_REGION": region,
        }
        assert not any("URL" in k for k in data), "connection strings belong in Secrets"
        # Service links would inject REDIS_PORT=tcp://... next to the app's own settings.
        assert dep["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_graceful_shutdown(plan):
    for _, dep in regional(plan, "Deployment", names.BACKEND):
        pre_stop = container(dep)["lifecycle"]["preStop"]
        assert pre_stop == {"sleep": {"seconds": backend.PRE_STOP_SECONDS}} and backend.PRE_STOP_SECONDS > 0
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        # The grace period covers the preStop sleep plus the app's own drain after SIGTERM.
        assert grace == backend.PRE_STOP_SECONDS + backend.SHUTDOWN_SECONDS > pre_stop["sleep"]["seconds"]
        assert grace == backend.TERMINATION_GRACE_SECONDS
        rolling = dep["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1


def test_restricted_security_context(plan):
    for _, dep in regional(plan, "Deployment", names.BACKEND):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = container(dep)["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True


def test_spread_over_zones_and_nodes(plan):
    for _, dep in regional(plan, "Deployment", names.BACKEND):
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for c in spread:
            assert c["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_no_replicas_field_the_hpa_owns_it(plan):
    for _, dep in regional(plan, "Deployment", names.BACKEND):
        assert "replicas" not in dep["spec"]


def test_pdb_never_blocks_a_drain_at_minimum_replicas(plan, stack):
    low, _ = REPLICAS[stack]
    for region, dep in regional(plan, "Deployment", names.BACKEND):
        pdb = named(plan, "PodDisruptionBudget", names.BACKEND, region)["spec"]
        assert pdb["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        if "maxUnavailable" in pdb:
            assert pdb["maxUnavailable"] >= 1
        else:
            assert pdb["minAvailable"] < low


def test_service_exposes_the_http_port(plan):
    port = backend.PORT
    for region, dep in regional(plan, "Deployment", names.BACKEND):
        svc = named(plan, "Service", names.BACKEND, region)
        assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        (p,) = svc["spec"]["ports"]
        assert (p["name"], p["port"], p["targetPort"]) == ("http", port, "http")
        assert svc["metadata"]["labels"]["app.kubernetes.io/name"] == names.BACKEND


def test_scaled_object_bounds_and_behaviour(plan, stack):
    low, high = REPLICAS[stack]
    for _, so in regional(plan, "ScaledObject", names.BACKEND):
        spec = so["spec"]
        assert spec["scaleTargetRef"]["name"] == names.BACKEND
        assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (low, high)
        hpa = spec["advanced"]["horizontalPodAutoscalerConfig"]
        assert hpa["name"]
        # Scale up at the next sync, at the HPA's default rate: the triggers hold their own
        # sustain periods (docs/autoscaling.md).
        assert hpa["behavior"]["scaleUp"] == {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}],
        }
        down = hpa["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] == 300
        # One step down per 5 minutes: the notes' cooldown.
        assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]


def test_scaled_object_triggers(plan, stack):
    s = settings.load({}, stack=stack)
    b = s.backend
    for region, so in regional(plan, "ScaledObject", names.BACKEND):
        t = {tr["name"]: tr for tr in so["spec"]["triggers"]}
        assert len(t) == len(so["spec"]["triggers"]), "one trigger per name"
        for name in (autoscaling.CPU_TRIGGER, autoscaling.MEMORY_TRIGGER, autoscaling.REQUEST_RATE_TRIGGER):
            assert t[name]["type"] == "prometheus" and t[name].get("metricType", "AverageValue") == "AverageValue"
            assert t[name]["metadata"]["serverAddress"] == s.derived.prometheus_address
        # CPU > 70 % of the request for 2 minutes: the lowest 1-minute rate of the last 2
        # minutes (evaluated every 15 s), in cores, against 70 % of one pod's request.
        cpu = t[autoscaling.CPU_TRIGGER]["metadata"]
        assert cpu["query"] == (
            "min_over_time(sum(rate(container_cpu_usage_seconds_total{namespace=\"%s\",pod=~\"api-[a-z0-9]+-[a-z0-9]+\","
            "container=\"api\"}[1m]))[2m:15s])" % s.namespace
        )
        assert float(cpu["threshold"]) == units.cpu_millis(b.cpu) / 1000 * 0.70
        mem = t[autoscaling.MEMORY_TRIGGER]["metadata"]
        assert mem["query"].startswith("min_over_time(sum(container_memory_working_set_bytes{") and mem["query"].endswith("[2m:15s])")
        assert int(mem["threshold"]) == units.memory_bytes(b.memory) * 80 // 100
        prom = t[autoscaling.REQUEST_RATE_TRIGGER]
        assert prom["metadata"]["threshold"] == "1000"
        query = prom["metadata"]["query"]
        assert query.startswith("sum(") and query.endswith("[1m])) * 60"), "requests per minute over all API pods"
        assert metrics.API_REQUESTS in query and f'namespace="{s.namespace}"' in query
        if stack in PEAK_MIN:
            assert t[autoscaling.PEAK_TRIGGER]["type"] == "cron"
            assert t[autoscaling.PEAK_TRIGGER]["metadata"] == {
                "timezone": "Africa/Lagos",
                "start": "0 18 * * *",
                "end": "0 0 * * *",
                "desiredReplicas": str(PEAK_MIN[stack]),
            }
            assert len(t) == 4
        else:
            assert len(t) == 3, "no peak floor where it adds nothing"


@pytest.mark.parametrize("kind", ["Deployment", "ScaledObject", "Service", "PodDisruptionBudget"])
def test_api_objects_validate(plan, kind):
    for region in plan.regions:
        obj = named(plan, kind, names.BACKEND, region)
        assert validate(obj) == [], f"{region} {kind}"
    for obj in objects(plan, "ConfigMap"):
        assert validate(obj) == []


def test_the_app_is_told_its_pool_size_and_the_annotation_agrees(plan, stack):
    """DB_POOL_SIZE is what the process opens; the annotation is what the policy pack sizes
    PgBouncer against: both come from backend.dbConnectionsPerReplica and must agree."""
    per_replica = settings.load({}, stack=stack).backend.db_connections_per_replica
    for _, dep in regional(plan, "Deployment", names.BACKEND):
        env = {e["name"]: e for e in container(dep)["env"]}
        assert env["DB_POOL_SIZE"] == {"name": "DB_POOL_SIZE", "value": str(per_replica)}
        assert dep["metadata"]["annotations"][names.DB_CONNECTIONS_ANNOTATION] == str(per_replica)


def test_pool_size_follows_the_setting():
    from preview import engine, plan as plan_mod

    project, config, _ = engine.load_stack_config("dev")
    config = {**config, f"{project}:backend": '{"dbConnectionsPerReplica": 40}'}
    rendered = plan_mod.build(engine.run_program("dev", config_override=config))
    for _, dep in regional(rendered, "Deployment", names.BACKEND):
        env = {e["name"]: e.get("value") for e in container(dep)["env"]}
        assert env["DB_POOL_SIZE"] == "40" == dep["metadata"]["annotations"][names.DB_CONNECTIONS_ANNOTATION]
