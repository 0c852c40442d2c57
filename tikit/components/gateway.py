"""Traffic: one region's entry point on Gateway API, implemented by Envoy Gateway.

A Gateway with an HTTPS listener (certificate from a cert-manager Certificate) and an HTTP
listener that only redirects to HTTPS; an EnvoyProxy that gives the gateway a LoadBalancer
Service with externalTrafficPolicy Local, so Envoy sees the client's own address; a REST
route and a WebSocket route to the API Service, each with its BackendTrafficPolicy
(docs/traffic.md explains the algorithms, timeouts and retries).

The GatewayClass is not declared here: it is cluster-scoped and installed with Envoy Gateway
(docs/traffic.md), and everything Tikit-specific about the proxies hangs off this Gateway's
own spec.infrastructure.parametersRef instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names
from tikit.settings import Gateway as GatewaySettings

COMPONENT = "gateway"

# The first retry waits up to this long (jittered exponential backoff, capped at 10x).
RETRY_BACKOFF = "100ms"
# Active health checks from the gateway to each API pod (GET nodeapp.HEALTH_PATH).
HEALTH_CHECK_INTERVAL = "10s"
HEALTH_CHECK_TIMEOUT = "5s"
HEALTH_CHECK_UNHEALTHY_THRESHOLD = 3
HEALTH_CHECK_HEALTHY_THRESHOLD = 1

GATEWAY_API = "gateway.networking.k8s.io/v1"
# What `pulumi up` waits for on the Gateway (the provider's generic await, JSONPath).
WAIT_FOR_ADDRESS = "jsonpath={.status.addresses[0].value}"
# The stack output before the controller has reported an address (a rendered or mock run).
NO_ADDRESS = "(assigned by the load balancer at pulumi up)"
GATEWAY_GROUP = "gateway.networking.k8s.io"
ENVOY_API = "gateway.envoyproxy.io/v1alpha1"
ENVOY_GROUP = "gateway.envoyproxy.io"
CERT_MANAGER_API = "cert-manager.io/v1"

# What browsers and the cloud load balancer dial; not tunable.
HTTPS_PORT = 443
HTTP_PORT = 80
HTTPS_LISTENER = "https"
HTTP_LISTENER = "http"

# Route rule names: BackendTrafficPolicies attach to a rule through sectionName.
IDEMPOTENT_RULE = "idempotent"
WRITES_RULE = "writes"
WEBSOCKET_RULE = "websocket"

# RFC 9110 idempotent methods: sending one twice has the effect of sending it once, so
# the gateway may retry them (the idempotent rule).  POST, PATCH and anything else fall
# to the writes rule, which never retries (a replayed POST could book a ticket twice).
IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
# Retry when the pod never answered (refused, reset, connect failure) or the upstream
# side answered with a gateway-class error.
RETRY_TRIGGERS = ("connect-failure", "refused-stream", "reset", "retriable-status-codes")
RETRIABLE_STATUSES = (502, 503, 504)
# Permanent: browsers remember it and go straight to HTTPS next time.
REDIRECT_STATUS = 301
# A socket is one long request: no total deadline, only the idle timeout bounds it.
NO_REQUEST_TIMEOUT = "0s"

# Labels Envoy Gateway puts on the proxy pods and Service of a Gateway.
OWNING_GATEWAY_NAME = "gateway.envoyproxy.io/owning-gateway-name"
OWNING_GATEWAY_NAMESPACE = "gateway.envoyproxy.io/owning-gateway-namespace"


def envoy_pod_labels(namespace: str) -> dict[str, str]:
    """Selector of this namespace's gateway proxies, wherever Envoy Gateway runs them."""
    return {OWNING_GATEWAY_NAME: names.GATEWAY, OWNING_GATEWAY_NAMESPACE: namespace}


