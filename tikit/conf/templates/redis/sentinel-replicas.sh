sentinel_replicas() {
    REDISCLI_AUTH="$SENTINEL_PASSWORD" timeout @ASK_TIMEOUT@ redis-cli -h "$1" -p "$2" --raw SENTINEL replicas "$3" 2>/dev/null | tr -d '\r' | awk '
        function flush() { if (ip != "" && flags == "slave" && link == "ok") print ip, port; ip = port = flags = link = "" }
        NR % 2 == 1 { key = $0; if (key == "name") flush(); next }
        key == "ip" { ip = $0 } key == "port" { port = $0 } key == "flags" { flags = $0 }
        key == "master-link-status" { link = $0 }
        END { flush() }'
}
