"""The shape both Node.js processes share (the API and the workers): the environment they
read, their container and pod skeleton, and the Deployment metadata the policy pack sizes
PgBouncer from.  Each component adds what is its own (ports, probes, placement)."""

from __future__ import annotations

from typing import Any, Mapping

from tikit import kube
from tikit import names

# The health contract of both processes (the notes' "Health Checks"): liveness GETs
# /health (the event loop is alive) every 30 s, timeout 5 s, 3 failures; readiness GETs
# /ready (PostgreSQL and Redis reachable) every 10 s, timeout 5 s, 2 failures.
HEALTH_PATH = "/health"
READY_PATH = "/ready"
LIVENESS = kube.ProbeTiming(period=30, timeout=5, failures=3)
READINESS = kube.ProbeTiming(period=10, timeout=5, failures=2)

# The database pool size each process opens (API and workers read the same variable).
POOL_SIZE_ENV = "DB_POOL_SIZE"
# The root filesystem is read-only; Node and its libraries still want a /tmp.
TMP_VOLUME = "tmp"
DATABASE_CA_VOLUME = "database-ca"


def common_config(target: kube.Target) -> dict[str, str]:
    """Non-secret environment both processes read (each puts it into its own ConfigMap,
    next to its own settings).  The queue name is names.JOB_QUEUE on both sides: producer
    and consumer agree."""
    return {
        "NODE_ENV": "production",
        "JOB_QUEUE": names.JOB_QUEUE,
        "TIKIT_ENVIRONMENT": target.environment,
        "TIKIT_REGION": target.region,
    }


def health_probes(port: Any) -> dict[str, Any]:
    """Liveness and readiness of a Node.js process on its named ``port``."""
    return {
        "livenessProbe": kube.http_probe(
            HEALTH_PATH, port, period=LIVENESS.period, timeout=LIVENESS.timeout, failures=LIVENESS.failures
        ),
        "readinessProbe": kube.http_probe(
            READY_PATH, port, period=READINESS.period, timeout=READINESS.timeout, failures=READINESS.failures
        ),
    }


def pool_env(db_connections_per_replica: int) -> list[dict[str, Any]]:
    """DB_POOL_SIZE: the connections one replica opens, the figure the capacity maths and
    the policy pack size PgBouncer against (the db-connections annotation says the same).
    In the pod template rather than a ConfigMap, so a change rolls the pods."""
    return [{"name": POOL_SIZE_ENV, "value": str(db_connections_per_replica)}]


def secret_env() -> list[dict[str, Any]]:
    """Connection strings, by reference only: the PostgreSQL tier writes the database
    Secret (write pool and read pool URLs), the Redis tier the Redis one (the URL, and the
    same target in parts for clients that cannot parse redis+sentinel://, docs/redis.md)."""
    return [
        kube.env_from_secret(names.DATABASE_URL, names.APP_DATABASE_SECRET, names.DATABASE_URL),
        kube.env_from_secret(names.DATABASE_REPLICA_URL, names.APP_DATABASE_SECRET, names.DATABASE_REPLICA_URL),
        *(
            kube.env_from_secret(key, names.APP_REDIS_SECRET, key)
            for key in names.APP_REDIS_KEYS
        ),
    ]


def container(
    name: str,
    image: str,
    *,
    config_map: str,
    db_connections_per_replica: int,
    cpu: str,
    memory: str,
    **own: Any,
) -> dict[str, Any]:
    """A Node.js container: config from its ConfigMap, connection strings from Secrets,
    memory request == limit, restricted context, a writable /tmp; ``own`` adds the rest."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "envFrom": [{"configMapRef": {"name": config_map}}],
        "env": [*secret_env(), *pool_env(db_connections_per_replica)],
        "resources": kube.resources(cpu, memory),
        "securityContext": kube.container_security(),
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
            # DATABASE_URL's sslrootcert: the CA that signed the PgBouncer pools' certificates.
            {"name": DATABASE_CA_VOLUME, "mountPath": names.DATABASE_CA_DIR, "readOnly": True},
        ],
        **own,
    }


def pod_spec(sel: Mapping[str, str], container_spec: dict[str, Any], *, grace_seconds: int, **own: Any) -> dict[str, Any]:
    """The pod around it: no API token (the app never calls Kubernetes), no Docker-link env
    (REDIS_PORT=tcp://... next to the app's own config), restricted, spread over zones and
    nodes; ``own`` adds placement."""
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": kube.pod_security(),
        "terminationGracePeriodSeconds": grace_seconds,
        "topologySpreadConstraints": kube.spread(sel),
        **own,
        "containers": [container_spec],
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {}}, database_ca_volume()],
    }


def database_ca_volume() -> dict[str, Any]:
    """ca.crt of the write pool's certificate Secret (cert-manager puts the issuing CA there):
    the internal CA both pools' certificates come from.  Only that key: the Secret also holds
    PgBouncer's private key."""
    return {
        "name": DATABASE_CA_VOLUME,
        "secret": {
            "secretName": names.pgbouncer_tls_secret(names.PGBOUNCER_RW),
            "items": [{"key": "ca.crt", "path": names.DATABASE_CA_FILE.rsplit("/", 1)[1]}],
        },
    }


def deployment_metadata(
    app: str,
    component: str,
    target: kube.Target,
    *,
    version: str,
    db_connections_per_replica: int,
    extra_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The pool size each replica opens (DB_POOL_SIZE) as an annotation: the policy pack,
    which runs apart from the program, sizes PgBouncer against it."""
    return kube.metadata(
        app, component, target, version=version,
        annotations={names.DB_CONNECTIONS_ANNOTATION: str(db_connections_per_replica), **(extra_annotations or {})},
    )

