[ "$(redis-cli -p @PORT@ PING 2>&1)" = PONG ] || exit 1
port=$(redis-cli -p @PORT@ --raw SENTINEL get-master-addr-by-name @MASTER@ 2>&1 | sed -n 2p)
case "$port" in ""|*[!0-9]*) echo "no primary known for @MASTER@"; exit 1 ;; esac
