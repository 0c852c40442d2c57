"""Regional failover: one k8gb Gslb per region, same name and strategy everywhere.

k8gb answers DNS for the Gateway hostname.  With the failover strategy every cluster hands
out the primary region's gateway address while the primary is healthy, and its own
address once the primary is not; the primary is whichever cluster carries
``primaryGeoTag`` (k8gb's install setting clusterGeoTag).  The Gslb follows the region's
REST HTTPRoute: k8gb 0.20 resolves HTTPRoute references (hostnames from the route, the
address from its one parent Gateway, health from the backend Service's ready endpoints);
a Gateway itself is not a supported resourceRef kind.

docs/runbooks/failover.md walks through a failover and shows ``failover_estimate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names
from tikit.settings import Gslb as GslbSettings

COMPONENT = "failover"
GSLB_API = "k8gb.io/v1beta1"
ROUTE_API = "gateway.networking.k8s.io/v1"
STRATEGY = "failover"


@dataclass(frozen=True)
class FailoverArgs:
    target: kube.Target
    gslb: GslbSettings
    # The primary region's k8gb geo tag: where DNS answers point while it is healthy.
    primary_geo_tag: str
    # The HTTPRoute (carrying the public hostname) whose health decides the region's DNS answer.
    route: str


def gslb_spec(args: FailoverArgs) -> dict[str, Any]:
    g = args.gslb
    return {
        "resourceRef": {"apiVersion": ROUTE_API, "kind": "HTTPRoute", "name": args.route},
        "strategy": {"type": STRATEGY, "primaryGeoTag": args.primary_geo_tag, "dnsTtlSeconds": g.dns_ttl_seconds},
    }


@dataclass(frozen=True)
class FailoverEstimate:
    """How long clients keep reaching a dead primary, for resolvers that honour the TTL."""

    reconcile_seconds: int
    dns_ttl_seconds: int

    @property
    def worst_case_seconds(self) -> int:
        # The primary fails just after a reconcile (the backup's k8gb notices a full
        # interval later), and a resolver cached the old answer just before the switch.
        return self.reconcile_seconds + self.dns_ttl_seconds

    @property
    def typical_seconds(self) -> int:
        # Failure and cache age land uniformly within their intervals: half of each.
        return (self.reconcile_seconds + self.dns_ttl_seconds + 1) // 2

    def with_resolver_floor(self, floor_seconds: int) -> int:
        """Worst case behind a resolver that never caches for less than ``floor_seconds``."""
        return self.reconcile_seconds + max(self.dns_ttl_seconds, floor_seconds)


def failover_estimate(gslb: GslbSettings) -> FailoverEstimate:
    return FailoverEstimate(reconcile_seconds=gslb.reconcile_seconds, dns_ttl_seconds=gslb.dns_ttl_seconds)


class Failover(pulumi.ComponentResource):
    """The region's Gslb."""

    gslb: k8s.apiextensions.CustomResource

    def __init__(self, name: str, args: FailoverArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:traffic:Failover", name, None, opts)
        t = args.target
        self.gslb = kube.custom(
            t.rname(f"gslb-{names.GSLB}"),
            GSLB_API,
            "Gslb",
            kube.metadata(names.GSLB, COMPONENT, t, app=names.GATEWAY),
            gslb_spec(args),
            t.opts(self),
        )
        self.register_outputs({"gslb": names.GSLB, "strategy": STRATEGY})
