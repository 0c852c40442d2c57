"""The Redis tier: the shared cache and the job queue the workers drain.

Per region (docs/redis.md: topology, failover, backups; the memory arithmetic is in
docs/sizing.md):

* Secrets: ``redis-auth`` (key ``password``, read by the pods, the backup job and the
  workers' KEDA trigger), where Sentinel runs ``redis-sentinel-auth`` (key ``password``, the
  sentinels' own: the sentinels, the data pods, the backup job and KEDA's trigger), and
  ``app-redis`` for the API and the workers: ``REDIS_URL`` (a Sentinel URL where Sentinel
  runs, the client Service otherwise) and the same target in parts, ``REDIS_PASSWORD``,
  ``REDIS_SENTINELS``, ``REDIS_SENTINEL_MASTER``, ``REDIS_SENTINEL_PASSWORD``;
* ConfigMaps with the text of tikit/conf/redis.py: redis.conf, the start, handover and
  restore scripts, sentinel.conf and its start script, the backup script.  No password in
  any: the pods read them from the Secrets and hand them over at start;
* StatefulSet ``redis`` (one primary, ``replicas - 1`` replicas, a volume each) with a
  redis_exporter sidecar, its PodDisruptionBudget, the client Service ``redis`` and the
  governing headless Service ``redis-headless``; where Sentinel runs, a primary hands its
  role over in its preStop hook, so a rollout costs no unplanned failover;
* where settings.redis.sentinels > 0: StatefulSet ``redis-sentinel`` (``redis.sentinelImage``)
  behind the headless Service ``redis-sentinel``, and its PodDisruptionBudget;
* CronJob ``redis-backup``: hourly RDB snapshot to the region's bucket, pruned by retention.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names
from tikit.conf import pods
from tikit.conf import redis as rconf
from tikit.conf import templates
from tikit.settings import ObjectStore
from tikit.settings import Redis as RedisSettings

COMPONENT = "redis"
SENTINEL_COMPONENT = "sentinel"
BACKUP_COMPONENT = "backup"

# Secret key of names.REDIS_AUTH_SECRET; the workers' TriggerAuthentication reads the same key.
PASSWORD_KEY = "password"
# The uid/gid Redis runs as: above 10000, so it matches no user of the node (the image's own
# `redis` user is 999); the volume is group-owned by it (fsGroup), which is all redis-server
# needs, since it runs without the image's entrypoint.
REDIS_UID = 10001

CONFIG_MAP = "redis-config"                  # redis.conf, start.sh, handover.sh (Sentinel), restore.sh
SENTINEL_CONFIG_MAP = "redis-sentinel-config"  # sentinel.conf, start.sh
BACKUP_CONFIG_MAP = "redis-backup"           # backup.sh
START_KEY = "start.sh"
HANDOVER_KEY = "handover.sh"
RESTORE_KEY = "restore.sh"
BACKUP_KEY = "backup.sh"
BACKUP_DIR = "/etc/redis-backup"
TOOLS_DIR = "/tools"                         # rclone and a CA bundle, copied by the init container
TMP_DIR = "/tmp"
# Where the rclone image keeps what the init container copies (upstream Dockerfile: a
# static Go binary on Alpine with ca-certificates).  The redis image (Debian slim) has no
# CA bundle of its own, so rclone is pointed at the copied one through SSL_CERT_FILE.
RCLONE_BINARY = "/usr/local/bin/rclone"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PATH = f"{TOOLS_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Kubernetes CronJob: five fields plus an explicit zone (an hourly schedule reads the
# same in any zone, but the controller's default zone is whatever kube-controller-manager has).
BACKUP_TIMEZONE = "Etc/UTC"

REDIS_PORT_NAME = "redis"
SENTINEL_PORT_NAME = "sentinel"
DATA_VOLUME = "data"
# Pod template annotation: a change to redis.conf or a start script rolls the pods.
CONFIG_HASH_ANNOTATION = "tikit.app/config-sha256"
# statefulset.kubernetes.io/pod-name: set by the StatefulSet controller on every pod.
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"

EXPORTER_CPU, EXPORTER_MEMORY = pods.REDIS_EXPORTER
SENTINEL_CPU, SENTINEL_MEMORY = pods.REDIS_SENTINEL
BACKUP_CPU, BACKUP_MEMORY = pods.REDIS_BACKUP
# exec probes: redis-cli PING (liveness), PING plus a replication check (readiness).  A
# large AOF replay answers LOADING, which liveness accepts; six misses is a minute.
# Liveness never looks at the role: a standby waiting for the sentinels (start-ha.sh, for as
# long as it takes) answers PONG and stays alive; readiness keeps it out of the PDB's count
# and the rollout's.  So no startupProbe: its bounded budget would restart a pod that waits
# on purpose, and LOADING already passes liveness however long the load takes.
LIVENESS = kube.ProbeTiming(period=10, timeout=5, failures=6)
READINESS = kube.ProbeTiming(period=10, timeout=5, failures=2)
# The data pods' grace period: the preStop handover (bounded by its deadline), then
# redis.conf's shutdown-timeout (replicas catch up), then the final RDB save and AOF fsync.
# The kubelet counts the preStop hook inside the grace period.  One formula everywhere:
# without Sentinel there is no hook, and the grace period is a ceiling, not a wait.
SHUTDOWN_SAVE_MARGIN_SECONDS = rconf.SHUTDOWN_SAVE_MARGIN_SECONDS
TERMINATION_GRACE_SECONDS = (
    rconf.HANDOVER_DEADLINE_SECONDS + rconf.SHUTDOWN_TIMEOUT_SECONDS + rconf.SHUTDOWN_SAVE_MARGIN_SECONDS
)
# Backup CronJob (docs/redis.md): a run that cannot start within the deadline is skipped
# (the next hour's takes over); one that runs past the active deadline is killed and counts
# as failed; runs never overlap (concurrencyPolicy Forbid).  The active deadline covers
# backup.sh's BGSAVE wait plus the upload.
BACKUP_UPLOAD_MARGIN_SECONDS = 60
BACKUP_STARTING_DEADLINE_SECONDS = 900
BACKUP_ACTIVE_DEADLINE_SECONDS = 1800
BACKUP_BACKOFF_LIMIT = 2
BACKUP_HISTORY_LIMIT = 3


@dataclass(frozen=True)
class RedisArgs:
    target: kube.Target
    redis: RedisSettings
    # settings.derived.redis_maxmemory_bytes: redis.maxmemoryPercent of the memory limit.
    maxmemory_bytes: int
    # The region's own object store (settings.object_store(region)): backups go to
    # s3://<bucket>/redis/<region>/ through its endpoint, with its read-write keys.
    store: ObjectStore
    # Credentials.redis_password: a Pulumi secret, the same in every region.
    password: pulumi.Input[str]
    # Credentials.redis_sentinel_password (where Sentinel runs): the sentinels' own password.
    sentinel_password: Optional[pulumi.Input[str]] = None


# --- pure helpers (tests and the docs use them) ------------------------------------------


def sentinel_enabled(r: RedisSettings) -> bool:
    return r.sentinels > 0


def client_host(namespace: str) -> str:
    return names.service_host(names.REDIS, namespace)


def redis_url(r: RedisSettings, namespace: str, password: str, sentinel_password: str = "") -> str:
    """REDIS_URL: with Sentinel the client asks the sentinels (with their own password) for
    the primary, and asks again after a failover; without, the client Service, which only
    ever selects ``redis-0``."""
    if sentinel_enabled(r):
        return rconf.redis_url(
            password, sentinels=rconf.sentinel_hosts(r, namespace), sentinel_password=sentinel_password
        )
    return rconf.redis_url(password, host=client_host(namespace))


def app_env(r: RedisSettings, namespace: str, password: str, sentinel_password: str = "") -> dict[str, str]:
    """The ``app-redis`` Secret: REDIS_URL, and the same target in parts for clients that
    cannot parse redis+sentinel:// (ioredis, node-redis).  Empty sentinels, master name and
    sentinel password mean no Sentinel: connect with REDIS_URL (docs/redis.md has the
    contract)."""
    sentinels = rconf.sentinel_hosts(r, namespace) if sentinel_enabled(r) else []
    return {
        names.REDIS_URL: redis_url(r, namespace, password, sentinel_password),
        names.REDIS_PASSWORD: password,
        names.REDIS_SENTINELS: rconf.sentinel_list(sentinels),
        names.REDIS_SENTINEL_MASTER: names.REDIS_MASTER_NAME if sentinels else "",
        names.REDIS_SENTINEL_PASSWORD: sentinel_password if sentinels else "",
    }


def client_selector(r: RedisSettings, target: kube.Target) -> dict[str, str]:
    """Without Sentinel nothing moves the primary: it is ordinal 0, so the Service selects
    that pod alone and never hands a write to a read-only replica.  With Sentinel writers
    find the primary through Sentinel (REDIS_URL); the Service spans every in-sync data pod
    and serves reads and tooling only."""
    sel = kube.selector(names.REDIS, target)
    if not sentinel_enabled(r):
        sel[POD_NAME_LABEL] = f"{names.REDIS}-0"
    return sel


def liveness_command(port: int = names.REDIS_PORT) -> list[str]:
    """Alive = answers at all.  LOADING (replaying a large AOF after a restart) and
    MASTERDOWN (a replica cut off from its primary) are alive: a restart would only start
    the load again or lose the replica's data; so is a standby waiting for the sentinels
    (it answers PONG).  (redis-cli exits 0 on error replies: the probes compare the reply
    text.)"""
    return ["sh", "-c", templates.render("redis/probe-liveness.sh", PORT=port)]


def readiness_command(port: int = names.REDIS_PORT) -> list[str]:
    """Ready = PING answers and the role is usable: a primary, or a replica whose link to
    its primary is up and not in the middle of a full sync.  A StatefulSet rollout waits for
    each replica to be in sync again before restarting the next pod, and the PDB counts a
    resyncing replica as unavailable."""
    return ["sh", "-c", templates.render("redis/probe-readiness.sh", PORT=port)]


def sentinel_liveness_command(port: int = names.REDIS_SENTINEL_PORT, live_dir: str = rconf.LIVE_DIR) -> list[str]:
    """Alive = the start script is still deciding what to monitor (it may wait for the data
    pods as long as that takes; a restart would only begin the wait again, after a growing
    back-off), or PING answers, authenticated with the sentinels' password from the env."""
    marker = shlex.quote(f"{live_dir}/{rconf.SENTINEL_DISCOVERING}")
    return ["sh", "-c", templates.render("redis/sentinel-probe-liveness.sh", PORT=port, DISCOVERING=marker)]


