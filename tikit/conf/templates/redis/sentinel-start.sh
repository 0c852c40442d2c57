#!/bin/sh
# Sentinel entry point. Rendered by tikit-infra from tikit/conf/templates/redis/sentinel-start.sh.
# docs/redis.md, "Roles at start", explains the protocol; in short:
#
# A sentinel has no volume: its config starts from the template every time, and the template
# names ordinal 0, which after a failover or a full restart may be a stale replica.  Every
# data pod that followed it would throw newer data away.  So before redis-sentinel starts,
# the script decides which pod to monitor:
#
#   S1  AGREE other sentinels (the quorum, and at least a majority) name the same primary.
#   S2a Exactly one data pod reports role:master, and no other sentinel that answers names
#       someone else (a failover under way).
#   S2b No data pod is master, and EVERY data pod answers, fully loaded: all of them empty
#       means a first deploy, so ordinal 0 (BOOTSTRAP); otherwise the pod with the newest HA
#       stamp (term, then time, then "the stamp is its own", then key count, then ordinal).
#   Otherwise it waits and asks again, for ever.  FORCE_PRIMARY=<host>:<port> in the
#   environment skips all this: an operator's override (docs/runbooks/redis-restore.md).
#
# Then it writes the config: the template with that primary, the passwords (requirepass for
# clients, sentinel-pass between sentinels, auth-pass for the data pods), what this sentinel
# announces and every other data pod as a known replica (a failover does not have to wait
# for the primary's INFO to list them).  The file is private (mode 0600).
set -eu
SCRIPT=sentinel-start
: "${REDIS_PASSWORD:?REDIS_PASSWORD is empty}"
: "${SENTINEL_PASSWORD:?SENTINEL_PASSWORD is empty: refusing to start a Sentinel without a password}"
# ---- where things are: stable DNS names (host:port, space-separated) and paths ----
SELF="@SELF@"
PORT=@PORT@
SENTINELS="@SENTINELS@"
PEERS="@PEERS@"
BOOTSTRAP="@BOOTSTRAP@"
TEMPLATE=@TEMPLATE@
LIVE_DIR=@LIVE_DIR@
# ---- the protocol's constants (tikit/conf/redis.py) ----
MASTER_NAME=@MASTER@
QUORUM=@QUORUM@
AGREE=@AGREE@
ASK_TIMEOUT=@ASK_TIMEOUT@
RETRY_MIN=@RETRY_MIN@
RETRY_MAX=@RETRY_MAX@
STAMP_DB=@STAMP_DB@
STAMP_KEY=@STAMP_KEY@
ME="$SELF:$PORT"
@FUNCTIONS@

# Quoted for Redis' config parser: backslash and double quote escaped.
conf_quote() { printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"; }

# Sets primary ("host port" or "") and why.
discover() {
    primary="" why=""
    _votes=""
    for _hp in $SENTINELS; do
        [ "$_hp" = "$ME" ] && continue
        _votes="$_votes$(sentinel_addr "${_hp%:*}" "${_hp##*:}")
"
    done
    _top=$(printf '%s' "$_votes" | top_vote)
    if [ -n "$_top" ] && [ "${_top%% *}" -ge "$AGREE" ]; then
        primary=${_top#* } why="${_top%% *} other sentinels name it"
        return 0
    fi
    _masters="" _nmasters=0 _all=yes _missing="" _rank="" _keys_total=0 _idx=0
    for _hp in $PEERS; do
        _idx=$((_idx + 1))
        _h=${_hp%:*} _p=${_hp##*:}
        _info=$(cli "$REDIS_PASSWORD" "$_h" "$_p" INFO replication keyspace persistence)
        _role=$(field role "$_info")
        if [ -z "$_role" ]; then _all=no _missing=$_hp; continue; fi
        if [ "$_role" = master ]; then _masters="$_h $_p" _nmasters=$((_nmasters + 1)); fi
        if [ "$(field loading "$_info")" != 0 ]; then _all=no _missing="$_hp (loading)"; continue; fi
        _keys=$(printf '%s\n' "$_info" | sed -n 's/^db[0-9]*:keys=\([0-9]*\),.*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
        _keys_total=$((_keys_total + _keys))
        # shellcheck disable=SC2046 # "<term> <ms> <owner>"
        set -- $(stamp_of "$_h" "$_p")
        _own=0
        [ "$3" = "$_hp" ] && _own=1
        _rank="$_rank$1 $2 $_own $_keys $_idx $_h $_p
"
    done
    if [ "$_nmasters" -eq 1 ]; then
        if printf '%s' "$_votes" | sed '/^$/d' | grep -qvxF "$_masters"; then
            why="data pod $_masters is master, but another sentinel names someone else"
            return 0
        fi
        primary=$_masters why="the only data pod that reports role:master"
        return 0
    fi
    if [ "$_nmasters" -gt 1 ]; then
        why="$_nmasters data pods report role:master"
        return 0
    fi
    if [ "$_all" != yes ]; then
        why="no master, and not every data pod can be inspected ($_missing)"
        return 0
    fi
    if [ "$_keys_total" -eq 0 ]; then
        primary="${BOOTSTRAP%:*} ${BOOTSTRAP##*:}" why="every data pod is empty: the bootstrap primary"
        return 0
    fi
    # shellcheck disable=SC2046 # "<term> <ms> <own> <keys> <index> <host> <port>"
    set -- $(printf '%s' "$_rank" | sed '/^$/d' | sort -k1,1nr -k2,2nr -k3,3nr -k4,4nr -k5,5n | head -n 1)
    primary="$6 $7" why="no master; newest HA stamp: term $1, ms $2, own $3, keys $4"
}

# While this file exists the liveness probe leaves the wait alone (an emptyDir outlives a
# container restart, so it is removed before redis-sentinel starts, never left behind).
umask 077
mkdir -p "$LIVE_DIR"
: > "$LIVE_DIR/@DISCOVERING@"
delay=$RETRY_MIN last_why=""
while :; do
    if [ -n "${FORCE_PRIMARY:-}" ]; then
        primary="${FORCE_PRIMARY%:*} ${FORCE_PRIMARY##*:}" why="FORCE_PRIMARY set by an operator"
        break
    fi
    discover
    [ -n "$primary" ] && break
    if [ "$why" != "$last_why" ]; then log "$ME waiting: $why"; last_why=$why; fi
    sleep "$delay"
    delay=$(backoff "$delay" "$RETRY_MAX")
done
log "$ME monitoring $primary ($why)"

conf="$LIVE_DIR/@SENTINEL_CONF@"
sed "s|^sentinel monitor $MASTER_NAME .*|sentinel monitor $MASTER_NAME $primary $QUORUM|" "$TEMPLATE" > "$conf"
{
    printf 'requirepass %s\n' "$(conf_quote "$SENTINEL_PASSWORD")"
    printf 'sentinel sentinel-pass %s\n' "$(conf_quote "$SENTINEL_PASSWORD")"
    printf 'sentinel auth-pass %s %s\n' "$MASTER_NAME" "$(conf_quote "$REDIS_PASSWORD")"
    printf 'sentinel announce-ip %s\n' "$(conf_quote "$SELF")"
    printf 'sentinel announce-port %s\n' "$PORT"
    for _hp in $PEERS; do
        [ "${_hp%:*} ${_hp##*:}" = "$primary" ] && continue
        printf 'sentinel known-replica %s %s %s\n' "$MASTER_NAME" "${_hp%:*}" "${_hp##*:}"
    done
} >> "$conf"
rm -f "$LIVE_DIR/@DISCOVERING@"
exec redis-sentinel "$conf"
