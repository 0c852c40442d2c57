"""Restore drills, declared as part of the platform (docs/runbooks/restore-drills.md).

* In the primary region, CronJob ``pg-canary``: a row in ``tikit_platform.restore_canary``
  every 15 minutes through the write pool, like the apps (tikit/conf/drills.py says why).
* In each drilled region (the backup regions, or the primary in a single-region stack),
  weekly at ``restoreDrills.schedule``:
  - CronJob ``pg-restore-drill`` (ServiceAccount, Role and RoleBinding of the same name):
    creates the throwaway CNPG Cluster ``pg-restore-drill``, bootstrapped by recovery from
    the primary region's store (this region's read-only view of it) to a time
    ``TARGET_LAG_SECONDS`` ago, waits for it, runs the verification query in it, and
    deletes it whatever happened; the Cluster is owned by the Job, so Kubernetes collects it
    even when the pod is killed;
  - CronJob ``redis-restore-drill``: the primary region's newest Redis snapshot, restored
    with the rendered restore script into an empty directory and checked with
    redis-check-rdb and redis-check-aof.

Their NetworkPolicies are in components/network.py, their alerts (the last successful run
too old, a run failed) in conf/alerts.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names
from tikit.components import nodeapp
from tikit.components import postgres as pgc
from tikit.components import redis as rc
from tikit.conf import drills as conf
from tikit.conf import redis as rconf
from tikit.conf.postgres import postgres_parameters
from tikit.derived import Derived
from tikit.settings import ObjectStore
from tikit.settings import Postgres as PostgresSettings
from tikit.settings import Redis as RedisSettings
from tikit.settings import RestoreDrills as RestoreDrillsSettings

COMPONENT = "restore-drill"
CANARY_COMPONENT = "restore-canary"
TIMEZONE = "Etc/UTC"
TMP_DIR = "/tmp"
JOB_CPU, JOB_MEMORY = "100m", "128Mi"
# The Job's name and uid, for the drill Cluster's ownerReferences (the Job controller labels
# every pod with both).
JOB_NAME_LABEL = "job-name"
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"

# The canary: a run that cannot start within 5 minutes is skipped (the next one is 15
# minutes away); one run never takes two minutes.
CANARY_STARTING_DEADLINE_SECONDS = 300
CANARY_ACTIVE_DEADLINE_SECONDS = 120
CANARY_DIR = "/etc/pg-canary"

# The PostgreSQL drill: the whole database is restored, so allow hours; the script gives
# up first and deletes the Cluster, the Job's deadline is the backstop.  No retries: a
# failed drill is an alert, not something to repeat blindly.
PG_DRILL_TIMEOUT_SECONDS = 3 * 3600
PG_DRILL_POLL_SECONDS = 15
PG_DRILL_CLEANUP_SECONDS = 600
PG_DRILL_DIR = "/etc/pg-restore-drill"
MANIFEST_KEY, QUERY_KEY, SCRIPT_KEY = "cluster.json", "verify.sql", "drill.sh"
# The Redis drill: one snapshot, restored into an emptyDir.
REDIS_DRILL_ACTIVE_DEADLINE_SECONDS = 3600
REDIS_DRILL_DIR = "/etc/redis-restore-drill"
REDIS_DRILL_DATA = "/drill"
RESTORE_KEY = "restore.sh"
# Drills: a run that cannot start within an hour is skipped (the alert then counts the week).
DRILL_STARTING_DEADLINE_SECONDS = 3600
DRILL_HISTORY_LIMIT = 2
# The longest a drill may take from its scheduled time (the age alert adds it to the period).
DRILL_MAX_RUN_SECONDS = DRILL_STARTING_DEADLINE_SECONDS + PG_DRILL_TIMEOUT_SECONDS + PG_DRILL_CLEANUP_SECONDS


@dataclass(frozen=True)
class DrillsArgs:
    target: kube.Target
    drills: RestoreDrillsSettings
    postgres: PostgresSettings
    derived: Derived
    redis: RedisSettings
    # The region whose backups the drills restore, and its store (read here with its
    # read-only keys unless this is that region).
    primary: str
    primary_store: ObjectStore
    # This region writes the canary / runs the drills.
    canary: bool
    drill: bool
    # A Redis snapshot older than this fails the drill (monitoring.redisBackupMaxAgeSeconds).
    redis_backup_max_age_seconds: int


def pg_drill_active_deadline() -> int:
    return PG_DRILL_TIMEOUT_SECONDS + PG_DRILL_CLEANUP_SECONDS


# --- the drill Cluster ---------------------------------------------------------------------


def drill_cluster(args: DrillsArgs) -> dict[str, Any]:
    """The throwaway Cluster, with the run-time slots the script fills: the target time and
    the owning Job.  The live cluster's image, sizes and parameters (recovery refuses a
    smaller max_connections than the source's), one instance, no PDB, and no ``plugins``:
    it never archives anywhere."""
    pg, t = args.postgres, args.target

    def volume(size: str) -> dict[str, Any]:
        return {"size": size, **({"storageClass": pg.storage_class} if pg.storage_class else {})}

    (origin,) = pgc.external_clusters([args.primary])
    meta = kube.metadata(names.PG_RESTORE_DRILL, COMPONENT, t, app=names.PG_RESTORE_DRILL)
    meta["ownerReferences"] = [
        {"apiVersion": "batch/v1", "kind": "Job", "name": conf.JOB_NAME_SLOT, "uid": conf.JOB_UID_SLOT}
    ]
    return {
        "apiVersion": pgc.CNPG_API,
        "kind": "Cluster",
        "metadata": meta,
        "spec": {
            "instances": 1,
            "imageName": pg.image,
            "storage": volume(pg.storage_size),
            "walStorage": volume(pg.wal_storage_size),
            "resources": kube.resources(pg.cpu, pg.memory, guaranteed=True),
            "enablePDB": False,
            # On the platform's pools, below the live cluster's priority.
            "affinity": {"tolerations": [kube.dedicated_toleration(t)]},
            "priorityClassName": names.priority_class(t.namespace, names.PRIORITY_WORKERS),
            "postgresql": {"parameters": postgres_parameters(pg, args.derived)},
            "bootstrap": {
                "recovery": {
                    "source": origin["name"],
                    "database": names.PG_DATABASE,
                    "owner": names.PG_OWNER,
                    "recoveryTarget": {"targetTime": conf.TARGET_SLOT},
                }
            },
            "externalClusters": [origin],
            "inheritedMetadata": {"labels": kube.labels(names.PG_RESTORE_DRILL, COMPONENT, t)},
        },
    }


def role_rules() -> list[dict[str, Any]]:
    """Exactly what the drill script does: create the drill Cluster (creation cannot be
    limited to a name), read and delete it, and run psql in its one instance."""
    drill, pod = names.PG_RESTORE_DRILL, f"{names.PG_RESTORE_DRILL}-1"
    return [
        {"apiGroups": ["postgresql.cnpg.io"], "resources": ["clusters"], "verbs": ["create"]},
        {"apiGroups": ["postgresql.cnpg.io"], "resources": ["clusters"], "resourceNames": [drill], "verbs": ["get", "delete"]},
        {"apiGroups": [""], "resources": ["pods"], "resourceNames": [pod], "verbs": ["get"]},
        # kubectl exec: POST (create) or, over WebSockets, GET (get).
        {"apiGroups": [""], "resources": ["pods/exec"], "resourceNames": [pod], "verbs": ["create", "get"]},
    ]


# --- pods ----------------------------------------------------------------------------------


def _job_basics(target: kube.Target, *, service_account: Optional[str] = None) -> dict[str, Any]:
    """Batch pods on the platform's node pools at the workers' priority: a drill or the
    canary yields to the API and the data tiers when the pools are full."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "securityContext": kube.pod_security(),
        **kube.pool_placement(target, names.PRIORITY_WORKERS),
    }
    if service_account:
        spec["serviceAccountName"] = service_account
        spec["automountServiceAccountToken"] = True
    else:
        spec["automountServiceAccountToken"] = False
    return spec


