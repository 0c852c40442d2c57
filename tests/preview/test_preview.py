"""The offline preview's output contract (design.md): exit codes, layout, redaction,
integers, determinism and duplicate URNs."""

from __future__ import annotations

import json
import os
import re
import shutil
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


@pytest.mark.slow
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
        ("config: [\n", "config error: Pulumi.bad.yaml: is not valid YAML at line 2"),
    ],
)
def test_invalid_settings_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, stack_yaml, message):
    repo = _bad_repo(tmp_path, stack_yaml)
    out = tmp_path / "out"
    code = cli.preview("bad", out_root=out, repo=repo)
    assert code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [message]
    assert captured.out == ""
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
    """A second, independent run of the program (not the session's shared one) renders the
    same bytes."""
    from tikit import program

    first = rendered("staging").files
    again = cli.render("staging", program=program.main).files
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


def test_secrets_are_redacted_everywhere(rendered, stack, tmp_path, capsys):
    """No value the mock engine made up for a secret output (passwords, and the raw
    base64/hex of random bytes) reaches a file, policy.json or the terminal."""
    stand_ins = rendered(stack).stand_ins
    # Passwords and both encodings of random bytes are there to look for.
    assert any(v.startswith("offline-password-") for v in stand_ins)
    hex_ones = [v for v in stand_ins if re.fullmatch(r"[0-9a-f]{16,}", v)]
    base64_ones = [v for v in stand_ins if not v.startswith("offline-") and v not in hex_ones]
    assert hex_ones and base64_ones
    files = rendered(stack).files
    assert "policy.json" in files
    assert {(p, v) for p, text in files.items() for v in stand_ins if v in text} == set()

    assert cli.preview(stack, out_root=tmp_path) == 0
    printed = capsys.readouterr()
    written = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    assert f"{stack}/policy.json" in written and f"{stack}/plan.json" in written
    leaks = {(where, v) for where, text in [*written.items(), ("stdout", printed.out), ("stderr", printed.err)] for v in stand_ins if v in text}
    assert leaks == set()
    redacted = plan_mod.clean({"data": {engine.SIG_KEY: engine.SECRET_SIG, "value": {"password": "hunter2"}}})
    assert redacted == {"data": {"password": plan_mod.REDACTED}}


def test_duplicate_urns_are_rejected(tmp_path):
    repo, program = _program(
        tmp_path,
        "import pulumi_kubernetes as k8s\n"
        "k8s.core.v1.ConfigMap('same', metadata={'name': 'a'})\n"
        "k8s.core.v1.ConfigMap('same', metadata={'name': 'b'})\n",
        name="dup",
    )
    with pytest.raises(engine.DuplicateUrnError, match="duplicate URN urn:pulumi:dev::dup::kubernetes:core/v1:ConfigMap::same"):
        engine.run_program("dev", repo, program=program)


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


def test_every_rendered_manifest_validates(rendered, stack, crds):
    """Built-in kinds against the Kubernetes 1.31 schema in strict mode, custom resources
    against the upstream CRDs: every file a `kubectl apply -f` would read."""
    from preview.validate import K8S_VERSION, validate

    assert tuple(map(int, K8S_VERSION.split("."))) >= (1, 31)
    files = rendered(stack).files
    manifests = {p: yaml.safe_load(t) for p, t in files.items() if p.endswith(".yaml")}
    assert len(manifests) == len(rendered(stack).plan.kubernetes_objects())
    problems = {p: errs for p, obj in manifests.items() if (errs := validate(obj))}
    assert problems == {}


# --------------------------------------------------------------------------------------
# Programs that cannot be previewed: exit 3, one line, nothing written
# --------------------------------------------------------------------------------------

REGION_COMPONENT = (
    "import pulumi\n"
    "import pulumi_kubernetes as k8s\n"
    "\n"
    "class Region(pulumi.ComponentResource):\n"
    "    def __init__(self, name):\n"
    "        super().__init__('tikit:platform:Region', name)\n"
    "        self.register_outputs({})\n"
    "\n"
    "lagos = Region('lagos')\n"
    "inside = pulumi.ResourceOptions(parent=lagos)\n"
)


