"""NetworkPolicies on the rendered manifests of every stack.

Besides the shape (a default deny, an allow policy for every workload that is rendered),
the flows themselves are checked: a small evaluator applies the rendered policies with
Kubernetes' semantics (a pod is isolated in a direction once any policy of that type
selects it; a flow needs the sender's egress AND the receiver's ingress) to the flows the
platform needs and to flows it must not have.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

import pytest

from tikit import names
from tikit import settings
from tikit.components import gateway as gw
from tikit.components import network as net
from conftest import named, objects
from preview import policies as _pack  # noqa: F401  (puts the policy pack on sys.path, as the preview does)
from preview.validate import validate
from test_traffic import stack_settings
from tikit_policies.model import selector_matches

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
NAME = "app.kubernetes.io/name"


# --- a NetworkPolicy evaluator ---------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    """NetworkPolicy selectors: the pack's LabelSelector matching, where an empty selector
    (podSelector {} or namespaceSelector {}) selects everything."""
    return selector_matches(selector, labels, empty_matches_all=True)


@dataclass(frozen=True)
class Pod:
    namespace: Optional[str]  # None: outside the cluster
    labels: dict = field(default_factory=dict)
    ip: str = "10.0.0.10"


def peer_matches(peer: dict, other: Pod, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        if other.namespace is not None:
            return False  # pod traffic is matched by selectors here, never by ipBlock
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": other.namespace}):
            return False
    elif other.namespace != policy_ns:
        return False
    return selects(peer.get("podSelector", {}), other.labels)


def port_matches(ports: Optional[list], port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p or p["port"] == port or (p.get("endPort") and p["port"] <= port <= p["endPort"]):
            return True
    return False


def direction_allows(policies: list[dict], pod: Pod, direction: str, other: Pod, port: int, protocol: str) -> bool:
    kind = direction.capitalize()
    applicable = [
        p for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and kind in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not applicable:
        return True  # not isolated in this direction
    key = "from" if direction == "ingress" else "to"
    for p in applicable:
        for rule in p["spec"].get(direction, []):
            peers = rule.get(key)
            if port_matches(rule.get("ports"), port, protocol) and (
                not peers or any(peer_matches(peer, other, pod.namespace) for peer in peers)
            ):
                return True
    return False


def allowed(policies: list[dict], src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> bool:
    egress = src.namespace is None or direction_allows(policies, src, "egress", dst, port, protocol)
    ingress = dst.namespace is None or direction_allows(policies, dst, "ingress", src, port, protocol)
    return egress and ingress


# --- the pods of one region ------------------------------------------------------------


def pod_templates(plan, region) -> list[tuple[str, str, dict]]:
    """(kind, name, pod template labels) of every rendered workload."""
    out = []
    for kind in WORKLOAD_KINDS:
        for obj in objects(plan, kind, region):
            spec = obj["spec"]
            if kind == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            out.append((kind, obj["metadata"]["name"], spec["template"]["metadata"]["labels"]))
    return out


class Region:
    """The region's pods: rendered pod labels where the workload is rendered, otherwise the
    label contract every tier follows (app.kubernetes.io/name = the names.py name)."""

    def __init__(self, plan, region: str, stack: str) -> None:
        self.cfg = stack_settings(stack)
        self.ns = self.cfg.namespace
        self.policies = objects(plan, "NetworkPolicy", region)
        self.templates = {name: labels for _, name, labels in pod_templates(plan, region)}
        self.backend_port = next(
            p["port"] for p in named(plan, "Service", names.BACKEND, region)["spec"]["ports"]
        )
        cfg = self.cfg
        self.envoy = Pod(cfg.addons.envoy_gateway_namespace, {**gw.envoy_pod_labels(self.ns), NAME: "envoy"})
        self.other_gateway = Pod(cfg.addons.envoy_gateway_namespace, {gw.OWNING_GATEWAY_NAME: "other", NAME: "envoy"})
        self.prometheus = Pod(cfg.addons.monitoring_namespace, {NAME: "prometheus"})
        # KEDA's Helm chart labels: the operator runs the scalers; the metrics API server and
        # the admission webhooks never talk to Redis.
        self.keda = Pod(cfg.addons.keda_namespace, {"app": net.KEDA_OPERATOR_NAME, NAME: net.KEDA_OPERATOR_NAME})
        self.keda_metrics = Pod(
            cfg.addons.keda_namespace,
            {"app": "keda-operator-metrics-apiserver", NAME: "keda-operator-metrics-apiserver"},
        )
        self.operator = Pod(cfg.addons.cnpg_namespace, {NAME: net.CNPG_OPERATOR_NAME})
        self.dns = Pod(cfg.network.dns_namespace, dict(net.DNS_LABELS))
        self.stranger = Pod("default", {NAME: "something"})
        self.internet = Pod(None, ip="52.95.150.10")
        self.postgres = Pod(self.ns, {names.CNPG_CLUSTER_LABEL: names.pg_cluster(region), "cnpg.io/podRole": "instance"})

    def app(self, name: str) -> Pod:
        return Pod(self.ns, self.templates.get(name, {NAME: name}))


def regions(plan, stack):
    for region in plan.regions:
        yield region, Region(plan, region, stack)


# --- shape -----------------------------------------------------------------------------


def test_default_deny_in_every_region(plan):
    for region in plan.regions:
        deny = named(plan, "NetworkPolicy", net.DEFAULT_DENY, region)["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_every_workload_has_its_own_allow_policy(plan):
    """Stricter than being covered by the default deny: some policy with a non-empty pod
    selector selects the pod template and allows at least one flow."""
    for region in plan.regions:
        policies = objects(plan, "NetworkPolicy", region)
        templates = pod_templates(plan, region)
        assert templates, f"{region}: no workloads rendered"
        for kind, name, labels in templates:
            if name == names.CAPACITY_BUFFER:
                # Placeholder pause containers talk to nothing: the default deny is theirs.
                continue
            own = [
                p for p in policies
                if p["spec"]["podSelector"]
                and selects(p["spec"]["podSelector"], labels)
                and (p["spec"].get("ingress") or p["spec"].get("egress"))
            ]
            assert own, f"{region}: {kind}/{name} (labels {labels}) has no allow policy"


def test_every_postgres_cluster_has_an_allow_policy(plan):
    for region in plan.regions:
        policies = objects(plan, "NetworkPolicy", region)
        clusters = [c["metadata"]["name"] for c in objects(plan, "Cluster", region)] or [names.pg_cluster(region)]
        for cluster in clusters:
            labels = {names.CNPG_CLUSTER_LABEL: cluster}
            assert any(p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], labels) for p in policies), cluster


def test_every_policy_validates(plan):
    for region in plan.regions:
        for p in objects(plan, "NetworkPolicy", region):
            assert validate(p) == [], p["metadata"]["name"]


# --- flows that must work --------------------------------------------------------------


def test_required_flows_are_allowed(plan, stack):
    for region, r in regions(plan, stack):
        api, workers, backup = r.app(names.BACKEND), r.app(names.WORKERS), r.app(names.REDIS_BACKUP)
        pools = [r.app(names.PGBOUNCER_RW), r.app(names.PGBOUNCER_RO)]
        redis = r.app(names.REDIS)
        flows = [
            ("gateway -> api", r.envoy, api, r.backend_port),
            ("redis replication", redis, redis, names.REDIS_PORT),
            ("keda -> redis (queue length)", r.keda, redis, names.REDIS_PORT),
            ("backup job -> redis", backup, redis, names.REDIS_PORT),
            ("backup job -> object storage", backup, r.internet, 443),
            ("operator -> postgres status", r.operator, r.postgres, net.CNPG_STATUS_PORT),
            ("operator -> postgres", r.operator, r.postgres, names.POSTGRES_PORT),
            ("postgres replication", r.postgres, r.postgres, names.POSTGRES_PORT),
            ("postgres -> object storage", r.postgres, r.internet, 443),
            ("scrape api", r.prometheus, api, r.backend_port),
            ("scrape redis exporter", r.prometheus, redis, names.REDIS_EXPORTER_PORT),
            ("scrape postgres", r.prometheus, r.postgres, names.CNPG_METRICS_PORT),
        ]
        for client in (api, workers):
            flows.append(("app -> redis", client, redis, names.REDIS_PORT))
            flows.append(("app -> third-party HTTPS", client, r.internet, 443))
            flows += [("app -> pgbouncer", client, pool, names.PGBOUNCER_PORT) for pool in pools]
        for pool in pools:
            flows.append(("pgbouncer -> postgres", pool, r.postgres, names.POSTGRES_PORT))
            flows.append(("scrape pgbouncer exporter", r.prometheus, pool, names.PGBOUNCER_EXPORTER_PORT))
        if r.cfg.redis.sentinels:
            sentinel = r.app(names.REDIS_SENTINEL)
            port = names.REDIS_SENTINEL_PORT
            flows += [
                ("sentinel -> redis", sentinel, redis, names.REDIS_PORT),
                ("sentinel <-> sentinel", sentinel, sentinel, port),
                ("api -> sentinel", api, sentinel, port),
                ("workers -> sentinel", workers, sentinel, port),
                ("data pod -> sentinel (start and handover scripts)", redis, sentinel, port),
                ("backup job -> sentinel", backup, sentinel, port),
                ("keda operator -> sentinel (redis-sentinel trigger)", r.keda, sentinel, port),
            ]
        for pod in (api, workers, backup, redis, r.postgres, *pools):
            flows += [("dns", pod, r.dns, 53)]
            assert allowed(r.policies, pod, r.dns, 53, "UDP"), f"{region}: {pod.labels} cannot resolve names"
        for what, src, dst, port in flows:
            assert allowed(r.policies, src, dst, port), f"{region}: {what} ({port}) is blocked"


def test_no_postgres_port_crosses_the_cluster_boundary(plan, stack):
    """London follows Lagos through the object store only: nothing outside the cluster
    reaches the instances on 5432, and the instances reach nothing outside on it."""
    for region, r in regions(plan, stack):
        for ip in ("203.0.113.7", "10.20.0.5", "198.51.100.7"):
            outside = Pod(None, ip=ip)
            assert not allowed(r.policies, outside, r.postgres, names.POSTGRES_PORT), (region, ip)
            assert not allowed(r.policies, r.postgres, outside, names.POSTGRES_PORT), (region, ip)


def test_network_settings_are_validated():
    with pytest.raises(settings.ConfigError, match=r"^network\.externalCidr: must be a CIDR"):
        settings.load({"network": {"externalCidr": "anywhere"}}, stack="prod")


# --- flows that must not -------------------------------------------------------------


def test_forbidden_flows_are_denied(plan, stack):
    for region, r in regions(plan, stack):
        api, workers = r.app(names.BACKEND), r.app(names.WORKERS)
        pool, redis = r.app(names.PGBOUNCER_RW), r.app(names.REDIS)
        flows = [
            ("internet -> api, bypassing the gateway", r.internet, api, r.backend_port),
            ("another namespace -> api", r.stranger, api, r.backend_port),
            ("another gateway's proxies -> api", r.other_gateway, api, r.backend_port),
            ("gateway -> redis", r.envoy, redis, names.REDIS_PORT),
            ("gateway -> postgres", r.envoy, r.postgres, names.POSTGRES_PORT),
            ("api -> postgres, bypassing the pools", api, r.postgres, names.POSTGRES_PORT),
            ("workers -> postgres, bypassing the pools", workers, r.postgres, names.POSTGRES_PORT),
            ("api -> internet on a database port", api, r.internet, names.POSTGRES_PORT),
            ("pgbouncer -> internet", pool, r.internet, 443),
            ("redis -> internet", redis, r.internet, 443),
            ("prometheus -> redis data port", r.prometheus, redis, names.REDIS_PORT),
            ("another namespace -> redis", r.stranger, redis, names.REDIS_PORT),
            ("another namespace -> postgres", r.stranger, r.postgres, names.POSTGRES_PORT),
            ("api -> api", api, api, r.backend_port),
        ]
        flows.append(("another pod of KEDA's namespace -> redis", r.keda_metrics, redis, names.REDIS_PORT))
        if not r.cfg.redis.sentinels:
            flows.append(("sentinel port without Sentinel", api, redis, names.REDIS_SENTINEL_PORT))
        else:
            # Sentinel's port, only from those that ask Sentinel (see the required flows).
            sentinel, port = r.app(names.REDIS_SENTINEL), names.REDIS_SENTINEL_PORT
            flows += [
                ("another pod of KEDA's namespace -> sentinel", r.keda_metrics, sentinel, port),
                ("prometheus -> sentinel", r.prometheus, sentinel, port),
                ("prometheus -> sentinel, exporter port", r.prometheus, sentinel, names.REDIS_EXPORTER_PORT),
                ("gateway -> sentinel", r.envoy, sentinel, port),
                ("another namespace -> sentinel", r.stranger, sentinel, port),
                ("pgbouncer -> sentinel", pool, sentinel, port),
                ("postgres -> sentinel", r.postgres, sentinel, port),
                ("cnpg operator -> sentinel", r.operator, sentinel, port),
                ("internet -> sentinel", r.internet, sentinel, port),
            ]
        for what, src, dst, port in flows:
            assert not allowed(r.policies, src, dst, port), f"{region}: {what} ({port}) is allowed"


def test_evaluator_semantics():
    """The evaluator itself: isolation, both directions, namespaces, ports, ipBlocks."""
    ns = "app"
    deny = {"metadata": {"namespace": ns}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    a, b = Pod(ns, {NAME: "a"}), Pod(ns, {NAME: "b"})
    assert allowed([], a, b, 80)
    assert not allowed([deny], a, b, 80)
    egress = {"metadata": {"namespace": ns}, "spec": {
        "podSelector": {"matchLabels": {NAME: "a"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {NAME: "b"}}}], "ports": [{"protocol": "TCP", "port": 80}]}]}}
    ingress = {"metadata": {"namespace": ns}, "spec": {
        "podSelector": {"matchLabels": {NAME: "b"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                               "podSelector": {"matchExpressions": [{"key": NAME, "operator": "In", "values": ["a"]}]}}]}]}}
    assert not allowed([deny, egress], a, b, 80)  # b's ingress still denied
    assert allowed([deny, egress, ingress], a, b, 80)
    assert not allowed([deny, egress, ingress], a, b, 81)
    assert not allowed([deny, egress, ingress], Pod("other", {NAME: "a"}), b, 80)
    out = {"metadata": {"namespace": ns}, "spec": {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}], "ports": [{"port": 443}]}]}}
    assert allowed([deny, out], a, Pod(None, ip="52.1.1.1"), 443)
    assert not allowed([deny, out], a, Pod(None, ip="10.1.1.1"), 443)
    assert not allowed([deny, out], a, Pod(None, ip="52.1.1.1"), 80)
