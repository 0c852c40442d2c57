"""Offline validation of rendered Kubernetes objects, as the API server would judge them.

Two sources of truth:

* built-in kinds (core, apps, batch, policy, rbac, networking.k8s.io, ...): the strict
  JSON schemas shipped by ``kubernetes-validate`` for Kubernetes ``K8S_VERSION``
  (``additionalProperties: false`` everywhere, so a typo is an error);
* custom resources: the upstream CRD files of the releases tikit/versions.py pins, in the
  mirror ``$TIKIT_CRDS_DIR`` names or the cache ``make crds`` fills (preview/crds.py).
  A plain JSON-Schema validator gets some of their constructs wrong;
  ``_prepare_crd_schema`` and ``_CrdValidator`` correct them.

Not checked: CEL ``x-kubernetes-validations``, admission
webhooks, and ``int32``/``int64`` ranges.

Every error is one line, ``<path>: <message>``, e.g. ``spec.listeners[1]: duplicate
entry: name='http' ...``.  Everything expensive (CRD files, compiled validators) is loaded
lazily once per (apiVersion, kind) and cached for the life of the process.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import functools
import hashlib
import ipaddress
import json
import re
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

from . import cache

REPO_ROOT = Path(__file__).resolve().parent.parent
CRDS_ENV = "TIKIT_CRDS_DIR"

# The cluster version the platform targets.  kubernetes-validate ships one schema set per
# minor version; resolve_k8s_version picks that minor, or the nearest newer one shipped.
TARGET_K8S_VERSION = "1.31"

# resource.Quantity's syntax (k8s.io/apimachinery/pkg/api/resource), as the CRDs spell it.
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"

_MAX_REPR = 120  # characters of a value quoted inside an error message

Errors = list[str]


# --- Kubernetes version / kubernetes-validate schema sets ------------------------------


def _minor_key(version: str) -> tuple[int, int]:
    major, minor = version.lstrip("v").split(".")[:2]
    return int(major), int(minor)


@functools.lru_cache(maxsize=None)
def _shipped_versions() -> dict[tuple[int, int], str]:
    """(major, minor) -> full version string kubernetes-validate ships, e.g. (1, 31): '1.31.0'."""
    return {_minor_key(v): v for v in kv_utils.all_versions()}


@functools.lru_cache(maxsize=None)
def resolve_k8s_version(wanted: str) -> str:
    """The shipped schema version for ``wanted`` ('1.31', 'v1.31.2'): the same minor when
    shipped, else the nearest newer one (never an older API than asked for)."""
    shipped = _shipped_versions()
    key = _minor_key(wanted)
    newer = sorted(k for k in shipped if k >= key)
    if not newer:
        have = ", ".join(f"{a}.{b}" for a, b in sorted(shipped))
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {wanted} or newer (has {have})")
    return "%d.%d" % newer[0]


K8S_VERSION = resolve_k8s_version(TARGET_K8S_VERSION)


# --- error formatting ------------------------------------------------------------------

_SIMPLE_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")


def format_path(path: Iterable[Any]) -> str:
    """['spec', 'listeners', 1, 'name'] -> 'spec.listeners[1].name';
    label keys with dots or slashes are quoted: metadata.labels["app.kubernetes.io/name"]."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out or "<root>"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _branch_types(branches: Any) -> Optional[list[str]]:
    """Types of an anyOf/oneOf made only of ``{type: ...}`` branches (int-or-string,
    Quantity), else None."""
    if not isinstance(branches, list):
        return None
    types: list[str] = []
    for b in branches:
        if not isinstance(b, dict) or set(b) - {"type"} or "type" not in b:
            return None
        t = b["type"]
        types.extend(x for x in ([t] if isinstance(t, str) else t) if x != "null" and x not in types)
    return types