def source_program(source: str):
    """A program from source text: what the engine runs instead of tikit.program.main."""

    def run() -> None:
        exec(compile(source, "<program>", "exec"), {"__name__": "__main__"})

    return run


def _program(tmp_path: Path, main: str, *, name: str = "t"):
    """(repo, program): a one-stack (dev) project and a program from the source `main`."""
    repo = tmp_path / name
    repo.mkdir(parents=True)
    (repo / "Pulumi.yaml").write_text(f"name: {name}\nruntime: python\nmain: prog/\n")
    (repo / "Pulumi.dev.yaml").write_text("config: {}\n")
    return repo, source_program(main)


@pytest.mark.parametrize(
    "main, line",
    [
        (
            REGION_COMPONENT + "k8s.core.v1.ConfigMap('same', metadata={'name': 'a'}, opts=inside)\n"
            "k8s.core.v1.ConfigMap('same', metadata={'name': 'b'}, opts=inside)\n",
            "error: duplicate URN urn:pulumi:dev::t::tikit:platform:Region$kubernetes:core/v1:ConfigMap::same: "
            "resource names must be unique per type and parent",
        ),
        (
            REGION_COMPONENT + "k8s.core.v1.ConfigMap('a', metadata={'name': 'same'}, opts=inside)\n"
            "k8s.core.v1.ConfigMap('b', metadata={'name': 'same'}, opts=inside)\n",
            "error: two objects render to lagos/1-manifest/v1-configmap-default-same.yaml: "
            "urn:pulumi:dev::t::tikit:platform:Region$kubernetes:core/v1:ConfigMap::b",
        ),
        (
            REGION_COMPONENT + "k8s.core.v1.ConfigMap('loose', metadata={'name': 'loose'})\n",
            "error: urn:pulumi:dev::t::kubernetes:core/v1:ConfigMap::loose is not inside any tikit:platform:Region, "
            "so it has no build/<stack>/<region>/ directory",
        ),
        (REGION_COMPONENT + "raise RuntimeError('boom\\nsecond line')\n", "error: RuntimeError: boom\\nsecond line"),
    ],
    ids=["duplicate-urn", "two-objects-one-file", "outside-any-region", "program-exception"],
)
def test_a_program_that_cannot_be_previewed_exits_3_with_one_line(tmp_path, capsys, main, line):
    repo, program = _program(tmp_path, main)
    out = tmp_path / "out"
    assert cli.preview("dev", out_root=out, repo=repo, program=program) == 3
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [line]
    assert captured.out == ""
    assert not out.exists()


@pytest.mark.slow
def test_exit_3_from_the_command_line(tmp_path):
    """The same through a real interpreter: one stderr line, no traceback, no asyncio
    "Task was destroyed" noise at exit."""
    source = (REGION_COMPONENT + "k8s.core.v1.ConfigMap('x', metadata={'name': 'x'}, opts=inside)\n"
              "k8s.core.v1.ConfigMap('x', metadata={'name': 'y'}, opts=inside)\n")
    repo, _ = _program(tmp_path, source)
    code = (
        "import sys; from pathlib import Path; from preview import cli\n"
        f"def program():\n    exec(compile({source!r}, '<program>', 'exec'), {{'__name__': '__main__'}})\n"
        f"sys.exit(cli.preview('dev', out_root=Path({str(tmp_path / 'out')!r}), repo=Path({str(repo)!r}), program=program))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        "error: duplicate URN urn:pulumi:dev::t::tikit:platform:Region$kubernetes:core/v1:ConfigMap::x: "
        "resource names must be unique per type and parent"
    ]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------
# URNs as the engine builds them
# --------------------------------------------------------------------------------------


def test_urns_carry_the_whole_chain_of_parent_types(rendered):
    urns = {r.urn for r in rendered("dev").plan.resources}
    assert "urn:pulumi:dev::tikit::tikit:platform:Region$tikit:app:Backend$kubernetes:apps/v1:Deployment::api-lagos" in urns
    # Children of the root stack carry no parent type.
    assert "urn:pulumi:dev::tikit::tikit:platform:Region::lagos" in urns