@dataclass(frozen=True)
class GatewayArgs:
    target: kube.Target
    gateway: GatewaySettings
    # The API Service and port the routes send traffic to (the backend component's).
    backend_service: str
    backend_port: int
    # Path the gateway's active health checks request on every API pod.
    health_path: str
    # The name k8gb answers in its delegated zone (multi-region stacks; the public hostname
    # is a CNAME of it, docs/traffic.md): the REST route carries it for the Gslb.
    gslb_hostname: Optional[str] = None


# --- specs (pure functions of the args, so tests and docs can call them) ---------------


def envoy_proxy_spec(args: GatewayArgs) -> dict[str, Any]:
    g = args.gateway
    pods = envoy_pod_labels(args.target.namespace)
    return {
        "provider": {
            "type": "Kubernetes",
            "kubernetes": {
                # Local: the cloud load balancer only sends to nodes running a proxy, and
                # kube-proxy does not SNAT, so Envoy sees the client's address.  With
                # Cluster, every connection would arrive from a node IP and the WebSocket
                # IP hash would pin all clients behind one node to one pod.
                "envoyService": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
                "envoyDeployment": {
                    "replicas": g.envoy_replicas,
                    "container": {"resources": kube.resources(g.envoy_cpu, g.envoy_memory)},
                    # Local traffic policy makes proxy placement matter: spread over zones
                    # and nodes so every zone's load balancer targets have a proxy.
                    "pod": {"topologySpreadConstraints": kube.spread(pods), **kube.pool_placement(args.target, names.PRIORITY_API)},
                },
                # The same disruption rule as every PodDisruptionBudget of ours.
                "envoyPDB": kube.disruption_rule(),
            },
        }
    }


def gateway_spec(args: GatewayArgs) -> dict[str, Any]:
    g = args.gateway
    same_namespace = {"namespaces": {"from": "Same"}}
    return {
        "gatewayClassName": g.class_name,
        "infrastructure": {
            "parametersRef": {"group": ENVOY_GROUP, "kind": "EnvoyProxy", "name": names.GATEWAY_PROXY}
        },
        "listeners": [
            {
                "name": HTTPS_LISTENER,
                "protocol": "HTTPS",
                "port": HTTPS_PORT,
                "hostname": g.hostname,
                "tls": {
                    "mode": "Terminate",
                    "certificateRefs": [{"group": "", "kind": "Secret", "name": names.TLS_SECRET}],
                },
                "allowedRoutes": same_namespace,
            },
            {
                "name": HTTP_LISTENER,
                "protocol": "HTTP",
                "port": HTTP_PORT,
                "hostname": g.hostname,
                "allowedRoutes": same_namespace,
            },
        ],
    }


def certificate_spec(args: GatewayArgs, secret_labels: dict[str, str]) -> dict[str, Any]:
    g = args.gateway
    return {
        "secretName": names.TLS_SECRET,
        "dnsNames": [g.hostname],
        "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": g.cluster_issuer},
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "secretTemplate": {"labels": dict(secret_labels)},
    }


def address_of(status: Any) -> str:
    """The Gateway's first reported address."""
    addresses = (status or {}).get("addresses") or []
    return str(addresses[0].get("value")) if addresses and addresses[0].get("value") else NO_ADDRESS


def _parent(listener: str) -> list[dict[str, Any]]:
    # Exactly one parent: k8gb follows the route to its Gateway and wants a single one.
    return [{"group": GATEWAY_GROUP, "kind": "Gateway", "name": names.GATEWAY, "sectionName": listener}]


def _backend(args: GatewayArgs) -> list[dict[str, Any]]:
    return [{"group": "", "kind": "Service", "name": args.backend_service, "port": args.backend_port}]


