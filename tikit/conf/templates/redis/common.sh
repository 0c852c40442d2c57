log() { printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SCRIPT" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
field() { printf '%s\n' "$2" | tr -d '\r' | sed -n "s/^$1://p"; }
