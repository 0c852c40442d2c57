"""tikit/conf/postgres.py: the CNPG parameter map for every preset, and the overrides it refuses
(``parameters_problem``, which settings.load() applies before any resource exists)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from tikit import settings
from tikit import units
from tikit.conf import postgres as pg_conf
from tikit.conf.postgres import OPERATOR_OWNED, is_operator_owned, parameters_problem

STACKS = settings.ENVIRONMENTS


def postgres_parameters(s: settings.Settings) -> dict[str, str]:
    """The parameter map of a stack's settings (postgres section and derived numbers)."""
    return pg_conf.postgres_parameters(s.postgres, s.derived)


def with_overrides(stack: str, parameters: dict) -> settings.Settings:
    return settings.load({"postgres": {"parameters": parameters}}, stack=stack)


def mb(value: str) -> int:
    m = re.fullmatch(r"(\d+)MB", value)
    assert m, f"{value!r} is not in MB"
    return int(m.group(1))


@pytest.mark.parametrize("stack", STACKS)
def test_values_are_strings_in_stable_order(stack):
    params = postgres_parameters(settings.load({}, stack=stack))
    assert all(isinstance(v, str) for v in params.values()), "CNPG takes parameters as strings"
    assert list(params) == sorted(params)
    assert postgres_parameters(settings.load({}, stack=stack)) == params


@pytest.mark.parametrize("stack", STACKS)
def test_connection_and_memory_numbers_come_from_derived(stack):
    s = settings.load({}, stack=stack)
    d, p = s.derived, postgres_parameters(s)
    assert p["max_connections"] == str(d.postgres_max_connections)
    assert p["superuser_reserved_connections"] == str(pg_conf.SUPERUSER_RESERVED_CONNECTIONS)
    assert p["max_wal_senders"] == str(pg_conf.MAX_WAL_SENDERS)
    assert mb(p["shared_buffers"]) == d.postgres_shared_buffers_mb
    assert mb(p["effective_cache_size"]) == d.postgres_effective_cache_size_mb
    assert mb(p["work_mem"]) == d.postgres_work_mem_mb
    assert mb(p["maintenance_work_mem"]) == d.postgres_maintenance_work_mem_mb


@pytest.mark.parametrize("stack", STACKS)
def test_pools_fit_under_max_connections(stack):
    s = settings.load({}, stack=stack)
    p = postgres_parameters(s)
    usable = int(p["max_connections"]) - int(p["superuser_reserved_connections"])
    assert s.derived.pool_server_connections <= usable


@pytest.mark.parametrize("stack", STACKS)
def test_memory_fits_the_container(stack):
    s = settings.load({}, stack=stack)
    p = postgres_parameters(s)
    limit = units.mebibytes(s.postgres.memory)
    # shared_buffers + every connection using work_mem once stays within the limit.
    assert mb(p["shared_buffers"]) + int(p["max_connections"]) * mb(p["work_mem"]) < limit


@pytest.mark.parametrize("stack", STACKS)
def test_slots_cannot_fill_the_wal_volume(stack):
    s = settings.load({}, stack=stack)
    p = postgres_parameters(s)
    wal_volume = units.mebibytes(s.postgres.wal_storage_size)
    max_wal_size_default = 1024
    assert mb(p["wal_keep_size"]) <= mb(p["max_slot_wal_keep_size"])
    assert mb(p["max_slot_wal_keep_size"]) + max_wal_size_default < wal_volume


def test_notes_slow_query_threshold_and_observability():
    s = settings.load({}, stack="prod")
    p = postgres_parameters(s)
    assert pg_conf.SLOW_QUERY_MS == 1000  # the notes' "slow queries > 1s", in milliseconds
    assert p["log_min_duration_statement"] == "1000"
    assert p["track_io_timing"] == "on"
    assert p["password_encryption"] == "scram-sha-256"  # PgBouncer's SCRAM pass-through
    assert "statement_timeout" not in p  # backups and migrations run long; set per role


@pytest.mark.parametrize("stack", STACKS)
def test_never_renders_an_operator_owned_parameter(stack):
    params = postgres_parameters(settings.load({}, stack=stack))
    assert not [k for k in params if is_operator_owned(k)]