def _error_lines(error: ValidationError) -> list[tuple[tuple, str]]:
    """One jsonschema error -> [(path, message)], rewritten to read like kubectl."""
    path = tuple(error.absolute_path)
    v, schema, inst = error.validator, error.schema, error.instance
    if v == "additionalProperties" and error.validator_value is False and isinstance(inst, dict):
        known = list((schema.get("properties") or {}).keys())
        patterns = list((schema.get("patternProperties") or {}).keys())
        out = []
        for key in inst:
            if key in known or any(re.search(p, key) for p in patterns):
                continue
            hint = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
            suffix = f' (did you mean "{hint[0]}"?)' if hint else ""
            out.append((path + (key,), f"unknown field{suffix}"))
        if out:
            return out
    if v == "required" and isinstance(inst, dict):
        missing = [k for k in error.validator_value if k not in inst]
        if missing:
            return [(path + (k,), "required field is missing") for k in missing]
    if v in ("anyOf", "oneOf") and isinstance(schema, dict):
        types = _branch_types(schema.get(v))
        if types and _json_type(inst) not in types and not (_json_type(inst) == "integer" and "number" in types):
            return [(path, f"must be {' or '.join(types)}, not {_json_type(inst)} {_short(inst)}")]
    if v in ("anyOf", "oneOf") and error.context:
        # "is not valid under any of the given schemas" says nothing: name the closest miss
        def closest(errors: list[ValidationError]) -> Optional[ValidationError]:
            # a branch the value has the right type for says more than "must be number"
            typed = [e for e in errors if not (e.validator == "type" and not e.path)]
            return jsonschema.exceptions.best_match(typed or errors)

        best = closest(error.context)
        while best is not None and best.validator in ("anyOf", "oneOf") and best.context:
            best = closest(best.context)
        if best is not None:
            return _error_lines(best)
    if v == "pattern" and error.validator_value == QUANTITY_PATTERN:
        return [(path, f"{_short(inst)} is not a quantity (like 250m, 1.5, 512Mi, 2G)")]
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return [(path, f"must be {want}, not {_json_type(inst)} {_short(inst)}")]
    message = error.message
    if len(message) > 300:
        message = message[:297] + "..."
    return [(path, message)]


def _format(errors: Iterable[ValidationError], prefix: tuple = ()) -> Errors:
    lines: set[tuple[tuple, str]] = set()
    for e in errors:
        for p, m in _error_lines(e):
            lines.add((prefix + p, m))
    ordered = sorted(lines, key=lambda pm: (format_path(pm[0]), pm[1]))
    return [f"{format_path(p)}: {m}" for p, m in ordered]


# --- RE2 -> Python regular expressions --------------------------------

