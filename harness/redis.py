"""Real redis-server processes on 127.0.0.1 running the rendered redis.conf, for the backup
and restore tests and the restore drill's test.

``local_conf`` renders redis.conf the way the pods get it and allows only the port, the
directory and the bind address to differ (it checks that on every call); the password is
passed on the command line as the pods pass it (``--requirepass``).  ``snapshot`` reads a
whole keyspace logically (type, value, whether it expires), which is how a restore is
compared with its source: DUMP bytes may change with the in-memory encoding.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import redis

from tikit import settings
from tikit.conf import redis as rconf

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
REWRITABLE = {"port", "dir", "bind"}


def local_conf(s: settings.Settings, *, port: int, dir: Path) -> str:
    production = rconf.redis_conf(s.redis, maxmemory_bytes=s.derived.redis_maxmemory_bytes)
    local = rconf.redis_conf(s.redis, maxmemory_bytes=s.derived.redis_maxmemory_bytes, port=port, dir=str(dir), bind=HOST)
    changed = {k for k, _ in set(rconf.parse_directives(production)) ^ set(rconf.parse_directives(local))}
    if not changed <= REWRITABLE:
        raise AssertionError(f"local redis.conf differs from production in {sorted(changed - REWRITABLE)}")
    return local


def binaries_missing() -> list[str]:
    return [b for b in ("redis-server", "redis-cli", "redis-check-rdb", "redis-check-aof") if not shutil.which(b)]


class RedisServer:
    """redis-server with ``conf`` (written to ``root``), ``password`` and per-server
    ``extra`` arguments (as a pod passes its own); killed on exit."""

    def __init__(self, conf: str, root: Path, password: str, name: str = "redis", *extra: str) -> None:
        self.conf_path = root / f"{name}.conf"
        self.conf_path.write_text(conf)
        self.port = int(next(v for k, v in rconf.parse_directives(conf) if k == "port"))
        self.log = root / f"{name}.log"
        self.password = password
        self.extra = list(extra)
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "RedisServer":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["redis-server", str(self.conf_path), "--requirepass", self.password, "--masterauth", self.password,
                 *self.extra],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        c = self.client()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if c.ping() and c.info("persistence")["loading"] == 0:
                    break
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"redis-server not ready within {START_TIMEOUT:.0f}s:\n{self.tail()}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, password=self.password, socket_timeout=10, **kwargs)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def fill(c: redis.Redis, n: int) -> None:
    """``n`` string keys plus hashes, lists (the job queue's shape), sets, sorted sets,
    streams, keys with a TTL (the cache's shape) and a binary value."""
    pipe = c.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"str:{i}", f"value-{i}-" + "x" * (i % 50))
        if i % 10 == 0:
            pipe.hset(f"hash:{i}", mapping={"a": i, "b": f"b{i}", "c": "z" * 200})
            pipe.rpush(f"list:{i}", *[f"e{j}" for j in range(i % 7 + 1)])
            pipe.sadd(f"set:{i}", *range(i % 5 + 1))
            pipe.zadd(f"zset:{i}", {"one": 1.5, "two": 2.25, "n": i})
        if i % 100 == 0:
            pipe.set(f"cache:{i}", "expiring", ex=3600)
            pipe.xadd(f"stream:{i}", {"field": f"v{i}"})
        if i % 1000 == 999:
            pipe.execute()
    pipe.set("bin:1", bytes(range(256)))
    pipe.execute()


def snapshot(c: redis.Redis) -> dict[bytes, tuple]:
    """key -> (type, value, expires), read in pipelined batches."""
    keys = list(c.scan_iter(count=1000))
    readers = {
        b"string": lambda p, k: p.get(k),
        b"hash": lambda p, k: p.hgetall(k),
        b"list": lambda p, k: p.lrange(k, 0, -1),
        b"set": lambda p, k: p.smembers(k),
        b"zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
        b"stream": lambda p, k: p.xrange(k),
    }
    out: dict[bytes, tuple] = {}
    for i in range(0, len(keys), 1000):
        chunk = keys[i:i + 1000]
        pipe = c.pipeline(transaction=False)
        for k in chunk:
            pipe.type(k)
        types = pipe.execute()
        pipe = c.pipeline(transaction=False)
        for k, t in zip(chunk, types):
            readers[t](pipe, k)
            pipe.pttl(k)
        values = pipe.execute()
        for j, (k, t) in enumerate(zip(chunk, types)):
            value, pttl = values[2 * j], values[2 * j + 1]
            out[k] = (t, frozenset(value) if t == b"set" else value, pttl > 0)
    return out
