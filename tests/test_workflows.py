"""The GitHub workflows: valid against SchemaStore's workflow schema (actionlint's Python
wrapper cannot be installed offline, it downloads its binary at build time), and
consistent with this repository: jobs they need exist, make targets and scripts they run
exist, actions are pinned to commits, the PR diff needs no secret, deploys run in order
with one concurrency group per stack and prod behind a protected environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, STACKS
from preview import diff_report

WORKFLOWS = REPO / ".github" / "workflows"
ACTIONS = REPO / ".github" / "actions"
FILES = sorted(WORKFLOWS.glob("*.yml"))
# pulumi/actions v7 inputs (its action.yml); a misspelt input is silently ignored by GitHub.
PULUMI_ACTION_INPUTS = {
    "command", "stack-name", "pulumi-version", "pulumi-version-file", "work-dir", "comment-on-pr",
    "comment-on-pr-number", "comment-on-summary", "github-token", "cloud-url", "secrets-provider", "parallel",
    "message", "config-map", "expect-no-changes", "diff", "replace", "target", "target-dependents", "policyPacks",
    "policyPackConfigs", "refresh", "upsert", "remove", "edit-pr-comment", "color", "exclude-protected", "plan",
    "suppress-outputs", "suppress-progress", "always-include-summary",
}  # fmt: skip
PINNED = re.compile(r"^\s*-?\s*uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+\.\d+\.\d+\s*$")


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def workflow(name: str) -> dict:
    return load(WORKFLOWS / name)


def steps(job: dict) -> list[dict]:
    return job.get("steps") or []


def uses(job: dict, action: str) -> list[dict]:
    return [s for s in steps(job) if str(s.get("uses", "")).startswith(action + "@") or s.get("uses") == action]


def run_text(job: dict) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps(job))


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


def test_the_three_workflows_exist():
    assert {p.name for p in FILES} == {"pr.yml", "pr-comment.yml", "deploy.yml"}


@pytest.mark.parametrize(
    "schema, paths",
    [
        ("vendor.github-workflows", FILES),
        ("vendor.github-actions", sorted(ACTIONS.glob("*/action.yml"))),
    ],
    ids=["workflows", "actions"],
)
def test_files_match_the_github_schema(schema, paths):
    assert paths
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", schema, *map(str, paths)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_needs_name_existing_jobs_without_cycles(path):
    jobs = load(path)["jobs"]
    graph = {}
    for name, job in jobs.items():
        needs = job.get("needs", [])
        graph[name] = [needs] if isinstance(needs, str) else list(needs)
        assert set(graph[name]) <= set(jobs), f"{path.name}: {name} needs {graph[name]}"
        for ref in re.findall(r"needs\.([\w-]+)\.", yaml.safe_dump(job)):
            assert ref in graph[name], f"{path.name}: {name} reads needs.{ref} without needing it"

    def visit(node, seen):
        assert node not in seen, f"{path.name}: cycle through {node}"
        for dep in graph[node]:
            visit(dep, seen | {node})

    for name in graph:
        visit(name, frozenset())


@pytest.mark.parametrize("path", [*FILES, *sorted(ACTIONS.glob("*/action.yml"))], ids=lambda p: p.name)
def test_what_the_files_run_exists(path):
    text = path.read_text()
    for target in re.findall(r"\bmake\s+([a-z][\w-]*)", text):
        assert target in makefile_targets(), f"{path.name}: make {target}"
    for script in re.findall(r"(?<![\w./])(scripts/[\w./-]+)", text):
        assert (REPO / script).is_file(), f"{path.name}: {script}"
    for local in re.findall(r"['\"\s](\./\.github/[\w./-]+)", text):
        assert (REPO / local).exists(), f"{path.name}: {local}"
    for local in re.findall(r"uses:\s*(\./[\w./-]+)", text):
        assert (REPO / local / "action.yml").is_file(), f"{path.name}: {local}"


@pytest.mark.parametrize("path", [*FILES, *sorted(ACTIONS.glob("*/action.yml"))], ids=lambda p: p.name)
def test_actions_are_pinned_to_a_commit_with_the_version_beside_it(path):
    remote = [line for line in path.read_text().splitlines() if re.match(r"^\s*-?\s*uses:\s*(?!\./)[\w.-]+/", line)]
    for line in remote:
        assert PINNED.match(line), f"{path.name}: not pinned to a commit SHA + '# vX.Y.Z': {line.strip()}"
    if path.name != "pr-comment.yml":
        assert remote


def test_pull_request_diff_needs_no_secret_and_posts_one_comment():
    wf = workflow("pr.yml")
    assert "pull_request" in wf["on"] and "pull_request_target" not in wf["on"]
    jobs = wf["jobs"]
    for name in ("test", "diff"):
        assert "secrets." not in yaml.safe_dump(jobs[name]), name
    assert "make test" in run_text(jobs["test"])

    diff = jobs["diff"]
    assert diff["permissions"] == {"contents": "read", "pull-requests": "write"}
    (checkout,) = uses(diff, "actions/checkout")
    assert checkout["with"]["fetch-depth"] == 0  # merge-base needs the history
    command = re.search(r"make diff .*", run_text(diff)).group(0)
    assert "git merge-base HEAD" in command
    assert set(re.search(r'STACKS="([^"]+)"', command).group(1).split()) == set(STACKS)

    (post,) = uses(diff, "actions/github-script")
    assert "sticky-comment.js" in post["with"]["script"]
    script = (REPO / ".github" / "scripts" / "sticky-comment.js").read_text()
    assert f"const MARKER = '{diff_report.MARKER}';" in script
    assert "updateComment" in script and "createComment" in script
    assert "!cancelled()" in post["if"]  # a failing diff (policy violation) is still shown
    (upload,) = uses(diff, "actions/upload-artifact")
    assert upload["with"]["name"] == "preview-diff" and upload["with"]["path"].rstrip("/") == "build/diff"


def test_forks_get_their_comment_from_the_base_repository():
    pr, comment = workflow("pr.yml"), workflow("pr-comment.yml")
    assert comment["on"]["workflow_run"]["workflows"] == [pr["name"]]
    job = comment["jobs"]["comment"]
    assert "head_repository.full_name != github.repository" in job["if"]
    (checkout,) = uses(job, "actions/checkout")
    assert "ref" not in (checkout.get("with") or {})  # never the fork's code
    (download,) = uses(job, "actions/download-artifact")
    assert download["with"]["name"] == "preview-diff"
    script = uses(job, "actions/github-script")[0]["with"]["script"]
    assert "pr.head.sha !== process.env.HEAD_SHA" in script


def _pulumi_steps(job: dict) -> list[dict]:
    found = uses(job, "pulumi/actions")
    for step in found:
        assert set(step["with"]) <= PULUMI_ACTION_INPUTS, set(step["with"]) - PULUMI_ACTION_INPUTS
        assert step["with"]["policyPacks"] == "policy" and (REPO / "policy").is_dir()
        assert step["env"]["PULUMI_ACCESS_TOKEN"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"
    return found


def _credentials_gate(wf: dict, job: dict) -> None:
    assert "credentials" in job["needs"]
    assert job["if"] == "needs.credentials.outputs.available == 'true'"
    check = wf["jobs"]["credentials"]
    assert "secrets.PULUMI_ACCESS_TOKEN" in yaml.safe_dump(check) and "available=true" in run_text(check)


def test_pulumi_preview_runs_per_stack_only_with_credentials():
    wf = workflow("pr.yml")
    job = wf["jobs"]["pulumi-preview"]
    _credentials_gate(wf, job)
    assert job["strategy"]["matrix"]["stack"] == list(STACKS)
    (step,) = _pulumi_steps(job)
    assert step["with"]["command"] == "preview" and "matrix.stack" in step["with"]["stack-name"]
    assert step["with"]["comment-on-pr"] is False  # one comment per PR: the offline diff's


def test_deploys_run_dev_then_staging_then_prod_each_in_its_own_group():
    wf = workflow("deploy.yml")
    assert wf["on"] == {"push": {"branches": ["main"]}}
    jobs = wf["jobs"]
    _credentials_gate(wf, jobs["dev"])
    assert "test" in jobs["dev"]["needs"]
    assert jobs["staging"]["needs"] == "dev" and jobs["prod"]["needs"] == "staging"
    for stack in STACKS:
        job = jobs[stack]
        assert job["concurrency"] == {"group": f"deploy-{stack}", "cancel-in-progress": False}
        (step,) = _pulumi_steps(job)
        assert step["with"]["command"] == "up" and stack in step["with"]["stack-name"]
    assert jobs["prod"]["environment"] == "production"
    assert "environment" not in jobs["dev"] and "environment" not in jobs["staging"]


@pytest.mark.parametrize("name", ["pr.yml", "deploy.yml"])
def test_the_cli_version_matches_the_sdk_pin(name):
    pin = re.search(r"^pulumi==([\d.]+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert workflow(name)["env"]["PULUMI_VERSION"] == pin