_FLAG_GROUP = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?\)")
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7F", "blank": "\\t ",
    "cntrl": "\\x00-\\x1F\\x7F", "digit": "0-9", "graph": "!-~", "lower": "a-z",
    "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z",
    "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """The character class starting at pattern[i] == '[', translated; and the index after it."""
    j = i + 1
    out = "["
    if pattern[j : j + 1] == "^":
        out += "^"
        j += 1
    if pattern[j : j + 1] == "]":  # a leading ']' is literal in RE2
        out += "\\]"
        j += 1
    while j < len(pattern):
        c = pattern[j]
        if c == "\\":
            out += pattern[j : j + 2]
            j += 2
        elif pattern.startswith("[:", j):
            end = pattern.find(":]", j + 2)
            name = pattern[j + 2 : end] if end > 0 else ""
            negated = name.startswith("^")
            if name.lstrip("^") not in _POSIX_CLASSES or negated:
                raise re.error(f"unsupported POSIX class [:{name}:]")
            out += _POSIX_CLASSES[name]
            j = end + 2
        elif c == "[":
            out += "\\["  # Python would read a nested set
            j += 1
        elif c == "]":
            return out + "]", j + 1
        else:
            out += c
            j += 1
    raise re.error("missing ]")


def re2_to_python(pattern: str) -> str:
    """Rewrite an RE2 (Go regexp) pattern so Python's ``re`` gives the same answers.

    * ``(?i)`` and friends set flags until the end of the enclosing group, anywhere in
      RE2; Python only accepts them at the very start.  Each becomes a scoped group
      ``(?i:...)`` closed at the group's end and re-opened after every ``|`` of that group
      (RE2 flags survive alternation): ``^(?i)(abort|warn)?$`` -> ``(?a)^(?i:(abort|warn)?\\Z)``.
    * ``$`` without the ``m`` flag is end of text in RE2, but also matches before a final
      newline in Python: it becomes ``\\Z`` (and RE2's ``\\z`` too).
    * ``\\d``, ``\\w``, ``\\s``, ``\\b`` are ASCII in RE2: the result starts with ``(?a)``.
    * POSIX classes ``[[:alpha:]]`` are expanded; ``(?<name>`` becomes ``(?P<name>``.
    """
    multiline = any("m" in (m.group(1) or "") for m in _FLAG_GROUP.finditer(pattern))
    out: list[str] = []
    scopes: list[list[str]] = [[]]  # per open group: the flag scopes opened in it
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            out.append("\\Z" if nxt == "z" else pattern[i : i + 2])
            i += 2
        elif c == "[":
            text, i = _char_class(pattern, i)
            out.append(text)
        elif c == "(":
            m = _FLAG_GROUP.match(pattern, i)
            if m:
                flags = m.group(1) + (f"-{m.group(2)}" if m.group(2) else "")
                out.append(f"(?{flags}:")
                scopes[-1].append(flags)
                i = m.end()
                continue
            scopes.append([])
            if pattern.startswith("(?<", i) and not pattern.startswith(("(?<=", "(?<!"), i):
                out.append("(?P<")
                i += 3
            else:
                out.append("(")
                i += 1
        elif c == ")":
            out.append(")" * len(scopes[-1]) + ")")
            if len(scopes) > 1:
                scopes.pop()
            i += 1
        elif c == "|":
            open_ = scopes[-1]
            out.append(")" * len(open_) + "|" + "".join(f"(?{f}:" for f in open_))
            i += 1
        elif c == "$" and not multiline:
            out.append("\\Z")
            i += 1
        else:
            out.append(c)
            i += 1
    out.append(")" * len(scopes[0]))
    return "(?a)" + "".join(out)


@functools.lru_cache(maxsize=None)
def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compiled Python equivalent of an RE2 pattern (raises re.error if there is none)."""
    return re.compile(re2_to_python(pattern))


# --- the CRD validator class: Draft 4 + RE2 patterns + list types + formats ------------


def _pattern(validator, patrn, instance, schema):
    if not isinstance(instance, str):
        return
    try:
        rx = compile_re2(patrn)
    except re.error as exc:
        yield ValidationError(f"cannot check pattern {patrn!r} offline ({exc})")
        return
    if not rx.search(instance):
        yield ValidationError(f"{_short(instance)} does not match {patrn!r}")


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _list_type(validator, list_type, instance, schema):
    """x-kubernetes-list-type: set (unique items) / map (unique x-kubernetes-list-map-keys)."""
    if not isinstance(instance, list) or list_type not in ("set", "map"):
        return
    seen: dict[Any, int] = {}
    keys = schema.get("x-kubernetes-list-map-keys") or []
    for i, item in enumerate(instance):
        if list_type == "set":
            key: Any = _canon(item)
        elif isinstance(item, dict):
            key = tuple(_canon(item.get(k)) for k in keys)
        else:
            continue
        if key in seen:
            if list_type == "set":
                what = f"duplicate value {_short(item)}"
            else:
                what = "duplicate entry: " + ", ".join(f"{k}={_short(item.get(k))}" for k in keys)
            yield ValidationError(
                f"{what}, same as [{seen[key]}] (x-kubernetes-list-type: {list_type})", path=deque([i])
            )
        else:
            seen[key] = i


# Formats the API server checks for CRDs (of those these CRDs use); others pass.
_FORMATS = jsonschema.FormatChecker(formats=())
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?$", re.ASCII
)


@_FORMATS.checks("ipv4", raises=ValueError)
def _is_ipv4(value: object) -> bool:
    return not isinstance(value, str) or bool(ipaddress.IPv4Address(value))


@_FORMATS.checks("ipv6", raises=ValueError)
def _is_ipv6(value: object) -> bool:
    return not isinstance(value, str) or bool(ipaddress.IPv6Address(value))


@_FORMATS.checks("byte", raises=(ValueError, binascii.Error))
def _is_byte(value: object) -> bool:
    return not isinstance(value, str) or base64.b64decode(value, validate=True) is not None


@_FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_DATE_TIME.match(value))


_CrdValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,  # point 1: OpenAPI 3.0 is Draft 4 (boolean exclusiveMinimum)
    validators={"pattern": _pattern, "x-kubernetes-list-type": _list_type},
)


# --- CRD schema preparation --------------------------------------

_COMBINATORS = ("allOf", "anyOf", "oneOf")


