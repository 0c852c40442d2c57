"""PgBouncer pools of one region, in front of that region's CloudNativePG cluster.

Two pools, each a Deployment + Service + PodDisruptionBudget + ConfigMap + cert-manager
Certificate (TLS for the apps, issued by the namespace's internal CA):

* ``pgbouncer-rw`` in front of ``<cluster>-rw`` (the primary; in a backup region the
  replica cluster's designated primary, read-only until promotion);
* ``pgbouncer-ro`` in front of ``<cluster>-ro``, or ``<cluster>-r`` where the cluster has a
  single instance and so no ``-ro`` endpoints.

pgbouncer.ini comes from tikit/conf/pgbouncer.py and holds no secret.  Both hops are TLS:
the apps to PgBouncer (``client_tls_sslmode = require``, verified by the apps against the
internal CA), PgBouncer to PostgreSQL (``server_tls_sslmode = verify-full`` against CNPG's
cluster CA, mounted from the ``<cluster>-ca`` Secret).  userlist.txt (SCRAM
verifiers of the app role and of the exporter's stats user) is a Secret, as are the
exporter's connection string and the connection URLs the backend reads (DATABASE_URL,
DATABASE_REPLICA_URL).  Each pod runs the Prometheus exporter beside PgBouncer, on the
``metrics`` port the monitoring tier's PodMonitor scrapes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names
from tikit.components.postgres import scram_verifier
from tikit.conf import pgbouncer as conf
from tikit.conf import pods
from tikit.settings import PgBouncer as PgBouncerSettings

COMPONENT = "connection-pooler"
PORT_NAME = "pgbouncer"
CONFIG_DIR = "/etc/pgbouncer"          # the ConfigMap: pgbouncer.ini
AUTH_DIR = "/etc/pgbouncer-auth"       # the Secret: userlist.txt
SERVER_CA_DIR = "/etc/pgbouncer-server-ca"   # CNPG's <cluster>-ca Secret, ca.crt only
CERT_DIR = "/etc/pgbouncer-tls"        # cert-manager's <pool>-tls Secret: tls.crt, tls.key
CA_KEY, CERT_KEY, KEY_KEY = "ca.crt", "tls.crt", "tls.key"
CERT_API = "cert-manager.io/v1"
# The pools' server certificates: a year, renewed 30 days before they end.  PgBouncer reads
# them at start, so a renewal takes effect with the next rollout (docs/runbooks/pgbouncer.md).
CERT_DURATION = "8760h"
CERT_RENEW_BEFORE = "720h"
INI_KEY = "pgbouncer.ini"
USERLIST_KEY = "userlist.txt"
EXPORTER_ENV = "PGBOUNCER_EXPORTER_CONNECTION_STRING"  # read by pgbouncer_exporter
# PgBouncer's admin console is the virtual database "pgbouncer".
ADMIN_DATABASE = "pgbouncer"
EXPORTER_CPU, EXPORTER_MEMORY = pods.PGBOUNCER_EXPORTER
# TCP probes on the pool port (and the exporter's metrics port).
PROBE = kube.ProbeTiming(period=10, timeout=3, failures=3)
# Rollouts and drains: the preStop sleep lets the Service drop the pod before SIGTERM;
# PgBouncer then waits for its clients to leave, up to SHUTDOWN_SECONDS.
PRE_STOP_SECONDS = 10
SHUTDOWN_SECONDS = 30


@dataclass(frozen=True)
class PgBouncerArgs:
    target: kube.Target
    pgbouncer: PgBouncerSettings
    database: str
    owner: str
    # CNPG Services of this region's cluster: write pool and read pool targets, and the
    # cluster's CA Secret, which signed the certificate those Services present.
    write_service: str
    read_service: str
    cluster_ca_secret: str
    # The cert-manager Issuer of the pools' own certificates (tikit/components/tls.py).
    issuer: str
    # From the stack-level Credentials (secrets): the app role's password for the URLs,
    # its stored SCRAM verifier for userlist.txt, the stats user's password and its own
    # SCRAM salt (base64; never the app role's).
    owner_password: pulumi.Input[str]
    owner_verifier: pulumi.Input[str]
    stats_password: pulumi.Input[str]
    stats_salt: pulumi.Input[str]


def pool_targets(args: PgBouncerArgs) -> dict[str, str]:
    """Pool name -> the CNPG Service it pools onto."""
    return {names.PGBOUNCER_RW: args.write_service, names.PGBOUNCER_RO: args.read_service}


TLS_FILES = conf.TlsFiles(
    server_ca=f"{SERVER_CA_DIR}/{CA_KEY}", cert=f"{CERT_DIR}/{CERT_KEY}", key=f"{CERT_DIR}/{KEY_KEY}"
)
# What the apps' URLs ask of the connection to the pools: TLS with PgBouncer's certificate
# checked against the internal CA (DATABASE_CA_FILE, mounted in the apps) and its name
# against the pool's Service name (docs/postgres.md, "TLS").
APP_SSLMODE = "verify-full"


def ini(args: PgBouncerArgs, service: str) -> str:
    return conf.pgbouncer_ini(
        args.pgbouncer,
        database=args.database,
        host=names.service_host(service, args.target.namespace),
        port=names.POSTGRES_PORT,
        listen_port=names.PGBOUNCER_PORT,
        auth_file=f"{AUTH_DIR}/{USERLIST_KEY}",
        tls=TLS_FILES,
    )


def database_url(owner: str, password: str, pool: str, namespace: str, database: str) -> str:
    """The URL the backend reads: TLS verified against the internal CA (``sslmode`` and
    ``sslrootcert``, libpq's and node-postgres's names).  No ``pgbouncer=true``: PgBouncer
    >= 1.21 with max_prepared_statements keeps Prisma's prepared statements working in
    transaction mode, and that flag would only turn them off (docs/postgres.md)."""
    host = names.service_host(pool, namespace)
    return (
        f"postgresql://{quote(owner, safe='')}:{quote(password, safe='')}@{host}:{names.PGBOUNCER_PORT}/{database}"
        f"?sslmode={APP_SSLMODE}&sslrootcert={quote(names.DATABASE_CA_FILE, safe='/')}"
    )


def exporter_url(password: str) -> str:
    # Same pod, over localhost: TLS because PgBouncer takes nothing else, not verified
    # (the certificate names the Service, not 127.0.0.1, and nothing leaves the pod).
    return (
        f"postgres://{conf.DEFAULT_STATS_USER}:{quote(password, safe='')}@127.0.0.1:{names.PGBOUNCER_PORT}"
        f"/{ADMIN_DATABASE}?sslmode=require"
    )


def dns_names(pool: str, namespace: str) -> list[str]:
    """Every name a client may reach a pool's Service by."""
    return [pool, f"{pool}.{namespace}", f"{pool}.{namespace}.svc", names.service_host(pool, namespace)]


