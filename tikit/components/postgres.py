"""The PostgreSQL tier of one region: a CloudNativePG ``Cluster``, its backups and its place
in the distributed topology (docs/postgres.md).

* Cluster ``pg-<region>``: instances, data and WAL volumes, Guaranteed QoS, anti-affinity,
  ``postgresql.parameters`` from tikit/conf/postgres.py, and the Barman Cloud plugin as its
  WAL archiver.
* One ObjectStore per region of the stack, in every region: this region's own (WAL archive,
  base backups, retention; read-write keys) and, in a multi-region stack, one per peer
  region pointing at that region's bucket through that region's endpoint with that
  region's read-only keys, read by this cluster to bootstrap, replay WAL and switch over.
* ScheduledBackup ``pg-daily``: six-field cron, an immediate first backup.  The replica
  cluster backs up too (from its designated primary), into its own region's bucket: that is
  the cross-region copy.
* Secret ``pg-app``: the application role and its password, stored as a SCRAM verifier
  (the very string PgBouncer's userlist carries), identical in every region.

The primary region's cluster is the primary of the distributed topology; every other
region's cluster is a replica cluster of it.  Changing which region is primary in the stack
file drives demotion and promotion (docs/runbooks/postgres-switchover.md).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names
from tikit.conf import pgbouncer as pgbouncer_conf
from tikit.conf import pods
from tikit.conf import postgres as postgres_conf
from tikit.derived import Derived
from tikit.settings import ObjectStore
from tikit.settings import Postgres as PostgresSettings

COMPONENT = "database"
APP = "postgres"
CNPG_API = "postgresql.cnpg.io/v1"
BARMAN_API = "barmancloud.cnpg.io/v1"
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
# Key prefix inside each region's bucket (Redis backups use their own prefix).
BACKUP_PREFIX = "postgres"
# Labels the operator puts on every instance pod.
CNPG_ROLE_LABEL = "cnpg.io/podRole"
# WAL and base-backup compression in the object store (barman-cloud-backup supports fewer
# codecs than the WAL archive; gzip is in both).
WAL_COMPRESSION = "gzip"
DATA_COMPRESSION = "gzip"
# The Barman Cloud plugin's sidecar in every instance pod; requests == limits, so the pod
# stays in the Guaranteed QoS class.
BACKUP_SIDECAR_CPU, BACKUP_SIDECAR_MEMORY = pods.BARMAN_SIDECAR


@dataclass(frozen=True)
class PostgresArgs:
    target: kube.Target
    postgres: PostgresSettings
    derived: Derived
    # This region, the stack's primary region, and every region's own object store (stack
    # order): this region writes its own with read-write keys and reads the others' with
    # their read-only keys.
    region: str
    primary: str
    stores: dict[str, ObjectStore]
    # The application role's password (secret) and the base64 SCRAM salt, both from the
    # stack-level Credentials: every region must store the same verifier.
    password: pulumi.Input[str]
    scram_salt: pulumi.Input[str]


# --- names and services -----------------------------------------------------------------


def write_service(cluster: str) -> str:
    """CNPG's Service in front of the (designated) primary."""
    return f"{cluster}-rw"


def read_service(cluster: str, instances: int) -> str:
    """Replicas only (``-ro``) when there are any; a single instance has no ``-ro``
    endpoints, so reads go to ``-r`` (any instance) there."""
    return f"{cluster}-ro" if instances > 1 else f"{cluster}-r"


def scram_verifier(password: pulumi.Input[str], salt_base64: pulumi.Input[str]) -> pulumi.Output[str]:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (secret).

    PostgreSQL keeps a pre-hashed password as it is, so the role's password is set to this
    string; PgBouncer can then log in with the same verifier from its userlist (SCRAM
    pass-through needs the identical salt, not merely the same password)."""
    return pulumi.Output.secret(
        pulumi.Output.all(password, salt_base64).apply(
            lambda v: pgbouncer_conf.scram_sha256_verifier(v[0], base64.b64decode(v[1]))
        )
    )


# --- specs (pure functions of the settings) ---------------------------------------------


def peer_regions(args: PostgresArgs) -> list[str]:
    return [r for r in args.stores if r != args.region]


def destination_path(store: ObjectStore) -> str:
    """Where every cluster of the stack finds ``store``'s PostgreSQL backups; each cluster
    writes under its own server name below it (names.pg_cluster of its region)."""
    return f"s3://{store.bucket}/{BACKUP_PREFIX}"


def store_configuration(store: ObjectStore, *, read_only: bool) -> dict[str, Any]:
    """The Barman Cloud ``configuration`` of one region's bucket: its own endpoint, and the
    read-write keys (the owning region) or the read-only ones (every peer)."""
    secret = store.credentials(read_only=read_only)
    return {
        # One bucket per region, and each cluster archives under its own name
        # (serverName): no two clusters ever share a path and server name.
        "destinationPath": destination_path(store),
        # The endpoint of the storage that holds that region's bucket, wherever the
        # reading cluster runs.
        "endpointURL": store.endpoint,
        "s3Credentials": {
            "accessKeyId": {"name": secret, "key": store.access_key_id_key},
            "secretAccessKey": {"name": secret, "key": store.secret_access_key_key},
        },
        "wal": {"compression": WAL_COMPRESSION},
        "data": {"compression": DATA_COMPRESSION},
    }


def object_store_spec(args: PostgresArgs, bucket_region: str) -> dict[str, Any]:
    """An ObjectStore for ``bucket_region``'s bucket.  Only a region's own store carries the
    retention policy and the read-write keys: a cluster never prunes, nor can it write,
    another region's backups."""
    own = bucket_region == args.region
    spec: dict[str, Any] = {
        "configuration": store_configuration(args.stores[bucket_region], read_only=not own),
        # The plugin's sidecar joins every instance pod: requests == limits keep the pod
        # Guaranteed, like the PostgreSQL container.
        "instanceSidecarConfiguration": {
            "resources": kube.resources(BACKUP_SIDECAR_CPU, BACKUP_SIDECAR_MEMORY, guaranteed=True)
        },
    }
    if own:
        spec["retentionPolicy"] = args.postgres.retention
    return spec


