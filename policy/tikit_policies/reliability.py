"""Reliability: high availability in prod, PDBs that never block drains, one autoscaler per
workload, the right cron dialect per resource, PostgreSQL backups with a recovery window in
another region, the London replica cluster, Redis persistence and PgBouncer's pool mode."""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from . import annotations as ann
from .base import ADVISORY, Report, choice, integer, resource_policy, schema, stack_policy, strings
from .model import CNPG_GROUP, BARMAN_PLUGIN, Obj, PgCluster, Stack, Workload, command_line, container_name, containers, pod_spec, spreads_over_zones
from .parse import (
    FIVE_FIELDS,
    SIX_FIELDS,
    UNKNOWN,
    as_dict,
    as_list,
    cron_problem,
    get,
    ini_sections,
    int_or_percent,
    libpq_params,
    redis_directives,
    retention_days,
)

AREA = "reliability"
Say = Callable[[str], None]
HA_KINDS = ("Deployment", "StatefulSet")
ENVIRONMENTS = ["dev", "staging", "prod"]


def _applies(stack: Stack, environments: list[str]) -> bool:
    """True when the stack's environment is listed (an unlabelled stack counts as prod)."""
    return (stack.environment or "prod") in environments


def _ha_workloads(stack: Stack, cfg: dict) -> list[Workload]:
    return [w for w in stack.workloads if w.kind in HA_KINDS and w.name not in cfg["exemptWorkloads"]]


def _envoy_proxies(stack: Stack) -> list[tuple[Obj, dict]]:
    """Envoy Gateway's data plane: (EnvoyProxy, its envoyDeployment spec) - the front door."""
    return [
        (o, as_dict(get(o.spec, "provider", "kubernetes")))
        for o in stack.kind("EnvoyProxy", "gateway.envoyproxy.io")
        if get(o.spec, "provider", "type", default="Kubernetes") == "Kubernetes"
    ]


def _envoy_min_replicas(k8s: dict) -> Optional[int]:
    hpa = as_dict(k8s.get("envoyHpa"))
    if hpa:
        n = hpa.get("minReplicas", 1)
    else:
        n = get(k8s, "envoyDeployment", "replicas", default=1)
    return n if isinstance(n, int) else (int(n) if isinstance(n, float) and n.is_integer() else None)


ENV_PROD = strings(["prod"], "Environments (tikit.app/environment) the policy applies to.", enum=ENVIRONMENTS)
ENV_STAGING_PROD = strings(["staging", "prod"], "Environments (tikit.app/environment) the policy applies to.", enum=ENVIRONMENTS)
EXEMPT = strings(
    ["workers", "capacity-buffer"],
    "Workloads exempt from the prod HA rules: queue consumers on spot capacity, whose loss delays jobs but drops no "
    "request, and the warm headroom's placeholder pods, which hold no state and serve nothing.",
)


# ---- prod: replicas, PDB, zone spread ---------------------------------------------------------


def _prod_replicas(stack: Stack, cfg: dict, report: Report) -> None:
    if not _applies(stack, cfg["environments"]):
        return
    need = cfg["minReplicas"]
    for w in _ha_workloads(stack, cfg):
        m = w.min_replicas
        if m is not None and m < need:
            report(
                f"{w.obj.ref}: runs as few as {m} replica(s) ({w.replica_source()}); {stack.environment or 'prod'} needs at "
                f"least {need} so one pod can fail or be drained; raise the tier's minimum replicas in the preset",
                w.obj,
            )
    for proxy, k8s in _envoy_proxies(stack):
        m = _envoy_min_replicas(k8s)
        if m is not None and m < need:
            report(
                f"{proxy.ref}: runs {m} Envoy replica(s) (envoyDeployment.replicas / envoyHpa.minReplicas); the gateway "
                f"needs at least {need} in {stack.environment or 'prod'}",
                proxy,
            )
    for c in stack.clusters:
        if c.instances < need:
            report(
                f"{c.obj.ref}: has {c.instances} instance(s); needs at least {need} (a primary and a standby to fail over to); "
                "raise postgres.instances",
                c.obj,
            )


prod_min_replicas = stack_policy(
    name="prod-min-replicas",
    description="In prod every Deployment, StatefulSet, gateway data plane and PostgreSQL cluster runs at least 2 replicas at its minimum.",
    check=_prod_replicas,
    remediation="Raise the minimum replicas (autoscaler minimum or spec.replicas) of the tier in the prod preset.",
    area=AREA,
    config=schema(environments=ENV_PROD, minReplicas=integer(2, "Fewest replicas allowed.", minimum=1), exemptWorkloads=EXEMPT),
)