def certificate_spec(pool: str, namespace: str, issuer: str) -> dict[str, Any]:
    return {
        "secretName": names.pgbouncer_tls_secret(pool),
        "commonName": names.service_host(pool, namespace),
        "dnsNames": dns_names(pool, namespace),
        "duration": CERT_DURATION,
        "renewBefore": CERT_RENEW_BEFORE,
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "usages": ["server auth", "digital signature"],
        "issuerRef": {"group": "cert-manager.io", "kind": "Issuer", "name": issuer},
    }


def volumes(pool: str, cluster_ca_secret: str) -> list[dict[str, Any]]:
    """The ini, the userlist, CNPG's CA (only ca.crt: that Secret also holds the CA's key)
    and the pool's certificate.  Group-readable only: fsGroup owns the files."""
    return [
        {"name": "config", "configMap": {"name": pool}},
        {"name": "auth", "secret": {"secretName": names.PGBOUNCER_AUTH_SECRET, "defaultMode": 0o440}},
        {"name": "server-ca", "secret": {"secretName": cluster_ca_secret, "items": [{"key": CA_KEY, "path": CA_KEY}],
                                         "defaultMode": 0o440}},
        {"name": "tls", "secret": {"secretName": names.pgbouncer_tls_secret(pool), "defaultMode": 0o440,
                                   "items": [{"key": CERT_KEY, "path": CERT_KEY}, {"key": KEY_KEY, "path": KEY_KEY}]}},
    ]