def sentinel_readiness_command(port: int = names.REDIS_SENTINEL_PORT, master: str = names.REDIS_MASTER_NAME) -> list[str]:
    """Ready = answers (authenticated) and names an address for the monitored primary."""
    return ["sh", "-c", templates.render("redis/sentinel-probe-readiness.sh", PORT=port, MASTER=master)]


def config_hash(data: Mapping[str, str], keys: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode() + b"\0" + data[key].encode() + b"\0")
    return digest.hexdigest()


def store_url(bucket: str) -> str:
    return f"s3://{bucket}"


def data_config(args: RedisArgs) -> dict[str, str]:
    r, t = args.redis, args.target
    store = store_url(args.store.bucket)
    config = {
        rconf.REDIS_CONF: rconf.redis_conf(r, maxmemory_bytes=args.maxmemory_bytes),
        START_KEY: rconf.redis_start_script(r, namespace=t.namespace),
        # Run by hand per docs/runbooks/redis-restore.md, from a pod that mounts this ConfigMap.
        RESTORE_KEY: rconf.restore_script(r, region=t.region, store=store, s3_endpoint=args.store.endpoint),
    }
    if sentinel_enabled(r):
        config[HANDOVER_KEY] = rconf.handover_script(r, namespace=t.namespace)
    return config


