"""The restore drills on the rendered manifests of every stack: the canary in the primary
region, the weekly PostgreSQL and Redis drills in the backup region, the drill Cluster they
create (valid against CNPG's CRD, recovering from the primary's store with the read-only
keys, never archiving), their RBAC, NetworkPolicies and restricted pods.  The scripts run in
tests/conf/test_drill_scripts.py and tests/integration/test_backups_restore.py."""

from __future__ import annotations

import json

import pytest
import yaml

from tikit import names
from tikit import settings
from tikit.components import drills as dc
from tikit.components import postgres as pgc
from tikit.components import redis as rc
from tikit.conf import drills as conf
from tikit.conf import redis as rconf
from tikit.conf.postgres import postgres_parameters
from conftest import REPO, named, objects
from preview.validate import validate

DRILLS = (names.PG_RESTORE_DRILL, names.REDIS_RESTORE_DRILL)


def stack_settings(stack: str) -> settings.Settings:
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text()) or {}
    return settings.load({k.split(":", 1)[1]: v for k, v in (doc.get("config") or {}).items()}, stack=stack)


def cronjobs(plan, region: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects(plan, "CronJob", region)}


def pod(cronjob: dict) -> dict:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def drill_cluster(plan, region: str, **slots: str) -> dict:
    text = named(plan, "ConfigMap", names.PG_RESTORE_DRILL, region)["data"][dc.MANIFEST_KEY]
    for slot, value in {conf.TARGET_SLOT: "2026-03-10T03:30:00Z", conf.JOB_NAME_SLOT: "pg-restore-drill-29500000",
                        conf.JOB_UID_SLOT: "0b9c1a2e-5f6d-4c3b-9a8e-7d6c5b4a3f21", **slots}.items():
        text = text.replace(slot, value)
    return json.loads(text)


def test_drills_run_in_the_backup_region_and_the_canary_in_the_primary(plan, stack):
    cfg = stack_settings(stack)
    assert cfg.restore_drills.enabled is (stack != "dev")
    for region in plan.regions:
        jobs = cronjobs(plan, region)
        role = next(r.role for r in cfg.regions if r.name == region)
        assert (names.PG_CANARY in jobs) is (cfg.restore_drills.enabled and role == "primary")
        for drill in DRILLS:
            assert (drill in jobs) is (cfg.restore_drills.enabled and role == "backup"), (region, drill)


def test_drills_are_weekly_never_retried_and_bounded(plan, stack):
    cfg = stack_settings(stack)
    for region in (r.name for r in cfg.drilled_regions):
        for drill in DRILLS:
            spec = cronjobs(plan, region)[drill]["spec"]
            assert spec["schedule"] == cfg.restore_drills.schedule == "0 4 * * 2"
            assert spec["timeZone"] == "Etc/UTC" and spec["concurrencyPolicy"] == "Forbid"
            job = spec["jobTemplate"]["spec"]
            assert job["backoffLimit"] == 0
            assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
        pg_job = cronjobs(plan, region)[names.PG_RESTORE_DRILL]["spec"]["jobTemplate"]["spec"]
        # The script gives up (and deletes the Cluster) before the Job's deadline kills it.
        assert pg_job["activeDeadlineSeconds"] > dc.PG_DRILL_TIMEOUT_SECONDS
        assert dc.DRILL_MAX_RUN_SECONDS >= dc.DRILL_STARTING_DEADLINE_SECONDS + pg_job["activeDeadlineSeconds"]


def test_every_drill_pod_is_restricted(plan, stack):
    for region in plan.regions:
        for name, cj in cronjobs(plan, region).items():
            if name not in (*DRILLS, names.PG_CANARY):
                continue
            spec = pod(cj)
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for c in spec["containers"] + spec.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
                assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
                assert c["resources"]["limits"]["memory"] == c["resources"]["requests"]["memory"]
            # Only the PostgreSQL drill talks to the Kubernetes API.
            assert spec["automountServiceAccountToken"] is (name == names.PG_RESTORE_DRILL)
            assert validate(cj) == [], f"{region} CronJob/{name}"


