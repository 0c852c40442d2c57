"""tikit/conf/templates/: the shell programs as files shellcheck reads, and their renderer."""

from __future__ import annotations

import subprocess

import pytest

from conftest import require_binary
from tikit.conf import templates

SHELL_FILES = sorted(p.relative_to(templates.DIR).as_posix() for p in templates.DIR.rglob("*.sh"))


def test_there_are_templates():
    assert {
        "redis/start.sh", "redis/start-ha.sh", "redis/sentinel-start.sh", "redis/handover.sh",
        "redis/backup.sh", "redis/restore.sh",
    } <= set(SHELL_FILES)


@pytest.mark.parametrize("name", SHELL_FILES)
def test_every_template_passes_shellcheck(name):
    """Everything shellcheck finds, at every severity, with one exception where it cannot
    see the whole program: a fragment (a function library, or lines a program puts in) sets
    variables its program reads, and a program that puts a library in at a block
    placeholder sets variables that library reads (SCRIPT for log(), for example), so
    "assigned but unused" (SC2034) is skipped for those two kinds alone."""
    shellcheck = require_binary("shellcheck")
    text = templates.source(name)
    partial = not text.startswith("#!") or any(templates._BLOCK.match(line) for line in text.splitlines())
    args = [shellcheck, "-s", "sh", "-S", "style", *(["-e", "SC2034"] if partial else []), str(templates.DIR / name)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_render_fills_values_and_blocks():
    full = templates.render(
        "redis/start.sh", SELF="me", LIVE_DIR="/l", TEMPLATE="/t", LIVE_CONF="/l/c",
        PRIMARY0_HOST="p", PORT=1, SERVER_ARGS="--a",
    )
    assert "@" not in full.replace('"$@"', "")
    assert 'self="me"\n' in full and "--replicaof p 1 ;;" in full
    values = {k: "x" for k in templates.placeholders("redis/handover.sh")}
    two = templates.render("redis/handover.sh", **{**values, "FUNCTIONS": "f() { :; }\ng() { :; }"})
    none = templates.render("redis/handover.sh", **{**values, "FUNCTIONS": ""})
    assert "\nf() { :; }\ng() { :; }\n" in two
    assert two.count("\n") - none.count("\n") == 2  # an empty block's line is gone
    assert templates.source("redis/handover.sh").count("\n") - none.count("\n") == 1


def test_render_refuses_a_missing_or_unknown_value():
    values = {"SENTINEL_HOST": "s", "SENTINEL_PORT": 1, "MASTER": "m"}
    assert 'SENTINEL_HOST="${SENTINEL_HOST:-s}"' in templates.render("redis/backup-discover-sentinel.sh", **values)
    with pytest.raises(KeyError, match="missing"):
        templates.render("redis/backup-discover-sentinel.sh", SENTINEL_HOST="s", SENTINEL_PORT=1)
    with pytest.raises(KeyError, match="unknown"):
        templates.render("redis/backup-discover-sentinel.sh", **values, EXTRA="x")
