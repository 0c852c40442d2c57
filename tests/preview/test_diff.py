"""The diff mode of the offline preview (`python -m preview diff`) and its PR report:
added/removed/changed resources with field-level changes, redaction on both sides,
renames, policy before/after, truncation under GitHub's comment limit, and one run on a
real copy of this repository with a one-line settings change."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from preview import diff, diff_report, engine, output, revisions
from preview import plan as plan_mod
from preview.diff import MISSING, RENAME_NOTE, Side, compare

STACK = "dev"
SECRET = {engine.SIG_KEY: engine.SECRET_SIG}


# --------------------------------------------------------------------------------------
# Synthetic plans, in plan.json's shape
# --------------------------------------------------------------------------------------


def urn(type_: str, name: str, chain: str = "tikit:platform:Region") -> str:
    return f"urn:pulumi:{STACK}::tikit::{chain}${type_}::{name}"


def deployment(name: str, *, replicas: int = 2, image: str = "ghcr.io/tikit/backend:1.0.0", env=None, region="lagos"):
    inputs = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "tikit", "labels": {"app.kubernetes.io/name": "api"}},
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "api", "image": image, "env": env or [{"name": "PORT", "value": "3000"}]},
                        {"name": "exporter", "image": "exporter:1"},
                    ]
                }
            },
        },
    }
    type_ = "kubernetes:apps/v1:Deployment"
    return {
        "urn": urn(type_, name, "tikit:platform:Region$tikit:app:Backend"),
        "type": type_,
        "name": name,
        "parent": None,
        "region": region,
        "inputs": plan_mod.clean(inputs),
    }


def backend_component(region="lagos"):
    type_ = "tikit:app:Backend"
    return {"urn": urn(type_, f"api-{region}"), "type": type_, "name": f"api-{region}", "parent": None, "region": region, "inputs": {}}


def k8s(kind: str, api: str, name: str, k8s_name: str, region: str = "lagos", **fields):
    type_ = f"kubernetes:{'core/' if '/' not in api else ''}{api}:{kind}"
    inputs = {"apiVersion": api, "kind": kind, "metadata": {"name": k8s_name, "namespace": "tikit"}, **fields}
    # Cleaned as the preview cleans recorded inputs: secrets redacted, keys sorted.
    return {"urn": urn(type_, name), "type": type_, "name": name, "parent": None, "region": region, "inputs": plan_mod.clean(inputs)}


def side(*resources, policy=None) -> Side:
    """A Side as the preview would have written it, manifests included."""
    plan = {
        "project": "tikit",
        "stack": STACK,
        "regions": sorted({r["region"] for r in resources if r["region"]}),
        "resources": sorted(resources, key=lambda r: r["urn"]),
        "outputs": {"primaryRegion": "lagos"},
    }
    manifests = {}
    for r in resources:
        if r["type"].startswith("kubernetes:"):
            obj = r["inputs"]
            manifests[f"{r['region']}/{plan_mod.manifest_subdir(obj)}/{plan_mod.manifest_filename(obj)}"] = output.manifest_yaml(obj)
    return Side(plan=plan, manifests=manifests, policy=policy)


def by_action(d, action):
    return {r.name: r for r in d.resources if r.action == action}


def render(*diffs, limit=diff_report.COMMENT_LIMIT) -> str:
    return diff_report.render(list(diffs), base_label="`base`", head_label="`head`", limit=limit)


# --------------------------------------------------------------------------------------
# The diff engine
# --------------------------------------------------------------------------------------


def test_added_removed_and_changed_resources_with_field_level_changes():
    config = k8s("ConfigMap", "v1", "conf-lagos", "conf", data={"a": "1"})
    service = k8s("Service", "v1", "svc-lagos", "api-svc", spec={"ports": [{"name": "http", "port": 80}]})
    base = side(deployment("api-lagos", replicas=2), config)
    head = side(
        deployment("api-lagos", replicas=3, env=[{"name": "PORT", "value": "3000"}, {"name": "MODE", "value": "fast"}]),
        service,
    )
    d = compare(STACK, base, head)

    assert set(by_action(d, "remove")) == {"conf-lagos"}
    assert set(by_action(d, "add")) == {"svc-lagos"}
    changed = by_action(d, "change")
    assert set(changed) == {"api-lagos"}
    fields = {f.path: (f.old, f.new) for f in changed["api-lagos"].fields}
    # A named list entry added in place is one addition, keyed by name, not an index shift.
    assert fields == {
        "spec.replicas": (2, 3),
        "spec.template.spec.containers[name=api].env[name=MODE].name": (MISSING, "MODE"),
        "spec.template.spec.containers[name=api].env[name=MODE].value": (MISSING, "fast"),
    }
    assert d.counts("lagos") == {"add": 1, "remove": 1, "change": 1}
    assert d.changed

    statuses = {m.path.rsplit("/", 1)[-1]: m.status for m in d.manifests}
    assert statuses == {
        "apps_v1-deployment-tikit-api.yaml": "changed",
        "v1-configmap-tikit-conf.yaml": "removed",
        "v1-service-tikit-api-svc.yaml": "added",
    }
    deployment_diff = next(m.diff for m in d.manifests if m.status == "changed")
    assert "-  replicas: 2\n" in deployment_diff and "+  replicas: 3\n" in deployment_diff
    assert deployment_diff.startswith(f"--- a/{STACK}/lagos/1-manifest/apps_v1-deployment-tikit-api.yaml\n")

    report = render(d)
    assert f"| `{STACK}` | lagos | 1 | 1 | 1 |" in report
    assert "spec.replicas: 2 -> 3" in report
    assert "```diff\n" in report and "+  replicas: 3" in report


def test_identical_sides_report_no_changes():
    base = side(deployment("api-lagos"))
    d = compare(STACK, base, side(deployment("api-lagos")))
    assert not d.changed and d.resources == () and d.manifests == ()
    report = render(d)
    assert f"No changes in `{STACK}`." in report
    assert "<details>" not in report and "```mermaid" not in report


def test_keys_with_dots_and_index_lists_get_readable_paths():
    changes = diff.field_changes(
        {"metadata": {"labels": {"app.kubernetes.io/version": "1"}}, "args": ["a", "b"]},
        {"metadata": {"labels": {"app.kubernetes.io/version": "2"}}, "args": ["a"]},
    )
    assert [(c.path, c.old, c.new) for c in changes] == [
        ("args[1]", "b", MISSING),
        ('metadata.labels["app.kubernetes.io/version"]', "1", "2"),
    ]


# --------------------------------------------------------------------------------------
# Secrets stay redacted on both sides
# --------------------------------------------------------------------------------------


def _secret_resource(raw_inputs):
    return k8s("Secret", "v1", "app-secret-lagos", "app-secret", **raw_inputs)


def test_a_changed_secret_shows_redacted_on_both_sides():
    base = side(
        _secret_resource({"stringData": {**SECRET, "value": {"password": "hunter2"}}, "token": "plain-old-token"}),
        k8s("ConfigMap", "v1", "conf-lagos", "conf", data={"dsn": "postgres://app:hunter2@db"}),
    )
    head = side(
        _secret_resource({"stringData": {**SECRET, "value": {"password": "hunter3", "extra": "s3cr3t"}}, "token": {**SECRET, "value": "new-token"}}),
        # The same value moved out of a ConfigMap into a secret field: the old side is
        # redacted too, or the report would print what was just hidden.
        k8s("ConfigMap", "v1", "conf-lagos", "conf", data={"dsn": {**SECRET, "value": "postgres://app:hunter3@db"}}),
    )
    d = compare(STACK, base, head)
    fields = {f.path: (f.old, f.new) for r in d.resources for f in r.fields}
    assert fields["token"] == (plan_mod.REDACTED, plan_mod.REDACTED)
    assert fields["data.dsn"] == (plan_mod.REDACTED, plan_mod.REDACTED)
    assert fields["stringData.extra"] == (MISSING, plan_mod.REDACTED)

    # A Secret whose rendered file holds a clear value (a program bug) is masked in the
    # manifest diff on both sides as well.
    leaky_base = Side(plan=base.plan, manifests={**base.manifests, "lagos/1-manifest/v1-secret-tikit-leak.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: leak\nstringData:\n  password: hunter2\n"})
    leaky_head = Side(plan=head.plan, manifests={**head.manifests, "lagos/1-manifest/v1-secret-tikit-leak.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: leak\nstringData:\n  password: hunter4\n"})
    d = compare(STACK, leaky_base, leaky_head)

    everything = render(d) + json.dumps(d.as_json()) + "".join(m.diff for m in d.manifests)
    for clear in ("hunter2", "hunter3", "hunter4", "s3cr3t", "plain-old-token", "new-token"):
        assert clear not in everything, clear
    assert "token: \"[secret]\" -> \"[secret]\"" in everything


# --------------------------------------------------------------------------------------
# Renames
# --------------------------------------------------------------------------------------


def test_a_rename_shows_as_remove_plus_add_with_a_note():
    base = side(deployment("api-lagos"), k8s("ConfigMap", "v1", "conf-lagos", "conf", data={"a": "1"}))
    # The Deployment's Pulumi name changes; the ConfigMap keeps its Kubernetes name but
    # changes one value (same kind and name in the cluster).
    head = side(deployment("backend-lagos"), k8s("ConfigMap", "v1", "config-lagos", "conf", data={"a": "2"}))
    d = compare(STACK, base, head)
    removed, added = by_action(d, "remove"), by_action(d, "add")
    assert set(removed) == {"api-lagos", "conf-lagos"} and set(added) == {"backend-lagos", "config-lagos"}
    assert not by_action(d, "change")
    for res in [*removed.values(), *added.values()]:
        assert res.note.startswith(RENAME_NOTE), res
    assert "(now `backend-lagos`)" in removed["api-lagos"].note
    assert "(was `api-lagos`)" in added["backend-lagos"].note
    assert RENAME_NOTE in render(d)


def test_different_resources_are_not_taken_for_a_rename():
    base = side(k8s("ConfigMap", "v1", "conf-lagos", "conf", data={f"k{i}": str(i) for i in range(10)}))
    head = side(
        k8s("ConfigMap", "v1", "other-lagos", "other", data={f"k{i}": str(i * 7) for i in range(10)}),
        k8s("Service", "v1", "conf-svc-lagos", "conf", spec={"ports": [{"name": "http", "port": 80}]}),
    )
    d = compare(STACK, base, head)
    assert [r.note for r in d.resources] == ["", "", ""]


# --------------------------------------------------------------------------------------
# Policies, missing sides, topology
# --------------------------------------------------------------------------------------


def _policy(*findings):
    return {"pack": "tikit", "policies": 12, "findings": list(findings)}


def test_policy_results_before_and_after():
    res = deployment("api-lagos")
    fixed = {"policy": "pdb-required", "enforcement": "mandatory", "urn": res["urn"], "message": "no PodDisruptionBudget"}
    new = {"policy": "image-tag-pinned", "enforcement": "advisory", "urn": res["urn"], "message": "tag :latest"}
    d = compare(STACK, side(res, policy=_policy(fixed)), side(deployment("api-lagos", replicas=5), policy=_policy(new)))
    assert d.policy.status == "FAILED (1 mandatory) → passed, 1 advisory"
    assert d.policy.introduced == [new] and d.policy.resolved == [fixed]
    assert d.region_policy("lagos") == "FAILED (1 mandatory) → passed, 1 advisory"
    report = render(d)
    assert "| lagos | 0 | 0 | 1 | FAILED (1 mandatory) → passed, 1 advisory |" in report
    assert "| new | advisory | `image-tag-pinned` | `api-lagos` | tag :latest |" in report
    assert "| resolved | mandatory | `pdb-required` |" in report


def test_a_stack_wide_finding_gets_its_own_row():
    res = deployment("api-lagos")
    capacity = {"policy": "capacity", "enforcement": "mandatory", "urn": None, "message": "10 replicas carry 6000 users"}
    d = compare(STACK, side(res, policy=_policy()), side(res, policy=_policy(capacity)))
    assert d.changed and d.resources == ()
    report = render(d)
    assert f"| `{STACK}` | lagos | 0 | 0 | 0 | passed → passed |" in report
    assert f"| `{STACK}` | global | 0 | 0 | 0 | passed → FAILED (1 mandatory) |" in report
    assert "| new | mandatory | `capacity` | `stack` | 10 replicas carry 6000 users |" in report


def test_no_base_shows_everything_added_with_a_note(tmp_path):
    checkout = tmp_path / "old"
    checkout.mkdir()
    got, why = revisions.render_stack(checkout, STACK, tmp_path / "out")
    assert got is None and "no offline preview" in why
    d = compare(STACK, None, side(deployment("api-lagos")), notes=[f"No base for `{STACK}`: the base revision {why}"])
    assert [r.action for r in d.resources] == ["add"]
    assert d.policy.status == "no base → not run"
    assert "no offline preview" in render(d)


def test_a_head_that_does_not_render_is_reported():
    d = compare(STACK, side(deployment("api-lagos")), None, error="does not render `dev` (config error: backend.cpu: bad)")
    report = render(d)
    assert d.changed and "**did not render**: does not render `dev` (config error: backend.cpu: bad)" in report
    assert revisions.Result([d], report, 0.0).failed


def test_topology_of_a_changed_stack_outlines_the_changed_tier():
    d = compare(STACK, side(backend_component(), deployment("api-lagos")), side(backend_component(), deployment("api-lagos", replicas=4)))
    report = render(d)
    mermaid = report.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert 'subgraph lagos["lagos (primary)"]' in mermaid
    assert "class lagos_backend changed" in mermaid


# --------------------------------------------------------------------------------------
# The report stays under GitHub's limit
# --------------------------------------------------------------------------------------


def _big_stack(stack: str, n: int) -> diff.StackDiff:
    resources = [
        k8s("ConfigMap", "v1", f"conf-{i}-lagos", f"conf-{i}", data={"text": "\n".join(f"line {j} of {i}" for j in range(60))})
        for i in range(n)
    ]
    d = compare(stack, side(), side(*resources))
    return diff.StackDiff(stack, d.base, d.head, d.resources, d.manifests, d.policy)


def _balanced(report: str) -> None:
    assert report.count("<details>") == report.count("</details>")
    fences = [line for line in report.splitlines() if line.startswith("```")]
    assert len(fences) % 2 == 0


@pytest.mark.parametrize("limit", [diff_report.COMMENT_LIMIT, 12_000])
def test_a_large_diff_is_truncated_with_a_visible_note(limit):
    diffs = [_big_stack(s, 120) for s in ("dev", "staging", "prod")]
    whole = render(*diffs, limit=10**9)
    assert diff_report.size(whole) > limit  # the case is real

    report = render(*diffs, limit=limit)
    assert diff_report.size(report) <= limit and len(report) <= limit
    assert report.startswith(diff_report.MARKER + "\n")
    assert "**Truncated**" in report and f"{diff_report.COMMENT_LIMIT:,}-character" in report
    assert "not shown: the full diff is in `build/diff/`" in report
    _balanced(report)
    # The summary and every changed stack's heading and topology survive the cut.
    for s in ("dev", "staging", "prod"):
        assert f"| `{s}` | lagos | 120 | 0 | 0 |" in report
        assert f"### `{s}`: 120 added" in report
    assert report.count("```mermaid") == 3


def test_a_report_that_fits_is_not_truncated():
    report = render(_big_stack("dev", 2))
    assert "Truncated" not in report and "not shown" not in report
    _balanced(report)


# --------------------------------------------------------------------------------------
# End to end on a copy of this repository
# --------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """This repository's working tree (tracked and untracked-but-not-ignored files) as a
    fresh git repository on `main` with one commit."""
    copy = tmp_path_factory.mktemp("repo") / "tikit"
    listed = _git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / rel)
    _git(copy, "init", "-q", "-b", "main")
    _git(copy, "add", "-A")
    _git(copy, "commit", "-q", "-m", "base")
    return copy


def _run_diff(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run(
        [sys.executable, "-m", "preview", "diff", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_one_line_settings_change_end_to_end(repo_copy, tmp_path, rendered):
    stack_file = repo_copy / f"Pulumi.{STACK}.yaml"
    original = stack_file.read_text()
    try:
        stack_file.write_text(original.rstrip("\n") + "\n  tikit:gateway: {envoyCpu: 750m}\n")
        out = tmp_path / "diff"
        result = _run_diff(repo_copy, "--stacks", STACK, "--out", str(out))
    finally:
        stack_file.write_text(original)
    assert result.returncode == 0, result.stderr

    doc = json.loads((out / "diff.json").read_text())
    assert "merge-base of HEAD and main" in doc["base"]["label"]
    (stack,) = doc["stacks"]
    assert stack["stack"] == STACK and stack["error"] is None and stack["notes"] == []
    # The gateway proxies' CPU request changes; so may the limits of the node pools they
    # land in (tikit/derived.py counts them), and nothing else does.
    path = "spec.provider.kubernetes.envoyDeployment.container.resources.requests.cpu"
    base_plan = json.loads((out / "base" / STACK / "plan.json").read_text())
    base_inputs = {r["urn"]: r["inputs"] for r in base_plan["resources"]}
    pools = [r for r in stack["resources"] if r["type"] == "kubernetes:karpenter.sh/v1:NodePool"]
    assert all(r["action"] == "change" and all(f["path"].startswith("spec.limits.") for f in r["fields"]) for r in pools)
    (changed,) = [r for r in stack["resources"] if r not in pools]
    assert changed["action"] == "change" and changed["type"] == "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy"
    old_cpu = base_inputs[changed["urn"]]["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["resources"]["requests"]["cpu"]
    assert changed["fields"] == [{"path": path, "old": old_cpu, "new": "750m"}] and old_cpu != "750m"

    report = (out / "report.md").read_text()
    assert report.startswith(diff_report.MARKER)
    assert f'{path}: "{old_cpu}" -> "750m"' in report
    assert "```mermaid" in report
    # Nothing secret anywhere: none of the values the mock engine makes up for secret
    # outputs (they depend only on resource names, so this process's render has them all).
    marker = engine._placeholder("password", "")[: len("offline-password-")]
    stand_ins = rendered(STACK).stand_ins
    assert stand_ins
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert marker not in text, path
            assert [v for v in stand_ins if v in text] == [], path
    assert [v for v in stand_ins if v in result.stdout + result.stderr] == []


@pytest.mark.slow
def test_a_base_without_the_preview_shows_every_resource_as_added(repo_copy, tmp_path):
    empty_tree = _git(repo_copy, "hash-object", "-t", "tree", "/dev/null")
    empty_commit = _git(repo_copy, "commit-tree", empty_tree, "-m", "empty")
    result = _run_diff(repo_copy, "--base", empty_commit, "--stacks", STACK, "--out", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    (stack,) = json.loads((tmp_path / "d" / "diff.json").read_text())["stacks"]
    head_plan = json.loads((tmp_path / "d" / "head" / STACK / "plan.json").read_text())
    assert {r["action"] for r in stack["resources"]} == {"add"}
    assert len(stack["resources"]) == head_plan["resourceCount"]
    assert "No base" in stack["notes"][0] and "no offline preview" in stack["notes"][0]


def test_unknown_base_is_exit_2(repo_copy, tmp_path):
    result = _run_diff(repo_copy, "--base", "no-such-ref", "--stacks", STACK, "--out", str(tmp_path / "d"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"diff: --base no-such-ref: not a commit in {repo_copy.resolve()}"


def test_without_main_the_base_is_head_with_a_message(tmp_path, capsys):
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "trunk")
    (repo / "f").write_text("x\n")
    _git(repo, "add", "f")
    _git(repo, "commit", "-q", "-m", "one")
    base = revisions.resolve_base(repo)
    assert base.sha == _git(repo, "rev-parse", "HEAD") and "no main branch" in base.label
    assert "neither main nor origin/main exists" in capsys.readouterr().err



# --------------------------------------------------------------------------------------
# Exporting the base revision
# --------------------------------------------------------------------------------------


def _without_data_filter(monkeypatch):
    """tarfile as Python 3.11.0-3.11.3 has it: no "data" filter, no `filter` argument."""
    import tarfile

    # Python before 3.11.4 has no data_filter at all.
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    real = tarfile.TarFile.extractall

    def extractall(self, path=".", members=None, *, numeric_owner=False, **kwargs):
        if kwargs:
            raise TypeError(f"extractall() got an unexpected keyword argument {next(iter(kwargs))!r}")
        return real(self, path, members, numeric_owner=numeric_owner)

    monkeypatch.setattr(tarfile.TarFile, "extractall", extractall)


def test_export_works_without_tarfiles_data_filter(repo_copy, tmp_path, monkeypatch):
    _without_data_filter(monkeypatch)
    dest = tmp_path / "base"
    revisions.export(repo_copy, _git(repo_copy, "rev-parse", "HEAD"), dest)
    tracked = [p for p in _git(repo_copy, "ls-files").splitlines() if (repo_copy / p).is_file()]
    assert tracked and sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() or p.is_symlink()) == sorted(tracked)
    assert (dest / "Pulumi.yaml").read_bytes() == (repo_copy / "Pulumi.yaml").read_bytes()


def _tar(*members) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, *, type_=None, linkname: str = "", data: bytes = b"x"):
    import tarfile

    info = tarfile.TarInfo(name)
    if type_ is not None:
        info.type, info.linkname = type_, linkname
        return info, None
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("with_filter", [True, False], ids=["data-filter", "no-data-filter"])
@pytest.mark.parametrize(
    "member",
    [
        lambda: _member("../evil"),
        lambda: _member("/abs/evil"),
        lambda: _member("a/../../evil"),
        lambda: _member("link", type_=b"2", linkname="../../etc/passwd"),  # SYMTYPE
        lambda: _member("abs-link", type_=b"2", linkname="/etc/passwd"),
        lambda: _member("hard", type_=b"1", linkname="../outside"),  # LNKTYPE
        lambda: _member("fifo", type_=b"6"),  # FIFOTYPE
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "symlink-out", "symlink-absolute", "hardlink-out", "fifo"],
)
def test_unsafe_archive_members_are_refused(tmp_path, monkeypatch, member, with_filter):
    import io

    if not with_filter:
        _without_data_filter(monkeypatch)
    dest = tmp_path / "export"
    dest.mkdir()
    stream = io.BytesIO(_tar(_member("ok.txt"), member()))
    with pytest.raises(revisions.DiffError, match="refusing"):
        revisions._extract(stream, dest)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


def test_a_failing_archive_neither_hangs_nor_passes(repo_copy, tmp_path, monkeypatch):
    """git archive that fails after filling its stdout pipe: the export stops it and
    reports git's message instead of waiting on it forever."""
    import threading

    real = subprocess.Popen
    writer = (
        "import sys; sys.stderr.write('fatal: simulated archive failure\\n'); sys.stderr.flush();"
        "sys.stdout.buffer.write(b'not a tar ' * 200_000); sys.exit(128)"
    )

    def popen(args, *a, **kw):
        if "archive" in args:
            args = [sys.executable, "-c", writer]
        return real(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", popen)
    outcome: list[BaseException] = []

    def export():
        try:
            revisions.export(repo_copy, _git(repo_copy, "rev-parse", "HEAD"), tmp_path / "base")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=export, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "export hung on a failing git archive"
    assert len(outcome) == 1 and isinstance(outcome[0], revisions.DiffError)
    assert str(outcome[0]).endswith(": fatal: simulated archive failure")
