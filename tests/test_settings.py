"""Settings: presets from the notes, and every kind of bad input rejected with one line."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from tikit import cron, settings
from tikit.components import autoscaling, redis as redis_tier
from tikit.conf import redis as redis_conf
from tikit.settings import ConfigError, load


@pytest.mark.parametrize(
    "env, replicas, memory, cpu",
    # The maxima are above the notes' 2 and 10: the target users with 20 % headroom (docs/sizing.md).
    [("dev", (1, 1), "512Mi", "500m"), ("staging", (2, 3), "1Gi", "1"), ("prod", (2, 12), "2Gi", "2")],
)
def test_presets_follow_the_notes(env, replicas, memory, cpu):
    s = load({}, stack=env)
    assert (s.backend.min_replicas, s.backend.max_replicas) == replicas
    assert (s.backend.memory, s.backend.cpu) == (memory, cpu)
    assert s.environment == env


def test_prod_has_the_peak_hour_schedule():
    b = load({}, stack="prod").backend
    assert (b.peak_min_replicas, b.peak_start, b.peak_end) == (5, "0 18 * * *", "0 0 * * *")
    assert autoscaling.PEAK_TIMEZONE == "Africa/Lagos"  # the notes' "6 PM - 11 PM WAT"


def test_regions_per_environment():
    assert [r.name for r in load({}, stack="dev").regions] == ["lagos"]
    for env in ("staging", "prod"):
        s = load({}, stack=env)
        assert [(r.name, r.role) for r in s.regions] == [("lagos", "primary"), ("london", "backup")]


def test_settings_are_frozen():
    s = load({}, stack="dev")
    with pytest.raises(Exception):
        s.backend.max_replicas = 3  # type: ignore[misc]


def test_stack_deltas_override_the_preset():
    s = load({"environment": "prod", "backend": {"maxReplicas": 12}}, stack="anything")
    assert s.backend.max_replicas == 12 and s.backend.min_replicas == 2


def test_derived_numbers_are_computed_once():
    d = load({}, stack="prod").derived
    # 2 pools x 2 PgBouncer pods x (20 + 5) + 3 superuser + 10 admin (WAL senders have
    # their own slots since PostgreSQL 12)
    assert d.pool_server_connections == 100
    assert d.postgres_max_connections == 113
    # 60% of a 2Gi limit for data, the rest for the fork
    assert d.redis_maxmemory_bytes == 2 * 1024**3 * 60 // 100
    assert d.redis_maxmemory_bytes + d.redis_fork_headroom_bytes == 2 * 1024**3


BAD = [
    ({"colour": "blue"}, "colour: unknown key"),
    ({"backend": {"replicas": 3}}, "backend.replicas: unknown key"),
    ({"backend": {"maxReplicas": "ten"}}, "backend.maxReplicas: must be an integer"),
    ({"backend": {"maxReplicas": True}}, "backend.maxReplicas: must be an integer"),
    ({"backend": {"maxReplicas": 1000}}, "backend.maxReplicas: must be <= 100"),
    ({"backend": {"minReplicas": 0}}, "backend.minReplicas: must be >= 1"),
    ({"backend": {"minReplicas": 4, "maxReplicas": 3}}, "backend.minReplicas: 4 is greater than backend.maxReplicas 3"),
    ({"workers": {"minReplicas": 4, "maxReplicas": 3}}, "workers.minReplicas: 4 is greater than workers.maxReplicas 3"),
    ({"environment": "qa"}, "environment: must be one of dev, staging, prod"),
    ({"backend": {"image": "ghcr.io/tikit/backend:latest"}}, "backend.image: 'ghcr.io/tikit/backend:latest' uses the 'latest' tag"),
    ({"backend": {"image": "ghcr.io/tikit/backend"}}, "backend.image: 'ghcr.io/tikit/backend' has no tag or digest"),
    ({"backend": {"memory": "2GB"}}, "backend.memory: must be a memory quantity"),
    ({"postgres": {"backupSchedule": "0 2 * * *"}}, "postgres.backupSchedule: must be a six-field cron"),
    ({"postgres": {"image": "ghcr.io/cloudnative-pg/postgresql:v17"}}, "postgres.image: tag must start with the PostgreSQL major"),
    ({"gateway": {"restLoadBalancer": "Random"}}, "gateway.restLoadBalancer: must be one of RoundRobin, LeastRequest"),
    ({"regions": []}, "regions: must be a non-empty list"),
    ({"regions": [{"name": "lagos", "role": "backup"}]}, "regions: no primary region"),
    ({"regions": [{"name": "lagos", "role": "primary"}, {"name": "lagos", "role": "backup"}]},
     "regions: backup region 'lagos' equals the primary region"),
    ({"regions": [{"name": "lagos", "role": "primary"}, {"name": "london", "role": "backup"}, {"name": "london", "role": "backup"}]},
     "regions: duplicate region name 'london'"),
    ({"regions": [{"name": "lagos", "role": "leader"}]}, "regions[0].role: must be one of primary, backup"),
    ({"regions": [{"name": "Lagos!", "role": "primary"}]}, "regions[0].name: must be a DNS label"),
    ({"redis": {"sentinels": 3, "sentinelQuorum": 4}}, "redis.sentinelQuorum: 4 is greater than redis.sentinels 3"),
    ({"redis": {"sentinelImage": "docker.io/library/redis"}}, "redis.sentinelImage: 'docker.io/library/redis' has no tag or digest"),
]


@pytest.mark.parametrize("config, message", BAD, ids=[m.split(":")[0] + "-" + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_input_is_one_line_naming_the_key(config, message):
    with pytest.raises(ConfigError) as err:
        load(config, stack="prod")
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_environment_defaults_to_a_known_stack_name_only():
    with pytest.raises(ConfigError, match="^environment: must be one of"):
        load({}, stack="feature-x")


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_deploying_stacks_must_name_their_clusters(stack):
    """An empty stack file, or regions that lost their contexts, is refused (exit 2 in the
    preview) unless the stack asks for rendering only; dev renders by default."""
    with pytest.raises(ConfigError) as err:
        load({}, stack=stack, deploying=True)
    assert str(err.value).startswith(f"regions[0].context: {stack} region 'lagos' has no kubeconfig context")
    half = [{"name": "lagos", "role": "primary", "context": "c", "objectStorage": {"endpoint": "https://s3.af-south-1.amazonaws.com"}},
            {"name": "london", "role": "backup", "objectStorage": {"endpoint": "https://s3.eu-west-2.amazonaws.com"}}]
    with pytest.raises(ConfigError, match=r"^regions\[1\]\.context: "):
        load({"regions": half}, stack=stack, deploying=True)
    assert load({"renderOnly": True}, stack=stack, deploying=True).render_only
    with pytest.raises(ConfigError, match=r"^regions\[0\]\.context: 'c' with renderOnly: true"):
        load({"regions": half, "renderOnly": True}, stack=stack, deploying=True)
    assert load({}, stack="dev", deploying=True).regions[0].context == ""


def test_config_as_the_cli_provides_it_is_parsed(monkeypatch):
    """The CLI hands objects over as JSON strings: from_pulumi parses them."""
    import pulumi
    from pulumi.runtime import config as rc

    monkeypatch.setattr(pulumi, "get_project", lambda: "tikit")
    monkeypatch.setattr(pulumi, "get_stack", lambda: "prod")
    regions = [{"name": "lagos", "role": "primary", "context": "c1", "objectStorage": {"endpoint": "https://s3.af-south-1.amazonaws.com"}},
               {"name": "london", "role": "backup", "context": "c2", "objectStorage": {"endpoint": "https://s3.eu-west-2.amazonaws.com"}}]
    rc.set_all_config({
        "tikit:environment": "prod", "tikit:backend": json.dumps({"maxReplicas": 8}), "other:key": "x",
        "tikit:regions": json.dumps(regions),
    })
    try:
        assert settings.from_pulumi().backend.max_replicas == 8
        # A deploying stack must say where each region goes.
        rc.set_all_config({"tikit:environment": "prod"})
        with pytest.raises(ConfigError, match=r"^regions\[0\]\.context: prod region 'lagos' has no kubeconfig context"):
            settings.from_pulumi()
        rc.set_all_config({"tikit:environment": "prod", "tikit:renderOnly": "true"})
        assert settings.from_pulumi().render_only
        rc.set_all_config({"tikit:backend": "{not json"})
        with pytest.raises(ConfigError, match="^backend: must be a map"):
            settings.from_pulumi()
    finally:
        rc.set_all_config({})


# --- fuzzing: any config is either accepted or a ConfigError, never a traceback -------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["dev", "prod", "1Gi", "500m", "0 18 * * *", "primary", "backup", "lagos", "x:latest"]),
)
_values = st.recursive(_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)


def _section_overrides():
    keys = {name: [f.alias for f in cls.model_fields.values()] for name, cls in settings.SECTIONS.items()}
    return st.dictionaries(
        st.sampled_from(sorted(keys)),
        st.dictionaries(st.sampled_from(sorted({k for ks in keys.values() for k in ks} | {"bogus"})), _values, max_size=3),
        max_size=3,
    )


_regions = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["lagos", "london", "Lagos", ""]), "role": st.sampled_from(["primary", "backup", "x"])},
        optional={"context": _scalars, "geoTag": st.sampled_from(["lagos", "", "LAGOS"])},
    ),
    max_size=3,
)
_configs = st.fixed_dictionaries(
    {},
    optional={
        "environment": st.sampled_from(["dev", "staging", "prod", "qa", 3]),
        "regions": _regions | _values,
        "namespace": _scalars,
    },
).flatmap(lambda base: _section_overrides().map(lambda sec: {**base, **sec}))


@pytest.mark.slow
@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=_configs | st.dictionaries(st.text(max_size=10), _values, max_size=4), stack=st.sampled_from(["dev", "staging", "prod", "x"]))
def test_fuzz_accepted_or_config_error(config, stack):
    try:
        result = load(config, stack=stack)
    except ConfigError as err:
        assert str(err).count("\n") == 0 and ": " in str(err)
    else:
        assert result.environment in settings.ENVIRONMENTS
        assert result.backend.min_replicas <= result.backend.max_replicas
        assert sum(r.role == "primary" for r in result.regions) == 1


# --- data tiers: checks that used to live in components or in magic bounds ------------


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"port": "5433"}, "postgres.parameters: 'port' is managed by the CloudNativePG operator"),
        ({"Hot_Standby": "off"}, "postgres.parameters: 'Hot_Standby' is managed by the CloudNativePG operator"),
        ({"ssl_ciphers": "x"}, "postgres.parameters: 'ssl_ciphers' is managed by the CloudNativePG operator"),
        ({"WAL_LEVEL": "minimal"}, "postgres.parameters: wal_level must be one of replica, logical; got 'minimal'"),
    ],
)
def test_postgres_parameter_overrides_fail_in_settings(parameters, message):
    """load() refuses them, so the program stops before it declares any resource (it loads
    the settings first), not halfway through the PostgreSQL tier."""
    with pytest.raises(ConfigError) as err:
        load({"postgres": {"parameters": parameters}}, stack="staging")
    assert str(err.value).startswith(message) and err.value.key == "postgres.parameters"


def test_postgres_tuning_goes_through_parameters():
    """Planner and logging knobs are fixed facts with a default (conf/postgres.py); a stack
    tunes them through postgres.parameters, not through settings of their own."""
    s = load({"postgres": {"parameters": {"random_page_cost": "2", "log_min_duration_statement": "250"}}}, stack="prod")
    assert s.postgres.parameters == {"log_min_duration_statement": "250", "random_page_cost": "2"}
    for key in ("slowQueryMs", "randomPageCost", "walKeepSizeMaxMb"):
        with pytest.raises(ConfigError, match=rf"^postgres\.{key}: unknown key"):
            load({"postgres": {key: 1}}, stack="prod")
    with pytest.raises(ConfigError, match=r"^postgres\.parameters\.random_page_cost: must be a string"):
        load({"postgres": {"parameters": {"random_page_cost": 2}}}, stack="prod")


def test_redis_deadlines_cover_the_waits_they_wrap():
    """Fixed facts now, but still related: the backup job's deadline covers its BGSAVE wait
    plus the upload, the data pods' grace period covers the handover's deadline, then
    shutdown-timeout plus the final save; the handover's own waits fit in its deadline."""
    assert redis_tier.BACKUP_ACTIVE_DEADLINE_SECONDS >= redis_conf.BACKUP_WAIT_SECONDS + redis_tier.BACKUP_UPLOAD_MARGIN_SECONDS
    assert redis_tier.TERMINATION_GRACE_SECONDS >= (
        redis_conf.HANDOVER_DEADLINE_SECONDS + redis_conf.SHUTDOWN_TIMEOUT_SECONDS + redis_conf.SHUTDOWN_SAVE_MARGIN_SECONDS
    )
    assert redis_conf.HANDOVER_DEADLINE_SECONDS > (
        redis_conf.HANDOVER_ELIGIBLE_SECONDS + redis_conf.HANDOVER_CATCHUP_SECONDS + redis_conf.HANDOVER_QUORUM_SECONDS
    )
    assert redis_conf.ROLE_RETRY_MIN_SECONDS <= redis_conf.ROLE_RETRY_MAX_SECONDS


