"""CPU time of the offline preview against the imports any Pulumi program with a Deployment
pays (not a test; prints figures).

    baseline  python -c "import pulumi, pulumi_kubernetes.apps.v1, pulumi_kubernetes.core.v1"
    preview   python -m preview --stack <stack> --out <temporary directory>
    floor     the baseline imports, then as many bare ConfigMaps as the stack has resources,
              registered through the preview's own mock engine: what the Pulumi SDK alone
              costs for a program of that size, before any of this platform's code runs

Each command runs once to warm up (with bytecode caching allowed, as on a developer's
machine), then --runs times (default 5); the figure is the median of user + system CPU
seconds of the child process, which background load on the machine disturbs far less than
wall time.

Run:  .venv/bin/python bench/preview_speed.py [--stack prod] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = "import pulumi, pulumi_kubernetes.apps.v1, pulumi_kubernetes.core.v1"


# The floor's child: the stack's own config, a program of bare ConfigMaps.
FLOOR = """
import sys
import pulumi, pulumi_kubernetes.apps.v1, pulumi_kubernetes.core.v1
import pulumi_kubernetes as k8s
from preview import engine

def program():
    for i in range(int(sys.argv[2])):
        k8s.core.v1.ConfigMap(f"floor-{i}", metadata={"name": f"floor-{i}", "namespace": "tikit"}, data={"key": "value"})

engine.run_program(sys.argv[1], program=program)
"""

# Bytecode caches are written during the warm-up even where PYTHONDONTWRITEBYTECODE is set.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def cpu_seconds(args: list[str], cwd: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def median_of(runs: int, args: list[str], cwd: Path) -> tuple[float, float]:
    cpu_seconds(args, cwd)  # warm-up
    samples = [cpu_seconds(args, cwd) for _ in range(runs)]
    return statistics.median(c for c, _ in samples), statistics.median(w for _, w in samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as out:
        preview = [sys.executable, "-m", "preview", "--stack", args.stack, "--out", out]
        summary = subprocess.run(preview, cwd=repo, check=True, capture_output=True, text=True, env=ENV).stdout
        resources = int(re.search(r": ([0-9]+) resources", summary).group(1))
        base_cpu, base_wall = median_of(args.runs, [sys.executable, "-c", BASELINE], repo)
        prev_cpu, prev_wall = median_of(args.runs, preview, repo)
        floor_cpu, floor_wall = median_of(args.runs, [sys.executable, "-c", FLOOR, args.stack, str(resources)], repo)
    print(f"baseline imports        CPU {base_cpu:.2f} s  wall {base_wall:.2f} s  (median of {args.runs})")
    print(f"preview --stack {args.stack:<7} CPU {prev_cpu:.2f} s  wall {prev_wall:.2f} s  (median of {args.runs})")
    print(f"SDK floor, {resources} resources CPU {floor_cpu:.2f} s  wall {floor_wall:.2f} s  (median of {args.runs})")
    print(f"ratio (CPU)             preview {prev_cpu / base_cpu:.2f}x, floor {floor_cpu / base_cpu:.2f}x of the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
