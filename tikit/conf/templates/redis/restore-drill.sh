#!/bin/sh
# Redis restore drill. Rendered by tikit-infra from tikit/conf/templates/redis/restore-drill.sh.
# Runbook: docs/runbooks/restore-drills.md.  Finds the newest complete backup of the
# primary region, checks its age, restores it with the rendered restore script into an
# empty directory (checksum, redis-check-rdb, a private redis-server that loads it and
# writes the AOF), then checks that AOF with redis-check-aof.
set -eu
SCRIPT=redis-restore-drill
STORE="${STORE:-@STORE@}"
PREFIX="${PREFIX:-@PREFIX@}"
RESTORE="${RESTORE:-@RESTORE@}"
DATA_DIR="${DATA_DIR:-@DATA_DIR@}"
MAX_AGE_SECONDS="${MAX_AGE_SECONDS:-@MAX_AGE_SECONDS@}"
@FUNCTIONS@

newest=""
entries=$(store_list "$PREFIX" | sort -r)
for name in $entries; do
    case "$name" in @TIMESTAMP_GLOB@) ;; *) continue ;; esac
    if store_list "$PREFIX/$name" | grep -qx backup.info; then newest=$name; break; fi
done
[ -n "$newest" ] || die "no complete backup under $STORE/$PREFIX"
taken=$(date -u -d "$(printf '%s' "$newest" | sed 's/^\(....\)\(..\)\(..\)T\(..\)\(..\)\(..\)Z$/\1-\2-\3 \4:\5:\6/')" +%s)
age=$(( $(date +%s) - taken ))
[ "$age" -le "$MAX_AGE_SECONDS" ] || die "the newest backup $newest is $age s old (limit $MAX_AGE_SECONDS s)"
log "newest backup $newest, $age s old"

mkdir -p "$DATA_DIR"
BACKUP=$newest STORE=$STORE PREFIX=$PREFIX DATA_DIR=$DATA_DIR sh "$RESTORE" || die "restoring $newest failed"
manifest="$DATA_DIR/@APPENDDIRNAME@/@APPENDFILENAME@.manifest"
redis-check-aof "$manifest" >&2 || die "redis-check-aof rejects the AOF restored from $newest"
log "passed: $newest restored and its AOF checked"
