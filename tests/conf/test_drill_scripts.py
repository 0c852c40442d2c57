"""The PostgreSQL restore drill script (tikit/conf/templates/postgres/restore-drill.sh) as
rendered for the cluster, run by sh against a stand-in kubectl (harness/fake_kubectl.py):
the Cluster it creates, the answer it expects, that it deletes the Cluster whatever
happens, and that it asks the API server for nothing its Role does not allow.  Its
verification query runs on a real restored database in
tests/integration/test_backups_restore.py."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tikit import kube, names, settings
from tikit.components import drills as dc
from tikit.conf import drills as conf
from harness import fake_kubectl

CFG = settings.load({}, stack="prod")
REGION = "london"


def drill_args() -> dc.DrillsArgs:
    return dc.DrillsArgs(
        target=kube.Target(region=REGION, namespace=CFG.namespace, provider=None, environment=CFG.environment),
        drills=CFG.restore_drills, postgres=CFG.postgres, derived=CFG.derived, redis=CFG.redis,
        primary=CFG.primary.name, primary_store=CFG.object_store(CFG.primary.name), canary=False, drill=True,
        redis_backup_max_age_seconds=CFG.monitoring.redis_backup_max_age_seconds,
    )


@pytest.fixture
def drill(tmp_path: Path):
    """The rendered ConfigMap's files on disk, the fake kubectl, and a runner."""
    files = dc.pg_drill_config(drill_args())
    for key, text in files.items():
        (tmp_path / key).write_text(text)
    state = tmp_path / "state"
    env = {
        **fake_kubectl.install(tmp_path / "bin", state),
        "MANIFEST": str(tmp_path / dc.MANIFEST_KEY), "QUERY_FILE": str(tmp_path / dc.QUERY_KEY),
        "JOB_NAME": "pg-restore-drill-29500000", "JOB_UID": "0b9c1a2e-5f6d-4c3b-9a8e-7d6c5b4a3f21",
        "POLL_SECONDS": "0", "HOME": str(tmp_path),
    }

    def run(timeout: float = 60, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(tmp_path / dc.SCRIPT_KEY)], env={**env, **extra}, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    return run, state, env, tmp_path


def created(state: Path) -> dict:
    return json.loads((state / "created.json").read_text())


def assert_torn_down_and_allowed(state: Path) -> None:
    """The last call deletes the Cluster, and the Role allows every request made."""
    assert fake_kubectl.calls(state)[-1][2:4] == ["delete", "cluster"]
    assert not (state / "cluster.json").exists()
    for request in fake_kubectl.requests(state):
        assert fake_kubectl.allowed(dc.role_rules(), *request), request


def test_a_passing_drill_restores_to_the_target_and_deletes_the_cluster(drill):
    run, state, _, _ = drill
    done = run(FAKE_EXEC_OUTPUT="true|2026-03-10 03:29:41.5+00|2873\n", FAKE_READY_AFTER="2")
    assert done.returncode == 0, done.stderr
    assert "passed: restored to" in done.stderr and "verification: true|2026-03-10 03:29:41.5+00|2873" in done.stderr
    cluster = created(state)
    # The run-time slots are filled: a target TARGET_LAG_SECONDS ago, and this Job as owner.
    target = dt.datetime.strptime(cluster["spec"]["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"], "%Y-%m-%dT%H:%M:%SZ")
    lag = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - target
    assert dt.timedelta(seconds=conf.TARGET_LAG_SECONDS) <= lag < dt.timedelta(seconds=conf.TARGET_LAG_SECONDS + 60)
    assert cluster["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "pg-restore-drill-29500000", "uid": "0b9c1a2e-5f6d-4c3b-9a8e-7d6c5b4a3f21"}
    ]
    assert "__" not in json.dumps(cluster)
    # The query ran with the target handed to psql, in the app database.
    (exec_call,) = [c for c in fake_kubectl.calls(state) if "exec" in c]
    assert f"target={cluster['spec']['bootstrap']['recovery']['recoveryTarget']['targetTime']}" in exec_call
    assert exec_call[exec_call.index("-d") + 1] == names.PG_DATABASE
    assert_torn_down_and_allowed(state)


def test_target_time_can_be_chosen(drill):
    run, state, _, _ = drill
    done = run(TARGET_TIME="2026-03-14T09:41:00Z", FAKE_EXEC_OUTPUT="true|x|1\n")
    assert done.returncode == 0, done.stderr
    assert created(state)["spec"]["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"] == "2026-03-14T09:41:00Z"


@pytest.mark.parametrize("output, status, why", [
    ("false|2026-03-10 02:10:00+00|12\n", "0", "verification answered 'false|2026-03-10 02:10:00+00|12'"),
    ("false|none|0\n", "0", "verification answered 'false|none|0'"),
    ("", "3", "the verification query failed"),
])
def test_a_wrong_answer_fails_the_drill_and_still_deletes_the_cluster(drill, output, status, why):
    run, state, _, _ = drill
    done = run(FAKE_EXEC_OUTPUT=output, FAKE_EXEC_STATUS=status)
    assert done.returncode == 1, done.stderr
    assert why in done.stderr
    assert_torn_down_and_allowed(state)


def test_a_cluster_that_never_recovers_times_out_and_is_deleted(drill):
    run, state, _, _ = drill
    done = run(FAKE_READY_AFTER="never", TIMEOUT_SECONDS="2", POLL_SECONDS="1")
    assert done.returncode == 1
    assert "not healthy within 2 s (phase: Setting up primary)" in done.stderr
    assert not [c for c in fake_kubectl.calls(state) if "exec" in c]
    assert_torn_down_and_allowed(state)


def test_a_leftover_cluster_is_deleted_first(drill):
    run, state, _, _ = drill
    (state / "cluster.json").write_text("{}")  # a run that was killed before its trap
    done = run(FAKE_EXEC_OUTPUT="true|x|1\n", FAKE_GONE_AFTER="2")
    assert done.returncode == 0, done.stderr
    verbs = [c[2] for c in fake_kubectl.calls(state)]
    assert verbs.index("delete") < verbs.index("create")
    assert "deleting the cluster pg-restore-drill a previous run left" in done.stderr
    assert_torn_down_and_allowed(state)


def test_sigterm_still_deletes_the_cluster(drill):
    """The Job's deadline sends SIGTERM: the trap deletes the Cluster before the pod goes."""
    _, state, env, tmp_path = drill
    proc = subprocess.Popen(["sh", str(tmp_path / dc.SCRIPT_KEY)], env={**env, "FAKE_READY_AFTER": "never", "POLL_SECONDS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (state / "created.json").exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "slow"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert_torn_down_and_allowed(state)
    assert "cluster pg-restore-drill deleted" in stderr


def test_the_jobs_identity_is_required(drill):
    run, state, _, _ = drill
    done = run(JOB_UID="")
    assert done.returncode != 0 and "JOB_UID" in done.stderr
    assert not (state / "created.json").exists()
