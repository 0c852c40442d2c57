"""Value types of the settings: a string or number plus the rule it must follow.

Each rule is the one the component that consumes the value, or the API server that stores
it, applies: Kubernetes quantities, DNS labels and names, label keys, container image
references, the cron dialects.  A broken rule raises ValueError with the message the user
sees after ``<key>: `` (settings.ConfigError).

Every pattern must match the WHOLE value (``fullmatch``): Python's ``$`` also matches before
a final newline, so ``re.match(r"^[a-z]+$", "lagos\n")`` succeeds.  On top of the types,
every string setting is printable text (settings.Section refuses the rest, see
``unprintable``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Callable, Optional

from pydantic import AfterValidator

from tikit import cron, units

# Kubernetes name rules (k8s.io/apimachinery/pkg/util/validation): IsDNS1123Label (63),
# IsDNS1123Subdomain (253), IsQualifiedName (label keys), IsValidLabelValue (63).
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# The distribution reference grammar: an optional registry host[:port]/, then path
# components of lowercase letters and digits joined by '.', '_', '__' or dashes (never '..'),
# an optional tag and an optional sha256 digest.
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_DOMAIN = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/"
IMAGE_RE = re.compile(
    rf"^(?:{_IMAGE_DOMAIN})?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/%-]*)?$")
DURATION_RE = re.compile(r"^[0-9]+(ms|s|m|h)$")
PROMQL_DURATION_RE = re.compile(r"^[1-9][0-9]*[smh]$")
# At most four digits: 9999 days is already beyond any retention a store would keep.
RETENTION_RE = re.compile(r"^[1-9][0-9]{0,3}[dwm]$")
METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]$")
IANA_ZONE_RE = re.compile(r"^[A-Za-z_]+(/[A-Za-z_+-]+)*$")
# Chaos Mesh durations (its CRDs' own pattern).
CHAOS_DURATION_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h)$")
# A Secret's data key (k8s.io/apimachinery IsConfigMapKey): at most 253 of these
# characters, and neither '.', '..' nor anything starting with '..' (secret_key_problem).
SECRET_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
BASE64_RE = re.compile(r"^[A-Za-z0-9+/=]*$")
# A k8gb geo tag goes into DNS names (the delegated zone's name servers): a DNS label.
GEO_TAG_RE = re.compile(r"^$|^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A Helm release name (Helm's own rule: a DNS-1123 label of at most 53 characters, since
# charts append suffixes); kube-prometheus-stack's is also a label value and the first part
# of its Prometheus Service's host name (derived.prometheus_address).
HELM_RELEASE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")
# A StorageClass name is a DNS-1123 subdomain; empty means the cluster's default class.
STORAGE_CLASS_RE = re.compile(r"^$|" + DNS_SUBDOMAIN_RE.pattern)
# A region name is a DNS label that other names are built from: label values such as
# app.kubernetes.io/instance '<app>-<region>' (at most 63; the longest app name,
# 'network-policy', leaves 48), the CNPG Services 'pg-<region>-rw', the Redis pods and the
# bucket '<prefix>-<environment>-<region>' (settings checks its length).  40 leaves room.
REGION_NAME_MAX = 40
REGION_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,%d}[a-z0-9])?$" % (REGION_NAME_MAX - 2))
# kubeconfig context names are free text in kubeconfig (EKS uses ARNs: ':' and '/'); at
# most this long and printable, as every setting is.
CONTEXT_MAX = 253
# URLs end up in annotations (runbook_url) and provider settings: long enough for any
# real one.
URL_MAX = 2048
# CPU: at most this many cores for one container (no node we run has more).
MAX_CPU_MILLIS = 64000
MIN_MEMORY_BYTES = 64 * units.MIB
MAX_MEMORY_BYTES = 512 * units.GIB
# EBS, Persistent Disk and Azure Disk all stop at 64 TiB per volume.
MAX_STORAGE_BYTES = 64 * units.TIB


def unprintable(text: str, allowed: str = "") -> Optional[str]:
    """The first character of ``text`` that is not printable (control characters, Unicode
    format characters such as bidi overrides and zero-width spaces, line and paragraph
    separators, whitespace other than ' ', lone surrogates, unassigned code points) and
    not in ``allowed``, as 'U+XXXX'; None when there is none."""
    if text.isprintable():  # the common case, in C
        return None
    for ch in text:
        if not ch.isprintable() and ch not in allowed:
            return f"U+{ord(ch):04X}"
    return None


def _rule(check: Callable[[str], Optional[str]]) -> AfterValidator:
    def run(value: str) -> str:
        problem = check(value)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(run)


def _pattern(rx: re.Pattern, what: str) -> AfterValidator:
    return _rule(lambda v: None if rx.fullmatch(v) else f"must be {what}, got {_shown(v)}")


def _shown(v: str, limit: int = 80) -> str:
    """A value quoted in a message: repr (control characters escaped), cut to ``limit``."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def label_key_problem(key: str) -> Optional[str]:
    """A label or annotation key: an optional DNS-subdomain prefix and a 63-character name."""
    prefix, slash, name = key.rpartition("/")
    if slash and not DNS_SUBDOMAIN_RE.fullmatch(prefix):
        return f"prefix {_shown(prefix)} must be a DNS subdomain"
    if not LABEL_NAME_RE.fullmatch(name):
        return "name part must be 1-63 characters of letters, digits, '-', '_' and '.', starting and ending alphanumeric"
    return None