def sentinel_config(args: RedisArgs) -> dict[str, str]:
    r, ns = args.redis, args.target.namespace
    return {
        rconf.SENTINEL_CONF: rconf.sentinel_conf(
            r, primary_host=rconf.bootstrap_primary_host(ns), primary_port=names.REDIS_PORT
        ),
        START_KEY: rconf.sentinel_start_script(r, namespace=ns),
    }


def handover_hook() -> dict[str, Any]:
    """preStop of the data pods where Sentinel runs: the handover script, under timeout(1)
    with its deadline, so the hook never eats the shutdown's share of the grace period."""
    return {
        "preStop": {
            "exec": {
                "command": [
                    "timeout", str(rconf.HANDOVER_DEADLINE_SECONDS), "sh", f"{rconf.TEMPLATE_DIR}/{HANDOVER_KEY}",
                ]
            }
        }
    }


def backup_config(args: RedisArgs) -> dict[str, str]:
    r, t = args.redis, args.target
    return {
        BACKUP_KEY: rconf.backup_script(
            r,
            namespace=t.namespace,
            region=t.region,
            store=store_url(args.store.bucket),
            s3_endpoint=args.store.endpoint,
        )
    }


def _password_env(name: str = rconf.PASSWORD_ENV) -> dict[str, Any]:
    return kube.env_from_secret(name, names.REDIS_AUTH_SECRET, PASSWORD_KEY)


