"""The rendered alert rules, judged by Prometheus' own tools and by a real Prometheus.

* ``promtool check rules`` on every rule group of every stack and region, exactly as the
  PrometheusRule manifests carry them;
* ``promtool test rules`` with synthetic series (tests/integration/alert_cases.py): every
  alert fires where it should, with its exact labels, value and annotations, and stays
  quiet where it should not;
* end to end on 127.0.0.1: redis-server runs the rendered redis.conf, Debian's
  prometheus-redis-exporter (the upstream exporter the pods run as their ``metrics``
  sidecar) exports it, and a real Prometheus evaluates the rendered Redis rules.  Making
  the data directory unwritable and asking for a BGSAVE must put TikitRedisRdbSaveFailing
  into pending through Prometheus' HTTP API; restoring the directory must clear it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import pytest
import redis
import yaml

from tikit import settings
from tikit.components import monitoring
from tikit.conf import alerts
from tikit.conf import redis as rconf
from conftest import require_binary

import alert_cases

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
REGIONS = (("dev", "lagos"), ("staging", "lagos"), ("staging", "london"), ("prod", "lagos"), ("prod", "london"))
REPO = Path(__file__).resolve().parents[2]


def stack_settings(stack: str) -> settings.Settings:
    """The stack's settings as the program sees them: preset plus the stack file's deltas."""
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = {k.split(":", 1)[1]: v for k, v in (doc.get("config") or {}).items()}
    return settings.load(config, stack=stack)


def rendered_groups(rendered, stack: str, region: str) -> list[dict[str, Any]]:
    """The rule groups of one region, read back from the rendered manifest files."""
    groups = []
    for path, text in sorted(rendered(stack).files.items()):
        if path.startswith(f"{region}/") and "-prometheusrule-" in path:
            groups.extend(yaml.safe_load(text)["spec"]["groups"])
    assert groups, f"no PrometheusRule rendered for {stack}/{region}"
    return groups


def write_rule_files(groups: Sequence[dict[str, Any]], directory: Path) -> list[Path]:
    paths = []
    for g in groups:
        path = directory / f"{g['name']}.yml"
        path.write_text(yaml.safe_dump({"groups": [g]}, sort_keys=False))
        paths.append(path)
    return paths


def facts(stack: str, region_name: str) -> alert_cases.Facts:
    cfg = stack_settings(stack)
    region = next(r for r in cfg.regions if r.name == region_name)
    # Built as the Monitoring component builds it (tikit/regions.py).
    sc = alerts.scope(
        region=region.name,
        role=region.role,
        namespace=cfg.namespace,
        backup_schedule=cfg.postgres.backup_schedule,
        server_connections_per_pod=cfg.derived.pgbouncer_server_connections_per_pod,
        autoscaled=monitoring.autoscaled(cfg.backend, cfg.workers),
        gslb=len(cfg.regions) > 1,
        **monitoring.drill_scope(cfg.restore_drills.schedule if region in cfg.drilled_regions else ""),
    )
    return alert_cases.Facts(cfg, sc)


# --------------------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack,region", REGIONS)
def test_promtool_check_rules(rendered, tmp_path, stack, region):
    files = write_rule_files(rendered_groups(rendered, stack, region), tmp_path)
    result = subprocess.run(
        [require_binary("promtool"), "check", "rules", *map(str, files)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


@pytest.mark.parametrize("stack,region", REGIONS)
def test_promtool_unit_tests(rendered, tmp_path, stack, region):
    groups = rendered_groups(rendered, stack, region)
    rules = alert_cases.alert_rules(groups)
    cases = alert_cases.all_cases(facts(stack, region))

    # Every alerting rule has a case where it fires and one where it stays quiet.
    never_fired, never_quiet = alert_cases.coverage(cases, rules)
    assert never_fired == [], f"rules without a firing case: {never_fired}"
    assert never_quiet == [], f"rules without a quiet case: {never_quiet}"
    assert all(any(c.about(r) for r in rules) for c in cases), "cases for alerts this region does not have"

    # One test file per tier, loading only that tier's group: promtool evaluates every loaded
    # rule at every step, so this keeps the run short.
    test_files = []
    for group, path in zip(groups, write_rule_files(groups, tmp_path)):
        mine = [c for c in cases if any(c.about(r) for r in group["rules"] if "alert" in r)]
        if not mine:
            continue
        spec = {
            "rule_files": [str(path)],
            "evaluation_interval": alert_cases.INTERVAL,
            "tests": [alert_cases.test_group(c, rules) for c in mine],
        }
        test_file = tmp_path / f"test-{group['name']}.yml"
        test_file.write_text(yaml.safe_dump(spec, sort_keys=False, width=1000))
        test_files.append(test_file)
    assert sum(len(yaml.safe_load(f.read_text())["tests"]) for f in test_files) == len(cases)
    result = subprocess.run(
        [require_binary("promtool"), "test", "rules", *map(str, test_files)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]


# --------------------------------------------------------------------------------------
# End to end: redis-server + redis_exporter + Prometheus
# --------------------------------------------------------------------------------------

ALERT = "TikitRedisRdbSaveFailing"
POD = "redis-0"
SCRAPE = "1s"  # only the intervals are rewritten: expressions and `for` stay as rendered
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def wait_for(what: str, check, timeout: float = DEADLINE, every: float = 0.1):
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except (OSError, ValueError, redis.RedisError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: Sequence[str], *, env: Optional[dict] = None, user: Optional[int] = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            user=user,
            group=user,
            start_new_session=True,
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def workdir() -> Iterator[tuple[Path, Optional[int]]]:
    """A directory the daemons can use, and the uid redis-server runs as.

    Root ignores directory permissions, so "make the data dir unwritable" only bites when
    redis-server runs as someone else: as root we run it as `nobody` in a world-traversable
    directory (pytest's tmp_path lives under a root-only 0700 parent) and give it the data dir.
    """
    root = Path(tempfile.mkdtemp(prefix="tikit-alert-e2e-", dir="/tmp"))
    try:
        root.chmod(0o755)
        uid = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else None
        yield root, uid
    finally:
        shutil.rmtree(root, ignore_errors=True)


def active_alerts(prom: str) -> list[dict[str, Any]]:
    return [a for a in http_json(f"{prom}/api/v1/alerts")["data"]["alerts"] if a["labels"].get("alertname") == ALERT]


def test_redis_persistence_alert_end_to_end(rendered, capsys):
    binaries = {b: require_binary(b) for b in ("redis-server", "prometheus-redis-exporter", "prometheus")}
    stack, region = "dev", "lagos"
    cfg = stack_settings(stack)
    [group] = [g for g in rendered_groups(rendered, stack, region) if g["name"] == "tikit-redis"]
    [rule] = [r for r in group["rules"] if r.get("alert") == ALERT]
    password = secrets.token_hex(16)

    with workdir() as (root, uid):
        data = root / "data"
        data.mkdir()
        if uid is not None:
            os.chown(data, uid, uid)
        procs = Processes(root)
        try:
            # Redis: the rendered redis.conf, rewriting only port, dir and bind; the password
            # arrives on the command line as the pods pass it.
            port = free_port()
            conf = root / "redis.conf"
            conf.write_text(
                rconf.redis_conf(cfg.redis, maxmemory_bytes=cfg.derived.redis_maxmemory_bytes, port=port, dir=str(data), bind=HOST)
            )
            conf.chmod(0o644)
            procs.start("redis", [binaries["redis-server"], str(conf), "--requirepass", password], user=uid)
            client = redis.Redis(host=HOST, port=port, password=password, socket_timeout=5)
            wait_for("redis-server", client.ping, timeout=20)

            # The exporter, as the pods' metrics sidecar runs it.
            exporter_port = free_port()
            procs.start(
                "exporter",
                [binaries["prometheus-redis-exporter"], "-redis.addr", f"redis://{HOST}:{port}", "-web.listen-address", f"{HOST}:{exporter_port}"],
                env={"REDIS_PASSWORD": password},
            )

            # Prometheus with the rendered group as is; the scrape job carries the labels the
            # PodMonitor gives its series (job <namespace>/redis, namespace, pod, container).
            rules_file = root / "rules.yml"
            rules_file.write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False))
            prom_port = free_port()
            prom_conf = root / "prometheus.yml"
            prom_conf.write_text(
                yaml.safe_dump(
                    {
                        "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
                        "rule_files": [str(rules_file)],
                        "scrape_configs": [
                            {
                                "job_name": alerts.pod_monitor_job(cfg.namespace, alerts.MON_REDIS),
                                "static_configs": [
                                    {
                                        "targets": [f"{HOST}:{exporter_port}"],
                                        "labels": {"namespace": cfg.namespace, "pod": POD, "container": "metrics"},
                                    }
                                ],
                            }
                        ],
                    }
                )
            )
            procs.start(
                "prometheus",
                [
                    binaries["prometheus"],
                    f"--config.file={prom_conf}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    f"--web.listen-address={HOST}:{prom_port}",
                ],
            )
            prom = f"http://{HOST}:{prom_port}"

            def redis_up() -> bool:
                result = http_json(f"{prom}/api/v1/query?query=redis_up")["data"]["result"]
                return bool(result) and result[0]["value"][1] == "1"

            def persistence(status: str) -> bool:
                info = client.info("persistence")
                return info["rdb_bgsave_in_progress"] == 0 and info["rdb_last_bgsave_status"] == status

            wait_for("Prometheus scraping redis_up = 1", redis_up)
            wait_for("the rule group to load", lambda: any(g["name"] == group["name"] for g in http_json(f"{prom}/api/v1/rules")["data"]["groups"]))
            client.set("tikit:e2e", "before")
            assert active_alerts(prom) == [], "alert active before persistence broke"

            # Break persistence: redis-server (not root) can no longer create its temp RDB file.
            data.chmod(0o555)
            client.bgsave()
            broke = time.monotonic()
            wait_for("BGSAVE to fail", lambda: persistence("err"))
            # stop-writes-on-bgsave-error (rendered): writes are refused, loudly.
            with pytest.raises(redis.ResponseError, match="MISCONF"):
                client.set("tikit:e2e", "during")
            [alert] = wait_for("the alert to go pending", lambda: [a for a in active_alerts(prom) if a["state"] in ("pending", "firing")])
            to_pending = time.monotonic() - broke
            assert alert["labels"]["severity"] == rule["labels"]["severity"] == "critical"
            assert alert["labels"]["namespace"] == cfg.namespace and alert["labels"]["pod"] == POD
            assert "BGSAVE" in alert["annotations"]["description"]

            # Restore persistence: the next BGSAVE succeeds and the alert clears.
            data.chmod(0o755)
            client.bgsave()
            restored = time.monotonic()
            wait_for("BGSAVE to succeed", lambda: persistence("ok"))
            wait_for("the alert to clear", lambda: active_alerts(prom) == [])
            to_clear = time.monotonic() - restored
            client.set("tikit:e2e", "after")
        except BaseException:
            for name in ("redis", "exporter", "prometheus"):
                print(f"--- {name} log ---\n{procs.log(name)}")
            raise
        finally:
            procs.stop()

    with capsys.disabled():
        print(
            f"\n{ALERT}: pending {to_pending:.1f} s after the failed BGSAVE "
            f"(scrape and evaluation every {SCRAPE}; rendered `for: {rule.get('for', '0s')}` decides firing), "
            f"cleared {to_clear:.1f} s after persistence was restored"
        )