def containers(pb: PgBouncerSettings) -> list[dict[str, Any]]:
    def tcp(port: str) -> dict[str, Any]:
        return kube.tcp_probe(port, period=PROBE.period, timeout=PROBE.timeout, failures=PROBE.failures)

    pgbouncer: dict[str, Any] = {
        "name": "pgbouncer",
        "image": pb.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/bin/pgbouncer", f"{CONFIG_DIR}/{INI_KEY}"],
        "ports": [{"name": PORT_NAME, "containerPort": names.PGBOUNCER_PORT, "protocol": "TCP"}],
        "resources": kube.resources(pb.cpu, pb.memory),
        # The ini writes nothing to disk: logs go to stderr, no pidfile, no Unix socket.
        "securityContext": kube.container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
            {"name": "server-ca", "mountPath": SERVER_CA_DIR, "readOnly": True},
            {"name": "tls", "mountPath": CERT_DIR, "readOnly": True},
        ],
        "livenessProbe": tcp(PORT_NAME),
        "readinessProbe": tcp(PORT_NAME),
    }
    lifecycle = kube.pre_stop_sleep(PRE_STOP_SECONDS)
    if lifecycle:
        # The Service stops sending new clients before PgBouncer receives SIGTERM.
        pgbouncer["lifecycle"] = lifecycle
    exporter = {
        "name": "exporter",
        "image": pb.exporter_image,
        "imagePullPolicy": "IfNotPresent",
        "args": [f"--web.listen-address=:{names.PGBOUNCER_EXPORTER_PORT}"],
        "env": [kube.env_from_secret(EXPORTER_ENV, names.PGBOUNCER_EXPORTER_SECRET, EXPORTER_ENV)],
        "ports": [
            {"name": names.METRICS_PORT_NAME, "containerPort": names.PGBOUNCER_EXPORTER_PORT, "protocol": "TCP"}
        ],
        "resources": kube.resources(EXPORTER_CPU, EXPORTER_MEMORY),
        "securityContext": kube.container_security(),
        "livenessProbe": tcp(names.METRICS_PORT_NAME),
        "readinessProbe": tcp(names.METRICS_PORT_NAME),
    }
    return [pgbouncer, exporter]