def test_the_drill_cluster_recovers_the_primarys_backups_with_read_only_keys(plan, stack):
    cfg = stack_settings(stack)
    primary = cfg.primary.name
    for region in (r.name for r in cfg.drilled_regions):
        cluster = drill_cluster(plan, region)
        assert validate(cluster) == []  # CNPG's CRD, with the run-time slots filled
        spec = cluster["spec"]
        assert cluster["metadata"]["name"] == names.PG_RESTORE_DRILL
        assert cluster["metadata"]["ownerReferences"] == [
            {"apiVersion": "batch/v1", "kind": "Job", "name": "pg-restore-drill-29500000",
             "uid": "0b9c1a2e-5f6d-4c3b-9a8e-7d6c5b4a3f21"}]
        recovery = spec["bootstrap"]["recovery"]
        assert recovery["recoveryTarget"] == {"targetTime": "2026-03-10T03:30:00Z"}
        assert (recovery["database"], recovery["owner"]) == (names.PG_DATABASE, names.PG_OWNER)
        (origin,) = spec["externalClusters"]
        assert origin["name"] == recovery["source"]
        params = origin["plugin"]["parameters"]
        assert origin["plugin"]["name"] == pgc.BARMAN_PLUGIN
        assert params == {"barmanObjectName": names.pg_object_store(primary), "serverName": names.pg_cluster(primary)}
        # That ObjectStore exists in this region and opens the primary's bucket read-only.
        store = named(plan, "ObjectStore", params["barmanObjectName"], region)["spec"]["configuration"]
        primary_store = cfg.object_store(primary)
        assert store["endpointURL"] == primary_store.endpoint
        assert {ref["name"] for ref in store["s3Credentials"].values()} == {primary_store.read_only_credentials_secret}
        # Never archives (no plugins), one instance, the live shape (recovery needs
        # max_connections and friends at least the source's).
        assert "plugins" not in spec and "backup" not in spec
        assert spec["instances"] == 1 and spec["enablePDB"] is False
        assert spec["imageName"] == cfg.postgres.image
        assert spec["postgresql"]["parameters"] == postgres_parameters(cfg.postgres, cfg.derived)
        assert (spec["storage"]["size"], spec["walStorage"]["size"]) == (cfg.postgres.storage_size, cfg.postgres.wal_storage_size)
        # The live cluster's monitors and policies select pg-<region>, never the drill.
        assert names.pg_cluster(region) != cluster["metadata"]["name"]


def test_the_drill_script_and_query_in_the_config_map(plan, stack):
    cfg = stack_settings(stack)
    for region in (r.name for r in cfg.drilled_regions):
        data = named(plan, "ConfigMap", names.PG_RESTORE_DRILL, region)["data"]
        assert set(data) == {dc.SCRIPT_KEY, dc.MANIFEST_KEY, dc.QUERY_KEY}
        assert data[dc.QUERY_KEY] == conf.verification_query()
        script = data[dc.SCRIPT_KEY]
        assert f"MANIFEST:-{dc.PG_DRILL_DIR}/{dc.MANIFEST_KEY}" in script
        assert f"EXPECTED={conf.EXPECTED_ANSWER}\n" in script
        assert f"TARGET_LAG_SECONDS={conf.TARGET_LAG_SECONDS}\n" in script
        spec = pod(cronjobs(plan, region)[names.PG_RESTORE_DRILL])
        (c,) = spec["containers"]
        assert c["image"] == cfg.restore_drills.kubectl_image
        assert c["command"] == ["sh", f"{dc.PG_DRILL_DIR}/{dc.SCRIPT_KEY}"]
        env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}
        assert env["JOB_NAME"] == "metadata.labels['job-name']"
        assert env["JOB_UID"] == "metadata.labels['batch.kubernetes.io/controller-uid']"
        assert spec["serviceAccountName"] == names.PG_RESTORE_DRILL


def test_the_target_lag_and_window_fit_the_canary():
    """T must have a canary commit after it that is archived by the time recovery needs it,
    and a canary row in the window before it even when one canary run is missed."""
    assert conf.TARGET_LAG_SECONDS >= conf.CANARY_PERIOD_SECONDS + conf.ARCHIVE_TIMEOUT_SECONDS
    assert conf.WINDOW_SECONDS >= 2 * conf.CANARY_PERIOD_SECONDS
    assert conf.CANARY_SCHEDULE == f"*/{conf.CANARY_PERIOD_SECONDS // 60} * * * *"
    for stack in ("staging", "prod"):
        days = int(settings.load({}, stack=stack).postgres.retention[:-1])
        assert conf.CANARY_KEEP_DAYS > days


def test_the_drill_role_allows_exactly_the_drill(plan, stack):
    cfg = stack_settings(stack)
    for region in (r.name for r in cfg.drilled_regions):
        role = named(plan, "Role", names.PG_RESTORE_DRILL, region)
        assert role["rules"] == dc.role_rules()
        # Nothing beyond the drill Cluster and its one pod, no Secrets, no wildcards.
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert set(rule["resources"]) <= {"clusters", "pods", "pods/exec"}
            if rule["verbs"] != ["create"] or rule["resources"] != ["clusters"]:
                assert rule["resourceNames"] in ([names.PG_RESTORE_DRILL], [f"{names.PG_RESTORE_DRILL}-1"])
        binding = named(plan, "RoleBinding", names.PG_RESTORE_DRILL, region)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names.PG_RESTORE_DRILL}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": names.PG_RESTORE_DRILL, "namespace": cfg.namespace}]
        named(plan, "ServiceAccount", names.PG_RESTORE_DRILL, region)