def _prepare_crd_schema(node: Any, in_combinator: bool = False) -> Any:
    """A copy of an openAPIV3Schema node that Draft4Validator judges like the API server."""
    if isinstance(node, list):  # items: [...] or a combinator's branches
        return [_prepare_crd_schema(x, in_combinator) for x in node]
    if not isinstance(node, dict):
        return node  # additionalProperties: true/false
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("description", "x-kubernetes-validations"):
            continue  # not checked; dropping them keeps the compiled schema small
        if key in ("properties", "patternProperties", "definitions") and isinstance(value, dict):
            out[key] = {k: _prepare_crd_schema(v, in_combinator) for k, v in value.items()}
        elif key in _COMBINATORS or key == "not":
            out[key] = _prepare_crd_schema(value, True)
        elif key in ("items", "additionalProperties"):
            out[key] = _prepare_crd_schema(value, in_combinator)
        else:
            out[key] = value  # data (default, enum, ...), never rewritten
    if out.get("nullable") is True:  # point 2
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    if out.get("x-kubernetes-int-or-string") is True and "anyOf" not in out:  # point 3
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (  # point 4: unknown fields are errors, as under strict field validation
        "properties" in out
        and "additionalProperties" not in out
        and not in_combinator
        and out.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        out["additionalProperties"] = False
    return out


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> None:
    """Fill in ``default``s in place, as the API server does before validating (point 5):
    absent properties get their default, then defaulting continues inside, through
    properties, additionalProperties (maps) and items.  Combinator branches carry none."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and isinstance(sub, dict) and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        addl = schema.get("additionalProperties")
        for key, child in value.items():
            sub = props.get(key, addl if isinstance(addl, dict) else None)
            if isinstance(sub, dict):
                apply_defaults(child, sub)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for child in value:
                apply_defaults(child, items)


# --- metadata --------------------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", re.ASCII)
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", re.ASCII)
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", re.ASCII)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$", re.ASCII)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", re.ASCII)
# apimachinery/pkg/api/validation: TotalAnnotationSizeLimitB = 256 KiB, all keys and values.
_ANNOTATIONS_MAX = 256 * 1024

# Name rules of built-in kinds that differ from the default (DNS-1123 subdomain).
_NAME_RULES: dict[tuple[str, str], str] = {
    ("", "Namespace"): "dns1123-label",
    ("", "Service"): "dns1035-label",
    **{("rbac.authorization.k8s.io", k): "path-segment" for k in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")},
}
_NAME_MAX = {("batch", "CronJob"): 52}  # the controller appends an 11-character suffix

# Cluster-scoped built-in kinds (everything else built in is namespaced).
_CLUSTER_SCOPED_BUILTIN = {
    ("", "Namespace"), ("", "Node"), ("", "PersistentVolume"), ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"), ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("storage.k8s.io", "StorageClass"), ("storage.k8s.io", "CSIDriver"), ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"), ("storage.k8s.io", "VolumeAttributesClass"),
    ("scheduling.k8s.io", "PriorityClass"), ("node.k8s.io", "RuntimeClass"),
    ("networking.k8s.io", "IngressClass"), ("networking.k8s.io", "IPAddress"), ("networking.k8s.io", "ServiceCIDR"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"), ("apiregistration.k8s.io", "APIService"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"),
    ("certificates.k8s.io", "CertificateSigningRequest"), ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"), ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("internal.apiserver.k8s.io", "StorageVersion"), ("storagemigration.k8s.io", "StorageVersionMigration"),
    ("resource.k8s.io", "DeviceClass"), ("resource.k8s.io", "ResourceSlice"),
}


def split_api_version(api_version: str) -> tuple[str, str]:
    """'apps/v1' -> ('apps', 'v1'); 'v1' -> ('', 'v1')."""
    group, _, version = api_version.rpartition("/")
    return group, version


def _check_name(name: str, rule: str, max_len: Optional[int]) -> Optional[str]:
    if rule == "path-segment":
        if name in (".", "..") or "/" in name or "%" in name:
            return f"{name!r} may not be '.' or '..' and may not contain '/' or '%'"
        return None
    limit, rx, what = {
        "dns1123-label": (63, _DNS1123_LABEL, "a DNS-1123 label (lower-case alphanumerics and '-')"),
        "dns1035-label": (63, _DNS1035_LABEL, "a DNS-1035 label (starts with a letter; lower-case alphanumerics and '-')"),
        "dns1123-subdomain": (253, _DNS1123_SUBDOMAIN, "a DNS-1123 subdomain (lower-case alphanumerics, '-' and '.')"),
    }[rule]
    limit = min(limit, max_len or limit)
    if len(name) > limit:
        return f"{name!r} is {len(name)} characters, at most {limit} allowed"
    if not rx.fullmatch(name):  # fullmatch: `$` alone would accept a trailing newline
        return f"{name!r} must be {what}"
    return None


def _check_qualified_key(key: str) -> Optional[str]:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return f"prefix {prefix!r} must be a DNS-1123 subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return f"name part {name!r} must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
    return None


def check_metadata(obj: Mapping[str, Any], *, namespaced: bool, name_rule: str = "dns1123-subdomain", name_max: Optional[int] = None) -> Errors:
    """Name, namespace, label and annotation syntax, as the API server checks them.

    ``namespaced``: the kind's scope.  Namespaced objects must state their namespace (the
    project sets it explicitly everywhere); cluster-scoped ones must not have one."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: required field is missing" if meta is None else f"metadata: must be object, not {_json_type(meta)}"]
    errors: list[tuple[tuple, str]] = []
    name = meta.get("name")
    if not name:
        errors.append((("metadata", "name"), "required field is missing (every object sets its name explicitly)"))
    elif isinstance(name, str) and (problem := _check_name(name, name_rule, name_max)):
        errors.append((("metadata", "name"), problem))
    ns = meta.get("namespace")
    if namespaced:
        if not ns:
            errors.append((("metadata", "namespace"), f"required field is missing ({obj.get('kind')} is namespaced)"))
        elif isinstance(ns, str) and (problem := _check_name(ns, "dns1123-label", None)):
            errors.append((("metadata", "namespace"), problem))
    elif ns is not None:
        errors.append((("metadata", "namespace"), f"not allowed: {obj.get('kind')} is cluster-scoped"))
    for field in ("labels", "annotations"):
        entries = meta.get(field)
        if not isinstance(entries, dict):
            continue
        for key, value in entries.items():
            where = ("metadata", field, key)
            if isinstance(key, str) and (problem := _check_qualified_key(key)):
                errors.append((where, f"invalid key: {problem}"))
            if field == "labels" and isinstance(value, str):
                if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
                    errors.append((where, f"invalid label value {_short(value)}: at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"))
        if field == "annotations":
            # apimachinery ValidateAnnotationsSize: len(key) + len(value) in bytes.
            size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in entries.items())
            if size > _ANNOTATIONS_MAX:
                errors.append((("metadata", "annotations"), f"total size {size} bytes exceeds {_ANNOTATIONS_MAX}"))
    return sorted(f"{format_path(p)}: {m}" for p, m in errors)


