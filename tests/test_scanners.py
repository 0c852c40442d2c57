"""The security scanners a reviewer would run, part of `make test`: checkov over every
stack's rendered manifests and zizmor over the workflows and actions.

checkov reports no failed check: what the platform does differently on purpose carries an
inline skip on the object itself (``checkov.io/skip<N>: <check>=<reason>``, from
tikit/kube.py's one table of reasons), and every skip states its reason. zizmor finds nothing
of medium or high severity, and every inline ``# zizmor: ignore[...]`` says why.

Both run offline (no update check, no guideline download) from .venv-scanners
(``make scanners``). Where it is missing the tests skip, except under CI=true, where they
fail: CI must run them."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, STACKS
from preview import cli

pytestmark = pytest.mark.slow

SCANNERS = Path(os.environ.get("TIKIT_SCANNERS_BIN", REPO / ".venv-scanners" / "bin"))
# checkov contacts PyPI (update check) and Prisma Cloud (guidelines) unless told not to.
OFFLINE = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}
MIN_REASON = 20


def scanner(name: str) -> Path:
    path = SCANNERS / name
    if not path.is_file():
        message = f"{name} not installed in {SCANNERS} (make scanners)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def checkov(directory: Path) -> dict:
    proc = subprocess.run(
        [str(scanner("checkov")), "-d", str(directory), "--framework", "kubernetes", "--skip-download",
         "--skip-path", r"plan\.json", "--skip-path", r"policy\.json", "--skip-path", "capacity",
         "-o", "json"],
        cwd=directory, env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    return out[0] if isinstance(out, list) else out


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """One checkov run over every stack (its start-up costs seconds; `-d` recurses, and the
    stack and region directories keep every file apart)."""
    out = tmp_path_factory.mktemp("scan")
    for stack in STACKS:
        cli.preview(stack, out_root=out)
    return checkov(out)


def of_stack(checks: list[dict], stack: str) -> list[dict]:
    return [c for c in checks if c["file_path"].lstrip("/").startswith(f"{stack}/")]


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_finds_nothing_unexplained(report, stack):
    summary, results = report["summary"], report["results"]
    assert summary["parsing_errors"] == 0
    assert len(of_stack(results["passed_checks"], stack)) > 500, summary
    failed = [(f["check_id"], f["resource"], f["file_path"]) for f in of_stack(results["failed_checks"], stack)]
    assert not failed, f"{stack}: {len(failed)} failed checks: {failed[:10]}"
    assert summary["failed"] == 0


@pytest.mark.parametrize("stack", STACKS)
def test_every_checkov_skip_states_its_reason(report, stack):
    skipped = of_stack(report["results"]["skipped_checks"], stack)
    assert skipped, f"{stack}: no skipped check (CPU limits are skipped by design)"
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason) >= MIN_REASON, (check["check_id"], check["resource"], reason)


def test_zizmor_finds_nothing_of_medium_or_high_severity():
    proc = subprocess.run(
        [str(scanner("zizmor")), "--offline", "--min-severity", "medium", "--format", "json", ".github"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # 0: nothing found; 10-14: findings, by their highest severity; anything else: zizmor failed.
    assert proc.returncode == 0 or 10 <= proc.returncode <= 14, proc.stderr[-2000:]
    findings = json.loads(proc.stdout)
    assert not findings, [(f.get("ident"), json.dumps(f.get("locations"))[:300]) for f in findings]


def test_every_zizmor_ignore_states_its_reason():
    ignores = []
    for path in sorted((REPO / ".github").rglob("*.yml")):
        for line in path.read_text().splitlines():
            m = re.search(r"#\s*zizmor:\s*ignore\[([a-z0-9,-]+)\](.*)$", line)
            if m:
                ignores.append((path.name, m.group(1), m.group(2).strip()))
    assert ignores, "the fork-comment workflow's workflow_run trigger carries an explained ignore"
    for name, audit, reason in ignores:
        # "ignore[audit]: reason" (with a colon) is silently not honoured by zizmor.
        assert not reason.startswith(":"), (name, audit)
        assert len(reason) >= MIN_REASON, (name, audit, reason)
