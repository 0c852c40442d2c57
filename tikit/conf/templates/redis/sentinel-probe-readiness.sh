cli() { REDISCLI_AUTH="$SENTINEL_PASSWORD" redis-cli -p @PORT@ "$@" 2>&1; }
out=$(cli PING)
[ "$out" = PONG ] || { echo "$out"; exit 1; }
port=$(cli --raw SENTINEL get-master-addr-by-name @MASTER@ | sed -n 2p)
case "$port" in ""|*[!0-9]*) echo "no primary known for @MASTER@"; exit 1 ;; esac