def test_the_redis_drill_reads_the_primarys_backups(plan, stack):
    cfg = stack_settings(stack)
    primary = cfg.object_store(cfg.primary.name)
    for region in (r.name for r in cfg.drilled_regions):
        data = named(plan, "ConfigMap", names.REDIS_RESTORE_DRILL, region)["data"]
        script, restore = data[dc.SCRIPT_KEY], data[dc.RESTORE_KEY]
        for text in (script, restore):
            assert f'STORE="${{STORE:-s3://{primary.bucket}}}"' in text
            assert f'RCLONE_S3_ENDPOINT="${{RCLONE_S3_ENDPOINT:-{primary.endpoint}}}"' in text
        assert f'PREFIX="${{PREFIX:-{rconf.backup_prefix(cfg.primary.name)}}}"' in script
        assert f'MAX_AGE_SECONDS="${{MAX_AGE_SECONDS:-{cfg.monitoring.redis_backup_max_age_seconds}}}"' in script
        spec = pod(cronjobs(plan, region)[names.REDIS_RESTORE_DRILL])
        (c,) = spec["containers"]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
        assert refs == {"AWS_ACCESS_KEY_ID": primary.read_only_credentials_secret,
                        "AWS_SECRET_ACCESS_KEY": primary.read_only_credentials_secret}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["template"]["configMap"]["name"] == rc.CONFIG_MAP
        assert c["resources"]["limits"]["memory"] == cfg.redis.memory


def test_the_canary_writes_through_the_write_pool_with_tls(plan, stack):
    cfg = stack_settings(stack)
    if not cfg.restore_drills.enabled:
        return
    region = cfg.primary.name
    cj = cronjobs(plan, region)[names.PG_CANARY]
    assert cj["spec"]["schedule"] == conf.CANARY_SCHEDULE
    (c,) = pod(cj)["containers"]
    assert c["image"] == cfg.postgres.image  # psql
    (url,) = [e for e in c["env"] if e["name"] == names.DATABASE_URL]
    assert url["valueFrom"]["secretKeyRef"] == {"name": names.APP_DATABASE_SECRET, "key": names.DATABASE_URL}
    assert any(m["mountPath"] == names.DATABASE_CA_DIR for m in c["volumeMounts"])
    assert named(plan, "ConfigMap", names.PG_CANARY, region)["data"]["canary.sh"] == conf.canary_script(region=region)


def _selects(policy: dict, labels: dict) -> bool:
    return policy["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()


def test_network_policies_let_the_drills_do_their_work_and_nothing_more(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        policies = {p["metadata"]["name"]: p for p in objects(plan, "NetworkPolicy", region)}
        drilled = region in {r.name for r in cfg.drilled_regions}
        assert (names.PG_RESTORE_DRILL in policies) is drilled
        if drilled:
            job = pod(cronjobs(plan, region)[names.PG_RESTORE_DRILL])
            labels = cronjobs(plan, region)[names.PG_RESTORE_DRILL]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
            p = policies[names.PG_RESTORE_DRILL]
            assert _selects(p, labels) and job
            # The API server only: psql runs inside the drill instance through exec.
            assert [port["port"] for r in p["spec"]["egress"] for port in r["ports"]] == sorted({443, cfg.network.api_server_port})
            instance = policies[f"{names.PG_RESTORE_DRILL}-instance"]
            assert instance["spec"]["podSelector"] == {"matchLabels": {names.CNPG_CLUSTER_LABEL: names.PG_RESTORE_DRILL}}
            # ... and the live cluster's policy does not select the drill.
            assert policies["postgres"]["spec"]["podSelector"]["matchLabels"][names.CNPG_CLUSTER_LABEL] == names.pg_cluster(region)
        canary = cfg.restore_drills.enabled and region == cfg.primary.name
        assert (names.PG_CANARY in policies) is canary
        if canary:
            sources = [peer for r in policies["pgbouncer"]["spec"]["ingress"] for peer in r["from"]]
            assert {"podSelector": {"matchLabels": {names.APP_NAME_LABEL: names.PG_CANARY}}} in sources


@pytest.mark.parametrize("schedule", ["0 4 1 * *", "*/5 * * * *"])
def test_a_drill_schedule_without_a_period_is_refused(schedule):
    with pytest.raises(settings.ConfigError, match="restoreDrills.schedule"):
        settings.load({"restoreDrills": {"schedule": schedule}}, stack="staging")
