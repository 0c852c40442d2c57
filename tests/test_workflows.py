"""The GitHub workflows: valid against SchemaStore's workflow schema (actionlint's Python
wrapper cannot be installed offline, it downloads its binary at build time), and
consistent with this repository: jobs they need exist, make targets and scripts they run
exist, actions are pinned to commits, the PR diff needs no secret, credentials come only
from GitHub environments, deploys run one workflow run at a time in push order with one
concurrency group per stack and prod behind a protected environment.  The composite
actions' shell steps are run here too, with the inputs GitHub would give them."""

from __future__ import annotations

import base64
import os
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
ACTION_FILES = sorted(ACTIONS.glob("*/action.yml"))
CREDENTIALS = "./.github/actions/pulumi-credentials"
SETUP = "./.github/actions/pulumi-setup"
DEPLOY_STACK = "./.github/workflows/deploy-stack.yml"
AVAILABLE = "steps.credentials.outputs.available == 'true'"
# The GitHub environment each stack deploys from (its secrets and protection rules).
ENVIRONMENTS = {"dev": "dev", "staging": "staging", "prod": "production"}
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


def action(name: str) -> dict:
    return load(ACTIONS / name / "action.yml")


def test_the_workflows_exist():
    assert {p.name for p in FILES} == {"pr.yml", "pr-comment.yml", "deploy.yml", "deploy-stack.yml"}


