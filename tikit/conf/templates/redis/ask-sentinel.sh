ask_sentinel() {
    answer=$(REDISCLI_AUTH="$SENTINEL_PASSWORD" timeout @ASK_TIMEOUT@ redis-cli -h "$1" -p "$2" --raw SENTINEL get-master-addr-by-name "$3" 2>/dev/null) || return 0
    ask_host=$(printf '%s\n' "$answer" | sed -n 1p)
    ask_port=$(printf '%s\n' "$answer" | sed -n 2p)
    case "$ask_port" in ''|*[!0-9]*) return 0 ;; esac
    case "$ask_host" in ''|*' '*) return 0 ;; esac
    printf '%s %s\n' "$ask_host" "$ask_port"
}
