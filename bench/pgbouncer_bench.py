"""Benchmark the PostgreSQL tier as rendered for a stack (not a test; prints figures).

Starts the same daemons as tests/integration/test_postgres_pgbouncer.py: PostgreSQL with
postgres_parameters(settings.postgres, settings.derived) and PgBouncer with
pgbouncer_ini(settings.pgbouncer) in front of it.  Then
runs pgbench twice and prints TPS and latency percentiles (from per-transaction logs):

  direct     against PostgreSQL with the most clients it admits for the app role
             (max_connections - superuser_reserved_connections);
  pgbouncer  through PgBouncer with max_client_conn clients (1000: the notes' figure).

Run:  .venv/bin/python bench/pgbouncer_bench.py [--stack prod] [--duration 15] [--mode select-only]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from harness import postgres as pgd
from tikit import settings
from tikit.conf.pgbouncer import POOL_MODE
from tikit.conf.postgres import postgres_parameters

THREADS = 2  # pgbench worker threads; more than the CPUs would only add scheduling noise


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def latencies_us(log_dir: Path, prefix: str) -> list[int]:
    """Per-transaction latencies (field 3, microseconds) from pgbench --log files; failed or
    skipped transactions carry a word there instead of a number and are left out."""
    values = []
    for path in log_dir.glob(f"{prefix}.*"):
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                values.append(int(fields[2]))
    return sorted(values)


def run(tier: pgd.PgTier, bin_dir: Path, log_dir: Path, label: str, *, port: int, clients: int,
        duration: int, mode: str) -> dict:
    args = [
        "--no-vacuum",  # pgbench -i already vacuumed; and it could not through a transaction pool
        f"--builtin={mode}",
        f"--client={clients}",
        f"--jobs={THREADS}",
        f"--time={duration}",
        "--log",
        f"--log-prefix={log_dir / label}",
    ]
    result = pgd.run_pgbench(bin_dir, args, port=port, user=tier.app_user,
                             password=tier.passwords[tier.app_user], dbname=tier.database,
                             timeout=duration + 120)
    if result.returncode != 0:
        sys.exit(f"pgbench {label} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
    summary = pgd.parse_pgbench(result.stdout)
    lat = latencies_us(log_dir, label)
    return {
        "label": label,
        "clients": clients,
        "tps": summary["tps"],
        "transactions": len(lat),
        "failed": int(summary.get("failed", 0)),
        "avg_ms": summary["latency_avg_ms"],
        "p50_ms": percentile(lat, 50) / 1000,
        "p95_ms": percentile(lat, 95) / 1000,
        "p99_ms": percentile(lat, 99) / 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stack", default="prod", choices=settings.ENVIRONMENTS)
    parser.add_argument("--duration", type=int, default=15, help="seconds per run")
    parser.add_argument("--mode", default="select-only", choices=("select-only", "simple-update", "tpcb-like"))
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i scale factor")
    args = parser.parse_args()

    missing = pgd.missing_binaries()
    if missing:
        print("missing: " + "; ".join(missing), file=sys.stderr)
        return 2
    bin_dir, bouncer = pgd.pg_bin_dir(), pgd.pgbouncer_bin()
    s = settings.load({}, stack=args.stack)
    params = postgres_parameters(s.postgres, s.derived)
    direct_clients = int(params["max_connections"]) - int(params["superuser_reserved_connections"])
    bouncer_clients = s.pgbouncer.max_client_conn

    template = pgd.PgTemplate(bin_dir)
    log_dir = Path(tempfile.mkdtemp(prefix="tikit-bench-"))
    try:
        with pgd.pg_tier(template, bouncer, s) as tier:
            init = pgd.run_pgbench(bin_dir, ["--initialize", "--quiet", f"--scale={args.scale}"],
                                   port=tier.pg.port, user=tier.app_user,
                                   password=tier.passwords[tier.app_user], dbname=tier.database, timeout=600)
            if init.returncode != 0:
                sys.exit(f"pgbench -i failed:\n{init.stderr[-3000:]}")
            # Direct first: PgBouncer keeps its server connections for server_idle_timeout,
            # and they would take slots the direct run needs.
            results = [
                run(tier, bin_dir, log_dir, "direct", port=tier.pg.port, clients=direct_clients,
                    duration=args.duration, mode=args.mode),
                run(tier, bin_dir, log_dir, "pgbouncer", port=tier.pb.port, clients=bouncer_clients,
                    duration=args.duration, mode=args.mode),
            ]
            bouncer_version = ".".join(map(str, pgd.pgbouncer_version(bouncer)))
    finally:
        template.cleanup()
        shutil.rmtree(log_dir, ignore_errors=True)

    pb = s.pgbouncer
    print(f"stack {args.stack}: pgbench {args.mode}, {args.duration}s per run, scale {args.scale}, "
          f"{THREADS} pgbench threads, {os.cpu_count()} CPUs ({platform.machine()})")
    print(f"PostgreSQL {bin_dir.parent.name} max_connections {params['max_connections']}; "
          f"PgBouncer {bouncer_version} {POOL_MODE} pool {pb.default_pool_size}+{pb.reserve_pool_size}")
    header = f"{'target':<10} {'clients':>7} {'tps':>10} {'txns':>8} {'failed':>6} " \
             f"{'avg ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['label']:<10} {r['clients']:>7} {r['tps']:>10.0f} {r['transactions']:>8} {r['failed']:>6} "
              f"{r['avg_ms']:>8.2f} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
