"""Resilience: the notes' "Testing Auto-Scaling", declared where settings.resilience.enabled.

* Load test ("overload with traffic"): the k6 script (conf/loadtest.py) in a ConfigMap and,
  only with resilience.loadTest, a k6-operator ``TestRun`` that runs it.  Creating a TestRun
  starts the test, so the flag IS the trigger; the operator deletes the TestRun and its pods
  when the run ends (``cleanup: post``).  Primary region only: the virtual users go through
  the public hostname, which answers from the primary, so a second region's runners would
  only double the notes' user counts.
* Chaos Mesh ``Schedule``s, in every region of the stack: kill a random API pod, delay the
  API pods' traffic, kill the PostgreSQL primary.  Each run is a new experiment object;
  runs never overlap (concurrencyPolicy Forbid).

The k6 pods meet Pod Security "restricted" like every other pod of the namespace (it is
enforced); the NetworkPolicies that let them work are in components/network.py.  The chaos
daemon acts from the node and needs none.  docs/resilience.md is the runbook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names
from tikit.conf import loadtest
from tikit.conf import pods
from tikit.settings import Gateway as GatewaySettings
from tikit.settings import Monitoring as MonitoringSettings
from tikit.settings import Resilience as ResilienceSettings

COMPONENT = "resilience"
K6_API = "k6.io/v1alpha1"
CHAOS_API = "chaos-mesh.org/v1alpha1"
# Runs never overlap: a second pod kill while the first is still recovering measures nothing.
CONCURRENCY = "Forbid"
# k6 writes its script archive and logs under /tmp; the root filesystem stays read-only.
TMP_VOLUME = "tmp"
STARTER_CPU, STARTER_MEMORY = pods.K6_STARTER
# 0: a chaos-killed pod dies outright, as a crash would.
KILL_GRACE_PERIOD_SECONDS = 0
HISTORY_LIMIT = 5
# A run the controller missed by more than this is skipped, not started late.
STARTING_DEADLINE_SECONDS = 300


@dataclass(frozen=True)
class ResilienceArgs:
    target: kube.Target
    resilience: ResilienceSettings
    gateway: GatewaySettings
    monitoring: MonitoringSettings
    # The load test runs in the primary region only (see the module docstring).
    primary: bool
    # The region's CloudNativePG cluster, whose primary the database experiment kills.
    pg_cluster: str
    # What must exist before a TestRun starts: the API and the k6 NetworkPolicies.
    test_run_after: Sequence[pulumi.Resource] = ()


# --- k6 ----------------------------------------------------------------------------------


def _k6_pod(
    app: str,
    target: kube.Target,
    *,
    image: str,
    cpu: str,
    memory: str,
    scratch: bool,
    env: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """One of the TestRun's pod shapes (runner, initializer, starter): our labels, the
    restricted security contexts, resources, no service account token."""
    pod: dict[str, Any] = {
        "image": image,
        "metadata": {"labels": kube.labels(app, COMPONENT, target, kube.image_version(image))},
        "resources": kube.resources(cpu, memory),
        "securityContext": kube.pod_security(),
        "containerSecurityContext": kube.container_security(),
        # A string in this CRD: the pods never talk to the Kubernetes API.
        "automountServiceAccountToken": "false",
        # Test load: below the serving tiers when the pool is full.
        **kube.pool_placement(target, names.PRIORITY_WORKERS),
    }
    if env:
        pod["env"] = list(env)
    if scratch:
        pod["volumes"] = [{"name": TMP_VOLUME, "emptyDir": {}}]
        pod["volumeMounts"] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]
    return pod


def testrun_spec(args: ResilienceArgs) -> dict[str, Any]:
    r, t = args.resilience, args.target
    # k6 reports anonymous usage to Grafana unless told not to; the load test has no business there.
    env = [{"name": "K6_NO_USAGE_REPORT", "value": "true"}]
    k6 = dict(image=r.k6_image, cpu=r.runner_cpu, memory=r.runner_memory, scratch=True, env=env)
    return {
        "parallelism": r.parallelism,
        "script": {"configMap": {"name": names.LOAD_TEST_SCRIPT, "file": loadtest.SCRIPT_FILE}},
        # The operator deletes the TestRun, its Jobs and pods once the run ends.
        "cleanup": "post",
        "runner": _k6_pod(names.K6_RUNNER, t, **k6),
        # Set explicitly: operator releases differ in what an unset initializer inherits.
        "initializer": _k6_pod(names.K6_INITIALIZER, t, **k6),
        "starter": _k6_pod(
            names.K6_STARTER, t, image=r.starter_image, cpu=STARTER_CPU, memory=STARTER_MEMORY, scratch=False
        ),
    }


# --- Chaos Mesh ---------------------------------------------------------------------------


def api_selector(args: ResilienceArgs) -> dict[str, Any]:
    """The API Deployment's pods: the selector labels the Deployment itself selects by."""
    return {"namespaces": [args.target.namespace], "labelSelectors": kube.selector(names.BACKEND, args.target)}