AF_SOUTH_1 = "https://s3.af-south-1.amazonaws.com"
EU_WEST_2 = "https://s3.eu-west-2.amazonaws.com"


def test_each_region_has_its_own_object_store():
    regions = [
        {"name": "lagos", "role": "primary", "objectStorage": {"endpoint": AF_SOUTH_1}},
        {"name": "london", "role": "backup"},
    ]
    s = load({"regions": regions}, stack="staging")
    lagos, london = s.object_store("lagos"), s.object_store("london")
    assert lagos.endpoint == AF_SOUTH_1
    # Unset: the stack-wide endpoint (dev and staging may share one).
    assert london.endpoint == s.object_storage.endpoint_url
    assert (lagos.bucket, london.bucket) == ("tikit-backups-staging-lagos", "tikit-backups-staging-london")
    # Its own keys per region, read-write for the owner, read-only for the peers.
    assert (lagos.credentials_secret, lagos.read_only_credentials_secret) == ("tikit-backup-s3-lagos", "tikit-backup-s3-lagos-readonly")
    assert london.credentials(read_only=True) == "tikit-backup-s3-london-readonly"
    assert london.credentials(read_only=False) == "tikit-backup-s3-london"
    stated = load({"regions": [{"name": "lagos", "role": "primary", "objectStorage": {
        "endpoint": AF_SOUTH_1, "bucket": "pg-lagos-archive", "credentialsSecret": "lagos-rw",
        "readOnlyCredentialsSecret": "lagos-ro-readonly"}}]}, stack="dev").object_store("lagos")
    assert (stated.bucket, stated.credentials_secret, stated.read_only_credentials_secret) == (
        "pg-lagos-archive", "lagos-rw", "lagos-ro-readonly")


