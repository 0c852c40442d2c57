# ---- the store: the only part that knows where backups live ----
case "$STORE" in
file://*)
    root="${STORE#file://}"
    store_put() { mkdir -p "$root/$(dirname "$2")" && cp "$1" "$root/$2.part" && mv "$root/$2.part" "$root/$2"; }
    store_get() { cp "$root/$1" "$2"; }
    store_list() { if [ -d "$root/$1" ]; then ls -1 "$root/$1"; fi; }
    store_delete() { rm -rf "${root:?}/$1"; }
    ;;
s3://*)
    remote=":s3:${STORE#s3://}"
    @S3_EXPORTS@
    export HOME="${HOME:-/tmp}"
    store_put() { rclone copyto "$1" "$remote/$2"; }
    store_get() { rclone copyto "$remote/$1" "$2"; }
    store_list() { rclone lsf "$remote/$1" | sed 's:/$::'; }
    store_delete() { rclone purge "$remote/$1"; }
    ;;
*) die "STORE must be file:///path or s3://bucket[/prefix], got '$STORE'" ;;
esac