def _container(name: str, image: str, command: list[str], env: list[dict[str, Any]], mounts: list[dict[str, Any]],
               cpu: str = JOB_CPU, memory: str = JOB_MEMORY) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": [{"name": "HOME", "value": TMP_DIR}, {"name": "TMPDIR", "value": TMP_DIR}, *env],
        "resources": kube.resources(cpu, memory),
        "securityContext": kube.container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}, *mounts],
    }


def canary_pod_spec(args: DrillsArgs) -> dict[str, Any]:
    """psql from the PostgreSQL image, DATABASE_URL from the apps' Secret and the CA it names."""
    container = _container(
        "canary", args.postgres.image, ["sh", f"{CANARY_DIR}/canary.sh"],
        [kube.env_from_secret(names.DATABASE_URL, names.APP_DATABASE_SECRET, names.DATABASE_URL)],
        [{"name": "script", "mountPath": CANARY_DIR, "readOnly": True},
         {"name": nodeapp.DATABASE_CA_VOLUME, "mountPath": names.DATABASE_CA_DIR, "readOnly": True}],
    )
    return {
        **_job_basics(args.target),
        "containers": [container],
        "volumes": [
            {"name": "script", "configMap": {"name": names.PG_CANARY}},
            {"name": "tmp", "emptyDir": {}},
            nodeapp.database_ca_volume(),
        ],
    }


