# ---- Sentinel helpers shared by start-ha.sh, sentinel-start.sh and handover.sh ----
# The program sets ASK_TIMEOUT, MASTER_NAME, PORT, REDIS_PASSWORD and SENTINEL_PASSWORD.

# cli PASSWORD HOST PORT ARGS...: the reply as text, CRs stripped; nothing on a timeout or a
# refused connection.  timeout(1), because redis-cli 7.0 has no connect timeout; redis-cli
# exits 0 on error replies, so callers check the text, never the exit status.
cli() {
    _pw=$1 _h=$2 _p=$3
    shift 3
    REDISCLI_AUTH=$_pw timeout "$ASK_TIMEOUT" redis-cli -h "$_h" -p "$_p" --raw "$@" </dev/null 2>/dev/null | tr -d '\r' || true
}
# This pod's own redis-server.
local_cli() { cli "$REDIS_PASSWORD" 127.0.0.1 "$PORT" "$@"; }
# The sentinel at HOST:PORT: what it answers.
sentinel_cli() {
    _h=$1 _p=$2
    shift 2
    cli "$SENTINEL_PASSWORD" "$_h" "$_p" "$@"
}

# "host port" of the primary the sentinel at $1:$2 names, or nothing (no answer, an error,
# an unknown master).
sentinel_addr() {
    _out=$(sentinel_cli "$1" "$2" SENTINEL get-master-addr-by-name "$MASTER_NAME")
    _host=$(printf '%s\n' "$_out" | sed -n 1p)
    _port=$(printf '%s\n' "$_out" | sed -n 2p)
    case "$_port" in '' | *[!0-9]*) return 0 ;; esac
    case "$_host" in '' | *' '*) return 0 ;; esac
    printf '%s %s\n' "$_host" "$_port"
}