def test_prod_defaults_keep_each_regions_backups_in_that_region():
    s = load({}, stack="prod")
    assert s.object_store("lagos").endpoint == AF_SOUTH_1
    assert s.object_store("london").endpoint == EU_WEST_2


@pytest.mark.parametrize("regions, error", [
    # prod has no shared default: the stack file says where each store lives.
    ([{"name": "lagos", "role": "primary", "objectStorage": {"endpoint": AF_SOUTH_1}}, {"name": "london", "role": "backup"}],
     r"^regions\[1\]\.objectStorage\.endpoint: prod states where london's backups live"),
    ([{"name": "lagos", "role": "primary", "objectStorage": {"endpoint": "s3.af-south-1"}}],
     r"^regions\[0\]\.objectStorage\.endpoint: must be an http\(s\) URL"),
    ([{"name": "lagos", "role": "primary", "objectStorage": {"endpoint": AF_SOUTH_1, "region": "af-south-1"}}],
     r"^regions\[0\]\.objectStorage\.region: unknown key; allowed: bucket, credentialsSecret, endpoint, readOnlyCredentialsSecret$"),
    ([{"name": "lagos", "role": "primary", "objectStorage": {"endpoint": AF_SOUTH_1, "readOnlyCredentialsSecret": "lagos-ro"}}],
     r"^regions\[0\]\.objectStorage\.readOnlyCredentialsSecret: 'lagos-ro' must end with '-readonly'"),
    ([{"name": "lagos", "role": "primary", "objectStorage": {"endpoint": AF_SOUTH_1, "credentialsSecret": "lagos-readonly"}}],
     r"^regions\[0\]\.objectStorage\.credentialsSecret: 'lagos-readonly' holds read-write keys"),
    ([{"name": "london", "role": "backup", "objectStorage": {"endpoint": EU_WEST_2, "credentialsSecret": "shared"}},
      {"name": "lagos", "role": "primary", "objectStorage": {"endpoint": AF_SOUTH_1, "credentialsSecret": "shared"}}],
     r"^regions\[1\]\.objectStorage\.credentialsSecret: 'shared' is already london's credentialsSecret; each store has its own keys"),
    ([{"name": "lagos", "role": "primary", "objectStorage": {"endpoint": AF_SOUTH_1, "bucket": "one"}},
      {"name": "london", "role": "backup", "objectStorage": {"endpoint": EU_WEST_2, "bucket": "one"}}],
     r"^regions\[1\]\.objectStorage\.bucket: 'one' is lagos's bucket too"),
    ([{"name": "lagos", "role": "primary", "objectStorage": {"endpoint": AF_SOUTH_1, "bucket": "Not_A_Bucket"}}],
     r"^regions\[0\]\.objectStorage\.bucket: must be an S3 bucket name"),
    ([{"name": "lagos", "role": "primary", "objectStorageEndpoint": AF_SOUTH_1}],
     r"^regions\[0\]\.objectStorageEndpoint: unknown key; did you mean 'objectStorage'\?"),
])
def test_object_store_errors_name_the_key(regions, error):
    with pytest.raises(ConfigError, match=error):
        load({"regions": regions}, stack="prod")