def rest_route_spec(args: GatewayArgs) -> dict[str, Any]:
    """Two rules over the same paths: idempotent methods (retried) and everything else.

    A match with a method outranks one without (Gateway API precedence), so GET or PUT
    /api/x takes the idempotent rule and POST /api/x the writes rule.  The health path is
    public for uptime checks, GET and HEAD only.
    """
    g = args.gateway
    prefix = {"type": "PathPrefix", "value": names.API_PREFIX}
    idempotent = [{"path": prefix, "method": m} for m in IDEMPOTENT_METHODS]
    idempotent += [{"path": {"type": "Exact", "value": args.health_path}, "method": m} for m in ("GET", "HEAD")]
    return {
        "parentRefs": _parent(HTTPS_LISTENER),
        "hostnames": [g.hostname, *([args.gslb_hostname] if args.gslb_hostname else [])],
        "rules": [
            {"name": IDEMPOTENT_RULE, "matches": idempotent, "backendRefs": _backend(args)},
            {"name": WRITES_RULE, "matches": [{"path": prefix}], "backendRefs": _backend(args)},
        ],
    }


def websocket_route_spec(args: GatewayArgs) -> dict[str, Any]:
    g = args.gateway
    return {
        "parentRefs": _parent(HTTPS_LISTENER),
        "hostnames": [g.hostname],
        "rules": [
            {
                "name": WEBSOCKET_RULE,
                "matches": [{"path": {"type": "PathPrefix", "value": p}} for p in names.WEBSOCKET_PATHS],
                "backendRefs": _backend(args),
            }
        ],
    }


def redirect_route_spec(args: GatewayArgs) -> dict[str, Any]:
    return {
        "parentRefs": _parent(HTTP_LISTENER),
        "hostnames": [args.gateway.hostname],
        "rules": [
            {
                "filters": [
                    {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": REDIRECT_STATUS}}
                ]
            }
        ],
    }


def _target(route: str, rule: str) -> list[dict[str, Any]]:
    return [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "name": route, "sectionName": rule}]


def _health_check(args: GatewayArgs) -> dict[str, Any]:
    return {
        "active": {
            "type": "HTTP",
            "http": {"path": args.health_path, "method": "GET"},
            "interval": HEALTH_CHECK_INTERVAL,
            "timeout": HEALTH_CHECK_TIMEOUT,
            "unhealthyThreshold": HEALTH_CHECK_UNHEALTHY_THRESHOLD,
            "healthyThreshold": HEALTH_CHECK_HEALTHY_THRESHOLD,
        }
    }


def rest_policy_spec(args: GatewayArgs, rule: str) -> dict[str, Any]:
    """Load balancing, health checks and the request timeout for one REST rule; retries
    only on the idempotent rule.  The timeout covers all attempts, retries included."""
    g = args.gateway
    if rule == IDEMPOTENT_RULE:
        retry: dict[str, Any] = {
            "numRetries": g.retries,
            "retryOn": {"triggers": list(RETRY_TRIGGERS), "httpStatusCodes": list(RETRIABLE_STATUSES)},
            "perRetry": {"backOff": {"baseInterval": RETRY_BACKOFF}},
        }
    else:
        # Explicitly none, so a Gateway-wide policy added later cannot turn them on here.
        retry = {"numRetries": 0}
    return {
        "targetRefs": _target(names.REST_ROUTE, rule),
        "loadBalancer": {"type": g.rest_load_balancer},
        "healthCheck": _health_check(args),
        "timeout": {"http": {"requestTimeout": g.request_timeout}},
        "retry": retry,
    }


def websocket_policy_spec(args: GatewayArgs) -> dict[str, Any]:
    """Consistent hash on the client address: Socket.IO's polling handshake and the
    upgraded socket that follows must reach the same pod."""
    g = args.gateway
    return {
        "targetRefs": _target(names.WEBSOCKET_ROUTE, WEBSOCKET_RULE),
        "loadBalancer": {"type": "ConsistentHash", "consistentHash": {"type": "SourceIP"}},
        "healthCheck": _health_check(args),
        # The route's idle timeout overrides the listener's 5-minute stream idle default.
        "timeout": {"http": {"requestTimeout": NO_REQUEST_TIMEOUT, "streamIdleTimeout": g.websocket_idle_timeout}},
    }


