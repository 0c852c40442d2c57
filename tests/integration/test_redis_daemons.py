"""The Redis tier on real daemons: redis-server runs the text that tikit/conf/redis.py
renders for the cluster, with only the port, the directories and the host names rewritten
(``render_conf`` checks that on every call), and the password passed on the command line the
way the pods pass it.  The backup and restore tests run the real shell scripts, with the
object store pointed at a local directory (STORE=file://...).  Sentinel, failover, the start
protocol and the handover: tests/integration/test_redis_ha.py.

Everything listens on 127.0.0.1 and lives under pytest's tmp_path; every process is killed at
the end of its test, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tikit import names
from tikit import settings
from tikit.conf import redis as rconf
from conftest import require_binary

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
# Percent sign, quotes, backslash, space, '@', ':' and '/': every quoting layer (shell, Redis'
# config parser, sentinel.conf, the URL) has to carry it unchanged.
PASSWORD = 'tik!t p@ss:/"q"\\%41'
START_TIMEOUT = 20.0
BINARIES = ("redis-server", "redis-sentinel", "redis-cli", "redis-check-rdb")


@pytest.fixture(scope="module", autouse=True)
def binaries() -> None:
    for binary in BINARIES:
        require_binary(binary)  # fails under CI=true, skips elsewhere


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def stack(env: str) -> settings.Settings:
    return settings.load({}, stack=env)


# --------------------------------------------------------------------------------------
# Rendering for the tests: only port, dir and host names may differ from production
# --------------------------------------------------------------------------------------

REWRITABLE = {"port", "dir", "bind", "replicaof"}


def render_conf(s: settings.Settings, *, port: int, dir: Path, replica_of: Optional[tuple[str, int]] = None) -> str:
    production = rconf.redis_conf(s.redis, maxmemory_bytes=s.derived.redis_maxmemory_bytes)
    local = rconf.redis_conf(
        s.redis,
        maxmemory_bytes=s.derived.redis_maxmemory_bytes,
        port=port,
        dir=str(dir),
        bind=HOST,
        replica_of=replica_of,
    )
    changed = {k for k, _ in set(rconf.parse_directives(production)) ^ set(rconf.parse_directives(local))}
    assert changed <= REWRITABLE, f"test config differs from production in {changed - REWRITABLE}"
    return local


# --------------------------------------------------------------------------------------
# Process plumbing
# --------------------------------------------------------------------------------------


class Daemons:
    """Starts processes and kills every one of them on close()."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv: Sequence[str], *, log: Path, env: Optional[dict] = None) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def redis(self, conf_text: str, name: str, *extra: str) -> "Server":
        """redis-server started the way the pod starts it: the config file, then the password
        from the environment via redis_server_args(), then per-pod arguments."""
        conf = self.root / f"{name}.conf"
        conf.write_text(conf_text)
        port = int(re.search(r"^port (\d+)$", conf_text, re.M).group(1))
        script = f'exec redis-server "$0" {" ".join(rconf.redis_server_args())} "$@"'
        log = self.root / f"{name}.log"
        proc = self.spawn(["sh", "-c", script, str(conf), *extra], log=log, env={rconf.PASSWORD_ENV: PASSWORD})
        server = Server(proc, port, log)
        server.wait_ready()
        return server

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("decode_responses", True)
        return redis.Redis(host=HOST, port=self.port, password=PASSWORD, socket_timeout=10, **kwargs)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        c = self.client(retry=Retry(NoBackoff(), 0))  # redis-py's default retries back off for seconds
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server on {self.port} exited:\n{self.tail()}")
            with contextlib.suppress(redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                if c.ping() and c.info("persistence")["loading"] == 0:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server on {self.port} not ready in {timeout}s:\n{self.tail()}")
            time.sleep(0.05)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(tmp_path)
    try:
        yield d
    finally:
        d.close()


def bgsave_and_wait(c: redis.Redis, timeout: float = 30.0) -> int:
    """What the backup script does: BGSAVE, then wait for a newer LASTSAVE with status ok."""
    before = int(c.lastsave().timestamp())
    time.sleep(1.05)  # LASTSAVE has one-second resolution
    c.bgsave()
    deadline = time.monotonic() + timeout
    while True:
        info = c.info("persistence")
        if not info["rdb_bgsave_in_progress"] and info["rdb_last_save_time"] > before:
            assert info["rdb_last_bgsave_status"] == "ok"
            return info["rdb_last_save_time"]
        assert time.monotonic() < deadline, "BGSAVE did not finish"
        time.sleep(0.05)


def run_script(text: str, path: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    path.write_text(text)
    return subprocess.run(
        ["sh", str(path)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# --------------------------------------------------------------------------------------
# The rendered file is what runs
# --------------------------------------------------------------------------------------


def _normal(value: str) -> str:
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}
    m = re.fullmatch(r"(\d+)(kb|mb|gb)", value.lower())
    return str(int(m.group(1)) * units[m.group(2)]) if m else value.strip('"')


@pytest.mark.parametrize("env", settings.ENVIRONMENTS)
def test_rendered_config_is_what_runs(env: str, tmp_path: Path, daemons: Daemons) -> None:
    s = stack(env)
    data = tmp_path / "data"
    data.mkdir()
    server = daemons.redis(render_conf(s, port=free_port(), dir=data), "redis")
    c = server.client()
    skip = {"rename-command", "daemonize"}  # not readable through CONFIG GET
    for key, value, _ in rconf.redis_settings(
        s.redis, maxmemory_bytes=s.derived.redis_maxmemory_bytes, port=server.port, dir=str(data), bind=HOST
    ):
        if key in skip:
            continue
        got = c.config_get(key)[key]
        assert got == _normal(str(value)), f"{key}: rendered {value!r}, server runs {got!r}"
    for command in rconf.DISABLED_COMMANDS:
        with pytest.raises(redis.ResponseError, match="unknown command"):
            c.execute_command(command, *(["*"] if command == "KEYS" else []))
    with pytest.raises(redis.ResponseError):
        c.execute_command("DEBUG", "SLEEP", "0")
    # The password is the only way in.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=HOST, port=server.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)).ping()


# --------------------------------------------------------------------------------------
# Durability: kill -9 loses nothing acknowledged 2 s before; the RDB alone restores
# --------------------------------------------------------------------------------------


def test_kill9_keeps_acknowledged_writes_and_rdb_restores(tmp_path: Path, daemons: Daemons) -> None:
    s = stack("staging")  # the persistence settings of every preset; no min-replicas-to-write
    queue = names.JOB_QUEUE
    data = tmp_path / "data"
    data.mkdir()
    conf = render_conf(s, port=free_port(), dir=data)
    server = daemons.redis(conf, "redis")
    c = server.client()

    # Phase 1, then a snapshot: the RDB must hold exactly this.
    n1 = 2000
    pipe = c.pipeline(transaction=False)
    for i in range(n1):
        pipe.rpush(queue, i)
        pipe.set(f"k:{i}", i)
    pipe.set("cache:warm", "1", ex=3600)  # a cache key: TTL, evictable
    pipe.execute()
    saved_at = bgsave_and_wait(c)

    # Phase 2: one client writes as fast as it can and notes when each write was acknowledged.
    acks: list[tuple[int, float]] = []
    stop = threading.Event()

    def writer() -> None:
        w = server.client()
        i = n1
        while not stop.is_set():
            try:
                w.rpush(queue, i)
                w.set(f"k:{i}", i)
            except (redis.ConnectionError, redis.TimeoutError):
                return
            acks.append((i, time.monotonic()))
            i += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(3.5)
    info = c.info("persistence")
    killed_at = time.monotonic()
    server.kill9()
    stop.set()
    thread.join(timeout=10)
    assert acks, "the writer never got an acknowledgement"

    # Keep the snapshot as it was at the crash, before the restart can write a new one.
    rdb_dir = tmp_path / "rdb-only"
    rdb_dir.mkdir()
    shutil.copy2(data / rconf.DBFILENAME, rdb_dir / rconf.DBFILENAME)

    # Same file, same directory: the AOF brings back every acknowledged write.
    server = daemons.redis(conf, "redis-restarted")
    c = server.client()
    items = c.lrange(queue, 0, -1)
    assert items == [str(i) for i in range(len(items))], "the queue came back with gaps or out of order"
    must = [i for i, t in acks if t < killed_at - 2.0]
    assert must and len(items) > max(must), (
        f"queue has {len(items)} entries; entry {max(must)} was acknowledged more than 2 s before kill -9"
    )
    keys = [f"k:{i}" for i in range(n1)] + [f"k:{i}" for i in must]
    missing = [k for k, v in zip(keys, c.mget(keys)) if v is None]
    assert not missing, f"{len(missing)} acknowledged keys lost, e.g. {missing[:5]}"
    assert c.ttl("cache:warm") > 0
    lost_late = sum(1 for i, _ in acks if i >= len(items))
    print(f"\nkill -9 after {len(acks)} acknowledged writes: {lost_late} of the last 2 s lost")

    # The RDB alone, loaded the way the restore runbook does it (AOF off for that start).
    rdb_conf = render_conf(s, port=free_port(), dir=rdb_dir)
    restored = daemons.redis(rdb_conf, "redis-rdb", "--appendonly", "no").client()
    snapshot = restored.lrange(queue, 0, -1)
    if info["rdb_last_save_time"] == saved_at and not info["rdb_bgsave_in_progress"]:
        assert snapshot == [str(i) for i in range(n1)], "the RDB does not hold what was there at BGSAVE"
        assert restored.dbsize() == n1 + 2  # k:0..k:n1-1, the queue, cache:warm
    else:  # a save rule fired in between: the snapshot is a later, still consistent, prefix
        assert snapshot == [str(i) for i in range(len(snapshot))] and len(snapshot) >= n1
    assert all(v is not None for v in restored.mget([f"k:{i}" for i in range(n1)]))


# --------------------------------------------------------------------------------------
# Backup to a (local) store, restore per the runbook, prune by retention
# --------------------------------------------------------------------------------------


def _ts(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


def _scripts(s: settings.Settings, region: str) -> tuple[str, str]:
    kw = dict(region=region, store=f"s3://{s.bucket(region)}", s3_endpoint=s.object_storage.endpoint_url)
    return rconf.backup_script(s.redis, namespace=s.namespace, **kw), rconf.restore_script(s.redis, **kw)


def test_backup_restore_and_prune(tmp_path: Path, daemons: Daemons) -> None:
    s = stack("staging")
    region = s.primary.name
    retention = s.redis.backup_retention_hours
    data = tmp_path / "data"
    data.mkdir()
    server = daemons.redis(render_conf(s, port=free_port(), dir=data), "source")
    c = server.client()
    pipe = c.pipeline(transaction=False)
    for i in range(3000):
        pipe.rpush(names.JOB_QUEUE, f"job-{i}")
        pipe.set(f"k:{i}", f"v{i}")
    pipe.hset("h", mapping={f"f{i}": i for i in range(100)})
    pipe.sadd("set", *range(100))
    pipe.zadd("z", {f"m{i}": i for i in range(100)})
    pipe.xadd("stream", {"event": "x"})
    pipe.set("cache:ttl", "1", ex=7200)
    pipe.execute()
    raw = server.client(decode_responses=False)
    expected = {k: raw.dump(k) for k in raw.scan_iter(count=1000)}

    # The store already holds older backups and things that are not backups at all.
    store = tmp_path / "store"
    base = store / "redis" / region
    now = datetime.now(timezone.utc)
    expired = [_ts(now - timedelta(hours=retention + 1)), "20200101T000000Z"]
    kept = [_ts(now - timedelta(hours=retention - 1)), "README", "2020-01-01"]
    for name in expired + kept:
        (base / name).mkdir(parents=True)
        (base / name / "backup.info").write_text("fake\n")

    backup, restore = _scripts(s, region)
    env = {"STORE": f"file://{store}", "REDISCLI_AUTH": PASSWORD, "REDIS_HOST": HOST,
           "REDIS_PORT": str(server.port), "TMPDIR": str(tmp_path)}
    started = time.monotonic()
    done = run_script(backup, tmp_path / "backup.sh", env)
    assert done.returncode == 0, done.stderr
    print(f"\nbackup took {time.monotonic() - started:.1f}s")
    assert not any((base / name).exists() for name in expired), sorted(os.listdir(base))
    assert all((base / name).exists() for name in kept)
    new = sorted(set(os.listdir(base)) - set(kept))
    assert len(new) == 1 and re.fullmatch(r"\d{8}T\d{6}Z", new[0]), new
    info = dict(line.split("=", 1) for line in (base / new[0] / "backup.info").read_text().splitlines())
    assert int(info["bytes"]) == (base / new[0] / rconf.DBFILENAME).stat().st_size
    assert info["source"] == f"{HOST}:{server.port}"

    # Written after the backup: must not come back.
    c.set("after-backup", "1")
    # A newer but incomplete upload (no backup.info): restore must skip it.
    partial = base / _ts(now + timedelta(minutes=5))
    partial.mkdir()
    (partial / rconf.DBFILENAME).write_bytes(b"not an rdb")

    # Restore onto a volume that already has (stale) data, per the runbook.
    target = tmp_path / "restored"
    (target / rconf.APPENDDIRNAME).mkdir(parents=True)
    (target / rconf.APPENDDIRNAME / "stale").write_text("old")
    restore_port = free_port()
    conf_text = render_conf(s, port=restore_port, dir=target)
    (tmp_path / "restore.conf").write_text(conf_text)
    done = run_script(
        restore,
        tmp_path / "restore.sh",
        {"STORE": f"file://{store}", "DATA_DIR": str(target), "CONF": str(tmp_path / "restore.conf"),
         "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert f"restoring file://{store}/redis/{region}/{new[0]}" in done.stderr
    (aside,) = target.glob("before-restore-*")
    assert (aside / rconf.APPENDDIRNAME / "stale").exists()

    # The pod's normal start (appendonly yes) loads the AOF the restore wrote.
    restored = daemons.redis(conf_text, "restored")
    rc = restored.client(decode_responses=False)
    got = {k: rc.dump(k) for k in rc.scan_iter(count=1000)}
    assert got.keys() == expected.keys()
    assert got == expected
    assert rc.ttl("cache:ttl") > 0
    assert rc.get("after-backup") is None
    assert restored.client().info("persistence")["aof_enabled"] == 1


def test_backup_fails_loudly(tmp_path: Path, daemons: Daemons) -> None:
    s = stack("dev")
    data = tmp_path / "data"
    data.mkdir()
    server = daemons.redis(render_conf(s, port=free_port(), dir=data), "redis")
    backup, _ = _scripts(s, s.primary.name)
    store = tmp_path / "store"
    env = {"STORE": f"file://{store}", "REDIS_HOST": HOST, "REDIS_PORT": str(server.port), "TMPDIR": str(tmp_path)}
    for bad, why in (
        ({"REDISCLI_AUTH": "wrong"}, ""),
        ({"REDISCLI_AUTH": ""}, "REDISCLI_AUTH"),
        ({"REDISCLI_AUTH": PASSWORD, "STORE": "ftp://x"}, "STORE must be"),
    ):
        done = run_script(backup, tmp_path / "backup.sh", {**env, **bad})
        assert done.returncode != 0, (bad, done.stderr)
        assert why in done.stderr
    assert not store.exists() or not any(store.rglob("backup.info"))
