"""The Redis pods' exec probes (tikit/components/redis.py) run against real redis-server and
redis-sentinel processes on 127.0.0.1: the very commands the manifests carry, with only the
port rewritten, and the password in the environment as the pods have it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from tikit import names
from tikit import settings
from tikit.components import redis as rc
from tikit.conf import redis as rconf
from conftest import require_binary

pytestmark = pytest.mark.integration

PASSWORD = "probe-pw"
SENTINEL_PASSWORD = "sentinel-probe-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        p.kill()
        p.wait(timeout=10)


def start(procs: list, binary: str, *args: str, cwd: Path) -> subprocess.Popen:
    p = subprocess.Popen([require_binary(binary), *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    return p


def server(procs: list, tmp: Path, name: str, port: int, *extra: str) -> subprocess.Popen:
    d = tmp / name
    d.mkdir()
    return start(
        procs, "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
        "--requirepass", PASSWORD, "--masterauth", PASSWORD, *extra, cwd=d,
    )


def probe(command: list[str], password: str = PASSWORD, sentinel_password: str = SENTINEL_PASSWORD) -> subprocess.CompletedProcess:
    require_binary("redis-cli")
    env = {**os.environ, rconf.PASSWORD_ENV: password, rconf.SENTINEL_PASSWORD_ENV: sentinel_password}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=10)


def until(check, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_primary_and_replica_probes(tmp_path: Path, procs) -> None:
    p1, p2 = free_port(), free_port()
    primary = server(procs, tmp_path, "primary", p1)
    assert until(lambda: probe(rc.liveness_command(p1)).returncode == 0)
    assert probe(rc.readiness_command(p1)).returncode == 0

    # A replica is alive at once, but ready only once its link is up and the sync is done.
    server(procs, tmp_path, "replica", p2, "--replicaof", "127.0.0.1", str(p1))
    assert until(lambda: probe(rc.liveness_command(p2)).returncode == 0)
    assert until(lambda: probe(rc.readiness_command(p2)).returncode == 0)

    # Primary gone: the replica stays alive (a restart would not help) but is not ready.
    primary.kill()
    primary.wait(timeout=10)
    assert until(lambda: probe(rc.readiness_command(p2)).returncode == 1)
    done = probe(rc.readiness_command(p2))
    assert "link to the primary is down" in done.stdout
    assert probe(rc.liveness_command(p2)).returncode == 0

    # The probes authenticate with the pod's password: a wrong one fails both, so does a dead server.
    assert probe(rc.liveness_command(p2), password="wrong").returncode == 1
    assert probe(rc.readiness_command(p2), password="wrong").returncode == 1
    assert probe(rc.liveness_command(p1)).returncode == 1
    assert probe(rc.readiness_command(p1)).returncode == 1


def test_a_loading_server_is_alive_but_not_ready(tmp_path: Path, procs) -> None:
    port = free_port()
    seed = server(procs, tmp_path, "seed", port)
    assert until(lambda: probe(rc.liveness_command(port)).returncode == 0)
    cli = [require_binary("redis-cli"), "-p", str(port)]
    env = {**os.environ, "REDISCLI_AUTH": PASSWORD}
    script = "".join(f"SET key:{i} {'x' * 64}\n" for i in range(3000)) + "SAVE\n"
    subprocess.run(cli, input=script, env=env, capture_output=True, text=True, check=True, timeout=60)
    seed.kill()
    seed.wait(timeout=10)

    # key-load-delay (microseconds per key) stretches the load to seconds, as a large AOF
    # would; Redis answers clients every loading-process-events-interval-bytes of the file
    # (2 MB by default, so 1 KB for this small one).
    d = tmp_path / "seed"
    start(
        procs, "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
        "--requirepass", PASSWORD, "--key-load-delay", "2000", "--loading-process-events-interval-bytes", "1024", cwd=d,
    )
    assert until(lambda: "LOADING" in probe(["sh", "-c", f'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p {port} PING']).stdout, 10)
    assert probe(rc.liveness_command(port)).returncode == 0
    assert probe(rc.readiness_command(port)).returncode == 1
    assert until(lambda: probe(rc.readiness_command(port)).returncode == 0, 60)


def test_sentinel_probes(tmp_path: Path, procs) -> None:
    rport, sport = free_port(), free_port()
    server(procs, tmp_path, "primary", rport)
    assert until(lambda: probe(rc.readiness_command(rport)).returncode == 0)
    d = tmp_path / "sentinel"
    d.mkdir()
    (d / "sentinel.conf").write_text(
        f"port {sport}\nbind 127.0.0.1\ndir {d}\nrequirepass {SENTINEL_PASSWORD}\n"
        f"sentinel monitor {names.REDIS_MASTER_NAME} 127.0.0.1 {rport} 1\n"
        f'sentinel auth-pass {names.REDIS_MASTER_NAME} "{PASSWORD}"\n'
    )
    start(procs, "redis-sentinel", str(d / "sentinel.conf"), cwd=d)
    assert until(lambda: probe(rc.sentinel_liveness_command(sport)).returncode == 0)
    assert probe(rc.sentinel_readiness_command(sport)).returncode == 0
    unknown = probe(rc.sentinel_readiness_command(sport, master="not-monitored"))
    assert unknown.returncode == 1 and "no primary known" in unknown.stdout
    # The sentinels require their own password: without it (or with the data password) both fail.
    for wrong in ("", PASSWORD):
        assert probe(rc.sentinel_liveness_command(sport), sentinel_password=wrong).returncode == 1
        refused = probe(rc.sentinel_readiness_command(sport), sentinel_password=wrong)
        assert refused.returncode == 1 and ("NOAUTH" in refused.stdout or "WRONGPASS" in refused.stdout), refused


def test_a_standby_is_alive_but_not_ready(tmp_path: Path, procs) -> None:
    """A data pod waiting for the sentinels (start-ha.sh) is a replica of 127.0.0.1:0 for as
    long as they take: liveness must never restart it, readiness keeps it out of service."""
    port = free_port()
    server(procs, tmp_path, "standby", port, "--replicaof", "127.0.0.1", "0", "--replica-priority", "0")
    assert until(lambda: probe(rc.liveness_command(port)).returncode == 0)
    for _ in range(3):
        assert probe(rc.liveness_command(port)).returncode == 0
        done = probe(rc.readiness_command(port))
        assert done.returncode == 1 and "link to the primary is down" in done.stdout
        time.sleep(0.5)


def test_a_sentinel_deciding_what_to_monitor_is_alive_but_not_ready(tmp_path: Path, procs) -> None:
    """The rendered sentinel start script, with no data pod and no other sentinel to ask,
    waits for them for as long as it takes: liveness leaves it alone, readiness does not
    count it; once it runs redis-sentinel, liveness is PING again."""
    s = settings.load({}, stack="prod")
    nobody = [("127.0.0.1", free_port()) for _ in range(3)]
    port, live = free_port(), tmp_path / "live"
    template = tmp_path / "sentinel.conf"
    template.write_text(rconf.sentinel_conf(s.redis, primary_host="127.0.0.1", primary_port=nobody[0][1], port=port,
                                            dir=str(live), bind="127.0.0.1"))
    script = tmp_path / "start.sh"
    script.write_text(rconf.sentinel_start_script(
        s.redis, namespace=s.namespace, port=port, announce_host="127.0.0.1", sentinels=[("127.0.0.1", port), *nobody[1:]],
        peers=nobody, template=str(template), live_dir=str(live),
    ))
    env = {**os.environ, rconf.PASSWORD_ENV: PASSWORD, rconf.SENTINEL_PASSWORD_ENV: SENTINEL_PASSWORD}
    log = tmp_path / "start.log"
    with open(log, "w") as out:
        procs.append(subprocess.Popen(["sh", str(script)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    assert until(lambda: "waiting: no master, and not every data pod can be inspected" in log.read_text(), 10)
    for _ in range(3):
        assert probe(rc.sentinel_liveness_command(port, live_dir=str(live))).returncode == 0
        assert probe(rc.sentinel_readiness_command(port)).returncode == 1
        time.sleep(0.5)
    # Running (here: an operator's FORCE_PRIMARY), the marker is gone and PING decides.
    os.killpg(procs[-1].pid, signal.SIGKILL)
    procs[-1].wait(timeout=10)
    with open(log, "a") as out:
        procs.append(subprocess.Popen(["sh", str(script)], env={**env, "FORCE_PRIMARY": f"127.0.0.1:{nobody[0][1]}"},
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
    assert until(lambda: probe(rc.sentinel_liveness_command(port, live_dir=str(live))).returncode == 0
                 and not (live / rconf.SENTINEL_DISCOVERING).exists(), 10)
    os.killpg(procs[-1].pid, signal.SIGKILL)
    procs[-1].wait(timeout=10)
    assert probe(rc.sentinel_liveness_command(port, live_dir=str(live))).returncode == 1