# --- the component ---------------------------------------------------------------------


class Gateway(pulumi.ComponentResource):
    """Gateway, TLS certificate, proxy shape, routes and their traffic policies in one region."""

    envoy_proxy: k8s.apiextensions.CustomResource
    certificate: k8s.apiextensions.CustomResource
    gateway: k8s.apiextensions.CustomResource
    rest_route: k8s.apiextensions.CustomResource
    websocket_route: k8s.apiextensions.CustomResource
    redirect_route: k8s.apiextensions.CustomResource
    rest_policies: dict[str, k8s.apiextensions.CustomResource]
    websocket_policy: k8s.apiextensions.CustomResource

    def __init__(self, name: str, args: GatewayArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:traffic:Gateway", name, None, opts)
        t = args.target
        child = t.opts(self)

        def meta(obj_name: str) -> dict[str, Any]:
            return kube.metadata(obj_name, COMPONENT, t, app=names.GATEWAY)

        self.envoy_proxy = kube.custom(
            t.rname(names.GATEWAY_PROXY), ENVOY_API, "EnvoyProxy", meta(names.GATEWAY_PROXY), envoy_proxy_spec(args), child
        )
        tls_meta = meta(names.TLS_SECRET)
        self.certificate = kube.custom(
            t.rname(names.TLS_SECRET),
            CERT_MANAGER_API,
            "Certificate",
            tls_meta,
            certificate_spec(args, tls_meta["labels"]),
            child,
        )
        gateway_meta = meta(names.GATEWAY)
        # `pulumi up` waits until the controller has published the load balancer's address.
        gateway_meta["annotations"] = {kube.WAIT_FOR_ANNOTATION: WAIT_FOR_ADDRESS}
        self.gateway = kube.custom_with_status(
            t.rname(f"gateway-{names.GATEWAY}"),
            GATEWAY_API,
            "Gateway",
            gateway_meta,
            gateway_spec(args),
            t.opts(self, depends_on=[self.envoy_proxy, self.certificate]),
        )
        # The public address clients reach (the cloud load balancer's IP or hostname).
        self.address: pulumi.Output[str] = self.gateway.status.apply(address_of)
        after_gateway = t.opts(self, depends_on=[self.gateway])
        self.rest_route = kube.custom(
            t.rname(names.REST_ROUTE), GATEWAY_API, "HTTPRoute", meta(names.REST_ROUTE), rest_route_spec(args), after_gateway
        )
        self.websocket_route = kube.custom(
            t.rname(names.WEBSOCKET_ROUTE),
            GATEWAY_API,
            "HTTPRoute",
            meta(names.WEBSOCKET_ROUTE),
            websocket_route_spec(args),
            after_gateway,
        )
        self.redirect_route = kube.custom(
            t.rname(names.REDIRECT_ROUTE),
            GATEWAY_API,
            "HTTPRoute",
            meta(names.REDIRECT_ROUTE),
            redirect_route_spec(args),
            after_gateway,
        )
        self.rest_policies = {
            rule: kube.custom(
                t.rname(f"{names.REST_ROUTE}-{rule}"),
                ENVOY_API,
                "BackendTrafficPolicy",
                meta(f"{names.REST_ROUTE}-{rule}"),
                rest_policy_spec(args, rule),
                t.opts(self, depends_on=[self.rest_route]),
            )
            for rule in (IDEMPOTENT_RULE, WRITES_RULE)
        }
        self.websocket_policy = kube.custom(
            t.rname(f"{names.WEBSOCKET_ROUTE}-policy"),
            ENVOY_API,
            "BackendTrafficPolicy",
            meta(names.WEBSOCKET_ROUTE),
            websocket_policy_spec(args),
            t.opts(self, depends_on=[self.websocket_route]),
        )
        self.hostname = args.gateway.hostname
        self.rest_route_name = names.REST_ROUTE
        self.register_outputs({"hostname": self.hostname, "restRoute": names.REST_ROUTE})
