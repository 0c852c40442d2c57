"""The API tier: the stateless Node.js backend.

Deployment (probes from the notes, graceful shutdown, Pod Security "restricted", spread
over zones and nodes), Service, PodDisruptionBudget, the non-secret environment in a
ConfigMap, and one KEDA ScaledObject that owns the HPA (docs/autoscaling.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names
from tikit.components import autoscaling, nodeapp
from tikit.conf import metrics
from tikit.settings import Backend as BackendSettings

COMPONENT = "api"
PORT_NAME = "http"
# The port the Node.js API listens on (PORT in its environment).
PORT = 3000
# Graceful shutdown: the preStop sleep lets endpoint removal reach the gateway and
# kube-proxy while the pod still serves; then the app drains for up to SHUTDOWN_SECONDS.
PRE_STOP_SECONDS = 10
SHUTDOWN_SECONDS = 20
# The startup probe (GET /health every STARTUP.period, up to STARTUP.failures times) holds
# liveness off while a slow boot finishes: 5 s x 30 = 150 s.
STARTUP = kube.ProbeTiming(period=5, timeout=nodeapp.LIVENESS.timeout, failures=30)


@dataclass(frozen=True)
class BackendArgs:
    target: kube.Target
    backend: BackendSettings
    # Where KEDA's request-rate trigger queries Prometheus (settings.derived.prometheus_address).
    prometheus_address: str


def config_data(args: BackendArgs) -> dict[str, str]:
    """The API's non-secret environment (connection strings are in Secrets)."""
    return {
        **nodeapp.common_config(args.target),
        "PORT": str(PORT),
        "METRICS_PATH": names.BACKEND_METRICS_PATH,
    }


# The grace period covers the preStop sleep AND the app's own drain after SIGTERM: the
# kubelet starts counting before preStop runs and sends SIGTERM only after it.
TERMINATION_GRACE_SECONDS = PRE_STOP_SECONDS + SHUTDOWN_SECONDS


def probes() -> dict[str, Any]:
    return {
        **nodeapp.health_probes(PORT_NAME),
        # Liveness and readiness wait until this succeeds.
        "startupProbe": kube.http_probe(
            nodeapp.HEALTH_PATH, PORT_NAME, period=STARTUP.period, timeout=STARTUP.timeout, failures=STARTUP.failures
        ),
    }


def scaled_object_spec(args: BackendArgs) -> dict[str, Any]:
    b, t = args.backend, args.target
    prom = args.prometheus_address
    triggers = [
        # "CPU > 70 % for 2 minutes", "memory > 80 % for 2 minutes": sustained in the query.
        autoscaling.cpu_trigger(prom, t.namespace, names.BACKEND, b.cpu, b.cpu_target_percent),
        autoscaling.memory_trigger(prom, t.namespace, names.BACKEND, b.memory, b.memory_target_percent),
        # "> 1000 requests/minute per instance": reacts at the next HPA sync.
        autoscaling.prometheus_trigger(
            prom,
            autoscaling.request_rate_query(metrics.API_REQUESTS, t.namespace, names.BACKEND),
            b.requests_per_minute_per_instance,
        ),
    ]
    # The peak-hour floor only matters when it is above the everyday minimum (prod).
    if b.peak_min_replicas > b.min_replicas:
        triggers.append(
            autoscaling.cron_trigger(start=b.peak_start, end=b.peak_end, desired_replicas=b.peak_min_replicas)
        )
    return autoscaling.scaled_object_spec(
        workload=names.BACKEND,
        min_replicas=b.min_replicas,
        max_replicas=b.max_replicas,
        hpa_behavior=autoscaling.behavior(),
        triggers=triggers,
        # Prometheus down: the request-rate trigger reports the peak floor (the capacity the
        # evening is sized for) instead of an error, so scaling never freezes on it.
        fallback_spec=autoscaling.fallback(max(b.min_replicas, b.peak_min_replicas)),
    )


class Backend(pulumi.ComponentResource):
    """The API Deployment, its Service, PDB, ConfigMap and ScaledObject in one region."""

    config_map: k8s.core.v1.ConfigMap
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    pdb: k8s.policy.v1.PodDisruptionBudget
    scaled_object: k8s.apiextensions.CustomResource

    def __init__(self, name: str, args: BackendArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:app:Backend", name, None, opts)
        t, b = args.target, args.backend
        app = names.BACKEND
        version = kube.image_version(b.image)
        sel = kube.selector(app, t)
        child = t.opts(self)

        self.config_map = k8s.core.v1.ConfigMap(
            t.rname(names.BACKEND_CONFIG),
            metadata=kube.metadata(names.BACKEND_CONFIG, COMPONENT, t, app=app),
            data=config_data(args),
            opts=child,
        )

        container = nodeapp.container(
            app,
            b.image,
            config_map=names.BACKEND_CONFIG,
            db_connections_per_replica=b.db_connections_per_replica,
            cpu=b.cpu,
            memory=b.memory,
            ports=[{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
            **probes(),
        )
        hooks = kube.pre_stop_sleep(PRE_STOP_SECONDS)
        if hooks:
            container["lifecycle"] = hooks

        self.deployment = kube.workload(
            k8s.apps.v1.Deployment,
            t.rname(app),
            metadata=nodeapp.deployment_metadata(
                app, COMPONENT, t, version=version, db_connections_per_replica=b.db_connections_per_replica,
                # The capacity model's inputs no Kubernetes field carries (docs/autoscaling.md).
                extra_annotations={
                    names.CAPACITY_PER_INSTANCE_ANNOTATION: str(b.sustainable_requests_per_minute),
                    names.BOOT_SECONDS_ANNOTATION: str(b.boot_seconds),
                },
            ),
            spec={
                # No spec.replicas: the HPA that KEDA owns sets it; declaring it here
                # would reset the live count on every `pulumi up`.
                "selector": {"matchLabels": sel},
                "strategy": kube.rolling_surge(),
                "template": {
                    "metadata": {"labels": kube.labels(app, COMPONENT, t, version)},
                    "spec": nodeapp.pod_spec(
                        sel, container, grace_seconds=TERMINATION_GRACE_SECONDS, **kube.pool_placement(t, names.PRIORITY_API)
                    ),
                },
            },
            # Pods read the ConfigMap at start: create it first.
            opts=t.opts(self, depends_on=[self.config_map]),
        )

        self.service = k8s.core.v1.Service(
            t.rname(app),
            metadata=kube.metadata(app, COMPONENT, t),
            spec={
                "type": "ClusterIP",
                "selector": sel,
                # Traffic and /metrics share the one port the ServiceMonitor scrapes by name.
                "ports": [
                    {"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP", "appProtocol": "http"}
                ],
            },
            opts=child,
        )

        self.pdb = kube.pdb(t.rname(app), app, COMPONENT, t, sel, child)

        self.scaled_object = autoscaling.scaled_object(
            t.rname(app),
            kube.metadata(app, COMPONENT, t),
            scaled_object_spec(args),
            t.opts(self, depends_on=[self.deployment]),
        )

        self.service_name = app
        self.port = PORT
        self.register_outputs({"service": app, "port": PORT})
