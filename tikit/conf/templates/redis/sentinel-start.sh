#!/bin/sh
# Sentinel entry point. Rendered by tikit-infra from tikit/conf/templates/redis/sentinel-start.sh.
set -eu
: "${REDIS_PASSWORD:?REDIS_PASSWORD is empty}"
@ASK_SENTINEL@
mkdir -p @LIVE_DIR@
current=$(ask_sentinel @SENTINEL_HOST@ @SENTINEL_PORT@ @MASTER@)
if [ -n "$current" ]; then
    # The template names the bootstrap primary; after a failover that is a replica, or gone.
    sed "s|^sentinel monitor @MASTER@ .*|sentinel monitor @MASTER@ $current @QUORUM@|" @TEMPLATE@ > @CONF@
else
    cp @TEMPLATE@ @CONF@
fi
# Quoted for Redis' config parser: backslash and double quote escaped.
password=$(printf '%s' "$REDIS_PASSWORD" | sed 's/[\\"]/\\&/g')
printf 'sentinel auth-pass @MASTER@ "%s"\n' "$password" >> @CONF@
@ANNOUNCE@
exec redis-sentinel @CONF@
