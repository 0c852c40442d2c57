#!/bin/sh
# Redis data pod entry point where Sentinel runs. Rendered by tikit-infra from tikit/conf/templates/redis/start-ha.sh.
# docs/redis.md, "Roles at start", explains the protocol; in short:
#
# The role is never guessed.  redis-server starts at once as a STANDBY: a replica of
# 127.0.0.1:0, where nothing can listen, with replica-priority 0.  A standby loads its data and
# answers INFO and reads (the sentinels and the other pods inspect it), but takes no write,
# syncs from nobody and is never promoted.  An agent in the background asks EVERY sentinel and
# applies the role at run time (REPLICAOF):
#
#   R1  AGREE sentinels (the quorum, and at least a majority) name the same primary P.
#       P is another pod: become its replica.  P is this pod: become primary, but only when
#       every sentinel naming it reports the flags "master" (not down, no failover running),
#       no sentinel that answers names anyone else, no other pod reports role:master and no
#       other pod holds a newer HA stamp.  In that last case (a primary back on an empty
#       volume) it asks Sentinel to fail over instead.
#   R2  A truly empty set: this pod is ordinal 0 (BOOTSTRAP), its volume held no data at
#       start, EVERY other pod answers, fully loaded, not a master and without a key, and no
#       sentinel names anyone else.  Then it becomes primary without a quorum (first deploy).
#   Otherwise it waits and asks again, backing off from RETRY_MIN to RETRY_MAX seconds, for
#   ever: not Ready and read-only, but alive (PING answers, so liveness never restarts it).
#
# Once a primary, the agent refreshes the HA stamp every STAMP_INTERVAL seconds: the key
# STAMP_KEY in db STAMP_DB holds "<term> <unix ms> <host:port>", and the term grows by one
# with each promotion.  After a full restart, when no sentinel remembers anything, the
# sentinels pick the pod with the newest stamp (sentinel-start.sh).
set -eu
SCRIPT=redis-start
: "${REDIS_PASSWORD:?REDIS_PASSWORD is empty: refusing to start a Redis without a password}"
: "${SENTINEL_PASSWORD:?SENTINEL_PASSWORD is empty: the sentinels cannot be asked}"
# ---- where things are: stable DNS names (host:port, space-separated) and paths ----
SELF="@SELF@"
PORT=@PORT@
SENTINELS="@SENTINELS@"
PEERS="@PEERS@"
BOOTSTRAP="@BOOTSTRAP@"
DATA_DIR=@DATA_DIR@
TEMPLATE=@TEMPLATE@
LIVE_DIR=@LIVE_DIR@
# ---- the protocol's constants (tikit/conf/redis.py) ----
MASTER_NAME=@MASTER@
AGREE=@AGREE@
ASK_TIMEOUT=@ASK_TIMEOUT@
RETRY_MIN=@RETRY_MIN@
RETRY_MAX=@RETRY_MAX@
FAILOVER_REQUEST_INTERVAL=@FAILOVER_REQUEST_INTERVAL@
STAMP_DB=@STAMP_DB@
STAMP_KEY=@STAMP_KEY@
STAMP_INTERVAL=@STAMP_INTERVAL@
REPLICA_PRIORITY=@REPLICA_PRIORITY@
ME="$SELF:$PORT"
@FUNCTIONS@