def _check_head(obj: Any) -> Optional[Errors]:
    if not isinstance(obj, dict):
        return [f"<root>: must be object, not {_json_type(obj)}"]
    missing = [f"{k}: required field is missing" for k in ("apiVersion", "kind") if not isinstance(obj.get(k), str) or not obj.get(k)]
    return missing or None


# --- built-in kinds: kubernetes-validate's strict schemas ------------------------------


@functools.lru_cache(maxsize=None)
def _builtin_registry(version: str) -> Registry:
    """The shared _definitions.json (1.3 MB) of one strict schema set, loaded once."""
    full = _shipped_versions()[_minor_key(version)]
    defs = kv_utils.schema_contents(f"kubernetes-json-schema/v{full}-local-strict/_definitions.json", version)
    # The schemas accept any string as a Quantity; the API server fails to decode "512MB".
    quantity = defs["$defs"].get("io.k8s.apimachinery.pkg.api.resource.Quantity") or {}
    for branch in quantity.get("oneOf", []):
        if "string" in (branch.get("type") or []):
            branch["pattern"] = QUANTITY_PATTERN
    return Resource.from_contents(defs) @ Registry()


@functools.lru_cache(maxsize=None)
def _builtin_validator(version: str, api_version: str, kind: str) -> Optional[jsonschema.protocols.Validator]:
    """Compiled strict validator for a built-in (apiVersion, kind), or None if not built in.

    File naming follows kubernetes_validate.validate ('networking.k8s.io/v1' ->
    'networking-v1'); that mapping is lossy, so the schema's own group/version/kind must
    match too (else gateway.networking.k8s.io/v1 Gateway could hit a built-in file)."""
    full = _shipped_versions()[_minor_key(version)]
    short_api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv_utils.schema_contents(f"kubernetes-json-schema/v{full}-local-strict/{kind.lower()}-{short_api}.json", version)
    except FileNotFoundError:
        return None
    group, ver = split_api_version(api_version)
    gvks = schema.get("x-kubernetes-group-version-kind") or []
    if not any(g.get("group", "") == group and g.get("version") == ver and g.get("kind") == kind for g in gvks):
        return None
    registry = Resource.from_contents(schema) @ _builtin_registry(version)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def is_builtin(api_version: str, kind: str, k8s_version: str = K8S_VERSION) -> bool:
    return _builtin_validator(resolve_k8s_version(k8s_version), api_version, kind) is not None


