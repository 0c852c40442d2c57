"""CPU time of the offline preview against the imports any Pulumi program with a Deployment
pays (not a test; prints figures).

    baseline  python -c "import pulumi, pulumi_kubernetes.apps.v1, pulumi_kubernetes.core.v1"
    preview   python -m preview --stack <stack> --out <temporary directory>

Each command runs --runs times (default 5) in this interpreter's environment; the figure is
the median of user + system CPU seconds of the child process, which background load on the
machine disturbs far less than wall time.

Run:  .venv/bin/python bench/preview_speed.py [--stack prod] [--runs 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = "import pulumi, pulumi_kubernetes.apps.v1, pulumi_kubernetes.core.v1"


def cpu_seconds(args: list[str], cwd: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def median_of(runs: int, args: list[str], cwd: Path) -> tuple[float, float]:
    samples = [cpu_seconds(args, cwd) for _ in range(runs)]
    return statistics.median(c for c, _ in samples), statistics.median(w for _, w in samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as out:
        base_cpu, base_wall = median_of(args.runs, [sys.executable, "-c", BASELINE], repo)
        prev_cpu, prev_wall = median_of(
            args.runs, [sys.executable, "-m", "preview", "--stack", args.stack, "--out", out], repo
        )
    print(f"baseline imports        CPU {base_cpu:.2f} s  wall {base_wall:.2f} s  (median of {args.runs})")
    print(f"preview --stack {args.stack:<7} CPU {prev_cpu:.2f} s  wall {prev_wall:.2f} s  (median of {args.runs})")
    print(f"ratio (CPU)             {prev_cpu / base_cpu:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
