#!/bin/sh
# preStop hook of a Redis data pod where Sentinel runs. Rendered by tikit-infra from tikit/conf/templates/redis/handover.sh.
# docs/redis.md, "Handover", explains it.  A replica exits at once; the primary hands its role
# over through Sentinel before Kubernetes sends SIGTERM, losing no acknowledged write:
#
#   1. only when this pod is master, AGREE sentinels name it, a replica is online and a
#      sentinel's own (cached) view holds a promotable replica (up to ELIGIBLE_TIMEOUT s);
#   2. CLIENT PAUSE WRITE: writes wait, reads go on.  The pause expires by itself, so a hook
#      killed half-way never leaves the primary frozen;
#   3. wait until every online replica has processed the primary's offset (CATCHUP_TIMEOUT):
#      whichever replica Sentinel promotes then holds every acknowledged write;
#   4. demote itself to a replica of nothing (REPLICAOF 127.0.0.1 0): from here until the
#      promotion there is no master at all, never two;
#   5. SENTINEL FAILOVER on that sentinel (then the others, should it refuse);
#   6. follow the replica that reports role:master as soon as it does;
#   7. stay paused until AGREE sentinels name the new primary (QUORUM_TIMEOUT), so writers
#      wait instead of failing, then CLIENT KILL TYPE normal (clients ask Sentinel again
#      instead of meeting READONLY) and CLIENT UNPAUSE.
# Should every sentinel refuse, the pod becomes master again and unpauses (no handover).
# Once a sentinel has accepted, this pod never takes a write again.  Every wait ends by
# DEADLINE seconds after the start; the pod runs the hook under timeout(1) with the same
# deadline, and terminationGracePeriodSeconds covers it plus shutdown-timeout and the final
# save (tikit/components/redis.py).  The hook exits 0 except when a password is missing.
set -u
SCRIPT=redis-handover
# ---- where things are: stable DNS names (host:port, space-separated) ----
SELF="@SELF@"
PORT=@PORT@
SENTINELS="@SENTINELS@"
# ---- the protocol's constants (tikit/conf/redis.py) ----
MASTER_NAME=@MASTER@
AGREE=@AGREE@
ASK_TIMEOUT=@ASK_TIMEOUT@
DEADLINE=@DEADLINE@
ELIGIBLE_TIMEOUT=@ELIGIBLE_TIMEOUT@
CATCHUP_TIMEOUT=@CATCHUP_TIMEOUT@
QUORUM_TIMEOUT=@QUORUM_TIMEOUT@
# How long the pause outlives the hook when a failover was accepted but not seen to finish:
# until redis-server has shut down (shutdown-timeout plus the final save).
PAUSE_AFTER=@PAUSE_AFTER@
ME="$SELF:$PORT"
@FUNCTIONS@
if [ -z "${REDIS_PASSWORD:-}" ] || [ -z "${SENTINEL_PASSWORD:-}" ]; then die "REDIS_PASSWORD and SENTINEL_PASSWORD must be set"; fi

started=$(date +%s)
deadline=$((started + DEADLINE))
now() { date +%s; }

