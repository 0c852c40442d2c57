#!/usr/bin/env bash
# Install the Debian daemons the integration tests run against, when any is missing:
# PostgreSQL + pgbench, PgBouncer, Redis + Sentinel, Prometheus (promtool), the Redis
# exporter, shellcheck for the scripts the Redis tier renders, Node.js, which loads
# the rendered k6 load-test script, Barman Cloud (barman-cli-cloud: WAL archive, base
# backups and point-in-time restores against a local S3) and rclone (the Redis backups).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null; }
have redis-server || need+=(redis-server)
have redis-sentinel || need+=(redis-sentinel)
have redis-benchmark || need+=(redis-tools)
have initdb || need+=(postgresql)
have pgbench || need+=(postgresql-client)
have pgbouncer || need+=(pgbouncer)
have promtool || need+=(prometheus)
have prometheus-redis-exporter || need+=(prometheus-redis-exporter)
have shellcheck || need+=(shellcheck)
have node || need+=(nodejs)
have barman-cloud-backup || need+=(barman-cli-cloud)
have rclone || need+=(rclone)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "install-system-deps: installing ${need[*]}" >&2
# sudo drops most of the environment, so the variable goes through env after it.
apt_get="env DEBIAN_FRONTEND=noninteractive apt-get"; [ "$(id -u)" = 0 ] || apt_get="sudo $apt_get"
$apt_get update -qq
# Package scripts try to start the daemons as services; the tests start their own.
$apt_get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
