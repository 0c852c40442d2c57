"""Redis high availability on real daemons: three redis-server and three redis-sentinel
processes on 127.0.0.1, each "pod" started by the very scripts tikit/conf/redis.py renders for
prod (start, sentinel start, the preStop handover run under timeout(1) as the manifest runs
it) and stopped the way Kubernetes stops a pod (the hook where the test says so, then SIGTERM).

What may differ from prod, and is checked on every render: the ports, directories and host
names (127.0.0.1 for every stable DNS name); Sentinel's down-after-milliseconds and
failover-timeout, lowered to the settings' minimums (1000 / 5000 ms instead of 5000 /
30000) so failures are noticed in a second; and repl-diskless-sync-delay 0, so a restarted
replica's full sync does not wait 5 s for a second replica that is not coming.  Both only
shorten waits.

Measurements are printed (pytest -s shows them): two-master samples, acknowledged writes
lost, errors and client-visible unavailability.  Every process is killed at the end of its
test, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from tikit import names
from tikit import settings
from tikit.components import redis as rc
from tikit.conf import redis as rconf
from conftest import require_binary

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
N = 3
MASTER = names.REDIS_MASTER_NAME
# Two different secrets with every character a quoting layer could break on (argv,
# REDISCLI_AUTH, sentinel.conf, the URL).
PASSWORD = 'tik!t p@ss:/"q"\\%41'
SENTINEL_PASSWORD = "s3nt!nel \"pw\" \\ %x'"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
# How long a pod is away between its exit and its new container (deletion, re-creation):
# for the primary longer than down-after-milliseconds, as in prod (5 s down-after against
# several seconds of pod turnover); for a replica it only costs time.
PRIMARY_GONE_SECONDS = 2.0
REPLICA_GONE_SECONDS = 0.5
# After redis-0's restart with one sentinel down, watch this long: the defect showed two
# masters from the first second, for 6-20 s.
SPLIT_BRAIN_WINDOW_SECONDS = 8.0
NO_RETRY = Retry(NoBackoff(), 0)
BINARIES = ("redis-server", "redis-sentinel", "redis-cli", "redis-check-rdb", "timeout")


@pytest.fixture(scope="module", autouse=True)
def binaries() -> None:
    for binary in BINARIES:
        require_binary(binary)  # fails under CI=true, skips elsewhere


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(what: str, check: Callable, timeout: float = 20.0, interval: float = 0.05, logs: tuple = ()):
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError, ValueError, TypeError):
            result = check()
            # 0 is a pod index, not a failure; None, False and empty things are.
            if result is not None and result is not False and not (
                isinstance(result, (list, tuple, str, dict)) and len(result) == 0
            ):
                return result
        if time.monotonic() > deadline:
            tails = "\n".join(
                f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]) for p in logs if p.exists()
            )
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------
# Rendering: prod's text, with only what the module docstring lists rewritten (checked)
# --------------------------------------------------------------------------------------

PROD = settings.load({}, stack="prod")
TEST_TIMINGS = PROD.redis.model_copy(update={"down_after_ms": DOWN_AFTER_MS, "failover_timeout_ms": FAILOVER_TIMEOUT_MS})
CONF_REWRITABLE = {"port", "dir", "bind", "repl-diskless-sync-delay"}
SENTINEL_CONF_REWRITABLE = {
    "port", "dir", "bind", "sentinel monitor", "sentinel down-after-milliseconds", "sentinel failover-timeout",
}
# The scripts name every address and path once, in these assignments at the top.
SCRIPT_REWRITABLE = ("SELF", "PORT", "SENTINELS", "PEERS", "BOOTSTRAP", "DATA_DIR", "TEMPLATE", "LIVE_DIR")


def _keys(text: str) -> set[tuple[str, str]]:
    """(directive, value) with Sentinel's two-word directives kept whole."""
    out = set()
    for key, value in rconf.parse_directives(text):
        if key == "sentinel":
            sub, _, value = value.partition(" ")
            key = f"sentinel {sub}"
        out.add((key, value))
    return out


def only_rewritten(production: str, local: str, allowed: set[str]) -> str:
    changed = {k for k, _ in _keys(production) ^ _keys(local)}
    assert changed <= allowed, f"the test config differs from production in {changed - allowed}"
    return local


def only_rewritten_script(production: str, local: str) -> str:
    a, b = production.splitlines(), local.splitlines()
    assert len(a) == len(b), "the test script has other lines than production's"
    for x, y in zip(a, b):
        if x != y:
            name = x.split("=", 1)[0]
            assert name in SCRIPT_REWRITABLE and y.startswith(name + "="), f"test script differs: {x!r} / {y!r}"
    return local


def render_conf(port: int, data: Path) -> str:
    r, mem = PROD.redis, PROD.derived.redis_maxmemory_bytes
    local = rconf.redis_conf(r, maxmemory_bytes=mem, port=port, dir=str(data), bind=HOST)
    local = re.sub(r"^repl-diskless-sync-delay \d+$", "repl-diskless-sync-delay 0", local, flags=re.M)
    return only_rewritten(rconf.redis_conf(r, maxmemory_bytes=mem), local, CONF_REWRITABLE)