def test_nested_component_urns(tmp_path):
    repo, program = _program(
        tmp_path,
        REGION_COMPONENT
        + "class Tier(pulumi.ComponentResource):\n"
        "    def __init__(self, name, opts):\n"
        "        super().__init__('tikit:app:Tier', name, None, opts)\n"
        "        k8s.core.v1.ConfigMap(name + '-cm', metadata={'name': name}, opts=pulumi.ResourceOptions(parent=self))\n"
        "        self.register_outputs({})\n"
        "Tier('api', inside)\n",
    )
    run = engine.run_program("dev", repo, program=program)
    assert {r.urn for r in run.records} == {
        "urn:pulumi:dev::t::tikit:platform:Region::lagos",
        "urn:pulumi:dev::t::tikit:platform:Region$tikit:app:Tier::api",
        "urn:pulumi:dev::t::tikit:platform:Region$tikit:app:Tier$kubernetes:core/v1:ConfigMap::api-cm",
    }


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------


def test_a_deployments_dependencies_are_in_the_plan_and_reach_stack_policies(rendered):
    from preview import policies

    plan = rendered("dev").plan
    api = next(r for r in plan.resources if r.name == "api-lagos" and r.type == "kubernetes:apps/v1:Deployment")
    region = "urn:pulumi:dev::tikit::tikit:platform:Region"
    assert f"{region}$kubernetes:core/v1:Namespace::namespace-lagos" in api.dependencies
    assert f"{region}$tikit:app:Backend$kubernetes:core/v1:ConfigMap::api-config-lagos" in api.dependencies
    assert list(api.dependencies) == sorted(api.dependencies)
    doc = json.loads(rendered("dev").files["plan.json"])
    assert next(r for r in doc["resources"] if r["urn"] == api.urn)["dependencies"] == list(api.dependencies)
    stack_view = {r.urn: r for r in policies._stack_resources(plan)}
    assert [d.urn for d in stack_view[api.urn].dependencies] == list(api.dependencies)


def test_keys_starting_with_two_underscores_survive(tmp_path):
    assert plan_mod.clean({"data": {"__init__.py": "", "__main__": "x"}}) == {"data": {"__init__.py": "", "__main__": "x"}}
    repo, program = _program(
        tmp_path,
        REGION_COMPONENT + "k8s.core.v1.ConfigMap('py', metadata={'name': 'py', 'namespace': 'tikit'}, data={'__init__.py': '# package'}, opts=inside)\n",
    )
    files = cli.render("dev", repo, program=program).files
    assert yaml.safe_load(files["lagos/1-manifest/v1-configmap-tikit-py.yaml"])["data"] == {"__init__.py": "# package"}


def test_plan_md_escapes_table_cells_and_caps_the_findings():
    from preview import report

    findings = tuple(
        report.Finding("p", "advisory", f"line one | still one\nline two {i}", urn=f"urn:pulumi:dev::t::x::r{i}")
        for i in range(report.MAX_FINDING_ROWS + 5)
    )
    lines = report.policy_section(report.PolicyResult("tikit", 1, findings))
    rows = [line for line in lines if line.startswith("| advisory")]
    assert len(rows) == report.MAX_FINDING_ROWS
    assert rows[0] == "| advisory | `p` | `r0` | line one \\| still one line two 0 |"
    assert lines[-1] == "... 5 more findings (see policy.json)"
    # Every table row has exactly the header's four cells.
    assert all(row.replace("\\|", "").count("|") == 5 for row in rows)


# --------------------------------------------------------------------------------------
# The output directory
# --------------------------------------------------------------------------------------


def test_only_an_earlier_previews_directory_is_replaced(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "dev").mkdir(parents=True)
    (out / "dev" / "notes.txt").write_text("mine\n")
    assert cli.preview("dev", out_root=out) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"config error: --out: {out / 'dev'} holds files the preview did not write (no plan.json of its own), "
        "such as YAML that `pulumi up` rendered there with Secrets in clear text; move it away or choose another --out"
    ]
    assert (out / "dev" / "notes.txt").read_text() == "mine\n"

    (out / "dev" / "notes.txt").unlink()  # empty: fine
    assert cli.preview("dev", out_root=out) == 0
    (out / "dev" / "lagos" / "stale.txt").write_text("from an earlier run\n")
    assert cli.preview("dev", out_root=out) == 0  # its own output: replaced whole
    assert not (out / "dev" / "lagos" / "stale.txt").exists() and (out / "dev" / "plan.json").is_file()

    (out / "staging").write_text("a file\n")
    assert cli.preview("staging", out_root=out) == 2
    assert (out / "staging").read_text() == "a file\n"


