#!/bin/sh
# PostgreSQL restore drill. Rendered by tikit-infra from tikit/conf/templates/postgres/restore-drill.sh.
# Runbook: docs/runbooks/restore-drills.md.
#
# 1. picks a target time TARGET_LAG_SECONDS ago (TARGET_TIME overrides it);
# 2. creates the throwaway Cluster @DRILL@ from MANIFEST: bootstrap.recovery from the primary
#    region's store to that time, owned by this Job (so it is collected with the Job even if
#    this pod is killed);
# 3. waits until it is promoted and healthy;
# 4. runs the verification query in it and compares the answer with EXPECTED;
# 5. deletes the Cluster, whatever happened (trap), and exits non-zero on any failure.
set -eu
SCRIPT=pg-restore-drill
DRILL=@DRILL@
NAMESPACE="${NAMESPACE:-@NAMESPACE@}"
MANIFEST="${MANIFEST:-@MANIFEST@}"
QUERY_FILE="${QUERY_FILE:-@QUERY_FILE@}"
DATABASE=@DATABASE@
EXPECTED=@EXPECTED@
TARGET_LAG_SECONDS=@TARGET_LAG_SECONDS@
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-@TIMEOUT_SECONDS@}"
POLL_SECONDS="${POLL_SECONDS:-@POLL_SECONDS@}"
HEALTHY="Cluster in healthy state"
: "${JOB_NAME:?JOB_NAME (the Job this pod belongs to) is not set}"
: "${JOB_UID:?JOB_UID (the uid of that Job) is not set}"
log() { printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SCRIPT" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
k() { kubectl --namespace "$NAMESPACE" "$@"; }

# Whether the drill Cluster exists; any answer but "found" or "not found" stops the drill.
exists() {
    if out=$(k get cluster "$DRILL" -o name 2>&1); then return 0; fi
    case "$out" in *NotFound*|*"not found"*) return 1 ;; esac
    die "cannot read cluster $DRILL: $out"
}
teardown() {
    if k delete cluster "$DRILL" --ignore-not-found --wait=false >&2; then
        log "cluster $DRILL deleted"
    else
        log "WARNING: could not delete cluster $DRILL; it goes with this Job (ownerReferences)"
    fi
}

started=$(date +%s)
deadline=$((started + TIMEOUT_SECONDS))

# A Cluster left by a run that was killed: delete it and wait until it is gone.
if exists; then
    log "deleting the cluster $DRILL a previous run left"
    teardown
    while exists; do
        [ "$(date +%s)" -lt "$deadline" ] || die "the old cluster $DRILL is still there after $TIMEOUT_SECONDS s"
        sleep "$POLL_SECONDS"
    done
fi

trap teardown EXIT
trap 'exit 143' TERM INT

target="${TARGET_TIME:-$(date -u -d "@$((started - TARGET_LAG_SECONDS))" +%Y-%m-%dT%H:%M:%SZ)}"
log "restoring into cluster $DRILL, target time $target"
sed -e "s|__TARGET_TIME__|$target|" -e "s|__JOB_NAME__|$JOB_NAME|" -e "s|__JOB_UID__|$JOB_UID|" "$MANIFEST" \
    | k create -f - >&2

phase=""
while :; do
    phase=$(k get cluster "$DRILL" -o jsonpath='{.status.phase}')
    ready=$(k get cluster "$DRILL" -o jsonpath='{.status.readyInstances}')
    if [ "$phase" = "$HEALTHY" ] && [ "${ready:-0}" -ge 1 ]; then break; fi
    [ "$(date +%s)" -lt "$deadline" ] || die "cluster $DRILL not healthy within $TIMEOUT_SECONDS s (phase: ${phase:-none})"
    sleep "$POLL_SECONDS"
done
restored=$(( $(date +%s) - started ))
log "cluster $DRILL recovered and promoted in $restored s"

answer=$(k exec -i "$DRILL-1" -c postgres -- \
    psql -X -q -A -t -v ON_ERROR_STOP=1 -v target="$target" -d "$DATABASE" < "$QUERY_FILE") \
    || die "the verification query failed: $answer"
ok=${answer%%|*}
[ "$ok" = "$EXPECTED" ] || die "verification answered '$answer', expected '$EXPECTED|...' (canary rows up to $target, none after)"
log "passed: restored to $target in $restored s; verification: $answer"
