"""The API's request-rate trigger query, evaluated by Prometheus' own engine (promtool) on
synthetic counters: requests per minute summed over this namespace's API pods only."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tikit import names
from conftest import named, require_binary

pytestmark = pytest.mark.integration

API_PODS = ("api-7d9f8b6c4-abcde", "api-7d9f8b6c4-fghij")
# Pods that must not count: another workload whose name starts with "api", the workers,
# and an API pod of another namespace.
OTHERS = [("tikit", "api-gateway-5c6d7f8b9-klmno"), ("tikit", "workers-6b7c8d9f5-pqrst"), ("other", "api-7d9f8b6c4-uvwxy")]


def _series(namespace: str, pod: str, code: str, per_15s: int) -> dict:
    # 41 samples, 15 s apart: a counter growing by per_15s, i.e. 4 x per_15s per minute.
    return {"series": f'http_requests_total{{namespace="{namespace}",pod="{pod}",code="{code}"}}', "values": f"0+{per_15s}x40"}


def test_query_returns_requests_per_minute_of_the_api_pods(rendered, tmp_path):
    plan = rendered("prod").plan
    prom = next(t for t in named(plan, "ScaledObject", names.BACKEND, "lagos")["spec"]["triggers"] if t.get("name") == "request-rate")
    query = prom["metadata"]["query"]
    series = [_series("tikit", pod, code, n) for pod in API_PODS for code, n in (("200", 250), ("500", 5))]
    series += [_series(ns, pod, "200", 1000) for ns, pod in OTHERS]
    # Two pods x (1000 + 20) requests per minute (rounded: promtool compares floats exactly).
    expected = len(API_PODS) * (250 + 5) * 4
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "promql_expr_test": [{"expr": f"round({query})", "eval_time": "8m", "exp_samples": [{"labels": "{}", "value": expected}]}],
            }
        ],
    }
    path = tmp_path / "query_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([require_binary("promtool"), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # With AverageValue the HPA divides by the replica count: 2040 / 1000 per instance -> 3 replicas.
    assert -(-expected // int(prom["metadata"]["threshold"])) == 3


def _promtool(tmp_path, series: list[dict], checks: list[dict]) -> None:
    tests = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": checks}],
    }
    path = tmp_path / "sustain_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([require_binary("promtool"), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_trigger_rises_only_after_two_minutes_above_the_threshold(rendered, tmp_path):
    """The notes' "CPU > 70 % for 2 minutes": two API pods idle at 0.2 cores each, then at
    1.6 cores each from 10:00 (counters sampled every 15 s).  The trigger reports the lowest
    1-minute rate of the last 2 minutes, so the HPA's ceil(total / threshold) stays at 1
    until the whole 2 minutes were busy, and becomes ceil(3.2 / 1.4) = 3 after."""
    from tikit.components import autoscaling

    plan = rendered("prod").plan
    triggers = named(plan, "ScaledObject", names.BACKEND, "lagos")["spec"]["triggers"]
    (cpu,) = [t for t in triggers if t.get("name") == autoscaling.CPU_TRIGGER]
    query, threshold = cpu["metadata"]["query"], float(cpu["metadata"]["threshold"])
    # 0.2 cores = +3 core-seconds per 15 s until 10:00 (sample 40 = 120), then 1.6 cores = +24.
    busy = "0+3x40 144+24x40"
    series = [{"series": f'container_cpu_usage_seconds_total{{namespace="tikit",pod="{p}",container="api"}}', "values": busy} for p in API_PODS]
    # The pod-level cgroup (container="") and the workers must not count.
    series += [
        {"series": f'container_cpu_usage_seconds_total{{namespace="tikit",pod="{API_PODS[0]}",container=""}}', "values": "0+99x80"},
        {"series": 'container_cpu_usage_seconds_total{namespace="tikit",pod="workers-6b7c8d9f5-pqrst",container="workers"}', "values": "0+99x80"},
    ]
    desired = f"ceil(({query}) / {threshold})"
    _promtool(
        tmp_path,
        series,
        [
            # Busy for 1m45s: the 2-minute window still holds idle evaluations.
            {"expr": desired, "eval_time": "11m45s", "exp_samples": [{"labels": "{}", "value": 1}]},
            # Busy for 3 minutes: every evaluation of the window saw only busy 1-minute rates.
            {"expr": desired, "eval_time": "13m", "exp_samples": [{"labels": "{}", "value": 3}]},
        ],
    )