# --------------------------------------------------------------------------------------
# Config as the CLI reads it
# --------------------------------------------------------------------------------------


def _project(tmp_path: Path, project_yaml: str, stack_yaml: str = "config: {}\n") -> Path:
    repo = tmp_path / "proj"
    repo.mkdir(exist_ok=True)
    (repo / "Pulumi.yaml").write_text(project_yaml)
    (repo / "Pulumi.dev.yaml").write_text(stack_yaml)
    return repo


def test_project_config_is_merged_under_the_stack_file(tmp_path):
    repo = _project(
        tmp_path,
        "name: p\nruntime: python\nconfig:\n"
        "  count: 2\n"  # shorthand: a default in the project's namespace
        "  size:\n    type: string\n    default: small\n    description: VM size\n"
        "  p:zones:\n    type: array\n    items: {type: string}\n    default: [a, b]\n"
        "  kubernetes:context:\n    value: kind\n"  # another namespace: a value
        "  aws:region: eu-west-1\n"  # shorthand in another namespace: a value too
        "  tags:\n    value: {team: tikit}\n",
        "config:\n  p:count: 5\n  size: large\n",
    )
    project, config, secrets = engine.load_stack_config("dev", repo)
    assert project == "p" and secrets == []
    assert config == {
        "p:count": "5",  # the stack file wins
        "p:size": "large",
        "p:zones": '["a", "b"]',
        "kubernetes:context": "kind",
        "aws:region": "eu-west-1",
        "p:tags": '{"team": "tikit"}',
    }


def test_stack_config_dir_is_where_stack_files_live(tmp_path):
    repo = _project(tmp_path, "name: p\nruntime: python\nstackConfigDir: stacks\n")
    (repo / "stacks").mkdir()
    (repo / "stacks" / "Pulumi.dev.yaml").write_text("config:\n  p:x: 1\n")
    (repo / "Pulumi.dev.yaml").unlink()
    assert engine.load_stack_config("dev", repo)[1] == {"p:x": "1"}


@pytest.mark.parametrize(
    "project_yaml, stack_yaml, message",
    [
        ("  needed:\n    type: string\n", "config: {}\n", "p:needed: declared in Pulumi.yaml without a default and not set in Pulumi.dev.yaml"),
        ("  count:\n    type: integer\n", "config:\n  p:count: many\n", "p:count: must be of type integer (declared in Pulumi.yaml)"),
        ("  zones:\n    type: array\n    items: {type: integer}\n", "config:\n  p:zones: [1, x]\n", "p:zones: must be of type array<integer> (declared in Pulumi.yaml)"),
        ("  token:\n    type: string\n    secret: true\n", "config:\n  p:token: plain\n", "p:token: is declared secret in Pulumi.yaml: set it with `pulumi config set --secret`"),
        ("  count:\n    type: integer\n    default: lots\n", "config: {}\n", "Pulumi.yaml#/config/count/default: is not of the declared type integer"),
        ("  count:\n    default: 1\n    value: 2\n", "config: {}\n", "Pulumi.yaml#/config/count: cannot have both a 'default' and a 'value'"),
        ("  aws:region:\n    default: x\n", "config: {}\n", "Pulumi.yaml#/config/aws:region: is not in the project's namespace: give it a 'value', not a 'default'"),
        ("  aws:region:\n    type: string\n    value: x\n", "config: {}\n", "Pulumi.yaml#/config/aws:region: is not in the project's namespace and cannot declare a type"),
        ("  zones:\n    type: array\n", "config: {}\n", "Pulumi.yaml#/config/zones: declares an array but not the type of its 'items'"),
        ("  size:\n    kind: string\n", "config: {}\n", "Pulumi.yaml#/config/size: unknown attribute 'kind'; allowed: default, description, items, secret, type, value"),
    ],
)
def test_bad_project_config_is_a_config_error(tmp_path, project_yaml, stack_yaml, message):
    repo = _project(tmp_path, "name: p\nruntime: python\nconfig:\n" + project_yaml, stack_yaml)
    with pytest.raises(engine.StackConfigError) as err:
        engine.load_stack_config("dev", repo)
    assert str(err.value) == message


