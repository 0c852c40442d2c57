"""The PostgreSQL tier on the rendered manifests of every stack: the CloudNativePG clusters
(instances, storage, Guaranteed QoS, anti-affinity, parameters, connection budget), the
Barman Cloud object stores and daily backups, the London replica cluster of the distributed
topology, the app role's Secret, and the switchover logic behind the replica stanza."""

from __future__ import annotations

import configparser
import json
import re

import pytest
import yaml

from tikit import kube
from tikit import names
from tikit import settings
from tikit import units
from tikit.components import postgres as pgc
from tikit.conf import postgres as pg_conf
from conftest import REPO, named, objects
from preview import engine, plan as plan_mod
from preview.validate import validate

# The numbers: instances per environment, and the shortest recovery window.
INSTANCES = {"dev": 1, "staging": 2, "prod": 3}
MIN_RETENTION_DAYS = {"staging": 7, "prod": 7}
POSTGRES_KINDS = ("Cluster", "ObjectStore", "ScheduledBackup")


def stack_settings(stack: str) -> settings.Settings:
    """The stack's settings as the program sees them: preset plus the stack file's deltas."""
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = {k.split(":", 1)[1]: v for k, v in (doc.get("config") or {}).items()}
    return settings.load(config, stack=stack)


def cluster_of(plan, region: str) -> dict:
    return named(plan, "Cluster", names.pg_cluster(region), region)


def ini_of(plan, pool: str, region: str) -> configparser.ConfigParser:
    cm = named(plan, "ConfigMap", pool, region)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(cm["data"]["pgbouncer.ini"])
    return parser


def days(retention: str) -> int:
    n, unit = int(retention[:-1]), retention[-1]
    return n * {"d": 1, "w": 7, "m": 30}[unit]


# --- the cluster ---------------------------------------------------------------------------


def test_one_cluster_per_region_with_the_environment_instances(plan, stack):
    cfg = stack_settings(stack)
    assert cfg.postgres.instances == INSTANCES[stack]
    assert sorted(plan.regions) == sorted(r.name for r in cfg.regions)
    for region in plan.regions:
        (cluster,) = objects(plan, "Cluster", region)
        assert cluster["metadata"]["name"] == names.pg_cluster(region)
        # The warm backup carries the same count: after a failover it is the primary.
        assert cluster["spec"]["instances"] == INSTANCES[stack]
        assert cluster["spec"]["imageName"] == cfg.postgres.image
        assert re.match(r"^[0-9]{2}", cluster["spec"]["imageName"].rsplit(":", 1)[1])


def test_storage_sizes_come_from_settings(plan, stack):
    pg = stack_settings(stack).postgres
    for region in plan.regions:
        spec = cluster_of(plan, region)["spec"]
        assert spec["storage"]["size"] == pg.storage_size
        assert spec["walStorage"]["size"] == pg.wal_storage_size
        for volume in (spec["storage"], spec["walStorage"]):
            assert volume.get("storageClass", "") == pg.storage_class


def test_instance_pods_are_guaranteed_qos(plan, stack):
    """requests == limits for cpu and memory in every container of the instance pod: the
    PostgreSQL container and the Barman Cloud sidecar the plugin adds."""
    pg = stack_settings(stack).postgres
    for region in plan.regions:
        res = cluster_of(plan, region)["spec"]["resources"]
        assert res["requests"] == res["limits"] == {"cpu": pg.cpu, "memory": pg.memory}
        for store in objects(plan, "ObjectStore", region):
            side = store["spec"]["instanceSidecarConfiguration"]["resources"]
            assert set(side["requests"]) == {"cpu", "memory"} and side["requests"] == side["limits"]


