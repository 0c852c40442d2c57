# ---- Role discovery helpers shared by start-ha.sh and sentinel-start.sh ----
# The program sets STAMP_DB and STAMP_KEY (and what ha-lib.sh needs).

# "<count> <host> <port>" of the primary the most sentinels name (from "host port" lines on
# stdin), or nothing.
top_vote() { sed '/^$/d' | sort | uniq -c | sort -rn | head -n 1 | awk '{ print $1, $2, $3 }'; }

# Next backoff step: twice $1, at most $2 (seconds, fractions allowed).
backoff() { awk -v d="$1" -v m="$2" 'BEGIN { d *= 2; if (d > m) d = m; print d }'; }

# "<term> <ms> <owner>" of the HA stamp on the data pod at $1:$2, "0 0 -" when it has none
# (or does not answer).  The primary's agent (start-ha.sh) writes it; see STAMP_KEY there.
stamp_of() {
    _s=$(cli "$REDIS_PASSWORD" "$1" "$2" -n "$STAMP_DB" GET "$STAMP_KEY")
    case "$_s" in
    *' '*' '*)
        # shellcheck disable=SC2086 # "<term> <ms> <host:port>"
        set -- $_s
        case "$1$2" in *[!0-9]*) ;; *) echo "$1 $2 $3"; return 0 ;; esac
        ;;
    esac
    echo "0 0 -"
}
