"""Benchmark a PostgreSQL point-in-time restore (not a test; prints figures).

The same round trip as tests/integration/test_backups_restore.py, at sizes the test suite
does not take: a PostgreSQL 15 running prod's rendered parameters archives WAL with
barman-cloud into a local S3 (moto's server mode on 127.0.0.1, IAM enforced) through Lagos's
rendered ObjectStore and read-write key, takes a base backup, writes set A, notes the target
time T, writes set B; then London's view of the same store, with Lagos's read-only key,
restores the backup and replays WAL to T.  Prints the data size, the base backup and
restore times, and the recovery point (how far before T the last restored commit is).

Run:  .venv/bin/python bench/pitr_bench.py [--rows 300000] [--rounds 1]

300,000 rows are a ~52 MB database; gzip -9 of the base backup (barman's level, fixed) is
what makes bigger ones slow, not the restore.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics

from tikit import settings
from tikit.components import postgres as pgc
from tikit.conf import storage
from tikit.conf.postgres import postgres_parameters
from harness import backups as bk
from harness import objectstore as s3mod
from harness import postgres as pgd

STACK = "prod"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000, help="base rows, about 140 bytes each with the index")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    cfg = settings.load({}, stack=STACK)
    primary, peer = cfg.primary.name, cfg.backups[0].name
    stores = {r.name: cfg.object_store(r.name) for r in cfg.regions}

    def spec(reader: str) -> dict:
        from tikit import kube

        a = pgc.PostgresArgs(
            target=kube.Target(region=reader, namespace=cfg.namespace, provider=None, environment=cfg.environment),
            postgres=cfg.postgres, derived=cfg.derived, region=reader, primary=primary, stores=stores,
            password="", scram_salt="",
        )
        return pgc.object_store_spec(a, primary)["configuration"]

    own, mirror = spec(primary), spec(peer)
    server_name = pgc.names.pg_cluster(primary)
    lagos = stores[primary]
    template = pgd.PgTemplate(pgd.pg_bin_dir())
    home = pgd.private_dir("tikit-bench-home-")
    (home / "rclone.conf").write_text("")
    pgd.give_to_daemon_user(home)
    runs = []
    try:
        for round_ in range(args.rounds):
            with s3mod.MotoServer() as s3:
                s3.create_bucket(lagos.bucket)
                rw = s3.create_key("rw", storage.key_policy(lagos.bucket, read_only=False))
                ro = s3.create_key("ro", storage.key_policy(lagos.bucket, read_only=True))
                s3.enforce_iam()
                run = bk.pitr(
                    template, postgres_parameters(cfg.postgres, cfg.derived),
                    bk.BarmanStore.from_configuration(own, endpoint=s3.endpoint),
                    bk.BarmanStore.from_configuration(mirror, endpoint=s3.endpoint),
                    server_name,
                    s3mod.tool_env(home, rw, {"PGPASSWORD": template.superuser_password}),
                    s3mod.tool_env(home, ro),
                    args.rows,
                )
                listing = s3.client("s3", ro).list_objects_v2(Bucket=lagos.bucket, Prefix=f"postgres/{server_name}/")
                sizes = [o["Size"] for o in listing["Contents"] if "/base/" in o["Key"]]
                run.figures["base_backup_objects_mb"] = round(sum(sizes) / 1e6, 1)
            expected = [r for r in run.source_rows if r[1] != "B"]
            run.figures["rows_equal"] = run.restored_rows == expected
            run.figures["loadavg"] = [round(x, 2) for x in os.getloadavg()]
            print(json.dumps({"round": round_ + 1, **run.figures}, indent=2, default=str), flush=True)
            runs.append(run.figures)
    finally:
        template.cleanup()
        shutil.rmtree(home, ignore_errors=True)
    totals = [r["restore_seconds"]["total"] for r in runs]
    print(f"\n{args.rows} rows, {runs[0]['cluster_mb']} MB cluster: restore (download + replay to T + promotion) "
          f"median {statistics.median(totals):.2f} s over {len(totals)} round(s); recovery point "
          f"{[r['target_minus_last_restored_commit_ms'] for r in runs]} ms before T; rows equal: "
          f"{all(r['rows_equal'] for r in runs)}")
    return 0 if all(r["rows_equal"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
