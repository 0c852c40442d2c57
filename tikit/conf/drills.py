"""Restore drill text: the canary's SQL, the PostgreSQL drill's verification query and the
two drill scripts (docs/runbooks/restore-drills.md).

Pure functions: values in, text out.  The drills component puts them into ConfigMaps; the
integration tests run the same scripts: the canary against a real PostgreSQL, the
verification against a real point-in-time restore, the Redis drill against a local S3.

How a PostgreSQL drill knows it restored the right thing: the canary writes a row with its
commit time every CANARY_PERIOD_SECONDS in the primary region.  The drill recovers to a
target time T far enough back that a later canary commit is archived (recovery stops at the
first commit after T, and PostgreSQL refuses to finish without one), then asks the restored
database whether it holds a canary row from the window before T and none after T: the
expected answer is ``true``.  Both halves matter: rows before T prove the data up to T came
back (the recovery point is at most one canary period before T), no row after T proves
recovery stopped at T.
"""

from __future__ import annotations

from tikit import names
from tikit.conf import redis as rconf
from tikit.conf import templates

CANARY_SCHEMA = "tikit_platform"
CANARY_TABLE = f"{CANARY_SCHEMA}.restore_canary"
# Five fields: every 15 minutes.  The drill's target lag and window follow from it.
CANARY_SCHEDULE = "*/15 * * * *"
CANARY_PERIOD_SECONDS = 15 * 60
# Rows older than this go: the longest recovery window (prod 14 days) with room to spare.
CANARY_KEEP_DAYS = 35
# CNPG's archive_timeout: a quiet primary still ships a segment this often.
ARCHIVE_TIMEOUT_SECONDS = 300
# T lies this far back: the next canary commit after T (at most one period later), its
# segment's archive_timeout and the upload all fit, with 10 minutes to spare.
TARGET_LAG_SECONDS = CANARY_PERIOD_SECONDS + ARCHIVE_TIMEOUT_SECONDS + 600
# The restored database must hold a canary row this close before T: two periods, so one
# missed canary run does not fail the drill.
WINDOW_SECONDS = 2 * CANARY_PERIOD_SECONDS
EXPECTED_ANSWER = "true"
# The placeholders the drill script fills in the Cluster manifest at run time.
TARGET_SLOT, JOB_NAME_SLOT, JOB_UID_SLOT = "__TARGET_TIME__", "__JOB_NAME__", "__JOB_UID__"


def canary_script(*, region: str) -> str:
    return templates.render(
        "postgres/canary.sh", REGION=region, SCHEMA=CANARY_SCHEMA, TABLE=CANARY_TABLE, KEEP_DAYS=CANARY_KEEP_DAYS
    )


def verification_query(window_seconds: int = WINDOW_SECONDS) -> str:
    """One line, ``<ok>|<newest canary at or before T>|<rows>``; ``<ok>`` must be
    EXPECTED_ANSWER.  psql fills ``:'target'`` (-v target=...), the drill's T."""
    t = ":'target'::timestamptz"
    return (
        "SELECT (count(*) FILTER (WHERE written_at <= {t} AND written_at > {t} - interval '{w} seconds') > 0\n"
        "        AND count(*) FILTER (WHERE written_at > {t}) = 0)::text\n"
        "       || '|' || coalesce((max(written_at) FILTER (WHERE written_at <= {t}))::text, 'none')\n"
        "       || '|' || count(*)\n"
        "FROM {table};\n"
    ).format(t=t, w=window_seconds, table=CANARY_TABLE)


def pg_drill_script(*, namespace: str, manifest: str, query_file: str, timeout_seconds: int, poll_seconds: int) -> str:
    return templates.render(
        "postgres/restore-drill.sh",
        DRILL=names.PG_RESTORE_DRILL,
        NAMESPACE=namespace,
        MANIFEST=manifest,
        QUERY_FILE=query_file,
        DATABASE=names.PG_DATABASE,
        EXPECTED=EXPECTED_ANSWER,
        TARGET_LAG_SECONDS=TARGET_LAG_SECONDS,
        TIMEOUT_SECONDS=timeout_seconds,
        POLL_SECONDS=poll_seconds,
    )


def redis_drill_script(*, region: str, store: str, s3_endpoint: str, restore: str, data_dir: str,
                       max_age_seconds: int) -> str:
    """The Redis drill of ``region``'s backups in ``store`` (s3:// or file://), reached
    through ``s3_endpoint``; ``restore`` is the path of the rendered restore script."""
    return templates.render(
        "redis/restore-drill.sh",
        STORE=store,
        PREFIX=rconf.backup_prefix(region),
        RESTORE=restore,
        DATA_DIR=data_dir,
        MAX_AGE_SECONDS=max_age_seconds,
        FUNCTIONS=rconf.script_functions(s3_endpoint),
        TIMESTAMP_GLOB=rconf.TIMESTAMP_GLOB,
        APPENDDIRNAME=rconf.APPENDDIRNAME,
        APPENDFILENAME=rconf.APPENDFILENAME,
    )