def render_sentinel_conf(port: int, live: Path, bootstrap_port: int) -> str:
    production = rconf.sentinel_conf(
        PROD.redis, primary_host=rconf.bootstrap_primary_host(PROD.namespace), primary_port=names.REDIS_PORT
    )
    local = rconf.sentinel_conf(
        TEST_TIMINGS, primary_host=HOST, primary_port=bootstrap_port, port=port, dir=str(live), bind=HOST
    )
    return only_rewritten(production, local, SENTINEL_CONF_REWRITABLE)


# --------------------------------------------------------------------------------------
# The cluster: pods as process groups
# --------------------------------------------------------------------------------------


class Pod:
    def __init__(self, kind: str, index: int, port: int, root: Path) -> None:
        self.kind, self.index, self.port = kind, index, port
        self.name = f"{kind}-{index}"
        self.dir = root / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.live = self.dir / "live"
        self.log = root / f"{self.name}.log"
        self.proc: Optional[subprocess.Popen] = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        ports = free_ports(2 * N)
        self.redis = [Pod("redis", i, ports[i], root) for i in range(N)]
        self.sentinels = [Pod("sentinel", i, ports[N + i], root) for i in range(N)]
        sentinel_addrs = [(HOST, s.port) for s in self.sentinels]
        peer_addrs = [(HOST, p.port) for p in self.redis]
        ns = PROD.namespace
        for pod in self.redis:
            (pod.dir / "data").mkdir(exist_ok=True)
            (pod.dir / "redis.conf").write_text(render_conf(pod.port, pod.dir / "data"))
            where = dict(port=pod.port, announce_host=HOST, sentinels=sentinel_addrs)
            (pod.dir / "start.sh").write_text(only_rewritten_script(
                rconf.redis_start_script(PROD.redis, namespace=ns),
                rconf.redis_start_script(
                    PROD.redis, namespace=ns, **where, peers=peer_addrs, data_dir=str(pod.dir / "data"),
                    template=str(pod.dir / "redis.conf"), live_dir=str(pod.live),
                ),
            ))
            (pod.dir / rc.HANDOVER_KEY).write_text(only_rewritten_script(
                rconf.handover_script(PROD.redis, namespace=ns), rconf.handover_script(PROD.redis, namespace=ns, **where)
            ))
        for s in self.sentinels:
            (s.dir / "sentinel.conf").write_text(render_sentinel_conf(s.port, s.live, self.redis[0].port))
            (s.dir / "start.sh").write_text(only_rewritten_script(
                rconf.sentinel_start_script(PROD.redis, namespace=ns),
                rconf.sentinel_start_script(
                    PROD.redis, namespace=ns, port=s.port, announce_host=HOST, sentinels=sentinel_addrs,
                    peers=peer_addrs, template=str(s.dir / "sentinel.conf"), live_dir=str(s.live),
                ),
            ))

    def env(self) -> dict[str, str]:
        """What the pods get from their Secrets."""
        return {**os.environ, rconf.PASSWORD_ENV: PASSWORD, rconf.SENTINEL_PASSWORD_ENV: SENTINEL_PASSWORD}

    def _spawn(self, pod: Pod, script: Path, extra_env: Optional[dict[str, str]] = None) -> None:
        assert not pod.running(), f"{pod.name} is already running"
        with open(pod.log, "ab") as out:
            out.write(f"==== start {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            pod.proc = subprocess.Popen(
                ["sh", str(script)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**self.env(), **(extra_env or {})}, start_new_session=True,
            )

    def start_redis(self, i: int) -> None:
        self._spawn(self.redis[i], self.redis[i].dir / "start.sh")

    def start_sentinel(self, i: int, **extra_env: str) -> None:
        # emptyDir: a re-created sentinel pod starts without its old config.
        if self.sentinels[i].live.exists():
            for f in self.sentinels[i].live.iterdir():
                f.unlink()
        self._spawn(self.sentinels[i], self.sentinels[i].dir / "start.sh", extra_env)

    def stop(self, pod: Pod, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Signal the container's main process (redis-server / redis-sentinel after exec),
        wait for it, then remove what is left of the pod (the start script's agent)."""
        if pod.proc is None:
            return
        if pod.proc.poll() is None:
            # Redis 7.0 ignores a SIGTERM that arrives while it writes the initial AOF after a
            # full sync ("Writing initial AOF, can't exit."); the kubelet would SIGKILL it
            # after the grace period (the AOF survives that).  Here: ask again.
            deadline = time.monotonic() + timeout
            while pod.proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pod.proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    pod.proc.wait(timeout=1.0)
            if pod.proc.poll() is None:
                pod.proc.kill()
                pod.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pod.proc.pid, signal.SIGKILL)
        pod.proc = None

    def close(self) -> None:
        for pod in self.redis + self.sentinels:
            if pod.proc is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pod.proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    pod.proc.wait(timeout=10)

    # ---- clients ----
    def rc(self, i: int, timeout: float = 1.0, db: int = 0) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.redis[i].port, password=PASSWORD, db=db, socket_timeout=timeout,
                           socket_connect_timeout=timeout, decode_responses=True, retry=NO_RETRY)

    def sc(self, i: int, password: Optional[str] = SENTINEL_PASSWORD) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.sentinels[i].port, password=password, socket_timeout=1,
                           socket_connect_timeout=1, decode_responses=True, retry=NO_RETRY)

    def app_env(self) -> dict[str, str]:
        """The app-redis Secret, as the component builds it, with this cluster's sentinels."""
        sentinels = [(HOST, s.port) for s in self.sentinels]
        return {
            names.REDIS_URL: rconf.redis_url(PASSWORD, sentinels=sentinels, sentinel_password=SENTINEL_PASSWORD),
            names.REDIS_PASSWORD: PASSWORD,
            names.REDIS_SENTINELS: rconf.sentinel_list(sentinels),
            names.REDIS_SENTINEL_MASTER: MASTER,
            names.REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD,
        }

    def role(self, i: int) -> Optional[str]:
        try:
            return self.rc(i, 0.3).execute_command("ROLE")[0]
        except (redis.RedisError, OSError):
            return None

    def ready(self, i: int) -> bool:
        """The readiness probe's rule: PONG, and a primary or an in-sync replica."""
        c = self.rc(i, 0.5)
        if c.ping() is not True:
            return False
        info = c.info("replication")
        if info["role"] == "master":
            return True
        return info.get("master_link_status") == "up" and info.get("master_sync_in_progress") == 0

    def wait_ready(self, i: int, timeout: float = 30.0) -> float:
        started = time.monotonic()
        wait_for(f"redis-{i} ready", lambda: self.ready(i), timeout, logs=(self.redis[i].log,))
        return time.monotonic() - started

    def named_by_sentinels(self) -> list[Optional[int]]:
        """Which data pod each sentinel names (index), None when it does not answer."""
        out: list[Optional[int]] = []
        for i in range(N):
            try:
                _, port = self.sc(i).execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
                out.append(next((p.index for p in self.redis if p.port == int(port)), -1))
            except (redis.RedisError, OSError, TypeError, ValueError):
                out.append(None)
        return out

    def quorum_primary(self) -> Optional[int]:
        named = [x for x in self.named_by_sentinels() if x is not None]
        for x in set(named):
            if named.count(x) >= rconf.sentinel_agreement(PROD.redis):
                return x
        return None

    def settled(self, primary: int) -> bool:
        """A quorum names `primary`, it is master with every running replica online, and every
        running data pod is ready."""
        if self.quorum_primary() != primary:
            return False
        info = self.rc(primary).info("replication")
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v["state"] == "online"]
        if info["role"] != "master" or len(online) != sum(p.running() for p in self.redis) - 1:
            return False
        return all(self.ready(i) for i, p in enumerate(self.redis) if p.running())

    def healthy(self, primary: int) -> bool:
        """settled(), and every running sentinel knows its peers and sees every running replica
        as promotable (its own cached view): what an elected failover needs."""
        if not self.settled(primary):
            return False
        for i, s in enumerate(self.sentinels):
            if not s.running():
                continue
            m = self.sc(i).sentinel_master(MASTER)
            if m["flags"] != "master" or m["num-other-sentinels"] != sum(x.running() for x in self.sentinels) - 1:
                return False
            view = {int(r["port"]): r for r in self.sc(i).sentinel_slaves(MASTER)}
            for j, p in enumerate(self.redis):
                if j == primary or not p.running():
                    continue
                r = view.get(p.port)
                if r is None or r["flags"] != "slave" or r["master-link-status"] != "ok" \
                        or int(r["slave-priority"]) != rconf.REPLICA_PRIORITY:
                    return False
        return True

    def start_all(self, full: bool = True) -> float:
        """First deploy: every pod at once, in any order (podManagementPolicy: Parallel),
        empty volumes.  full: until the sentinels know each other and every replica."""
        started = time.monotonic()
        order = [("r", i) for i in range(N)] + [("s", i) for i in range(N)]
        random.shuffle(order)
        for kind, i in order:
            (self.start_redis if kind == "r" else self.start_sentinel)(i)
        logs = tuple(p.log for p in self.redis + self.sentinels)
        primary = wait_for("a sentinel quorum", self.quorum_primary, 30, logs=logs)
        assert primary == 0, "first deploy: ordinal 0 is the primary of an empty set"
        check = self.healthy if full else self.settled
        wait_for("a healthy set", lambda: check(primary), 30, logs=logs)
        return time.monotonic() - started

    def run_handover(self, i: int) -> tuple[float, str]:
        """The data pod's preStop hook, exactly as the manifest runs it (timeout(1) and the
        deadline from handover_hook()), on this pod's rendered script."""
        command = rc.handover_hook()["preStop"]["exec"]["command"]
        command = command[:-1] + [str(self.redis[i].dir / rc.HANDOVER_KEY)]
        started = time.monotonic()
        done = subprocess.run(command, env=self.env(), capture_output=True, text=True,
                              timeout=rconf.HANDOVER_DEADLINE_SECONDS + 10, stdin=subprocess.DEVNULL)
        elapsed = time.monotonic() - started
        with open(self.redis[i].log, "a") as f:
            f.write(done.stderr)
        assert done.returncode == 0, done.stderr
        return elapsed, done.stderr

    def failover_to(self, target: int) -> None:
        """A handover from the current primary to `target`: the other replica is stopped
        meanwhile, so Sentinel has one candidate, and restarted afterwards."""
        primary = self.quorum_primary()
        assert primary is not None and primary != target
        others = [i for i in range(N) if i not in (primary, target)]
        for i in others:
            self.stop(self.redis[i])

        def excluded() -> bool:
            for j, s in enumerate(self.sentinels):
                if s.running():
                    view = {int(r["port"]): r["flags"] for r in self.sc(j).sentinel_slaves(MASTER)}
                    if any("disconnected" not in view.get(self.redis[i].port, "disconnected") for i in others):
                        return False
            return True

        wait_for("the sentinels to drop the other replicas", excluded, 10)
        _, log = self.run_handover(primary)
        assert "handover done" in log, log
        wait_for(f"redis-{target} named by a quorum", lambda: self.quorum_primary() == target, 20)
        for i in others:
            self.start_redis(i)
        wait_for(f"redis-{target} settled as primary", lambda: self.settled(target), 30,
                 logs=tuple(p.log for p in self.redis))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