def validate_builtin(obj: dict, k8s_version: str = K8S_VERSION) -> Errors:
    """Errors of a built-in object against kubernetes-validate's strict schema for
    ``k8s_version`` (unknown fields are errors), plus metadata syntax."""
    if head := _check_head(obj):
        return head
    version = resolve_k8s_version(k8s_version)
    api_version, kind = obj["apiVersion"], obj["kind"]
    validator = _builtin_validator(version, api_version, kind)
    if validator is None:
        return [f"<root>: no built-in schema for apiVersion {api_version!r} kind {kind!r} in Kubernetes {version}"]
    group = split_api_version(api_version)[0]
    errors = _format(validator.iter_errors(obj))
    errors += check_metadata(
        obj,
        namespaced=(group, kind) not in _CLUSTER_SCOPED_BUILTIN,
        name_rule=_NAME_RULES.get((group, kind), "dns1123-subdomain"),
        name_max=_NAME_MAX.get((group, kind)),
    )
    return list(dict.fromkeys(errors))


@functools.lru_cache(maxsize=None)
def _object_meta_validator(version: str) -> jsonschema.protocols.Validator:
    """Strict ObjectMeta: custom resources' schemas say only ``metadata: {type: object}``,
    but the API server decodes it as ObjectMeta, so a typo like ``metadata.label`` fails."""
    ref = {"$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    return jsonschema.Draft202012Validator(ref, registry=_builtin_registry(version))


# --- custom resources: the CRD registry ------------------------------------------------


def crds_dir() -> Path:
    """Where the pinned CRD files are: the mirror $TIKIT_CRDS_DIR names, else the cache that
    ``python -m preview crds`` (``make crds``) fills (preview/crds.py)."""
    from . import crds

    return crds.location()


class _CrdYamlLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    pass


@dataclass(frozen=True)
class CrdEntry:
    """One CRD file, indexed from its head only (group, kind, scope)."""

    group: str
    kind: str
    scope: str  # Namespaced | Cluster
    path: Path

    @property
    def namespaced(self) -> bool:
        return self.scope == "Namespaced"


@dataclass(frozen=True)
class CrdVersion:
    """A served version of a CRD, compiled."""

    entry: CrdEntry
    api_version: str
    validator: jsonschema.protocols.Validator
    schema: Mapping[str, Any]  # prepared openAPIV3Schema
    status_subresource: bool
    deprecated: bool


_HEAD_END = re.compile(r"^  versions:", re.M)


class CrdRegistry:
    """The pinned CRDs of one directory (``<root>/<folder>/<file>``, tikit/versions.py).

    Construction is free; the first lookup indexes the files by reading only their head
    (``spec.group``, ``spec.names.kind``, ``spec.scope``, ~1 ms for all); a kind's file is
    parsed and its schema compiled on first use of that kind, then cached."""

    def __init__(self, root: Optional[Path | str] = None, cache_dir: Optional[Path] = None):
        self.root = Path(root) if root is not None else crds_dir()
        # Where prepared schemas are cached (preview/cache.py); None: not cached.
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._index: Optional[dict[tuple[str, str], CrdEntry]] = None
        self.version = functools.lru_cache(maxsize=None)(self._compile)

    # index ---------------------------------------------------------------------------

    def index(self) -> dict[tuple[str, str], CrdEntry]:
        """(group, kind) -> CrdEntry for every CRD file under root."""
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._build_index()
        return self._index

    def _build_index(self) -> dict[tuple[str, str], CrdEntry]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"CRD directory {self.root} does not exist (set ${CRDS_ENV} to override)")
        from . import crds

        index: dict[tuple[str, str], CrdEntry] = {}
        # Exactly the pinned files of tikit/versions.py: a mirror's extra files are not read.
        for path in crds.pinned_paths(self.root):
            if not path.is_file():
                continue
            entry = self._read_head(path)
            if entry is None:
                continue
            other = index.get((entry.group, entry.kind))
            if other is not None:
                raise ValueError(f"two CRDs for {entry.group} {entry.kind}: {other.path} and {path}")
            index[(entry.group, entry.kind)] = entry
        return index

    @staticmethod
    def _read_head(path: Path) -> Optional[CrdEntry]:
        """Parse only the text before ``  versions:`` (the schemas); the whole file when
        that head lacks group, kind or scope."""
        head = ""
        with path.open(encoding="utf-8") as f:
            while len(head) < 65536:
                chunk = f.read(4096)
                head += chunk
                if not chunk or _HEAD_END.search(head):
                    break
        m = _HEAD_END.search(head)
        doc = None
        if m:
            try:
                doc = yaml.load(head[: m.start()], Loader=_CrdYamlLoader)
            except yaml.YAMLError:
                doc = None
        spec = (doc or {}).get("spec") or {} if isinstance(doc, dict) else {}
        if not (spec.get("group") and (spec.get("names") or {}).get("kind") and spec.get("scope")):
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_CrdYamlLoader)  # unusual layout
            spec = (doc or {}).get("spec") or {} if isinstance(doc, dict) else {}
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            return None
        return CrdEntry(group=spec["group"], kind=spec["names"]["kind"], scope=spec["scope"], path=path)

    # lookup --------------------------------------------------------------------------

    def has_group(self, group: str) -> bool:
        return any(g == group for g, _ in self.index())

    def entry(self, api_version: str, kind: str) -> Optional[CrdEntry]:
        return self.index().get((split_api_version(api_version)[0], kind))

    def kinds(self) -> list[tuple[str, str]]:
        """Every served (apiVersion, kind), loading each CRD file."""
        out = []
        for entry in self.index().values():
            for v in self._served(entry):
                out.append((f"{entry.group}/{v['name']}", entry.kind))
        return sorted(out)

    @functools.lru_cache(maxsize=None)  # noqa: B019 - a registry lives as long as the process
    def _served(self, entry: CrdEntry) -> tuple[dict, ...]:
        doc = yaml.load(entry.path.read_text(encoding="utf-8"), Loader=_CrdYamlLoader)
        return tuple(v for v in doc["spec"]["versions"] if v.get("served"))

    @functools.lru_cache(maxsize=None)  # noqa: B019 - a registry lives as long as the process
    def _prepared(self, entry: CrdEntry) -> tuple[dict, ...]:
        """The served versions of a CRD with their schemas prepared (``_prepare_crd_schema``):
        from the JSON cache when it holds this file (by sha256) prepared by this code (by
        this module's sha256), else parsed from the YAML and cached."""
        data = entry.path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        path = self.cache_dir / "crd" / f"{digest}-{code_digest()[:16]}.json" if self.cache_dir else None
        cached = cache.read_json(path)
        if isinstance(cached, list) and all(isinstance(v, dict) and {"name", "schema"} <= set(v) for v in cached):
            return tuple(cached)
        doc = yaml.load(data.decode("utf-8"), Loader=_CrdYamlLoader)
        prepared = tuple(
            {
                "name": v["name"],
                "schema": _prepare_crd_schema(v["schema"]["openAPIV3Schema"]),
                "status": "status" in (v.get("subresources") or {}),
                "deprecated": bool(v.get("deprecated")),
            }
            for v in doc["spec"]["versions"]
            if v.get("served")
        )
        if path is not None:
            for stale in path.parent.glob(f"{digest}-*.json"):  # prepared by an older version of this code
                stale.unlink(missing_ok=True)
            cache.write_json(path, list(prepared))
        return prepared

    def _compile(self, api_version: str, kind: str) -> Optional[CrdVersion]:
        """Compiled validator for (apiVersion, kind), or None; cached by ``self.version``."""
        entry = self.entry(api_version, kind)
        if entry is None:
            return None
        wanted = split_api_version(api_version)[1]
        for v in self._prepared(entry):
            if v["name"] == wanted:
                schema = v["schema"]
                return CrdVersion(
                    entry=entry,
                    api_version=api_version,
                    validator=_CrdValidator(schema, format_checker=_FORMATS),
                    schema=schema,
                    status_subresource=bool(v["status"]),
                    deprecated=bool(v["deprecated"]),
                )
        return None

    def load_all(self) -> int:
        """Compile every served version now (warm-up / timing); returns how many."""
        kinds = self.kinds()
        for api_version, kind in kinds:
            self.version(api_version, kind)
        return len(kinds)

    # validation ----------------------------------------------------------------------

    def validate_custom(self, obj: dict, k8s_version: str = K8S_VERSION) -> Errors:
        """Errors of a custom resource against its CRD, plus metadata
        (name/namespace/labels syntax, scope, and the strict ObjectMeta schema)."""
        if head := _check_head(obj):
            return head
        api_version, kind = obj["apiVersion"], obj["kind"]
        compiled = self.version(api_version, kind)
        if compiled is None:
            return [f"<root>: {self._no_crd(api_version, kind)}"]
        body = copy.deepcopy(obj)
        if compiled.status_subresource:
            body.pop("status", None)  # the API server ignores status on create/update
        apply_defaults(body, compiled.schema)
        errors = _format(compiled.validator.iter_errors(body))
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            errors += _format(_object_meta_validator(resolve_k8s_version(k8s_version)).iter_errors(meta), ("metadata",))
        errors += check_metadata(obj, namespaced=compiled.entry.namespaced)
        return list(dict.fromkeys(errors))

    def _no_crd(self, api_version: str, kind: str) -> str:
        group = split_api_version(api_version)[0]
        entry = self.entry(api_version, kind)
        if entry is not None:
            served = ", ".join(f"{group}/{v['name']}" for v in self._served(entry))
            return f"no CRD for apiVersion {api_version!r} kind {kind!r}: {kind} is served as {served}"
        in_group = sorted(k for g, k in self.index() if g == group)
        hint = f" (group {group} has {', '.join(in_group)})" if in_group else f" (no CRD file for group {group!r} under {self.root})"
        return f"no CRD for apiVersion {api_version!r} kind {kind!r}{hint}"


