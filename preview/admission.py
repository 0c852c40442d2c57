"""What the API server and etcd would refuse, checked on every render before anything is
written: where ``pulumi up`` would fail, the preview fails first (exit 2, one line naming
the object, its region and the field).

Every rendered Kubernetes object is checked against

* its schema: built-in kinds against Kubernetes' own (strict: unknown fields are errors),
  custom resources against their CRDs ($TIKIT_CRDS_DIR), through preview/validate.py;
* the names, labels and annotations apimachinery validates (validate.check_metadata), in
  the object's own metadata and in the ObjectMeta of the pods, jobs and volume claims it
  templates; label selectors (``matchLabels``, ``matchExpressions``), ``nodeSelector``
  and ``tolerations`` keys and values; ConfigMap and Secret data keys;
* the size limits:

  - ``OBJECT_MAX``: etcd refuses a request over ``--max-request-bytes``, 1.5 MiB by
    default (etcd embed.DefaultMaxRequestBytes), so no object may be larger; measured as
    the object's compact JSON, what the API server stores for custom resources (built-in
    kinds are stored as protobuf, a little smaller);
  - ``DATA_MAX``: a Secret's data and a ConfigMap's data plus binaryData hold at most
    1 MiB (k8s.io/kubernetes pkg/apis/core/validation, MaxSecretSize; ConfigMaps share
    the limit).  Secret values are counted as rendered, redacted;
  - annotations at most 256 KiB in all (apimachinery TotalAnnotationSizeLimitB), label
    values at most 63 characters and names 63 or 253 by kind (IsDNS1123Label,
    IsDNS1123Subdomain, IsValidLabelValue, IsQualifiedName): validate.check_metadata.

Not checked: CEL rules, admission webhooks and int32/int64 ranges (validate.py says why).

Without any CRD directory, built-in kinds are still checked and one line says that custom
resources were not.

Speed: an object found valid is remembered by the sha256 of its JSON together with the
digest of everything that judged it (preview/validate.py and this module, the installed
jsonschema, referencing and kubernetes-validate, the CRD directory's files), in the
preview's cache (preview/cache.py).  A render whose objects are all known imports no
schema at all; the others load only the CRDs of the kinds they render, prepared once and
cached as JSON.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from . import cache
from .stackfile import StackConfigError

OBJECT_MAX = 1536 * 1024
DATA_MAX = 1024 * 1024
# IsConfigMapKey (apimachinery/pkg/util/validation): the keys of ConfigMap and Secret data.
_DATA_KEY_RE = re.compile(r"[-._a-zA-Z0-9]{1,253}", re.ASCII)
# IsQualifiedName and IsValidLabelValue (apimachinery/pkg/util/validation).
_QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", re.ASCII)
_LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", re.ASCII)
_DNS1123_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", re.ASCII)
# Keys whose value is an ObjectMeta inside an object: pod, job and claim templates.
_TEMPLATES = ("template", "jobTemplate")
_VERDICTS_FILE = "valid-objects.json"
_VERDICTS_KEPT = 4096  # digests remembered; three stacks render about 400 objects
_PACKAGES = ("jsonschema", "referencing", "kubernetes_validate")


class ObjectRejected(StackConfigError):
    """A rendered object the API server or etcd would refuse: a config error (exit 2),
    since the stack's settings produced it."""


@dataclass(frozen=True)
class Problem:
    region: str
    kind: str
    where: str  # namespace/name
    path: str
    message: str

    def describe(self) -> str:
        return f"{self.kind} {self.where} in region {self.region}"


# --------------------------------------------------------------------------------------
# The checks that need no schema (cheap, pure Python)
# --------------------------------------------------------------------------------------


def _fmt(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$-]*", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out or "<root>"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _qualified_key_problem(key: str) -> Optional[str]:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN_RE.fullmatch(prefix)):
        return f"key {_short(key)}: prefix must be a DNS-1123 subdomain of at most 253 characters"
    if len(name) > 63 or not _QUALIFIED_NAME_RE.fullmatch(name):
        return f"key {_short(key)}: name must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
    return None


def _label_value_problem(value: Any) -> Optional[str]:
    if not isinstance(value, str):
        return None  # the schema says what type it must be
    if len(value) > 63 or not _LABEL_VALUE_RE.fullmatch(value):
        return f"invalid label value {_short(value)}: at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
    return None


def _labels(entries: Any, path: tuple) -> Iterable[tuple[tuple, str]]:
    """Problems of a label map (metadata.labels, matchLabels, nodeSelector)."""
    if not isinstance(entries, dict):
        return
    for key, value in entries.items():
        if problem := _qualified_key_problem(str(key)) or _label_value_problem(value):
            yield path + (key,), problem


