"""The add-ons tier of one region: every operator the platform's custom resources need,
installed from its official Helm chart at the release tikit/versions.py pins.

Per region (where ``regions[].addons`` is "install"; docs/architecture.md):

* a Namespace per operator, labelled for Pod Security admission: ``baseline`` enforced
  for the operators (their charts do not all meet "restricted"; every pod of Tikit's own
  namespace does), ``privileged`` where a DaemonSet needs the host (node-exporter in the
  monitoring namespace, Chaos Mesh's daemon);
* cert-manager, then the ClusterIssuer the gateway's Certificate names (ACME DNS-01,
  provider from settings.dns);
* CloudNativePG and its Barman Cloud plugin (same namespace, as the plugin requires);
* KEDA; Envoy Gateway (Gateway API CRDs on the standard channel from its CRD chart, the
  controller from its main chart) with the control-plane certificates its chart would make
  in a Helm hook, and the GatewayClass the Gateway names; kube-prometheus-stack (the
  Prometheus Operator with kube-state-metrics and node-exporter);
* k8gb where the stack has more than one region; Chaos Mesh and the k6-operator where the
  resilience tier is on.

Charts are ``helm.v4.Chart``: templated by the provider into ordinary Pulumi resources, so
they work with a provider that renders YAML to a directory (``helm.v3.Release`` does not) and
every object shows in previews.  Helm hooks are not applied by v4.Chart; the charts whose
hooks matter get values that make them unnecessary (see each chart below).  Every custom
resource of the other tiers depends on the chart that serves its API group (``by_group``,
used by kube.custom), so a single `pulumi up` on an empty cluster orders itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube, names, versions
from tikit.settings import Addons as AddonsSettings
from tikit.settings import Dns as DnsSettings
from tikit.settings import Gslb as GslbSettings

COMPONENT = "addons"
CERT_MANAGER_API = "cert-manager.io/v1"
GATEWAY_API = "gateway.networking.k8s.io/v1"
# Envoy Gateway's controller name (its default); the GatewayClass hands Gateways to it.
ENVOY_GATEWAY_CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
# Pod Security levels of the operator namespaces (see the module docstring), each with the
# reason the policy pack reads from the namespace.
OPERATOR_POD_SECURITY = ("baseline", "operator chart pods are not all built for the restricted profile")
HOST_POD_SECURITY = ("privileged", "a DaemonSet of this add-on needs the host (hostPID, hostPath, hostNetwork)")
# The Secrets Envoy Gateway's control plane mounts, which its chart makes in a Helm hook
# (certgen): envoy-gateway (controller), envoy (proxies), envoy-rate-limit.
ENVOY_GATEWAY_SECRETS = ("envoy-gateway", "envoy", "envoy-rate-limit")
# Where container runtimes keep their sockets (Chaos Mesh's daemon talks to it).
RUNTIME_SOCKETS = {
    "containerd": "/run/containerd/containerd.sock",
    "crio": "/var/run/crio/crio.sock",
    "docker": "/var/run/docker.sock",
}
# k8gb's CoreDNS answers the delegated zone from outside the cluster.
K8GB_DNS_SERVICE_TYPE = "LoadBalancer"


@dataclass(frozen=True)
class AddonsArgs:
    target: kube.Target
    addons: AddonsSettings
    dns: DnsSettings
    gslb: GslbSettings
    # The gateway's certificate issuer (settings.gateway.cluster_issuer) and class name.
    cluster_issuer: str
    gateway_class: str
    # This region's k8gb geo tag and the other regions' (multi-region stacks only).
    geo_tag: str
    peer_geo_tags: tuple[str, ...]
    # Which optional operators this region runs.
    multi_region: bool
    resilience: bool
    primary: bool


def wanted(operator: versions.Operator, args: AddonsArgs) -> bool:
    """Whether this region installs ``operator``."""
    if operator.when == "multi-region":
        return args.multi_region
    if operator.when == "resilience":
        # The load test (k6) runs in the primary region only; chaos runs everywhere.
        return args.resilience and (args.primary or operator.key != "k6-operator")
    return operator.installed


def _resources(a: AddonsSettings) -> dict[str, Any]:
    return kube.resources(a.operator_cpu, a.operator_memory)


def _pdb(a: AddonsSettings) -> dict[str, Any]:
    """A PodDisruptionBudget where an operator runs more than one replica."""
    return {"enabled": a.replicas > 1, **kube.disruption_rule()}


def namespace_of(key: str, a: AddonsSettings) -> str:
    return {
        "cert-manager": a.cert_manager_namespace,
        "cloudnative-pg": a.cnpg_namespace,
        "plugin-barman-cloud": a.cnpg_namespace,
        "keda": a.keda_namespace,
        "envoy-gateway": a.envoy_gateway_namespace,
        "prometheus-operator": a.monitoring_namespace,
        "k8gb": a.k8gb_namespace,
        "chaos-mesh": a.chaos_mesh_namespace,
        "k6-operator": a.k6_operator_namespace,
    }[key]


# --- chart values (pure functions of the args) -------------------------------------------


def cert_manager_values(args: AddonsArgs) -> dict[str, Any]:
    a, dns = args.addons, args.dns
    values: dict[str, Any] = {
        "crds": {"enabled": True, "keep": True},
        "replicaCount": a.replicas,
        "resources": _resources(a),
        "podDisruptionBudget": _pdb(a),
        "webhook": {"replicaCount": a.replicas, "resources": _resources(a), "podDisruptionBudget": _pdb(a)},
        "cainjector": {"replicaCount": a.replicas, "resources": _resources(a), "podDisruptionBudget": _pdb(a)},
        # The API check is a Helm hook, which v4.Chart does not run.
        "startupapicheck": {"enabled": False},
    }
    if dns.provider == "route53" and dns.route53.role_arn:
        values["serviceAccount"] = {"annotations": {"eks.amazonaws.com/role-arn": dns.route53.role_arn}}
    return values


def cnpg_values(args: AddonsArgs) -> dict[str, Any]:
    a = args.addons
    return {"replicaCount": a.replicas, "resources": _resources(a), "crds": {"create": True}, "config": {"clusterWide": True}}


def barman_cloud_values(args: AddonsArgs) -> dict[str, Any]:
    a = args.addons
    return {"replicaCount": a.replicas, "resources": _resources(a), "crds": {"create": True}}


def keda_values(args: AddonsArgs) -> dict[str, Any]:
    a = args.addons
    pdb = kube.disruption_rule() if a.replicas > 1 else {}
    return {
        "crds": {"install": True},
        "operator": {"replicaCount": a.replicas},
        "metricsServer": {"replicaCount": a.replicas},
        "webhooks": {"replicaCount": a.replicas},
        "resources": {"operator": _resources(a), "metricServer": _resources(a), "webhooks": _resources(a)},
        "podDisruptionBudget": {"operator": pdb, "metricServer": pdb, "webhooks": pdb},
        # The operator's "metrics" port, which the monitoring tier's PodMonitor scrapes.
        "prometheus": {"operator": {"enabled": True}},
    }


def gateway_crds_values() -> dict[str, Any]:
    # Gateway API on its standard channel: the CRDs the manifests are validated against.
    return {"crds": {"gatewayAPI": {"enabled": True, "channel": "standard"}, "envoyGateway": {"enabled": True}}}


def envoy_gateway_values(args: AddonsArgs) -> dict[str, Any]:
    a = args.addons
    return {
        # The CRDs come from the CRD chart.
        "crds": {"enabled": False},
        "deployment": {"replicas": a.replicas, "envoyGateway": {"resources": _resources(a)}},
        "podDisruptionBudget": {"maxUnavailable": 1} if a.replicas > 1 else {},
        # A webhook its chart registers in a Helm hook; not needed for Deployment proxies.
        "topologyInjector": {"enabled": False},
    }


def prometheus_values(args: AddonsArgs) -> dict[str, Any]:
    a = args.addons
    spec = {
        "replicas": a.replicas,
        "retention": a.prometheus_retention,
        "resources": kube.resources(a.prometheus_cpu, a.prometheus_memory),
        "storageSpec": {
            "volumeClaimTemplate": {
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": a.prometheus_storage_size}}}
            }
        },
        # Select monitors and rules labelled release=<prometheusRelease>, in every
        # namespace: the ones the monitoring tier declares.
        "serviceMonitorSelectorNilUsesHelmValues": True,
        "podMonitorSelectorNilUsesHelmValues": True,
        "ruleSelectorNilUsesHelmValues": True,
    }
    return {
        "fullnameOverride": a.prometheus_release,
        "crds": {"enabled": True},
        "prometheusOperator": {
            "resources": _resources(a),
            # Its admission webhook's certificate comes from a Helm hook Job, which v4.Chart
            # does not run; rules are checked by promtool in the tests instead.
            "admissionWebhooks": {"enabled": False},
            "tls": {"enabled": False},
        },
        "prometheus": {"prometheusSpec": spec, "podDisruptionBudget": {"enabled": a.replicas > 1}},
        "alertmanager": {"alertmanagerSpec": {"replicas": a.replicas}, "podDisruptionBudget": {"enabled": a.replicas > 1}},
        # The alerts read kube-state-metrics and the node and kubelet metrics.
        "kubeStateMetrics": {"enabled": True},
        "nodeExporter": {"enabled": True},
        # The dashboard ConfigMap lives in Tikit's namespace.
        "grafana": {"sidecar": {"dashboards": {"enabled": True, "searchNamespace": "ALL"}}},
    }


def k8gb_values(args: AddonsArgs) -> dict[str, Any]:
    a, dns = args.addons, args.dns
    values: dict[str, Any] = {
        "k8gb": {
            "dnsZones": [{"parentZone": dns.parent_zone, "loadBalancedZone": dns.gslb_zone}],
            "edgeDNSServers": list(dns.edge_dns_servers),
            "clusterGeoTag": args.geo_tag,
            "extGslbClustersGeoTags": ",".join(args.peer_geo_tags),
            "reconcileRequeueSeconds": args.gslb.reconcile_seconds,
            "nsRecordTTL": args.gslb.dns_ttl_seconds,
            # The k8gb-metrics Service the monitoring tier's ServiceMonitor scrapes.
            "exposeMetrics": True,
            "resources": _resources(a),
        },
        "coredns": {"serviceType": K8GB_DNS_SERVICE_TYPE},
        "extdns": {
            "enabled": True,
            "domainFilters": [dns.parent_zone],
            # k8gb requires both to carry the cluster's geo tag (one owner per region).
            "txtPrefix": f"k8gb-{args.geo_tag}-",
            "txtOwnerId": f"k8gb-{dns.gslb_zone}-{args.geo_tag}",
        },
    }
    if dns.provider == "route53":
        values["extdns"]["provider"] = {"name": "aws"}
        if dns.route53.role_arn:
            values["extdns"]["serviceAccount"] = {"annotations": {"eks.amazonaws.com/role-arn": dns.route53.role_arn}}
    else:
        values["extdns"]["provider"] = {"name": "cloudflare"}
        values["extdns"]["env"] = [
            kube.env_from_secret("CF_API_TOKEN", dns.cloudflare.api_token_secret, dns.cloudflare.api_token_key)
        ]
    return values


def chaos_mesh_values(args: AddonsArgs) -> dict[str, Any]:
    a = args.addons
    return {
        "controllerManager": {"replicaCount": a.replicas, "resources": _resources(a)},
        "chaosDaemon": {"runtime": a.container_runtime, "socketPath": RUNTIME_SOCKETS[a.container_runtime]},
        # No NodePort dashboard, no DNS server (no DNSChaos): only what the Schedules use.
        "dashboard": {"create": False},
        "dnsServer": {"create": False},
        # Webhook certificates from cert-manager, not regenerated on every render.
        "webhook": {"certManager": {"enabled": True}},
    }


def k6_operator_values(args: AddonsArgs) -> dict[str, Any]:
    a = args.addons
    return {"installCRDs": True, "namespace": {"create": False}, "manager": {"replicas": 1, "resources": _resources(a)}}


# What an operator's chart needs running first: certificates from cert-manager, the plugin
# the CloudNativePG operator (the order of tikit/versions.py already puts them first).
NEEDS = {
    "plugin-barman-cloud": ("cert-manager", "cloudnative-pg"),
    "chaos-mesh": ("cert-manager",),
}

VALUES = {
    "cert-manager": cert_manager_values,
    "cloudnative-pg": cnpg_values,
    "plugin-barman-cloud": barman_cloud_values,
    "keda": keda_values,
    "prometheus-operator": prometheus_values,
    "k8gb": k8gb_values,
    "chaos-mesh": chaos_mesh_values,
    "k6-operator": k6_operator_values,
}


def cluster_issuer_spec(args: AddonsArgs) -> dict[str, Any]:
    """ACME with a DNS-01 solver: the only challenge that works for a name two regions
    answer for (HTTP-01 would reach whichever region DNS picks)."""
    dns = args.dns
    if dns.provider == "route53":
        route53: dict[str, Any] = {"region": dns.route53.region}
        if dns.route53.hosted_zone_id:
            route53["hostedZoneID"] = dns.route53.hosted_zone_id
        solver: dict[str, Any] = {"route53": route53}
    else:
        solver = {
            "cloudflare": {
                "apiTokenSecretRef": {"name": dns.cloudflare.api_token_secret, "key": dns.cloudflare.api_token_key}
            }
        }
    return {
        "acme": {
            "server": dns.acme_server,
            "email": dns.acme_email,
            "privateKeySecretRef": {"name": f"{args.cluster_issuer}-account-key"},
            "solvers": [{"selector": {"dnsZones": [dns.parent_zone]}, "dns01": solver}],
        }
    }


def control_plane_certificate(secret: str, namespace: str, issuer: str) -> dict[str, Any]:
    """A certificate Envoy Gateway's certgen hook would have made (upstream guide: control
    plane authentication with custom certs)."""
    if secret == "envoy-gateway":
        dns_names = [f"{secret}{suffix}" for suffix in ("", f".{namespace}", f".{namespace}.svc", f".{namespace}.svc.cluster.local")]
        common = secret
    else:
        dns_names, common = [f"*.{namespace}"], "*"
    return {
        "commonName": common,
        "dnsNames": dns_names,
        "issuerRef": {"group": "cert-manager.io", "kind": "Issuer", "name": issuer},
        "usages": ["digital signature", "data encipherment", "key encipherment", "content commitment"],
        "secretName": secret,
    }


class Addons(pulumi.ComponentResource):
    """The operators of one region's cluster, their namespaces and their configuration."""

    namespaces: dict[str, k8s.core.v1.Namespace]
    charts: dict[str, k8s.helm.v4.Chart]
    by_group: dict[str, pulumi.Resource]
    cluster_issuer: k8s.apiextensions.CustomResource
    gateway_class: k8s.apiextensions.CustomResource

    def __init__(self, name: str, args: AddonsArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:platform:Addons", name, None, opts)
        t, a = args.target, args.addons
        self.namespaces, self.charts, self.by_group = {}, {}, {}
        self.versions: dict[str, str] = {}
        operators = [o for o in versions.OPERATORS if wanted(o, args)]

        for ns in sorted({namespace_of(o.key, a) for o in operators}):
            host = ns in (a.monitoring_namespace, a.chaos_mesh_namespace)
            level, reason = HOST_POD_SECURITY if host else OPERATOR_POD_SECURITY
            self.namespaces[ns] = k8s.core.v1.Namespace(
                t.rname(f"ns-{ns}"),
                metadata=kube.metadata(
                    ns, COMPONENT, t, app=ns, namespaced=False,
                    extra_labels={
                        "pod-security.kubernetes.io/enforce": level,
                        "pod-security.kubernetes.io/enforce-version": "latest",
                        "pod-security.kubernetes.io/warn": "restricted",
                    },
                    annotations={names.POD_SECURITY_EXCEPTION_ANNOTATION: reason},
                ),
                opts=t.opts(self),
            )

        def chart(key: str, spec: versions.Chart, release: str, values: dict[str, Any], after: list[pulumi.Resource]) -> k8s.helm.v4.Chart:
            ns = namespace_of(key, a)
            self.charts[release] = k8s.helm.v4.Chart(
                t.rname(release),
                chart=spec.name,
                version=spec.version,
                repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=spec.repository) if spec.repository else None,
                namespace=ns,
                name=release,
                values=values,
                opts=t.opts(self, depends_on=[self.namespaces[ns], *after]),
            )
            return self.charts[release]

        def serve(operator: versions.Operator, resource: pulumi.Resource) -> None:
            self.versions[operator.key] = operator.version
            for group in operator.groups:
                self.by_group[group] = resource

        for operator in operators:
            if operator.key == "envoy-gateway":
                continue  # below: it needs cert-manager's certificates first
            release = a.prometheus_release if operator.key == "prometheus-operator" else operator.key
            after = [self.charts[n] for n in NEEDS.get(operator.key, ()) if n in self.charts]
            serve(operator, chart(operator.key, operator.charts[0], release, VALUES[operator.key](args), after))
        cert_manager = self.charts.get("cert-manager")

        if cert_manager is not None:
            # The Certificate of the gateway names this issuer.
            self.cluster_issuer = kube.custom(
                t.rname(args.cluster_issuer),
                CERT_MANAGER_API,
                "ClusterIssuer",
                kube.metadata(args.cluster_issuer, COMPONENT, t, app="cert-manager", namespaced=False),
                cluster_issuer_spec(args),
                t.opts(self, depends_on=[cert_manager]),
            )
            # Certificates wait for their issuer, which waits for cert-manager.
            self.by_group["cert-manager.io"] = self.cluster_issuer

        envoy = versions.BY_KEY["envoy-gateway"]
        if envoy in operators:
            ns = a.envoy_gateway_namespace
            crds_chart, controller_chart = envoy.charts
            crds = chart("envoy-gateway", crds_chart, "envoy-gateway-crds", gateway_crds_values(), [])
            issuers = self._envoy_gateway_certificates(t, ns, cert_manager)
            controller = chart("envoy-gateway", controller_chart, "envoy-gateway", envoy_gateway_values(args), [crds, *issuers])
            serve(envoy, controller)
            self.gateway_class = k8s.apiextensions.CustomResource(
                t.rname(f"gatewayclass-{args.gateway_class}"),
                api_version=GATEWAY_API,
                kind="GatewayClass",
                metadata=kube.metadata(args.gateway_class, COMPONENT, t, app="envoy-gateway", namespaced=False),
                spec={"controllerName": ENVOY_GATEWAY_CONTROLLER},
                opts=t.opts(self, depends_on=[controller]),
            )
            # Gateways and routes wait for their class, which waits for the controller.
            self.by_group["gateway.networking.k8s.io"] = self.gateway_class
        self.register_outputs({"versions": self.versions})

    def _envoy_gateway_certificates(
        self, t: kube.Target, ns: str, cert_manager: Optional[pulumi.Resource]
    ) -> list[pulumi.Resource]:
        """A private CA (self-signed root, CA issuer) and the control-plane certificates."""
        after = [cert_manager] if cert_manager is not None else []

        def cm(kind: str, name: str, spec: dict[str, Any], depends: list[pulumi.Resource]) -> pulumi.Resource:
            return k8s.apiextensions.CustomResource(
                t.rname(f"{ns}-{name}"),
                api_version=CERT_MANAGER_API,
                kind=kind,
                metadata={**kube.metadata(name, COMPONENT, t, app="envoy-gateway"), "namespace": ns},
                spec=spec,
                opts=t.opts(self, depends_on=[self.namespaces[ns], *depends]),
            )

        root = cm("Issuer", "envoy-gateway-selfsigned", {"selfSigned": {}}, after)
        ca = cm(
            "Certificate",
            "envoy-gateway-ca",
            {
                "isCA": True,
                "commonName": "envoy-gateway",
                "secretName": "envoy-gateway-ca",
                "privateKey": {"algorithm": "ECDSA", "size": 256},
                "issuerRef": {"group": "cert-manager.io", "kind": "Issuer", "name": "envoy-gateway-selfsigned"},
            },
            [root],
        )
        issuer = cm("Issuer", "envoy-gateway-ca", {"ca": {"secretName": "envoy-gateway-ca"}}, [ca])
        return [
            cm("Certificate", secret, control_plane_certificate(secret, ns, "envoy-gateway-ca"), [issuer])
            for secret in ENVOY_GATEWAY_SECRETS
        ]
