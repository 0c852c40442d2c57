"""tikit/conf/redis.py on every preset: what the rendered files say, what the start scripts
decide (run under /bin/sh with stand-in redis binaries), and the REDIS_URL round trip.

The same text on real daemons: tests/integration/test_redis_daemons.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings as hsettings, strategies as st

from tikit import names
from tikit import settings
from tikit import units
from tikit.conf import redis as rconf

ENVS = settings.ENVIRONMENTS


def load(env: str) -> settings.Settings:
    return settings.load({}, stack=env)


def conf_of(env: str, **kw) -> str:
    s = load(env)
    return rconf.redis_conf(s.redis, maxmemory_bytes=s.derived.redis_maxmemory_bytes, **kw)


directives = rconf.parse_directives


def as_map(text: str) -> dict[str, str]:
    pairs = [(k, v) for k, v in directives(text) if k != "rename-command"]
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"a directive appears twice: {sorted(keys)}"
    return dict(pairs)


# --------------------------------------------------------------------------------------
# redis.conf
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_persistence_follows_the_constants(env: str) -> None:
    c = as_map(conf_of(env))
    assert c["appendonly"] == "yes"
    assert c["appendfsync"] == rconf.APPENDFSYNC == "everysec"
    assert c["save"] == " ".join(rconf.SAVE_RULES) == "3600 1 300 100 60 10000"
    assert c["aof-use-rdb-preamble"] == "yes"
    assert c["appenddirname"] == rconf.APPENDDIRNAME and c["dbfilename"] == rconf.DBFILENAME
    assert c["stop-writes-on-bgsave-error"] == "yes"
    assert c["no-appendfsync-on-rewrite"] == "no"
    assert c["dir"] == "/data"


@pytest.mark.parametrize("env", ENVS)
def test_memory_comes_from_derived_settings(env: str) -> None:
    s = load(env)
    c = as_map(conf_of(env))
    assert int(c["maxmemory"]) == s.derived.redis_maxmemory_bytes
    limit = units.memory_bytes(s.redis.memory)
    assert int(c["maxmemory"]) == limit * s.redis.maxmemory_percent // 100 < limit
    # Only keys with a TTL may be evicted: the queue never has one.
    assert c["maxmemory-policy"] == rconf.MAXMEMORY_POLICY
    assert c["maxmemory-policy"].startswith("volatile-") or c["maxmemory-policy"] == "noeviction"
    assert "docs/sizing.md" in conf_of(env)


@pytest.mark.parametrize("env", ENVS)
def test_network_and_safety(env: str) -> None:
    text = conf_of(env)
    c = as_map(text)
    assert c["bind"] == "* -::*"
    assert c["protected-mode"] == "yes"
    assert c["port"] == str(names.REDIS_PORT)
    assert c["timeout"] == "0" and int(c["tcp-keepalive"]) > 0
    assert c["replica-read-only"] == "yes"
    assert c["enable-debug-command"] == "no" and c["enable-protected-configs"] == "no"
    renamed = [v for k, v in directives(text) if k == "rename-command"]
    assert renamed == ['FLUSHALL ""', 'FLUSHDB ""', 'KEYS ""']
    # Sentinel sends CONFIG REWRITE on failover; the runbook uses CONFIG SET appendonly.
    assert not any(v.upper().startswith("CONFIG") for v in renamed)
    assert int(c["latency-monitor-threshold"]) > 0 and int(c["slowlog-log-slower-than"]) > 0


@pytest.mark.parametrize("env", ENVS)
def test_waits_come_from_the_constants(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(env)
    assert as_map(conf_of(env))["shutdown-timeout"] == str(rconf.SHUTDOWN_TIMEOUT_SECONDS)
    kw = dict(region="lagos", store="s3://b", s3_endpoint=s.object_storage.endpoint_url)
    for script in (rconf.backup_script(s.redis, namespace=s.namespace, **kw), rconf.restore_script(s.redis, **kw)):
        assert f"\nWAIT_SECONDS={rconf.BACKUP_WAIT_SECONDS}\n" in script
    # One place each: the rendered files follow the constants, nothing repeats their values.
    monkeypatch.setattr(rconf, "SHUTDOWN_TIMEOUT_SECONDS", 3)
    monkeypatch.setattr(rconf, "BACKUP_WAIT_SECONDS", 120)
    assert as_map(rconf.redis_conf(s.redis, maxmemory_bytes=1 << 20))["shutdown-timeout"] == "3"
    assert "\nWAIT_SECONDS=120\n" in rconf.backup_script(s.redis, namespace=s.namespace, **kw)
    assert "\nWAIT_SECONDS=120\n" in rconf.restore_script(s.redis, **kw)


def test_parse_directives_is_the_inverse_of_rendering() -> None:
    text = conf_of("prod")
    assert ("appendonly", "yes") in directives(text)
    assert [k for k, _ in directives(text)].count("rename-command") == len(rconf.DISABLED_COMMANDS)
    assert not [k for k, _ in directives(text) if k.startswith("#") or not k]


@pytest.mark.parametrize("env", ENVS)
def test_no_secret_in_any_rendered_text(env: str) -> None:
    s = load(env)
    texts = [conf_of(env), rconf.redis_start_script(s.redis, namespace=s.namespace)]
    texts.append(
        rconf.backup_script(
            s.redis, namespace=s.namespace, region="lagos", store="s3://b", s3_endpoint=s.object_storage.endpoint_url
        )
    )
    if s.redis.sentinels:
        texts.append(rconf.sentinel_conf(s.redis, primary_host="h", primary_port=1))
        texts.append(rconf.sentinel_start_script(s.redis, namespace=s.namespace))
        texts.append(rconf.handover_script(s.redis, namespace=s.namespace))
    for text in texts:
        for word in ("requirepass ", "masterauth ", "auth-pass ", "sentinel-pass ", "sentinel auth-pass "):
            assert not any(line.startswith(word) for line in text.splitlines())
        # Passwords reach the scripts only as the environment's variables.
        assert not re.search(r"(REDIS|SENTINEL)_PASSWORD=[^$\s]", text)
    assert rconf.redis_server_args() == [
        "--requirepass",
        '"$REDIS_PASSWORD"',
        "--masterauth",
        '"$REDIS_PASSWORD"',
    ]


def test_min_replicas_to_write_only_with_sentinel_and_two_replicas() -> None:
    got = {env: as_map(conf_of(env))["min-replicas-to-write"] for env in ENVS}
    assert got == {"dev": "0", "staging": "0", "prod": "1"}
    prod = load("prod")
    assert as_map(conf_of("prod"))["min-replicas-max-lag"] == str(rconf.MIN_REPLICAS_MAX_LAG_SECONDS)
    # Two data pods with Sentinel: one restarting replica would stop all writes, so 0.
    two = settings.load({"redis": {"replicas": 2}}, stack="prod")
    assert rconf.min_replicas_to_write(two.redis) == 0
    assert rconf.min_replicas_to_write(prod.redis) == 1


def test_diskless_sync_does_not_wait_for_replicas_that_do_not_exist() -> None:
    got = {env: int(as_map(conf_of(env))["repl-diskless-sync-max-replicas"]) for env in ENVS}
    assert got == {"dev": 1, "staging": 1, "prod": 2}


def test_rendering_is_stable_and_only_parameters_move() -> None:
    assert conf_of("prod") == conf_of("prod")
    local = conf_of("prod", port=7000, dir="/tmp/x", bind="127.0.0.1", replica_of=("127.0.0.1", 7001))
    changed = {k for k, _ in set(directives(conf_of("prod"))) ^ set(directives(local))}
    assert changed == {"port", "dir", "bind", "replicaof"}
    assert as_map(local)["replicaof"] == "127.0.0.1 7001"
    assert "replicaof" not in as_map(conf_of("prod"))


def test_bad_arguments_are_refused() -> None:
    s = load("dev")
    with pytest.raises(ValueError, match="maxmemory_bytes"):
        rconf.redis_conf(s.redis, maxmemory_bytes=0)
    with pytest.raises(ValueError, match="port"):
        rconf.redis_conf(s.redis, maxmemory_bytes=1, port=70000)
    with pytest.raises(ValueError, match="sentinels is 0"):
        rconf.sentinel_conf(s.redis, primary_host="h", primary_port=1)
    with pytest.raises(ValueError, match="sentinels is 0"):
        rconf.sentinel_start_script(s.redis, namespace="t")
    with pytest.raises(ValueError, match="sentinels is 0"):
        rconf.handover_script(s.redis, namespace="t")
    prod = load("prod")
    with pytest.raises(ValueError, match="bad address"):
        rconf.redis_start_script(prod.redis, namespace="t", peers=[("a b", 1)])
    with pytest.raises(ValueError, match="store"):
        rconf.backup_script(s.redis, namespace="t", region="r", store="ftp://x", s3_endpoint="https://e")


# --------------------------------------------------------------------------------------
# sentinel.conf
# --------------------------------------------------------------------------------------


def test_sentinel_conf_prod() -> None:
    s = load("prod")
    host = rconf.bootstrap_primary_host(s.namespace)
    assert host == "redis-0.redis-headless.tikit.svc.cluster.local"
    text = rconf.sentinel_conf(s.redis, primary_host=host, primary_port=names.REDIS_PORT)
    lines = [f"{k} {v}" for k, v in directives(text)]
    m = names.REDIS_MASTER_NAME
    monitor = f"sentinel monitor {m} {host} {names.REDIS_PORT} {s.redis.sentinel_quorum}"
    assert monitor in lines
    assert f"sentinel down-after-milliseconds {m} {s.redis.down_after_ms}" in lines
    assert f"sentinel failover-timeout {m} {s.redis.failover_timeout_ms}" in lines
    assert f"sentinel parallel-syncs {m} 1" in lines
    assert "sentinel announce-hostnames yes" in lines
    # Hostnames are resolved only for monitor lines parsed after this directive.
    assert lines.index("sentinel resolve-hostnames yes") < lines.index(monitor)
    assert f"port {names.REDIS_SENTINEL_PORT}" in lines
    # Clients authenticate (requirepass comes from the Secret at start): protected mode on.
    assert "protected-mode yes" in lines
    assert not [line for line in lines if line.split()[0] in ("requirepass", "masterauth") or "-pass" in line]


def test_sentinel_hosts() -> None:
    s = load("prod")
    assert rconf.sentinel_hosts(s.redis, "tikit") == [
        (f"redis-sentinel-{i}.redis-sentinel.tikit.svc.cluster.local", 26379) for i in range(3)
    ]
    assert rconf.sentinel_hosts(load("dev").redis, "tikit") == []


# --------------------------------------------------------------------------------------
# Start and handover scripts, run by /bin/sh with stand-ins for redis-cli, redis-server and
# redis-sentinel (what they decide against real daemons: tests/integration/test_redis_ha.py)
# --------------------------------------------------------------------------------------

FAKE_CLI = """#!/bin/sh
# Stand-in redis-cli: answers every command with $FAKE_ANSWER.
if [ -n "${FAKE_DOWN:-}" ]; then echo "Could not connect to Redis" >&2; exit 1; fi
printf '%b' "$FAKE_ANSWER"
"""
FAKE_SERVER = """#!/bin/sh
# Stand-in redis-server / redis-sentinel: records its arguments and its config file.
for a in "$@"; do printf '%s\\n' "$a"; done > "$FAKE_OUT.args"
cp "$1" "$FAKE_OUT.conf"
"""
HEADLESS = "redis-headless.tikit.svc.cluster.local"


@pytest.fixture
def fakes(tmp_path: Path):
    if not shutil.which("sh"):
        pytest.skip("no /bin/sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("redis-cli", FAKE_CLI), ("redis-server", FAKE_SERVER), ("redis-sentinel", FAKE_SERVER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    template_dir = tmp_path / "template"
    template_dir.mkdir()
    (template_dir / "redis.conf").write_text(conf_of("prod"))
    s = load("prod")
    (template_dir / "sentinel.conf").write_text(
        rconf.sentinel_conf(s.redis, primary_host=rconf.bootstrap_primary_host(s.namespace), primary_port=6379)
    )
    (tmp_path / "data").mkdir()

    def run(script: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str], str]:
        path = tmp_path / "start.sh"
        path.write_text(script)
        out = tmp_path / "out"
        for suffix in (".args", ".conf"):
            Path(f"{out}{suffix}").unlink(missing_ok=True)
        # The Sentinel start script leaves an agent behind (start-ha.sh): files, not pipes, for
        # its output, and the whole process group goes once the main process has ended.
        with open(tmp_path / "stdout", "w+") as stdout, open(tmp_path / "stderr", "w+") as stderr:
            proc = subprocess.Popen(
                ["sh", str(path)],
                env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_OUT": str(out), "FAKE_ANSWER": "", **env},
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, text=True, start_new_session=True,
            )
            try:
                proc.wait(timeout=30)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            stdout.seek(0)
            stderr.seek(0)
            done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout.read(), stderr.read())
        args = Path(f"{out}.args").read_text().splitlines() if Path(f"{out}.args").exists() else []
        conf = Path(f"{out}.conf").read_text() if Path(f"{out}.conf").exists() else ""
        return done, args, conf

    run.template_dir = template_dir  # type: ignore[attr-defined]
    run.live = tmp_path / "live"  # type: ignore[attr-defined]
    run.data = tmp_path / "data"  # type: ignore[attr-defined]
    return run


def _start(env: str, fakes) -> str:
    s = load(env)
    return rconf.redis_start_script(
        s.redis, namespace=s.namespace, template=str(fakes.template_dir / "redis.conf"), live_dir=str(fakes.live),
        data_dir=str(fakes.data),
    )


def _replicaof(args: list[str]) -> list[str]:
    return args[args.index("--replicaof") + 1 :][:2] if "--replicaof" in args else []


@pytest.mark.parametrize("env", [e for e in ENVS if not load(e).redis.sentinels])
def test_start_without_sentinel_ordinal_zero_is_primary(env: str, fakes) -> None:
    done, args, conf = fakes(_start(env, fakes), REDIS_PASSWORD="pw", POD_NAME="redis-0")
    assert done.returncode == 0, done.stderr
    assert args[0] == str(fakes.live / "redis.conf") and conf == conf_of("prod")
    assert args[1:5] == ["--requirepass", "pw", "--masterauth", "pw"]
    assert args[args.index("--replica-announce-ip") + 1] == f"redis-0.{HEADLESS}"
    assert _replicaof(args) == []
    done, args, _ = fakes(_start(env, fakes), REDIS_PASSWORD="pw", POD_NAME="redis-2")
    assert _replicaof(args) == [f"redis-0.{HEADLESS}", "6379"]
    assert "SENTINEL" not in _start(env, fakes)


@pytest.mark.parametrize(
    "answer", ["", f"redis-0.{HEADLESS}\\n6379\\n", f"redis-1.{HEADLESS}\\n6379\\n"], ids=["no-answer", "self", "other"]
)
@pytest.mark.parametrize("pod", ["redis-0", "redis-1"])
def test_start_with_sentinel_always_begins_as_a_standby(fakes, pod: str, answer: str) -> None:
    """Whatever the sentinels answer, and on ordinal 0 too, redis-server starts as a replica
    of nothing that Sentinel never promotes; the role comes later, from the agent."""
    done, args, conf = fakes(
        _start("prod", fakes), REDIS_PASSWORD="pw", SENTINEL_PASSWORD="spw", POD_NAME=pod,
        FAKE_ANSWER=answer, **({"FAKE_DOWN": "1"} if not answer else {}),
    )
    assert done.returncode == 0, done.stderr
    assert args[0] == str(fakes.live / "redis.conf") and conf == conf_of("prod")
    assert args[1:5] == ["--requirepass", "pw", "--masterauth", "pw"]
    assert _replicaof(args) == ["127.0.0.1", "0"]
    assert args[args.index("--replica-priority") + 1] == "0"
    assert args[args.index("--replica-announce-ip") + 1] == f"{pod}.{HEADLESS}"
    assert "starting as standby" in done.stderr


def test_start_refuses_a_missing_password(fakes) -> None:
    for env in (dict(REDIS_PASSWORD=""), dict(REDIS_PASSWORD="pw"), dict(REDIS_PASSWORD="pw", SENTINEL_PASSWORD="")):
        done, args, _ = fakes(_start("prod", fakes), POD_NAME="redis-0", **env)
        assert done.returncode != 0 and "PASSWORD" in done.stderr and not args, env
    done, args, _ = fakes(_start("dev", fakes), REDIS_PASSWORD="", POD_NAME="redis-0")
    assert done.returncode != 0 and "REDIS_PASSWORD" in done.stderr and not args


def test_sentinel_agreement_is_the_quorum_and_at_least_a_majority() -> None:
    def agree(sentinels: int, quorum: int) -> int:
        return rconf.sentinel_agreement(settings.load({"redis": {"sentinels": sentinels, "sentinelQuorum": quorum}}, stack="prod").redis)

    assert agree(3, 2) == 2 and agree(3, 1) == 2  # a quorum of all 3 is refused by the settings
    assert agree(5, 2) == 3 and agree(5, 4) == 4 and agree(4, 2) == 3


def test_ha_scripts_ask_every_sentinel_and_know_every_data_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load("prod")
    sentinels = " ".join(f"redis-sentinel-{i}.redis-sentinel.tikit.svc.cluster.local:26379" for i in range(3))
    peers = " ".join(f"redis-{i}.{HEADLESS}:6379" for i in range(3))
    scripts = {
        "start": rconf.redis_start_script(s.redis, namespace=s.namespace),
        "sentinel": rconf.sentinel_start_script(s.redis, namespace=s.namespace),
        "handover": rconf.handover_script(s.redis, namespace=s.namespace),
    }
    for name, text in scripts.items():
        assert f'\nSENTINELS="{sentinels}"\n' in text, name
        assert "\nAGREE=2\n" in text and "\nMASTER_NAME=tikit\n" in text, name
        assert f"\nASK_TIMEOUT={rconf.HA_ASK_TIMEOUT_SECONDS}\n" in text, name
    for name in ("start", "sentinel"):
        assert f'\nPEERS="{peers}"\n' in scripts[name]
        assert f'\nBOOTSTRAP="redis-0.{HEADLESS}:6379"\n' in scripts[name]
    assert 'SELF="${POD_NAME:-$(hostname)}.redis-sentinel.tikit.svc.cluster.local"' in scripts["sentinel"]
    assert f'SELF="${{POD_NAME:-$(hostname)}}.{HEADLESS}"' in scripts["handover"]
    # The waits are the named constants, nothing repeats their values.
    assert f"\nDEADLINE={rconf.HANDOVER_DEADLINE_SECONDS}\n" in scripts["handover"]
    assert f"\nPAUSE_AFTER={rconf.SHUTDOWN_TIMEOUT_SECONDS + rconf.SHUTDOWN_SAVE_MARGIN_SECONDS}\n" in scripts["handover"]
    monkeypatch.setattr(rconf, "HANDOVER_DEADLINE_SECONDS", 7)
    monkeypatch.setattr(rconf, "ROLE_RETRY_MAX_SECONDS", 3)
    monkeypatch.setattr(rconf, "STAMP_DB", 9)
    assert "\nDEADLINE=7\n" in rconf.handover_script(s.redis, namespace=s.namespace)
    start = rconf.redis_start_script(s.redis, namespace=s.namespace)
    assert "\nRETRY_MAX=3\n" in start and "\nSTAMP_DB=9\n" in start


def _sentinel_start(fakes, **kw) -> str:
    s = load("prod")
    return rconf.sentinel_start_script(
        s.redis, namespace=s.namespace, template=str(fakes.template_dir / "sentinel.conf"), live_dir=str(fakes.live), **kw
    )


def test_sentinel_start_follows_the_other_sentinels_with_its_passwords(fakes) -> None:
    password, sentinel_password = 'a "b" \\c $d', "s'p \"q\""
    done, args, conf = fakes(
        _sentinel_start(fakes),
        REDIS_PASSWORD=password,
        SENTINEL_PASSWORD=sentinel_password,
        POD_NAME="redis-sentinel-1",
        FAKE_ANSWER=f"redis-1.{HEADLESS}\\n6379\\n",
    )
    assert done.returncode == 0, done.stderr
    assert args == [str(fakes.live / "sentinel.conf")]
    lines = conf.splitlines()
    template = (fakes.template_dir / "sentinel.conf").read_text().splitlines()
    (monitor,) = [i for i, line in enumerate(template) if line.startswith("sentinel monitor ")]
    assert lines[monitor] == f"sentinel monitor tikit redis-1.{HEADLESS} 6379 2"
    assert lines[:monitor] + lines[monitor + 1 : len(template)] == template[:monitor] + template[monitor + 1 :]
    assert "protected-mode yes" in lines
    assert lines[len(template) :] == [
        'requirepass "s\'p \\"q\\""',
        'sentinel sentinel-pass "s\'p \\"q\\""',
        'sentinel auth-pass tikit "a \\"b\\" \\\\c $d"',
        'sentinel announce-ip "redis-sentinel-1.redis-sentinel.tikit.svc.cluster.local"',
        "sentinel announce-port 26379",
        f"sentinel known-replica tikit redis-0.{HEADLESS} 6379",
        f"sentinel known-replica tikit redis-2.{HEADLESS} 6379",
    ]
    assert "2 other sentinels name it" in done.stderr


def test_sentinel_start_takes_an_operators_override(fakes) -> None:
    done, _, conf = fakes(
        _sentinel_start(fakes), REDIS_PASSWORD="pw", SENTINEL_PASSWORD="spw", POD_NAME="redis-sentinel-0",
        FAKE_DOWN="1", FORCE_PRIMARY=f"redis-2.{HEADLESS}:6379",
    )
    assert done.returncode == 0, done.stderr
    assert f"sentinel monitor tikit redis-2.{HEADLESS} 6379 2" in conf.splitlines()


def test_sentinel_start_refuses_a_missing_password(fakes) -> None:
    for env in (dict(REDIS_PASSWORD="pw"), dict(REDIS_PASSWORD="pw", SENTINEL_PASSWORD=""), dict(SENTINEL_PASSWORD="s")):
        done, args, _ = fakes(_sentinel_start(fakes), FAKE_DOWN="1", **env)
        assert done.returncode != 0 and "PASSWORD" in done.stderr and not args, env


def test_handover_does_nothing_on_a_replica(fakes) -> None:
    s = load("prod")
    script = rconf.handover_script(s.redis, namespace=s.namespace)
    done, _, _ = fakes(script, REDIS_PASSWORD="pw", SENTINEL_PASSWORD="s", POD_NAME="redis-1", FAKE_ANSWER="role:slave\\n")
    assert done.returncode == 0 and "nothing to hand over" in done.stderr
    done, _, _ = fakes(script, REDIS_PASSWORD="pw", POD_NAME="redis-1")
    assert done.returncode != 0 and "SENTINEL_PASSWORD" in done.stderr



# --------------------------------------------------------------------------------------
# Backup and restore scripts
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_scripts_are_valid_posix_sh(env: str) -> None:
    s = load(env)
    kw = dict(region="lagos", store=f"s3://{s.bucket('lagos')}", s3_endpoint=s.object_storage.endpoint_url)
    scripts = [
        rconf.redis_start_script(s.redis, namespace=s.namespace),
        rconf.backup_script(s.redis, namespace=s.namespace, **kw),
        rconf.restore_script(s.redis, **kw),
    ]
    if s.redis.sentinels:
        scripts.append(rconf.sentinel_start_script(s.redis, namespace=s.namespace))
        scripts.append(rconf.handover_script(s.redis, namespace=s.namespace))
    for script in scripts:
        assert script.startswith("#!/bin/sh\n")
        done = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        if shutil.which("shellcheck") is None and os.environ.get("CI", "").lower() == "true":
            pytest.fail("shellcheck is not installed (scripts/install-system-deps.sh installs it)")
        if shutil.which("shellcheck"):
            done = subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("env", ENVS)
def test_backup_script_renders_settings(env: str) -> None:
    s = load(env)
    text = rconf.backup_script(
        s.redis, namespace=s.namespace, region="lagos", store="s3://tikit-backups-x-lagos",
        s3_endpoint=s.object_storage.endpoint_url,
    )
    assert f"RETENTION_HOURS={s.redis.backup_retention_hours}\n" in text
    assert "PREFIX=redis/lagos\n" in text
    assert 'STORE="${STORE:-s3://tikit-backups-x-lagos}"' in text
    assert "BGSAVE" in text and "--rdb" in text and "redis-check-rdb" in text
    assert ("SENTINEL replicas" in text) == bool(s.redis.sentinels)


def test_s3_settings_follow_the_endpoint() -> None:
    aws = dict(rconf._s3_settings("https://s3.eu-west-2.amazonaws.com"))
    assert aws["RCLONE_S3_PROVIDER"] == "AWS" and aws["RCLONE_S3_REGION"] == "eu-west-2"
    other = dict(rconf._s3_settings("https://minio.example.com:9000"))
    assert other["RCLONE_S3_PROVIDER"] == "Other" and "RCLONE_S3_REGION" not in other
    assert other["RCLONE_S3_ENDPOINT"] == "https://minio.example.com:9000"


# --------------------------------------------------------------------------------------
# REDIS_URL
# --------------------------------------------------------------------------------------


def test_plain_url() -> None:
    url = rconf.redis_url("p@ss/w rd", host=rconf.bootstrap_primary_host("tikit"))
    assert url == "redis://:p%40ss%2Fw%20rd@redis-0.redis-headless.tikit.svc.cluster.local:6379/0"
    # redis-py reads it the same way.
    kwargs = redis.ConnectionPool.from_url(url).connection_kwargs
    assert kwargs["password"] == "p@ss/w rd" and kwargs["host"].startswith("redis-0.") and kwargs["port"] == 6379


def test_sentinel_url() -> None:
    s = load("prod")
    url = rconf.redis_url("pw", sentinels=rconf.sentinel_hosts(s.redis, s.namespace), sentinel_password="s&p w")
    assert url == (
        "redis+sentinel://:pw@redis-sentinel-0.redis-sentinel.tikit.svc.cluster.local:26379,"
        "redis-sentinel-1.redis-sentinel.tikit.svc.cluster.local:26379,"
        "redis-sentinel-2.redis-sentinel.tikit.svc.cluster.local:26379/tikit/0?sentinelPassword=s%26p%20w"
    )
    t = rconf.parse_redis_url(url)
    assert t.master_name == "tikit" and t.db == 0 and t.password == "pw" and len(t.sentinels) == 3
    assert t.sentinel_password == "s&p w"
    # Without a sentinel password there is no query; a plain URL takes none.
    assert rconf.parse_redis_url(url.split("?")[0]).sentinel_password is None
    with pytest.raises(ValueError, match="unknown URL parameters"):
        rconf.parse_redis_url("redis://:pw@h:6379/0?sentinelPassword=x")
    with pytest.raises(ValueError, match="unknown URL parameters"):
        rconf.parse_redis_url(url + "&other=1")


def test_sentinel_list_for_clients_without_sentinel_urls() -> None:
    s = load("prod")
    hosts = rconf.sentinel_hosts(s.redis, s.namespace)
    text = rconf.sentinel_list(hosts)
    assert text == ",".join(f"redis-sentinel-{i}.redis-sentinel.tikit.svc.cluster.local:26379" for i in range(3))
    assert rconf.parse_sentinel_list(text) == tuple(hosts)
    assert rconf.sentinel_list([]) == "" and rconf.parse_sentinel_list("") == ()
    # IPv6 literals are bracketed, as in URLs: the port is always after the last colon.
    assert rconf.sentinel_list([("fd00::1", 26379)]) == "[fd00::1]:26379"
    assert rconf.parse_sentinel_list("[fd00::1]:26379") == (("fd00::1", 26379),)


def test_url_needs_exactly_one_target() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        rconf.redis_url("pw")
    with pytest.raises(ValueError, match="exactly one"):
        rconf.redis_url("pw", host="h", sentinels=[("s", 1)])
    with pytest.raises(ValueError):
        rconf.redis_url("pw", host="bad/host")
    with pytest.raises(ValueError):
        rconf.parse_redis_url("http://x:1/0")


HOSTS = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}\Z")
PORTS = st.integers(min_value=1, max_value=65535)
PASSWORDS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60)


@hsettings(max_examples=200, deadline=None)
@given(password=PASSWORDS, host=HOSTS, port=PORTS, db=st.integers(0, 15))
def test_plain_url_round_trip(password: str, host: str, port: int, db: int) -> None:
    t = rconf.parse_redis_url(rconf.redis_url(password, host=host, port=port, db=db))
    assert (t.password, t.host, t.port, t.db, t.sentinels) == (password, host, port, db, ())


@hsettings(max_examples=200, deadline=None)
@given(
    password=PASSWORDS,
    sentinels=st.lists(st.tuples(HOSTS, PORTS), min_size=1, max_size=5),
    db=st.integers(0, 15),
    sentinel_password=PASSWORDS,
)
def test_sentinel_url_round_trip(password: str, sentinels: list, db: int, sentinel_password: str) -> None:
    url = rconf.redis_url(password, sentinels=sentinels, db=db, sentinel_password=sentinel_password)
    t = rconf.parse_redis_url(url)
    assert (t.password, t.sentinels, t.master_name, t.db) == (password, tuple(sentinels), "tikit", db)
    assert t.sentinel_password == sentinel_password
