"""The one table of pinned operator versions.

Every operator the platform's custom resources need, pinned to an exact release: the Helm
chart the add-ons tier installs (components/addons.py), and the upstream CRD files of that
release, by path and sha256, which the preview validates every rendered custom resource
against (``python -m preview crds`` downloads exactly these files; docs/architecture.md).
Bumping an operator is one row here: its chart version, its CRD tag and the new sums.

Pure data with no imports from the rest of the program: the policy pack, which runs apart
from it, reads this table too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

# Where a release's files are served: <base>/<repo>/<tag>/<path>.
RAW_BASE = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class Crd:
    """One CRD file: the sha256 of its bytes, the kind it defines and the versions it serves."""

    sha256: str
    kind: str
    served: tuple[str, ...]


def crd(sha256: str, kind: str, *served: str) -> Crd:
    return Crd(sha256, kind, served)


@dataclass(frozen=True)
class CrdFiles:
    """CRD files of one upstream release: ``<repo>@<tag>:<directory>/<file>``.  ``folder`` is
    the directory they live in under the CRD cache or mirror ($TIKIT_CRDS_DIR):
    ``<folder>/<file>``."""

    folder: str
    repo: str
    tag: str
    directory: str
    files: Mapping[str, Crd]

    def url(self, file: str, base: str = RAW_BASE) -> str:
        return f"{base.rstrip('/')}/{self.repo}/{self.tag}/{self.directory}/{file}"


@dataclass(frozen=True)
class Chart:
    """The official Helm chart of a release: an https repository, or an oci:// reference
    (then ``repository`` is empty and ``name`` is the full reference)."""

    name: str
    version: str
    repository: str = ""


@dataclass(frozen=True)
class Operator:
    key: str
    title: str
    version: str
    # API groups whose kinds this release serves (the CRDs below define them).
    groups: tuple[str, ...]
    crds: tuple[CrdFiles, ...]
    # The charts that install it, in order; none: the cluster's own (a prerequisite).
    charts: tuple[Chart, ...] = ()
    # "always", "multi-region" (only with more than one region), "resilience" (only where
    # the resilience tier is on), or "prerequisite" (never installed by the program).
    when: str = "always"

    @property
    def installed(self) -> bool:
        return self.when != "prerequisite"


OPERATORS: tuple[Operator, ...] = (
    Operator(
        key="cert-manager",
        title="cert-manager",
        version="1.21.1",
        groups=("cert-manager.io",),
        charts=(Chart("cert-manager", "v1.21.1", "https://charts.jetstack.io"),),
        crds=(
            CrdFiles("cert-manager", "cert-manager/cert-manager", "v1.21.1", "deploy/crds", {
                "cert-manager.io_certificates.yaml": crd("7ad91029c00ec959d54215b19d3b1a9b7e0247eaa60f987151c2b70d8661f8af", "Certificate", "v1"),
                "cert-manager.io_clusterissuers.yaml": crd("30008001b78aafb8e110af61359561104b5fafc3a4dc6ac0013245d0ee3fe4ca", "ClusterIssuer", "v1"),
                "cert-manager.io_issuers.yaml": crd("05e37efb02777e0362d24269fa103c2fc11419f9c85e31854ef873e5d9e5c5cc", "Issuer", "v1"),
            }),
        ),
    ),
    Operator(
        key="cloudnative-pg",
        title="CloudNativePG",
        version="1.30.0",
        groups=("postgresql.cnpg.io",),
        charts=(Chart("cloudnative-pg", "0.29.0", "https://cloudnative-pg.github.io/charts"),),
        crds=(
            CrdFiles("cloudnative-pg", "cloudnative-pg/cloudnative-pg", "v1.30.0", "config/crd/bases", {
                "postgresql.cnpg.io_backups.yaml": crd("694bafce2eda4603629657c2141a89189c15250c74215002a6987538d3d78ff5", "Backup", "v1"),
                "postgresql.cnpg.io_clusters.yaml": crd("ae47f4a00f6e998faef57e480f9a3960cd48ea16a79270861fc7442601507472", "Cluster", "v1"),
                "postgresql.cnpg.io_poolers.yaml": crd("9e0dad05355f72dceb154a12b43ebe8a410d470133ad228bf711c1fdee221124", "Pooler", "v1"),
                "postgresql.cnpg.io_scheduledbackups.yaml": crd("1dffb969a92ed6b09abe59d9c848ff97c6646c7824e75f8e0b8379df8473a145", "ScheduledBackup", "v1"),
            }),
        ),
    ),
    Operator(
        key="plugin-barman-cloud",
        title="Barman Cloud plugin",
        version="0.14.0",
        groups=("barmancloud.cnpg.io",),
        # Chart 0.7.1 carries the plugin's v0.14.0 images.
        charts=(Chart("plugin-barman-cloud", "0.7.1", "https://cloudnative-pg.github.io/charts"),),
        crds=(
            CrdFiles("plugin-barman-cloud", "cloudnative-pg/plugin-barman-cloud", "v0.14.0", "config/crd/bases", {
                "barmancloud.cnpg.io_objectstores.yaml": crd("7c98720494253421339acd03aa77487869326ea20d4768a0c3aef8ff076daaef", "ObjectStore", "v1"),
            }),
        ),
    ),
    Operator(
        key="keda",
        title="KEDA",
        version="2.20.2",
        groups=("keda.sh",),
        charts=(Chart("keda", "2.20.2", "https://kedacore.github.io/charts"),),
        crds=(
            CrdFiles("keda", "kedacore/keda", "v2.20.2", "config/crd/bases", {
                "keda.sh_scaledjobs.yaml": crd("8805cd6c5b05161fb1541726e2c32c8e2990f435649fa74cbc616600b84b583a", "ScaledJob", "v1alpha1"),
                "keda.sh_scaledobjects.yaml": crd("af35555862a83933b074af14ad439c4b4ceabaf4daa3e9338e9b23e36d308d80", "ScaledObject", "v1alpha1"),
                "keda.sh_triggerauthentications.yaml": crd("275307b4cb19ca8f0f506a879282aa4c67587ac16ec757f494d6585c5c185d65", "TriggerAuthentication", "v1alpha1"),
            }),
        ),
    ),
    Operator(
        key="envoy-gateway",
        title="Envoy Gateway (Gateway API 1.6.1)",
        version="1.9.0",
        groups=("gateway.envoyproxy.io", "gateway.networking.k8s.io"),
        # The CRD chart first (Gateway API on its standard channel, which the manifests are
        # validated against, and Envoy Gateway's own), then the controller without CRDs.
        charts=(
            Chart("oci://docker.io/envoyproxy/gateway-crds-helm", "v1.9.0"),
            Chart("oci://docker.io/envoyproxy/gateway-helm", "v1.9.0"),
        ),
        crds=(
            CrdFiles("envoy-gateway", "envoyproxy/gateway", "v1.9.0", "charts/gateway-helm/charts/crds/crds/generated", {
                "gateway.envoyproxy.io_backendtrafficpolicies.yaml": crd("cd75a4c222df5487aa9ca8957b48bcc3255eb25de02ed9153faf620bc160f786", "BackendTrafficPolicy", "v1alpha1"),
                "gateway.envoyproxy.io_clienttrafficpolicies.yaml": crd("2c7eaa1ce30de626e9c362b8d9002281c2f435f970020fa81902ad7f30b38d5b", "ClientTrafficPolicy", "v1alpha1"),
                "gateway.envoyproxy.io_envoyproxies.yaml": crd("3e9ea2f348445e3798b02daf02bf024b0d944227cf5ef8a18da7f675a1afd223", "EnvoyProxy", "v1alpha1"),
                "gateway.envoyproxy.io_securitypolicies.yaml": crd("6412914ec5b7c48f58b85f60a80767ba15a50c8d374480cf5f2d872e4a764466", "SecurityPolicy", "v1alpha1"),
            }),
            CrdFiles("gateway-api", "kubernetes-sigs/gateway-api", "v1.6.1", "config/crd/standard", {
                "gateway.networking.k8s.io_gatewayclasses.yaml": crd("53710048ba26f8620eed59d5e51b157ecf040daf5c6eef31a4b991e0808c4be5", "GatewayClass", "v1", "v1beta1"),
                "gateway.networking.k8s.io_gateways.yaml": crd("25b885f5870b8fff1ae82efa2628b2761cef3745900c2aecf8fb76629a01255a", "Gateway", "v1", "v1beta1"),
                "gateway.networking.k8s.io_httproutes.yaml": crd("a424a0d6c953b162e71d1d97bb7e75012d8f1ac264e7274f2763d1b96ab39852", "HTTPRoute", "v1", "v1beta1"),
                "gateway.networking.k8s.io_referencegrants.yaml": crd("8c645e9333cfa67790cc2a53e0c00076f88b2bd4230d2b49688c78bc34f9b2c3", "ReferenceGrant", "v1", "v1beta1"),
            }),
        ),
    ),
    Operator(
        key="prometheus-operator",
        title="Prometheus Operator (kube-prometheus-stack)",
        version="0.93.0",
        groups=("monitoring.coreos.com",),
        # 88.3.0 ships the operator v0.93.0 with kube-state-metrics and node-exporter.
        charts=(Chart("kube-prometheus-stack", "88.3.0", "https://prometheus-community.github.io/helm-charts"),),
        crds=(
            CrdFiles("prometheus-operator", "prometheus-operator/prometheus-operator", "v0.93.0", "example/prometheus-operator-crd", {
                "monitoring.coreos.com_podmonitors.yaml": crd("45a93443daa687d3654f7e9631909ff7edcdf3ec09c5e60251b74aa2722aee5d", "PodMonitor", "v1"),
                "monitoring.coreos.com_prometheusrules.yaml": crd("78be98554b9c8506ab2b4f4feb91c5f3a56e536a0a510f3a8e876a459970d56d", "PrometheusRule", "v1"),
                "monitoring.coreos.com_servicemonitors.yaml": crd("a99047972c9dd7679ce2050b9968e8a08773492e671b3e17abd476d42aa78a32", "ServiceMonitor", "v1"),
            }),
        ),
    ),
    Operator(
        key="k8gb",
        title="k8gb",
        version="0.20.0",
        groups=("k8gb.io", "k8gb.absa.oss"),
        charts=(Chart("k8gb", "v0.20.0", "https://www.k8gb.io"),),
        crds=(
            CrdFiles("k8gb", "k8gb-io/k8gb", "v0.20.0", "chart/k8gb/crd", {
                "k8gb.absa.oss_gslbs.yaml": crd("6dca1b06c842364fc25f866470af70b988941222da1ae5422755cab5fd5230a5", "Gslb", "v1beta1"),
                "k8gb.io_gslbs.yaml": crd("042e9c5c4086f1e182d0dea347fee02f78676dddec1b16378e1ea5aafa8f6789", "Gslb", "v1beta1"),
            }),
        ),
        when="multi-region",
    ),
    Operator(
        key="chaos-mesh",
        title="Chaos Mesh",
        version="2.8.3",
        groups=("chaos-mesh.org",),
        charts=(Chart("chaos-mesh", "2.8.3", "https://charts.chaos-mesh.org"),),
        crds=(
            CrdFiles("chaos-mesh", "chaos-mesh/chaos-mesh", "v2.8.3", "config/crd/bases", {
                "chaos-mesh.org_networkchaos.yaml": crd("d151d3d38cfb4e906df457a2927a8bad8872241655b0267e08e3315b1b615974", "NetworkChaos", "v1alpha1"),
                "chaos-mesh.org_podchaos.yaml": crd("60b1a4aca7588b8e14768f4868e5b348475dfc2cbe47707ef38269860f220396", "PodChaos", "v1alpha1"),
                "chaos-mesh.org_schedules.yaml": crd("ad88f0751dbea652de857153e9d16790df92777852980b04ce8b069fdf2367e3", "Schedule", "v1alpha1"),
                "chaos-mesh.org_stresschaos.yaml": crd("db0c878183757ac240de8ddf2e616b8bb66830bfad2f4b8328fe29d4e1588847", "StressChaos", "v1alpha1"),
            }),
        ),
        when="resilience",
    ),
    Operator(
        key="k6-operator",
        title="k6-operator",
        version="1.6.0",
        groups=("k6.io",),
        charts=(Chart("k6-operator", "4.6.0", "https://grafana.github.io/helm-charts"),),
        crds=(
            CrdFiles("k6-operator", "grafana/k6-operator", "v1.6.0", "config/crd/bases", {
                "k6.io_testruns.yaml": crd("d4df597bb94d210bcb9368dd4faf81da25c08194e240da98e4df8887563be185", "TestRun", "v1alpha1"),
            }),
        ),
        when="resilience",
    ),
    Operator(
        key="karpenter",
        title="Karpenter (the cluster's node provisioner)",
        version="1.14.1",
        groups=("karpenter.sh", "karpenter.k8s.aws", "autoscaling.x-k8s.io"),
        crds=(
            CrdFiles("karpenter", "aws/karpenter-provider-aws", "v1.14.1", "pkg/apis/crds", {
                "autoscaling.x-k8s.io_capacitybuffers.yaml": crd("66fd5680b902b38fb9657ad2b432196a06c42b37d078e53be2e39909200a6342", "CapacityBuffer", "v1beta1"),
                "karpenter.k8s.aws_ec2nodeclasses.yaml": crd("62dec59f01c0972d4503ca3ed25f243ba9c2f561be0d964ce7a14c8df406132f", "EC2NodeClass", "v1"),
                "karpenter.sh_nodepools.yaml": crd("3bb64a20c80776b77aa19a699ebdaf34480a7b2e7ec4ef890b43225b3517f878", "NodePool", "v1"),
            }),
        ),
        when="prerequisite",
    ),
)

BY_KEY: Mapping[str, Operator] = {o.key: o for o in OPERATORS}


def operator_for_group(group: str) -> Optional[Operator]:
    """The operator that serves an API group, or None for a built-in group."""
    return next((o for o in OPERATORS if group in o.groups), None)


def crd_files() -> list[tuple[CrdFiles, str]]:
    """Every pinned CRD file: (its release, file name)."""
    return [(c, f) for o in OPERATORS for c in o.crds for f in sorted(c.files)]


def served_kinds(operator: Operator) -> set[tuple[str, str]]:
    """(apiVersion, kind) of every custom resource ``operator``'s pinned CRDs serve."""
    out = set()
    for files in operator.crds:
        for name, c in files.files.items():
            group = name.split("_", 1)[0]
            out |= {(f"{group}/{v}", c.kind) for v in c.served}
    return out