# The volume has held data: an RDB, anything in the AOF directory, or a pre-7.0 AOF file.
own_dir_empty() {
    [ -e "$DATA_DIR/@DBFILENAME@" ] && return 1
    if [ -d "$DATA_DIR/@APPENDDIRNAME@" ] && [ -n "$(ls -A "$DATA_DIR/@APPENDDIRNAME@" 2>/dev/null)" ]; then
        return 1
    fi
    for _f in "$DATA_DIR"/*.aof; do [ -e "$_f" ] && return 1; done
    return 0
}

# The flags the sentinel at $1:$2 reports for the primary ("master", "master,s_down", ...).
sentinel_flags() {
    sentinel_cli "$1" "$2" SENTINEL MASTER "$MASTER_NAME" | awk 'NR % 2 == 1 { k = $0; next } k == "flags" { print; exit }'
}

# Every other pod that reports role:master.
peer_masters() {
    for _hp in $PEERS; do
        [ "$_hp" = "$ME" ] && continue
        _info=$(cli "$REDIS_PASSWORD" "${_hp%:*}" "${_hp##*:}" INFO replication)
        [ "$(field role "$_info")" = master ] && printf '%s ' "$_hp"
    done
    return 0
}

# Every other pod whose HA stamp is newer than this pod's.
peers_newer() {
    # shellcheck disable=SC2046 # "<term> <ms> <owner>"
    set -- $(stamp_of 127.0.0.1 "$PORT")
    _mt=$1 _mm=$2
    for _hp in $PEERS; do
        [ "$_hp" = "$ME" ] && continue
        # shellcheck disable=SC2046
        set -- $(stamp_of "${_hp%:*}" "${_hp##*:}")
        if [ "$1" -gt "$_mt" ] || { [ "$1" -eq "$_mt" ] && [ "$2" -gt "$_mm" ]; }; then
            printf '%s ' "$_hp"
        fi
    done
    return 0
}

# True when every other pod answers, has loaded its data, is no master and holds no key.
peers_all_empty() {
    peers_why=""
    for _hp in $PEERS; do
        [ "$_hp" = "$ME" ] && continue
        _info=$(cli "$REDIS_PASSWORD" "${_hp%:*}" "${_hp##*:}" INFO replication keyspace persistence)
        _role=$(field role "$_info")
        if [ -z "$_role" ]; then peers_why="$_hp does not answer"; return 1; fi
        if [ "$(field loading "$_info")" != 0 ]; then peers_why="$_hp is loading"; return 1; fi
        if [ "$_role" = master ]; then peers_why="$_hp is a master"; return 1; fi
        if printf '%s\n' "$_info" | grep -q '^db[0-9]*:keys='; then peers_why="$_hp holds data"; return 1; fi
    done
    return 0
}

# Sets decision ("", "primary" or "replica <host> <port>"), why, and want_failover.
decide() {
    decision="" why="" want_failover=no
    _votes="" _answered=0 _unsettled=0 _other=0
    for _hp in $SENTINELS; do
        _a=$(sentinel_addr "${_hp%:*}" "${_hp##*:}")
        [ -n "$_a" ] || continue
        _answered=$((_answered + 1))
        _votes="$_votes$_a
"
        if [ "$_a" = "$SELF $PORT" ]; then
            [ "$(sentinel_flags "${_hp%:*}" "${_hp##*:}")" = master ] || _unsettled=$((_unsettled + 1))
        else
            _other=$((_other + 1))
        fi
    done
    _count=0 _primary=""
    _top=$(printf '%s' "$_votes" | top_vote)
    if [ -n "$_top" ]; then
        _count=${_top%% *} _primary=${_top#* }
    fi
    if [ "$_count" -ge "$AGREE" ]; then
        if [ "$_primary" != "$SELF $PORT" ]; then
            decision="replica $_primary" why="$_count of $_answered sentinels name $_primary"
            return 0
        fi
        if [ "$_unsettled" -gt 0 ] || [ "$_other" -gt 0 ]; then
            why="$_count sentinels name this pod, but $_unsettled see it down or failing over and $_other name another"
            return 0
        fi
        _m=$(peer_masters)
        if [ -n "$_m" ]; then
            why="$_count sentinels name this pod, but $_m report role:master"
            return 0
        fi
        _n=$(peers_newer)
        if [ -n "$_n" ]; then
            # Back on an empty (or older) volume: as primary it would hand its replicas that
            # state in a full sync.  Sentinel would fail over by itself only after this pod
            # had reported role:slave for down-after + 20 s: ask it now.
            why="$_count sentinels name this pod, but $_n hold a newer HA stamp"
            want_failover=yes
            return 0
        fi
        decision=primary why="$_count of $_answered sentinels name this pod, no other pod is master"
        return 0
    fi
    if [ "$ME" = "$BOOTSTRAP" ] && [ "$own_empty_at_start" = yes ] && [ "$_other" -eq 0 ]; then
        if peers_all_empty; then
            decision=primary why="bootstrap: empty volume, every other pod empty, no sentinel names another"
            return 0
        fi
        why="no sentinel quorum ($_count of $AGREE) and no bootstrap: $peers_why"
        return 0
    fi
    why="no sentinel quorum ($_count of $AGREE needed, $_answered answered)"
}

# Written on the primary only (a replica answers READONLY, a primary without an in-sync
# replica NOREPLICAS: both harmless).  The term grows when the owner changes.
stamp_lua='
local v = redis.call("GET", KEYS[1])
local term, owner = 0, ""
if v then
  local t, o = string.match(v, "^(%d+) %d+ (.+)$")
  if t then term = tonumber(t); owner = o end
end
if owner ~= ARGV[1] then term = term + 1 end
local now = redis.call("TIME")
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local s = string.format("%d %d %s", term, ms, ARGV[1])
redis.call("SET", KEYS[1], s)
return s'

agent() {
    set +e # a failed check must never end the agent: the pod would stay a standby
    while :; do
        kill -0 "$server_pid" 2>/dev/null || exit 0
        [ "$(field loading "$(local_cli INFO persistence)")" = 0 ] && break
        sleep 0.1
    done
    delay=$RETRY_MIN last_why="" last_failover=0
    while :; do
        kill -0 "$server_pid" 2>/dev/null || exit 0
        decide
        [ -n "$decision" ] && break
        if [ "$why" != "$last_why" ]; then log "$ME standby, waiting: $why"; last_why=$why; fi
        if [ "$want_failover" = yes ] && [ $(($(date +%s) - last_failover)) -ge "$FAILOVER_REQUEST_INTERVAL" ]; then
            last_failover=$(date +%s)
            for _hp in $SENTINELS; do
                _r=$(sentinel_cli "${_hp%:*}" "${_hp##*:}" SENTINEL FAILOVER "$MASTER_NAME")
                log "$ME asked sentinel $_hp to fail over away from this pod: ${_r:-no answer}"
                [ "$_r" = OK ] && break
            done
        fi
        sleep "$delay"
        delay=$(backoff "$delay" "$RETRY_MAX")
    done
    case "$decision" in
    primary)
        _r=$(local_cli REPLICAOF NO ONE)
        local_cli CONFIG SET replica-priority "$REPLICA_PRIORITY" >/dev/null
        log "$ME role: primary ($why) [$_r]"
        ;;
    *)
        # shellcheck disable=SC2086 # "replica <host> <port>"
        set -- $decision
        _r=$(local_cli REPLICAOF "$2" "$3")
        local_cli CONFIG SET replica-priority "$REPLICA_PRIORITY" >/dev/null
        log "$ME role: replica of $2:$3 ($why) [$_r]"
        ;;
    esac
    while kill -0 "$server_pid" 2>/dev/null; do
        local_cli -n "$STAMP_DB" EVAL "$stamp_lua" 1 "$STAMP_KEY" "$ME" >/dev/null
        sleep "$STAMP_INTERVAL"
    done
}

if own_dir_empty; then own_empty_at_start=yes; else own_empty_at_start=no; fi
# Sentinel's failover sends CONFIG REWRITE, which needs a writable file: run from a copy,
# private, because the rewrite writes the passwords into it.
umask 077
mkdir -p "$LIVE_DIR"
cp "$TEMPLATE" "$LIVE_DIR/@REDIS_CONF@"
# redis-server replaces this shell (the container's main process keeps getting SIGTERM
# directly); $$ is this shell's PID, so redis-server's once it has replaced the shell.
server_pid=$$
agent &
log "$ME starting as standby (volume empty: $own_empty_at_start; $AGREE sentinels must agree)"
exec redis-server "$LIVE_DIR/@REDIS_CONF@" @SERVER_ARGS@ \
    --replica-announce-ip "$SELF" --replica-announce-port "$PORT" \
    --replicaof 127.0.0.1 0 --replica-priority 0
