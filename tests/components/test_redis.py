"""The Redis tier on the rendered manifests of every stack: redis.conf in its ConfigMap
(persistence, memory, eviction, no password), the topology per environment (data pods,
Sentinel and its quorum), Services, PDBs, placement and probes, the exporter the PodMonitor
scrapes, the Secrets the apps and KEDA read, and the hourly backup CronJob."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tikit import names
from tikit import settings
from tikit import checks
from tikit import units
from tikit.components import redis as rc
from tikit.conf import redis as rconf
from conftest import REPO, named, objects
from preview import engine, plan as plan_mod
from preview.validate import validate
from test_pgbouncer import reveal

# The topology: (data pods, sentinels) per environment, and Sentinel's quorum.
TOPOLOGY = {"dev": (1, 0), "staging": (2, 0), "prod": (3, 3)}
QUORUM = 2
SIZING_MD = REPO / "docs" / "sizing.md"


def stack_settings(stack: str) -> settings.Settings:
    """The stack's settings as the program sees them: preset plus the stack file's deltas."""
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = {k.split(":", 1)[1]: v for k, v in (doc.get("config") or {}).items()}
    return settings.load(config, stack=stack)


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in rconf.parse_directives(text):
        out.setdefault(key.lower(), []).append(value)
    return out


def container(pod: dict, name: str) -> dict:
    (c,) = [c for c in pod["containers"] if c["name"] == name]
    return c


def secret_refs(c: dict) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def redis_objects(plan, region: str) -> list[dict]:
    """Everything the tier renders (app.kubernetes.io/name redis, redis-sentinel, redis-backup)."""
    apps = {names.REDIS, names.REDIS_SENTINEL, names.REDIS_BACKUP}
    return [
        r.manifest
        for r in plan.kubernetes_objects(region)
        if r.manifest["metadata"].get("labels", {}).get("app.kubernetes.io/name") in apps
        and r.manifest["kind"] not in ("NetworkPolicy", "PodMonitor", "PrometheusRule")
    ]


# --- redis.conf ---------------------------------------------------------------------------


def test_redis_conf_persistence_memory_and_eviction(plan, stack):
    cfg = stack_settings(stack)
    r, d = cfg.redis, cfg.derived
    for region in plan.regions:
        cm = named(plan, "ConfigMap", rc.CONFIG_MAP, region)
        conf = directives(cm["data"][rconf.REDIS_CONF])
        assert conf["appendonly"] == ["yes"]
        assert conf["appendfsync"] == ["everysec"]
        assert conf["aof-use-rdb-preamble"] == ["yes"]
        (save,) = conf["save"]
        pairs = save.split()
        assert len(pairs) >= 2 and len(pairs) % 2 == 0 and all(p.isdigit() and int(p) > 0 for p in pairs)
        assert pairs == " ".join(rconf.SAVE_RULES).split()
        # Only keys with a TTL (the cache) may be evicted; queue keys carry none.
        (policy,) = conf["maxmemory-policy"]
        assert policy == rconf.MAXMEMORY_POLICY and (policy.startswith("volatile-") or policy == "noeviction")
        assert conf["protected-mode"] == ["yes"]
        assert {'FLUSHALL ""', 'FLUSHDB ""'} <= set(conf["rename-command"])

        (maxmemory,) = conf["maxmemory"]
        assert int(maxmemory) == d.redis_maxmemory_bytes
        sts = named(plan, "StatefulSet", names.REDIS, region)
        res = container(sts["spec"]["template"]["spec"], "redis")["resources"]
        limit = units.memory_bytes(res["limits"]["memory"])
        assert res["requests"]["memory"] == res["limits"]["memory"] == r.memory
        assert int(maxmemory) + d.redis_fork_headroom_bytes <= limit
        # The fork may copy up to half the dataset while clients write (docs/sizing.md).
        assert d.redis_fork_headroom_bytes * 2 >= int(maxmemory)


def test_no_password_in_any_configmap(rendered, stack):
    plan = rendered(stack).plan
    for cm in objects(plan, "ConfigMap"):
        for key, text in cm.get("data", {}).items():
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("#"):
                    continue
                assert not re.match(r"^(requirepass|masterauth|sentinel\s+auth-pass)\s+[^\"$]", line), (cm["metadata"]["name"], key, line)
                assert not re.search(r"(^|\s)(password|requirepass)\s*[=:]\s*\w", line, re.I), (cm["metadata"]["name"], key, line)
    # The mock engine's stand-ins for the Redis and Sentinel passwords reach no file at all.
    for name in ("redis-password", "redis-sentinel-password"):
        placeholder = engine._placeholder("password", name)
        assert not [path for path, text in rendered(stack).files.items() if placeholder in text], name


def test_password_reaches_the_pods_from_the_secret_only(plan, stack):
    auth = (names.REDIS_AUTH_SECRET, rc.PASSWORD_KEY)
    for region in plan.regions:
        sts = named(plan, "StatefulSet", names.REDIS, region)
        pod = sts["spec"]["template"]["spec"]
        assert secret_refs(container(pod, "redis"))[rconf.PASSWORD_ENV] == auth
        assert secret_refs(container(pod, "exporter"))["REDIS_PASSWORD"] == auth
        # The start script passes it on the command line from the environment, never literally.
        start = named(plan, "ConfigMap", rc.CONFIG_MAP, region)["data"][rc.START_KEY]
        assert f'--requirepass "${rconf.PASSWORD_ENV}" --masterauth "${rconf.PASSWORD_ENV}"' in start


# --- topology --------------------------------------------------------------------------


def test_topology_per_environment(plan, stack):
    cfg = stack_settings(stack)
    pods, sentinels = TOPOLOGY[stack]
    assert (cfg.redis.replicas, cfg.redis.sentinels) == (pods, sentinels)
    for region in plan.regions:
        sts = named(plan, "StatefulSet", names.REDIS, region)
        assert sts["spec"]["replicas"] == pods
        assert sts["spec"]["serviceName"] == names.REDIS_HEADLESS
        claim = sts["spec"]["volumeClaimTemplates"][0]
        assert claim["spec"]["resources"]["requests"]["storage"] == cfg.redis.storage_size
        assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
        found = [o for o in objects(plan, "StatefulSet", region) if o["metadata"]["name"] == names.REDIS_SENTINEL]
        sentinel_cms = [o for o in objects(plan, "ConfigMap", region) if o["metadata"]["name"] == rc.SENTINEL_CONFIG_MAP]
        if not sentinels:
            assert not found and not sentinel_cms
            assert not [o for o in objects(plan, "Service", region) if o["metadata"]["name"] == names.REDIS_SENTINEL]
            continue
        (sent,) = found
        assert sent["spec"]["replicas"] == sentinels and sent["spec"]["serviceName"] == names.REDIS_SENTINEL
        (cm,) = sentinel_cms
        conf = cm["data"][rconf.SENTINEL_CONF]
        monitor = re.findall(rf"^sentinel monitor {names.REDIS_MASTER_NAME} (\S+) (\d+) (\d+)$", conf, re.M)
        assert monitor == [(rconf.bootstrap_primary_host(cfg.namespace), str(names.REDIS_PORT), str(QUORUM))]
        assert cfg.redis.sentinel_quorum == QUORUM <= sentinels
        assert f"sentinel down-after-milliseconds {names.REDIS_MASTER_NAME} {cfg.redis.down_after_ms}" in conf
        assert f"sentinel failover-timeout {names.REDIS_MASTER_NAME} {cfg.redis.failover_timeout_ms}" in conf
        # No password line: the start script appends them from the Secrets.
        assert not [k for k, v in rconf.parse_directives(conf) if k == "requirepass" or v.split()[0].endswith("-pass")]
        pod = sent["spec"]["template"]["spec"]
        refs = secret_refs(container(pod, "sentinel"))
        assert refs[rconf.PASSWORD_ENV] == (names.REDIS_AUTH_SECRET, rc.PASSWORD_KEY)
        assert refs[rconf.SENTINEL_PASSWORD_ENV] == (names.REDIS_SENTINEL_AUTH_SECRET, rc.PASSWORD_KEY)


def test_services_reach_the_right_pods(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        sts = named(plan, "StatefulSet", names.REDIS, region)
        pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        headless = named(plan, "Service", names.REDIS_HEADLESS, region)["spec"]
        assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
        assert matches(headless["selector"], pod_labels)
        client = named(plan, "Service", names.REDIS, region)["spec"]
        assert client.get("clusterIP") != "None" and matches(
            {k: v for k, v in client["selector"].items() if k != rc.POD_NAME_LABEL}, pod_labels
        )
        assert [(p["port"], p["targetPort"]) for p in client["ports"]] == [(names.REDIS_PORT, rc.REDIS_PORT_NAME)]
        if cfg.redis.sentinels:
            svc = named(plan, "Service", names.REDIS_SENTINEL, region)["spec"]
            sent = named(plan, "StatefulSet", names.REDIS_SENTINEL, region)
            assert svc["clusterIP"] == "None" and matches(svc["selector"], sent["spec"]["template"]["metadata"]["labels"])
            assert not matches(svc["selector"], pod_labels)
            assert [p["port"] for p in svc["ports"]] == [names.REDIS_SENTINEL_PORT]
        else:
            # Without Sentinel only ordinal 0 takes writes: the Service must never pick a replica.
            assert client["selector"][rc.POD_NAME_LABEL] == f"{names.REDIS}-0"


@pytest.fixture(scope="module")
def app_redis_data():
    """stack -> region -> the app-redis Secret's stringData as recorded, secrets revealed
    (stand-in values only: the offline engine never sees a real password)."""
    cache: dict[str, dict[str, dict]] = {}

    def get(stack: str) -> dict[str, dict]:
        if stack not in cache:
            cache[stack] = {
                rec.inputs["metadata"]["labels"]["tikit.app/region"]: reveal(rec.inputs["stringData"])
                for rec in engine.run_program(stack).records
                if rec.type == "kubernetes:core/v1:Secret" and rec.inputs["metadata"]["name"] == names.APP_REDIS_SECRET
            }
        return cache[stack]

    return get


def test_redis_url_secret_matches_the_rendered_topology(plan, stack, app_redis_data):
    cfg = stack_settings(stack)
    for region in plan.regions:
        secret = named(plan, "Secret", names.APP_REDIS_SECRET, region)
        keys = set(names.APP_REDIS_KEYS)
        assert secret["stringData"] == {key: plan_mod.REDACTED for key in keys}
        data = app_redis_data(stack)[region]
        assert set(data) == keys
        # REDIS_PASSWORD is the password inside REDIS_URL, REDIS_SENTINEL_PASSWORD the
        # sentinels' password in it (none without Sentinel).
        in_url = rconf.parse_redis_url(data[names.REDIS_URL])
        assert in_url.password == data[names.REDIS_PASSWORD] != ""
        assert (in_url.sentinel_password or "") == data[names.REDIS_SENTINEL_PASSWORD]
        auth = named(plan, "Secret", names.REDIS_AUTH_SECRET, region)
        assert auth["stringData"] == {rc.PASSWORD_KEY: plan_mod.REDACTED}
        if cfg.redis.sentinels:
            sentinel_auth = named(plan, "Secret", names.REDIS_SENTINEL_AUTH_SECRET, region)
            assert sentinel_auth["stringData"] == {rc.PASSWORD_KEY: plan_mod.REDACTED}
            # Its own password, not the data password.
            assert data[names.REDIS_SENTINEL_PASSWORD] not in ("", data[names.REDIS_PASSWORD])

        # The URL the Secret holds, with a stand-in password, points at rendered objects.
        target = rconf.parse_redis_url(rc.redis_url(cfg.redis, cfg.namespace, "p@ss:/word"))
        assert target.password == "p@ss:/word" and target.db == 0
        ns = cfg.namespace
        if cfg.redis.sentinels:
            sent = named(plan, "StatefulSet", names.REDIS_SENTINEL, region)["spec"]
            pods = {
                (f"{names.REDIS_SENTINEL}-{i}.{sent['serviceName']}.{ns}.svc.cluster.local", names.REDIS_SENTINEL_PORT)
                for i in range(sent["replicas"])
            }
            assert set(target.sentinels) == pods and target.master_name == names.REDIS_MASTER_NAME
            assert target.host is None
            # The same sentinels and master in parts, for clients that cannot parse the URL.
            assert rconf.parse_sentinel_list(data[names.REDIS_SENTINELS]) == target.sentinels
            assert data[names.REDIS_SENTINEL_MASTER] == target.master_name
        else:
            assert (target.host, target.port) == (names.service_host(names.REDIS, ns), names.REDIS_PORT)
            assert not target.sentinels
            # Empty: no Sentinel, connect with REDIS_URL.
            assert data[names.REDIS_SENTINELS] == data[names.REDIS_SENTINEL_MASTER] == ""
            assert data[names.REDIS_SENTINEL_PASSWORD] == ""
            assert not [o for o in objects(plan, "Secret", region) if o["metadata"]["name"] == names.REDIS_SENTINEL_AUTH_SECRET]
        assert data == rc.app_env(cfg.redis, ns, data[names.REDIS_PASSWORD], data[names.REDIS_SENTINEL_PASSWORD])


def test_consumers_read_the_tier_secrets(plan, stack):
    for region in plan.regions:
        for app in (names.BACKEND, names.WORKERS):
            dep = named(plan, "Deployment", app, region)
            (c,) = dep["spec"]["template"]["spec"]["containers"]
            refs = secret_refs(c)
            for key in names.APP_REDIS_KEYS:
                assert refs[key] == (names.APP_REDIS_SECRET, key), (app, key)
        auth = named(plan, "TriggerAuthentication", f"{names.WORKERS}-redis", region)
        refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        assert refs["password"] == (names.REDIS_AUTH_SECRET, rc.PASSWORD_KEY)


def test_sentinel_password_reaches_exactly_who_asks_sentinel(plan, stack):
    """The sentinels' password: from its own Secret, to the sentinels, the data pods (their
    start and handover scripts), the backup job, KEDA's trigger and the apps (app-redis);
    not to the exporter, which never talks to a sentinel.  Nowhere without Sentinel."""
    cfg = stack_settings(stack)
    for region in plan.regions:
        holders = set()
        for kind in ("StatefulSet", "CronJob", "Deployment"):
            for obj in objects(plan, kind, region):
                spec = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
                for c in spec["template"]["spec"]["containers"]:
                    for env, ref in secret_refs(c).items():
                        if ref[0] == names.REDIS_SENTINEL_AUTH_SECRET:
                            assert ref == (names.REDIS_SENTINEL_AUTH_SECRET, rc.PASSWORD_KEY)
                            assert env == rconf.SENTINEL_PASSWORD_ENV
                            holders.add(f"{obj['metadata']['name']}/{c['name']}")
                        if ref == (names.APP_REDIS_SECRET, names.REDIS_SENTINEL_PASSWORD):
                            holders.add(f"{obj['metadata']['name']}/{c['name']} (app-redis)")
        triggers = {
            (auth["metadata"]["name"], r["parameter"])
            for auth in objects(plan, "TriggerAuthentication", region)
            for r in auth["spec"]["secretTargetRef"]
            if r["name"] == names.REDIS_SENTINEL_AUTH_SECRET
        }
        apps = {f"{names.BACKEND}/{names.BACKEND} (app-redis)", f"{names.WORKERS}/{names.WORKERS} (app-redis)"}
        if cfg.redis.sentinels:
            assert holders == {
                f"{names.REDIS}/redis", f"{names.REDIS_SENTINEL}/sentinel", f"{names.REDIS_BACKUP}/backup", *apps,
            }
            assert triggers == {(f"{names.WORKERS}-redis", "sentinelPassword")}
        else:
            assert holders == apps and not triggers  # the key exists, empty: the contract is the same


# --- availability: PDBs, placement, probes ----------------------------------------------


def test_pdbs_anti_affinity_and_spread(plan, stack):
    cfg = stack_settings(stack)
    workloads = [names.REDIS] + ([names.REDIS_SENTINEL] if cfg.redis.sentinels else [])
    for region in plan.regions:
        pdbs = objects(plan, "PodDisruptionBudget", region)
        for app in workloads:
            sts = named(plan, "StatefulSet", app, region)
            labels = sts["spec"]["template"]["metadata"]["labels"]
            (pdb,) = [p for p in pdbs if matches(p["spec"]["selector"]["matchLabels"], labels)]
            assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": sts["spec"]["selector"]["matchLabels"]}}
            pod = sts["spec"]["template"]["spec"]
            anti = pod["affinity"]["podAntiAffinity"]
            (node,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
            assert node["topologyKey"] == "kubernetes.io/hostname" and matches(node["labelSelector"]["matchLabels"], labels)
            zones = [t["podAffinityTerm"]["topologyKey"] for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]]
            assert "topology.kubernetes.io/zone" in zones
            keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
            assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
            # Parallel: after a failover a replica can only become ready once its primary
            # (any ordinal) runs; ordered start-up could wait forever.
            assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_probes(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        pod = named(plan, "StatefulSet", names.REDIS, region)["spec"]["template"]["spec"]
        redis = container(pod, "redis")
        live = " ".join(redis["livenessProbe"]["exec"]["command"])
        ready = " ".join(redis["readinessProbe"]["exec"]["command"])
        for text in (live, ready):
            assert f'REDISCLI_AUTH="${rconf.PASSWORD_ENV}" redis-cli' in text and "PING" in text
        assert "LOADING" in live  # a server replaying its AOF is alive
        assert "INFO replication" in ready and "role:master" in ready and "master_link_status:up" in ready
        assert redis["readinessProbe"]["failureThreshold"] == rc.READINESS.failures
        assert redis["livenessProbe"]["failureThreshold"] == rc.LIVENESS.failures
        exporter = container(pod, "exporter")
        assert exporter["livenessProbe"]["httpGet"]["port"] == names.METRICS_PORT_NAME
        # The grace period covers the handover's deadline, redis.conf's shutdown-timeout and
        # the final save: one formula, from the constants.
        (timeout,) = directives(named(plan, "ConfigMap", rc.CONFIG_MAP, region)["data"][rconf.REDIS_CONF])["shutdown-timeout"]
        assert int(timeout) == rconf.SHUTDOWN_TIMEOUT_SECONDS
        assert pod["terminationGracePeriodSeconds"] == rc.TERMINATION_GRACE_SECONDS == (
            rconf.HANDOVER_DEADLINE_SECONDS + int(timeout) + rconf.SHUTDOWN_SAVE_MARGIN_SECONDS
        )
        # A standby waits for the sentinels as long as it takes: liveness never looks at the
        # role, and no startupProbe could give up on it.
        assert "startupProbe" not in redis and "role" not in live and "INFO" not in live
        if cfg.redis.sentinels:
            sent = container(named(plan, "StatefulSet", names.REDIS_SENTINEL, region)["spec"]["template"]["spec"], "sentinel")
            live = " ".join(sent["livenessProbe"]["exec"]["command"])
            ready = " ".join(sent["readinessProbe"]["exec"]["command"])
            assert "PING" in live and f"get-master-addr-by-name {names.REDIS_MASTER_NAME}" in ready
            for text in (live, ready):
                assert f'REDISCLI_AUTH="${rconf.SENTINEL_PASSWORD_ENV}" redis-cli' in text


def test_primary_hands_over_before_it_stops(plan, stack):
    """Where Sentinel runs, the data pods' preStop hook runs the rendered handover script,
    under timeout(1) with its deadline; without Sentinel there is nobody to hand over to."""
    cfg = stack_settings(stack)
    for region in plan.regions:
        sts = named(plan, "StatefulSet", names.REDIS, region)
        pod = sts["spec"]["template"]["spec"]
        redis = container(pod, "redis")
        data = named(plan, "ConfigMap", rc.CONFIG_MAP, region)["data"]
        if not cfg.redis.sentinels:
            assert "lifecycle" not in redis and rc.HANDOVER_KEY not in data
            continue
        assert redis["lifecycle"] == {
            "preStop": {
                "exec": {
                    "command": [
                        "timeout", str(rconf.HANDOVER_DEADLINE_SECONDS), "sh", f"{rconf.TEMPLATE_DIR}/{rc.HANDOVER_KEY}"
                    ]
                }
            }
        }
        assert data[rc.HANDOVER_KEY] == rconf.handover_script(cfg.redis, namespace=cfg.namespace)
        assert data[rc.START_KEY] == rconf.redis_start_script(cfg.redis, namespace=cfg.namespace)
        assert "--replicaof 127.0.0.1 0 --replica-priority 0" in data[rc.START_KEY]
        # A change to the hook rolls the pods, like one to redis.conf or the start script.
        annotation = sts["spec"]["template"]["metadata"]["annotations"][rc.CONFIG_HASH_ANNOTATION]
        assert annotation == rc.config_hash(data, (rconf.REDIS_CONF, rc.START_KEY, rc.HANDOVER_KEY))


def test_sentinel_image_is_its_own_setting():
    """redis.sentinelImage: the same release by default, upgraded apart from the data pods."""
    r = settings.load({}, stack="prod").redis
    assert r.sentinel_image == r.image
    _, config, _ = engine.load_stack_config("prod")
    config = {**config, "tikit:redis": json.dumps({"sentinelImage": "docker.io/library/redis:7.4.3"})}
    plan = plan_mod.build(engine.run_program("prod", config_override=config))
    for region in plan.regions:
        sentinel = named(plan, "StatefulSet", names.REDIS_SENTINEL, region)
        data = named(plan, "StatefulSet", names.REDIS, region)
        assert container(sentinel["spec"]["template"]["spec"], "sentinel")["image"] == "docker.io/library/redis:7.4.3"
        assert sentinel["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "7.4.3"
        assert container(data["spec"]["template"]["spec"], "redis")["image"] == r.image


def test_restricted_pods_with_writable_mounts(plan, stack):
    for region in plan.regions:
        specs = [named(plan, "StatefulSet", n, region)["spec"]["template"]["spec"]
                 for n in (names.REDIS, names.REDIS_SENTINEL)
                 if any(o["metadata"]["name"] == n for o in objects(plan, "StatefulSet", region))]
        specs.append(named(plan, "CronJob", names.REDIS_BACKUP, region)["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        for pod in specs:
            ctx = pod["securityContext"]
            assert (ctx["runAsNonRoot"], ctx["runAsUser"], ctx["fsGroup"]) == (True, rc.REDIS_UID, rc.REDIS_UID)
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["automountServiceAccountToken"] is False
            # A Service named "redis" would inject REDIS_PORT=tcp://..., which the scripts read.
            assert pod["enableServiceLinks"] is False
            volumes = {v["name"] for v in pod["volumes"]}
            for c in pod["containers"] + pod.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"] == {"drop": ["ALL"]}
                assert checks.image_problem(c["image"]) is None
                assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes | {rc.DATA_VOLUME}
        data = container(specs[0], "redis")
        mounts = {m["mountPath"] for m in data["volumeMounts"] if not m.get("readOnly")}
        assert {rconf.DATA_DIR, rconf.LIVE_DIR} <= mounts


def test_exporter_is_what_the_pod_monitor_scrapes(plan, stack):
    for region in plan.regions:
        sts = named(plan, "StatefulSet", names.REDIS, region)
        labels = sts["spec"]["template"]["metadata"]["labels"]
        exporter = container(sts["spec"]["template"]["spec"], "exporter")
        assert exporter["ports"] == [
            {"name": names.METRICS_PORT_NAME, "containerPort": names.REDIS_EXPORTER_PORT, "protocol": "TCP"}
        ]
        monitors = [
            m for m in objects(plan, "PodMonitor", region)
            if matches(m["spec"]["selector"].get("matchLabels", {}), labels) and m["spec"]["selector"].get("matchLabels")
        ]
        (monitor,) = monitors
        assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == [names.METRICS_PORT_NAME]
        for other in (names.REDIS_SENTINEL,):
            for s in objects(plan, "StatefulSet", region):
                if s["metadata"]["name"] == other:
                    assert not matches(monitor["spec"]["selector"]["matchLabels"], s["spec"]["template"]["metadata"]["labels"])


# --- backups ---------------------------------------------------------------------------


def test_backup_cronjob(plan, stack):
    cfg = stack_settings(stack)
    r = cfg.redis
    for region in plan.regions:
        cj = named(plan, "CronJob", names.REDIS_BACKUP, region)["spec"]
        fields = cj["schedule"].split()
        assert cj["schedule"] == r.backup_schedule and len(fields) == 5
        # Hourly: a fixed minute, every hour of every day.
        assert fields[0].isdigit() and int(fields[0]) < 60 and fields[1:] == ["*"] * 4
        assert cj["timeZone"] == "Etc/UTC"
        assert cj["concurrencyPolicy"] == "Forbid"
        assert 0 < cj["startingDeadlineSeconds"] < 3600
        assert cj["successfulJobsHistoryLimit"] >= 1 and cj["failedJobsHistoryLimit"] >= 1
        job = cj["jobTemplate"]["spec"]
        # Long enough for the script's BGSAVE wait and the upload, short enough to end
        # before the next run.
        assert rconf.BACKUP_WAIT_SECONDS + rc.BACKUP_UPLOAD_MARGIN_SECONDS <= job["activeDeadlineSeconds"] < 3600
        assert job["backoffLimit"] == rc.BACKUP_BACKOFF_LIMIT
        pod = job["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        (backup,) = pod["containers"]
        assert backup["image"] == r.image
        refs = secret_refs(backup)
        assert refs["REDISCLI_AUTH"] == (names.REDIS_AUTH_SECRET, rc.PASSWORD_KEY)
        if r.sentinels:  # the script asks Sentinel for an in-sync replica
            assert refs[rconf.SENTINEL_PASSWORD_ENV] == (names.REDIS_SENTINEL_AUTH_SECRET, rc.PASSWORD_KEY)
        # The region's own store, with its read-write keys (never another region's).
        s3 = cfg.object_store(region)
        assert refs["AWS_ACCESS_KEY_ID"] == (s3.credentials_secret, s3.access_key_id_key)
        assert refs["AWS_SECRET_ACCESS_KEY"] == (s3.credentials_secret, s3.secret_access_key_key)
        assert s3.credentials_secret == f"{cfg.object_storage.credentials_secret}-{region}"
        assert not [e for e in backup["env"] if "value" in e and re.search(r"KEY|AUTH|PASS", e["name"])]
        env = {e["name"]: e["value"] for e in backup["env"] if "value" in e}
        (init,) = pod["initContainers"]
        assert init["image"] == r.rclone_image and init["command"][0] == "cp"
        tools = init["command"][-1].rstrip("/")
        assert env["PATH"].split(":")[0] == tools and env["SSL_CERT_FILE"].startswith(tools + "/")

        # The script the job runs: this region's bucket and prefix, retention from settings.
        (script_mount,) = [m for m in backup["volumeMounts"] if backup["command"][-1].startswith(m["mountPath"] + "/")]
        (volume,) = [v for v in pod["volumes"] if v["name"] == script_mount["name"]]
        script = named(plan, "ConfigMap", volume["configMap"]["name"], region)["data"][backup["command"][-1].rsplit("/", 1)[1]]
        assert f'STORE="${{STORE:-s3://{cfg.bucket(region)}}}"' in script
        assert f"PREFIX={rconf.backup_prefix(region)}\n" in script
        assert f"RETENTION_HOURS={r.backup_retention_hours}\n" in script
        assert f"WAIT_SECONDS={rconf.BACKUP_WAIT_SECONDS}\n" in script
        # Through the endpoint of this region's bucket.
        endpoint = s3.endpoint
        assert "BGSAVE" in script and f'RCLONE_S3_ENDPOINT="${{RCLONE_S3_ENDPOINT:-{endpoint}}}"' in script

        # The NetworkPolicy that lets the job reach Redis and the object store selects its pods.
        labels = job["template"]["metadata"]["labels"]
        policy = named(plan, "NetworkPolicy", names.REDIS_BACKUP, region)
        assert matches(policy["spec"]["podSelector"]["matchLabels"], labels)


def test_backup_and_restore_use_their_regions_endpoint():
    """regions[].objectStorage.endpoint reaches the scripts of that region only."""
    lagos_s3 = "https://s3.af-south-1.amazonaws.com"
    regions = [
        {"name": "lagos", "role": "primary", "objectStorage": {"endpoint": lagos_s3}, "context": "tikit-staging-lagos"},
        {"name": "london", "role": "backup", "context": "tikit-staging-london"},
    ]
    config = {"tikit:environment": "staging", "tikit:regions": json.dumps(regions)}
    plan = plan_mod.build(engine.run_program("staging", config_override=config))
    default = settings.load({}, stack="staging").object_storage.endpoint_url
    for region, endpoint, s3_region in (("lagos", lagos_s3, "af-south-1"), ("london", default, "eu-west-2")):
        scripts = [
            named(plan, "ConfigMap", rc.BACKUP_CONFIG_MAP, region)["data"][rc.BACKUP_KEY],
            named(plan, "ConfigMap", rc.CONFIG_MAP, region)["data"][rc.RESTORE_KEY],
        ]
        for script in scripts:
            assert f'RCLONE_S3_ENDPOINT="${{RCLONE_S3_ENDPOINT:-{endpoint}}}"' in script
            assert f'RCLONE_S3_REGION="${{RCLONE_S3_REGION:-{s3_region}}}"' in script


def test_restore_script_sits_next_to_redis_conf(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        data = named(plan, "ConfigMap", rc.CONFIG_MAP, region)["data"]
        assert {rconf.REDIS_CONF, rc.START_KEY, rc.RESTORE_KEY} <= set(data)
        assert f'STORE="${{STORE:-s3://{cfg.bucket(region)}}}"' in data[rc.RESTORE_KEY]
        pod = named(plan, "StatefulSet", names.REDIS, region)["spec"]["template"]["spec"]
        redis = container(pod, "redis")
        assert redis["command"] == ["sh", f"{rconf.TEMPLATE_DIR}/{rc.START_KEY}"]
        (template,) = [m for m in redis["volumeMounts"] if m["mountPath"] == rconf.TEMPLATE_DIR]
        (volume,) = [v for v in pod["volumes"] if v["name"] == template["name"]]
        assert volume["configMap"]["name"] == rc.CONFIG_MAP


# --- validity --------------------------------------------------------------------------


def test_every_redis_object_validates(plan, stack):
    kinds = set()
    for region in plan.regions:
        found = redis_objects(plan, region)
        for obj in found:
            assert validate(obj) == [], (obj["kind"], obj["metadata"]["name"])
            kinds.add(obj["kind"])
    assert {"StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "CronJob"} <= kinds


def test_policy_pack_passes_on_redis_objects(rendered, stack):
    result = rendered(stack).policy
    assert result is not None and result.policies > 0
    ours = [f for f in result.findings if "tikit:data:Redis" in (f.urn or "") or "redis" in f.message.lower()]
    assert ours == []


# --- docs ------------------------------------------------------------------------------


def _sizing_rows() -> dict[str, list[int]]:
    text = SIZING_MD.read_text()
    section = text.split("## Redis memory", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\| (dev|staging|prod) \|", line)
        if m:
            rows[m.group(1)] = [int(n) for n in re.findall(r"(\d+) B\b", line)]
    return rows


def test_sizing_doc_shows_the_derived_redis_memory():
    rows = _sizing_rows()
    assert set(rows) == set(settings.ENVIRONMENTS)
    for env in settings.ENVIRONMENTS:
        s = settings.load({}, stack=env)
        d = s.derived
        assert rows[env] == [units.memory_bytes(s.redis.memory), d.redis_maxmemory_bytes, d.redis_fork_headroom_bytes]