@pytest.mark.parametrize(
    "schema, paths",
    [
        ("vendor.github-workflows", FILES),
        ("vendor.github-actions", ACTION_FILES),
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


@pytest.mark.parametrize("path", [*FILES, *ACTION_FILES], ids=lambda p: p.name)
def test_what_the_files_run_exists(path):
    text = path.read_text()
    for target in re.findall(r"\bmake\s+([a-z][\w-]*)", text):
        assert target in makefile_targets(), f"{path.name}: make {target}"
    for script in re.findall(r"(?<![\w./])(scripts/[\w./-]+)", text):
        assert (REPO / script).is_file(), f"{path.name}: {script}"
    for local in re.findall(r"['\"\s](\./\.github/[\w./-]+)", text):
        assert (REPO / local).exists(), f"{path.name}: {local}"
    for local in re.findall(r"uses:\s*(\./[\w./-]+)", text):
        if local.endswith((".yml", ".yaml")):  # a reusable workflow
            assert (REPO / local).is_file() and "workflow_call" in load(REPO / local)["on"], f"{path.name}: {local}"
        else:
            assert (REPO / local / "action.yml").is_file(), f"{path.name}: {local}"


def _remote_uses(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if re.match(r"^\s*-?\s*uses:\s*(?!\./)[\w.-]+/", line)]


@pytest.mark.parametrize("path", [*FILES, *ACTION_FILES], ids=lambda p: p.name)
def test_actions_are_pinned_to_a_commit_with_the_version_beside_it(path):
    for line in _remote_uses(path):
        assert PINNED.match(line), f"{path.name}: not pinned to a commit SHA + '# vX.Y.Z': {line.strip()}"


def test_the_pin_check_sees_the_remote_actions():
    assert {p.name for p in FILES if _remote_uses(p)} >= {"pr.yml", "pr-comment.yml", "deploy.yml", "deploy-stack.yml"}


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
    # The pull request's head, whose SHA the report names: not GitHub's merge commit.
    assert checkout["with"]["ref"] == "${{ github.event.pull_request.head.sha }}"
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
    find, post = uses(job, "actions/github-script")
    assert "pr.head.sha !== process.env.HEAD_SHA" in post["with"]["script"]
    # A run that uploaded no report (it failed before the diff) is no failure here: the
    # artifact is looked up first and the download and the comment only run when it exists.
    assert find["id"] == "artifact" and steps(job).index(find) < steps(job).index(download)
    assert "listWorkflowRunArtifacts" in find["with"]["script"] and "'preview-diff'" in find["with"]["script"]
    assert "core.setOutput('found'" in find["with"]["script"] and "setFailed" not in find["with"]["script"]
    assert download["if"] == post["if"] == "steps.artifact.outputs.found == 'true'"


def _pulumi_steps(job: dict) -> list[dict]:
    found = uses(job, "pulumi/actions")
    for step in found:
        assert set(step["with"]) <= PULUMI_ACTION_INPUTS, set(step["with"]) - PULUMI_ACTION_INPUTS
        assert step["with"]["policyPacks"] == "policy" and (REPO / "policy").is_dir()
        assert step["env"]["PULUMI_ACCESS_TOKEN"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"
    return found


def _credentials_gate(job: dict) -> None:
    """The job checks its environment's token first and every step that needs it waits
    for the answer (secrets cannot be tested in `if:`)."""
    all_steps = steps(job)
    (check,) = uses(job, CREDENTIALS)
    assert check["id"] == "credentials" and check["with"]["token"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"
    after = all_steps[all_steps.index(check) + 1 :]
    assert after and all(s.get("if") == AVAILABLE for s in after), [s.get("if") for s in after]
    before = all_steps[: all_steps.index(check)]
    assert [s["uses"].split("@")[0] for s in before] == ["actions/checkout"]  # a local action needs the checkout
    (setup,) = uses(job, SETUP)
    assert setup["with"] == {"kubeconfig-base64": "${{ secrets.KUBECONFIG_BASE64 }}"}


def test_pulumi_preview_runs_on_non_production_stacks_with_preview_credentials():
    wf = workflow("pr.yml")
    job = wf["jobs"]["pulumi-preview"]
    # Pull-request code runs here: only the `preview` environment's secrets, never prod's.
    assert job["environment"] == "preview"
    assert job["strategy"]["matrix"]["stack"] == ["dev", "staging"]
    _credentials_gate(job)
    (step,) = _pulumi_steps(job)
    assert step["with"]["command"] == "preview" and "matrix.stack" in step["with"]["stack-name"]
    assert step["with"]["comment-on-pr"] is False  # one comment per PR: the offline diff's


def _jobs_everywhere():
    for path in FILES:
        for name, job in load(path)["jobs"].items():
            yield path.name, name, job


def test_secrets_are_read_only_in_jobs_that_run_in_an_environment():
    """Repository-level secrets would reach every job, and a protected environment's
    reviewers would guard nothing: each secret a job reads is its environment's."""
    readers = []
    for wf, name, job in _jobs_everywhere():
        text = yaml.safe_dump(job)
        if "secrets." in text:
            assert job.get("environment"), f"{wf}: job {name} reads secrets outside any environment"
            readers.append((wf, name))
        assert "secrets: inherit" not in text and "secrets" not in job, f"{wf}: {name} hands secrets on"
        assert "secrets.KUBECONFIG }}" not in text, f"{wf}: {name} reads the old multi-line KUBECONFIG secret"
    assert set(readers) == {("pr.yml", "pulumi-preview"), ("deploy-stack.yml", "up")}


def test_deploys_run_dev_then_staging_then_prod_one_run_at_a_time():
    wf = workflow("deploy.yml")
    assert wf["on"] == {"push": {"branches": ["main"]}}
    # Runs in push order: an older commit's deploy never lands after a newer one's.
    assert wf["concurrency"] == {"group": "deploy-main", "cancel-in-progress": False}
    jobs = wf["jobs"]
    assert jobs["dev"]["needs"] == "test" and "make test" in run_text(jobs["test"])
    assert jobs["staging"]["needs"] == "dev" and jobs["prod"]["needs"] == "staging"
    for stack in STACKS:
        job = jobs[stack]
        assert job["uses"] == DEPLOY_STACK
        assert job["with"] == {"stack": stack, "environment": ENVIRONMENTS[stack]}


def test_one_stack_deploys_in_its_environment_and_its_own_group():
    wf = workflow("deploy-stack.yml")
    inputs = wf["on"]["workflow_call"]["inputs"]
    assert {k: v["type"] for k, v in inputs.items()} == {"stack": "string", "environment": "string"}
    assert all(v["required"] for v in inputs.values())
    (job,) = wf["jobs"].values()
    assert job["environment"] == "${{ inputs.environment }}"
    assert job["concurrency"] == {"group": "deploy-${{ inputs.stack }}", "cancel-in-progress": False}
    _credentials_gate(job)
    (step,) = _pulumi_steps(job)
    assert step["with"]["command"] == "up" and "inputs.stack" in step["with"]["stack-name"]
    # A stack never deployed before is created rather than failing the first deploy.
    assert step["with"]["upsert"] is True


@pytest.mark.parametrize("name", ["pr.yml", "deploy-stack.yml"])
def test_the_cli_version_matches_the_sdk_pin(name):
    pin = re.search(r"^pulumi==([\d.]+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert workflow(name)["env"]["PULUMI_VERSION"] == pin


# ---- the composite actions' shell steps, run as GitHub runs them ------------------------------


def _run_step(step: dict, tmp_path: Path, inputs: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """Run a composite step's bash script with its `env:` block resolved from ``inputs``;
    returns the process and what it wrote to GITHUB_OUTPUT / GITHUB_ENV."""
    env = {"PATH": os.environ["PATH"], "RUNNER_TEMP": str(tmp_path), "HOME": str(tmp_path)}
    for key, value in (step.get("env") or {}).items():
        m = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", str(value))
        env[key] = inputs.get(m.group(1), "") if m else str(value)
    files = {"GITHUB_OUTPUT": tmp_path / "output", "GITHUB_ENV": tmp_path / "env"}
    for key, path in files.items():
        path.write_text("")
        env[key] = str(path)
    assert step["shell"] == "bash"
    # GitHub runs `shell: bash` as bash --noprofile --norc -eo pipefail {0}.
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    written = {k: p.read_text() for k, p in files.items()}
    return proc, written


def _step(action_name: str, predicate) -> dict:
    (found,) = [s for s in action(action_name)["runs"]["steps"] if predicate(s)]
    return found


KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: tikit-prod-lagos
  cluster: {server: "https://lagos.example:6443"}
contexts:
- name: tikit-prod-lagos
  context: {cluster: tikit-prod-lagos, user: deployer}
current-context: tikit-prod-lagos
users:
- name: deployer
  user: {token: not-a-real-token}
"""


def test_kubeconfig_arrives_base64_encoded_and_is_decoded(tmp_path):
    inputs = action("pulumi-setup")["inputs"]
    assert set(inputs) == {"kubeconfig-base64"}
    step = _step("pulumi-setup", lambda s: s.get("name") == "Kubeconfig")
    assert step["if"] == "inputs.kubeconfig-base64 != ''"

    encoded = base64.b64encode(KUBECONFIG.encode()).decode()
    # As pasted into the secrets form: wrapped at 76 columns, with a trailing newline.
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n"
    config = tmp_path / ".kube" / "config"
    for value in (encoded, wrapped):
        proc, written = _run_step(step, tmp_path, {"kubeconfig-base64": value})
        assert proc.returncode == 0, proc.stderr
        # Where clients look when KUBECONFIG is unset; no later step's environment changes.
        assert config.read_text() == KUBECONFIG
        assert written["GITHUB_ENV"] == ""
        assert oct(config.stat().st_mode & 0o777) == "0o600"

    # The raw file pasted where base64 belongs fails here, with a message saying what to do,
    # and leaves no half-decoded file behind.
    proc, written = _run_step(step, tmp_path, {"kubeconfig-base64": KUBECONFIG})
    assert proc.returncode != 0 and written["GITHUB_ENV"] == ""
    assert "base64 -w0" in proc.stdout and not config.exists()


@pytest.mark.parametrize("token, available", [("pul-abc123", "true"), ("", "false")])
def test_credentials_action_answers_whether_a_token_exists(tmp_path, token, available):
    meta = action("pulumi-credentials")
    assert meta["outputs"]["available"]["value"] == "${{ steps.check.outputs.available }}"
    step = _step("pulumi-credentials", lambda s: s.get("id") == "check")
    proc, written = _run_step(step, tmp_path, {"token": token, "missing": "nothing deployed"})
    assert proc.returncode == 0, proc.stderr
    assert written["GITHUB_OUTPUT"] == f"available={available}\n"
    assert ("::notice::nothing deployed" in proc.stdout) == (available == "false")
    assert token == "" or token not in proc.stdout + proc.stderr
