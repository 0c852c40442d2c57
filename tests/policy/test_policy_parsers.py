"""The pack's parsers and heuristics on their own: what they accept matters as much as
what they flag, since a false positive blocks every preview."""

from __future__ import annotations

import pytest
import policy_fixtures  # noqa: F401 - puts policy/ on sys.path
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from tikit_policies import parse, secrets
from tikit_policies.model import Stack, to_obj


@pytest.mark.parametrize(
    "image, problem",
    [
        ("ghcr.io/tikit/backend:1.4.2", None),
        ("localhost:5000/tikit/backend:1.0", None),
        ("redis@sha256:" + "a" * 64, None),
        ("ghcr.io/tikit/backend:latest", "uses the floating tag 'latest'"),
        ("ghcr.io/tikit/backend", "has no tag or digest (the runtime pulls 'latest')"),
        ("localhost:5000/tikit/backend", "has no tag or digest (the runtime pulls 'latest')"),
        ("redis@sha256:abc", "has a malformed digest 'sha256:abc'"),
    ],
)
def test_image_problem(image, problem):
    assert parse.image_problem(image) == problem


@pytest.mark.parametrize(
    "expr, fields, problem",
    [
        ("0 0 2 * * *", parse.SIX_FIELDS, None),
        ("0 2 * * *", parse.SIX_FIELDS, "has 5 fields, expected 6 (second minute hour day month day)"),
        ("0 18 * * *", parse.FIVE_FIELDS, None),
        ("*/15 9-17 * JAN-MAR MON-FRI", parse.FIVE_FIELDS, None),
        ("0 18 * * 6", parse.FIVE_FIELDS, None),
        # Go's cron parser (CronJobs, KEDA, CNPG, Karpenter) knows Sunday only as 0 or SUN.
        ("0 18 * * 7", parse.FIVE_FIELDS, "day of week '7' is outside 0-6"),
        ("0 4 * * 5-7", parse.FIVE_FIELDS, "day of week '7' is outside 0-6"),
        ("60 * * * *", parse.FIVE_FIELDS, "minute '60' is outside 0-59"),
        ("0 0 0 * *", parse.FIVE_FIELDS, "day of month '0' is outside 1-31"),
        ("*/0 * * * *", parse.FIVE_FIELDS, "minute step '/0' must be a positive number"),
        ("1,,2 * * * *", parse.FIVE_FIELDS, "minute '1,,2' has an empty list item"),
        ("TZ=Africa/Lagos 0 18 * * *", parse.FIVE_FIELDS, "carries a TZ= prefix; set the resource's time zone field instead"),
    ],
)
def test_cron_problem(expr, fields, problem):
    assert parse.cron_problem(expr, fields) == problem


def test_cron_macros_only_where_allowed():
    assert parse.cron_problem("@hourly", parse.FIVE_FIELDS, macros=True) is None
    assert parse.cron_problem("@hourly", parse.FIVE_FIELDS) == "has 1 fields, expected 5 (minute hour day month day)"


@pytest.mark.parametrize(
    "value, expected",
    [("512Mi", 512 * 1024**2), ("2Gi", 2 * 1024**3), ("1G", 1e9), ("250m", 0.25), ("0.5", 0.5), (3.0, 3.0), ("lots", None)],
)
def test_quantity(value, expected):
    assert parse.quantity(value) == expected


@pytest.mark.parametrize("value, expected", [("1gb", 1024**3), ("1g", 10**9), ("100mb", 100 * 1024**2), ("322122547", 322122547), ("1 tb", None)])
def test_redis_bytes(value, expected):
    assert parse.redis_bytes(value) == expected


def test_int_or_percent_rounds_up_like_kubernetes():
    assert parse.int_or_percent("50%", 3, round_up=True) == 2
    assert parse.int_or_percent("0%", 3, round_up=True) == 0
    assert parse.int_or_percent(1.0, 3, round_up=True) == 1


def test_plain_unwraps_analyzer_proxies_and_unknowns():
    props = unknown_checking_proxy({"spec": {"replicas": 2.0, "image": UNKNOWN_STRING_VALUE, "args": ["a", UNKNOWN_STRING_VALUE]}})
    assert parse.plain(props) == {"spec": {"replicas": 2.0, "image": parse.UNKNOWN, "args": ["a", parse.UNKNOWN]}}
    assert parse.as_int(2.0) == 2 and parse.as_int("50%") is None and parse.as_int(True) is None


def test_unknown_values_are_skipped_not_fatal():
    """During a real preview a computed value is unknown: the policies skip it."""
    props = unknown_checking_proxy(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "api", "namespace": UNKNOWN_STRING_VALUE, "labels": {}},
            "spec": {"template": {"spec": {"containers": [{"name": "api", "image": UNKNOWN_STRING_VALUE}]}}},
        }
    )
    obj = to_obj("kubernetes:apps/v1:Deployment", props, "urn:x")
    assert parse.image_problem(obj.spec["template"]["spec"]["containers"][0]["image"]) is None
    assert Stack([obj]).workloads[0].min_replicas == 1


@pytest.mark.parametrize(
    "name, secret",
    [
        ("DB_PASSWORD", True),
        ("REDISCLI_AUTH", True),
        ("apiKey", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("requirepass", True),
        ("auth-pass", True),
        ("PASSWORD_FILE", False),
        ("ACCESS_KEY_ID", False),
        ("auth_type", False),
        ("auth_file", False),
        ("admin_users", False),
        ("password_encryption", False),
        ("NODE_ENV", False),
        ("JOB_QUEUE", False),
    ],
)
def test_secret_names(name, secret):
    assert secrets.secret_name(name) is secret


@pytest.mark.parametrize(
    "value, what",
    [
        ("redis://:$(REDIS_PASSWORD)@redis:6379/0", None),
        ("postgres://tikit:${PGPASSWORD}@pgbouncer-rw:6432/tikit", None),
        ("postgres://pgbouncer-rw:6432/tikit", None),
        ("https://s3.eu-west-2.amazonaws.com", None),
        ("postgres://tikit:hunter2@pgbouncer-rw:6432/tikit", "a URL with a password"),
        ("host=pg password=hunter2", "a password (password=...)"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE", "a private key"),
        ("AKIAABCDEFGHIJKLMNOP", "an AWS access key"),
        ("[secret]", "a Pulumi secret"),
    ],
)
def test_secret_values(value, what):
    assert secrets.value_problem(value) == what


def test_config_text_flags_secrets_but_not_references():
    text = "\n".join(
        [
            "# requirepass is passed at start",
            "requirepass hunter2",
            "masterauth $(REDIS_PASSWORD)",
            'export REDISCLI_AUTH="$REDIS_PASSWORD"',
            "redis-server /etc/redis/redis.conf --requirepass \"$REDIS_PASSWORD\" --masterauth \"$REDIS_PASSWORD\"",
            "sentinel auth-pass tikit s3cret",
            "auth_file = /etc/pgbouncer/auth/userlist.txt",
            "user default on >hunter2 ~* +@all",
            "password_encryption = scram-sha-256",
        ]
    )
    assert secrets.config_text_problems(text) == [
        "line 2 sets requirepass",
        "line 6 sets auth-pass",
        "line 8 sets an ACL password for user default",
    ]