def affinity(pg: PostgresSettings, cluster: str) -> dict[str, Any]:
    """Instances spread over zones (preferred or required, postgres.podAntiAffinity) and
    never share a node: one node failure must never take two instances."""
    return {
        "enablePodAntiAffinity": True,
        "topologyKey": kube.ZONE_KEY,
        "podAntiAffinityType": pg.pod_anti_affinity,
        "additionalPodAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {names.CNPG_CLUSTER_LABEL: cluster, CNPG_ROLE_LABEL: "instance"}},
                    "topologyKey": kube.HOST_KEY,
                }
            ]
        },
    }


def external_clusters(regions: list[str]) -> list[dict[str, Any]]:
    """Every member of the distributed topology, as each cluster must list them: read
    through that member's ObjectStore, under that member's own server name."""
    return [
        {
            "name": names.pg_cluster(r),
            "plugin": {
                "name": BARMAN_PLUGIN,
                "parameters": {
                    "barmanObjectName": names.pg_object_store(r),
                    "serverName": names.pg_cluster(r),
                },
            },
        }
        for r in regions
    ]


def replica(args: PostgresArgs) -> Optional[dict[str, Any]]:
    """The ``spec.replica`` stanza of the distributed topology (None with a single region).

    ``primary`` names the primary region's cluster in every member; ``source`` is whom a
    member follows while it is not primary (the primary's own source is the cluster it
    would follow after a demotion).  The primary region's cluster carries
    ``postgres.promotionToken`` when one is set: a controlled switchover."""
    peers = peer_regions(args)
    if not peers:
        return None
    region, primary = args.region, args.primary
    stanza: dict[str, Any] = {
        "primary": names.pg_cluster(primary),
        "source": names.pg_cluster(peers[0] if region == primary else primary),
    }
    if region == primary and args.postgres.promotion_token:
        stanza["promotionToken"] = args.postgres.promotion_token
    return stanza


def bootstrap(args: PostgresArgs) -> dict[str, Any]:
    """initdb in the primary region; a copy of the primary's latest base backup plus its
    WAL everywhere else.  Both name the app role's Secret, so a promoted replica cluster
    keeps the same role and password (CNPG applies them on promotion)."""
    role = {"database": names.PG_DATABASE, "owner": names.PG_OWNER, "secret": {"name": names.PG_APP_SECRET}}
    if args.region == args.primary:
        # Checksums catch silent storage corruption; they can only be chosen at initdb.
        return {"initdb": {**role, "dataChecksums": True}}
    return {"recovery": {"source": names.pg_cluster(args.primary), **role}}