def _sentinel_password_env(r: RedisSettings) -> list[dict[str, Any]]:
    """SENTINEL_PASSWORD from the sentinels' own Secret, for whoever asks Sentinel (nothing
    where no Sentinel runs)."""
    if not sentinel_enabled(r):
        return []
    return [kube.env_from_secret(rconf.SENTINEL_PASSWORD_ENV, names.REDIS_SENTINEL_AUTH_SECRET, PASSWORD_KEY)]


def _pod_name_env() -> dict[str, Any]:
    return {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def _pod_basics() -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        # A Service named "redis" would otherwise inject REDIS_PORT=tcp://... into every pod,
        # which the scripts read as a port number.
        "enableServiceLinks": False,
        # Skip the recursive chown of a large volume when it already belongs to the group.
        "securityContext": {**kube.pod_security(run_as_user=REDIS_UID, fs_group=REDIS_UID), "fsGroupChangePolicy": "OnRootMismatch"},
    }


def _placement(r: RedisSettings, sel: Mapping[str, str]) -> dict[str, Any]:
    return {
        "affinity": kube.anti_affinity(sel, required_on_nodes=r.node_anti_affinity == "required"),
        "topologySpreadConstraints": kube.spread(sel),
    }


def _exec_probes(liveness: list[str], readiness: list[str]) -> dict[str, Any]:
    return {
        "livenessProbe": kube.exec_probe(
            liveness, period=LIVENESS.period, timeout=LIVENESS.timeout, failures=LIVENESS.failures
        ),
        "readinessProbe": kube.exec_probe(
            readiness, period=READINESS.period, timeout=READINESS.timeout, failures=READINESS.failures
        ),
    }


def data_pod_spec(args: RedisArgs) -> dict[str, Any]:
    r, t = args.redis, args.target
    sel = kube.selector(names.REDIS, t)
    redis = {
        "name": "redis",
        "image": r.image,
        "imagePullPolicy": "IfNotPresent",
        # The start script copies redis.conf to a writable place and execs redis-server with
        # the password from the env: ordinal 0 as primary where no Sentinel runs, a standby
        # that takes the role the sentinels agree on where Sentinel runs.
        "command": ["sh", f"{rconf.TEMPLATE_DIR}/{START_KEY}"],
        "env": [_password_env(), *_sentinel_password_env(r), _pod_name_env()],
        "ports": [{"name": REDIS_PORT_NAME, "containerPort": names.REDIS_PORT, "protocol": "TCP"}],
        **_exec_probes(liveness_command(), readiness_command()),
        **({"lifecycle": handover_hook()} if sentinel_enabled(r) else {}),
        "resources": kube.resources(r.cpu, r.memory),
        "securityContext": kube.container_security(),
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": rconf.DATA_DIR},
            {"name": "template", "mountPath": rconf.TEMPLATE_DIR, "readOnly": True},
            {"name": "live", "mountPath": rconf.LIVE_DIR},
        ],
    }
    # The exporter scrapes this pod's redis-server only (never a sentinel): the Redis
    # password, not the sentinels'.
    exporter = {
        "name": "exporter",
        "image": r.exporter_image,
        "imagePullPolicy": "IfNotPresent",
        "env": [
            {"name": "REDIS_ADDR", "value": f"redis://localhost:{names.REDIS_PORT}"},
            _password_env("REDIS_PASSWORD"),
        ],
        # The monitoring tier's PodMonitor scrapes this port by name.
        "ports": [{"name": names.METRICS_PORT_NAME, "containerPort": names.REDIS_EXPORTER_PORT, "protocol": "TCP"}],
        "livenessProbe": kube.http_probe(
            "/health", names.METRICS_PORT_NAME,
            period=LIVENESS.period, timeout=LIVENESS.timeout, failures=LIVENESS.failures,
        ),
        # Ready once its port accepts scrapes; liveness asks the process itself (/health
        # answers without touching Redis), so the two never share a check.
        "readinessProbe": kube.tcp_probe(
            names.METRICS_PORT_NAME,
            period=READINESS.period, timeout=READINESS.timeout, failures=READINESS.failures,
        ),
        "resources": kube.resources(EXPORTER_CPU, EXPORTER_MEMORY),
        "securityContext": kube.container_security(),
    }
    return {
        **_pod_basics(),
        # The handover, redis' shutdown-timeout and the final RDB save it makes on SIGTERM.
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        **_placement(r, sel),
        **kube.pool_placement(args.target, names.PRIORITY_DATA),
        "containers": [redis, exporter],
        "volumes": [
            {"name": "template", "configMap": {"name": CONFIG_MAP}},
            {"name": "live", "emptyDir": {}},
        ],
    }