def test_replication_peer_cidr_is_gone():
    """Cross-region streaming was never wired (no connectionParameters): no half setting."""
    with pytest.raises(ConfigError, match=r"^network\.replicationPeerCidr: unknown key"):
        load({"network": {"replicationPeerCidr": "203.0.113.0/24"}}, stack="staging")


# --- backup schedules the backup-age alerts can reason about --------------------------


@pytest.mark.parametrize("schedule, period", [
    ("0 0 2 * * *", 86400),      # CNPG: six fields, seconds first
    ("0 0 2 ? * ?", 86400),      # CNPG's cron library reads "?" as "*"
    ("0 30 * * * *", 3600),
    ("0 0 */6 * * *", 6 * 3600),
    ("0 * * * *", 3600),         # Kubernetes CronJob: five fields
    ("15 */6 * * *", 6 * 3600),
    ("0 0 * * *", 86400),
    ("0 */24 * * *", 86400),
])
def test_backup_schedule_periods(schedule, period):
    assert cron.period_seconds(schedule) == period


@pytest.mark.parametrize("schedule", [
    "0 0 2 * * 1-5",   # weekdays only: the weekend gap would look like a missed backup
    "0 0 2 * * 1",
    "0 0 2 1 * *",     # monthly
    "*/30 0 2 * * *",  # every 30 s during 02:00
    "*/5 * * * *",
    "0 0 1 * *",
    "0 */7 * * *",     # 7 does not divide 24: the gap at midnight differs
    "0 25 * * *",
    "61 * * * *",
    "bad",
    "",
])
def test_backup_schedules_without_a_known_period(schedule):
    assert cron.period_seconds(schedule) is None


