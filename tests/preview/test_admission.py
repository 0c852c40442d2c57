"""Every render is validated before anything is written: an object the API server or etcd
would refuse (schema, names and labels, size limits) ends the preview with exit 2 and one
line naming the object, its region and the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from preview import admission, cache, cli, validate

HEAD = (
    "import pulumi\n"
    "import pulumi_kubernetes as k8s\n"
    "\n"
    "class Region(pulumi.ComponentResource):\n"
    "    def __init__(self, name):\n"
    "        super().__init__('tikit:platform:Region', name)\n"
    "        self.register_outputs({})\n"
    "\n"
    "inside = pulumi.ResourceOptions(parent=Region('lagos'))\n"
    "meta = lambda name, **kw: {'name': name, 'namespace': 'tikit', **kw}\n"
)


def program(source: str):
    def run() -> None:
        exec(compile(HEAD + source, "<program>", "exec"), {"__name__": "__main__"})

    return run


def repo_for(tmp_path: Path) -> Path:
    repo = tmp_path / "r"
    repo.mkdir()
    (repo / "Pulumi.yaml").write_text("name: t\nruntime: python\n")
    (repo / "Pulumi.dev.yaml").write_text("config: {}\n")
    return repo


def deployment(pod_labels: str = "{'app': 'api'}", extra_spec: str = "", container: str = "", pod: str = "") -> str:
    """A Deployment's source; the extras are Python source inserted into its spec, its
    container and its pod spec."""
    return (
        "k8s.apps.v1.Deployment('api', metadata=meta('api'), spec={"
        "'selector': {'matchLabels': {'app': 'api'}},"
        f"'template': {{'metadata': {{'labels': {pod_labels}}}, 'spec': {{'containers': [{{'name': 'api', 'image': 'x:1'{container}}}]{pod}}}}}"
        f"{extra_spec}}}, opts=inside)\n"
    )


REFUSED = [
    (
        "k8s.core.v1.ConfigMap('cm', metadata=meta('cm', labels={'tier': 'spot\\n'}), opts=inside)\n",
        'ConfigMap tikit/cm in region lagos: metadata.labels.tier: invalid label value',
    ),
    (
        "k8s.core.v1.ConfigMap('cm', metadata=meta('cm', labels={'tier': 'x' * 64}), opts=inside)\n",
        "ConfigMap tikit/cm in region lagos: metadata.labels.tier: invalid label value",
    ),
    (
        "k8s.core.v1.ConfigMap('cm', metadata=meta('cm', labels={'backend\\nmaxReplicas': 'x'}), opts=inside)\n",
        'ConfigMap tikit/cm in region lagos: metadata.labels["backend\\nmaxReplicas"]: invalid key',
    ),
    (
        "k8s.core.v1.ConfigMap('cm', metadata=meta('Not_A_Name'), opts=inside)\n",
        "ConfigMap tikit/Not_A_Name in region lagos: metadata.name: 'Not_A_Name' must be a DNS-1123 subdomain",
    ),
    (
        "k8s.core.v1.ConfigMap('cm', metadata=meta('cm', annotations={'a': 'x' * (256 * 1024)}), opts=inside)\n",
        "ConfigMap tikit/cm in region lagos: metadata.annotations: total size 262145 bytes exceeds 262144",
    ),
    (
        "k8s.core.v1.ConfigMap('cm', metadata=meta('cm'), data={'a': 'x' * (1024 * 1024 + 1)}, opts=inside)\n",
        "ConfigMap tikit/cm in region lagos: data: holds 1,048,577 bytes; a ConfigMap holds at most 1,048,576 (1 MiB)",
    ),
    (
        "k8s.core.v1.Secret('s', metadata=meta('s'), string_data={'../key': 'x'}, opts=inside)\n",
        "Secret tikit/s in region lagos: stringData[\"../key\"]: invalid key",
    ),
    (
        deployment(container=", 'env': [{'name': 'BLOB', 'value': 'x' * (1600 * 1024)}]"),
        "Deployment tikit/api in region lagos: <root>: is 1,638,",
    ),
    (
        deployment(pod_labels="{'app': 'api', 'region': 'lagos\\u2028'}"),
        "Deployment tikit/api in region lagos: spec.template.metadata.labels.region: invalid label value",
    ),
    (
        deployment(extra_spec=", 'replica': 2"),
        'Deployment tikit/api in region lagos: spec.replica: unknown field (did you mean "replicas"?)',
    ),
    (
        deployment(extra_spec=", 'replicas': 'two'"),
        "Deployment tikit/api in region lagos: spec.replicas: must be integer",
    ),
    (
        "k8s.policy.v1.PodDisruptionBudget('pdb', metadata=meta('pdb'), spec={'maxUnavailable': 1, "
        "'selector': {'matchExpressions': [{'key': 'app', 'operator': 'In', 'values': ['api', 'not valid']}]}}, opts=inside)\n",
        "PodDisruptionBudget tikit/pdb in region lagos: spec.selector.matchExpressions[0].values[1]: invalid label value",
    ),
    (
        deployment(pod=", 'tolerations': [{'key': 'spot', 'operator': 'Equal', 'value': 'a b', 'effect': 'NoSchedule'}]"),
        "Deployment tikit/api in region lagos: spec.template.spec.tolerations[0].value: invalid label value",
    ),
    (
        "k8s.apiextensions.CustomResource('so', api_version='keda.sh/v1alpha1', kind='ScaledObject', metadata=meta('so'), "
        "spec={'scaleTargetRef': {'name': 'api'}, 'minReplicaCount': 'two', 'triggers': [{'type': 'cpu', 'metricType': 'Utilization', 'metadata': {'value': '70'}}]}, opts=inside)\n",
        "ScaledObject tikit/so in region lagos: spec.minReplicaCount: must be integer",
    ),
]


@pytest.mark.parametrize("source, line", REFUSED, ids=[l.split(": ")[1].split("[")[0] + f"-{i}" for i, (_, l) in enumerate(REFUSED)])
def test_what_the_api_server_refuses_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, source, line):
    out = tmp_path / "out"
    assert cli.preview("dev", out_root=out, repo=repo_for(tmp_path), program=program(source)) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].isprintable(), captured.err
    assert lines[0].startswith("config error: " + line), lines[0]
    assert captured.out == "" and not out.exists()


def test_several_problems_are_counted_on_the_one_line(tmp_path, capsys):
    source = (
        "k8s.core.v1.ConfigMap('a', metadata=meta('a', labels={'x': '-'}), opts=inside)\n"
        "k8s.core.v1.ConfigMap('b', metadata=meta('b', labels={'x': '-', 'y': '-'}), opts=inside)\n"
    )
    assert cli.preview("dev", out_root=tmp_path / "out", repo=repo_for(tmp_path), program=program(source)) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("config error: ConfigMap tikit/a in region lagos: metadata.labels.x: invalid label value")
    assert line.endswith("(and 2 more problems in 2 objects)"), line


def test_a_valid_program_still_renders(tmp_path):
    source = "k8s.core.v1.ConfigMap('cm', metadata=meta('cm', labels={'tier': 'spot'}), data={'a.conf': 'x'}, opts=inside)\n"
    rendered = cli.render("dev", repo_for(tmp_path), program=program(source))
    assert "lagos/1-manifest/v1-configmap-tikit-cm.yaml" in rendered.files


# --------------------------------------------------------------------------------------
# Without CRDs: built-in kinds are still checked; one line says custom resources are not
# --------------------------------------------------------------------------------------


def _objects(stack: str, rendered) -> list[tuple[str, dict]]:
    return [(r.region, r.manifest) for r in rendered(stack).plan.kubernetes_objects()]


def test_without_crds_custom_resources_are_not_checked_and_one_line_says_so(rendered, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    lines: list[str] = []
    admission.check(_objects("staging", rendered), crds=tmp_path / "no-crds", warn=lines.append)
    assert len(lines) == 1 and lines[0].startswith("warning: custom resources not checked"), lines
    assert "postgresql.cnpg.io/v1 Cluster" in lines[0]
    # Nothing judged without its CRD is remembered as valid: with CRDs, they are checked.
    remembered = json.loads((tmp_path / "cache" / "valid-objects.json").read_text())["valid"]
    assert len(remembered) == sum(1 for _, o in _objects("staging", rendered) if validate.is_builtin(o["apiVersion"], o["kind"]))


def test_without_crds_a_bad_built_in_object_is_still_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, "")
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "tikit", "labels": {"a": "-"}}}
    custom = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "so", "namespace": "tikit"}, "spec": {}}
    lines: list[str] = []
    with pytest.raises(admission.ObjectRejected) as err:
        admission.check([("lagos", custom), ("lagos", bad)], crds=tmp_path / "no-crds", warn=lines.append)
    assert str(err.value).startswith("ConfigMap tikit/cm in region lagos: metadata.labels.a: invalid label value")
    assert lines == []  # the error is the one line


@pytest.mark.slow
def test_the_command_runs_without_any_crd_directory(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TIKIT_CRDS_DIR": str(tmp_path / "none"), cache.CACHE_ENV: ""}
    result = subprocess.run([sys.executable, "-m", "preview", "--stack", "dev", "--out", str(tmp_path / "out")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "custom resources not checked" in result.stderr
    assert (tmp_path / "out" / "dev" / "plan.json").is_file()


# --------------------------------------------------------------------------------------
# Speed: remembered verdicts, prepared schemas cached, only the rendered kinds loaded
# --------------------------------------------------------------------------------------


def test_objects_found_valid_are_not_judged_again(rendered, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    objects = _objects("prod", rendered)
    admission.check(objects)  # judged, remembered
    calls = []
    monkeypatch.setattr(validate, "validate", lambda obj, registry=None: calls.append(obj) or [])
    start = time.process_time()
    admission.check(objects)
    assert calls == [] and time.process_time() - start < 0.1
    changed = json.loads(json.dumps(objects[0][1]))
    changed["metadata"]["labels"]["tikit.app/extra"] = "1"
    admission.check([(objects[0][0], changed)] + objects[1:])
    assert calls == [changed]


def test_a_changed_crd_directory_means_judging_again(tmp_path):
    crds = tmp_path / "crds" / "p"
    crds.mkdir(parents=True)
    (crds / "a.yaml").write_text("kind: CustomResourceDefinition\n")
    before = admission._judges_digest(tmp_path / "crds")
    (crds / "a.yaml").write_text("kind: CustomResourceDefinition\n# changed\n")
    assert admission._judges_digest(tmp_path / "crds") != before


def test_prepared_crd_schemas_are_cached_as_json_by_sha256(tmp_path, monkeypatch):
    cached = tmp_path / "cache"
    registry = validate.CrdRegistry(validate.crds_dir(), cache_dir=cached)
    assert registry.version("keda.sh/v1alpha1", "ScaledObject") is not None
    files = list((cached / "crd").glob("*.json"))
    entry = registry.entry("keda.sh/v1alpha1", "ScaledObject")
    import hashlib

    assert [f.name.split("-")[0] for f in files] == [hashlib.sha256(entry.path.read_bytes()).hexdigest()]
    # A second registry reads the JSON, never the YAML (beyond the heads it indexes).
    again = validate.CrdRegistry(validate.crds_dir(), cache_dir=cached)
    again.index()
    monkeypatch.setattr(validate.yaml, "load", lambda *a, **k: pytest.fail("parsed a CRD's YAML"))
    compiled = again.version("keda.sh/v1alpha1", "ScaledObject")
    assert compiled.schema == registry.version("keda.sh/v1alpha1", "ScaledObject").schema
    assert validate.validate({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "s", "namespace": "n"},
                              "spec": {"scaleTargetRef": {"name": "x"},
                                       "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}]}}, again) == []


def test_only_the_crds_of_rendered_kinds_are_loaded(rendered, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    validate._registry_for.cache_clear()
    try:
        admission.check(_objects("dev", rendered))
        loaded = {f.name.split("-")[0] for f in (tmp_path / "cache" / "crd").glob("*.json")}
        kinds = {(o["apiVersion"], o["kind"]) for _, o in _objects("dev", rendered) if not validate.is_builtin(o["apiVersion"], o["kind"])}
        files = {validate.default_registry().entry(a, k).path for a, k in kinds}
        assert len(loaded) == len(files) < len(validate.default_registry().index())
    finally:
        validate._registry_for.cache_clear()


# --------------------------------------------------------------------------------------
# The rule for the preview command's imports
# --------------------------------------------------------------------------------------


def test_the_validators_are_runtime_requirements():
    """`make preview` installs requirements.txt only, and every render is validated: the
    validators are runtime requirements, not development ones."""
    wanted = {line.split("==")[0].strip().lower() for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line}
    assert {"jsonschema", "kubernetes-validate", "pyyaml"} <= wanted