def sentinel_pod_spec(args: RedisArgs) -> dict[str, Any]:
    r, t = args.redis, args.target
    sel = kube.selector(names.REDIS_SENTINEL, t)
    sentinel = {
        "name": "sentinel",
        "image": r.sentinel_image,
        "imagePullPolicy": "IfNotPresent",
        # Decides which data pod to monitor (the other sentinels, else the data pods), writes
        # a private, writable sentinel.conf (Sentinel rewrites it) with the passwords from the
        # env, execs redis-sentinel.
        "command": ["sh", f"{rconf.TEMPLATE_DIR}/{START_KEY}"],
        "env": [_password_env(), *_sentinel_password_env(r), _pod_name_env()],
        "ports": [{"name": SENTINEL_PORT_NAME, "containerPort": names.REDIS_SENTINEL_PORT, "protocol": "TCP"}],
        **_exec_probes(sentinel_liveness_command(), sentinel_readiness_command()),
        "resources": kube.resources(SENTINEL_CPU, SENTINEL_MEMORY),
        "securityContext": kube.container_security(),
        "volumeMounts": [
            {"name": "template", "mountPath": rconf.TEMPLATE_DIR, "readOnly": True},
            {"name": "live", "mountPath": rconf.LIVE_DIR},
        ],
    }
    return {
        **_pod_basics(),
        **_placement(r, sel),
        **kube.pool_placement(args.target, names.PRIORITY_DATA),
        "containers": [sentinel],
        "volumes": [
            {"name": "template", "configMap": {"name": SENTINEL_CONFIG_MAP}},
            {"name": "live", "emptyDir": {}},
        ],
    }


def backup_pod_spec(args: RedisArgs) -> dict[str, Any]:
    r, s3 = args.redis, args.store
    tools = {"name": "tools", "mountPath": TOOLS_DIR}
    init = {
        "name": "rclone",
        "image": r.rclone_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["cp", RCLONE_BINARY, CA_BUNDLE, f"{TOOLS_DIR}/"],
        "resources": kube.resources(BACKUP_CPU, BACKUP_MEMORY),
        "securityContext": kube.container_security(),
        "volumeMounts": [tools],
    }
    backup = {
        "name": "backup",
        "image": r.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", f"{BACKUP_DIR}/{BACKUP_KEY}"],
        "env": [
            _password_env("REDISCLI_AUTH"),
            *_sentinel_password_env(r),
            kube.env_from_secret("AWS_ACCESS_KEY_ID", s3.credentials_secret, s3.access_key_id_key),
            kube.env_from_secret("AWS_SECRET_ACCESS_KEY", s3.credentials_secret, s3.secret_access_key_key),
            {"name": "PATH", "value": PATH},
            {"name": "SSL_CERT_FILE", "value": f"{TOOLS_DIR}/{CA_BUNDLE.rsplit('/', 1)[-1]}"},
            {"name": "HOME", "value": TMP_DIR},
            {"name": "TMPDIR", "value": TMP_DIR},
        ],
        "resources": kube.resources(BACKUP_CPU, BACKUP_MEMORY),
        "securityContext": kube.container_security(),
        "volumeMounts": [
            {"name": "script", "mountPath": BACKUP_DIR, "readOnly": True},
            tools,
            {"name": "tmp", "mountPath": TMP_DIR},
        ],
    }
    return {
        **_pod_basics(),
        # Never: each retry is a new pod, which kube_job_status_failed (the backup alert) counts.
        "restartPolicy": "Never",
        # A batch job: below the serving tiers when the pool is full.
        **kube.pool_placement(args.target, names.PRIORITY_WORKERS),
        "initContainers": [init],
        "containers": [backup],
        "volumes": [
            {"name": "script", "configMap": {"name": BACKUP_CONFIG_MAP}},
            {"name": "tools", "emptyDir": {}},
            # The snapshot is streamed here before upload: never larger than the volume it
            # comes from.
            {"name": "tmp", "emptyDir": {"sizeLimit": r.storage_size}},
        ],
    }


