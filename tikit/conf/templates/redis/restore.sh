#!/bin/sh
# Redis restore from the object store. Rendered by tikit-infra from tikit/conf/templates/redis/restore.sh.
# Run with the StatefulSet scaled to 0: see docs/runbooks/redis-restore.md.
set -eu
SCRIPT=redis-restore
STORE="${STORE:-@STORE@}"
# Override (with STORE) to restore another region's backup, e.g. PREFIX=redis/lagos in London.
PREFIX="${PREFIX:-@PREFIX@}"
BACKUP="${BACKUP:-latest}"
DATA_DIR="${DATA_DIR:-@DATA_DIR@}"
CONF="${CONF:-@CONF@}"
WAIT_SECONDS=@WAIT_SECONDS@
@FUNCTIONS@

work=$(mktemp -d "${TMPDIR:-/tmp}/redis-restore.XXXXXX")
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

if [ "$BACKUP" = latest ]; then
    BACKUP=""
    entries=$(store_list "$PREFIX" | sort -r)
    for name in $entries; do
        case "$name" in @TIMESTAMP_GLOB@) ;; *) continue ;; esac
        if store_list "$PREFIX/$name" | grep -qx backup.info; then BACKUP=$name; break; fi
    done
    [ -n "$BACKUP" ] || die "no complete backup under $STORE/$PREFIX"
fi
log "restoring $STORE/$PREFIX/$BACKUP into $DATA_DIR"
store_get "$PREFIX/$BACKUP/backup.info" "$work/backup.info"
store_get "$PREFIX/$BACKUP/@DBFILENAME@" "$work/@DBFILENAME@"
want=$(sed -n 's/^sha256=//p' "$work/backup.info")
got=$(sha256sum "$work/@DBFILENAME@" | cut -d' ' -f1)
[ "$want" = "$got" ] || die "checksum mismatch: backup.info says $want, file is $got"
redis-check-rdb "$work/@DBFILENAME@" >/dev/null || die "$BACKUP/@DBFILENAME@ fails redis-check-rdb"

aside="$DATA_DIR/before-restore-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$aside"
for f in @DBFILENAME@ @APPENDDIRNAME@; do
    if [ -e "$DATA_DIR/$f" ]; then mv "$DATA_DIR/$f" "$aside/"; fi
done
log "previous data moved to $aside"
cp "$work/@DBFILENAME@" "$DATA_DIR/@DBFILENAME@"

# Load the RDB with AOF off, on a Unix socket only (port 0: nobody else can connect).
sock="$work/redis.sock"
redis-server "$CONF" --dir "$DATA_DIR" --port 0 --unixsocket "$sock" --appendonly no --save "" >&2 &
pid=$!
cli() { redis-cli -s "$sock" "$@"; }
deadline=$(( $(date +%s) + WAIT_SECONDS ))
until [ "$(cli PING 2>/dev/null)" = PONG ]; do
    kill -0 "$pid" 2>/dev/null || die "redis-server exited while loading @DBFILENAME@"
    [ "$(date +%s)" -lt "$deadline" ] || die "redis-server did not load within $WAIT_SECONDS s"
    sleep 1
done
keys=$(cli DBSIZE)
log "loaded $keys keys"

# Let Redis write the AOF from memory, then stop it cleanly.
reply=$(cli CONFIG SET appendonly yes)
[ "$reply" = OK ] || die "CONFIG SET appendonly yes: $reply"
while :; do
    info=$(cli INFO persistence)
    if [ "$(field aof_rewrite_in_progress "$info")" = 0 ] && [ "$(field aof_rewrite_scheduled "$info")" = 0 ]; then
        [ "$(field aof_last_bgrewrite_status "$info")" = ok ] || die "AOF rewrite failed"
        break
    fi
    [ "$(date +%s)" -lt "$deadline" ] || die "AOF rewrite did not finish within $WAIT_SECONDS s"
    sleep 1
done
[ -f "$DATA_DIR/@APPENDDIRNAME@/@APPENDFILENAME@.manifest" ] || die "no AOF manifest was written"
cli SHUTDOWN >/dev/null 2>&1 || true
wait "$pid" || true
pid=""
log "done: $keys keys in $DATA_DIR/@DBFILENAME@ and $DATA_DIR/@APPENDDIRNAME@/; start the pod"
