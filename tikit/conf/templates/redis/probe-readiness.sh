cli() { REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p @PORT@ "$@" 2>&1; }
out=$(cli PING)
[ "$out" = PONG ] || { echo "$out"; exit 1; }
info=$(cli INFO replication | tr -d '\r')
case "$info" in *role:master*) exit 0 ;; esac
case "$info" in *master_link_status:up*) ;; *) echo "replica: link to the primary is down"; exit 1 ;; esac
case "$info" in *master_sync_in_progress:0*) exit 0 ;; esac
echo "replica: full sync in progress"
exit 1
