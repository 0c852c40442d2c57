"""The entry points around the code: the Makefile's preview targets and the scripts that
bootstrap the virtualenv and the Debian daemons."""

from __future__ import annotations

import pytest

import os
import subprocess
import sys
from pathlib import Path

import hypothesis

from conftest import IN_CI, REPO

MAKE_LINE_PREFIX = "make: *** "


def _fake_venv(tmp_path: Path) -> Path:
    """A .venv stand-in whose python is this interpreter and whose stamp is fresh, so make
    runs the recipe without bootstrapping anything."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    (venv / ".runtime").touch()
    return venv


def _make(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    # An outer `make test PYTHON=...` exports its command-line variables to the tests' env;
    # the Makefile under test must see only what each test passes.
    makefile_vars = {"PYTHON", "VENV", "PY", "STACK", "STACKS", "BASE", "POLICY_CONFIG"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k not in makefile_vars}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_make_preview_passes_the_preview_line_through_and_fails_as_make_does(tmp_path):
    venv = _fake_venv(tmp_path)
    result = _make("preview", f"VENV={venv}", "STACK=nosuchstack")
    # The recipe is not echoed; the preview's one line comes first, then make's own.
    assert "-m preview" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"config error: stack: no stack file Pulumi.nosuchstack.yaml in {REPO.name}/"
    assert len(lines) == 2 and lines[1].startswith(MAKE_LINE_PREFIX) and lines[1].endswith("Error 2")
    assert result.returncode == 2  # make's status for any failed recipe


@pytest.mark.slow
def test_make_preview_all_passes_the_policy_config(tmp_path):
    venv = _fake_venv(tmp_path)
    config = tmp_path / "policy.json"
    config.write_text('{"no-such-policy": "advisory"}')
    result = _make("preview-all", f"VENV={venv}", f"POLICY_CONFIG={config}", "STACKS=dev staging")
    refused = [line for line in result.stderr.splitlines() if line.startswith("config error: policy-config.no-such-policy: ")]
    assert len(refused) == 2  # each stack read the file
    assert result.returncode == 2


def test_a_venv_without_a_recent_python_is_rebuilt(tmp_path):
    stale = tmp_path / "stale"
    (stale / "bin").mkdir(parents=True)
    (stale / ".runtime").touch()  # a fresh stamp, but no interpreter behind it
    result = _make("-n", "preview", f"VENV={stale}")
    assert f"scripts/bootstrap.sh python3 {stale} requirements.txt" in result.stdout


def _old_python(tmp_path: Path) -> Path:
    """An interpreter that says it is Python 3.9.2 (and fails the version check)."""
    fake = tmp_path / "bin" / "python3.9"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in *platform*) echo 3.9.2; exit 0;; esac\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    return fake


def test_bootstrap_refuses_a_python_older_than_3_11(tmp_path):
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "bootstrap.sh"), str(_old_python(tmp_path)), str(venv), str(REPO / "requirements.txt")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "is Python 3.9.2; tikit-infra needs Python 3.11 or newer" in result.stderr
    assert not venv.exists()


@pytest.mark.slow
def test_bootstrap_rebuilds_a_venv_made_by_an_older_python(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    old = _old_python(tmp_path)
    (venv / "bin" / "python").symlink_to(old)
    (venv / ".runtime").touch()
    requirements = tmp_path / "empty.txt"
    requirements.write_text("")
    base = getattr(sys, "_base_executable", sys.executable)
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "bootstrap.sh"), base, str(venv), str(requirements)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "recreating it" in result.stderr
    assert not (venv / ".runtime").exists()  # the old venv went, stamps and all
    version = subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.version_info >= (3, 11))"],
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == "True"


def test_apt_get_keeps_noninteractive_under_sudo(tmp_path):
    """install-system-deps.sh as a non-root user: the variable must survive sudo, which
    starts the command with a clean environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    scripts = {
        "id": "#!/bin/sh\necho 1000\n",
        # sudo drops the caller's environment (env_reset), keeping only PATH here.
        "sudo": f'#!/bin/sh\nexec /usr/bin/env -i PATH="{bin_dir}" "$@"\n',
        "apt-get": f'#!/bin/sh\necho "DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}} $*" >> {log}\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "env").symlink_to("/usr/bin/env")
    result = subprocess.run(
        ["/bin/bash", str(REPO / "scripts" / "install-system-deps.sh")],
        env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    install = [c for c in calls if " install " in f" {c} "]
    assert install and all(c.startswith("DEBIAN_FRONTEND=noninteractive ") for c in calls)


def test_hypothesis_has_a_reproducible_ci_profile():
    ci = hypothesis.settings.get_profile("ci")
    assert ci.derandomize is True and ci.deadline is None and ci.print_blob is True
    if IN_CI:
        assert hypothesis.settings.default.derandomize is True and hypothesis.settings.default.deadline is None