@pytest.mark.parametrize("config, message", [
    ({"postgres": {"backupSchedule": "0 0 2 * * 1-5"}},
     "postgres.backupSchedule: the backup-age alert needs a daily, hourly or every-N-hours schedule, got '0 0 2 * * 1-5'"),
    ({"redis": {"backupSchedule": "*/15 * * * *"}},
     "redis.backupSchedule: the backup-age alert needs a daily, hourly or every-N-hours schedule, got '*/15 * * * *'"),
    ({"monitoring": {"redisBackupMaxAgeSeconds": 3600}},
     "monitoring.redisBackupMaxAgeSeconds: 3600 must exceed the Redis backup period of 3600 s (redis.backupSchedule '0 * * * *')"),
    ({"redis": {"backupSchedule": "0 3 * * *"}},
     "monitoring.redisBackupMaxAgeSeconds: 7200 must exceed the Redis backup period of 86400 s"),
])
def test_backup_schedules_are_checked_when_settings_load(config, message):
    """A one-line config error naming the key, before any resource is declared (these used
    to surface from the monitoring component, one of them as a ValueError traceback)."""
    with pytest.raises(ConfigError) as err:
        load(config, stack="prod")
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_a_daily_redis_backup_needs_a_limit_above_a_day():
    s = load({"redis": {"backupSchedule": "0 3 * * *"}, "monitoring": {"redisBackupMaxAgeSeconds": 93600}}, stack="prod")
    assert settings.backup_period_seconds("redis.backupSchedule", s.redis.backup_schedule) == 86400


