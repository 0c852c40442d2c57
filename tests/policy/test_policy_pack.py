"""The pack itself: metadata, the __main__ that only builds it, the files the Pulumi CLI
reads, and the pack answering the analyzer protocol the CLI speaks."""

from __future__ import annotations

import ast
import json
import queue
import re
import runpy
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

from tikit import names
from tikit import settings
import policy_fixtures as F
from conftest import REPO
from preview import policies

import tikit_policies
from tikit_policies import annotations as ann

POLICY_DIR = REPO / "policy"
AREAS = ("hygiene", "reliability", "failure", "capacity", "nodes", "secrets", "addons")


# ---- metadata ----------------------------------------------------------------------------


def test_at_least_25_policies_in_five_areas():
    assert len(tikit_policies.ALL) >= 25
    assert tuple(tikit_policies.AREAS) == AREAS
    assert all(tikit_policies.AREAS[a] for a in AREAS)
    assert tikit_policies.ALL == [p for a in AREAS for p in tikit_policies.AREAS[a]]


def test_names_are_unique_and_well_formed():
    names_ = [p.name for p in tikit_policies.ALL]
    assert len(names_) == len(set(names_))
    for name in names_:
        assert re.fullmatch(r"[a-z][a-z0-9-]{2,60}", name), name
        assert name != "all"  # reserved by the engine's config format


@pytest.mark.parametrize("policy", tikit_policies.ALL, ids=lambda p: p.name)
def test_policy_metadata(policy):
    assert isinstance(policy, (ResourceValidationPolicy, StackValidationPolicy))
    assert policy.enforcement_level in (EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY)
    assert len(policy.description) > 20 and policy.description.endswith(".")
    assert policy.remediation_steps and len(policy.remediation_steps) > 20
    assert policy.tags and policy.tags[0] in AREAS and policy in tikit_policies.AREAS[policy.tags[0]]
    if policy.config_schema is not None:
        for key, prop in policy.config_schema.properties.items():
            assert re.fullmatch(r"[a-z][A-Za-z]+", key), key
            assert prop.get("description"), f"{policy.name}.{key} has no description"
            assert "default" in prop, f"{policy.name}.{key} has no default"
            # The check the preview applies to a value from the policy config file.
            try:
                policies._check(f"{policy.name}.{key}", prop["default"], prop)
            except policies.PolicyConfigError as err:
                pytest.fail(f"{policy.name}.{key}: default fails its own schema: {err}")


def test_most_policies_are_mandatory():
    levels = [p.enforcement_level for p in tikit_policies.ALL]
    assert levels.count(EnforcementLevel.MANDATORY) > levels.count(EnforcementLevel.ADVISORY) > 0
    assert tikit_policies.ENFORCEMENT == EnforcementLevel.MANDATORY
    assert tikit_policies.PACK_NAME == "tikit"


# ---- __main__ and the files the CLI reads ----------------------------------------------------


def test_main_only_builds_the_pack(monkeypatch):
    """Import-level: __main__ makes exactly one PolicyPack(name, ALL, level) call and nothing else
    (the real PolicyPack would start the gRPC server and block)."""
    import pulumi_policy

    calls = []
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kwargs: calls.append(kwargs))
    monkeypatch.syspath_prepend(str(POLICY_DIR))
    runpy.run_path(str(POLICY_DIR / "__main__.py"), run_name="__main__")
    assert len(calls) == 1
    assert calls[0]["name"] == "tikit"
    assert calls[0]["policies"] is tikit_policies.ALL
    assert calls[0]["enforcement_level"] == tikit_policies.ENFORCEMENT

    tree = ast.parse((POLICY_DIR / "__main__.py").read_text())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body[:-1])
    call = body[-1]
    assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call) and call.value.func.id == "PolicyPack"


def test_pulumi_policy_yaml_runs_python_from_the_project_virtualenv():
    doc = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert doc["runtime"]["name"] == "python"
    assert doc["description"] and re.fullmatch(r"\d+\.\d+\.\d+", str(doc["version"]))
    venv = (POLICY_DIR / doc["runtime"]["options"]["virtualenv"]).resolve()
    assert venv == (REPO / ".venv").resolve()


def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_pack_requirements_pin_the_project_versions():
    pack, project = _pins(POLICY_DIR / "requirements.txt"), _pins(REPO / "requirements.txt")
    assert set(pack) == {"pulumi", "pulumi-policy"}
    assert all(project[name] == version for name, version in pack.items())