def _prod_pdb(stack: Stack, cfg: dict, report: Report) -> None:
    if not _applies(stack, cfg["environments"]):
        return
    for w in _ha_workloads(stack, cfg):
        if not w.pdbs:
            report(f"{w.obj.ref}: has no PodDisruptionBudget; add one with kube.pdb() (maxUnavailable 1)", w.obj)
            continue
        m, pdb = w.min_replicas or 0, w.pdbs[0]
        if m < 2:
            continue
        if pdb.max_unavailable is not None:
            allowed = int_or_percent(pdb.max_unavailable, m, round_up=True)
            budget = f"maxUnavailable {pdb.max_unavailable}"
        elif pdb.min_available is not None:
            need = int_or_percent(pdb.min_available, m, round_up=True)
            allowed, budget = (None if need is None else m - need), f"minAvailable {pdb.min_available}"
        else:
            allowed, budget = None, ""
        if allowed is not None and allowed > MAX_VOLUNTARY_DISRUPTIONS:
            report(
                f"{pdb.obj.ref}: {budget} lets one drain evict {min(allowed, m)} of the {m} pods of {w.obj.kind}/{w.name} at once "
                f"(a Redis or Sentinel majority, every PgBouncer); prod keeps maxUnavailable {MAX_VOLUNTARY_DISRUPTIONS}",
                pdb.obj,
            )
    for proxy, k8s in _envoy_proxies(stack):
        if not as_dict(k8s.get("envoyPDB")):
            report(f"{proxy.ref}: sets no envoyPDB, so a drain may evict every Envoy pod at once; add envoyPDB maxUnavailable 1", proxy)
    for c in stack.clusters:
        if not c.enable_pdb:
            report(f"{c.obj.ref}: sets enablePDB: false; prod clusters keep CNPG's PodDisruptionBudgets", c.obj)


# Pods of one tier a voluntary disruption (a drain, a rollout) may take at once in prod.
MAX_VOLUNTARY_DISRUPTIONS = 1

prod_pdb = stack_policy(
    name="prod-pdb",
    description="In prod every Deployment, StatefulSet and gateway data plane has a PodDisruptionBudget that lets a drain take at most one of its pods at a time, and CNPG clusters keep theirs.",
    check=_prod_pdb,
    remediation="Create a PodDisruptionBudget with kube.pdb() next to the workload; leave CNPG's enablePDB at true in prod.",
    area=AREA,
    config=schema(environments=ENV_PROD, exemptWorkloads=EXEMPT),
)


def _prod_rollout(stack: Stack, cfg: dict, report: Report) -> None:
    if not _applies(stack, cfg["environments"]):
        return
    for w in _ha_workloads(stack, cfg):
        m = w.min_replicas or 0
        if m < 2:
            continue
        if w.kind == "Deployment":
            strategy = as_dict(w.obj.spec.get("strategy"))
            if strategy.get("type") == "Recreate":
                report(f"{w.obj.ref}: strategy Recreate stops every pod before the new ones start: each rollout is an outage; use RollingUpdate", w.obj)
                continue
            # Kubernetes rounds a Deployment's maxUnavailable down; the default is 25 %.
            value = get(strategy, "rollingUpdate", "maxUnavailable")
            allowed = int_or_percent("25%" if value is None else value, m, round_up=False)
        elif w.kind == "StatefulSet":
            value = get(as_dict(w.obj.spec.get("updateStrategy")), "rollingUpdate", "maxUnavailable")
            allowed = int_or_percent(1 if value is None else value, m, round_up=False)
        else:
            continue
        if allowed is not None and allowed > MAX_VOLUNTARY_DISRUPTIONS:
            report(
                f"{w.obj.ref}: a rollout may take {min(allowed, m)} of its {m} pods down at once (rollingUpdate.maxUnavailable); "
                f"prod rolls at most {MAX_VOLUNTARY_DISRUPTIONS} at a time (surge instead)",
                w.obj,
            )


prod_rollout = stack_policy(
    name="prod-rollout",
    description="In prod a rollout takes at most one pod of a tier down at a time: no Recreate strategy, and rollingUpdate.maxUnavailable of at most one pod at minimum replicas.",
    check=_prod_rollout,
    remediation="Roll with maxUnavailable 0 or 1 and maxSurge instead (kube.workload() does); StatefulSets one pod at a time.",
    area=AREA,
    config=schema(environments=ENV_PROD, exemptWorkloads=EXEMPT),
)


def _prod_spread(stack: Stack, cfg: dict, report: Report) -> None:
    if not _applies(stack, cfg["environments"]):
        return
    for w in _ha_workloads(stack, cfg):
        if not spreads_over_zones(w.pod_spec):
            report(
                f"{w.obj.ref}: pods are not spread over zones (topology.kubernetes.io/zone); add kube.spread(selector) "
                "as topologySpreadConstraints",
                w.obj,
            )
    for proxy, k8s in _envoy_proxies(stack):
        if not spreads_over_zones(as_dict(get(k8s, "envoyDeployment", "pod"))):
            report(f"{proxy.ref}: Envoy pods are not spread over zones; add envoyDeployment.pod.topologySpreadConstraints", proxy)
    for c in stack.clusters:
        if not spreads_over_zones(c.obj.spec) and get(c.obj.spec, "affinity", "topologyKey") != "topology.kubernetes.io/zone":
            report(
                f"{c.obj.ref}: instances are not spread over zones; set spec.topologySpreadConstraints on "
                "topology.kubernetes.io/zone or affinity.topologyKey to it",
                c.obj,
            )