def postgres_primary_selector(args: ResilienceArgs) -> dict[str, Any]:
    """The cluster's current primary: the operator moves the role label on failover, so each
    run finds whichever instance is primary then."""
    labels = {names.CNPG_CLUSTER_LABEL: args.pg_cluster, names.CNPG_INSTANCE_ROLE_LABEL: "primary"}
    return {"namespaces": [args.target.namespace], "labelSelectors": labels}


def schedule_spec(cron: str, kind: str, chaos: dict[str, Any]) -> dict[str, Any]:
    field = kind[0].lower() + kind[1:]  # PodChaos -> podChaos: the embedded spec's key
    return {
        "schedule": cron,
        "type": kind,
        "concurrencyPolicy": CONCURRENCY,
        "historyLimit": HISTORY_LIMIT,
        "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
        field: chaos,
    }


def pod_kill(selector: dict[str, Any]) -> dict[str, Any]:
    return {"action": "pod-kill", "mode": "one", "selector": selector, "gracePeriod": KILL_GRACE_PERIOD_SECONDS}


def schedule_specs(args: ResilienceArgs) -> dict[str, dict[str, Any]]:
    """Kubernetes name -> Schedule spec: the notes' scenarios 1-3 (4 is the load test)."""
    r = args.resilience
    return {
        # 1. Kill a random API instance.
        names.CHAOS_API_KILL: schedule_spec(r.api_kill_schedule, "PodChaos", pod_kill(api_selector(args))),
        # 2. Network latency: every packet the selected API pods send waits network_latency.
        names.CHAOS_API_LATENCY: schedule_spec(
            r.network_delay_schedule,
            "NetworkChaos",
            {
                "action": "delay",
                "mode": r.network_delay_mode,
                "selector": api_selector(args),
                "delay": {"latency": r.network_latency},
                "duration": r.network_delay_duration,
            },
        ),
        # 3. Database failure: the primary goes; CloudNativePG promotes a replica (or
        # restarts the only instance where there is one).
        names.CHAOS_POSTGRES_KILL: schedule_spec(
            r.database_kill_schedule, "PodChaos", pod_kill(postgres_primary_selector(args))
        ),
    }


class Resilience(pulumi.ComponentResource):
    """The load test (primary region) and the chaos Schedules of one region."""

    script: Optional[k8s.core.v1.ConfigMap]
    test_run: Optional[k8s.apiextensions.CustomResource]
    schedules: dict[str, k8s.apiextensions.CustomResource]

    def __init__(self, name: str, args: ResilienceArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:resilience:Resilience", name, None, opts)
        t, r = args.target, args.resilience
        self.script = None
        self.test_run = None
        if args.primary:
            # Present whenever the tier is: a TestRun applied by hand finds its script.
            self.script = k8s.core.v1.ConfigMap(
                t.rname(names.LOAD_TEST_SCRIPT),
                metadata=kube.metadata(names.LOAD_TEST_SCRIPT, COMPONENT, t, app=names.LOAD_TEST),
                data={loadtest.SCRIPT_FILE: loadtest.k6_script(r, args.gateway, args.monitoring)},
                opts=t.opts(self),
            )
            if r.load_test:
                self.test_run = kube.custom(
                    t.rname(names.LOAD_TEST),
                    K6_API,
                    "TestRun",
                    kube.metadata(names.LOAD_TEST, COMPONENT, t),
                    testrun_spec(args),
                    t.opts(self, depends_on=[self.script, *args.test_run_after]),
                )
        self.schedules = {
            schedule: kube.custom(
                t.rname(schedule),
                CHAOS_API,
                "Schedule",
                kube.metadata(schedule, COMPONENT, t, app=names.CHAOS),
                spec,
                t.opts(self),
            )
            for schedule, spec in schedule_specs(args).items()
        }
        self.register_outputs(
            {"schedules": sorted(self.schedules), "loadTest": names.LOAD_TEST if self.test_run is not None else ""}
        )