def image_problem(image: str) -> Optional[str]:
    """Why an image reference is not pinned, or None when it is (tag or digest, never latest)."""
    if not IMAGE_RE.fullmatch(image):
        return "is not a container image reference"
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    if tag is None and not digest:
        return "has no tag or digest; pin it"
    if tag == "latest":
        return "uses the 'latest' tag; pin a version or digest"
    return None


def _cpu(v: str) -> Optional[str]:
    if not units.CPU_RE.fullmatch(v) or units.cpu_millis(v) <= 0:
        return "must be a CPU quantity such as '500m' or '2'"
    if units.cpu_millis(v) > MAX_CPU_MILLIS:
        return f"must be at most {MAX_CPU_MILLIS // 1000} CPUs"
    return None


def _memory(v: str) -> Optional[str]:
    if not units.MEMORY_RE.fullmatch(v):
        return "must be a memory quantity such as '512Mi' or '2Gi'"
    if not MIN_MEMORY_BYTES <= units.memory_bytes(v) <= MAX_MEMORY_BYTES:
        return "must be between 64Mi and 512Gi"
    return None


def _storage(v: str) -> Optional[str]:
    if not units.MEMORY_RE.fullmatch(v) or units.memory_bytes(v) < units.MIB:
        return "must be a storage quantity such as '10Gi'"
    if units.memory_bytes(v) > MAX_STORAGE_BYTES:
        return f"must be at most {MAX_STORAGE_BYTES // units.TIB}Ti (the largest volume block storage offers), got {_shown(v)}"
    return None


def _image(v: str) -> Optional[str]:
    problem = image_problem(v)
    return f"{_shown(v)} {problem}" if problem else None


def _dns_server(v: str) -> Optional[str]:
    """An upstream DNS server as k8gb's edgeDNSServers takes it: an IP address or a hostname,
    optionally with a port (IPv6 with a port in brackets)."""
    host, port = v, None
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (None if not rest else "")
    elif v.count(":") == 1:
        host, _, port = v.partition(":")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"must be a DNS server such as '1.1.1.1' or '10.0.0.2:53', got {_shown(v)}"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if HOSTNAME_RE.fullmatch(host) and not v.startswith("["):
        return None
    return f"must be a DNS server such as '1.1.1.1' or '10.0.0.2:53', got {_shown(v)}"


def _cidr(v: str) -> Optional[str]:
    try:
        ipaddress.ip_network(v, strict=True)
    except ValueError:
        return f"must be a CIDR such as '0.0.0.0/0' or '10.20.0.0/16', got {_shown(v)}"
    return None


def _cron5(v: str) -> Optional[str]:
    return None if cron.is_valid(v) else f"must be a five-field cron expression, got {_shown(v)}"


def _cron6(v: str) -> Optional[str]:
    return None if cron.is_valid(v, seconds_first=True) else f"must be a six-field cron expression (seconds first), got {_shown(v)}"


def _label_key(v: str) -> Optional[str]:
    problem = label_key_problem(v)
    return f"must be a label key: {problem}" if problem else None


def _secret_key(v: str) -> Optional[str]:
    if not SECRET_KEY_RE.fullmatch(v):
        return f"must be a Secret key (1-253 letters, digits, '-', '_' and '.'), got {_shown(v)}"
    if v in (".", "..") or v.startswith(".."):
        return f"must be a Secret key, not '.', '..' or a name starting with '..', got {_shown(v)}"
    return None


def _url(v: str) -> Optional[str]:
    if len(v) > URL_MAX:
        return f"must be an http(s) URL of at most {URL_MAX} characters, got {len(v)}"
    return None if URL_RE.fullmatch(v) else f"must be an http(s) URL, got {_shown(v)}"


def _context(v: str) -> Optional[str]:
    if len(v) > CONTEXT_MAX:
        return f"must be a kubeconfig context name of at most {CONTEXT_MAX} characters, got {len(v)}"
    if v != v.strip():
        # kubectl looks the name up as written: "tikit-prod-lagos " is no context, and a
        # blank one is no target at all (leave it out to render YAML instead).
        return f"must be a kubeconfig context name without leading or trailing spaces, got {v!r}"
    return None