prod_zone_spread = stack_policy(
    name="prod-zone-spread",
    description="In prod the replicas of every Deployment, StatefulSet, gateway data plane and PostgreSQL cluster spread over zones.",
    check=_prod_spread,
    remediation="Add kube.spread(selector) (zone and node topology spread) to the pod template, or the cluster's topologySpreadConstraints.",
    area=AREA,
    config=schema(environments=ENV_PROD, exemptWorkloads=EXEMPT),
)


# ---- PDBs never block a drain ----------------------------------------------------------------


def _pdb_drain(stack: Stack, _cfg: dict, report: Report) -> None:
    for w in stack.workloads:
        if len(w.pdbs) > 1:
            names = ", ".join(p.obj.name or "?" for p in w.pdbs)
            report(
                f"{w.obj.ref}: pods are selected by {len(w.pdbs)} PodDisruptionBudgets ({names}); the eviction API refuses "
                "pods with more than one, so no drain can move them; keep exactly one",
                w.obj,
            )
            continue
        m = w.min_replicas
        if not w.pdbs or not m:
            continue
        pdb = w.pdbs[0]
        if pdb.max_unavailable is not None:
            allowed = int_or_percent(pdb.max_unavailable, m, round_up=True)
            if allowed is not None and allowed < 1:
                report(
                    f"{pdb.obj.ref}: maxUnavailable {pdb.max_unavailable} lets no pod of {w.obj.kind}/{w.name} ({m} at minimum) "
                    "be evicted, so node drains hang; use maxUnavailable 1",
                    pdb.obj,
                )
        elif pdb.min_available is not None and not w.autoscaler:  # autoscaled: see autoscaler-bounds
            need = int_or_percent(pdb.min_available, m, round_up=True)
            if need is not None and need >= m:
                report(
                    f"{pdb.obj.ref}: minAvailable {pdb.min_available} >= {m} replica(s) of {w.obj.kind}/{w.name} "
                    f"({w.replica_source()}): no pod may ever be evicted and node drains hang; use maxUnavailable 1",
                    pdb.obj,
                )
    for c in stack.clusters:
        window = get(c.obj.spec, "nodeMaintenanceWindow", "inProgress") is True
        if c.instances == 1 and c.enable_pdb and not window:
            report(
                f"{c.obj.ref}: 1 instance with enablePDB (default true): CNPG's primary PDB (minAvailable 1) blocks every "
                "drain of its node; set enablePDB: false for single-instance clusters",
                c.obj,
            )


pdb_allows_drain = stack_policy(
    name="pdb-allows-drain",
    description="A PodDisruptionBudget never blocks a node drain when its workload runs at its minimum replicas.",
    check=_pdb_drain,
    remediation="Use maxUnavailable: 1 (kube.pdb()); one PDB per workload; enablePDB: false on single-instance CNPG clusters.",
    area=AREA,
)


# ---- autoscalers ------------------------------------------------------------------------------


