"""The offline preview's output contract (design.md): exit codes, layout, redaction,
integers, determinism and duplicate URNs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, STACKS
from preview import cli, engine, output, plan as plan_mod


def run_preview(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "preview", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_every_stack_previews_with_exit_0(tmp_path):
    for stack in STACKS:
        result = run_preview("--stack", stack, "--out", str(tmp_path))
        assert result.returncode == 0, result.stderr
        out = tmp_path / stack
        assert (out / "plan.json").is_file() and (out / "plan.md").is_file()
        plan = json.loads((out / "plan.json").read_text())
        assert plan["stack"] == stack and plan["resourceCount"] == len(plan["resources"])
        for region in plan["regions"]:
            assert list((out / region / "1-manifest").glob("*.yaml"))


def _bad_repo(tmp_path: Path, stack_yaml: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    (repo / "infra").symlink_to(REPO / "infra")
    (repo / "Pulumi.bad.yaml").write_text(stack_yaml)
    return repo


@pytest.mark.parametrize(
    "stack_yaml, message",
    [
        ("config:\n  tikit:environment: qa\n", "config error: environment: must be one of dev, staging, prod; got 'qa'"),
        ("config:\n  tikit:environment: prod\n  tikit:backend:\n    minReplicas: 5\n    maxReplicas: 3\n",
         "config error: backend.minReplicas: 5 is greater than backend.maxReplicas 3"),
        ("config:\n  tikit:environment: prod\n  tikit:regions:\n    - name: lagos\n      role: backup\n",
         "config error: regions: no primary region; exactly one region needs role 'primary'"),
        ("config: [\n", "config error: Pulumi.bad.yaml: is not valid YAML"),
    ],
)
def test_invalid_settings_exit_2_with_one_line_and_write_nothing(tmp_path, stack_yaml, message):
    repo = _bad_repo(tmp_path, stack_yaml)
    out = tmp_path / "out"
    code = cli.preview("bad", out_root=out, repo=repo)
    assert code == 2
    assert not out.exists()


def test_exit_2_message_on_stderr(tmp_path):
    repo = _bad_repo(tmp_path, "config:\n  tikit:environment: qa\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = (
        "import sys; from pathlib import Path; from preview import cli;"
        f"sys.exit(cli.preview('bad', out_root=Path({str(tmp_path / 'out')!r}), repo=Path({str(repo)!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["config error: environment: must be one of dev, staging, prod; got 'qa'"]
    assert not (tmp_path / "out").exists()


def test_unknown_stack_is_a_config_error(tmp_path):
    assert cli.preview("nosuchstack", out_root=tmp_path / "o") == 2
    assert not (tmp_path / "o").exists()


def test_output_is_deterministic(rendered):
    first = rendered("staging").files
    again = cli.render("staging").files
    assert first == again


def test_manifest_layout_matches_render_yaml_to_directory(rendered, stack):
    files = rendered(stack).files
    manifests = [p for p in files if p.endswith(".yaml")]
    assert manifests
    for path in manifests:
        region, subdir, name = path.split("/")
        obj = yaml.safe_load(files[path])
        meta = obj["metadata"]
        expected = "{}-{}-{}-{}.yaml".format(
            obj["apiVersion"].replace("/", "_"), obj["kind"].lower(), meta.get("namespace") or "default", meta["name"]
        )
        assert name == expected
        assert subdir == ("0-crd" if obj["kind"] == "CustomResourceDefinition" else "1-manifest")
        assert region in rendered(stack).plan.regions


def test_plan_records_parent_and_region(rendered, stack):
    plan = rendered(stack).plan
    urns = {r.urn for r in plan.resources}
    for res in plan.resources:
        assert res.parent is not None
        assert res.parent in urns or res.parent.endswith(f"pulumi:pulumi:Stack::tikit-{stack}")
        if res.is_kubernetes:
            assert res.region in plan.regions


def test_integers_stay_integers():
    cleaned = plan_mod.clean({"replicas": 3.0, "ratio": 0.5, "nested": [{"port": 5432.0}]})
    assert cleaned == {"replicas": 3, "ratio": 0.5, "nested": [{"port": 5432}]}
    assert isinstance(cleaned["replicas"], int)
    text = output.plan_json(plan_mod.Plan("p", "s", (), {"n": cleaned["replicas"]}))
    assert '"n": 3' in text and "3.0" not in text


def test_secrets_are_redacted_everywhere(rendered, stack):
    """The random-password stand-in of the mock engine must never reach a file."""
    files = rendered(stack).files
    marker = engine._placeholder("password", "")[: len("offline-password-")]
    assert not [p for p, text in files.items() if marker in text]
    redacted = plan_mod.clean({"data": {engine.SIG_KEY: engine.SECRET_SIG, "value": {"password": "hunter2"}}})
    assert redacted == {"data": {"password": plan_mod.REDACTED}}


def test_duplicate_urns_are_rejected(tmp_path):
    repo = tmp_path / "dup"
    (repo / "prog").mkdir(parents=True)
    (repo / "Pulumi.yaml").write_text("name: dup\nruntime: python\nmain: prog/\n")
    (repo / "Pulumi.dev.yaml").write_text("config: {}\n")
    (repo / "prog" / "__main__.py").write_text(
        "import pulumi_kubernetes as k8s\n"
        "k8s.core.v1.ConfigMap('same', metadata={'name': 'a'})\n"
        "k8s.core.v1.ConfigMap('same', metadata={'name': 'b'})\n"
    )
    with pytest.raises(Exception, match="duplicate URN urn:pulumi:dev::dup::kubernetes:core/v1:ConfigMap::same"):
        engine.run_program("dev", repo)


def test_secure_config_values_become_secret_placeholders(tmp_path):
    repo = tmp_path / "sec"
    repo.mkdir()
    (repo / "Pulumi.yaml").write_text("name: sec\nruntime: python\n")
    (repo / "Pulumi.dev.yaml").write_text(
        "config:\n  sec:token:\n    secure: v1:abc\n  plain: 3\n  sec:obj:\n    a: [1, 2]\n"
    )
    project, config, secrets = engine.load_stack_config("dev", repo)
    assert project == "sec"
    assert config == {"sec:token": "[secret]", "sec:plain": "3", "sec:obj": '{"a": [1, 2]}'}
    assert secrets == ["sec:token"]


def test_every_rendered_manifest_validates(rendered, stack):
    """Built-in kinds against the Kubernetes 1.31 schema in strict mode, custom resources
    against the upstream CRDs: every file a `kubectl apply -f` would read."""
    from preview.validate import K8S_VERSION, validate

    assert tuple(map(int, K8S_VERSION.split("."))) >= (1, 31)
    files = rendered(stack).files
    manifests = {p: yaml.safe_load(t) for p, t in files.items() if p.endswith(".yaml")}
    assert len(manifests) == len(rendered(stack).plan.kubernetes_objects())
    problems = {p: errs for p, obj in manifests.items() if (errs := validate(obj))}
    assert problems == {}
