    : "${SENTINEL_PASSWORD:?SENTINEL_PASSWORD (the Sentinel password) is not set}"
    SENTINEL_HOST="${SENTINEL_HOST:-@SENTINEL_HOST@}"
    SENTINEL_PORT="${SENTINEL_PORT:-@SENTINEL_PORT@}"
    primary=$(ask_sentinel "$SENTINEL_HOST" "$SENTINEL_PORT" @MASTER@)
    [ -n "$primary" ] || die "no sentinel at $SENTINEL_HOST:$SENTINEL_PORT knows the primary"
    replica=$(sentinel_replicas "$SENTINEL_HOST" "$SENTINEL_PORT" @MASTER@ | pick_replica)
