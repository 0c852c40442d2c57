"""Settings refuse what the operators' and the API server's admission would refuse: every
setting that reaches a Kubernetes name, label, annotation, Secret key or a config file
line is checked with the same rule, and a trailing newline or a control character never
slips past a pattern."""

from __future__ import annotations

import json

import pytest

from tikit import kube, settings
from tikit.conf import postgres as pg_conf
from tikit.settings import ConfigError, load

PRIMARY = {"name": "lagos", "role": "primary"}


def refused(config: dict, stack: str = "prod") -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load(config, stack=stack)
    assert "\n" not in str(err.value) and "\r" not in str(err.value)
    return err.value


# --- a pattern never accepts a trailing newline (Python's `$` matches before one) --------

TRAILING = [
    ({"namespace": "tikit\n"}, "namespace"),
    ({"regions": [{**PRIMARY, "name": "lagos\n"}]}, "regions[0].name"),
    ({"regions": [{**PRIMARY, "geoTag": "lagos\n"}]}, "regions[0].geoTag"),
    ({"regions": [{**PRIMARY, "objectStorage": {"endpoint": "https://s3.example.com\n"}}]}, "regions[0].objectStorage.endpoint"),
    ({"backend": {"image": "ghcr.io/tikit/backend:1.0.0\n"}}, "backend.image"),
    ({"workers": {"spotNodeLabelValue": "spot\n"}}, "workers.spotNodeLabelValue"),
    ({"workers": {"spotTaintValue": "spot\n"}}, "workers.spotTaintValue"),
    ({"workers": {"spotNodeLabelKey": "karpenter.sh/capacity-type\n"}}, "workers.spotNodeLabelKey"),
    ({"objectStorage": {"accessKeyIdKey": "ACCESS_KEY_ID\n"}}, "objectStorage.accessKeyIdKey"),
    ({"objectStorage": {"bucketPrefix": "tikit-backups\n"}}, "objectStorage.bucketPrefix"),
    ({"objectStorage": {"credentialsSecret": "tikit-backup-s3\n"}}, "objectStorage.credentialsSecret"),
    ({"gateway": {"hostname": "api.tikit.app\n"}}, "gateway.hostname"),
    ({"gateway": {"requestTimeout": "15s\n"}}, "gateway.requestTimeout"),
    ({"monitoring": {"runbookBaseUrl": "https://example.com/runbooks\n"}}, "monitoring.runbookBaseUrl"),
    ({"monitoring": {"scrapeInterval": "30s\n"}}, "monitoring.scrapeInterval"),
    ({"postgres": {"retention": "7d\n"}}, "postgres.retention"),
    ({"postgres": {"promotionToken": "abcd\n"}}, "postgres.promotionToken"),
    ({"addons": {"prometheusRelease": "kube-prometheus-stack\n"}}, "addons.prometheusRelease"),
    ({"addons": {"kedaNamespace": "keda\n"}}, "addons.kedaNamespace"),
    ({"resilience": {"enabled": True, "path": "/events\n"}}, "resilience.path"),
    ({"resilience": {"enabled": True, "stages": ["2m:100\n"]}}, "resilience.stages"),
    ({"resilience": {"enabled": True, "networkLatency": "200ms\n"}}, "resilience.networkLatency"),
]


@pytest.mark.parametrize("config, key", TRAILING, ids=[k for _, k in TRAILING])
def test_a_trailing_newline_is_refused_everywhere(config, key):
    assert refused(config).key == key


@pytest.mark.parametrize("bad", ["tikit\u2028", "tikit\x00", "tik\u202eit", "\ufefftikit", "tikit\u00a0", "tikit\t"])
def test_invisible_and_control_characters_are_refused(bad):
    assert refused({"namespace": bad}).key == "namespace"
    assert refused({"regions": [{**PRIMARY, "name": bad}]}).key == "regions[0].name"
    assert refused({"regions": [{**PRIMARY, "context": "prod-" + bad}]}).key == "regions[0].context"


# --- PostgreSQL parameters: GUC names, values without control characters -----------------


