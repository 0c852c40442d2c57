"""Backups proven on real tools: PostgreSQL 15 archives its WAL and takes a base backup with
barman-cloud (Debian's barman-cli-cloud) into a local S3 (moto's server mode on 127.0.0.1,
IAM enforced), and a point-in-time restore to a moment between two writes is verified row
by row; the rendered Redis backup script uploads a snapshot with rclone and the rendered
restore script brings it back into a fresh server, compared key by key.

What runs is what the program renders for prod: the ObjectStores' configuration (the very
``object_store_spec`` the component calls), the cluster's server names, postgresql.parameters,
redis.conf and the Redis scripts.  Only the endpoint is the local S3 (asserted below).  The
keys are the ones the rendered Secret names point at, with the policies of
tikit/conf/storage.py: Lagos's store is written with Lagos's read-write key and restored,
as London would, with Lagos's read-only key, which is refused when it writes or deletes.

The figures (data size, restore time, recovery point, key counts) are printed and written
to build/measurements/backups.json; bench/pitr_bench.py measures bigger databases.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tikit import kube
from tikit import names
from tikit import settings
from tikit.components import drills as dc
from tikit.components import postgres as pgc
from tikit.components import redis as rc
from tikit.conf import drills as drill_conf
from tikit.conf import redis as rconf
from tikit.conf import storage
from tikit.conf.postgres import postgres_parameters
from conftest import REPO, unavailable
from harness import backups as bk
from harness import fake_kubectl
from harness import objectstore as s3mod
from harness import postgres as pgd
from harness import redis as rd

pytestmark = pytest.mark.integration

STACK = "prod"
PRIMARY, PEER = "lagos", "london"
# ~11 MB database: the size the whole run stays well under a minute with (docs: the notes'
# measurements); bench/pitr_bench.py takes bigger ones.
ROWS = 20_000
REDIS_KEYS = 20_000
PASSWORD = "redis-test-password"
MEASUREMENTS = REPO / "build" / "measurements" / "backups.json"
BARMAN_TOOLS = ("barman-cloud-backup", "barman-cloud-wal-archive", "barman-cloud-restore",
                "barman-cloud-wal-restore", "barman-cloud-backup-list")


def stack_settings() -> settings.Settings:
    doc = yaml.safe_load((REPO / f"Pulumi.{STACK}.yaml").read_text())
    return settings.load({k.split(":", 1)[1]: v for k, v in doc["config"].items()}, stack=STACK)


CFG = stack_settings()


def pg_args(region: str) -> pgc.PostgresArgs:
    """The component's arguments, as tikit/regions.py builds them (no provider is needed by
    the pure spec functions)."""
    return pgc.PostgresArgs(
        target=kube.Target(region=region, namespace=CFG.namespace, provider=None, environment=CFG.environment),
        postgres=CFG.postgres, derived=CFG.derived, region=region, primary=CFG.primary.name,
        stores={r.name: CFG.object_store(r.name) for r in CFG.regions}, password="", scram_salt="",
    )


def drill_args(region: str = PEER, endpoint: str = "") -> dc.DrillsArgs:
    """The drills component's arguments for the backup region, as tikit/regions.py builds
    them; ``endpoint`` stands in for the primary store's."""
    store = CFG.object_store(CFG.primary.name)
    return dc.DrillsArgs(
        target=kube.Target(region=region, namespace=CFG.namespace, provider=None, environment=CFG.environment),
        drills=CFG.restore_drills, postgres=CFG.postgres, derived=CFG.derived, redis=CFG.redis,
        primary=CFG.primary.name, primary_store=dataclasses.replace(store, endpoint=endpoint or store.endpoint),
        canary=False, drill=True,
        redis_backup_max_age_seconds=CFG.monitoring.redis_backup_max_age_seconds,
    )


