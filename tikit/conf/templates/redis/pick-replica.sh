pick_replica() {
    while read -r h p; do
        info=$(timeout @ASK_TIMEOUT@ redis-cli -h "$h" -p "$p" INFO replication 2>/dev/null </dev/null) || continue
        [ "$(field role "$info")" = slave ] || continue
        [ "$(field master_link_status "$info")" = up ] || continue
        [ "$(field master_sync_in_progress "$info")" = 0 ] || continue
        silence=$(field master_last_io_seconds_ago "$info")
        case "$silence" in ''|*[!0-9]*) continue ;; esac
        [ "$silence" -le "$REPLICA_MAX_SILENCE" ] || continue
        printf '%s %s\n' "$h" "$p"
        return 0
    done
}
