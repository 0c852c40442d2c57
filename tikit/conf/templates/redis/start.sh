#!/bin/sh
# Redis data pod entry point. Rendered by tikit-infra from tikit/conf/templates/redis/start.sh.
set -eu
: "${REDIS_PASSWORD:?REDIS_PASSWORD is empty: refusing to start a Redis without a password}"
pod="${POD_NAME:-$(hostname)}"
self="@SELF@"
# Sentinel's failover sends CONFIG REWRITE, which needs a writable file: run from a copy.
mkdir -p @LIVE_DIR@
cp @TEMPLATE@ @LIVE_CONF@
primary=""
@SENTINEL_DISCOVERY@
if [ -z "$primary" ]; then
    # First boot (or no Sentinel): ordinal 0 is the primary.  Should ordinal 0 come back
    # as primary while the sentinels are down, they turn it into a replica once they are up.
    case "$pod" in
        *-0) ;;
        *) primary="@PRIMARY0@" ;;
    esac
fi
if [ "$primary" = "$self @PORT@" ]; then primary=""; fi
set -- @LIVE_CONF@ @SERVER_ARGS@ --replica-announce-ip "$self"
if [ -n "$primary" ]; then
    # shellcheck disable=SC2086 # two words: host and port
    set -- "$@" --replicaof $primary
fi
exec redis-server "$@"