def pg_drill_pod_spec(args: DrillsArgs) -> dict[str, Any]:
    container = _container(
        "drill", args.drills.kubectl_image, ["sh", f"{PG_DRILL_DIR}/{SCRIPT_KEY}"],
        [
            {"name": "JOB_NAME", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}},
            {"name": "JOB_UID", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_UID_LABEL}']"}}},
        ],
        [{"name": "drill", "mountPath": PG_DRILL_DIR, "readOnly": True}],
    )
    return {
        **_job_basics(args.target, service_account=names.PG_RESTORE_DRILL),
        # Room for the trap to delete the Cluster after SIGTERM (the Job's deadline).
        "terminationGracePeriodSeconds": 60,
        "containers": [container],
        "volumes": [{"name": "drill", "configMap": {"name": names.PG_RESTORE_DRILL}}, {"name": "tmp", "emptyDir": {}}],
    }


def redis_drill_pod_spec(args: DrillsArgs) -> dict[str, Any]:
    """The Redis image and rclone (copied in, as in the backup job), the primary's store
    with the keys this region holds for it, redis.conf from the Redis tier's ConfigMap."""
    r, store = args.redis, args.primary_store
    read_only = args.target.region != args.primary
    secret = store.credentials(read_only=read_only)
    tools = {"name": "tools", "mountPath": rc.TOOLS_DIR}
    init = {
        "name": "rclone",
        "image": r.rclone_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["cp", rc.RCLONE_BINARY, rc.CA_BUNDLE, f"{rc.TOOLS_DIR}/"],
        "resources": kube.resources(JOB_CPU, JOB_MEMORY),
        "securityContext": kube.container_security(),
        "volumeMounts": [tools],
    }
    container = _container(
        "drill", r.image, ["sh", f"{REDIS_DRILL_DIR}/{SCRIPT_KEY}"],
        [
            kube.env_from_secret("AWS_ACCESS_KEY_ID", secret, store.access_key_id_key),
            kube.env_from_secret("AWS_SECRET_ACCESS_KEY", secret, store.secret_access_key_key),
            {"name": "PATH", "value": rc.PATH},
            {"name": "SSL_CERT_FILE", "value": f"{rc.TOOLS_DIR}/{rc.CA_BUNDLE.rsplit('/', 1)[-1]}"},
        ],
        [
            {"name": "drill", "mountPath": REDIS_DRILL_DIR, "readOnly": True},
            {"name": "template", "mountPath": rconf.TEMPLATE_DIR, "readOnly": True},
            {"name": "data", "mountPath": REDIS_DRILL_DATA},
            tools,
        ],
        # The snapshot is loaded into memory and rewritten as an AOF: the data pods' size.
        cpu=r.cpu, memory=r.memory,
    )
    return {
        **_job_basics(args.target),
        "securityContext": kube.pod_security(run_as_user=rc.REDIS_UID, fs_group=rc.REDIS_UID),
        "initContainers": [init],
        "containers": [container],
        "volumes": [
            {"name": "drill", "configMap": {"name": names.REDIS_RESTORE_DRILL}},
            {"name": "template", "configMap": {"name": rc.CONFIG_MAP}},
            {"name": "tools", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"sizeLimit": r.storage_size}},
            {"name": "data", "emptyDir": {"sizeLimit": r.storage_size}},
        ],
    }