@functools.lru_cache(maxsize=None)
def _registry_for(root: str, cache_dir: Optional[Path]) -> CrdRegistry:
    return CrdRegistry(root, cache_dir=cache_dir)


def default_registry() -> CrdRegistry:
    """The process-wide registry for crds_dir() (one per directory), with the preview's
    cache of prepared schemas."""
    return _registry_for(str(crds_dir()), cache.cache_dir())


@functools.lru_cache(maxsize=None)
def code_digest() -> str:
    """sha256 of this module's source: what prepares schemas and judges objects."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def validate_custom(obj: dict, registry: Optional[CrdRegistry] = None) -> Errors:
    return (registry or default_registry()).validate_custom(obj)


# --- dispatch --------------------------------------------------------------------------


def validate(obj: dict, registry: Optional[CrdRegistry] = None, k8s_version: str = K8S_VERSION) -> Errors:
    """Errors of any rendered object.  [] means valid.

    A kind with a built-in schema for ``k8s_version`` (checked by group/version/kind, so
    gateway.networking.k8s.io is not mistaken for networking.k8s.io) goes to
    validate_builtin, without touching the CRD directory; anything else is a custom
    resource and needs a CRD, else "no CRD for ..."."""
    if head := _check_head(obj):
        return head
    api_version, kind = obj["apiVersion"], obj["kind"]
    if is_builtin(api_version, kind, k8s_version):
        return validate_builtin(obj, k8s_version)
    registry = registry or default_registry()
    group = split_api_version(api_version)[0]
    if registry.entry(api_version, kind) is not None or registry.has_group(group):
        return registry.validate_custom(obj, k8s_version)
    if group == "" or group.endswith(".k8s.io") or "." not in group:
        return [f"<root>: no built-in schema for apiVersion {api_version!r} kind {kind!r} in Kubernetes {resolve_k8s_version(k8s_version)}"]
    return [f"<root>: {registry._no_crd(api_version, kind)}"]


def validate_all(objs: Iterable[dict], registry: Optional[CrdRegistry] = None) -> dict[str, Errors]:
    """describe(obj) -> errors, for the objects that have any."""
    out: dict[str, Errors] = {}
    for obj in objs:
        errors = validate(obj, registry)
        if errors:
            out.setdefault(describe(obj), []).extend(errors)
    return out


def describe(obj: Any) -> str:
    """'apps/v1 Deployment tikit/api' - for messages that list several objects."""
    if not isinstance(obj, dict):
        return repr(obj)
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('apiVersion')} {obj.get('kind')} {where}{meta.get('name')}"


# --- YAML as kubectl reads it ---------------------------------------


class ManifestLoader(_CrdYamlLoader):
    """SafeLoader without the timestamp resolver: kubectl keeps ``2024-01-01`` a string.
    A bare ``=`` is a string too (PyYAML would tag it ``tag:yaml.org,2002:value``)."""


ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _CrdYamlLoader.yaml_implicit_resolvers.items()
}
ManifestLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def load_manifests(text: str) -> list[dict]:
    """Every non-empty document of a YAML stream, loaded as kubectl would."""
    return [doc for doc in yaml.load_all(text, Loader=ManifestLoader) if doc]


__all__ = [
    "CRDS_ENV", "K8S_VERSION", "TARGET_K8S_VERSION", "CrdEntry", "CrdRegistry", "CrdVersion",
    "apply_defaults", "check_metadata", "compile_re2", "crds_dir", "default_registry", "describe",
    "format_path", "is_builtin", "load_manifests", "re2_to_python", "resolve_k8s_version",
    "validate", "validate_all", "validate_builtin", "validate_custom",
]
