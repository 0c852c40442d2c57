"""`python -m preview capacity` (make capacity): the capacity model of a rendered stack,
its files, and the summary plan.md carries."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def test_plan_md_summarises_the_capacity_model(rendered):
    md = rendered("prod").files["plan.md"]
    section = md.split("## Capacity", 1)[1].split("## Topology", 1)[0]
    rows = re.findall(r"^\| (lagos|london) \| (profile|peak) \| ([^|]+) \| (\d+) s \| ", section, re.M)
    assert {(r[0], r[1]) for r in rows} == {(g, s) for g in ("lagos", "london") for s in ("profile", "peak")}
    # The notes' auto-scale time: every step within 2 minutes, with the warm headroom.
    assert all(int(r[3]) <= 120 for r in rows), rows
    assert "| lagos | tikit-on-demand |" in section and "**User model** (lagos)" in section
    assert "Finding: the notes' k6 user is not this user model" in section


def test_dev_models_without_a_peak_floor(rendered):
    section = rendered("dev").files["plan.md"].split("## Capacity", 1)[1].split("## Topology", 1)[0]
    assert "| lagos | profile |" in section and "| lagos | peak |" not in section


@pytest.mark.slow
def test_make_capacity_writes_the_series_the_plot_and_the_figures(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "preview", "capacity", "--stack", "prod", "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "prod" / "capacity"
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(io.StringIO((out / "timeseries.csv").read_text())))
    assert {(r["region"], r["scenario"], r["headroom"]) for r in rows} == {
        (g, s, h) for g in ("lagos", "london") for s in ("profile", "peak") for h in ("yes", "no")
    }
    assert (tmp_path / "prod" / "plan.json").is_file(), "the preview's own files are written too"
    # The console names each step's time to capacity, with and without the headroom.
    with_h = re.findall(r"lagos profile \(with headroom\): 100 -> 1000 users: time to capacity (\d+) s", result.stdout)
    without = re.findall(r"lagos profile \(without headroom\): 100 -> 1000 users: time to capacity (\d+) s", result.stdout)
    assert with_h and without and int(with_h[0]) <= 120 < int(without[0])
    assert "requests above capacity" in result.stdout and "Pool limits against what can land there" in result.stdout


def test_docs_quote_the_models_prod_figures(rendered):
    """docs/autoscaling.md's prod table is what the model computes from the rendered stack."""
    from preview import capacity

    _, scenarios = capacity.replay(rendered("prod").plan)
    got = {
        (s.name, s.headroom, st.label): st.time_to_capacity for s in scenarios if s.region == "lagos" for st in s.steps
    }
    ramp, floor = "100 -> 1000 users", "peak-floor: 2 -> 5 replicas"
    text = (REPO / "docs" / "autoscaling.md").read_text()
    row = f"| k6 100 -> 1000 users (60,000/min, 10 pods) | **{got[('profile', True, ramp)]} s** | {got[('profile', False, ramp)]} s |"
    assert row in text
    assert f"| peak floor 2 -> 5 at 18:00 | **{got[('peak', True, floor)]} s** | {got[('peak', False, floor)]} s |" in text
    assert got[("profile", True, ramp)] <= 120 and got[("peak", True, floor)] <= 120
