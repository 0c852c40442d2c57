out=$(REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p @PORT@ PING 2>&1)
case "$out" in PONG|*LOADING*|*MASTERDOWN*) exit 0 ;; esac
echo "$out"
exit 1
