"""PgBouncer pools on the rendered manifests of every stack: the write and read pools and
their targets, the pgbouncer.ini values, authentication from Secrets only, probes, security,
PDB, the metrics exporter, and the connection URLs the backend reads.  One extra run of the
staging program looks inside the Secrets (the preview redacts them) to prove the SCRAM chain:
PostgreSQL's stored verifier, PgBouncer's userlist and the URLs' password agree in both regions."""

from __future__ import annotations

import base64
import configparser
import re
from urllib.parse import parse_qsl, unquote, urlparse

import pytest
import yaml

from tikit import names
from tikit import settings
from tikit.components import pgbouncer as pgb
from tikit.components import postgres as pgc
from tikit.conf import pgbouncer as conf
from conftest import REPO, named, objects
from preview import engine
from preview import plan as plan_mod
from preview.validate import validate

POOLS = (names.PGBOUNCER_RW, names.PGBOUNCER_RO)
# The notes' pgbouncer.ini.
NOTES_INI = {
    "pool_mode": "transaction",
    "max_client_conn": "1000",
    "default_pool_size": "20",
    "reserve_pool_size": "5",
    "reserve_pool_timeout": "3",
}
POOL_KINDS = ("Deployment", "Service", "PodDisruptionBudget", "ConfigMap")
SECRETS = (names.PGBOUNCER_AUTH_SECRET, names.PGBOUNCER_EXPORTER_SECRET, names.APP_DATABASE_SECRET)


def stack_settings(stack: str) -> settings.Settings:
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = {k.split(":", 1)[1]: v for k, v in (doc.get("config") or {}).items()}
    return settings.load(config, stack=stack)


def ini_text(plan, pool: str, region: str) -> str:
    return named(plan, "ConfigMap", pool, region)["data"][pgb.INI_KEY]


def parse_ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return parser


def pod_spec(plan, pool: str, region: str) -> dict:
    return named(plan, "Deployment", pool, region)["spec"]["template"]["spec"]


def container(spec: dict, name: str) -> dict:
    (c,) = [c for c in spec["containers"] if c["name"] == name]
    return c


def port_number(c: dict, port: object) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return number


# --- pools and targets -----------------------------------------------------------------------


