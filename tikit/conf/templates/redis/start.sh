#!/bin/sh
# Redis data pod entry point where no Sentinel runs. Rendered by tikit-infra from tikit/conf/templates/redis/start.sh.
# Nothing moves the primary there: ordinal 0 is the primary, every other pod replicates it.
# (Where Sentinel runs, start-ha.sh is the entry point instead.)
set -eu
: "${REDIS_PASSWORD:?REDIS_PASSWORD is empty: refusing to start a Redis without a password}"
pod="${POD_NAME:-$(hostname)}"
self="@SELF@"
# Run from a writable copy, as where Sentinel runs (CONFIG REWRITE needs one).
mkdir -p @LIVE_DIR@
cp @TEMPLATE@ @LIVE_CONF@
set -- @LIVE_CONF@ @SERVER_ARGS@ --replica-announce-ip "$self"
case "$pod" in
    *-0) ;;
    *) set -- "$@" --replicaof @PRIMARY0_HOST@ @PORT@ ;;
esac
exec redis-server "$@"