def _templated(path: tuple) -> bool:
    """Whether ``metadata`` at ``path`` is the ObjectMeta of a template the API server
    validates: a pod or job template, or a StatefulSet's volume claim template."""
    return bool(path) and path[-1] in _TEMPLATES or len(path) >= 2 and path[-2] == "volumeClaimTemplates"


def _nested(obj: Any, path: tuple, in_node_selector: bool = False) -> Iterable[tuple[tuple, str]]:
    """Label-like fields anywhere below the object's own metadata."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            here = path + (key,)
            if key == "metadata" and _templated(path):
                if isinstance(value, dict):
                    yield from _labels(value.get("labels"), here + ("labels",))
                    annotations = value.get("annotations")
                    if isinstance(annotations, dict):
                        for k in annotations:
                            if problem := _qualified_key_problem(str(k)):
                                yield here + ("annotations", k), problem
            elif key in ("matchLabels", "nodeSelector") and isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
                yield from _labels(value, here)
                continue
            elif key == "matchExpressions" and isinstance(value, list):
                for i, expr in enumerate(value):
                    if not isinstance(expr, dict):
                        continue
                    if isinstance(expr.get("key"), str) and (problem := _qualified_key_problem(expr["key"])):
                        yield here + (i, "key"), problem
                    # A node selector's values are not label values to the API server.
                    if not in_node_selector and isinstance(expr.get("values"), list):
                        for j, item in enumerate(expr["values"]):
                            if problem := _label_value_problem(item):
                                yield here + (i, "values", j), problem
                continue
            elif key == "tolerations" and isinstance(value, list):
                for i, tol in enumerate(value):
                    if not isinstance(tol, dict):
                        continue
                    if tol.get("key") and isinstance(tol["key"], str) and (problem := _qualified_key_problem(tol["key"])):
                        yield here + (i, "key"), problem
                    if tol.get("value") and (problem := _label_value_problem(tol["value"])):
                        yield here + (i, "value"), problem
                continue
            yield from _nested(value, here, in_node_selector or key in ("nodeSelectorTerms", "preference"))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _nested(item, path + (i,), in_node_selector)


def _data(obj: dict) -> Iterable[tuple[tuple, str]]:
    """ConfigMap and Secret data: keys and the 1 MiB total."""
    fields = {"ConfigMap": ("data", "binaryData"), "Secret": ("data", "stringData")}.get(obj.get("kind"), ())
    if not fields or obj.get("apiVersion") != "v1":
        return
    total = 0
    for field in fields:
        entries = obj.get(field)
        if not isinstance(entries, dict):
            continue
        for key, value in entries.items():
            key = str(key)
            if len(key) > 253 or not _DATA_KEY_RE.fullmatch(key) or key in (".", "..") or key.startswith(".."):
                yield (field, key), f"invalid key {_short(key)}: 1-253 alphanumerics, '-', '_' or '.', not '.', '..' or starting with '..'"
            total += len(str(value).encode())
    if total > DATA_MAX:
        yield (fields[0],), f"holds {total:,} bytes; a {obj['kind']} holds at most {DATA_MAX:,} (1 MiB)"


def cheap_problems(obj: dict, size: int) -> list[str]:
    """Size limits, data keys and nested label-like fields: '<path>: <message>' each."""
    out = []
    if size > OBJECT_MAX:
        out.append(f"<root>: is {size:,} bytes as JSON; etcd stores at most {OBJECT_MAX:,} (1.5 MiB) per object")
    out += [f"{_fmt(p)}: {m}" for p, m in _data(obj)]
    out += [f"{_fmt(p)}: {m}" for p, m in _nested({k: v for k, v in obj.items() if k != "metadata"}, ())]
    return out


# --------------------------------------------------------------------------------------
# The remembered verdicts
# --------------------------------------------------------------------------------------


def _judges_digest(crds: Optional[Path]) -> str:
    """Digest of everything that decides a verdict: this module and validate.py, the
    installed schema packages (their files' size and time) and the CRD directory's files
    (name, size, time)."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("admission.py", "validate.py"):
        h.update((here / name).read_bytes())
    for package in _PACKAGES:
        spec = importlib.util.find_spec(package)
        origin = Path(spec.origin) if spec and spec.origin else None
        if origin is not None:
            st = origin.parent.stat()
            h.update(f"{package}:{origin}:{st.st_mtime_ns}".encode())
            dist = sorted(origin.parent.parent.glob(f"{package}-*.dist-info"))
            h.update(" ".join(d.name for d in dist).encode())
    if crds is not None and crds.is_dir():
        for path in sorted(crds.glob("*/*.yaml")) + sorted(crds.glob("*.yaml")):
            st = path.stat()
            h.update(f"{path.relative_to(crds)}:{st.st_size}:{st.st_mtime_ns}".encode())
    else:
        h.update(b"no CRDs")
    return h.hexdigest()


class _Verdicts:
    """Digests of objects found valid, under one judges' digest."""

    def __init__(self, crds: Optional[Path]) -> None:
        self.dir = cache.cache_dir()
        self.judges = _judges_digest(crds) if self.dir is not None else ""
        doc = cache.read_json(self.path)
        ok = isinstance(doc, dict) and doc.get("judges") == self.judges and isinstance(doc.get("valid"), list)
        self.known: list[str] = [d for d in doc["valid"] if isinstance(d, str)] if ok else []
        self._set = set(self.known)
        self.new: list[str] = []

    @property
    def path(self) -> Optional[Path]:
        return self.dir / _VERDICTS_FILE if self.dir is not None else None

    def __contains__(self, digest: str) -> bool:
        return digest in self._set

    def add(self, digest: str) -> None:
        if digest not in self._set:
            self._set.add(digest)
            self.new.append(digest)

    def save(self) -> None:
        if self.new and self.path is not None:
            kept = (self.known + self.new)[-_VERDICTS_KEPT:]
            cache.write_json(self.path, {"judges": self.judges, "valid": kept})


# --------------------------------------------------------------------------------------
# The whole plan
# --------------------------------------------------------------------------------------


def _crds_available(crds: Path) -> bool:
    return crds.is_dir() and (any(crds.glob("*/*.yaml")) or any(crds.glob("*.yaml")))


def check(
    objects: list[tuple[str, dict]],
    *,
    crds: Optional[Path] = None,
    warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> None:
    """Raise ObjectRejected for the first object (in the order given) the API server or etcd
    would refuse, saying how many more problems there are; ``objects`` are (region,
    manifest).  ``crds``: the CRD directory (default: cache.crds_dir())."""
    crds = cache.crds_dir() if crds is None else crds
    have_crds = _crds_available(crds)
    verdicts = _Verdicts(crds if have_crds else None)
    problems: list[Problem] = []
    todo: list[tuple[str, dict, str]] = []
    for region, obj in objects:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in verdicts:
            continue
        found = cheap_problems(obj, len(text.encode()))
        problems += [_problem(region, obj, line) for line in found]
        if not found:
            todo.append((region, obj, digest))
    unchecked: set[str] = set()
    if todo:
        from . import validate  # the schemas: only when some object is not known valid

        registry = validate.default_registry() if have_crds else None
        judged: dict[str, list[str]] = {}  # identical objects are judged once
        for region, obj, digest in todo:
            kind = f"{obj.get('apiVersion')} {obj.get('kind')}"
            without_crd = registry is None and not validate.is_builtin(str(obj.get("apiVersion")), str(obj.get("kind")))
            if digest not in judged:
                if without_crd:  # no CRDs at all: the metadata rules still hold
                    meta = obj.get("metadata")
                    judged[digest] = validate.check_metadata(obj, namespaced=isinstance(meta, dict) and "namespace" in meta)
                else:
                    judged[digest] = validate.validate(obj, registry)
            problems += [_problem(region, obj, line) for line in judged[digest]]
            if without_crd:
                unchecked.add(kind)  # and not remembered as valid
            elif not judged[digest]:
                verdicts.add(digest)
    if problems:  # the one line: the first problem, and how many more
        first = problems[0]
        more = len(problems) - 1
        objects_ = len({p.describe() for p in problems})
        also = f" (and {more} more problem{'s' if more > 1 else ''} in {objects_} object{'s' if objects_ > 1 else ''})" if more else ""
        raise ObjectRejected(first.describe(), f"{first.path}: {first.message}{also}")
    if unchecked:
        warn(
            f"warning: custom resources not checked (no CRDs in {crds}; set $TIKIT_CRDS_DIR): " + ", ".join(sorted(unchecked))
        )
    verdicts.save()


def _problem(region: str, obj: Any, line: str) -> Problem:
    meta = obj.get("metadata") if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict) else {}
    where = f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))
    path, _, message = line.partition(": ")
    kind = str(obj.get("kind")) if isinstance(obj, dict) else "?"
    return Problem(region=region or "-", kind=kind, where=where, path=path, message=message)