def test_every_region_has_both_pools(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        for pool in POOLS:
            for kind in POOL_KINDS:
                named(plan, kind, pool, region)
            assert named(plan, "Deployment", pool, region)["spec"]["replicas"] == cfg.pgbouncer.replicas


def test_write_pool_targets_rw_and_read_pool_ro_or_r(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        cluster = names.pg_cluster(region)
        write = parse_ini(ini_text(plan, names.PGBOUNCER_RW, region))
        read = parse_ini(ini_text(plan, names.PGBOUNCER_RO, region))
        (db_w,) = write["databases"].items()
        (db_r,) = read["databases"].items()
        assert db_w[0] == db_r[0] == names.PG_DATABASE
        # A single instance has no -ro endpoints: the read pool uses -r there (dev).
        read_service = f"{cluster}-ro" if cfg.postgres.instances > 1 else f"{cluster}-r"
        for (_, target), service in ((db_w, f"{cluster}-rw"), (db_r, read_service)):
            params = dict(p.split("=", 1) for p in target.split())
            assert params == {
                "host": names.service_host(service, cfg.namespace),
                "port": str(names.POSTGRES_PORT),
                "dbname": names.PG_DATABASE,
            }  # no user=: SCRAM pass-through logs in as the client's own role


def test_ini_is_the_pure_function_output_with_the_notes_values(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        services = {
            names.PGBOUNCER_RW: pgc.write_service(names.pg_cluster(region)),
            names.PGBOUNCER_RO: pgc.read_service(names.pg_cluster(region), cfg.postgres.instances),
        }
        for pool in POOLS:
            text = ini_text(plan, pool, region)
            assert text == conf.pgbouncer_ini(
                cfg.pgbouncer,
                database=names.PG_DATABASE,
                host=names.service_host(services[pool], cfg.namespace),
                port=names.POSTGRES_PORT,
                listen_port=names.PGBOUNCER_PORT,
                auth_file=f"{pgb.AUTH_DIR}/{pgb.USERLIST_KEY}",
                tls=pgb.TLS_FILES,
            )
            ini = parse_ini(text)["pgbouncer"]
            for key, value in NOTES_INI.items():
                assert ini[key] == value, key
            # What transaction pooling needs for an ORM: tracked prepared statements, and
            # no reset query after each transaction (it would drop them).
            assert int(ini["max_prepared_statements"]) > 0
            assert ini["server_reset_query_always"] == "0"
            assert ini["auth_type"] == "scram-sha-256"
            assert int(ini["listen_port"]) == names.PGBOUNCER_PORT


def test_client_slots_hold_every_app_connection(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        for pool in POOLS:
            replicas = named(plan, "Deployment", pool, region)["spec"]["replicas"]
            max_client = int(parse_ini(ini_text(plan, pool, region))["pgbouncer"]["max_client_conn"])
            # One slot per pod is the exporter's admin-console login.
            assert replicas * (max_client - 1) == cfg.derived.pgbouncer_client_capacity
            assert cfg.derived.client_connections <= replicas * (max_client - 1)


# --- secrets ---------------------------------------------------------------------------------


# What a leaked credential of this stack looks like in rendered text: the mock engine's
# password stand-in, a SCRAM verifier, or a Pulumi secret (redacted on the way out).
SECRET_TEXT = re.compile(r"offline-password-|SCRAM-SHA-256\$|\[secret\]")


def test_no_config_map_holds_a_password(plan):
    for region in plan.regions:
        for cm in objects(plan, "ConfigMap", region):
            for key, text in (cm.get("data") or {}).items():
                assert not SECRET_TEXT.search(text), f"{region} ConfigMap/{cm['metadata']['name']} {key}"
        for pool in POOLS:
            assert "password" not in ini_text(plan, pool, region).lower()


def test_authentication_comes_from_the_secret(plan):
    for region in plan.regions:
        auth = named(plan, "Secret", names.PGBOUNCER_AUTH_SECRET, region)
        assert auth["stringData"] == {pgb.USERLIST_KEY: plan_mod.REDACTED}
        for pool in POOLS:
            spec = pod_spec(plan, pool, region)
            auth_file = parse_ini(ini_text(plan, pool, region))["pgbouncer"]["auth_file"]
            volumes = {v["name"]: v for v in spec["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in container(spec, "pgbouncer")["volumeMounts"]}
            directory, _, key = auth_file.rpartition("/")
            secret = volumes[mounts[directory]]["secret"]
            assert secret["secretName"] == names.PGBOUNCER_AUTH_SECRET and key == pgb.USERLIST_KEY
            assert secret["defaultMode"] & 0o007 == 0  # not world-readable
            config = volumes[mounts[pgb.CONFIG_DIR]]["configMap"]
            assert config["name"] == pool
            assert container(spec, "pgbouncer")["command"][-1] == f"{pgb.CONFIG_DIR}/{pgb.INI_KEY}"


def test_app_database_secret_has_both_urls_redacted(plan):
    for region in plan.regions:
        secret = named(plan, "Secret", names.APP_DATABASE_SECRET, region)
        assert secret["stringData"] == {
            names.DATABASE_URL: plan_mod.REDACTED,
            names.DATABASE_REPLICA_URL: plan_mod.REDACTED,
        }
        exporter = named(plan, "Secret", names.PGBOUNCER_EXPORTER_SECRET, region)
        assert exporter["stringData"] == {pgb.EXPORTER_ENV: plan_mod.REDACTED}


# --- pods ------------------------------------------------------------------------------------


def test_probes_security_spread_and_shutdown(plan, stack):
    pb = stack_settings(stack).pgbouncer
    for region in plan.regions:
        for pool in POOLS:
            spec = pod_spec(plan, pool, region)
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert spec["automountServiceAccountToken"] is False
            # No Service addresses injected into PgBouncer's environment.
            assert spec["enableServiceLinks"] is False
            for c in spec["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
                assert sc["readOnlyRootFilesystem"] is True
                assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]
            bouncer = container(spec, "pgbouncer")
            for probe in ("livenessProbe", "readinessProbe"):
                assert port_number(bouncer, bouncer[probe]["tcpSocket"]["port"]) == names.PGBOUNCER_PORT
                assert bouncer[probe]["periodSeconds"] == pgb.PROBE.period
            assert bouncer["image"] == pb.image
            assert {t["topologyKey"] for t in spec["topologySpreadConstraints"]} >= {"topology.kubernetes.io/zone"}
            assert spec["terminationGracePeriodSeconds"] == pgb.PRE_STOP_SECONDS + pgb.SHUTDOWN_SECONDS


def test_exporter_sidecar(plan, stack):
    pb = stack_settings(stack).pgbouncer
    for region in plan.regions:
        for pool in POOLS:
            exporter = container(pod_spec(plan, pool, region), "exporter")
            assert exporter["image"] == pb.exporter_image
            assert exporter["ports"] == [
                {"name": names.METRICS_PORT_NAME, "containerPort": names.PGBOUNCER_EXPORTER_PORT, "protocol": "TCP"}
            ]
            (env,) = exporter["env"]
            assert env["valueFrom"]["secretKeyRef"] == {"name": names.PGBOUNCER_EXPORTER_SECRET, "key": pgb.EXPORTER_ENV}
            assert "value" not in env
            assert port_number(exporter, exporter["readinessProbe"]["tcpSocket"]["port"]) == names.PGBOUNCER_EXPORTER_PORT
        # The monitoring tier's PodMonitor scrapes both pools on that port.
        monitors = [m for m in objects(plan, "PodMonitor", region) if m["metadata"]["name"] == "pgbouncer"]
        (monitor,) = monitors
        (expr,) = monitor["spec"]["selector"]["matchExpressions"]
        assert expr["key"] == "app.kubernetes.io/name" and sorted(expr["values"]) == sorted(POOLS)
        assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == [names.METRICS_PORT_NAME]


def test_service_and_pdb_select_the_pool(plan):
    for region in plan.regions:
        for pool in POOLS:
            dep = named(plan, "Deployment", pool, region)
            labels = dep["spec"]["template"]["metadata"]["labels"]
            svc = named(plan, "Service", pool, region)["spec"]
            assert svc["type"] == "ClusterIP"
            assert all(labels.get(k) == v for k, v in svc["selector"].items())
            (port,) = svc["ports"]
            assert port["port"] == names.PGBOUNCER_PORT
            bouncer = container(dep["spec"]["template"]["spec"], "pgbouncer")
            assert port_number(bouncer, port["targetPort"]) == names.PGBOUNCER_PORT
            pdb = named(plan, "PodDisruptionBudget", pool, region)["spec"]
            assert pdb["maxUnavailable"] == 1
            assert all(labels.get(k) == v for k, v in pdb["selector"]["matchLabels"].items())


@pytest.mark.parametrize("kind", POOL_KINDS)
def test_pool_objects_validate(plan, kind):
    for region in plan.regions:
        for pool in POOLS:
            assert validate(named(plan, kind, pool, region)) == [], f"{region} {kind}/{pool}"


def test_secrets_validate(plan):
    for region in plan.regions:
        for name in SECRETS:
            assert validate(named(plan, "Secret", name, region)) == [], f"{region} Secret/{name}"


# --- the SCRAM chain, inside the Secrets ------------------------------------------------------


def reveal(value):
    """A recorded input with the engine's secret wrappers taken off (placeholders only)."""
    if isinstance(value, dict):
        if value.get(engine.SIG_KEY) == engine.SECRET_SIG:
            return reveal(value["value"])
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


@pytest.fixture(scope="module")
def staging_secrets():
    """(region, Secret name) -> (stringData as recorded, stringData revealed)."""
    run = engine.run_program("staging")
    out = {}
    for rec in run.records:
        if rec.type == "kubernetes:core/v1:Secret":
            meta = rec.inputs["metadata"]
            data = rec.inputs["stringData"]
            out[(meta["labels"]["tikit.app/region"], meta["name"])] = (data, reveal(data))
    return out


def verifies(verifier: str, password: str) -> bool:
    """Whether ``verifier`` is PostgreSQL's SCRAM secret for ``password`` (same salt)."""
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$[^:]+:.+", verifier)
    assert m, verifier
    return conf.scram_sha256_verifier(password, base64.b64decode(m.group(2)), int(m.group(1))) == verifier


def userlist(text: str) -> dict[str, str]:
    return dict(re.findall(r'^"([^"]+)" "([^"]+)"$', text, re.M))


def test_app_password_is_random_and_long(plan):
    """pulumi-random generates it (at least 32 characters, alphanumeric: it goes into URLs)."""
    (password,) = [
        r
        for r in plan.resources
        if r.type == "random:index/randomPassword:RandomPassword" and r.name == "postgres-app-password"
    ]
    assert password.inputs["length"] >= 32 and password.inputs["special"] is False


def test_secret_values_are_pulumi_secrets(staging_secrets):
    for region in ("lagos", "london"):
        for name in (names.PG_APP_SECRET, *SECRETS):
            recorded, _ = staging_secrets[(region, name)]
            assert recorded.get(engine.SIG_KEY) == engine.SECRET_SIG, f"{region} Secret/{name} is not a Pulumi secret"


def test_one_verifier_for_postgres_and_pgbouncer_in_every_region(staging_secrets):
    cfg = stack_settings("staging")
    owner, database = names.PG_OWNER, names.PG_DATABASE
    verifiers = set()
    for region in ("lagos", "london"):
        stored = staging_secrets[(region, names.PG_APP_SECRET)][1]
        assert stored["username"] == owner
        users = userlist(staging_secrets[(region, names.PGBOUNCER_AUTH_SECRET)][1][pgb.USERLIST_KEY])
        # PgBouncer's userlist holds the very verifier PostgreSQL stores for the role.
        assert users[owner] == stored["password"]
        verifiers.add(stored["password"])
        urls = staging_secrets[(region, names.APP_DATABASE_SECRET)][1]
        for key, pool in ((names.DATABASE_URL, names.PGBOUNCER_RW), (names.DATABASE_REPLICA_URL, names.PGBOUNCER_RO)):
            url = urlparse(urls[key])
            assert url.scheme == "postgresql"
            host = names.service_host(pool, cfg.namespace)
            assert (url.username, url.hostname, url.port) == (owner, host, names.PGBOUNCER_PORT)
            assert url.path == f"/{database}" and "pgbouncer=true" not in url.query
            # TLS, PgBouncer's certificate verified against the CA the apps mount.
            assert dict(parse_qsl(url.query)) == {"sslmode": "verify-full", "sslrootcert": names.DATABASE_CA_FILE}
            assert verifies(users[owner], unquote(url.password))
        exporter = urlparse(staging_secrets[(region, names.PGBOUNCER_EXPORTER_SECRET)][1][pgb.EXPORTER_ENV])
        assert (exporter.username, exporter.hostname, exporter.path) == (conf.DEFAULT_STATS_USER, "127.0.0.1", "/pgbouncer")
        # PgBouncer takes no plaintext client, the exporter beside it included.
        assert dict(parse_qsl(exporter.query)) == {"sslmode": "require"}
        assert verifies(users[conf.DEFAULT_STATS_USER], unquote(exporter.password))
    # London replays Lagos's WAL: its role, and so PgBouncer's userlist, must be Lagos's.
    assert len(verifiers) == 1


def salt_of(verifier: str) -> bytes:
    return base64.b64decode(verifier.split("$")[1].split(":")[1])


def test_every_role_has_its_own_scram_salt(plan, staging_secrets):
    """One RandomBytes per role: the app role's and the stats user's verifiers never share
    a salt, and each salt is the same in every region."""
    salts = [r for r in plan.resources if r.type == "random:index/randomBytes:RandomBytes"]
    assert sorted(r.name for r in salts) == ["pgbouncer-stats-scram-salt", "scram-salt"]
    assert all(r.inputs["length"] >= 16 for r in salts)
    owner = names.PG_OWNER
    per_role = {}
    for region in ("lagos", "london"):
        users = userlist(staging_secrets[(region, names.PGBOUNCER_AUTH_SECRET)][1][pgb.USERLIST_KEY])
        assert salt_of(users[owner]) != salt_of(users[conf.DEFAULT_STATS_USER])
        for user, verifier in users.items():
            per_role.setdefault(user, set()).add(salt_of(verifier))
    assert all(len(found) == 1 for found in per_role.values()), per_role


# --- TLS on both hops ----------------------------------------------------------------------------


def mounts(c: dict, spec: dict) -> dict[str, dict]:
    """mountPath -> the volume mounted there."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    return {m["mountPath"]: {**volumes[m["name"]], "readOnly": m.get("readOnly")} for m in c["volumeMounts"]}


def test_pgbouncer_verifies_postgres_against_the_clusters_ca(plan, stack):
    for region in plan.regions:
        cluster = names.pg_cluster(region)
        for pool in POOLS:
            spec = pod_spec(plan, pool, region)
            ini = parse_ini(ini_text(plan, pool, region))["pgbouncer"]
            assert ini["server_tls_sslmode"] == "verify-full"
            directory, _, file = ini["server_tls_ca_file"].rpartition("/")
            volume = mounts(container(spec, "pgbouncer"), spec)[directory]
            # CNPG's <cluster>-ca Secret, and only its certificate (the Secret holds the CA's key too).
            assert volume["secret"]["secretName"] == f"{cluster}-ca" == names.cnpg_ca_secret(cluster)
            assert volume["secret"]["items"] == [{"key": "ca.crt", "path": file}]
            assert volume["readOnly"] is True
            # verify-full checks the host PgBouncer dials: a CNPG Service, which its server
            # certificate names (-rw, -ro, -r; short and fully qualified).
            (target,) = parse_ini(ini_text(plan, pool, region))["databases"].values()
            host = dict(p.split("=", 1) for p in target.split())["host"]
            assert re.fullmatch(rf"{cluster}-(rw|ro|r)\.{stack_settings(stack).namespace}\.svc\.cluster\.local", host)


def test_apps_reach_pgbouncer_over_tls_with_a_certificate_from_the_internal_ca(plan, stack):
    cfg = stack_settings(stack)
    for region in plan.regions:
        issuers = {o["metadata"]["name"]: o["spec"] for o in objects(plan, "Issuer", region)}
        assert issuers[names.SELF_SIGNED_ISSUER] == {"selfSigned": {}}
        assert issuers[names.INTERNAL_CA] == {"ca": {"secretName": names.INTERNAL_CA}}
        certs = {o["metadata"]["name"]: o["spec"] for o in objects(plan, "Certificate", region)}
        ca = certs[names.INTERNAL_CA]
        assert ca["isCA"] is True and ca["secretName"] == names.INTERNAL_CA
        assert ca["issuerRef"]["name"] == names.SELF_SIGNED_ISSUER
        assert ca["privateKey"]["rotationPolicy"] == "Never"  # a renewal keeps what the apps trust valid
        for pool in POOLS:
            secret = names.pgbouncer_tls_secret(pool)
            cert = certs[secret]
            assert cert["secretName"] == secret
            assert cert["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": names.INTERNAL_CA}
            # Every name the apps may dial the pool by, DATABASE_URL's host included.
            assert names.service_host(pool, cfg.namespace) in cert["dnsNames"]
            assert set(cert["dnsNames"]) == {pool, f"{pool}.{cfg.namespace}", f"{pool}.{cfg.namespace}.svc",
                                             names.service_host(pool, cfg.namespace)}
            assert "server auth" in cert["usages"]
            spec = pod_spec(plan, pool, region)
            ini = parse_ini(ini_text(plan, pool, region))["pgbouncer"]
            assert ini["client_tls_sslmode"] == "require"
            here = mounts(container(spec, "pgbouncer"), spec)
            for key in ("client_tls_cert_file", "client_tls_key_file"):
                directory, _, file = ini[key].rpartition("/")
                assert here[directory]["secret"]["secretName"] == secret
                assert {"key": file, "path": file} in here[directory]["secret"]["items"]
        # The apps mount the CA that issued the pools' certificates where DATABASE_URL says.
        for app in (names.BACKEND, names.WORKERS):
            spec = named(plan, "Deployment", app, region)["spec"]["template"]["spec"]
            directory, _, file = names.DATABASE_CA_FILE.rpartition("/")
            volume = mounts(spec["containers"][0], spec)[directory]
            assert volume["secret"]["secretName"] == names.pgbouncer_tls_secret(names.PGBOUNCER_RW)
            assert volume["secret"]["items"] == [{"key": "ca.crt", "path": file}]  # not PgBouncer's key


@pytest.mark.parametrize("kind", ["Issuer", "Certificate"])
def test_tls_objects_validate(plan, kind):
    for region in plan.regions:
        found = objects(plan, kind, region)
        assert found
        for o in found:
            assert validate(o) == [], f"{region} {kind}/{o['metadata']['name']}"