def _one_autoscaler(stack: Stack, _cfg: dict, report: Report) -> None:
    targets: dict[tuple, list] = {}
    for a in stack.autoscalers:
        kind, name = a.target
        targets.setdefault((a.obj.region, a.obj.namespace, kind, name), []).append(a)
        if stack.workload(a.obj.region, a.obj.namespace, kind, name) is None:
            report(
                f"{a.obj.ref}: scales {kind}/{name}, which this stack does not declare in namespace {a.obj.namespace}; "
                "fix scaleTargetRef",
                a.obj,
            )
    for (region, _ns, kind, name), found in sorted(targets.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        if len(found) > 1:
            which = ", ".join(f"{a.obj.kind}/{a.obj.name}" for a in found)
            report(
                f"{kind}/{name} in {region}: {len(found)} autoscalers ({which}) fight over its replicas; keep one KEDA "
                "ScaledObject (it owns the HPA)",
                found[1].obj,
            )


one_autoscaler = stack_policy(
    name="one-autoscaler-per-workload",
    description="Each workload has at most one autoscaler (one KEDA ScaledObject owning the HPA), and it targets a declared workload.",
    check=_one_autoscaler,
    remediation="Merge the triggers into the workload's single ScaledObject; point scaleTargetRef at a Deployment of this stack.",
    area=AREA,
)


def _keda_counts(obj: Obj, _cfg: dict, say: Say) -> None:
    if not (obj.kind == "ScaledObject" and obj.group == "keda.sh"):
        return
    spec = obj.spec
    if "minReplicaCount" not in spec:
        say(f"{obj.ref}: minReplicaCount is not set; KEDA then defaults it to 0 and scales the workload away; set it from settings")
    if "maxReplicaCount" not in spec:
        say(f"{obj.ref}: maxReplicaCount is not set; KEDA then defaults it to 100; set it from settings")
    triggers = [t for t in as_list(spec.get("triggers")) if isinstance(t, dict)]
    if spec.get("minReplicaCount") in (0, 0.0) and triggers and all(t.get("type") in ("cpu", "memory") for t in triggers):
        say(f"{obj.ref}: minReplicaCount 0 with only cpu/memory triggers: they cannot wake a workload from zero; add an event trigger or raise the minimum")


keda_replica_counts = resource_policy(
    name="keda-replica-counts",
    description="Every KEDA ScaledObject sets minReplicaCount and maxReplicaCount explicitly (KEDA's defaults are 0 and 100).",
    check=_keda_counts,
    remediation="Set minReplicaCount and maxReplicaCount from the tier's settings (autoscaling.scaled_object_spec does).",
    area=AREA,
)


def _replicas_unset(stack: Stack, _cfg: dict, report: Report) -> None:
    for w in stack.workloads:
        if w.autoscalers and "replicas" in w.obj.spec:
            report(
                f"{w.obj.ref}: sets spec.replicas {w.obj.spec['replicas']} although {w.replica_source() if w.autoscaler else 'an autoscaler'} "
                "owns the count; every `pulumi up` would reset the live replicas; drop spec.replicas",
                w.obj,
            )


autoscaled_replicas_unset = stack_policy(
    name="autoscaled-replicas-unset",
    description="An autoscaled workload leaves spec.replicas unset, so deployments do not reset the live replica count.",
    check=_replicas_unset,
    remediation="Remove spec.replicas from Deployments that a ScaledObject or HPA scales.",
    area=AREA,
    level=ADVISORY,
)


# ---- cron dialects ------------------------------------------------------------------------------


def _timezone_problem(tz: object) -> Optional[str]:
    if not isinstance(tz, str) or not tz:
        return "is not set"
    try:
        zoneinfo.ZoneInfo(tz)
        return None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        if not zoneinfo.available_timezones():  # no tz database on this machine: check the shape only
            return None if re.fullmatch(r"[A-Za-z_]+(/[A-Za-z0-9_+-]+)+|UTC", tz) else f"'{tz}' is not an IANA time zone"
        return f"'{tz}' is not an IANA time zone"


def _cron(obj: Obj, _cfg: dict, say: Say) -> None:
    if obj.is_("ScheduledBackup", CNPG_GROUP):
        problem = cron_problem(obj.spec.get("schedule"), SIX_FIELDS)
        if problem:
            say(
                f"{obj.ref}: schedule '{obj.spec.get('schedule')}' {problem}; CNPG reads six fields, seconds first "
                "(a five-field value is accepted with a warning and then runs hourly): e.g. '0 0 2 * * *'"
            )
    elif obj.kind == "ScaledObject" and obj.group == "keda.sh":
        for i, t in enumerate(as_list(obj.spec.get("triggers"))):
            if get(t, "type") != "cron":
                continue
            for key in ("start", "end"):
                value = get(t, "metadata", key)
                problem = cron_problem(value, FIVE_FIELDS)
                if problem:
                    say(f"{obj.ref}: cron trigger {i} {key} '{value}' {problem}; KEDA takes five fields, e.g. '0 18 * * *'")
            tz_problem = _timezone_problem(get(t, "metadata", "timezone"))
            if tz_problem:
                say(f"{obj.ref}: cron trigger {i} timezone {tz_problem}; set an IANA zone such as 'Africa/Lagos'")
    elif obj.kind == "CronJob":
        problem = cron_problem(obj.spec.get("schedule"), FIVE_FIELDS, macros=True)
        if problem:
            say(f"{obj.ref}: schedule '{obj.spec.get('schedule')}' {problem}; CronJobs take five fields, e.g. '0 * * * *'")
        if "timeZone" in obj.spec:
            tz_problem = _timezone_problem(obj.spec.get("timeZone"))
            if tz_problem:
                say(f"{obj.ref}: spec.timeZone {tz_problem}; use an IANA zone such as 'Etc/UTC'")
    elif obj.kind == "Schedule" and obj.group == "chaos-mesh.org":
        schedule = obj.spec.get("schedule")
        if not (isinstance(schedule, str) and schedule.startswith("@every ")):
            five, six = cron_problem(schedule, FIVE_FIELDS, macros=True), cron_problem(schedule, SIX_FIELDS)
            if five and six:
                say(f"{obj.ref}: schedule '{schedule}' {five}; Chaos Mesh takes five fields (or six with seconds, or @every)")


cron_dialect = resource_policy(
    name="cron-dialect",
    description="Cron expressions fit their resource: CNPG ScheduledBackup six fields (seconds first), KEDA cron five fields plus an IANA time zone, CronJob five fields.",
    check=_cron,
    remediation="ScheduledBackup: 'sec min hour dom mon dow'; KEDA and CronJob: 'min hour dom mon dow' (time zone in its own field).",
    area=AREA,
)


# ---- PostgreSQL backups ----------------------------------------------------------------------------


def _store_path(store: Optional[Obj]) -> Optional[str]:
    path = get(store.spec if store else {}, "configuration", "destinationPath")
    return path.rstrip("/") if isinstance(path, str) else None


def _plugin_server_name(c: PgCluster) -> str:
    for p in as_list(c.obj.spec.get("plugins")):
        if get(p, "name") == BARMAN_PLUGIN and get(p, "isWALArchiver") is True:
            name = get(p, "parameters", "serverName")
            if isinstance(name, str):
                return name
    return c.name


def _backups(stack: Stack, _cfg: dict, report: Report) -> None:
    targets: dict[tuple[str, str], list[PgCluster]] = {}
    for c in stack.clusters:
        where = (c.obj.region, c.obj.namespace)
        if c.legacy_object_store is not None:
            report(
                f"{c.obj.ref}: uses spec.backup.barmanObjectStore, deprecated and removed in CNPG 1.31; archive through the "
                "Barman Cloud plugin (an ObjectStore plus spec.plugins isWALArchiver)",
                c.obj,
            )
        stores = c.wal_archiver_stores()
        if not stores:
            report(
                f"{c.obj.ref}: archives no WAL (no {BARMAN_PLUGIN} plugin with isWALArchiver: true): point-in-time "
                "recovery is impossible; add the plugin with an ObjectStore",
                c.obj,
            )
        for store_name in stores:
            store = stack.find("ObjectStore", *where, store_name, group="barmancloud.cnpg.io")
            if store is None:
                report(f"{c.obj.ref}: archives WAL to ObjectStore/{store_name}, which is not declared next to it; declare it", c.obj)
                continue
            path = _store_path(store)
            if path:
                targets.setdefault((path, _plugin_server_name(c)), []).append(c)
        if c.is_replica:
            continue
        schedules = [
            b
            for b in stack.kind("ScheduledBackup", CNPG_GROUP)
            if (b.region, b.namespace) == where and get(b.spec, "cluster", "name") == c.name and b.spec.get("suspend") is not True
        ]
        if not schedules:
            report(f"{c.obj.ref}: no active ScheduledBackup targets it: no base backups, so no restore; add a daily one", c.obj)
        for b in schedules:
            method = b.spec.get("method", "barmanObjectStore")
            if stores and method == "barmanObjectStore":
                report(
                    f"{b.ref}: method defaults to barmanObjectStore but {c.name} archives through the plugin; set "
                    f"method: plugin and pluginConfiguration.name: {BARMAN_PLUGIN}",
                    b,
                )
    for (path, server), clusters in sorted(targets.items()):
        if len(clusters) > 1:
            which = ", ".join(c.obj.ref for c in clusters)
            report(
                f"{which} archive to the same {path} with serverName {server}: their WAL and backups would overwrite "
                "each other; give each cluster its own bucket or serverName",
                clusters[1].obj,
            )
    for r in stack.redis_servers():
        w = r.workload
        app = w.pod_labels.get("app.kubernetes.io/name")
        jobs = [
            j
            for j in stack.kind("CronJob")
            if (j.region, j.namespace) == (w.region, w.obj.namespace)
            and (j.labels.get("app.kubernetes.io/name") == app or str(j.name or "").startswith(w.name))
            and j.spec.get("suspend") is not True
        ]
        if not jobs:
            report(f"{w.obj.ref}: runs Redis but no active backup CronJob copies its snapshots to object storage; add the hourly backup", w.obj)


backups_enabled = stack_policy(
    name="backups-enabled",
    description="Backups are on: every PostgreSQL cluster archives WAL through the Barman Cloud plugin, primaries have an active ScheduledBackup, no two clusters share a backup path, and Redis has a backup CronJob.",
    check=_backups,
    remediation="Give each Cluster an ObjectStore and the barman-cloud plugin (isWALArchiver), a daily ScheduledBackup (method plugin), and Redis its backup CronJob.",
    area=AREA,
)


def _retention(stack: Stack, cfg: dict, report: Report) -> None:
    if not _applies(stack, cfg["environments"]):
        return
    need = cfg["minDays"]
    for c in stack.clusters:
        policies: list[tuple[Obj, object]] = []
        for store_name in c.wal_archiver_stores():
            store = stack.find("ObjectStore", c.obj.region, c.obj.namespace, store_name, group="barmancloud.cnpg.io")
            if store is not None and "retentionPolicy" in store.spec:
                policies.append((store, store.spec["retentionPolicy"]))
        if get(c.obj.spec, "backup", "retentionPolicy") is not None:
            policies.append((c.obj, get(c.obj.spec, "backup", "retentionPolicy")))
        for holder, value in policies:
            days = retention_days(value)
            if value is UNKNOWN:
                continue
            if days is None:
                report(f"{holder.ref}: retentionPolicy '{value}' is not '<n>d', '<n>w' or '<n>m'; use e.g. '7d'", holder)
            elif days < need:
                report(
                    f"{holder.ref}: retentionPolicy '{value}' keeps {days} day(s) of backups for {c.name}; "
                    f"{stack.environment or 'prod'} needs a recovery window of at least {need} days; raise postgres.retention",
                    holder,
                )


backup_retention = stack_policy(
    name="backup-retention",
    description="PostgreSQL backups keep a recovery window of at least 7 days in staging and prod.",
    check=_retention,
    remediation="Set postgres.retention to at least '7d' in the staging and prod presets.",
    area=AREA,
    config=schema(environments=ENV_STAGING_PROD, minDays=integer(7, "Shortest recovery window, in days.", minimum=1)),
)


# ---- object stores: who writes where, and with which keys ---------------------------------------


def store_location(endpoint: Any) -> Optional[str]:
    """Where an S3 endpoint keeps its buckets: the AWS region of an AWS endpoint
    (s3.<region>.amazonaws.com in any of the forms _AWS_S3_HOST knows), else the host[:port] of
    any other S3-compatible service (two hosts count as two places)."""
    if not isinstance(endpoint, str) or not endpoint:
        return None
    url = urlsplit(endpoint.strip())
    host = (url.hostname or "").lower().rstrip(".")
    if not host:
        return None
    m = _AWS_S3_HOST.match(host)
    if m:
        return m.group(1)
    if _AWS_S3_GLOBAL.match(host):
        return "us-east-1"
    return f"{host}:{url.port}" if url.port else host


# s3.<region>.amazonaws.com and the forms that name the same region: s3-<region>, dual-stack,
# FIPS, a bucket or access point in front (virtual-hosted style), and VPC interface
# endpoints (<bucket>.vpce-<id>.s3.<region>.vpce.amazonaws.com).
_AWS_S3_HOST = re.compile(
    r"^(?:[a-z0-9][a-z0-9.-]*\.)?s3(?:-fips|-accesspoint(?:-fips)?)?[.-](?:dualstack\.)?"
    r"([a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-[0-9]+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$"
)
# The global endpoint, with or without a bucket in front: us-east-1.
_AWS_S3_GLOBAL = re.compile(r"^(?:[a-z0-9][a-z0-9.-]*\.)?s3(?:-external-1)?\.amazonaws\.com$")


def _store_endpoint(store: Obj) -> Optional[str]:
    endpoint = get(store.spec, "configuration", "endpointURL")
    return endpoint.rstrip("/") if isinstance(endpoint, str) and endpoint else None


def _store_keys(store: Obj) -> set[str]:
    """The Secrets a store's keys come from ('<IAM role>' when it inherits the pod's role)."""
    creds = as_dict(get(store.spec, "configuration", "s3Credentials"))
    if creds.get("inheritFromIAMRole") is True:
        return {"<IAM role>"}
    return {n for n in (get(creds, "accessKeyId", "name"), get(creds, "secretAccessKey", "name")) if isinstance(n, str)}


def _where(store: Obj) -> str:
    return f"{_store_endpoint(store) or '<no endpointURL>'} {_store_path(store) or '<no destinationPath>'}"


@dataclass
class _Stores:
    """One cluster's view of the object stores: the ones it archives into (its own) and,
    per external cluster, the one it reads that member's backups from (a peer's)."""

    cluster: PgCluster
    own: list[Obj]
    peers: list[tuple[str, Obj]]  # (serverName: the member whose backups it reads, store)


def _stores_of(stack: Stack, c: PgCluster) -> _Stores:
    def find(name: Any) -> Optional[Obj]:
        return stack.find("ObjectStore", c.obj.region, c.obj.namespace, name, group="barmancloud.cnpg.io")

    own_names = c.wal_archiver_stores()
    own = [s for s in (find(n) for n in own_names) if s is not None]
    peers = []
    for ext in as_list(c.obj.spec.get("externalClusters")):
        store_name = get(ext, "plugin", "parameters", "barmanObjectName")
        server = get(ext, "plugin", "parameters", "serverName") or get(ext, "name")
        if get(ext, "plugin", "name") != BARMAN_PLUGIN or store_name in own_names or server == c.name:
            continue
        store = find(store_name)
        if store is not None and isinstance(server, str):
            peers.append((server, store))
    return _Stores(c, own, peers)


def _cross_region(stack: Stack, cfg: dict, report: Report) -> None:
    if not _applies(stack, cfg["environments"]):
        return
    primary = stack.primary_region
    views = {id(c): _stores_of(stack, c) for c in stack.clusters}
    for c in stack.clusters:
        view = views[id(c)]
        here = {store_location(_store_endpoint(s)) for s in view.own} - {None}
        # Each peer's backups are read from somewhere else than this region's own store.
        for server, store in view.peers:
            there = store_location(_store_endpoint(store))
            if there is not None and there in here:
                report(
                    f"{store.ref}: {c.name} reads {server}'s backups behind {_store_endpoint(store)} ({there}), the same place "
                    f"as its own store ({', '.join(s.name or '' for s in view.own)}): the two regions' backups are not apart; "
                    "give each region's store its own endpoint (regions[].objectStorage.endpoint)",
                    store,
                )
        if c.is_replica or c.obj.region != primary:
            continue
        # The primary database's backups: its own store plus every replica cluster's own.
        copies = [(s, store_location(_store_endpoint(s))) for s in view.own]
        for f in stack.clusters:
            if f.is_replica and f.upstream_name() == c.name:
                copies += [(s, store_location(_store_endpoint(s))) for s in views[id(f)].own]
        places = {loc for _, loc in copies}
        if copies and len(places) < 2:
            where = ", ".join(f"{s.name} in {s.region} ({_store_endpoint(s) or '<no endpointURL>'})" for s, _ in copies)
            report(
                f"{c.obj.ref}: every backup of the primary database lands in one place, {sorted(places, key=str)[0]}: {where}; "
                "a regional outage takes them all; give the backup region's store an endpoint in another region "
                "(regions[].objectStorage.endpoint)",
                c.obj,
            )


backup_cross_region = stack_policy(
    name="backup-cross-region",
    description="The primary database's backups exist in two places: the backup region's store is behind an endpoint in another region than the primary's (compared by endpoint, not by name).",
    check=_cross_region,
    remediation="State each region's own endpoint in the stack file (regions[].objectStorage.endpoint): Lagos af-south-1, London eu-west-2.",
    area=AREA,
    config=schema(environments=ENV_PROD),
)


def _stores(stack: Stack, cfg: dict, report: Report) -> None:
    if not _applies(stack, cfg["environments"]):
        return
    suffix = cfg["readOnlySuffix"]
    clusters = {c.name: c for c in stack.clusters}
    views = {c.name: _stores_of(stack, c) for c in stack.clusters}
    for c in stack.clusters:
        view = views[c.name]
        own_keys: set[str] = set()
        for store in view.own:
            keys = _store_keys(store)
            own_keys |= keys
            read_only = sorted(k for k in keys if k.endswith(suffix))
            if read_only:
                report(
                    f"{store.ref}: {c.name} archives into it with {', '.join(read_only)}, a read-only Secret (name ends with "
                    f"'{suffix}'); WAL archiving and base backups need the region's read-write keys",
                    store,
                )
        for server, store in view.peers:
            keys = _store_keys(store)
            shared = sorted(keys & own_keys)
            if shared:
                report(
                    f"{store.ref}: {c.name} reads {server}'s backups with {', '.join(shared)}, the keys of its own store: "
                    f"each store has its own keys, and a peer's are read-only (the '{suffix}' Secret of that region)",
                    store,
                )
            writable = sorted(k for k in keys - own_keys if not k.endswith(suffix))
            if writable:
                report(
                    f"{store.ref}: {c.name} reads {server}'s backups with {', '.join(writable)}, not a read-only Secret "
                    f"(name ending with '{suffix}'): a cluster must never be able to write or delete another region's backups",
                    store,
                )
            # The copy a peer region reads must be the store that region writes.
            owner = clusters.get(server)
            if owner is None:
                continue
            written = views[server].own
            if written and not any(
                _store_endpoint(w) == _store_endpoint(store) and _store_path(w) == _store_path(store) for w in written
            ):
                report(
                    f"{store.ref}: {c.name} reads {server}'s backups at {_where(store)}, but {server} archives to "
                    + ", ".join(f"{_where(w)} ({w.ref})" for w in written),
                    store,
                )


backup_stores = stack_policy(
    name="backup-stores",
    description="Each cluster archives into its own store with read-write keys and reads every peer's store with that region's read-only keys, at the endpoint and path the peer really archives to.",
    check=_stores,
    remediation="Render the ObjectStores from settings.object_store(region): the own store with credentialsSecret, each peer's with its readOnlyCredentialsSecret.",
    area=AREA,
    config=schema(
        environments=ENV_STAGING_PROD,
        readOnlySuffix={
            "type": "string",
            "default": ann.READ_ONLY_SECRET_SUFFIX,
            "description": "How the names of read-only credentials Secrets end (the pack cannot see the keys themselves).",
        },
    ),
)


def _replica_cluster(stack: Stack, cfg: dict, report: Report) -> None:
    if not _applies(stack, cfg["environments"]) or not stack.clusters:
        return  # no database tier rendered: nothing to replicate yet
    primary = stack.primary_region
    sources = [c for c in stack.clusters if not c.is_replica and c.obj.region == primary]
    if not sources:
        report(f"no primary PostgreSQL cluster in the primary region {primary}; the replica clusters have nothing to follow")
        return
    source = sources[0]
    for region in stack.backup_regions:
        replicas = [c for c in stack.clusters if c.obj.region == region and c.is_replica and c.upstream_name() == source.name]
        if not replicas:
            report(
                f"{region}: no replica cluster of {source.name}; {stack.environment or 'prod'} keeps a CNPG replica cluster "
                f"in every backup region (replica.primary {source.name}, replica.source the {source.name} external cluster)",
                source.obj,
            )
            continue
        r = replicas[0]
        src = r.replica.get("source")
        boot = as_dict(r.obj.spec.get("bootstrap"))
        if get(boot, "recovery", "source") != src and get(boot, "pg_basebackup", "source") != src:
            report(
                f"{r.obj.ref}: replica of {source.name} but bootstrap.recovery.source / pg_basebackup.source is not '{src}'; "
                "it would start as an empty database",
                r.obj,
            )


prod_replica_cluster = stack_policy(
    name="prod-replica-cluster",
    description="In prod every backup region (London) runs a CNPG replica cluster of the primary region's database, bootstrapped from it.",
    check=_replica_cluster,
    remediation="Declare the backup region's Cluster with replica {primary, source} and bootstrap.recovery (or pg_basebackup) from the primary.",
    area=AREA,
    config=schema(environments=ENV_PROD),
)


# ---- Redis persistence and PgBouncer's pool mode ----------------------------------------------------


def _redis(obj: Obj, _cfg: dict, say: Say) -> None:
    if obj.kind == "ConfigMap":
        for key, text in as_dict(obj.body.get("data")).items():
            if not (isinstance(text, str) and key.endswith("redis.conf")):
                continue
            d = redis_directives(text)
            aof = [a[0].lower() for a in d.get("appendonly", []) if a]
            if not aof or aof[-1] != "yes":
                say(f"{obj.ref}: {key} has appendonly {aof[-1] if aof else 'unset (no)'}; set 'appendonly yes': the job queue lives in Redis")
            fsync = [a[0].lower() for a in d.get("appendfsync", []) if a]
            if fsync and fsync[-1] not in ("everysec", "always"):
                say(f"{obj.ref}: {key} has appendfsync {fsync[-1]}; use everysec (at most a second of writes lost)")
            if not d.get("save"):
                say(f"{obj.ref}: {key} declares no RDB save rules (or 'save \"\"'); add rules such as 'save 3600 1 300 100 60 10000'")
    spec = pod_spec(obj)
    for _, c in containers(spec or {}):
        words = command_line(c)
        if not any("redis-server" in w for w in words):
            continue
        for i, w in enumerate(words[:-1]):
            if w == "--appendonly" and words[i + 1].lower() == "no":
                say(f"{obj.ref}: container '{container_name(c)}' starts redis-server with --appendonly no; drop the flag")
            if w == "--save" and words[i + 1] in ("", '""', "''"):
                say(f"{obj.ref}: container '{container_name(c)}' starts redis-server with --save \"\" (RDB off); drop the flag")


redis_persistence = resource_policy(
    name="redis-persistence",
    description="Redis persists: AOF on (appendonly yes, fsync everysec or always) and explicit RDB save rules.",
    check=_redis,
    remediation="Render redis.conf with tikit/conf/redis.py (appendonly yes, appendfsync everysec, SAVE_RULES).",
    area=AREA,
)


def _pool_mode(obj: Obj, cfg: dict, say: Say) -> None:
    want = cfg["mode"]
    if obj.kind == "ConfigMap":
        for key, text in as_dict(obj.body.get("data")).items():
            if not isinstance(text, str) or not key.endswith(".ini"):
                continue
            sections = ini_sections(text)
            if "pgbouncer" not in sections:
                continue
            mode = sections["pgbouncer"].get("pool_mode", "session")
            if mode != want:
                say(f"{obj.ref}: {key} has pool_mode {mode}; set pool_mode = {want} so {want}s share server connections")
            for db, conn in sections.get("databases", {}).items():
                override = libpq_params(conn).get("pool_mode")
                if override and override != want:
                    say(f"{obj.ref}: {key} database '{db}' overrides pool_mode to {override}; remove the override")
    elif obj.is_("Pooler", CNPG_GROUP):
        mode = get(obj.spec, "pgbouncer", "poolMode", default="session")
        if mode != want:
            say(f"{obj.ref}: spec.pgbouncer.poolMode is {mode}; set it to {want}")


pgbouncer_transaction_mode = resource_policy(
    name="pgbouncer-transaction-mode",
    description="PgBouncer pools in transaction mode, so a handful of server connections serve many clients.",
    check=_pool_mode,
    remediation="Keep pool_mode at 'transaction' (POOL_MODE in tikit/conf/pgbouncer.py).",
    area=AREA,
    config=schema(mode=choice("transaction", ["transaction", "session", "statement"], "Required pool_mode.")),
)


POLICIES = [
    prod_min_replicas,
    prod_pdb,
    prod_rollout,
    prod_zone_spread,
    pdb_allows_drain,
    one_autoscaler,
    keda_replica_counts,
    autoscaled_replicas_unset,
    cron_dialect,
    backups_enabled,
    backup_retention,
    backup_cross_region,
    backup_stores,
    prod_replica_cluster,
    redis_persistence,
    pgbouncer_transaction_mode,
]