def test_tuning_values_come_from_the_constants_and_parameters_override_them():
    defaults = postgres_parameters(settings.load({}, stack="prod"))
    assert (defaults["random_page_cost"], defaults["effective_io_concurrency"]) == ("1.1", "200")
    assert (pg_conf.RANDOM_PAGE_COST, pg_conf.EFFECTIVE_IO_CONCURRENCY) == ("1.1", 200)
    assert defaults["idle_in_transaction_session_timeout"] == "60s"
    assert pg_conf.IDLE_IN_TRANSACTION_TIMEOUT_SECONDS == 60
    assert defaults["wal_keep_size"] == "512MB" == f"{pg_conf.WAL_KEEP_SIZE_MAX_MB}MB"
    # The former tuning settings are postgres.parameters overrides now.
    tuned = settings.load(
        {"postgres": {"parameters": {"log_min_duration_statement": "250", "idle_in_transaction_session_timeout": "15s",
                                     "wal_keep_size": "128MB", "random_page_cost": "4",
                                     "effective_io_concurrency": "2"}}},
        stack="prod",
    )
    p = postgres_parameters(tuned)
    assert p["log_min_duration_statement"] == "250"
    assert p["idle_in_transaction_session_timeout"] == "15s"
    assert p["wal_keep_size"] == "128MB"
    assert (p["random_page_cost"], p["effective_io_concurrency"]) == ("4", "2")
    # The cap never lets wal_keep_size exceed what the slots may pin: a 1Gi WAL volume lets
    # slots pin 256MB, below WAL_KEEP_SIZE_MAX_MB, so wal_keep_size follows the slots' share.
    small = settings.load({"postgres": {"walStorageSize": "1Gi"}}, stack="dev")
    assert mb(postgres_parameters(small)["max_slot_wal_keep_size"]) < pg_conf.WAL_KEEP_SIZE_MAX_MB
    assert mb(postgres_parameters(small)["wal_keep_size"]) == mb(postgres_parameters(small)["max_slot_wal_keep_size"])


def test_overrides_win_and_add():
    p = postgres_parameters(with_overrides("dev", {"work_mem": "64MB", "jit": "off"}))
    assert p["work_mem"] == "64MB"
    assert p["jit"] == "off"
    assert list(p) == sorted(p)


def test_override_names_are_case_insensitive():
    p = postgres_parameters(with_overrides("dev", {"Work_Mem": "64MB"}))
    assert p["work_mem"] == "64MB"
    assert "Work_Mem" not in p


@pytest.mark.parametrize(
    "name",
    ["archive_mode", "port", "listen_addresses", "shared_preload_libraries", "ssl", "ssl_ciphers",
     "unix_socket_permissions", "recovery_target_time", "synchronous_standby_names", "Hot_Standby"],
)
def test_operator_owned_override_is_a_config_error_naming_it(name):
    assert f"'{name}'" in parameters_problem({name: "x"})
    with pytest.raises(settings.ConfigError) as err:
        with_overrides("staging", {name: "x"})
    assert err.value.key == "postgres.parameters"
    assert f"'{name}'" in str(err.value)
    assert "\n" not in str(err.value)


def test_wal_level_must_replicate():
    with pytest.raises(settings.ConfigError, match="wal_level must be one of replica, logical; got 'minimal'"):
        with_overrides("prod", {"wal_level": "minimal"})
    assert parameters_problem({"Wal_Level": "minimal"}) == "wal_level must be one of replica, logical; got 'minimal'"
    assert parameters_problem({"wal_level": "logical", "jit": "off"}) is None
    assert postgres_parameters(with_overrides("prod", {"wal_level": "logical"}))["wal_level"] == "logical"


def test_operator_owned_list_matches_the_reference():
    # platform-apis.md, CloudNativePG: the parameters the webhook rejects.
    assert set(OPERATOR_OWNED) == {
        "archive_mode", "archive_command", "primary_conninfo", "port", "listen_addresses", "cluster_name",
        "hot_standby", "shared_preload_libraries", "ssl*", "logging_collector", "log_destination",
        "log_directory", "unix_socket_*", "data_directory", "hba_file", "recovery_target*",
        "synchronous_standby_names", "restore_command",
    }
    assert not is_operator_owned("log_min_duration_statement")
    assert is_operator_owned("ssl_min_protocol_version")  # 'ssl*' is a prefix pattern


@given(st.from_regex(r"[a-z][a-z_]{0,30}", fullmatch=True), st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True))
def test_any_other_parameter_is_passed_through(name, value):
    if is_operator_owned(name) or name == "wal_level":
        return
    assert postgres_parameters(with_overrides("dev", {name: value}))[name] == value