def cronjob_spec(*, schedule: str, labels: dict[str, str], pod: dict[str, Any], active_deadline: int,
                 starting_deadline: int, backoff_limit: int, history: int, failed_history: int) -> dict[str, Any]:
    return {
        "schedule": schedule,
        "timeZone": TIMEZONE,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": starting_deadline,
        "successfulJobsHistoryLimit": history,
        "failedJobsHistoryLimit": failed_history,
        "jobTemplate": {
            "metadata": {"labels": dict(labels)},
            "spec": {
                "backoffLimit": backoff_limit,
                "activeDeadlineSeconds": active_deadline,
                "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
            },
        },
    }


def pg_drill_config(args: DrillsArgs) -> dict[str, str]:
    return {
        SCRIPT_KEY: conf.pg_drill_script(
            namespace=args.target.namespace,
            manifest=f"{PG_DRILL_DIR}/{MANIFEST_KEY}",
            query_file=f"{PG_DRILL_DIR}/{QUERY_KEY}",
            timeout_seconds=PG_DRILL_TIMEOUT_SECONDS,
            poll_seconds=PG_DRILL_POLL_SECONDS,
        ),
        MANIFEST_KEY: json.dumps(drill_cluster(args), indent=2, sort_keys=True) + "\n",
        QUERY_KEY: conf.verification_query(),
    }


def redis_drill_config(args: DrillsArgs) -> dict[str, str]:
    store = args.primary_store
    data = f"{REDIS_DRILL_DATA}/data"
    return {
        SCRIPT_KEY: conf.redis_drill_script(
            region=args.primary, store=rc.store_url(store.bucket), s3_endpoint=store.endpoint,
            restore=f"{REDIS_DRILL_DIR}/{RESTORE_KEY}", data_dir=data,
            max_age_seconds=args.redis_backup_max_age_seconds,
        ),
        RESTORE_KEY: rconf.restore_script(
            args.redis, region=args.primary, store=rc.store_url(store.bucket), s3_endpoint=store.endpoint,
            conf=f"{rconf.TEMPLATE_DIR}/{rconf.REDIS_CONF}", data_dir=data,
        ),
    }


# --- the component -------------------------------------------------------------------------