@pytest.mark.parametrize(
    "name",
    [
        "archive_mode\nfoo",          # the operator-owned check must not be sidestepped
        "backend\nmaxReplicas",
        "ssl\n",
        "work mem",
        "work_mem=1",
        "work_mem;",
        "1abc",
        "",
        "a.b.c",                       # one '.' only: <extension>.<name>
        ".work_mem",
        "work_mem.",
        "x" * 64,
        "work-mem",
        "wörk_mem",
        "work_mem\x00",
    ],
)
def test_postgres_parameter_names_follow_the_guc_rule(name):
    err = refused({"postgres": {"parameters": {name: "on"}}})
    assert err.key == "postgres.parameters"
    assert "parameter name" in err.message


@pytest.mark.parametrize("name", ["work_mem", "pg_stat_statements.track", "auto_explain.log_min_duration", "_x", "Work_Mem"])
def test_ordinary_and_extension_parameter_names_pass(name):
    assert load({"postgres": {"parameters": {name: "on"}}}, stack="prod").postgres.parameters == {name: "on"}


@pytest.mark.parametrize(
    "value, what",
    [
        ("4MB\nssl = on", "control character"),
        ("on\x00", "control character"),
        ("on\r", "control character"),
        ("on\u2028", "control character"),
        ("on\t", "control character"),
        ("nan", "not a finite number"),
        ("NaN", "not a finite number"),
        ("inf", "not a finite number"),
        ("-Infinity", "not a finite number"),
        ("x" * 10 * 1024 * 1024, "characters"),
    ],
    ids=["newline", "nul", "cr", "u2028", "tab", "nan", "NaN", "inf", "-Infinity", "10MB"],
)
def test_postgres_parameter_values_are_plain_finite_text(value, what):
    err = refused({"postgres": {"parameters": {"random_page_cost": value}}})
    assert err.key == "postgres.parameters" and what in err.message
    assert len(str(err)) < 300  # the value is not echoed in full


def test_postgres_parameter_names_differing_only_in_case_are_one_parameter():
    err = refused({"postgres": {"parameters": {"work_mem": "4MB", "WORK_MEM": "8MB"}}})
    assert err.key == "postgres.parameters" and "more than once" in err.message


def test_guc_rule_lives_beside_the_operator_owned_list():
    assert pg_conf.parameter_name_problem("archive_mode\nx") is not None
    assert pg_conf.parameter_name_problem("pg_stat_statements.max") is None
    assert pg_conf.parameters_problem({"archive_mode\nx": "on"}) is not None


# --- label values, Secret keys, DNS names ------------------------------------------------


