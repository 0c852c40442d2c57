"""Kubernetes object names shared between tiers: one place, so the API tier, the data
tiers, the network policies and the monitoring all agree.

Names are short and stable (they are what `kubectl` users type); Pulumi resource names
add the region so URNs stay unique across regions.
"""

PART_OF = "tikit"
# The recommended label that names an application (kube.labels sets it on every object).
APP_NAME_LABEL = "app.kubernetes.io/name"

# API and workers
BACKEND = "api"
WORKERS = "workers"
BACKEND_CONFIG = "api-config"            # ConfigMap: non-secret environment
# The Redis list the API pushes jobs onto and the workers drain (KEDA reads its length).
JOB_QUEUE = "tikit:jobs"
WORKERS_CONFIG = "workers-config"        # ConfigMap: the workers' non-secret environment

# PostgreSQL (CloudNativePG).  The cluster name carries the region because clusters of
# the distributed topology refer to each other by name.
def pg_cluster(region: str) -> str:
    return f"pg-{region}"


def pg_object_store(region: str) -> str:
    return f"pg-backups-{region}"


# The application's database and the role that owns it (the same in every region).
PG_DATABASE = "tikit"
PG_OWNER = "tikit"
PG_APP_SECRET = "pg-app"                 # basic-auth Secret for bootstrap.initdb (username, password)
# Label the CNPG operator puts on every instance pod (and its jobs): the cluster's name.
CNPG_CLUSTER_LABEL = "cnpg.io/cluster"
# Label the CNPG operator keeps on each instance pod: primary | replica (the bare `role`
# label of older releases is deprecated).
CNPG_INSTANCE_ROLE_LABEL = "cnpg.io/instanceRole"
PG_SCHEDULED_BACKUP = "pg-daily"
# Restore drills (docs/runbooks/restore-drills.md): the canary CronJob writes a row every
# few minutes in the primary region; the drill CronJobs restore and check in the backup
# region, the PostgreSQL one through a throwaway Cluster of this name.
PG_CANARY = "pg-canary"
PG_RESTORE_DRILL = "pg-restore-drill"
REDIS_RESTORE_DRILL = "redis-restore-drill"

# PgBouncer pools
PGBOUNCER_RW = "pgbouncer-rw"            # write pool in front of <cluster>-rw
PGBOUNCER_RO = "pgbouncer-ro"            # read pool in front of <cluster>-ro (or -r with one instance)
PGBOUNCER_AUTH_SECRET = "pgbouncer-auth" # userlist.txt for both pools
PGBOUNCER_EXPORTER_SECRET = "pgbouncer-exporter"  # the exporter's admin-console connection string
PGBOUNCER_PORT = 6432
PGBOUNCER_EXPORTER_PORT = 9127


def pgbouncer_tls_secret(pool: str) -> str:
    """cert-manager's Secret with a pool's certificate (tls.crt, tls.key, and ca.crt: the CA
    that issued it)."""
    return f"{pool}-tls"


def cnpg_ca_secret(cluster: str) -> str:
    """The CA CNPG creates for a cluster and signs its server certificate with (key ca.crt)."""
    return f"{cluster}-ca"


# TLS inside the namespace (docs/postgres.md, "TLS"): a self-signed root issues the
# namespace's internal CA, which issues the PgBouncer pools' certificates.
SELF_SIGNED_ISSUER = "tikit-selfsigned"
INTERNAL_CA = "tikit-internal-ca"        # the CA's Certificate, its Secret and the CA Issuer
# Where the apps (and the jobs that use DATABASE_URL) find the CA that signed the pools'
# certificates: DATABASE_URL's sslrootcert.
DATABASE_CA_DIR = "/etc/tikit/database-ca"
DATABASE_CA_FILE = f"{DATABASE_CA_DIR}/ca.crt"

# Redis
REDIS = "redis"
REDIS_HEADLESS = "redis-headless"
REDIS_SENTINEL = "redis-sentinel"
REDIS_AUTH_SECRET = "redis-auth"         # key: password
REDIS_SENTINEL_AUTH_SECRET = "redis-sentinel-auth"  # key: password (the sentinels' own, where they run)
REDIS_BACKUP = "redis-backup"
REDIS_PORT = 6379
REDIS_SENTINEL_PORT = 26379
REDIS_EXPORTER_PORT = 9121
REDIS_MASTER_NAME = "tikit"              # Sentinel's name for the monitored primary

# Connection strings the backend and workers read (Secret keys are the env var names).
# The PostgreSQL tier writes the database Secret, the Redis tier the Redis one.
APP_DATABASE_SECRET = "app-database"     # keys: DATABASE_URL, DATABASE_REPLICA_URL
APP_REDIS_SECRET = "app-redis"           # keys: REDIS_URL and its parts (below)
DATABASE_URL = "DATABASE_URL"
DATABASE_REPLICA_URL = "DATABASE_REPLICA_URL"
REDIS_URL = "REDIS_URL"
# The same target in parts, for clients that cannot parse redis+sentinel:// (ioredis,
# node-redis): "host:port,host:port", the master name and the sentinels' password, empty
# where no Sentinel runs.
REDIS_PASSWORD = "REDIS_PASSWORD"
REDIS_SENTINELS = "REDIS_SENTINELS"
REDIS_SENTINEL_MASTER = "REDIS_SENTINEL_MASTER"
REDIS_SENTINEL_PASSWORD = "REDIS_SENTINEL_PASSWORD"
APP_REDIS_KEYS = (REDIS_URL, REDIS_PASSWORD, REDIS_SENTINELS, REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD)