class Drills(pulumi.ComponentResource):
    """The canary (primary region) and the weekly drills (drilled regions) of one region."""

    def __init__(self, name: str, args: DrillsArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:data:RestoreDrills", name, None, opts)
        t, d = args.target, args.drills
        child = t.opts(self)
        self.cronjobs: dict[str, k8s.batch.v1.CronJob] = {}

        if args.canary:
            script = k8s.core.v1.ConfigMap(
                t.rname(names.PG_CANARY),
                metadata=kube.metadata(names.PG_CANARY, CANARY_COMPONENT, t),
                data={"canary.sh": conf.canary_script(region=t.region)},
                opts=child,
            )
            labels = kube.labels(names.PG_CANARY, CANARY_COMPONENT, t, kube.image_version(args.postgres.image))
            self.cronjobs[names.PG_CANARY] = kube.workload(
                k8s.batch.v1.CronJob,
                t.rname(names.PG_CANARY),
                metadata=kube.metadata(names.PG_CANARY, CANARY_COMPONENT, t),
                spec=cronjob_spec(
                    schedule=conf.CANARY_SCHEDULE, labels=labels, pod=canary_pod_spec(args),
                    active_deadline=CANARY_ACTIVE_DEADLINE_SECONDS, starting_deadline=CANARY_STARTING_DEADLINE_SECONDS,
                    backoff_limit=1, history=1, failed_history=3,
                ),
                opts=t.opts(self, depends_on=[script]),
            )

        if not args.drill:
            self.register_outputs({})
            return

        # ---- PostgreSQL ---------------------------------------------------------------------
        drill = names.PG_RESTORE_DRILL
        account = k8s.core.v1.ServiceAccount(
            t.rname(f"{drill}-sa"),
            metadata=kube.metadata(drill, COMPONENT, t),
            automount_service_account_token=False,
            opts=child,
        )
        role = k8s.rbac.v1.Role(t.rname(f"{drill}-role"), metadata=kube.metadata(drill, COMPONENT, t), rules=role_rules(), opts=child)
        binding = k8s.rbac.v1.RoleBinding(
            t.rname(f"{drill}-rolebinding"),
            metadata=kube.metadata(drill, COMPONENT, t),
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": drill},
            subjects=[{"kind": "ServiceAccount", "name": drill, "namespace": t.namespace}],
            opts=t.opts(self, depends_on=[account, role]),
        )
        pg_config = k8s.core.v1.ConfigMap(
            t.rname(drill), metadata=kube.metadata(drill, COMPONENT, t), data=pg_drill_config(args), opts=child
        )
        self.cronjobs[drill] = kube.workload(
            k8s.batch.v1.CronJob,
            t.rname(drill),
            metadata=kube.metadata(drill, COMPONENT, t),
            spec=cronjob_spec(
                schedule=d.schedule, labels=kube.labels(drill, COMPONENT, t, kube.image_version(d.kubectl_image)),
                pod=pg_drill_pod_spec(args), active_deadline=pg_drill_active_deadline(),
                starting_deadline=DRILL_STARTING_DEADLINE_SECONDS, backoff_limit=0,
                history=DRILL_HISTORY_LIMIT, failed_history=DRILL_HISTORY_LIMIT,
            ),
            opts=t.opts(self, depends_on=[pg_config, binding]),
        )

        # ---- Redis --------------------------------------------------------------------------
        rdrill = names.REDIS_RESTORE_DRILL
        redis_config = k8s.core.v1.ConfigMap(
            t.rname(rdrill), metadata=kube.metadata(rdrill, COMPONENT, t), data=redis_drill_config(args), opts=child
        )
        self.cronjobs[rdrill] = kube.workload(
            k8s.batch.v1.CronJob,
            t.rname(rdrill),
            metadata=kube.metadata(rdrill, COMPONENT, t),
            spec=cronjob_spec(
                schedule=d.schedule, labels=kube.labels(rdrill, COMPONENT, t, kube.image_version(args.redis.image)),
                pod=redis_drill_pod_spec(args), active_deadline=REDIS_DRILL_ACTIVE_DEADLINE_SECONDS,
                starting_deadline=DRILL_STARTING_DEADLINE_SECONDS, backoff_limit=0,
                history=DRILL_HISTORY_LIMIT, failed_history=DRILL_HISTORY_LIMIT,
            ),
            opts=t.opts(self, depends_on=[redis_config]),
        )
        self.register_outputs({"cronjobs": sorted(self.cronjobs)})