# --- one source of truth for the monitoring addresses and namespaces ------------------


def test_prometheus_address_follows_the_monitoring_namespace():
    assert load({}, stack="prod").derived.prometheus_address == (
        "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
    )
    moved = load({"addons": {"monitoringNamespace": "observability"}}, stack="prod").derived
    assert moved.prometheus_address == "http://kube-prometheus-stack-prometheus.observability.svc:9090"
    explicit = "http://prometheus.elsewhere.svc:9090"
    assert load({"monitoring": {"prometheusAddress": explicit}}, stack="prod").derived.prometheus_address == explicit
    with pytest.raises(ConfigError, match="^monitoring.prometheusAddress: must be an http"):
        load({"monitoring": {"prometheusAddress": "prometheus:9090"}}, stack="prod")


def test_operator_namespaces_are_one_setting_each():
    """addons.kedaNamespace serves the NetworkPolicies and the KEDA PodMonitor alike."""
    assert load({"addons": {"kedaNamespace": "autoscaling"}}, stack="prod").addons.keda_namespace == "autoscaling"
    with pytest.raises(ConfigError, match="^network.kedaNamespace: unknown key"):
        load({"network": {"kedaNamespace": "keda"}}, stack="prod")
    with pytest.raises(ConfigError, match="^monitoring.namespace: unknown key"):
        load({"monitoring": {"namespace": "monitoring"}}, stack="prod")


def test_unknown_keys_suggest_the_closest_one():
    with pytest.raises(ConfigError) as err:
        load({"backend": {"maxReplica": 3}}, stack="prod")
    assert str(err.value) == "backend.maxReplica: unknown key; did you mean 'maxReplicas'?"
    with pytest.raises(ConfigError) as err:
        load({"backnd": {}}, stack="prod")
    assert str(err.value) == "backnd: unknown key; did you mean 'backend'?"


# --- nodes ------------------------------------------------------------------------------------