# Traffic.  The API's own routes: REST under API_PREFIX, WebSocket (Socket.IO) upgrades
# under WEBSOCKET_PATHS.
API_PREFIX = "/api"
WEBSOCKET_PATHS = ("/socket.io",)
GATEWAY = "tikit"
TLS_SECRET = "tikit-tls"
GSLB = "tikit"
GATEWAY_PROXY = "tikit-proxy"            # EnvoyProxy: the gateway's Service and Deployment shape
REST_ROUTE = "api-rest"                  # HTTPRoute the Gslb follows
WEBSOCKET_ROUTE = "api-websocket"
REDIRECT_ROUTE = "https-redirect"

POSTGRES_PORT = 5432

# Nodes (Karpenter): cluster-scoped objects carry the namespace, so two stacks sharing a
# cluster never declare the same one.  PriorityClasses order the tiers: data > API >
# workers > buffer (placeholders every real pod preempts).
PRIORITY_DATA = "data"
PRIORITY_API = "api"
PRIORITY_WORKERS = "workers"
PRIORITY_BUFFER = "buffer"
CAPACITY_BUFFER = "capacity-buffer"       # Deployment of placeholder pods (the warm headroom)
ON_DEMAND_POOL = "on-demand"
SPOT_POOL = "spot"


def priority_class(namespace: str, tier: str) -> str:
    return f"{namespace}-{tier}"


def node_pool(namespace: str, pool: str) -> str:
    return f"{namespace}-{pool}"

# Annotations the policy pack reads: capacity facts no Kubernetes field carries
# (policy/tikit_policies/annotations.py holds the same keys; a test keeps them equal).
REGION_ROLE_ANNOTATION = "tikit.app/region-role"                          # Namespace: primary | backup
TARGET_USERS_ANNOTATION = "tikit.app/target-concurrent-users"              # Namespace
REQUESTS_PER_USER_ANNOTATION = "tikit.app/requests-per-user-per-minute"   # Namespace
DB_CONNECTIONS_ANNOTATION = "tikit.app/db-connections-per-replica"        # Deployment of a database client
POD_SECURITY_EXCEPTION_ANNOTATION = "tikit.app/pod-security-exception"    # Namespace of an operator: why below restricted
INTERRUPTIBLE_ANNOTATION = "tikit.app/interruptible"                      # workload: "true" = may run on spot
# The capacity model's inputs (docs/autoscaling.md, "Capacity model").
PROFILE_ANNOTATION = "tikit.app/load-profile"                             # Namespace: k6 stages
PROFILE_REQUESTS_PER_USER_ANNOTATION = "tikit.app/profile-requests-per-user-per-minute"  # Namespace
CAPACITY_PER_INSTANCE_ANNOTATION = "tikit.app/sustainable-requests-per-minute"  # Deployment: per instance
BOOT_SECONDS_ANNOTATION = "tikit.app/boot-seconds"                        # Deployment: container start to /health
PROVISIONING_SECONDS_ANNOTATION = "tikit.app/provisioning-seconds"        # NodePool: pending pod to a Ready node
NODE_OVERHEAD_CPU_ANNOTATION = "tikit.app/node-overhead-cpu"              # NodePool: DaemonSets + reserved, per node
NODE_OVERHEAD_MEMORY_ANNOTATION = "tikit.app/node-overhead-memory"        # NodePool
VM_MEMORY_OVERHEAD_ANNOTATION = "tikit.app/vm-memory-overhead-percent"   # NodePool: the hypervisor's share


def service_host(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.cluster.local"

# Every exporter / metrics endpoint uses this container port name, so PodMonitors,
# ServiceMonitors and NetworkPolicies agree (CNPG's own instance port is also "metrics").
METRICS_PORT_NAME = "metrics"
CNPG_METRICS_PORT = 9187
BACKEND_METRICS_PATH = "/metrics"

# Resilience: the k6 load test (k6-operator TestRun) and the Chaos Mesh Schedules.  The
# operator names the test's Jobs and Services after the TestRun; the pods carry our
# app.kubernetes.io/name labels, which the NetworkPolicies select.
LOAD_TEST = "load-test"                  # TestRun
LOAD_TEST_SCRIPT = "load-test-script"    # ConfigMap with the k6 script
K6_RUNNER = "k6-runner"                  # runner pods (the virtual users)
K6_INITIALIZER = "k6-initializer"        # checks the script before the runners start
K6_STARTER = "k6-starter"                # starts all runners at once over their REST API
K6_API_PORT = 6565                       # k6's REST API on every runner (fixed by the operator)
CHAOS = "chaos"
CHAOS_API_KILL = "chaos-api-pod-kill"
CHAOS_API_LATENCY = "chaos-api-latency"
CHAOS_POSTGRES_KILL = "chaos-postgres-primary-kill"
