# Alive while the start script is still deciding what to monitor (it waits for the data pods as
# long as that takes: a restart would only start the wait over), then while PING answers.
if [ -e @DISCOVERING@ ]; then exit 0; fi
[ "$(REDISCLI_AUTH="$SENTINEL_PASSWORD" redis-cli -p @PORT@ PING 2>&1)" = PONG ]