def test_regions_keep_their_placement_defaults_when_a_stack_lists_them():
    """Pulumi.prod.yaml lists its regions (with contexts): Lagos stays the Local Zone with an
    on-demand fallback for workers, London eu-west-2 without."""
    s = load({"regions": [{"name": "lagos", "role": "primary", "context": "c1", "objectStorage": {"endpoint": "https://s3.af-south-1.amazonaws.com"}},
                          {"name": "london", "role": "backup", "objectStorage": {"endpoint": "https://s3.eu-west-2.amazonaws.com"}}]}, stack="prod")
    lagos, london = s.regions
    assert lagos.zones == ("af-south-1-los-1a",) and lagos.spot_fallback is True
    assert london.zones == ("eu-west-2a", "eu-west-2b", "eu-west-2c") and london.spot_fallback is False
    # ... unless the stack says otherwise.
    s = load({"regions": [{"name": "lagos", "role": "primary", "spotFallback": False, "zones": []}]}, stack="dev")
    assert s.regions[0].spot_fallback is False and s.regions[0].zones == ()


@pytest.mark.parametrize(
    "config, key, message",
    [
        (
            {"regions": [{"name": "lagos", "role": "primary", "nodeClass": {"kind": "AKSNodeClass", "group": "karpenter.azure.com"}}]},
            "regions[0].nodeClass.declare",
            "the program declares only EC2NodeClass",
        ),
        ({"regions": [{"name": "lagos", "role": "primary", "nodeClass": {"amiAlias": "ubuntu@latest"}}]}, "regions[0].nodeClass.amiAlias", "must be an AMI alias"),
        ({"backend": {"peakStart": "0 18 * * 1-5"}}, "backend.peakStart", "not a daily schedule"),
        ({"nodes": {"maxInstanceCpu": 2}}, "nodes.maxInstanceCpu", "is below the 4 the on-demand pool"),
        ({"nodes": {"expireAfter": "30d"}}, "nodes.expireAfter", "must be a duration such as '720h'"),
        ({"capacity": {"profile": ["2m"]}}, "capacity.profile", "must be '<duration>:<users>'"),
    ],
)
def test_node_settings_are_checked(config, key, message):
    with pytest.raises(ConfigError) as err:
        load(config, stack="prod")
    assert err.value.key == key and message in err.value.message


def test_the_capacity_profile_defaults_to_the_k6_stages():
    s = load({}, stack="prod")
    assert s.profile == tuple((d, int(u)) for d, _, u in (st.rpartition(":") for st in s.resilience.stages))
    s = load({"capacity": {"profile": ["1m:50", "3m:500"]}}, stack="prod")
    assert s.profile == (("1m", 50), ("3m", 500))


# --- keys are camelCase as a person types them ----------------------------------------------


def _sections() -> list[type]:
    """Every settings section model."""
    out, todo = [], [settings.Section]
    while todo:
        model = todo.pop()
        out.append(model)
        todo += model.__subclasses__()
    return out


def test_every_key_joins_its_words_as_written():
    """A digit does not start a new word: k8gbNamespace, latencyP99WarningSeconds."""
    assert len(_sections()) > 20
    for model in _sections():
        for name, field in model.model_fields.items():
            first, *rest = name.split("_")
            assert field.alias == first + "".join(w[:1].upper() + w[1:] for w in rest), (model.__name__, name)
    assert load({"addons": {"k8gbNamespace": "gslb"}}, stack="prod").addons.k8gb_namespace == "gslb"
    with pytest.raises(ConfigError, match="^addons.k8GbNamespace: unknown key; did you mean 'k8gbNamespace'"):
        load({"addons": {"k8GbNamespace": "gslb"}}, stack="prod")


@pytest.mark.parametrize("schedule", ["0 4 * * 7", "0 4 * * 5-7", "0 4 * * 1,7", "0 4 * * 7/2"])
def test_sunday_is_0_as_the_clusters_cron_parser_reads_it(schedule):
    """croniter accepts 7 for Sunday; the Go parser of CronJobs, KEDA and CNPG does not."""
    assert not cron.is_valid(schedule)
    with pytest.raises(ConfigError, match="^restoreDrills.schedule: must be a five-field cron"):
        load({"restoreDrills": {"schedule": schedule}}, stack="prod")
    assert cron.is_valid(schedule.replace("7", "0")) and cron.is_valid("0 4 * * SUN") and cron.is_valid("*/7 * * * *")