def _region_name(v: str) -> Optional[str]:
    if len(v) > REGION_NAME_MAX:
        return f"must be at most {REGION_NAME_MAX} characters (other names and label values are built from it), got {len(v)}"
    if not REGION_NAME_RE.fullmatch(v):
        return f"must be a DNS label (lowercase letters, digits and '-'), got {_shown(v)}"
    return None


Cpu = Annotated[str, _rule(_cpu)]
Memory = Annotated[str, _rule(_memory)]
Storage = Annotated[str, _rule(_storage)]
Image = Annotated[str, _rule(_image)]
DnsLabel = Annotated[str, _pattern(DNS_LABEL_RE, "a DNS label (lowercase letters, digits and '-', at most 63)")]
Hostname = Annotated[str, _pattern(HOSTNAME_RE, "a DNS hostname such as 'api.tikit.app'")]
DnsServer = Annotated[str, _rule(_dns_server)]
LabelKey = Annotated[str, _rule(_label_key)]
LabelValue = Annotated[str, _pattern(LABEL_VALUE_RE, "a label value (at most 63 letters, digits, '-', '_' and '.')")]
Path = Annotated[str, _pattern(PATH_RE, "an absolute path")]
Url = Annotated[str, _rule(_url)]
OptionalUrl = Annotated[str, _rule(lambda v: None if not v else _url(v))]
Duration = Annotated[str, _pattern(DURATION_RE, "a duration such as '15s' or '100ms'")]
PromDuration = Annotated[str, _pattern(PROMQL_DURATION_RE, "a duration such as '30s' or '2m'")]
Retention = Annotated[str, _pattern(RETENTION_RE, "a retention such as '7d', '2w' or '1m'")]
Bucket = Annotated[str, _pattern(BUCKET_RE, "a bucket name prefix")]
Cidr = Annotated[str, _rule(_cidr)]
ChaosDuration = Annotated[str, _pattern(CHAOS_DURATION_RE, "a duration such as '200ms' or '5m'")]
SecretKey = Annotated[str, _rule(_secret_key)]
Base64 = Annotated[str, _pattern(BASE64_RE, "base64 text")]
GeoTag = Annotated[str, _pattern(GEO_TAG_RE, "a DNS label (lowercase letters, digits and '-', at most 63)")]
HelmRelease = Annotated[str, _pattern(HELM_RELEASE_RE, "a Helm release name (lowercase letters, digits and '-', at most 53)")]
StorageClass = Annotated[str, _pattern(STORAGE_CLASS_RE, "a StorageClass name (a DNS subdomain) or empty")]
RegionName = Annotated[str, _rule(_region_name)]
KubeContext = Annotated[str, _rule(_context)]
Cron5 = Annotated[str, _rule(_cron5)]
# Karpenter's NodePool durations (expireAfter): hours, minutes, seconds, or Never.
KARPENTER_DURATION_RE = re.compile(r"^(([0-9]+(s|m|h))+|Never)$")
KarpenterDuration = Annotated[str, _pattern(KARPENTER_DURATION_RE, "a duration such as '720h' or 'Never'")]
# A Kubernetes kind and an API group (DNS subdomain), for references to a node class.
KIND_RE = re.compile(r"^[A-Z][A-Za-z0-9]{0,62}$")
API_GROUP_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$")
Kind = Annotated[str, _pattern(KIND_RE, "a Kubernetes kind such as 'EC2NodeClass'")]
ApiGroup = Annotated[str, _pattern(API_GROUP_RE, "an API group such as 'karpenter.k8s.aws'")]
# An AWS tag key or value as Karpenter selects on it (no control characters).
AWS_TAG_RE = re.compile(r"^[\w .:/=+@-]{1,256}$")
AwsTag = Annotated[str, _pattern(AWS_TAG_RE, "an AWS tag (letters, digits, spaces and _ . : / = + - @)")]
# A Karpenter AMI alias: <family>@<version>.
AMI_ALIAS_RE = re.compile(r"^(al2|al2023|bottlerocket)@(latest|v[0-9]+(\.[0-9]+)*)$")
AmiAlias = Annotated[str, _pattern(AMI_ALIAS_RE, "an AMI alias such as 'al2023@latest' or 'al2023@v20250101'")]
# An IAM role name.
IAM_ROLE_RE = re.compile(r"^[\w+=,.@-]{1,64}$")
IamRole = Annotated[str, _rule(lambda v: None if not v or IAM_ROLE_RE.match(v) else f"must be an IAM role name, got {v!r}")]
Cron6 = Annotated[str, _rule(_cron6)]