def cluster_spec(args: PostgresArgs) -> dict[str, Any]:
    pg, region = args.postgres, args.region
    cluster = names.pg_cluster(region)

    def volume(size: str) -> dict[str, Any]:
        return {"size": size, **({"storageClass": pg.storage_class} if pg.storage_class else {})}

    spec: dict[str, Any] = {
        "instances": pg.instances,
        "imageName": pg.image,
        # Minor upgrades and setting changes restart the standbys first, then switch the
        # primary role over to an updated standby instead of restarting the primary.
        "primaryUpdateStrategy": "unsupervised",
        "primaryUpdateMethod": "switchover",
        "storage": volume(pg.storage_size),
        "walStorage": volume(pg.wal_storage_size),
        # requests == limits for cpu and memory: Guaranteed QoS, never throttled below its
        # request nor evicted first under node pressure.
        "resources": kube.resources(pg.cpu, pg.memory, guaranteed=True),
        "affinity": {**affinity(pg, cluster), "tolerations": [kube.dedicated_toleration(args.target)]},
        "priorityClassName": names.priority_class(args.target.namespace, names.PRIORITY_DATA),
        # CNPG's PDB keeps the primary up during drains, which only works with a standby to
        # switch over to; a lone instance (dev) would block every drain of its node.
        "enablePDB": pg.instances > 1,
        "postgresql": {"parameters": postgres_conf.postgres_parameters(pg, args.derived)},
        "bootstrap": bootstrap(args),
        "plugins": [
            {
                "name": BARMAN_PLUGIN,
                "isWALArchiver": True,
                "parameters": {"barmanObjectName": names.pg_object_store(region), "serverName": cluster},
            }
        ],
        # Instance pods, Services and PVCs carry the platform's region and environment.
        "inheritedMetadata": {
            "labels": {
                "app.kubernetes.io/part-of": names.PART_OF,
                "tikit.app/region": region,
                "tikit.app/environment": args.target.environment,
            },
            # Consolidation moving an instance costs a switchover or a replica's catch-up:
            # Karpenter leaves these nodes alone (expiry still rotates them, through the PDB).
            "annotations": {kube.DO_NOT_DISRUPT: "true"},
        },
    }
    stanza = replica(args)
    if stanza is not None:
        spec["externalClusters"] = external_clusters(list(args.stores))
        spec["replica"] = stanza
    return spec


def scheduled_backup_spec(pg: PostgresSettings, cluster: str) -> dict[str, Any]:
    return {
        # Six fields, seconds first, UTC (a five-field value would run hourly).
        "schedule": pg.backup_schedule,
        # The first base backup right away: PITR and the replica cluster's bootstrap need one.
        "immediate": True,
        "backupOwnerReference": "self",
        "cluster": {"name": cluster},
        "method": "plugin",
        "pluginConfiguration": {"name": BARMAN_PLUGIN},
        # Read the base backup from a standby when there is one; the primary otherwise.
        "target": "prefer-standby",
    }


class Postgres(pulumi.ComponentResource):
    """One region's CNPG Cluster, ObjectStores, ScheduledBackup and app-role Secret."""

    app_secret: k8s.core.v1.Secret
    object_stores: dict[str, k8s.apiextensions.CustomResource]  # bucket region -> ObjectStore
    cluster: k8s.apiextensions.CustomResource
    scheduled_backup: k8s.apiextensions.CustomResource

    def __init__(self, name: str, args: PostgresArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:data:Postgres", name, None, opts)
        t, pg, region = args.target, args.postgres, args.region
        child = t.opts(self)
        version = kube.image_version(pg.image)

        self.cluster_name = names.pg_cluster(region)
        self.instances = pg.instances
        self.write_service = write_service(self.cluster_name)
        self.read_service = read_service(self.cluster_name, pg.instances)
        self.verifier = scram_verifier(args.password, args.scram_salt)

        # basic-auth, as CNPG expects; the password is the verifier (stored as it is).
        self.app_secret = k8s.core.v1.Secret(
            t.rname(names.PG_APP_SECRET),
            metadata=kube.metadata(names.PG_APP_SECRET, COMPONENT, t, app=APP),
            type="kubernetes.io/basic-auth",
            string_data={"username": names.PG_OWNER, "password": self.verifier},
            opts=child,
        )

        self.object_stores = {}
        for bucket_region in [region, *peer_regions(args)]:
            store = names.pg_object_store(bucket_region)
            self.object_stores[bucket_region] = kube.custom(
                t.rname(store),
                BARMAN_API,
                "ObjectStore",
                kube.metadata(store, COMPONENT, t, app=APP),
                object_store_spec(args, bucket_region),
                child,
            )

        self.cluster = kube.custom(
            t.rname(self.cluster_name),
            CNPG_API,
            "Cluster",
            kube.metadata(self.cluster_name, COMPONENT, t, app=APP, version=version),
            cluster_spec(args),
            t.opts(
                self,
                depends_on=[self.app_secret, *self.object_stores.values()],
                # bootstrap is read once, at creation.  When the regions' roles change it
                # would flip initdb <-> recovery; a rebuilt cluster gets the new one.
                ignore_changes=["spec.bootstrap"],
            ),
        )

        self.scheduled_backup = kube.custom(
            t.rname(names.PG_SCHEDULED_BACKUP),
            CNPG_API,
            "ScheduledBackup",
            kube.metadata(names.PG_SCHEDULED_BACKUP, COMPONENT, t, app=APP),
            scheduled_backup_spec(pg, self.cluster_name),
            t.opts(self, depends_on=[self.cluster]),
        )

        self.register_outputs(
            {"cluster": self.cluster_name, "write": self.write_service, "read": self.read_service}
        )