# How many sentinels name "$1" ("host port").
count_naming() {
    _n=0
    for _hp in $SENTINELS; do
        [ "$(sentinel_addr "${_hp%:*}" "${_hp##*:}")" = "$1" ] && _n=$((_n + 1))
    done
    echo "$_n"
}

# "host port" of every replica this primary's INFO lists as online.
online_replicas() {
    printf '%s\n' "$1" | sed -n 's/^slave[0-9]*:\(.*\)$/\1/p' | awk -F, '{
        ip = ""; port = ""; state = ""
        for (i = 1; i <= NF; i++) {
            split($i, kv, "=")
            if (kv[1] == "ip") ip = kv[2]; else if (kv[1] == "port") port = kv[2]; else if (kv[1] == "state") state = kv[2]
        }
        if (state == "online") print ip, port
    }'
}

# How many replicas the sentinel at $1:$2 would promote now (flags "slave", link ok,
# priority above 0).  Sentinel refreshes a replica's INFO every 10 s only, so right after a
# replica restarted a sentinel may still see it unpromotable.
promotable() {
    sentinel_cli "$1" "$2" SENTINEL REPLICAS "$MASTER_NAME" | awk '
        function flush() { if (seen && flags == "slave" && link == "ok" && prio > 0) n++; seen = 0; flags = link = ""; prio = 0 }
        NR % 2 == 1 { key = $0; if (key == "name") { flush(); seen = 1 } next }
        key == "flags" { flags = $0 } key == "master-link-status" { link = $0 } key == "slave-priority" { prio = $0 + 0 }
        END { flush(); print n + 0 }'
}

paused=no failover_sent=no demoted=no
# shellcheck disable=SC2317 # called through the EXIT trap
finish() {
    [ "$failover_sent" = no ] || return 0
    if [ "$demoted" = yes ]; then
        log "$ME no failover: master again: REPLICAOF NO ONE $(local_cli REPLICAOF NO ONE)"
    fi
    if [ "$paused" = yes ]; then
        local_cli CLIENT UNPAUSE >/dev/null
        log "$ME writes unpaused (no handover)"
    fi
}
trap finish EXIT
trap 'exit 0' INT TERM

info=$(local_cli INFO replication)
role=$(field role "$info")
if [ "$role" != master ]; then
    log "$ME role ${role:-unknown}: nothing to hand over"
    exit 0
fi
naming=$(count_naming "$SELF $PORT")
if [ "$naming" -lt "$AGREE" ]; then
    log "$ME only $naming sentinels name this pod ($AGREE needed): no handover"
    exit 0
fi
if [ -z "$(online_replicas "$info")" ]; then
    log "$ME no online replica: no handover"
    exit 0
fi

# 1. A sentinel that names this pod and would promote one of its replicas.
eligible_deadline=$(($(now) + ELIGIBLE_TIMEOUT))
chosen=""
while [ -z "$chosen" ]; do
    for hp in $SENTINELS; do
        if [ "$(sentinel_addr "${hp%:*}" "${hp##*:}")" = "$SELF $PORT" ] && [ "$(promotable "${hp%:*}" "${hp##*:}")" -ge 1 ]; then
            chosen=$hp
            break
        fi
    done
    [ -n "$chosen" ] && break
    if [ "$(now)" -ge "$eligible_deadline" ]; then
        log "$ME no sentinel sees a promotable replica after ${ELIGIBLE_TIMEOUT}s: no handover"
        exit 0
    fi
    sleep 0.2
done

# 2. Pause writes, for longer than this hook and the shutdown after it can take.
pause_ms=$(((deadline - $(now) + PAUSE_AFTER) * 1000))
if [ "$(local_cli CLIENT PAUSE "$pause_ms" WRITE)" != OK ]; then
    log "$ME CLIENT PAUSE failed: no handover"
    exit 0
fi
paused=yes
log "$ME writes paused (at most ${pause_ms} ms); sentinel $chosen sees a promotable replica"

# 3. Every online replica reaches the frozen offset.
catchup_deadline=$(($(now) + CATCHUP_TIMEOUT))
[ "$catchup_deadline" -gt "$deadline" ] && catchup_deadline=$deadline
while :; do
    info=$(local_cli INFO replication)
    target=$(field master_repl_offset "$info")
    replicas=$(online_replicas "$info")
    behind=0 ok=0
    while read -r h p; do
        [ -n "$h" ] || continue
        off=$(field slave_repl_offset "$(cli "$REDIS_PASSWORD" "$h" "$p" INFO replication)")
        case "$off" in '' | *[!0-9]*) behind=$((behind + 1)); continue ;; esac
        if [ "$off" -ge "$target" ]; then ok=$((ok + 1)); else behind=$((behind + 1)); fi
    done <<EOF
$replicas
EOF
    if [ "$ok" -ge 1 ] && [ "$behind" -eq 0 ]; then
        log "$ME $ok replica(s) at offset $target"
        break
    fi
    if [ "$(now)" -ge "$catchup_deadline" ]; then
        log "$ME replicas not at offset $target after ${CATCHUP_TIMEOUT}s ($behind behind): no handover"
        exit 0
    fi
    sleep 0.02
done

# 4. No master from here until Sentinel promotes a replica.
r=$(local_cli REPLICAOF 127.0.0.1 0)
if [ "$r" != OK ]; then
    log "$ME REPLICAOF 127.0.0.1 0 failed (${r:-no answer}): no handover"
    exit 0
fi
demoted=yes

# 5. Ask for the failover.  No reply at all counts as accepted: the failover may have
#    started, and asking another sentinel (or becoming master again) could make two.
leader=""
for hp in $chosen $SENTINELS; do
    out=$(sentinel_cli "${hp%:*}" "${hp##*:}" SENTINEL FAILOVER "$MASTER_NAME")
    case "$out" in
    OK) leader=$hp; break ;;
    INPROG*) leader=$hp; log "$ME sentinel $hp: a failover is already in progress"; break ;;
    '') leader=$hp; log "$ME no reply from sentinel $hp to SENTINEL FAILOVER: treated as accepted"; break ;;
    esac
    log "$ME sentinel $hp refused SENTINEL FAILOVER: $out"
done
if [ -z "$leader" ]; then
    log "$ME no sentinel accepted SENTINEL FAILOVER: no handover"
    exit 0 # the EXIT trap makes this pod master again and unpauses it
fi
failover_sent=yes
log "$ME SENTINEL FAILOVER accepted by $leader"

# 6. Follow the promoted replica as soon as it reports master (the sentinels name it only
#    after their next INFO, up to a second later).
new=""
while [ "$(now)" -lt "$deadline" ]; do
    while read -r h p; do
        [ -n "$h" ] || continue
        if [ "$(cli "$REDIS_PASSWORD" "$h" "$p" ROLE | sed -n 1p)" = master ]; then
            new="$h $p"
            break
        fi
    done <<EOF
$replicas
EOF
    [ -n "$new" ] && break
    sleep 0.02
done
if [ -z "$new" ]; then
    log "$ME no new primary within ${DEADLINE}s: staying paused until shutdown"
    exit 0
fi
# shellcheck disable=SC2086 # "host port"
set -- $new
log "$ME new primary $1:$2: REPLICAOF $(local_cli REPLICAOF "$1" "$2")"

# 7. Release the writers once the sentinels send them to the new primary.
named=0
quorum_deadline=$(($(now) + QUORUM_TIMEOUT))
[ "$quorum_deadline" -gt "$deadline" ] && quorum_deadline=$deadline
while [ "$(now)" -lt "$quorum_deadline" ]; do
    named=$(count_naming "$new")
    [ "$named" -ge "$AGREE" ] && break
    sleep 0.05
done
local_cli CLIENT KILL TYPE normal >/dev/null
local_cli CLIENT UNPAUSE >/dev/null
paused=no
log "$ME handover done: $named sentinels name $1:$2; clients disconnected, writes unpaused (READONLY here now)"
exit 0