@pytest.mark.parametrize(
    "config, key",
    [
        ({"workers": {"spotNodeLabelValue": "x" * 64}}, "workers.spotNodeLabelValue"),
        ({"workers": {"spotTaintValue": "-spot"}}, "workers.spotTaintValue"),
        ({"workers": {"spotTaintKey": "karpenter.sh/"}}, "workers.spotTaintKey"),
        ({"addons": {"prometheusRelease": "KPS"}}, "addons.prometheusRelease"),        # a Helm release name
        ({"addons": {"prometheusRelease": "kps.monitoring"}}, "addons.prometheusRelease"),  # it is a Service host part
        ({"addons": {"prometheusRelease": "k" * 54}}, "addons.prometheusRelease"),     # Helm: at most 53
        ({"regions": [{**PRIMARY, "geoTag": "-"}]}, "regions[0].geoTag"),
        ({"regions": [{**PRIMARY, "geoTag": "LAGOS"}]}, "regions[0].geoTag"),
        ({"regions": [{**PRIMARY, "geoTag": "g" * 64}]}, "regions[0].geoTag"),
        ({"regions": [{**PRIMARY, "name": "r" * 41}]}, "regions[0].name"),
        ({"objectStorage": {"accessKeyIdKey": ".."}}, "objectStorage.accessKeyIdKey"),
        ({"objectStorage": {"secretAccessKeyKey": "."}}, "objectStorage.secretAccessKeyKey"),
        ({"objectStorage": {"secretAccessKeyKey": "..data"}}, "objectStorage.secretAccessKeyKey"),
        ({"objectStorage": {"accessKeyIdKey": "K" * 254}}, "objectStorage.accessKeyIdKey"),
        ({"postgres": {"storageClass": "Fast SSD"}}, "postgres.storageClass"),
        ({"postgres": {"storageClass": "fast\n"}}, "postgres.storageClass"),
        ({"redis": {"storageClass": "-gp3"}}, "redis.storageClass"),
        ({"redis": {"storageClass": "s" * 254}}, "redis.storageClass"),
        ({"regions": [{**PRIMARY, "context": "prod\nlagos"}]}, "regions[0].context"),
        ({"regions": [{**PRIMARY, "context": "prod\x00"}]}, "regions[0].context"),
        ({"regions": [{**PRIMARY, "context": "c" * 254}]}, "regions[0].context"),
        ({"regions": [{**PRIMARY, "context": "   "}]}, "regions[0].context"),
        ({"regions": [{**PRIMARY, "context": "tikit-prod-lagos "}]}, "regions[0].context"),
        ({"monitoring": {"runbookBaseUrl": "https://example.com/" + "r" * 3000}}, "monitoring.runbookBaseUrl"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_names_follow_the_api_servers_rules(config, key):
    assert refused(config).key == key


def test_the_bucket_name_fits_s3s_limit():
    err = refused({"objectStorage": {"bucketPrefix": "b" * 40}, "regions": [{**PRIMARY, "name": "r" * 20}]})
    assert err.key == "objectStorage.bucketPrefix" and "63" in err.message


@pytest.mark.parametrize("name", ["gp3", "fast.ssd", "premium-rwo", ""])
def test_storage_classes_are_dns_subdomains(name):
    assert load({"postgres": {"storageClass": name}, "redis": {"storageClass": name}}, stack="prod").redis.storage_class == name


@pytest.mark.parametrize("context", ["tikit-prod-lagos", "arn:aws:eks:eu-west-1:123456789012:cluster/prod", "gke_p_europe-west2_prod", "admin@kind"])
def test_kubeconfig_contexts_keep_their_own_alphabet(context):
    region = {**PRIMARY, "context": context, "objectStorage": {"endpoint": "https://s3.af-south-1.amazonaws.com"}}
    assert load({"regions": [region]}, stack="prod").regions[0].context == context


@pytest.mark.parametrize("image", ["ghcr.io/tikit/backend:_build", "ghcr.io/tikit/backend:1.0.", "ghcr.io/tikit/backend:" + "v" * 62 + "-x1"])
def test_the_version_label_of_any_accepted_image_is_a_label_value(image):
    s = load({"backend": {"image": image}}, stack="prod")
    version = kube.image_version(s.backend.image)
    assert settings.checks.LABEL_VALUE_RE.fullmatch(version), version


# --- structured config as the CLI hands it over (JSON text) ------------------------------


@pytest.mark.parametrize(
    "text",
    ['{"errorRateWarningPercent": NaN}', '{"errorRateWarningPercent": Infinity}', '{"errorRateWarningPercent": 1e999}',
     '{"latencySloMs": ' + "9" * 5000 + "}"],
    ids=["NaN", "Infinity", "1e999", "5000-digit integer"],
)
def test_structured_config_with_non_finite_or_huge_numbers_is_a_config_error(monkeypatch, text):
    import pulumi
    from pulumi.runtime import config as rc

    monkeypatch.setattr(pulumi, "get_project", lambda: "tikit")
    monkeypatch.setattr(pulumi, "get_stack", lambda: "prod")
    rc.set_all_config({"tikit:environment": "prod", "tikit:monitoring": text})
    try:
        with pytest.raises(ConfigError) as err:
            settings.from_pulumi()
    finally:
        rc.set_all_config({})
    assert err.value.key == "monitoring" and "\n" not in str(err.value)
    assert json.dumps(err.value.message)  # printable, one line


# --- backups travel encrypted where the stack deploys -----------------------------------------


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_a_deployed_stack_refuses_a_plain_http_object_store(stack):
    region = {**PRIMARY, "context": "c", "objectStorage": {"endpoint": "http://s3.af-south-1.amazonaws.com"}}
    err = refused({"regions": [region]}, stack=stack)
    assert err.key == "regions[0].objectStorage.endpoint" and "use https://" in err.message
    # dev may point at a local S3
    assert load({"objectStorage": {"endpointUrl": "http://127.0.0.1:9000"}}, stack="dev").object_store("lagos").endpoint == "http://127.0.0.1:9000"


# --- settings that render fine and break prod later ---------------------------------------------


@pytest.mark.parametrize(
    "config, key, words",
    [
        ({"redis": {"storageSize": "1Gi"}}, "redis.storageSize", "cannot hold the AOF and RDB"),
        ({"redis": {"storageSize": "20Mi"}}, "redis.storageSize", "or writes stop when a snapshot fails"),
        ({"postgres": {"walStorageSize": "20Mi"}}, "postgres.walStorageSize", "smallest PostgreSQL volume, 1Gi"),
        ({"postgres": {"storageSize": "100Mi"}}, "postgres.storageSize", "smallest PostgreSQL volume"),
        ({"postgres": {"storageSize": "99999999999999999999999999Ti"}}, "postgres.storageSize", "at most 64Ti"),
        ({"postgres": {"retention": "99999999999999999999999d"}}, "postgres.retention", "a retention such as"),
        ({"postgres": {"parameters": {"fsync": "off"}}}, "postgres.parameters", "fsync must stay on"),
        ({"postgres": {"parameters": {"Full_Page_Writes": "false"}}}, "postgres.parameters", "full_page_writes must stay on"),
        ({"postgres": {"parameters": {"archive_timeout": "0"}}}, "postgres.parameters", "never forces a WAL switch"),
        ({"postgres": {"parameters": {"archive_timeout": "0min"}}}, "postgres.parameters", "never forces a WAL switch"),
        ({"postgres": {"parameters": {"max_slot_wal_keep_size": "-1"}}}, "postgres.parameters", "until the WAL volume is full"),
        ({"postgres": {"parameters": {"wal_keep_size": "100GB"}}}, "postgres.parameters", "the whole WAL volume"),
        ({"postgres": {"parameters": {"max_slot_wal_keep_size": "30000"}}}, "postgres.parameters", "the whole WAL volume"),
        ({"postgres": {"parameters": {"work_mem": "1e999"}}}, "postgres.parameters", "not a finite number"),
        ({"redis": {"sentinelQuorum": 3}}, "redis.sentinelQuorum", "with one sentinel lost no failover could start"),
        ({"addons": {"replicas": 1}}, "addons.replicas", "at least 2 replicas"),
        ({"restoreDrills": {"enabled": False}}, "restoreDrills.enabled", "drills its restores every week"),
        ({"redis": {"backupRetentionHours": 1}}, "redis.backupRetentionHours", "keeps at least 24 h"),
        ({"postgres": {"podAntiAffinity": "required"}}, "postgres.podAntiAffinity", "region 'lagos' offers 1 (af-south-1-los-1a)"),
        ({"backend": {"peakStart": "0 18 * * *", "peakEnd": "0  18 * * *"}}, "backend.peakEnd", "is also the start"),
        ({"nodes": {"instanceCategories": []}}, "nodes.instanceCategories", "at least 1 item"),
        ({"nodes": {"architectures": []}}, "nodes.architectures", "at least 1 item"),
        ({"dns": {"edgeDnsServers": ["not a host:abc"]}}, "dns.edgeDnsServers[0]", "must be a DNS server"),
        ({"dns": {"edgeDnsServers": ["1.1.1.1", "999.1.1.1:99999"]}}, "dns.edgeDnsServers[1]", "must be a DNS server"),
        ({"capacity": {"profile": ["999999h:999999"]}}, "capacity.profile", "more than 24 h in all"),
        ({"resilience": {"stages": ["20h:10", "5h:10"]}}, "resilience.stages", "more than 24 h in all (at '5h:10')"),
    ],
)
def test_what_would_break_prod_later_is_refused_now(config, key, words):
    err = refused(config)
    assert err.key == key and words in err.message, str(err)


def test_safe_spellings_of_the_guarded_parameters_pass():
    pg = load({"postgres": {"parameters": {"fsync": "on", "full_page_writes": "true", "archive_timeout": "60s", "wal_keep_size": "1GB"}}}, stack="prod").postgres
    assert pg.parameters["archive_timeout"] == "60s"
    dns = load({"dns": {"edgeDnsServers": ["10.0.0.2:53", "[2606:4700::1111]:53", "dns.example.com"]}}, stack="prod").dns
    assert len(dns.edge_dns_servers) == 3


@pytest.mark.parametrize("image", ["ghcr.io/tikit/../library/redis:7.4.1", "ghcr.io/tikit//redis:7.4.1", "ghcr.io/tikit/redis-:7.4.1", "ghcr.io/tikit/.redis:1"])
def test_an_image_path_follows_the_registry_grammar(image):
    assert refused({"redis": {"image": image}}).key == "redis.image"
