#!/bin/sh
# Redis backup to the object store. Rendered by tikit-infra from tikit/conf/templates/redis/backup.sh.
# Restore: docs/runbooks/redis-restore.md (restore script rendered next to this one).
set -eu
SCRIPT=redis-backup
STORE="${STORE:-@STORE@}"
PREFIX=@PREFIX@
RETENTION_HOURS=@RETENTION_HOURS@
WAIT_SECONDS=@WAIT_SECONDS@
REPLICA_MAX_SILENCE=@REPLICA_MAX_SILENCE@
: "${REDISCLI_AUTH:?REDISCLI_AUTH (the Redis password) is not set}"
export REDISCLI_AUTH
@FUNCTIONS@

# ---- which node: an in-sync replica, else the primary (REDIS_HOST/REDIS_PORT override) ----
if [ -z "${REDIS_HOST:-}" ]; then
@DISCOVER@
    target=${replica:-$primary}
@FALLBACK_NOTE@
    REDIS_HOST=${target% *}
    REDIS_PORT=${target#* }
fi
REDIS_PORT="${REDIS_PORT:-@PORT@}"
cli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }
role=$(field role "$(cli INFO replication)")
case "$role" in master|slave) ;; *) die "cannot talk to $REDIS_HOST:$REDIS_PORT (check the password)" ;; esac
log "backing up $REDIS_HOST:$REDIS_PORT (role $role)"

# 1. BGSAVE and wait for it.  LASTSAVE has one-second resolution: let the current second
#    pass, so a save we start cannot end with the LASTSAVE we read.
before=$(cli LASTSAVE)
case "$before" in ''|*[!0-9]*) die "LASTSAVE failed: $before" ;; esac
sleep 1
# SCHEDULE: during an AOF rewrite the save runs right after it instead of failing.
reply=$(cli BGSAVE SCHEDULE)
case "$reply" in
*"Background saving started"*|*"Background saving scheduled"*|*"already in progress"*) ;;
*) die "BGSAVE refused: $reply" ;;
esac
deadline=$(( $(date +%s) + WAIT_SECONDS ))
while :; do
    info=$(cli INFO persistence)
    if [ "$(field rdb_bgsave_in_progress "$info")" = 0 ] && [ "$(field aof_rewrite_in_progress "$info")" = 0 ]; then
        last=$(cli LASTSAVE)
        if [ "$last" -gt "$before" ] && [ "$(field rdb_last_bgsave_status "$info")" = ok ]; then
            break
        fi
        [ "$(field rdb_last_bgsave_status "$info")" = ok ] || die "BGSAVE failed on $REDIS_HOST (rdb_last_bgsave_status:err)"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || die "BGSAVE did not finish within $WAIT_SECONDS s"
    sleep 1
done
log "BGSAVE done on $REDIS_HOST:$REDIS_PORT (LASTSAVE $before -> $last)"

# 2. Stream a snapshot over the network, check it, upload it.
work=$(mktemp -d "${TMPDIR:-/tmp}/redis-backup.XXXXXX")
trap 'rm -rf "$work"' EXIT
cli --rdb "$work/@DBFILENAME@" >&2
redis-check-rdb "$work/@DBFILENAME@" >/dev/null || die "the fetched snapshot fails redis-check-rdb"
ts=$(date -u +%Y%m%dT%H%M%SZ)
version=$(field redis_version "$(cli INFO server)")
sha=$(sha256sum "$work/@DBFILENAME@" | cut -d' ' -f1)
bytes=$(wc -c < "$work/@DBFILENAME@" | tr -d ' ')
store_put "$work/@DBFILENAME@" "$PREFIX/$ts/@DBFILENAME@"
printf 'timestamp=%s\nsource=%s:%s\nredis_version=%s\nlastsave=%s\nbytes=%s\nsha256=%s\n' \
    "$ts" "$REDIS_HOST" "$REDIS_PORT" "$version" "$last" "$bytes" "$sha" > "$work/backup.info"
store_put "$work/backup.info" "$PREFIX/$ts/backup.info"
log "uploaded $STORE/$PREFIX/$ts ($bytes bytes, sha256 $sha)"

# 3. Prune: timestamped names sort by time, so compare them as 14-digit numbers.  Names that
#    are not ours are never touched; the backup just written is always newer than the cutoff.
cutoff=$(date -u -d "@$(( $(date +%s) - RETENTION_HOURS * 3600 ))" +%Y%m%dT%H%M%SZ)
entries=$(store_list "$PREFIX")
for name in $entries; do
    case "$name" in @TIMESTAMP_GLOB@) ;; *) continue ;; esac
    if [ "$(printf '%s' "$name" | tr -d TZ)" -lt "$(printf '%s' "$cutoff" | tr -d TZ)" ]; then
        store_delete "$PREFIX/$name"
        log "pruned $PREFIX/$name (older than $RETENTION_HOURS h)"
    fi
done