def test_instances_spread_over_zones_and_never_share_a_node(plan, stack):
    pg = stack_settings(stack).postgres
    for region in plan.regions:
        name = names.pg_cluster(region)
        aff = cluster_of(plan, region)["spec"]["affinity"]
        assert aff["enablePodAntiAffinity"] is True
        assert aff["topologyKey"] == "topology.kubernetes.io/zone"
        assert aff["podAntiAffinityType"] == pg.pod_anti_affinity in ("preferred", "required")
        (term,) = aff["additionalPodAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}


def test_pdb_only_where_a_standby_can_take_over(plan, stack):
    for region in plan.regions:
        assert cluster_of(plan, region)["spec"]["enablePDB"] is (INSTANCES[stack] > 1)


def test_parameters_are_the_pure_function_output(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        params = cluster_of(plan, region)["spec"]["postgresql"]["parameters"]
        assert params == pg_conf.postgres_parameters(cfg.postgres, cfg.derived)
        assert all(isinstance(v, str) for v in params.values())
        assert not [k for k in params if pg_conf.is_operator_owned(k)]
        assert params["max_connections"] == str(cfg.derived.postgres_max_connections)


def test_max_connections_holds_both_pools_and_the_reserved_slots(plan, stack):
    """replicas x (pool + reserve) x 2 pools + superuser reserved + admin headroom ==
    max_connections, from the rendered Deployments, pgbouncer.ini files and cluster
    parameters of each region.  WAL senders are not counted: since PostgreSQL 12 they have
    slots of their own (max_wal_senders), outside max_connections."""
    admin = pg_conf.ADMIN_CONNECTIONS
    for region in plan.regions:
        params = cluster_of(plan, region)["spec"]["postgresql"]["parameters"]
        pooled = 0
        for pool in (names.PGBOUNCER_RW, names.PGBOUNCER_RO):
            replicas = named(plan, "Deployment", pool, region)["spec"]["replicas"]
            ini = ini_of(plan, pool, region)["pgbouncer"]
            per_pod = int(ini["default_pool_size"]) + int(ini["reserve_pool_size"])
            assert int(ini["max_db_connections"]) == per_pod  # the cap PgBouncer enforces
            pooled += replicas * per_pod
        reserved = int(params["superuser_reserved_connections"])
        assert reserved == pg_conf.SUPERUSER_RESERVED_CONNECTIONS
        assert pooled + reserved + admin == int(params["max_connections"])


def test_bootstrap_and_app_secret(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        boot = cluster_of(plan, region)["spec"]["bootstrap"]
        role = {"database": names.PG_DATABASE, "owner": names.PG_OWNER, "secret": {"name": names.PG_APP_SECRET}}
        if region == cfg.primary.name:
            assert boot == {"initdb": {**role, "dataChecksums": True}}
        else:
            assert boot == {"recovery": {"source": names.pg_cluster(cfg.primary.name), **role}}
        secret = named(plan, "Secret", names.PG_APP_SECRET, region)
        assert secret["type"] == "kubernetes.io/basic-auth"
        assert set(secret["stringData"]) == {"username", "password"}
        assert secret["stringData"]["password"] == plan_mod.REDACTED
        assert "data" not in secret


# --- backups -----------------------------------------------------------------------------------


def test_wal_archiving_through_the_own_object_store(plan, stack):
    for region in plan.regions:
        name = names.pg_cluster(region)
        (plugin,) = cluster_of(plan, region)["spec"]["plugins"]
        assert plugin == {
            "name": pgc.BARMAN_PLUGIN,
            "isWALArchiver": True,
            "parameters": {"barmanObjectName": names.pg_object_store(region), "serverName": name},
        }
        named(plan, "ObjectStore", names.pg_object_store(region), region)
        assert "backup" not in cluster_of(plan, region)["spec"]  # the deprecated in-tree way


def test_object_stores_use_settings_and_each_region_its_own_bucket(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        stores = {s["metadata"]["name"]: s for s in objects(plan, "ObjectStore", region)}
        # This region's store plus one per peer region, to read the peers' archives.
        assert set(stores) == {names.pg_object_store(r.name) for r in cfg.regions}
        for r in cfg.regions:
            store = cfg.object_store(r.name)
            conf = stores[names.pg_object_store(r.name)]["spec"]["configuration"]
            assert conf["destinationPath"] == f"s3://{store.bucket}/postgres"
            assert conf["endpointURL"] == store.endpoint
            # The own store with the region's read-write keys, a peer's with ITS read-only keys.
            secret = store.credentials_secret if r.name == region else store.read_only_credentials_secret
            assert conf["s3Credentials"] == {
                "accessKeyId": {"name": secret, "key": store.access_key_id_key},
                "secretAccessKey": {"name": secret, "key": store.secret_access_key_key},
            }
            assert conf["wal"]["compression"] == pgc.WAL_COMPRESSION
            assert conf["data"]["compression"] == pgc.DATA_COMPRESSION
            assert "serverName" not in conf  # the plugin takes it from the Cluster
        own = stores[names.pg_object_store(region)]["spec"]
        assert own["retentionPolicy"] == cfg.postgres.retention
        # Nobody prunes another region's backups.
        for r in cfg.regions:
            if r.name != region:
                assert "retentionPolicy" not in stores[names.pg_object_store(r.name)]["spec"]


def test_prod_keeps_each_regions_backups_in_that_region(rendered):
    """The issue's numbers: Lagos's store in af-south-1, London's in eu-west-2, each with its
    own keys; every ObjectStore of a bucket, in every region, uses that bucket's endpoint."""
    plan = rendered("prod").plan
    expected = {"lagos": "https://s3.af-south-1.amazonaws.com", "london": "https://s3.eu-west-2.amazonaws.com"}
    for region in plan.regions:
        for bucket_region, endpoint in expected.items():
            conf = named(plan, "ObjectStore", names.pg_object_store(bucket_region), region)["spec"]["configuration"]
            assert conf["endpointURL"] == endpoint
            assert conf["destinationPath"] == f"s3://tikit-backups-prod-{bucket_region}/postgres"
            secret = f"tikit-backup-s3-{bucket_region}" + ("" if bucket_region == region else "-readonly")
            assert {v["name"] for v in conf["s3Credentials"].values()} == {secret}


def test_each_bucket_is_read_through_its_own_regions_endpoint():
    """A region's objectStorage reaches every ObjectStore of its bucket, in every region;
    the other region's bucket keeps the stack-wide defaults (staging may share one endpoint)."""
    lagos_s3 = "https://s3.af-south-1.amazonaws.com"
    regions = [
        {"name": "lagos", "role": "primary", "objectStorage": {"endpoint": lagos_s3, "bucket": "lagos-pg-archive",
                                                              "credentialsSecret": "lagos-keys"},
         "context": "tikit-staging-lagos"},
        {"name": "london", "role": "backup", "context": "tikit-staging-london"},
    ]
    plan = plan_mod.build(engine.run_program("staging", config_override=as_cli({"environment": "staging", "regions": regions})))
    default = settings.load({}, stack="staging").object_storage.endpoint_url
    assert default != lagos_s3
    for region in ("lagos", "london"):
        stores = {s["metadata"]["name"]: s["spec"]["configuration"] for s in objects(plan, "ObjectStore", region)}
        lagos = stores[names.pg_object_store("lagos")]
        assert lagos["endpointURL"] == lagos_s3
        assert lagos["destinationPath"] == "s3://lagos-pg-archive/postgres"
        assert lagos["s3Credentials"]["accessKeyId"]["name"] == ("lagos-keys" if region == "lagos" else "lagos-keys-readonly")
        assert stores[names.pg_object_store("london")]["endpointURL"] == default


def test_object_stores_carry_no_location_annotation(plan, stack):
    """Where a bucket lives is its endpoint, which the policy pack compares; no annotation
    can claim otherwise."""
    cfg = stack_settings(stack)
    for region in plan.regions:
        for r in cfg.regions:
            store = named(plan, "ObjectStore", names.pg_object_store(r.name), region)
            assert "annotations" not in store["metadata"]
            assert cfg.bucket(r.name) in store["spec"]["configuration"]["destinationPath"]


def test_no_two_clusters_share_a_destination_path_and_server_name(plan):
    paths = []
    for region in plan.regions:
        spec = cluster_of(plan, region)["spec"]
        for plugin in spec["plugins"]:
            if plugin.get("isWALArchiver"):
                store = named(plan, "ObjectStore", plugin["parameters"]["barmanObjectName"], region)
                paths.append((store["spec"]["configuration"]["destinationPath"], plugin["parameters"]["serverName"]))
    assert len(paths) == len(plan.regions)
    assert len(set(paths)) == len(paths)
    # Distinct buckets, not only distinct server names.
    assert len({p for p, _ in paths}) == len(paths)


def test_daily_scheduled_backup_with_an_immediate_first_one(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        (backup,) = objects(plan, "ScheduledBackup", region)
        spec = backup["spec"]
        assert backup["metadata"]["name"] == names.PG_SCHEDULED_BACKUP
        assert spec["schedule"] == cfg.postgres.backup_schedule
        fields = spec["schedule"].split()
        # Six fields, seconds first; daily: fixed second, minute and hour, every day.
        assert len(fields) == 6
        assert all(f.isdigit() for f in fields[:3]) and fields[3:] == ["*", "*", "*"]
        assert spec["immediate"] is True
        assert spec["method"] == "plugin"
        assert spec["pluginConfiguration"] == {"name": pgc.BARMAN_PLUGIN}
        assert spec["cluster"] == {"name": names.pg_cluster(region)}
        assert spec["backupOwnerReference"] == "self"
        assert spec["target"] == "prefer-standby"


def test_recovery_window(plan, stack):
    for region in plan.regions:
        own = named(plan, "ObjectStore", names.pg_object_store(region), region)
        window = days(own["spec"]["retentionPolicy"])
        assert window >= MIN_RETENTION_DAYS.get(stack, 1)


# --- the distributed topology ----------------------------------------------------------------


def test_single_region_has_no_replica_section(rendered):
    plan = rendered("dev").plan
    cfg = stack_settings("dev")
    assert len(cfg.regions) == 1
    spec = cluster_of(plan, cfg.primary.name)["spec"]
    assert "replica" not in spec and "externalClusters" not in spec


@pytest.mark.parametrize("stack_name", ["staging", "prod"])
def test_london_runs_a_replica_cluster_of_lagos(rendered, stack_name):
    plan = rendered(stack_name).plan
    lagos, london = names.pg_cluster("lagos"), names.pg_cluster("london")
    primary = cluster_of(plan, "lagos")["spec"]
    replica = cluster_of(plan, "london")["spec"]
    assert primary["replica"] == {"primary": lagos, "source": london}
    assert replica["replica"] == {"primary": lagos, "source": lagos}
    assert replica["bootstrap"]["recovery"]["source"] == lagos
    # Both sides list both members, each read under its own (the source's) server name,
    # through an ObjectStore declared in that region pointing at the member's bucket.
    for region, spec in (("lagos", primary), ("london", replica)):
        members = {e["name"]: e for e in spec["externalClusters"]}
        assert set(members) == {lagos, london}
        for member, entry in members.items():
            assert "connectionParameters" not in entry
            plugin = entry["plugin"]
            assert plugin["name"] == pgc.BARMAN_PLUGIN
            assert plugin["parameters"]["serverName"] == member
            store = named(plan, "ObjectStore", plugin["parameters"]["barmanObjectName"], region)
            member_region = member.removeprefix("pg-")
            assert store["spec"]["configuration"]["destinationPath"].startswith(
                f"s3://{stack_settings(stack_name).bucket(member_region)}/"
            )
    # The replica's source resolves to Lagos's archive.
    source = {e["name"]: e for e in replica["externalClusters"]}[replica["replica"]["source"]]
    assert source["plugin"]["parameters"]["serverName"] == lagos


# --- switchover: the replica stanza follows the stack file's roles ---------------------------

TOKEN = "eyJzeXN0ZW1JRCI6IjEyMyJ9"  # base64 JSON, as CNPG writes status.demotionToken


# Where each prod region's backups live (Pulumi.prod.yaml says the same).
PROD_ENDPOINTS = {"lagos": "https://s3.af-south-1.amazonaws.com", "london": "https://s3.eu-west-2.amazonaws.com"}


def flipped(primary: str, token: str = "") -> dict:
    """prod's stack config after the runbook's change: `primary` is the primary region
    (the GSLB's primary geo tag follows from it: the primary region's tag)."""
    other = "lagos" if primary == "london" else "london"
    return {
        "environment": "prod",
        "regions": [
            {"name": primary, "role": "primary", "objectStorage": {"endpoint": PROD_ENDPOINTS[primary]},
             "context": f"tikit-prod-{primary}"},
            {"name": other, "role": "backup", "objectStorage": {"endpoint": PROD_ENDPOINTS[other]},
             "context": f"tikit-prod-{other}"},
        ],
        "postgres": {"promotionToken": token} if token else {},
    }


def as_cli(config: dict) -> dict[str, str]:
    """Config as the CLI hands it to the program: prefixed keys, structured values as JSON."""
    return {f"tikit:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


@pytest.fixture(scope="module")
def switched_plan():
    """prod rendered after the runbook's stack-file change: London primary, Lagos's token."""
    return plan_mod.build(engine.run_program("prod", config_override=as_cli(flipped("london", TOKEN))))


def test_swapping_roles_makes_london_the_primary_of_the_topology(switched_plan):
    lagos, london = names.pg_cluster("lagos"), names.pg_cluster("london")
    # Lagos is demoted and follows London; London is promoted with Lagos's demotion token.
    assert cluster_of(switched_plan, "lagos")["spec"]["replica"] == {"primary": london, "source": london}
    assert cluster_of(switched_plan, "london")["spec"]["replica"] == {
        "primary": london,
        "source": lagos,
        "promotionToken": TOKEN,
    }
    for region in ("lagos", "london"):
        assert validate(cluster_of(switched_plan, region)) == []
        # DNS follows the same change: the GSLB's primary geo tag is the new primary region's.
        gslb = named(switched_plan, "Gslb", names.GSLB, region)
        assert gslb["spec"]["strategy"]["primaryGeoTag"] == "london"


def pg_args(cfg: settings.Settings, region: str) -> pgc.PostgresArgs:
    """The component's arguments for ``region``, built the way tikit/regions.py builds them
    (the target's provider and the credentials play no part in the pure spec functions)."""
    return pgc.PostgresArgs(
        target=kube.Target(region=region, namespace=cfg.namespace, provider=None, environment=cfg.environment),
        postgres=cfg.postgres,
        derived=cfg.derived,
        region=region,
        primary=cfg.primary.name,
        stores={r.name: cfg.object_store(r.name) for r in cfg.regions},
        password="",
        scram_salt="",
    )


def test_without_a_token_the_promotion_is_an_unplanned_failover():
    cfg = settings.load(flipped("london"), stack="prod")
    assert "promotionToken" not in pgc.replica(pg_args(cfg, "london"))
    # The token only ever goes to the primary region's cluster.
    back = settings.load({"postgres": {"promotionToken": TOKEN}}, stack="prod")
    assert "promotionToken" not in pgc.replica(pg_args(back, "london"))
    assert pgc.replica(pg_args(back, "lagos"))["promotionToken"] == TOKEN


def test_a_bad_promotion_token_is_a_config_error():
    with pytest.raises(settings.ConfigError, match="postgres.promotionToken"):
        settings.load({"postgres": {"promotionToken": "not a token!"}}, stack="prod")


# --- monitoring and validation ---------------------------------------------------------------


def test_instances_are_scraped(plan):
    """The monitoring tier's PodMonitor selects this region's instances on their metrics port."""
    for region in plan.regions:
        selectors = [
            (m["spec"]["selector"], m["spec"]["podMetricsEndpoints"]) for m in objects(plan, "PodMonitor", region)
        ]
        assert any(
            sel.get("matchLabels") == {"cnpg.io/cluster": names.pg_cluster(region)}
            and [e["port"] for e in eps] == [names.METRICS_PORT_NAME]
            for sel, eps in selectors
        )


@pytest.mark.parametrize("kind", POSTGRES_KINDS)
def test_every_postgres_object_validates(plan, kind):
    found = 0
    for region in plan.regions:
        for obj in objects(plan, kind, region):
            found += 1
            assert validate(obj) == [], f"{region} {kind}/{obj['metadata']['name']}"
    assert found >= len(plan.regions)


def test_app_secret_validates(plan):
    for region in plan.regions:
        assert validate(named(plan, "Secret", names.PG_APP_SECRET, region)) == []


# --- docs/sizing.md carries the arithmetic with each stack's numbers ----------------------------


def sizing_tables() -> dict[str, dict[str, list[int]]]:
    """### heading -> stack -> the numbers of its row, from docs/sizing.md's PostgreSQL section."""
    text = (REPO / "docs" / "sizing.md").read_text()
    section = text.split("## PostgreSQL connections and memory", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, dict[str, list[int]]] = {}
    for block in section.split("\n### ")[1:]:
        heading, body = block.split("\n", 1)
        rows = [line.strip("|").split("|") for line in body.splitlines() if line.startswith("| ")]
        tables[heading.strip()] = {
            cells[0].strip(): [int(c) for c in cells[1:]] for cells in rows if cells[0].strip() in INSTANCES
        }
    return tables


def test_sizing_doc_shows_the_derived_numbers(stack):
    cfg = stack_settings(stack)
    d, pb, pg, b, w = cfg.derived, cfg.pgbouncer, cfg.postgres, cfg.backend, cfg.workers
    tables = sizing_tables()
    assert tables["max_connections"][stack] == [
        pb.replicas,
        d.pgbouncer_server_connections_per_pod,
        d.pool_server_connections,
        pg_conf.SUPERUSER_RESERVED_CONNECTIONS,
        pg_conf.ADMIN_CONNECTIONS,
        d.postgres_max_connections,
    ]
    assert d.pool_server_connections == 2 * pb.replicas * (pb.default_pool_size + pb.reserve_pool_size)
    assert tables["Client connections"][stack] == [
        b.max_replicas,
        b.db_connections_per_replica,
        w.max_replicas,
        w.db_connections_per_replica,
        d.client_connections,
        pb.replicas,
        d.pgbouncer_client_capacity,
    ]
    assert tables["Memory"][stack] == [
        units.mebibytes(pg.memory),
        d.postgres_shared_buffers_mb,
        d.postgres_effective_cache_size_mb,
        d.postgres_work_mem_mb,
        d.postgres_maintenance_work_mem_mb,
    ]
