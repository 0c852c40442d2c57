#!/bin/sh
# The restore canary. Rendered by tikit-infra from tikit/conf/templates/postgres/canary.sh.
# One row per run in the primary region's database, through the write pool like the apps:
# a commit every few minutes, so a point-in-time restore always has a commit after its
# target, and the restore drill a row whose presence proves how recent the restore is
# (docs/runbooks/restore-drills.md).
set -eu
: "${DATABASE_URL:?DATABASE_URL is not set}"
REGION=@REGION@
psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -v region="$REGION" <<'SQL'
CREATE SCHEMA IF NOT EXISTS @SCHEMA@;
CREATE TABLE IF NOT EXISTS @TABLE@ (
    written_at timestamptz PRIMARY KEY DEFAULT clock_timestamp(),
    region text NOT NULL
);
INSERT INTO @TABLE@ (region) VALUES (:'region');
DELETE FROM @TABLE@ WHERE written_at < now() - interval '@KEEP_DAYS@ days';
SQL
printf '%s pg-canary: row written in %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$REGION" >&2