def test_annotation_keys_match_the_program():
    program = {
        "REGION_ROLE": names.REGION_ROLE_ANNOTATION,
        "TARGET_CONCURRENT_USERS": names.TARGET_USERS_ANNOTATION,
        "REQUESTS_PER_USER_PER_MINUTE": names.REQUESTS_PER_USER_ANNOTATION,
        "DB_CONNECTIONS_PER_REPLICA": names.DB_CONNECTIONS_ANNOTATION,
        "POD_SECURITY_EXCEPTION": names.POD_SECURITY_EXCEPTION_ANNOTATION,
        "INTERRUPTIBLE": names.INTERRUPTIBLE_ANNOTATION,
        "LOAD_PROFILE": names.PROFILE_ANNOTATION,
        "PROFILE_REQUESTS_PER_USER_PER_MINUTE": names.PROFILE_REQUESTS_PER_USER_ANNOTATION,
        "SUSTAINABLE_REQUESTS_PER_MINUTE": names.CAPACITY_PER_INSTANCE_ANNOTATION,
        "BOOT_SECONDS": names.BOOT_SECONDS_ANNOTATION,
        "PROVISIONING_SECONDS": names.PROVISIONING_SECONDS_ANNOTATION,
        "NODE_OVERHEAD_CPU": names.NODE_OVERHEAD_CPU_ANNOTATION,
        "NODE_OVERHEAD_MEMORY": names.NODE_OVERHEAD_MEMORY_ANNOTATION,
        "VM_MEMORY_OVERHEAD_PERCENT": names.VM_MEMORY_OVERHEAD_ANNOTATION,
    }
    assert program == ann.ALL
    # Not an annotation, a naming rule the program enforces in settings and the pack reads.
    assert ann.READ_ONLY_SECRET_SUFFIX == settings.READ_ONLY_SUFFIX


def test_facts_the_pack_shares_with_the_program_are_equal():
    """The pack cannot import the program, so a fact both use is written twice and held equal here."""
    from tikit import cron
    from tikit.conf import redis as redis_conf
    from tikit_policies import failure, parse

    assert parse._DOW[2] == cron.DAY_OF_WEEK_MAX
    assert failure.REDIS_SAVE_MARGIN_SECONDS == redis_conf.SHUTDOWN_SAVE_MARGIN_SECONDS


def test_pack_does_not_import_the_program():
    """Under the CLI the pack judges what the program renders, on its own: nothing in policy/
    imports the program or the preview, except the tables of pinned operator releases and
    image digests (tikit.versions, tikit.images: pure data with no imports of the program)."""
    allowed = {"tikit.versions", "tikit.images"}
    program = {"tikit", "preview", "harness"}
    imported = []
    for path in POLICY_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module or ""] if node.module != "tikit" else [f"tikit.{a.name}" for a in node.names]
            else:
                continue
            imported += mods
            bad = [m for m in mods if m.split(".")[0] in program and m not in allowed]
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"
    for table in allowed:
        source = (REPO / "tikit" / f"{table.split('.')[1]}.py").read_text()
        assert not [line for line in source.splitlines() if line.startswith(("import ", "from ")) and "tikit" in line]


# ---- the analyzer protocol ---------------------------------------------------------------------


