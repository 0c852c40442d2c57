"""Benchmark what Redis persistence costs (not a test; prints figures).

Starts redis-server twice from the redis.conf that tikit/conf/redis.py renders for a stack
(only port, dir and bind rewritten, the password passed as the pods pass it):

  persistent   the rendered config as is: AOF with appendfsync everysec plus RDB save rules;
  volatile     the same file with persistence off (--appendonly no --save "").

Then runs redis-benchmark against each (SET, LPUSH, GET; pipelined and not) and prints ops/s
for both and their ratio.  Rounds alternate the two servers so drift hits both alike; the
median of the rounds is reported.

Run:  .venv/bin/python bench/redis_bench.py [--stack staging] [--requests 200000] [--rounds 3]

prod renders min-replicas-to-write 1, which refuses writes on a lone server; with --stack prod
the benchmark adds --min-replicas-to-write 0 and says so.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tikit import settings
from tikit.conf import redis as rconf

HOST = "127.0.0.1"
TESTS = ("SET", "LPUSH", "GET")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start(conf: Path, password: str, log: Path, extra: list[str]) -> subprocess.Popen:
    script = f'exec redis-server "$0" {" ".join(rconf.redis_server_args())} "$@"'
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["sh", "-c", script, str(conf), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, rconf.PASSWORD_ENV: password},
            start_new_session=True,
        )
    return proc


def wait_ready(port: int, password: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    env = {**os.environ, "REDISCLI_AUTH": password}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"redis-server on {port} exited with {proc.returncode}")
        done = subprocess.run(["redis-cli", "-h", HOST, "-p", str(port), "PING"], env=env, capture_output=True, text=True)
        if done.stdout.strip() == "PONG":
            return
        time.sleep(0.05)
    raise SystemExit(f"redis-server on {port} did not start")


def benchmark(port: int, password: str, requests: int, pipeline: int, clients: int) -> dict[str, float]:
    args = ["redis-benchmark", "-h", HOST, "-p", str(port), "-a", password, "-t", ",".join(TESTS).lower(),
            "-n", str(requests), "-P", str(pipeline), "-c", str(clients), "--csv"]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    out = {}
    for row in csv.reader(io.StringIO(done.stdout)):
        if len(row) >= 2 and row[0].split()[0] in TESTS:
            out[row[0].split()[0]] = float(row[1])
    missing = set(TESTS) - out.keys()
    if missing:
        raise SystemExit(f"redis-benchmark printed no figure for {missing}:\n{done.stdout}{done.stderr}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stack", default="staging", choices=settings.ENVIRONMENTS)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the data directories go (default: a temp dir)")
    args = ap.parse_args()

    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (scripts/install-system-deps.sh)")
    s = settings.load({}, stack=args.stack)
    password = secrets.token_urlsafe(24)
    extra_all = []
    if rconf.min_replicas_to_write(s.redis):
        extra_all = ["--min-replicas-to-write", "0"]
        print("note: --min-replicas-to-write 0 added (a lone server has no replica to count)")

    root = Path(tempfile.mkdtemp(prefix="redis-bench-", dir=args.dir))
    procs: list[subprocess.Popen] = []
    variants = {"persistent": [], "volatile": ["--appendonly", "no", "--save", ""]}
    ports = {}
    try:
        for name, extra in variants.items():
            data = root / name
            data.mkdir()
            port = free_port()
            conf = root / f"{name}.conf"
            conf.write_text(
                rconf.redis_conf(
                    s.redis, maxmemory_bytes=s.derived.redis_maxmemory_bytes, port=port, dir=str(data), bind=HOST
                )
            )
            proc = start(conf, password, root / f"{name}.log", extra_all + extra)
            procs.append(proc)
            wait_ready(port, password, proc)
            ports[name] = port

        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2].removeprefix("v=")
        fs = subprocess.run(["df", "-T", str(root)], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]
        print(
            f"stack {args.stack}: appendfsync {rconf.APPENDFSYNC}, save {' '.join(rconf.SAVE_RULES)},"
            f" maxmemory {s.derived.redis_maxmemory_bytes} bytes"
        )
        print(
            f"redis {version}, {os.cpu_count()} CPUs, {platform.machine()}, data on {fs};"
            f" {args.requests} requests x {args.rounds} rounds, {args.clients} clients\n"
        )
        print(f"{'pipeline':>8} {'test':<6} {'persistent ops/s':>17} {'volatile ops/s':>15} {'ratio':>6}")
        for pipeline in (16, 1):
            results: dict[str, dict[str, list[float]]] = {n: {t: [] for t in TESTS} for n in variants}
            for _ in range(args.rounds):
                for name in variants:
                    for test, ops in benchmark(ports[name], password, args.requests, pipeline, args.clients).items():
                        results[name][test].append(ops)
            for test in TESTS:
                p = statistics.median(results["persistent"][test])
                v = statistics.median(results["volatile"][test])
                print(f"{pipeline:>8} {test:<6} {p:>17,.0f} {v:>15,.0f} {p / v:>6.2f}")
        aof = sum(f.stat().st_size for f in (root / "persistent").rglob("*") if f.is_file())
        print(f"\npersistent data directory after the run: {aof / 1024**2:.1f} MiB (AOF + RDB)")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
