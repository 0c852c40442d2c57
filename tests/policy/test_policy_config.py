"""Policy configuration: the JSON `pulumi preview --policy-pack-config` takes, accepted by
the offline preview too; thresholds change outcomes, levels can be overridden, a bad file is
a config error (exit 2) and a mandatory violation fails the preview (exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import policy_fixtures as F
from conftest import REPO
from preview import policies
from preview.policies import PolicyConfigError

import tikit_policies


def test_threshold_override_changes_the_outcome(rendered):
    plan = rendered("prod").plan
    assert F.of(F.run(plan), "request-capacity") == []
    # The default 20 % headroom holds exactly (10,000 x 6 x 1.2 = 12 x 6,000); 30 % does not.
    found = F.of(F.run(plan, {"request-capacity": {"headroomPercent": 30}}), "request-capacity")
    assert [f.message.split(":")[0] for f in found] == ["lagos", "london"]
    assert "+ 30% headroom = 78,000 > 12 x 6,000" in found[0].message


def test_utilisation_threshold_of_the_pools(rendered):
    plan = rendered("prod").plan
    assert F.of(F.run(plan), "pgbouncer-client-capacity") == []
    found = F.of(F.run(plan, {"pgbouncer-client-capacity": {"maxUtilisationPercent": 50}}), "pgbouncer-client-capacity")
    # 12 x 100 (api) + 10 x 10 (workers) against half of each pool's client slots.
    assert len(found) == 4 and all("= 1,300 connections" in f.message and "(50% of " in f.message for f in found)


def test_enforcement_level_overrides(rendered):
    plan = rendered("prod").plan
    tight = {"headroomPercent": 30}
    advisory = F.run(plan, {"request-capacity": {"enforcementLevel": "advisory", **tight}})
    assert {f.enforcement for f in F.of(advisory, "request-capacity")} == {"advisory"} and not advisory.mandatory
    disabled = F.run(plan, {"request-capacity": {"enforcementLevel": "disabled", **tight}})
    assert F.of(disabled, "request-capacity") == [] and disabled.policies == len(tikit_policies.ALL) - 1
    everything = F.run(plan, {"all": "advisory", "request-capacity": tight})
    assert F.of(everything, "request-capacity") and not everything.mandatory
    shorthand = F.run(plan, {"all": "disabled", "request-capacity": "mandatory"})
    assert shorthand.policies == 1


@pytest.mark.parametrize(
    "config, message",
    [
        ({"requests-capacity": "advisory"}, "policy-config.requests-capacity: unknown policy; did you mean request-capacity? known: addon-pinned,"),
        ({"request-capacity": {"headroom": 10}}, "policy-config.request-capacity.headroom: unknown setting; allowed: enforcementLevel, headroomPercent, scope"),
        ({"request-capacity": {"headroomPercent": "10"}}, 'policy-config.request-capacity.headroomPercent: must be an integer, got "10"'),
        ({"request-capacity": {"headroomPercent": -1}}, "policy-config.request-capacity.headroomPercent: must be >= 0, got -1"),
        ({"request-capacity": {"scope": "everywhere"}}, 'policy-config.request-capacity.scope: must be one of all-regions, primary; got "everywhere"'),
        ({"container-probes": {"other": ["livenessprobe"]}}, 'policy-config.container-probes.other: item 0 must be one of livenessProbe, readinessProbe, startupProbe; got "livenessprobe"'),
        ({"image-pinned": "strict"}, 'policy-config.image-pinned: must be one of advisory, mandatory, remediate, disabled; got "strict"'),
        ({"image-pinned": {"enforcementLevel": 1}}, "policy-config.image-pinned.enforcementLevel: must be one of advisory, mandatory, remediate, disabled; got 1"),
        ({"image-pinned": 3}, "policy-config.image-pinned: must be an enforcement level or an object, got 3"),
        ({"all": {"enforcementLevel": "advisory", "headroomPercent": 1}}, "policy-config.all: takes only an enforcementLevel"),
    ],
)
def test_bad_config_is_a_config_error(rendered, config, message):
    with pytest.raises(PolicyConfigError) as err:
        F.run(rendered("dev").plan, config)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "bad.json: is not valid JSON (line 1)"),
        ("[]", "bad.json: must be a JSON object mapping policy names to a level or settings"),
        (
            '{"image-digest": "mandatory", "image-digest": "disabled"}',
            "bad.json: names 'image-digest' twice; JSON keeps only the last, so say it once",
        ),
        (
            '{"scale-out-time": {"maxSeconds": 120, "maxSeconds": 900}}',
            "bad.json: names 'maxSeconds' twice",
        ),
    ],
)
def test_bad_config_file(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(PolicyConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        policies.load_config(path)


def test_empty_or_missing_file(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    assert policies.load_config(empty) == {} and policies.load_config(None) == {}
    with pytest.raises(PolicyConfigError, match="cannot read"):
        policies.load_config(tmp_path / "missing.json")


def _preview(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "preview", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_preview_exits_1_on_a_mandatory_violation(tmp_path):
    config = tmp_path / "tight.json"
    config.write_text(json.dumps({"request-capacity": {"headroomPercent": 30}}))
    result = _preview("--stack", "prod", "--out", str(tmp_path / "out"), "--policy-config", str(config))
    assert result.returncode == 1, result.stderr
    assert "prod: 2 mandatory policy violation(s)" in result.stderr
    assert "[mandatory] request-capacity (api-lagos): lagos: 10,000 concurrent users" in result.stdout
    md = (tmp_path / "out" / "prod" / "plan.md").read_text()
    assert "2 mandatory violation(s), 0 advisory finding(s): **FAILED**" in md
    assert json.loads((tmp_path / "out" / "prod" / "policy.json").read_text())["findings"][0]["policy"] == "request-capacity"


@pytest.mark.slow
def test_preview_exits_2_on_a_bad_policy_config(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"request-capacity": {"headroomPercent": 5000}}))
    result = _preview("--stack", "dev", "--out", str(tmp_path / "out"), "--policy-config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "config error: policy-config.request-capacity.headroomPercent: must be <= 1000, got 5000"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "endpoint, place",
    [
        ("https://s3.af-south-1.amazonaws.com", "af-south-1"),
        ("https://s3-eu-west-2.amazonaws.com/", "eu-west-2"),
        ("https://s3.dualstack.eu-west-2.amazonaws.com", "eu-west-2"),
        ("https://tikit-backups-prod-london.s3.af-south-1.amazonaws.com", "af-south-1"),
        ("https://bucket.vpce-0a1b2c3d-abcd1234.s3.af-south-1.vpce.amazonaws.com", "af-south-1"),
        ("https://s3-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ("https://backups.s3.amazonaws.com", "us-east-1"),
        ("https://s3.amazonaws.com", "us-east-1"),
        ("https://minio.lagos.example:9000", "minio.lagos.example:9000"),
        ("https://s3.af-south-1.amazonaws.com.evil.example", "s3.af-south-1.amazonaws.com.evil.example"),
    ],
)
def test_every_form_of_an_aws_endpoint_names_its_region(endpoint, place):
    from tikit_policies.reliability import store_location

    assert store_location(endpoint) == place
