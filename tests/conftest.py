"""Shared fixtures: each stack is rendered once per test session through the offline
preview, and tests assert on the rendered plan and manifests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import hypothesis
import pytest

REPO = Path(__file__).resolve().parent.parent

STACKS = ("dev", "staging", "prod")
IN_CI = os.environ.get("CI", "").lower() == "true"

# Under CI, property tests draw the same examples on every run (a red build is reproducible,
# not a dice roll), take no per-example deadline on a loaded 2-core machine, and print the
# blob that replays a failure.
hypothesis.settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if IN_CI:
    hypothesis.settings.load_profile("ci")


def require_binary(name: str) -> str:
    """Path of a daemon binary; a missing one fails under CI=true and skips elsewhere."""
    import shutil

    for candidate in (shutil.which(name), *(str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))):
        if candidate and Path(candidate).exists():
            return candidate
    unavailable(f"{name} is not installed (make test installs it)")


def unavailable(message: str) -> NoReturn:
    """A test cannot run here: fail under CI=true (a CI run that skips proves nothing),
    skip elsewhere.  The one place integration tests decide that."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: integration tests must run, not skip)", pytrace=False)
    pytest.skip(message)


def _reuse_default_runs() -> None:
    """Run the program (and render its output) once per stack and session for the checked-in
    stack files: the tests that render a stack with its own files (through cli.render,
    cli.preview, rendered() or run_program directly) share one run per worker, each getting
    its own copy.  Overrides, other
    programs or checkouts, a changed stack file or TIKIT_* variable run the program again;
    test_output_is_deterministic runs it afresh on purpose."""
    import copy
    import hashlib

    from preview import engine

    original = engine.run_program
    runs: dict[tuple, object] = {}

    def run_program(stack, repo=engine.REPO_ROOT, *, config_override=None, program=None):
        if config_override is not None or program is not None or Path(repo) != engine.REPO_ROOT:
            return original(stack, repo, config_override=config_override, program=program)
        files = [Path(repo) / "Pulumi.yaml", Path(repo) / f"Pulumi.{stack}.yaml"]
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in files if f.is_file())).hexdigest()
        key = (stack, digest, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("TIKIT_"))))
        if key not in runs:
            runs[key] = original(stack, repo)
        return copy.deepcopy(runs[key])

    run_program.__wrapped__ = original  # type: ignore[attr-defined]
    engine.run_program = run_program

    # The same for a whole render (policies, reports, files, admission) of a stack's own files.
    from preview import cli

    original_render = cli.render
    renders: dict[tuple, object] = {}

    def render(stack, repo=engine.REPO_ROOT, *, policy_config=None, program=None):
        if policy_config is not None or program is not None or Path(repo) != engine.REPO_ROOT:
            return original_render(stack, repo, policy_config=policy_config, program=program)
        files = [Path(repo) / "Pulumi.yaml", Path(repo) / f"Pulumi.{stack}.yaml"]
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in files if f.is_file())).hexdigest()
        key = (stack, digest, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("TIKIT_"))))
        if key not in renders:
            renders[key] = original_render(stack, repo)
        return copy.deepcopy(renders[key])

    render.__wrapped__ = original_render  # type: ignore[attr-defined]
    cli.render = render


_reuse_default_runs()


def pytest_collection_finish(session) -> None:
    """A run that validates custom resources needs the pinned CRD files (make crds, or a
    mirror in TIKIT_CRDS_DIR): without them it stops here, with one line, instead of failing
    test after test."""
    if not any("crds" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    from preview import crds

    found = crds.problems()
    if found:
        pytest.exit(crds.summary(found, crds.location()), returncode=4)


@pytest.fixture(scope="session")
def crds() -> Path:
    """The directory of the pinned CRD files (checked before any test runs)."""
    from preview import crds as crds_mod

    return crds_mod.location()


@pytest.fixture(scope="session")
def rendered():
    """stack -> preview.cli.Rendered (plan, policy result and every output file)."""
    from preview import cli

    cache: dict[str, object] = {}

    def get(stack: str):
        if stack not in cache:
            cache[stack] = cli.render(stack)
        return cache[stack]

    return get


@pytest.fixture(scope="session", params=STACKS)
def stack(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def plan(rendered, stack):
    return rendered(stack).plan


def objects(plan, kind: str, region: str | None = None) -> list[dict]:
    """Rendered Kubernetes objects of one kind (optionally in one region)."""
    return [r.manifest for r in plan.kubernetes_objects(region) if r.manifest.get("kind") == kind]


def named(plan, kind: str, name: str, region: str) -> dict:
    found = [o for o in objects(plan, kind, region) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in {region}, found {len(found)}"
    return found[0]


def regional(plan, kind: str, name: str):
    """(region, object) for every region of the stack: the one object of that kind and name."""
    for region in plan.regions:
        yield region, named(plan, kind, name, region)
