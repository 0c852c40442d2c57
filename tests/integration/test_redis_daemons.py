"""The Redis tier on real daemons: redis-server and redis-sentinel run the text that
tikit/conf/redis.py renders for the cluster, with only the port, the directories and the host
names rewritten (``render_conf`` checks that on every call), and the password passed on the
command line the way the pods pass it.  The backup and restore tests run the real shell
scripts, with the object store pointed at a local directory (STORE=file://...).

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
from redis.sentinel import Sentinel

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
# Sentinel: kill -9 the primary, a replica is promoted, writes resume through REDIS_URL
# --------------------------------------------------------------------------------------


def _sentinel_cli(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, socket_timeout=5, decode_responses=True, retry=Retry(NoBackoff(), 0))


def _wait(what: str, check, timeout: float = 30.0, log: Optional[Path] = None):
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            detail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{detail}")
        time.sleep(0.05)


def _online_replicas(c: redis.Redis) -> list[dict]:
    repl = c.info("replication")
    return [v for k, v in repl.items() if k.startswith("slave") and isinstance(v, dict) and v["state"] == "online"]


def test_sentinel_failover(tmp_path: Path, daemons: Daemons) -> None:
    s = stack("prod")
    r = s.redis
    assert r.sentinels == 3 and r.sentinel_quorum == 2 and r.replicas == 3
    ports = [free_port() for _ in range(r.replicas)]
    nodes = []
    for i, port in enumerate(ports):
        data = tmp_path / f"data-{i}"
        data.mkdir()
        replica_of = None if i == 0 else (HOST, ports[0])
        # --replica-announce-ip: the start script announces the pod's DNS name; here that is 127.0.0.1.
        conf = render_conf(s, port=port, dir=data, replica_of=replica_of)
        nodes.append(daemons.redis(conf, f"redis-{i}", "--replica-announce-ip", HOST))
    primary = nodes[0].client()
    _wait("replicas in sync", lambda: len(_online_replicas(primary)) == r.replicas - 1)
    # min-replicas-to-write counts replicas that acknowledged within min-replicas-max-lag.
    _wait(
        "good replicas",
        lambda: primary.info("replication").get("min_slaves_good_slaves", 0) >= rconf.min_replicas_to_write(r),
    )

    queue = names.JOB_QUEUE
    pipe = primary.pipeline(transaction=False)
    for i in range(500):
        pipe.rpush(queue, i)
        pipe.set(f"k:{i}", i)
    pipe.execute()
    assert primary.execute_command("WAIT", r.replicas - 1, 10000) == r.replicas - 1

    # Sentinels: the rendered template and the rendered start script, which asks the
    # "service" (sentinel 0 here) for the current primary before falling back to the template.
    sentinel_ports = [free_port() for _ in range(r.sentinels)]

    def start_sentinel(i: int, live: Path) -> subprocess.Popen:
        template = tmp_path / f"sentinel-{i}.template.conf"
        template.write_text(
            rconf.sentinel_conf(
                r, primary_host=HOST, primary_port=ports[0], port=sentinel_ports[i], dir=str(live), bind=HOST
            )
        )
        script = tmp_path / f"sentinel-{i}.sh"
        script.write_text(
            rconf.sentinel_start_script(
                r, sentinel_service=(HOST, sentinel_ports[0]), template=str(template), live_dir=str(live)
            )
        )
        log = tmp_path / f"sentinel-{i}.log"
        proc = daemons.spawn(["sh", str(script)], log=log, env={rconf.PASSWORD_ENV: PASSWORD})
        _wait(f"sentinel {i}", _sentinel_cli(sentinel_ports[i]).ping, START_TIMEOUT, log)
        return proc

    sentinels = [start_sentinel(i, tmp_path / f"sentinel-{i}") for i in range(r.sentinels)]
    # Every sentinel must know both replicas and both peers before a failover can work.
    for port in sentinel_ports:
        _wait(
            f"sentinel {port} to see the whole set",
            lambda: (m := _sentinel_cli(port).sentinel_master(names.REDIS_MASTER_NAME))["num-slaves"]
            == r.replicas - 1
            and m["num-other-sentinels"] == r.sentinels - 1,
        )
    live_conf = (tmp_path / "sentinel-1" / rconf.SENTINEL_CONF).read_text()
    assert "sentinel auth-pass" in live_conf and PASSWORD not in rconf.sentinel_conf(
        r, primary_host=HOST, primary_port=ports[0]
    )

    # The app's view: a Sentinel-aware client built from REDIS_URL.
    url = rconf.redis_url(PASSWORD, sentinels=[(HOST, p) for p in sentinel_ports])
    target = rconf.parse_redis_url(url)
    sentinel = Sentinel(list(target.sentinels), socket_timeout=2)
    app = sentinel.master_for(
        target.master_name, db=target.db, password=target.password, socket_timeout=2, decode_responses=True
    )
    assert sentinel.discover_master(target.master_name) == (HOST, ports[0])
    app.set("before-failover", "1")

    # kill -9 the primary: a replica must be promoted within down-after + failover-timeout.
    budget = (r.down_after_ms + r.failover_timeout_ms) / 1000
    killed_at = time.monotonic()
    nodes[0].kill9()
    _, promoted = _wait(
        "a promotion",
        lambda: (m := sentinel.discover_master(target.master_name))[1] != ports[0] and m,
        budget,
    )
    promoted_after = time.monotonic() - killed_at
    assert promoted_after < budget
    new_primary = nodes[ports.index(promoted)].client()
    assert new_primary.info("replication")["role"] == "master"

    # Writes resume through the same client: it asks the sentinels again after the error
    # (NOREPLICAS until the other replica has moved over to the new primary).
    _wait("writes to resume", lambda: app.rpush(queue, "after-failover"), budget - promoted_after)
    resumed_after = time.monotonic() - killed_at
    print(
        f"\nfailover: promoted after {promoted_after:.1f}s, writes resumed after {resumed_after:.1f}s"
        f" (budget {budget:.0f}s)"
    )
    items = app.lrange(queue, 0, -1)
    assert items[:500] == [str(i) for i in range(500)] and items[-1] == "after-failover"
    assert app.get("before-failover") == "1"
    assert all(v is not None for v in app.mget([f"k:{i}" for i in range(500)]))

    # The same target in parts (REDIS_SENTINELS, REDIS_SENTINEL_MASTER, REDIS_PASSWORD: what
    # ioredis and node-redis take) finds the promoted primary as well.
    parts = Sentinel(list(rconf.parse_sentinel_list(rconf.sentinel_list([(HOST, p) for p in sentinel_ports]))),
                     socket_timeout=2)
    assert parts.discover_master(names.REDIS_MASTER_NAME) == (HOST, promoted)
    from_parts = parts.master_for(names.REDIS_MASTER_NAME, password=PASSWORD, socket_timeout=2, decode_responses=True)
    assert from_parts.lrange(queue, -1, -1) == ["after-failover"]

    # A sentinel pod recreated after the failover (fresh config from the template, which still
    # names the dead primary) follows the primary its peers agree on.
    os.kill(sentinels[2].pid, signal.SIGKILL)
    sentinels[2].wait(timeout=10)
    start_sentinel(2, tmp_path / "sentinel-2-recreated")
    assert _sentinel_cli(sentinel_ports[2]).sentinel_get_master_addr_by_name(names.REDIS_MASTER_NAME) == (
        HOST,
        promoted,
    )

    # The old primary's pod restarts with the rendered start script: Sentinel names someone
    # else as primary, so it comes back as that node's replica, with the new writes.
    live = tmp_path / "redis-0-live"
    script = tmp_path / "redis-0-start.sh"
    script.write_text(
        rconf.redis_start_script(
            r,
            namespace=s.namespace,
            sentinel_service=(HOST, sentinel_ports[0]),
            port=ports[0],
            template=str(tmp_path / "redis-0.conf"),
            live_dir=str(live),
            announce_host=HOST,
        )
    )
    log = tmp_path / "redis-0-restarted.log"
    proc = daemons.spawn(["sh", str(script)], log=log, env={rconf.PASSWORD_ENV: PASSWORD, "POD_NAME": "redis-0"})
    old = Server(proc, ports[0], log)
    old.wait_ready()
    oc = old.client()
    assert oc.info("replication")["role"] == "slave" and oc.info("replication")["master_port"] == promoted
    _wait("the old primary to catch up", lambda: oc.lrange(queue, -1, -1) == ["after-failover"], 30, log)

    # The backup script finds the new primary through Sentinel.
    store = tmp_path / "store"
    done = run_script(
        rconf.backup_script(
            r, namespace=s.namespace, region="lagos", store="s3://unused", s3_endpoint=s.object_storage.endpoint_url
        ),
        tmp_path / "backup.sh",
        {
            "STORE": f"file://{store}",
            "SENTINEL_HOST": HOST,
            "SENTINEL_PORT": str(sentinel_ports[1]),
            "REDISCLI_AUTH": PASSWORD,
            "TMPDIR": str(tmp_path),
        },
    )
    assert done.returncode == 0, done.stderr
    (info,) = (store / "redis" / "lagos").glob("*/backup.info")
    source = int(re.search(r"^source=127\.0\.0\.1:(\d+)$", info.read_text(), re.M).group(1))
    assert source in ports and source != promoted, "the backup should come from an in-sync replica"
    # ...so no sentinel learned the redis-cli --rdb connection as a (phantom, port 0) replica.
    time.sleep(1)
    for port in sentinel_ports:
        known = _sentinel_cli(port).sentinel_slaves(names.REDIS_MASTER_NAME)
        assert sorted(int(k["port"]) for k in known) == sorted(p for p in ports if p != promoted), known


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