class PgBouncer(pulumi.ComponentResource):
    """The write and read pools of one region, their Secrets and the app's connection URLs."""

    auth_secret: k8s.core.v1.Secret
    exporter_secret: k8s.core.v1.Secret
    database_secret: k8s.core.v1.Secret
    config_maps: dict[str, k8s.core.v1.ConfigMap]
    certificates: dict[str, k8s.apiextensions.CustomResource]
    deployments: dict[str, k8s.apps.v1.Deployment]
    services: dict[str, k8s.core.v1.Service]
    pdbs: dict[str, k8s.policy.v1.PodDisruptionBudget]

    def __init__(self, name: str, args: PgBouncerArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:data:PgBouncer", name, None, opts)
        t, pb = args.target, args.pgbouncer
        child = t.opts(self)
        version = kube.image_version(pb.image)

        stats_verifier = scram_verifier(args.stats_password, args.stats_salt)
        userlist = pulumi.Output.secret(
            pulumi.Output.all(args.owner_verifier, stats_verifier).apply(
                lambda v: conf.userlist_txt({args.owner: v[0], conf.DEFAULT_STATS_USER: v[1]})
            )
        )
        self.auth_secret = k8s.core.v1.Secret(
            t.rname(names.PGBOUNCER_AUTH_SECRET),
            metadata=kube.metadata(names.PGBOUNCER_AUTH_SECRET, COMPONENT, t, app="pgbouncer"),
            type="Opaque",
            string_data={USERLIST_KEY: userlist},
            opts=child,
        )
        self.exporter_secret = k8s.core.v1.Secret(
            t.rname(names.PGBOUNCER_EXPORTER_SECRET),
            metadata=kube.metadata(names.PGBOUNCER_EXPORTER_SECRET, COMPONENT, t, app="pgbouncer"),
            type="Opaque",
            string_data={EXPORTER_ENV: pulumi.Output.secret(pulumi.Output.from_input(args.stats_password).apply(exporter_url))},
            opts=child,
        )

        def url(pool: str) -> pulumi.Output[str]:
            return pulumi.Output.secret(
                pulumi.Output.from_input(args.owner_password).apply(
                    lambda pw: database_url(args.owner, pw, pool, t.namespace, args.database)
                )
            )

        self.database_secret = k8s.core.v1.Secret(
            t.rname(names.APP_DATABASE_SECRET),
            metadata=kube.metadata(names.APP_DATABASE_SECRET, COMPONENT, t, app="pgbouncer"),
            type="Opaque",
            string_data={names.DATABASE_URL: url(names.PGBOUNCER_RW), names.DATABASE_REPLICA_URL: url(names.PGBOUNCER_RO)},
            opts=child,
        )

        self.config_maps, self.deployments, self.services, self.pdbs = {}, {}, {}, {}
        self.certificates = {}
        for pool, service in pool_targets(args).items():
            sel = kube.selector(pool, t)
            text = ini(args, service)
            self.certificates[pool] = kube.custom(
                t.rname(f"{pool}-certificate"), CERT_API, "Certificate",
                kube.metadata(names.pgbouncer_tls_secret(pool), COMPONENT, t, app=pool),
                certificate_spec(pool, t.namespace, args.issuer), child,
            )
            self.config_maps[pool] = k8s.core.v1.ConfigMap(
                t.rname(f"{pool}-config"),
                metadata=kube.metadata(pool, COMPONENT, t),
                data={INI_KEY: text},
                opts=child,
            )
            self.deployments[pool] = kube.workload(
                k8s.apps.v1.Deployment,
                t.rname(pool),
                metadata=kube.metadata(pool, COMPONENT, t, version=version),
                spec={
                    "replicas": pb.replicas,
                    "selector": {"matchLabels": sel},
                    # Surge first: a pool never runs below its replica count during a rollout.
                    "strategy": kube.rolling_surge(),
                    "template": {
                        "metadata": {
                            "labels": kube.labels(pool, COMPONENT, t, version),
                            # A changed ini rolls the pods (PgBouncer reads it at start).
                            "annotations": {"tikit.app/config-sha256": hashlib.sha256(text.encode()).hexdigest()},
                        },
                        "spec": {
                            "automountServiceAccountToken": False,
                            # PgBouncer needs no Service environment variables; with links on,
                            # every Service in the namespace would be injected into its env.
                            "enableServiceLinks": False,
                            "securityContext": kube.pod_security(),
                            "terminationGracePeriodSeconds": PRE_STOP_SECONDS + SHUTDOWN_SECONDS,
                            "topologySpreadConstraints": kube.spread(sel),
                            **kube.pool_placement(t, names.PRIORITY_DATA),
                            "containers": containers(pb),
                            "volumes": volumes(pool, args.cluster_ca_secret),
                        },
                    },
                },
                opts=t.opts(
                    self, depends_on=[self.config_maps[pool], self.auth_secret, self.exporter_secret, self.certificates[pool]]
                ),
            )
            self.services[pool] = k8s.core.v1.Service(
                t.rname(pool),
                metadata=kube.metadata(pool, COMPONENT, t),
                spec={
                    "type": "ClusterIP",
                    "selector": sel,
                    "ports": [
                        {"name": PORT_NAME, "port": names.PGBOUNCER_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}
                    ],
                },
                opts=child,
            )
            self.pdbs[pool] = kube.pdb(t.rname(pool), pool, COMPONENT, t, sel, child)

        self.write_host = f"{names.service_host(names.PGBOUNCER_RW, t.namespace)}:{names.PGBOUNCER_PORT}"
        self.read_host = f"{names.service_host(names.PGBOUNCER_RO, t.namespace)}:{names.PGBOUNCER_PORT}"
        self.register_outputs({"write": self.write_host, "read": self.read_host})