def test_a_secure_stack_value_satisfies_a_secret_declaration(tmp_path):
    repo = _project(tmp_path, "name: p\nruntime: python\nconfig:\n  token:\n    type: string\n    secret: true\n",
                    "config:\n  p:token:\n    secure: v1:abc\n")
    assert engine.load_stack_config("dev", repo)[1:] == ({"p:token": "[secret]"}, ["p:token"])


def test_config_errors_are_one_line_whatever_the_keys_hold(tmp_path):
    err = engine.StackConfigError("a\nb", "bad\r\nvalue \x1b[31mred\u2028")
    assert str(err) == "a\\nb: bad\\r\\nvalue \\x1b[31mred\\u2028" and str(err).isprintable()
    repo = _project(tmp_path, 'name: p\nruntime: python\nconfig:\n  "we\\nird":\n    type: integer\n')
    with pytest.raises(engine.StackConfigError) as caught:
        engine.load_stack_config("dev", repo)
    assert str(caught.value) == "Pulumi.yaml#/config: key 'we\\nird' at line 4 contains the control character U+000A"


def test_policy_config_errors_are_one_line_with_a_dotted_key(rendered):
    from preview import policies

    with pytest.raises(policies.PolicyConfigError) as err:
        policies.evaluate_config(rendered("dev").plan, {"evil\npolicy": "advisory"})
    text = str(err.value)
    assert "\n" not in text and text.startswith("policy-config.evil\\npolicy: unknown policy; known: ")
    assert err.value.key == "policy-config.evil\npolicy"


# --------------------------------------------------------------------------------------
# The program's own ConfigError is a config error
# --------------------------------------------------------------------------------------


def test_a_config_error_raised_by_the_program_exits_2(tmp_path, capsys):
    repo, program = _program(
        tmp_path, "from tikit.settings import ConfigError\nraise ConfigError('size', 'must be small')\n", name="refusing"
    )
    assert cli.preview("dev", out_root=tmp_path / "out", repo=repo, program=program) == 2
    assert capsys.readouterr().err.splitlines() == ["config error: size: must be small"]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------
# Determinism across processes and checkouts
# --------------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_the_same_bytes_from_any_hash_seed_and_any_checkout_path(tmp_path):
    copy = tmp_path / "elsewhere" / "tikit"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True, text=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, copy / rel)
    outputs = []
    for checkout, seed in ((REPO, "1"), (REPO, "4242"), (copy, "7")):
        out = tmp_path / f"out-{len(outputs)}"
        env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-m", "preview", "--stack", "staging", "--out", str(out)],
            cwd=checkout, env=env, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(_tree(out))
    assert outputs[0] and outputs[0] == outputs[1] == outputs[2]


@pytest.mark.slow
def test_the_preview_command_imports_the_validators_only_for_objects_it_has_not_judged(tmp_path):
    """Every render is validated (preview/admission.py), with what requirements.txt installs
    (tests/preview/test_admission.py checks it lists the validators).  The schemas are
    imported only for objects not already found valid: a second render of the same stack
    imports none of them."""
    code = (
        "import sys; from preview import __main__ as m;"
        f"rc = m.main(['--stack', 'dev', '--out', {str(tmp_path / 'out')!r}]);"
        "print(sorted(n for n in sys.modules if n == 'preview.validate' or n.split('.')[0] in ('kubernetes_validate', 'jsonschema')));"
        "sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "TIKIT_PREVIEW_CACHE": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert {"preview.validate", "jsonschema", "kubernetes_validate"} <= set(eval(first.stdout.splitlines()[-1]))
    again = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == "[]"