def record(section: str, figures: dict) -> None:
    MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(MEASUREMENTS.read_text()) if MEASUREMENTS.exists() else {}
    data[section] = figures
    MEASUREMENTS.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\n{section}: {json.dumps(figures, indent=2, default=str)}")


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tools() -> None:
    missing = [t for t in (*BARMAN_TOOLS, "rclone") if not shutil.which(t, path=s3mod.TOOL_PATH)]
    missing += pgd.missing_binaries() + rd.binaries_missing()
    if s3mod.moto_server_path() is None:
        missing.append("moto_server (pip install -r requirements-dev.txt)")
    if missing:
        unavailable("missing: " + ", ".join(missing) + " (make test installs them)")


@dataclasses.dataclass
class LocalS3:
    server: s3mod.MotoServer
    keys: dict[str, s3mod.Keys]   # Secret name -> the key that Secret would hold
    home: Path                    # HOME for the tools, owned by the daemon user


@pytest.fixture(scope="module")
def local_s3(tools) -> Iterator[LocalS3]:
    """Every region's bucket, and for each the two keys its Secrets would hold, with the
    policies of tikit/conf/storage.py; then IAM enforcement on."""
    home = pgd.private_dir("tikit-tools-home-")
    (home / "rclone.conf").write_text("")
    pgd.give_to_daemon_user(home)
    with s3mod.MotoServer() as server:
        keys = {}
        for r in CFG.regions:
            store = CFG.object_store(r.name)
            server.create_bucket(store.bucket)
            for read_only in (False, True):
                secret = store.credentials(read_only=read_only)
                keys[secret] = server.create_key(secret, storage.key_policy(store.bucket, read_only=read_only))
        server.enforce_iam()
        yield LocalS3(server, keys, home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_template(tools) -> Iterator[pgd.PgTemplate]:
    template = pgd.PgTemplate(pgd.pg_bin_dir())
    yield template
    template.cleanup()


def keys_of(local: LocalS3, configuration: dict) -> s3mod.Keys:
    """The key behind a rendered ObjectStore's s3Credentials (both refs name one Secret)."""
    (secret,) = {ref["name"] for ref in configuration["s3Credentials"].values()}
    return local.keys[secret]


# --------------------------------------------------------------------------------------
# PostgreSQL: WAL archive, base backup, point-in-time restore from the peer region
# --------------------------------------------------------------------------------------


def test_rendered_stores_are_what_the_test_drives():
    """The owner and the peer render one store: same path and endpoint; the owner with its
    read-write Secret, the peer with the read-only one.  The test below swaps only the
    endpoint for the local S3."""
    own = pgc.object_store_spec(pg_args(PRIMARY), PRIMARY)["configuration"]
    peer = pgc.object_store_spec(pg_args(PEER), PRIMARY)["configuration"]
    assert own["destinationPath"] == peer["destinationPath"] == f"s3://{CFG.bucket(PRIMARY)}/postgres"
    assert own["endpointURL"] == peer["endpointURL"] == "https://s3.af-south-1.amazonaws.com"
    assert {r["name"] for r in own["s3Credentials"].values()} == {CFG.object_store(PRIMARY).credentials_secret}
    assert {r["name"] for r in peer["s3Credentials"].values()} == {CFG.object_store(PRIMARY).read_only_credentials_secret}
    store = bk.BarmanStore.from_configuration(own, endpoint="http://127.0.0.1:1")
    assert store.archive_command("pg-lagos") == (
        "barman-cloud-wal-archive --endpoint-url http://127.0.0.1:1 --cloud-provider aws-s3 --gzip "
        f"s3://{CFG.bucket(PRIMARY)}/postgres pg-lagos %p"
    )


def test_point_in_time_restore_from_the_peer_region(local_s3: LocalS3, pg_template: pgd.PgTemplate):
    own = pgc.object_store_spec(pg_args(PRIMARY), PRIMARY)["configuration"]
    peer = pgc.object_store_spec(pg_args(PEER), PRIMARY)["configuration"]
    # Lagos archives under its cluster's serverName; London reads Lagos's backups under the
    # serverName its externalClusters entry for the primary names.
    (archiver,) = [p for p in pgc.cluster_spec(pg_args(PRIMARY))["plugins"] if p.get("isWALArchiver")]
    server_name = archiver["parameters"]["serverName"]
    (source,) = [e for e in pgc.cluster_spec(pg_args(PEER))["externalClusters"] if e["name"] == names.pg_cluster(PRIMARY)]
    assert source["plugin"]["parameters"]["serverName"] == server_name == names.pg_cluster(PRIMARY)

    endpoint = local_s3.server.endpoint
    writer = bk.BarmanStore.from_configuration(own, endpoint=endpoint)
    reader = bk.BarmanStore.from_configuration(peer, endpoint=endpoint)
    rw_env = s3mod.tool_env(local_s3.home, keys_of(local_s3, own), {"PGPASSWORD": pg_template.superuser_password})
    ro_env = s3mod.tool_env(local_s3.home, keys_of(local_s3, peer))
    listed: list[dict] = []

    def read_only_key_cannot_write(pg: pgd.PostgresServer) -> None:
        """The key London holds restores Lagos's backups but cannot add or delete any (IAM
        enforced): a WAL segment archived with it is refused, and so is a delete."""
        probe = local_s3.home / "000000010000000000000099"
        with pg.connect() as conn:
            wal = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        shutil.copy(pg.data / "pg_wal" / wal, probe)
        pgd.give_to_daemon_user(probe)
        denied = bk.run_tool(["barman-cloud-wal-archive", *reader.cloud_args(), "--gzip", reader.destination,
                              server_name, str(probe)], ro_env, check=False)
        assert denied.returncode != 0 and "AccessDenied" in denied.stderr, denied.stderr[-500:]
        ro = local_s3.server.client("s3", keys_of(local_s3, peer))
        listed.extend(ro.list_objects_v2(Bucket=reader.bucket, Prefix=f"postgres/{server_name}/")["Contents"])
        with pytest.raises(ro.exceptions.ClientError, match="AccessDenied"):
            ro.delete_object(Bucket=reader.bucket, Key=listed[0]["Key"])
        assert ro.head_object(Bucket=reader.bucket, Key=listed[0]["Key"])["ContentLength"] == listed[0]["Size"]

    canary_rows: list = []
    drills: dict = {}

    def canary(pg: pgd.PostgresServer) -> None:
        """The rendered canary script, as the primary region's CronJob runs it, against the
        source's app database (created on the first call, after the base backup: recovery
        replays that too)."""
        with pg.connect() as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (names.PG_DATABASE,)).fetchone():
                conn.execute(f"CREATE DATABASE {names.PG_DATABASE}")
        url = (f"postgresql://{pgd.SUPERUSER}:{urllib.parse.quote(pg_template.superuser_password, safe='')}"
               f"@{pgd.HOST}:{pg.port}/{names.PG_DATABASE}?sslmode=disable")
        done = run_script(drill_conf.canary_script(region=PRIMARY), local_s3.home / "canary.sh",
                          {**s3mod.tool_env(local_s3.home, keys_of(local_s3, own)), "DATABASE_URL": url})
        assert done.returncode == 0, done.stderr
        with pg.connect(dbname=names.PG_DATABASE) as conn:
            canary_rows[:] = conn.execute(f"SELECT written_at, region FROM {drill_conf.CANARY_TABLE} ORDER BY 1").fetchall()

    def drill(restored: bk.RecoveredServer, target: str) -> None:
        """The rendered drill script, its kubectl a stand-in whose exec runs psql in the
        restored server: the verification query on a real point-in-time restore."""
        root = restored.root / "drill"
        files = dc.pg_drill_config(drill_args())
        root.mkdir()
        for key, text in files.items():
            (root / key).write_text(text)
        env = {
            **fake_kubectl.install(root / "bin", root / "state"),
            "MANIFEST": str(root / dc.MANIFEST_KEY), "QUERY_FILE": str(root / dc.QUERY_KEY), "POLL_SECONDS": "0",
            "JOB_NAME": "pg-restore-drill-1", "JOB_UID": "uid-1", "HOME": str(root),
            "FAKE_PSQL": shutil.which("psql", path=s3mod.TOOL_PATH), "FAKE_PGHOST": pgd.HOST, "FAKE_PGPORT": str(restored.port),
            "FAKE_PGUSER": pgd.SUPERUSER, "FAKE_PGPASSWORD": pg_template.superuser_password,
        }
        for name, when in (("at the target", target), ("an hour before it", "hour-before")):
            if when == "hour-before":
                with restored.connect() as conn:
                    when = conn.execute("SELECT to_char((%s::timestamptz - interval '1 hour') AT TIME ZONE 'UTC', "
                                        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", (target,)).fetchone()[0]
            done = subprocess.run(["sh", str(root / dc.SCRIPT_KEY)], env={**env, "TARGET_TIME": when},
                                  capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            drills[name] = done

    run = bk.pitr(pg_template, postgres_parameters(CFG.postgres, CFG.derived), writer, reader, server_name,
                  rw_env, ro_env, ROWS, while_running=read_only_key_cannot_write,
                  before_target=canary, after_target=canary, with_restored=drill)

    expected = [r for r in run.source_rows if r[1] != "B"]
    assert len(run.restored_rows) == len(expected) == ROWS + bk.TRANSACTIONS * bk.ROWS_PER_TRANSACTION
    assert run.restored_rows == expected, next((e, g) for e, g in zip(expected, run.restored_rows) if e != g)
    assert not [r for r in run.restored_rows if r[1] == "B"]
    assert run.timeline == 2
    last_a = max(r[3] for r in run.source_rows if r[1] == "A")
    first_b = min(r[3] for r in run.source_rows if r[1] == "B")
    assert last_a <= run.target_ts < first_b
    # No committed transaction at or before T is lost: the last one replayed is the last of
    # A, which committed right before T was read; nothing after T came back.
    assert dt.timedelta(0) <= run.target_ts - run.last_restored_commit < dt.timedelta(seconds=1)
    assert listed and any("/base/" in o["Key"] for o in listed) and any("/wals/" in o["Key"] for o in listed)
    run.figures["base_backup_objects_mb"] = round(sum(o["Size"] for o in listed if "/base/" in o["Key"]) / 1e6, 1)

    # The canary wrote once before T and once after it; the drill's verification, run in the
    # restored database, finds the first and not the second: the expected answer.
    assert len(canary_rows) == 2 and canary_rows[0][0] <= run.target_ts < canary_rows[1][0]
    passed = drills["at the target"]
    assert passed.returncode == 0, passed.stderr
    answer = re.search(r"verification: (.+)$", passed.stderr, re.M).group(1)
    assert answer.split("|")[0] == drill_conf.EXPECTED_ANSWER and answer.endswith("|1"), answer
    # An hour earlier there is no canary row in the window before the target, and one after it.
    failed = drills["an hour before it"]
    assert failed.returncode == 1 and "verification answered 'false|none|1'" in failed.stderr, failed.stderr
    run.figures["drill_verification"] = answer
    record("postgres_pitr", run.figures)


# --------------------------------------------------------------------------------------
# Redis: the rendered backup script to S3, the rendered restore script from the peer
# --------------------------------------------------------------------------------------


def redis_args(region: str, endpoint: str) -> rc.RedisArgs:
    return rc.RedisArgs(
        target=kube.Target(region=region, namespace=CFG.namespace, provider=None, environment=CFG.environment),
        redis=CFG.redis, maxmemory_bytes=CFG.derived.redis_maxmemory_bytes,
        store=dataclasses.replace(CFG.object_store(region), endpoint=endpoint), password="",
    )


def only_endpoint_differs(production: str, local: str) -> None:
    """The local rendering differs from production in rclone's S3 endpoint lines only."""
    diff = {line.strip() for line in set(production.splitlines()) ^ set(local.splitlines())}
    assert diff and all(re.fullmatch(r'export RCLONE_S3_(ENDPOINT|PROVIDER|REGION)="\$\{RCLONE_S3_\w+:-[^}]*\}"', d)
                        for d in diff), sorted(diff)


def run_script(text: str, path: Path, env: dict) -> subprocess.CompletedProcess:
    path.write_text(text)
    return subprocess.run(["sh", str(path)], env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_redis_snapshot_round_trip_through_s3(local_s3: LocalS3, tmp_path: Path):
    endpoint = local_s3.server.endpoint
    backup_script = rc.backup_config(redis_args(PRIMARY, endpoint))[rc.BACKUP_KEY]
    only_endpoint_differs(rc.backup_config(redis_args(PRIMARY, CFG.object_store(PRIMARY).endpoint))[rc.BACKUP_KEY], backup_script)
    # London restores Lagos's backup with London's rendered restore script, pointed at Lagos's
    # store (docs/runbooks/redis-restore.md, "Restoring another region's backup").
    restore_script = rc.data_config(redis_args(PEER, endpoint))[rc.RESTORE_KEY]
    only_endpoint_differs(rc.data_config(redis_args(PEER, CFG.object_store(PEER).endpoint))[rc.RESTORE_KEY], restore_script)
    lagos = CFG.object_store(PRIMARY)
    figures: dict = {}

    src = tmp_path / "source"
    src.mkdir()
    base = s3mod.tool_env(local_s3.home, local_s3.keys[lagos.credentials_secret], {"TMPDIR": str(tmp_path)})
    # A lone primary: prod's min-replicas-to-write 1 would refuse writes without a replica
    # in sync (in prod the backup job reads a replica, through Sentinel).
    alone = ("--min-replicas-to-write", "0")
    with rd.RedisServer(rd.local_conf(CFG, port=pgd.free_port(), dir=src), tmp_path, PASSWORD, "source", *alone) as source:
        c = source.client()
        rd.fill(c, REDIS_KEYS)
        before = rd.snapshot(c)
        started = time.monotonic()
        done = run_script(backup_script, tmp_path / "backup.sh",
                          {**base, "REDISCLI_AUTH": PASSWORD, "REDIS_HOST": rd.HOST, "REDIS_PORT": str(source.port)})
        figures["backup_seconds"] = round(time.monotonic() - started, 2)
        assert done.returncode == 0, done.stderr[-2000:]
        c.set("written-after-the-backup", "1")

    s3 = local_s3.server.client("s3", local_s3.keys[lagos.read_only_credentials_secret])
    objects = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=lagos.bucket, Prefix=f"redis/{PRIMARY}/")["Contents"]}
    (stamp,) = {k.split("/")[2] for k in objects}
    assert set(objects) == {f"redis/{PRIMARY}/{stamp}/{rconf.DBFILENAME}", f"redis/{PRIMARY}/{stamp}/backup.info"}
    figures["rdb_bytes"] = objects[f"redis/{PRIMARY}/{stamp}/{rconf.DBFILENAME}"]

    # Lagos's read-only key (what London holds) may not overwrite or delete the backup.
    ro_env = s3mod.tool_env(local_s3.home, local_s3.keys[lagos.read_only_credentials_secret], {
        "TMPDIR": str(tmp_path), "RCLONE_S3_PROVIDER": "Other", "RCLONE_S3_ENDPOINT": endpoint, "RCLONE_S3_ENV_AUTH": "true",
        "RCLONE_S3_NO_CHECK_BUCKET": "true"})
    remote = f":s3:{lagos.bucket}/redis/{PRIMARY}/{stamp}/{rconf.DBFILENAME}"
    for argv in (["rclone", "copyto", str(tmp_path / "backup.sh"), remote], ["rclone", "deletefile", remote]):
        refused = subprocess.run([*argv, "--retries", "1", "--low-level-retries", "1"], env=ro_env,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "AccessDenied" in refused.stderr, (argv, refused.stderr[-500:])
    assert s3.head_object(Bucket=lagos.bucket, Key=f"redis/{PRIMARY}/{stamp}/{rconf.DBFILENAME}")["ContentLength"] == figures["rdb_bytes"]

    fresh = tmp_path / "restored"
    fresh.mkdir()
    conf = rd.local_conf(CFG, port=pgd.free_port(), dir=fresh)
    (tmp_path / "restore.conf").write_text(conf)
    started = time.monotonic()
    done = run_script(restore_script, tmp_path / "restore.sh", {
        **ro_env, "STORE": f"s3://{lagos.bucket}", "PREFIX": rconf.backup_prefix(PRIMARY),
        "DATA_DIR": str(fresh), "CONF": str(tmp_path / "restore.conf")})
    figures["restore_seconds"] = round(time.monotonic() - started, 2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"restoring s3://{lagos.bucket}/redis/{PRIMARY}/{stamp}" in done.stderr

    manifest = fresh / rconf.APPENDDIRNAME / f"{rconf.APPENDFILENAME}.manifest"
    check = subprocess.run(["redis-check-aof", str(manifest)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "valid" in check.stdout, check.stdout[-500:]
    with rd.RedisServer(conf, tmp_path, PASSWORD, "restored") as restored:
        after = rd.snapshot(restored.client())
        assert restored.client().info("persistence")["aof_enabled"] == 1
    assert after.keys() == before.keys()
    diff = [k for k in before if before[k] != after[k]]
    assert not diff, diff[:5]
    assert b"written-after-the-backup" not in after
    figures.update(keys=len(before), keys_equal=len(before) - len(diff), keys_different=len(diff))

    # The weekly drill, as London runs it: the newest backup, restored and checked.
    files = dc.redis_drill_config(drill_args(PEER, endpoint))
    only_endpoint_differs(dc.redis_drill_config(drill_args(PEER))[dc.SCRIPT_KEY], files[dc.SCRIPT_KEY])
    for key, text in files.items():
        (tmp_path / f"drill-{key}").write_text(text)

    def redis_drill(data: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(tmp_path / f"drill-{dc.SCRIPT_KEY}")], env={
            **ro_env, "RESTORE": str(tmp_path / f"drill-{dc.RESTORE_KEY}"), "DATA_DIR": str(tmp_path / data),
            "CONF": str(tmp_path / "restore.conf"), **extra}, capture_output=True, text=True, timeout=300,
            stdin=subprocess.DEVNULL)

    started = time.monotonic()
    drill = redis_drill("drill-data")
    figures["drill_seconds"] = round(time.monotonic() - started, 2)
    assert drill.returncode == 0, drill.stderr[-2000:]
    assert f"passed: {stamp} restored and its AOF checked" in drill.stderr
    assert f"loaded {len(before)} keys" in drill.stderr
    # Older than the limit: the drill fails (London could only restore stale data).
    stale = redis_drill("drill-stale", MAX_AGE_SECONDS="0")
    assert stale.returncode == 1 and f"the newest backup {stamp} is" in stale.stderr, stale.stderr[-1000:]
    # A damaged newer snapshot (its backup.info agrees with it): the drill refuses it.
    rw = local_s3.server.client("s3", local_s3.keys[lagos.credentials_secret])
    garbage = b"REDIS0011 not really an rdb"
    newer = f"redis/{PRIMARY}/20991231T235959Z"
    rw.put_object(Bucket=lagos.bucket, Key=f"{newer}/{rconf.DBFILENAME}", Body=garbage)
    rw.put_object(Bucket=lagos.bucket, Key=f"{newer}/backup.info",
                  Body=f"sha256={hashlib.sha256(garbage).hexdigest()}\n".encode())
    damaged = redis_drill("drill-damaged", MAX_AGE_SECONDS="999999999")
    assert damaged.returncode == 1 and "fails redis-check-rdb" in damaged.stderr, damaged.stderr[-1000:]
    record("redis_round_trip", figures)