ANALYZER_START_SECONDS = 60


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The process's first stdout line, or '' once ``timeout`` passes (a reader thread:
    a bare readline() would hang the suite if the pack never prints its port)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout).strip()
    except queue.Empty:
        return ""


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    """The pack started the way the CLI's Python analyzer starts it (python -m pulumi.policy).

    From an unrelated working directory: the pack's own imports must work through the
    path the analyzer puts on sys.path, not through the current directory."""
    import grpc
    from pulumi.runtime.proto import analyzer_pb2_grpc

    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:0", str(POLICY_DIR)],
        cwd=tmp_path_factory.mktemp("analyzer-cwd"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _first_line(proc, ANALYZER_START_SECONDS)
        if not line.isdigit():
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"the pack printed no port within {ANALYZER_START_SECONDS} s: {line!r}\n{err}")
        channel = grpc.insecure_channel(f"127.0.0.1:{line}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _struct(value: dict) -> struct_pb2.Struct:
    return json_format.ParseDict(json.loads(json.dumps(value)), struct_pb2.Struct())


def test_analyzer_describes_every_policy(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "tikit"
    assert [p.name for p in info.policies] == [p.name for p in tikit_policies.ALL]
    by_name = {p.name: p for p in info.policies}
    assert "headroomPercent" in json_format.MessageToDict(by_name["request-capacity"].configSchema)["properties"]


def test_analyzer_flags_a_latest_image_with_cli_typed_values(rendered, analyzer):
    """Properties travel as protobuf Structs: numbers arrive as floats, as under the CLI."""
    from pulumi.runtime.proto import analyzer_pb2

    plan = rendered("dev").plan
    api = F.find(plan, "Deployment", names.BACKEND, "lagos")[0]
    props = json.loads(json.dumps(api.inputs))
    props["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/tikit/backend:latest"
    response = analyzer.Analyze(
        analyzer_pb2.AnalyzeRequest(type=api.type, properties=_struct(props), urn=api.urn, name=api.name)
    )
    found = [(d.policyName, d.message) for d in response.diagnostics]
    assert any(n == "image-pinned" and "uses the floating tag 'latest'" in m for n, m in found), found
    assert {n for n, _ in found} == {"image-pinned"}


def test_analyzer_runs_stack_policies(rendered, analyzer):
    from pulumi.runtime.proto import analyzer_pb2

    plan = rendered("prod").plan
    resources = []
    for r in plan.resources:
        props = json.loads(json.dumps(r.inputs))
        if r.type.endswith(":ScaledObject") and props["metadata"]["name"] == names.BACKEND and r.region == "lagos":
            props["spec"]["maxReplicaCount"] = 5
        resources.append(
            analyzer_pb2.AnalyzerResource(type=r.type, properties=_struct(props), urn=r.urn, name=r.name, parent=r.parent or "",
                                         dependencies=list(r.dependencies))
        )
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources))
    found = [(d.policyName, d.message, d.enforcementLevel) for d in response.diagnostics]
    assert [(n, l) for n, m, l in found if "lagos: 10,000 concurrent users" in m] == [("request-capacity", analyzer_pb2.MANDATORY)], found
    assert len(found) == 1, found


def test_docs_list_every_policy_with_its_level_and_defaults():
    doc = (REPO / "docs" / "policies.md").read_text()
    for p in tikit_policies.ALL:
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{p.name}` |")), None)
        assert row, f"docs/policies.md has no row for {p.name}"
        assert f"| {p.enforcement_level.value} | {p.description} |" in row
        for key, prop in (p.config_schema.properties.items() if p.config_schema else []):
            assert f"`{key}` = `{json.dumps(prop['default'])}`" in row, f"{p.name}.{key}"


def test_objects_a_helm_chart_templates_are_the_charts_own(rendered, analyzer):
    """Under `pulumi up` a helm.v4.Chart registers each object it templates as its child. Those
    are the operator's manifests (node-exporter on the host network, the chart's own labels):
    the pack leaves them alone, and still checks the same object declared by Tikit."""
    from pulumi.runtime.proto import analyzer_pb2

    plan = rendered("prod").plan
    (chart,) = [r for r in plan.resources if r.type == "kubernetes:helm.sh/v4:Chart" and r.name == "kube-prometheus-stack-lagos"]
    exporter = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "node-exporter", "namespace": "monitoring", "labels": {"app": "node-exporter"}},
        "spec": {
            "selector": {"matchLabels": {"app": "node-exporter"}},
            "template": {
                "metadata": {"labels": {"app": "node-exporter"}},
                "spec": {"hostNetwork": True, "hostPID": True,
                         "containers": [{"name": "node-exporter", "image": "quay.io/prometheus/node-exporter"}]},
            },
        },
    }
    type_ = "kubernetes:apps/v1:DaemonSet"

    def diagnostics(urn: str) -> set[str]:
        response = analyzer.Analyze(
            analyzer_pb2.AnalyzeRequest(type=type_, properties=_struct(exporter), urn=urn, name="node-exporter")
        )
        return {d.policyName for d in response.diagnostics}

    chain = chart.urn.split("::")[2]
    child = f"urn:pulumi:prod::tikit::{chain}${type_}::kube-prometheus-stack-lagos:monitoring/node-exporter"
    assert diagnostics(child) == set()
    own = f"urn:pulumi:prod::tikit::tikit:platform:Region${type_}::node-exporter-lagos"
    assert {"image-pinned", "no-host-namespaces", "recommended-labels"} <= diagnostics(own)
