"""TLS inside one region's namespace: the internal CA (cert-manager, docs/postgres.md "TLS").

* Issuer ``tikit-selfsigned`` (selfSigned): signs only the CA below;
* Certificate ``tikit-internal-ca`` (isCA), its Secret of the same name: the namespace's own
  root, long-lived, its key never rotated (a renewal keeps the key, so every certificate it
  issued still verifies and the apps' copy of ca.crt stays valid);
* Issuer ``tikit-internal-ca`` (ca): issues the PgBouncer pools' server certificates
  (tikit/components/pgbouncer.py), which the apps verify with ``ca.crt``.

Not CNPG's cluster CA: PostgreSQL trusts that CA for client certificates (CNPG's pg_hba
accepts certificate logins, e.g. streaming_replica), so anything it signed could log in to
the database.  Not a ClusterIssuer either: the namespace owns its trust and nothing outside
it can issue for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from tikit import kube
from tikit import names

COMPONENT = "tls"
API_VERSION = "cert-manager.io/v1"
# The CA: ten years, renewed (same key) a year before it ends.
CA_DURATION = "87600h"
CA_RENEW_BEFORE = "8760h"
# ECDSA P-256: small, fast handshakes, accepted by every client library the apps use.
KEY = {"algorithm": "ECDSA", "size": 256}


@dataclass(frozen=True)
class InternalCaArgs:
    target: kube.Target


def ca_certificate_spec(target: kube.Target) -> dict:
    return {
        "isCA": True,
        "commonName": f"tikit internal CA {target.environment} {target.region}",
        "secretName": names.INTERNAL_CA,
        "duration": CA_DURATION,
        "renewBefore": CA_RENEW_BEFORE,
        # Never: a renewed CA keeps its key, so certificates it issued keep verifying.
        "privateKey": {**KEY, "rotationPolicy": "Never"},
        "issuerRef": {"group": "cert-manager.io", "kind": "Issuer", "name": names.SELF_SIGNED_ISSUER},
    }


class InternalCa(pulumi.ComponentResource):
    """The namespace's CA chain; ``issuer`` is what other tiers' Certificates name."""

    issuer: str

    def __init__(self, name: str, args: InternalCaArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("tikit:security:InternalCa", name, None, opts)
        t = args.target
        child = t.opts(self)
        self.self_signed = kube.custom(
            t.rname(names.SELF_SIGNED_ISSUER), API_VERSION, "Issuer",
            kube.metadata(names.SELF_SIGNED_ISSUER, COMPONENT, t, app=names.INTERNAL_CA), {"selfSigned": {}}, child,
        )
        self.certificate = kube.custom(
            t.rname(f"{names.INTERNAL_CA}-certificate"), API_VERSION, "Certificate",
            kube.metadata(names.INTERNAL_CA, COMPONENT, t), ca_certificate_spec(t),
            t.opts(self, depends_on=[self.self_signed]),
        )
        self.ca_issuer = kube.custom(
            t.rname(f"{names.INTERNAL_CA}-issuer"), API_VERSION, "Issuer",
            kube.metadata(names.INTERNAL_CA, COMPONENT, t), {"ca": {"secretName": names.INTERNAL_CA}},
            t.opts(self, depends_on=[self.certificate]),
        )
        self.issuer = names.INTERNAL_CA
        self.register_outputs({"issuer": self.issuer})
