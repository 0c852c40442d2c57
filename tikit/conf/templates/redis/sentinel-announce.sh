pod="${POD_NAME:-$(hostname)}"
printf 'sentinel announce-ip %s\nsentinel announce-port %s\n' "$pod.@ANNOUNCE_DOMAIN@" @ANNOUNCE_PORT@ >> @CONF@