def backup_cronjob_spec(args: RedisArgs, job_labels: Mapping[str, str]) -> dict[str, Any]:
    r = args.redis
    return {
        "schedule": r.backup_schedule,
        "timeZone": BACKUP_TIMEZONE,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": BACKUP_STARTING_DEADLINE_SECONDS,
        "successfulJobsHistoryLimit": BACKUP_HISTORY_LIMIT,
        "failedJobsHistoryLimit": BACKUP_HISTORY_LIMIT,
        "jobTemplate": {
            "metadata": {"labels": dict(job_labels)},
            "spec": {
                "backoffLimit": BACKUP_BACKOFF_LIMIT,
                "activeDeadlineSeconds": BACKUP_ACTIVE_DEADLINE_SECONDS,
                "template": {"metadata": {"labels": dict(job_labels)}, "spec": backup_pod_spec(args)},
            },
        },
    }


# --- the component ---------------------------------------------------------------------


class Redis(pulumi.ComponentResource):
    """Redis with AOF + RDB, replicas and Sentinel where the environment asks for HA, and an
    hourly backup to object storage."""

    auth_secret: k8s.core.v1.Secret
    sentinel_auth_secret: Optional[k8s.core.v1.Secret]
    url_secret: k8s.core.v1.Secret
    config_map: k8s.core.v1.ConfigMap
    statefulset: k8s.apps.v1.StatefulSet
    service: k8s.core.v1.Service
    headless_service: k8s.core.v1.Service
    pdb: k8s.policy.v1.PodDisruptionBudget
    sentinel_config_map: Optional[k8s.core.v1.ConfigMap]
    sentinel_statefulset: Optional[k8s.apps.v1.StatefulSet]
    sentinel_service: Optional[k8s.core.v1.Service]
    sentinel_pdb: Optional[k8s.policy.v1.PodDisruptionBudget]
    backup_config_map: k8s.core.v1.ConfigMap
    backup: k8s.batch.v1.CronJob
    url: str  # REDIS_URL without the password: for outputs and docs

    def __init__(self, name: str, args: RedisArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:data:Redis", name, None, opts)
        t, r = args.target, args.redis
        child = t.opts(self)
        version = kube.image_version(r.image)
        sentinel_version = kube.image_version(r.sentinel_image)
        ns = t.namespace

        # ---- Secrets --------------------------------------------------------------------
        password = pulumi.Output.secret(pulumi.Output.from_input(args.password))
        self.auth_secret = k8s.core.v1.Secret(
            t.rname("redis-auth"),
            metadata=kube.metadata(names.REDIS_AUTH_SECRET, COMPONENT, t, app=names.REDIS),
            type="Opaque",
            string_data={PASSWORD_KEY: password},
            opts=child,
        )
        # The sentinels' own password, where they run: the sentinels and every client that
        # asks them (data pods, backup job, KEDA, the apps through app-redis) read it.
        self.sentinel_auth_secret = None
        sentinel_password = pulumi.Output.secret("")
        auth_secrets: list[pulumi.Resource] = [self.auth_secret]
        if sentinel_enabled(r):
            if args.sentinel_password is None:
                raise ValueError("redis.sentinels > 0 needs a sentinel password (Credentials.redis_sentinel_password)")
            sentinel_password = pulumi.Output.secret(pulumi.Output.from_input(args.sentinel_password))
            self.sentinel_auth_secret = k8s.core.v1.Secret(
                t.rname("redis-sentinel-auth"),
                metadata=kube.metadata(names.REDIS_SENTINEL_AUTH_SECRET, SENTINEL_COMPONENT, t, app=names.REDIS_SENTINEL),
                type="Opaque",
                string_data={PASSWORD_KEY: sentinel_password},
                opts=child,
            )
            auth_secrets.append(self.sentinel_auth_secret)
        # The URL and the passwords are secret; where the sentinels are and the master's name
        # are not, and stay readable in previews.
        public = app_env(r, ns, "")
        secret_parts = {names.REDIS_PASSWORD: password}
        if sentinel_enabled(r):
            secret_parts[names.REDIS_SENTINEL_PASSWORD] = sentinel_password
        self.url_secret = k8s.core.v1.Secret(
            t.rname("app-redis"),
            metadata=kube.metadata(names.APP_REDIS_SECRET, COMPONENT, t, app=names.REDIS),
            type="Opaque",
            string_data={
                **public,
                names.REDIS_URL: pulumi.Output.secret(
                    pulumi.Output.all(password, sentinel_password).apply(lambda pws: redis_url(r, ns, pws[0], pws[1]))
                ),
                **secret_parts,
            },
            opts=child,
        )
        self.url = redis_url(r, ns, "")

        # ---- data pods ------------------------------------------------------------------
        config = data_config(args)
        self.config_map = k8s.core.v1.ConfigMap(
            t.rname("redis-config"),
            metadata=kube.metadata(CONFIG_MAP, COMPONENT, t, app=names.REDIS),
            data=config,
            opts=child,
        )
        sel = kube.selector(names.REDIS, t)
        pod_labels = kube.labels(names.REDIS, COMPONENT, t, version)
        self.headless_service = k8s.core.v1.Service(
            t.rname("redis-headless"),
            metadata=kube.metadata(names.REDIS_HEADLESS, COMPONENT, t, app=names.REDIS),
            spec={
                "clusterIP": "None",
                # Replicas and sentinels resolve redis-N.redis-headless even while a pod is
                # not ready (loading, resyncing): the names must exist for replication itself.
                "publishNotReadyAddresses": True,
                "selector": sel,
                "ports": [{"name": REDIS_PORT_NAME, "port": names.REDIS_PORT, "targetPort": REDIS_PORT_NAME, "protocol": "TCP"}],
            },
            opts=child,
        )
        self.service = k8s.core.v1.Service(
            t.rname("redis"),
            metadata=kube.metadata(names.REDIS, COMPONENT, t),
            spec={
                "type": "ClusterIP",
                "selector": client_selector(r, t),
                "ports": [{"name": REDIS_PORT_NAME, "port": names.REDIS_PORT, "targetPort": REDIS_PORT_NAME, "protocol": "TCP"}],
            },
            opts=child,
        )
        claim: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": r.storage_size}},
        }
        if r.storage_class:
            claim["storageClassName"] = r.storage_class
        self.statefulset = kube.workload(
            k8s.apps.v1.StatefulSet,
            t.rname("redis"),
            metadata=kube.metadata(names.REDIS, COMPONENT, t, version=version),
            spec={
                "serviceName": names.REDIS_HEADLESS,
                "replicas": r.replicas,
                # Parallel: after a failover the primary may be any ordinal, and a replica
                # is only ready once synced with it; ordered start-up could wait forever
                # for redis-0 to sync with a primary that has not been started yet.
                # (Rolling updates stay one pod at a time, highest ordinal first.)
                "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "RollingUpdate"},
                # The volumes outlive the StatefulSet and scale-downs: they hold the queue.
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
                "selector": {"matchLabels": sel},
                "template": {
                    "metadata": {
                        "labels": pod_labels,
                        "annotations": {
                            CONFIG_HASH_ANNOTATION: config_hash(
                                config, tuple(k for k in (rconf.REDIS_CONF, START_KEY, HANDOVER_KEY) if k in config)
                            ),
                            # Consolidation moving a data pod costs a failover or a full resync.
                            kube.DO_NOT_DISRUPT: "true",
                        },
                    },
                    "spec": data_pod_spec(args),
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": DATA_VOLUME, "labels": kube.labels(names.REDIS, COMPONENT, t)},
                        "spec": claim,
                    }
                ],
            },
            opts=t.opts(self, depends_on=[self.config_map, *auth_secrets, self.headless_service]),
        )
        # maxUnavailable 1, as everywhere: a drain can always evict one pod, and never a
        # second while a replica is still resyncing (not ready).
        self.pdb = kube.pdb(t.rname("redis"), names.REDIS, COMPONENT, t, sel, child)

        # ---- Sentinel (where the environment asks for automatic failover) ---------------
        self.sentinel_config_map = self.sentinel_statefulset = self.sentinel_service = self.sentinel_pdb = None
        if sentinel_enabled(r):
            s_config = sentinel_config(args)
            self.sentinel_config_map = k8s.core.v1.ConfigMap(
                t.rname("redis-sentinel-config"),
                metadata=kube.metadata(SENTINEL_CONFIG_MAP, SENTINEL_COMPONENT, t, app=names.REDIS_SENTINEL),
                data=s_config,
                opts=child,
            )
            s_sel = kube.selector(names.REDIS_SENTINEL, t)
            # Headless and governing: each sentinel announces redis-sentinel-N.redis-sentinel
            # (conf.redis.sentinel_hosts), which REDIS_URL and the HA scripts list; KEDA and
            # the backup job ask the Service name, which resolves to every sentinel.
            self.sentinel_service = k8s.core.v1.Service(
                t.rname("redis-sentinel"),
                metadata=kube.metadata(names.REDIS_SENTINEL, SENTINEL_COMPONENT, t),
                spec={
                    "clusterIP": "None",
                    # Peers must resolve a restarting sentinel's name, or it lingers in their
                    # tables as a second, dead entry.
                    "publishNotReadyAddresses": True,
                    "selector": s_sel,
                    "ports": [
                        {
                            "name": SENTINEL_PORT_NAME,
                            "port": names.REDIS_SENTINEL_PORT,
                            "targetPort": SENTINEL_PORT_NAME,
                            "protocol": "TCP",
                        }
                    ],
                },
                opts=child,
            )
            self.sentinel_statefulset = kube.workload(
                k8s.apps.v1.StatefulSet,
                t.rname("redis-sentinel"),
                metadata=kube.metadata(names.REDIS_SENTINEL, SENTINEL_COMPONENT, t, version=sentinel_version),
                spec={
                    "serviceName": names.REDIS_SENTINEL,
                    "replicas": r.sentinels,
                    "podManagementPolicy": "Parallel",
                    "updateStrategy": {"type": "RollingUpdate"},
                    "selector": {"matchLabels": s_sel},
                    "template": {
                        "metadata": {
                            "labels": kube.labels(names.REDIS_SENTINEL, SENTINEL_COMPONENT, t, sentinel_version),
                            "annotations": {
                                CONFIG_HASH_ANNOTATION: config_hash(s_config, (rconf.SENTINEL_CONF, START_KEY)),
                                kube.DO_NOT_DISRUPT: "true",
                            },
                        },
                        "spec": sentinel_pod_spec(args),
                    },
                },
                opts=t.opts(self, depends_on=[self.sentinel_config_map, *auth_secrets, self.sentinel_service]),
            )
            # One sentinel at a time: the other two still make the quorum of 2.
            self.sentinel_pdb = kube.pdb(
                t.rname("redis-sentinel"), names.REDIS_SENTINEL, SENTINEL_COMPONENT, t, s_sel, child
            )

        # ---- hourly backup --------------------------------------------------------------
        self.backup_config_map = k8s.core.v1.ConfigMap(
            t.rname("redis-backup-script"),
            metadata=kube.metadata(BACKUP_CONFIG_MAP, BACKUP_COMPONENT, t, app=names.REDIS_BACKUP),
            data=backup_config(args),
            opts=child,
        )
        # app.kubernetes.io/name redis-backup: the NetworkPolicy lets exactly these pods
        # reach Redis and the object store.
        job_labels = kube.labels(names.REDIS_BACKUP, BACKUP_COMPONENT, t, kube.image_version(r.image))
        self.backup = kube.workload(
            k8s.batch.v1.CronJob,
            t.rname("redis-backup"),
            metadata=kube.metadata(names.REDIS_BACKUP, BACKUP_COMPONENT, t),
            spec=backup_cronjob_spec(args, job_labels),
            opts=t.opts(self, depends_on=[self.backup_config_map, *auth_secrets]),
        )

        self.register_outputs({"url": self.url, "statefulset": names.REDIS})