# --------------------------------------------------------------------------------------
# Observers: every data pod's role, and writers that record acknowledged writes
# --------------------------------------------------------------------------------------


class RoleSampler(threading.Thread):
    """ROLE on every data pod every `interval` seconds; a sample with two or more masters
    is a split brain."""

    def __init__(self, cluster: Cluster, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.samples: list[tuple[float, tuple]] = []
        self.clients = [cluster.rc(i, 0.2) for i in range(N)]

    def run(self) -> None:
        while not self.stop_event.is_set():
            roles = []
            for c in self.clients:
                try:
                    roles.append(c.execute_command("ROLE")[0])
                except (redis.RedisError, OSError):
                    roles.append(None)
            self.samples.append((time.monotonic(), tuple(roles)))
            time.sleep(self.interval)

    def finish(self) -> dict:
        self.stop_event.set()
        self.join(timeout=5)
        double = [r for _, r in self.samples if r.count("master") >= 2]
        return {"samples": len(self.samples), "two_masters": len(double), "examples": double[:3]}


class AddrByName:
    """Discovery the way ioredis (the Node.js apps' client) does it, from REDIS_SENTINELS,
    REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD and REDIS_PASSWORD: SENTINEL
    get-master-addr-by-name on each sentinel in turn, the first answer wins, and any error
    makes the next command ask again."""

    def __init__(self, env: dict[str, str]) -> None:
        self.sentinels = rconf.parse_sentinel_list(env[names.REDIS_SENTINELS])
        self.master, self.env = env[names.REDIS_SENTINEL_MASTER], env
        self.conn: Optional[redis.Redis] = None

    def pipeline(self, transaction: bool = True):
        if self.conn is None:
            for host, port in self.sentinels:
                try:
                    s = redis.Redis(host=host, port=port, password=self.env[names.REDIS_SENTINEL_PASSWORD],
                                    socket_timeout=0.5, socket_connect_timeout=0.5, decode_responses=True, retry=NO_RETRY)
                    addr, addr_port = s.execute_command("SENTINEL", "get-master-addr-by-name", self.master)
                except (redis.RedisError, OSError, TypeError, ValueError):
                    continue
                self.conn = redis.Redis(host=addr, port=int(addr_port), password=self.env[names.REDIS_PASSWORD],
                                        socket_timeout=1.0, socket_connect_timeout=0.5, decode_responses=True,
                                        retry=NO_RETRY)
                break
            else:
                raise redis.ConnectionError("no sentinel answered")
        return self.conn.pipeline(transaction=transaction)

    def failed(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def url_client(env: dict[str, str]) -> redis.Redis:
    """A Sentinel-aware redis-py client built from REDIS_URL alone."""
    t = rconf.parse_redis_url(env[names.REDIS_URL])
    sentinel = Sentinel(
        list(t.sentinels),
        sentinel_kwargs={"password": t.sentinel_password, "socket_timeout": 0.5, "socket_connect_timeout": 0.5,
                         "retry": NO_RETRY},
        socket_timeout=1.0, socket_connect_timeout=0.5, retry=NO_RETRY,
    )
    return sentinel.master_for(t.master_name, db=t.db, password=t.password, decode_responses=True)


class Writer(threading.Thread):
    """The app: MULTI INCR / RPUSH <i> / EXEC in a loop, recording every acknowledged and
    every failed attempt, with no retries of its own.  client: "url" (redis-py from
    REDIS_URL) or "parts" (as ioredis, from the parts)."""

    def __init__(self, cluster: Cluster, client: str, pause: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.pause, self.client = pause, client
        self.ctr, self.queue = f"ha:ctr:{client}", f"ha:q:{client}"
        env = cluster.app_env()
        self.master = url_client(env) if client == "url" else AddrByName(env)
        self.stop_event = threading.Event()
        self.acked: list[tuple[int, int, float]] = []  # (i, INCR result, ack time)
        self.errors: list[tuple[int, float, str]] = []

    def run(self) -> None:
        i = 0
        while not self.stop_event.is_set():
            i += 1
            try:
                pipe = self.master.pipeline(transaction=True)
                pipe.incr(self.ctr)
                pipe.rpush(self.queue, i)
                value, _ = pipe.execute()
                self.acked.append((i, int(value), time.monotonic()))
            except Exception as e:  # noqa: BLE001 - every failure is an unacknowledged write
                self.errors.append((i, time.monotonic(), type(e).__name__))
                if isinstance(self.master, AddrByName):
                    self.master.failed()
                time.sleep(0.01)
            time.sleep(self.pause)

    def finish(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)

    def verify(self, c: redis.Redis) -> dict:
        """What was acknowledged against what the primary holds now."""
        present = set(c.lrange(self.queue, 0, -1))
        lost = [i for i, _, _ in self.acked if str(i) not in present]
        values = [v for _, v, _ in self.acked]
        # A lost INCR shows as a later acknowledged INCR that returns a value already returned.
        rewound = sum(1 for a, b in zip(values, values[1:]) if b <= a)
        return {"acked": len(self.acked), "errored": len(self.errors), "lost": len(lost), "lost_examples": lost[:5],
                "incr_rewound": rewound}

    def unavailability(self, start: float, end: float, gap: float = 0.25) -> dict:
        """Seconds without an acknowledgement, summing the gaps longer than `gap`."""
        times = [start] + [t for _, _, t in self.acked if start <= t <= end] + [end]
        gaps = [b - a for a, b in zip(times, times[1:])]
        kinds: dict[str, int] = {}
        for _, t, kind in self.errors:
            if start <= t <= end:
                kinds[kind] = kinds.get(kind, 0) + 1
        return {"unavailable_s": round(sum(g for g in gaps if g > gap), 2), "longest_gap_s": round(max(gaps), 2),
                "errors": kinds}


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


def test_sentinel_refuses_clients_without_its_password(cluster: Cluster) -> None:
    boot = cluster.start_all()
    with pytest.raises(redis.AuthenticationError):
        cluster.sc(0, password=None).ping()
    with pytest.raises(redis.AuthenticationError):
        cluster.sc(0, password="wrong").ping()
    with pytest.raises(redis.AuthenticationError):  # the data password is not the sentinels'
        cluster.sc(0, password=PASSWORD).ping()
    assert cluster.sc(0).ping() is True
    # redis-cli, as the scripts and probes call it: REDISCLI_AUTH or nothing.
    base = ["redis-cli", "-h", HOST, "-p", str(cluster.sentinels[0].port), "--raw"]
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    no_auth = subprocess.run([*base, "SENTINEL", "get-master-addr-by-name", MASTER], capture_output=True, text=True,
                             env=env, timeout=5)
    assert "NOAUTH" in no_auth.stdout + no_auth.stderr
    with_env = subprocess.run([*base, "SENTINEL", "get-master-addr-by-name", MASTER], capture_output=True, text=True,
                              env={**env, "REDISCLI_AUTH": SENTINEL_PASSWORD}, timeout=5)
    assert with_env.stdout.split() == [HOST, str(cluster.redis[0].port)], with_env
    # The sentinel probes of the manifests authenticate with SENTINEL_PASSWORD.
    port = cluster.sentinels[0].port
    for command in (rc.sentinel_liveness_command(port), rc.sentinel_readiness_command(port)):
        ok = subprocess.run(command, env={**env, rconf.SENTINEL_PASSWORD_ENV: SENTINEL_PASSWORD},
                            capture_output=True, text=True, timeout=10)
        assert ok.returncode == 0, ok.stdout
        refused = subprocess.run(command, env={**env, rconf.SENTINEL_PASSWORD_ENV: ""}, capture_output=True,
                                 text=True, timeout=10)
        assert refused.returncode == 1
    # The written config: private, protected mode on, the passwords, quoted.
    conf = cluster.sentinels[0].live / rconf.SENTINEL_CONF
    assert oct(conf.stat().st_mode & 0o777) == "0o600"
    text = conf.read_text()
    assert "protected-mode yes" in text and "sentinel sentinel-pass" in text and "sentinel auth-pass" in text
    # The sentinels authenticated to each other (a wrong sentinel-pass leaves a peer s_down):
    # every link is up and answers PINGs.
    def links_up() -> bool:
        for i in range(N):
            peers = cluster.sc(i).sentinel_sentinels(MASTER)
            if len(peers) != N - 1 or any(p["flags"] != "sentinel" or int(p["last-ok-ping-reply"]) > 3000 for p in peers):
                return False
        return True

    wait_for("authenticated links between the sentinels", links_up, 10)
    print(f"\nsentinel auth: first deploy healthy after {boot:.1f}s; NOAUTH without the password, WRONGPASS with"
          " the data password")


def test_no_split_brain_when_a_sentinel_is_down(cluster: Cluster) -> None:
    """The issue's reproduction: after a failover to redis-1, with the first sentinel down, a
    restarted redis-0 must come back as redis-1's replica, never as a second master."""
    cluster.start_all(full=False)
    cluster.failover_to(1)
    cluster.stop(cluster.sentinels[0])
    cluster.stop(cluster.redis[0])
    sampler = RoleSampler(cluster)
    sampler.start()
    cluster.start_redis(0)
    ready_after = cluster.wait_ready(0)
    time.sleep(SPLIT_BRAIN_WINDOW_SECONDS)
    stats = sampler.finish()
    info = cluster.rc(0).info("replication")
    print(f"\nsplit brain (sentinel-0 down, redis-0 restarted after a failover to redis-1): {stats['samples']}"
          f" samples of ROLE on every pod, {stats['two_masters']} with two masters; redis-0 ready as a replica"
          f" after {ready_after:.1f}s")
    assert stats["two_masters"] == 0, stats
    assert info["role"] == "slave" and info["master_port"] == cluster.redis[1].port, info
    assert cluster.role(1) == "master"
    assert f"role: replica of {HOST}:{cluster.redis[1].port}" in cluster.redis[0].log.read_text()


def test_a_pod_waits_as_a_standby_without_a_sentinel_quorum(cluster: Cluster) -> None:
    """Two sentinels of three down: a restarting data pod takes no role.  It waits as a
    standby, alive for the liveness probe, not ready, refusing writes, and becomes a
    replica as soon as a second sentinel is back."""
    cluster.start_all(full=False)
    cluster.failover_to(1)
    cluster.stop(cluster.redis[0])
    cluster.stop(cluster.sentinels[1])
    cluster.stop(cluster.sentinels[2])
    sampler = RoleSampler(cluster)
    sampler.start()
    cluster.start_redis(0)
    c = cluster.rc(0)
    wait_for("redis-0 up as a standby", lambda: c.execute_command("ROLE")[0] == "slave", 10)
    port = cluster.redis[0].port
    env = {**os.environ, rconf.PASSWORD_ENV: PASSWORD}
    seen = set()
    # 2 s: shorter than failover-timeout, after which the lone sentinel may re-point a known
    # replica itself (+fix-slave-config, a replica role: still safe, but not this test's case).
    for _ in range(10):
        info = c.info("replication")
        seen.add((info["role"], info["master_port"], info["slave_priority"]))
        # The manifests' probes on it: alive (never restarted for waiting), not ready.
        assert subprocess.run(rc.liveness_command(port), env=env, capture_output=True, timeout=10).returncode == 0
        assert subprocess.run(rc.readiness_command(port), env=env, capture_output=True, timeout=10).returncode == 1
        time.sleep(0.2)
    assert seen == {("slave", 0, 0)}, seen
    with pytest.raises(redis.ReadOnlyError):
        c.set("standby-write", "1")
    returned = time.monotonic()
    cluster.start_sentinel(1)
    cluster.wait_ready(0)
    took = time.monotonic() - returned
    stats = sampler.finish()
    info = c.info("replication")
    print(f"\nno sentinel quorum: redis-0 waited as a standby; a replica of redis-1 {took:.1f}s after a second"
          f" sentinel returned; {stats['two_masters']} of {stats['samples']} samples with two masters")
    assert info["role"] == "slave" and info["master_port"] == cluster.redis[1].port
    assert stats["two_masters"] == 0, stats
    assert "standby, waiting: no sentinel quorum" in cluster.redis[0].log.read_text()


def test_rolling_restart_with_the_handover_loses_no_acknowledged_write(cluster: Cluster) -> None:
    """StatefulSet RollingUpdate order (highest ordinal first, the primary redis-0 last): each
    pod runs its preStop hook, gets SIGTERM, is away for a moment and starts again with the
    rendered start script.  Two clients write all along, one built from REDIS_URL, one from
    the parts as ioredis takes them."""
    cluster.start_all(full=True)
    writers = {kind: Writer(cluster, kind) for kind in ("url", "parts")}
    for w in writers.values():
        w.start()
    sampler = RoleSampler(cluster)
    sampler.start()
    time.sleep(0.5)
    start = time.monotonic()
    steps = []
    for i in reversed(range(N)):
        was = cluster.role(i)
        hook, log = cluster.run_handover(i)
        if was == "master":
            assert "handover done" in log, log
        t = time.monotonic()
        cluster.stop(cluster.redis[i])
        stopped = time.monotonic() - t
        time.sleep(PRIMARY_GONE_SECONDS if was == "master" else REPLICA_GONE_SECONDS)
        cluster.start_redis(i)
        ready = cluster.wait_ready(i, 60)
        steps.append(f"redis-{i} ({was}): hook {hook:.2f}s, exit {stopped:.2f}s, ready {ready:.2f}s, now {cluster.role(i)}")
    end = time.monotonic()
    time.sleep(1.0)
    for w in writers.values():
        w.finish()
    roles = sampler.finish()
    primary = wait_for("a settled set", lambda: (q := cluster.quorum_primary()) is not None and cluster.settled(q) and q, 30)
    results = {kind: {**w.verify(cluster.rc(primary)), **w.unavailability(start, end)} for kind, w in writers.items()}
    print(f"\nrolling restart 2 -> 1 -> 0 with the handover: {end - start:.1f}s, primary now redis-{primary},"
          f" {roles['two_masters']} of {roles['samples']} samples with two masters")
    for kind, r in results.items():
        print(f"   {kind} client: {r}")
    for s in steps:
        print(f"   {s}")
    assert primary != 0, "the primary handed over"
    for kind, r in results.items():
        assert r["acked"] > 0, kind
        assert r["lost"] == 0 and r["incr_rewound"] == 0, (kind, r)
    assert roles["two_masters"] == 0, roles


def test_full_restart_keeps_the_newest_primary(cluster: Cluster) -> None:
    """Every process dies at once (kill -9) while a client writes; redis-1 was the primary
    (after a failover), and the sentinels' template still names redis-0.  Everything starts
    again together: the sentinels must pick redis-1 by its HA stamp, no acknowledged write
    may be missing, and no ordinal-0 bootstrap may happen on a set that holds data."""
    cluster.start_all(full=False)
    cluster.failover_to(1)
    writer = Writer(cluster, "url")
    writer.start()
    time.sleep(1.5)
    for pod in cluster.redis + cluster.sentinels:
        os.killpg(pod.proc.pid, signal.SIGKILL)
    for pod in cluster.redis + cluster.sentinels:
        pod.proc.wait(timeout=10)
        pod.proc = None
    writer.finish()
    sampler = RoleSampler(cluster)
    sampler.start()
    restart = time.monotonic()
    order = [("r", i) for i in range(N)] + [("s", i) for i in range(N)]
    random.shuffle(order)
    for kind, i in order:
        (cluster.start_redis if kind == "r" else cluster.start_sentinel)(i)
    logs = tuple(p.log for p in cluster.redis + cluster.sentinels)
    primary = wait_for("a quorum primary after the full restart", cluster.quorum_primary, 30, logs=logs)
    wait_for("a settled set", lambda: cluster.settled(primary), 30, logs=logs)
    back_after = time.monotonic() - restart
    time.sleep(1)
    roles = sampler.finish()
    verdict = writer.verify(cluster.rc(primary))
    stamp = cluster.rc(primary, db=rconf.STAMP_DB).get(rconf.STAMP_KEY)
    print(f"\nfull restart: redis-{primary} primary again after {back_after:.1f}s (stamp {stamp!r}); {verdict};"
          f" {roles['two_masters']} of {roles['samples']} samples with two masters")
    assert primary == 1, [p.log.read_text()[-2000:] for p in cluster.sentinels]
    assert verdict["acked"] > 0 and verdict["lost"] == 0 and verdict["incr_rewound"] == 0, verdict
    assert roles["two_masters"] == 0, roles
    assert stamp.split()[2] == f"{HOST}:{cluster.redis[1].port}"
    assert "bootstrap" not in cluster.redis[0].log.read_text().split("==== start")[-1]


def test_failover_clients_backup_and_restarts_through_authenticated_sentinels(cluster: Cluster, tmp_path: Path) -> None:
    """kill -9 of the primary: Sentinel promotes a replica within down-after +
    failover-timeout; the apps' clients (REDIS_URL, and the parts) follow; the old primary's
    pod comes back as a replica with the new writes; a re-created sentinel follows its
    peers; the backup script asks Sentinel (with its password) for an in-sync replica."""
    cluster.start_all(full=True)
    env = cluster.app_env()
    app = url_client(env)
    queue = names.JOB_QUEUE
    pipe = app.pipeline(transaction=False)
    for i in range(500):
        pipe.rpush(queue, i)
    pipe.execute()
    assert app.execute_command("WAIT", N - 1, 10000) == N - 1

    budget = (DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS) / 1000
    killed_at = time.monotonic()
    cluster.stop(cluster.redis[0], signal.SIGKILL)
    promoted = wait_for("a promotion", lambda: (q := cluster.quorum_primary()) not in (None, 0) and q, budget)
    promoted_after = time.monotonic() - killed_at
    assert cluster.role(promoted) == "master"
    # Writes resume through the same client (NOREPLICAS until the other replica follows).
    wait_for("writes to resume", lambda: app.rpush(queue, "after-failover"), budget)
    resumed_after = time.monotonic() - killed_at
    print(f"\nkill -9 of the primary: promoted after {promoted_after:.1f}s, writes resumed after {resumed_after:.1f}s"
          f" (budget {budget:.0f}s)")
    items = app.lrange(queue, 0, -1)
    assert items[:500] == [str(i) for i in range(500)] and items[-1] == "after-failover"
    # The parts, as ioredis takes them, find the same primary.
    parts = AddrByName(env)
    pipe = parts.pipeline()
    pipe.lrange(queue, -1, -1)
    assert pipe.execute() == [["after-failover"]]

    # A sentinel pod re-created now (empty config, template naming redis-0) follows its peers.
    cluster.stop(cluster.sentinels[2], signal.SIGKILL)
    cluster.start_sentinel(2)
    wait_for("the re-created sentinel to name the new primary", lambda: cluster.named_by_sentinels()[2] == promoted, 20,
             logs=(cluster.sentinels[2].log,))
    # The old primary's pod comes back as the new primary's replica, with the new writes.
    cluster.start_redis(0)
    cluster.wait_ready(0)
    info = cluster.rc(0).info("replication")
    assert info["role"] == "slave" and info["master_port"] == cluster.redis[promoted].port
    wait_for("redis-0 to catch up", lambda: cluster.rc(0).lrange(queue, -1, -1) == ["after-failover"], 30)

    # The backup script asks Sentinel, with its password, and backs up an in-sync replica:
    # once the sentinel it asks has seen one (it refreshes a replica's state every 10 s; the
    # script falls back to the primary before that, which is not what this checks).
    wait_for("sentinel-1 to see an in-sync replica", lambda: [
        r for r in cluster.sc(1).sentinel_slaves(MASTER) if r["flags"] == "slave" and r["master-link-status"] == "ok"
    ], 20)
    store = tmp_path / "store"
    script = tmp_path / "backup.sh"
    script.write_text(rconf.backup_script(PROD.redis, namespace=PROD.namespace, region="lagos", store="s3://unused",
                                          s3_endpoint=PROD.object_storage.endpoint_url))
    base = {**os.environ, "STORE": f"file://{store}", "SENTINEL_HOST": HOST, "SENTINEL_PORT": str(cluster.sentinels[1].port),
            "REDISCLI_AUTH": PASSWORD, "TMPDIR": str(tmp_path)}
    refused = subprocess.run(["sh", str(script)], env={**base, rconf.SENTINEL_PASSWORD_ENV: "wrong"},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "knows the primary" in refused.stderr, refused.stderr
    done = subprocess.run(["sh", str(script)], env={**base, rconf.SENTINEL_PASSWORD_ENV: SENTINEL_PASSWORD},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (backup_info,) = (store / "redis" / "lagos").glob("*/backup.info")
    source = int(re.search(r"^source=127\.0\.0\.1:(\d+)$", backup_info.read_text(), re.M).group(1))
    ports = [p.port for p in cluster.redis]
    assert source in ports and source != cluster.redis[promoted].port, "the backup should come from a replica"
    # ...so no sentinel learned the redis-cli --rdb connection as a (phantom, port 0) replica.
    time.sleep(1)
    for i in range(N):
        known = cluster.sc(i).sentinel_slaves(MASTER)
        assert sorted(int(k["port"]) for k in known) == sorted(p for p in ports if p != cluster.redis[promoted].port), known


def test_restore_runbook_names_the_primary_for_the_sentinels(cluster: Cluster) -> None:
    """docs/runbooks/redis-restore.md, steps 5-7 with Sentinel: redis-0 holds the data to
    keep, older than what the other two pods hold.  Started alone it waits as a standby; the
    sentinels, started with FORCE_PRIMARY, name it and it becomes primary; the other pods come
    back as its replicas and resync from it; without the override the sentinels still agree."""
    cluster.start_all(full=False)
    cluster.failover_to(1)
    primary = cluster.rc(1)
    primary.set("kept", "1")
    assert primary.execute_command("WAIT", N - 1, 5000) == N - 1
    cluster.stop(cluster.redis[0])
    primary.set("newer-than-the-restore", "1")
    for pod in cluster.sentinels + cluster.redis[1:]:
        cluster.stop(pod)
    sampler = RoleSampler(cluster)
    sampler.start()
    # 5. redis-0 alone: its volume holds data, no sentinel answers: it waits.
    cluster.start_redis(0)
    wait_for("redis-0 waiting as a standby", lambda: "standby, waiting" in cluster.redis[0].log.read_text(), 15)
    assert not cluster.ready(0) and cluster.role(0) == "slave"
    # 6. The sentinels, told which pod is the primary.
    force = {"FORCE_PRIMARY": f"{HOST}:{cluster.redis[0].port}"}
    for i in range(N):
        cluster.start_sentinel(i, **force)
    wait_for("redis-0 primary", lambda: cluster.role(0) == "master" and cluster.ready(0), 20,
             logs=(cluster.redis[0].log,))
    # 7. The other pods follow the sentinels and resync from redis-0; then the override goes,
    #    one sentinel at a time.
    for i in (1, 2):
        cluster.start_redis(i)
    wait_for("a set settled on redis-0", lambda: cluster.settled(0), 30, logs=tuple(p.log for p in cluster.redis))
    for i in range(N):
        cluster.stop(cluster.sentinels[i])
        cluster.start_sentinel(i)
        wait_for(f"sentinel-{i} without the override", lambda: cluster.named_by_sentinels()[i] == 0, 20,
                 logs=(cluster.sentinels[i].log,))
    roles = sampler.finish()
    print(f"\nrestore runbook with FORCE_PRIMARY: {roles['two_masters']} of {roles['samples']} samples with two masters")
    assert cluster.settled(0)
    for i in range(N):
        c = cluster.rc(i)
        assert c.get("kept") == "1" and c.get("newer-than-the-restore") is None, i
    assert roles["two_masters"] == 0, roles
    assert "other sentinels name it" in cluster.sentinels[2].log.read_text().split("==== start")[-1]
