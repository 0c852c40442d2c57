"""Secrets: no secret value in plain env values or command lines, ConfigMaps (or KEDA
trigger metadata), annotations or labels.  Secrets belong in Kubernetes Secrets, read
through secretKeyRef / volumes / TriggerAuthentication.

Two signals: the name says secret (PASSWORD, TOKEN, requirepass, ...) and a literal value is
there, or the value itself looks like one (a URL with a password, a private key, an access
key, a JWT).  Offline, a Pulumi secret shows up redacted as "[secret]": one in any of these
places was put in clear text.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

from .base import resource_policy
from .model import Obj, container_name, containers, pod_spec, pod_template
from .parse import REDACTED, UNKNOWN, as_dict, as_list, get

AREA = "secrets"
Say = Callable[[str], None]

# Name tokens (split on _ - . and case changes) that mark a secret.
_SECRET_TOKENS = frozenset(
    {"PASSWORD", "PASSWD", "PASS", "PWD", "SECRET", "TOKEN", "APIKEY", "CREDENTIAL", "CREDENTIALS", "REQUIREPASS", "MASTERAUTH", "PRIVATEKEY"}
)
_SECRET_PAIRS = {("API", "KEY"), ("ACCESS", "KEY"), ("SECRET", "KEY"), ("PRIVATE", "KEY"), ("AUTH", "PASS"), ("SIGNING", "KEY"), ("ENCRYPTION", "KEY")}
# A trailing token that makes the name about a secret rather than the secret itself.
_NOT_A_VALUE = frozenset(
    {"FILE", "PATH", "DIR", "NAME", "NAMES", "ID", "USER", "USERS", "USERNAME", "TYPE", "METHOD", "MODE", "HEADER", "ENABLED", "LENGTH", "REF", "KEYS", "ENCRYPTION"}
)

_VALUE_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]*:(?P<pw>[^@\s/]+)@"), "a URL with a password"),
    (re.compile(r"(?i)\b(?:password|passwd|pwd)\s*=\s*['\"]?(?P<pw>[^\s'\";&]+)"), "a password (password=...)"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"), "a JSON web token"),
    (re.compile(r"\b(?:ghp|gho|ghs|github_pat|glpat|xox[abp])_?[A-Za-z0-9_]{20,}"), "an access token"),
]
# Shell or kubelet expansion ($VAR, ${VAR}, $(VAR), $(cat file)), template slots, masks.
_PLACEHOLDER = re.compile(r"^(\$.*|`.*|<[^>]+>|\{\{.*\}\}|%\([a-z_]+\)s|\*+)$")


def name_tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [t for t in re.split(r"[^A-Za-z0-9]+", spaced.upper()) if t]


def secret_name(name: str) -> bool:
    """True when a key or variable name designates a secret value (DB_PASSWORD, apiKey, requirepass)."""
    tokens = name_tokens(name.rsplit("/", 1)[-1])
    if not tokens or tokens[-1] in _NOT_A_VALUE:
        return False
    if any(t in _SECRET_TOKENS for t in tokens):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(tokens, tokens[1:])) or tokens[-1] == "AUTH"


def placeholder(value: str) -> bool:
    """An empty value, a reference to another variable or a template slot: no secret itself."""
    v = value.strip().strip("'\"")
    return not v or bool(_PLACEHOLDER.match(v))


def value_problem(value: object) -> Optional[str]:
    """What secret a value carries in clear text, if any."""
    if not isinstance(value, str):
        return None
    if REDACTED in value:
        return "a Pulumi secret"
    for pattern, what in _VALUE_PATTERNS:
        m = pattern.search(value)
        if m and not ("pw" in pattern.groupindex and placeholder(m.group("pw"))):
            return what
    return None


def config_text_problems(text: str) -> list[str]:
    """Secret settings in a config file (ini, redis.conf, env files, YAML, properties)."""
    found: list[str] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        what = value_problem(line)
        if what:
            found.append(f"line {n} holds {what}")
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(?:=|:|\s)\s*(.*)$", line)
        if not m:
            continue
        key, rest = m.group(1), m.group(2).strip()
        words = rest.split()
        if key.lower() == "sentinel" and len(words) >= 3 and secret_name(words[0]):
            key, rest = words[0], words[-1]
        elif key.lower() == "user" and re.search(r"(^|\s)>\S+", rest):
            found.append(f"line {n} sets an ACL password for user {words[0] if words else '?'}")
            continue
        value = rest.split()[0] if rest.split() else ""  # scripts: only the word after the key
        if secret_name(key) and not placeholder(value) and not value.strip("'\"").startswith("/"):
            found.append(f"line {n} sets {key}")
    return found


# ---- env values and command lines ------------------------------------------------------------------

_FLAG = re.compile(r"^--?([A-Za-z][A-Za-z0-9_-]*)(?:=(.*))?$")


def _pod_env(obj: Obj, _cfg: dict, say: Say) -> None:
    spec = pod_spec(obj)
    if spec is None:
        return
    for field, c in containers(spec):
        who = f"{obj.ref}: {field} '{container_name(c)}'"
        for env in as_list(c.get("env")):
            name, value = str(get(env, "name") or ""), get(env, "value")
            if not isinstance(value, str) or value is UNKNOWN:
                continue
            what = value_problem(value)
            if what:
                say(f"{who} env {name} holds {what} in clear text; read it with valueFrom.secretKeyRef")
            elif secret_name(name) and not placeholder(value) and not value.startswith("/"):
                say(f"{who} env {name} is a literal secret value; move it to a Secret and use valueFrom.secretKeyRef")
        words = [w for w in as_list(c.get("command")) + as_list(c.get("args")) if isinstance(w, str)]
        for i, word in enumerate(words):
            what = value_problem(word)
            if what:
                say(f"{who} command line argument {i} holds {what}; pass it through an env var from a Secret ($(VAR))")
                continue
            m = _FLAG.match(word)
            if not m or not secret_name(m.group(1)):
                continue
            value = m.group(2) if m.group(2) is not None else (words[i + 1] if i + 1 < len(words) else "")
            if not placeholder(value) and not value.startswith("-") and not value.startswith("/"):
                say(f"{who} passes --{m.group(1)} a literal value; use $(VAR) with the variable read from a Secret")


no_secret_in_pod_spec = resource_policy(
    name="no-secret-in-env",
    description="No secret in plain env values or container command lines: secrets come from Secrets (valueFrom.secretKeyRef).",
    check=_pod_env,
    remediation="Put the value in a Kubernetes Secret (from the Credentials component) and reference it with kube.env_from_secret().",
    area=AREA,
)


# ---- ConfigMaps (and KEDA trigger metadata) -----------------------------------------------------------


def _config_data(obj: Obj, _cfg: dict, say: Say) -> None:
    if obj.kind == "ConfigMap":
        for key, value in as_dict(obj.body.get("data")).items():
            if not isinstance(value, str):
                continue
            if secret_name(key) and "\n" not in value.strip() and not placeholder(value):
                say(f"{obj.ref}: key {key} holds a secret value; move it to a Secret")
                continue
            for problem in config_text_problems(value):
                say(f"{obj.ref}: {key} {problem}; keep secrets in a Secret and load them at start (env var or mounted Secret)")
    elif obj.kind in ("ScaledObject", "ScaledJob") and obj.group == "keda.sh":
        for i, t in enumerate(as_list(obj.spec.get("triggers"))):
            for key, value in as_dict(get(t, "metadata")).items():
                if not isinstance(value, str):
                    continue
                what = value_problem(value)
                if what or (secret_name(key) and not key.endswith("FromEnv") and not placeholder(value)):
                    say(f"{obj.ref}: trigger {i} metadata {key} holds {what or 'a secret value'}; use a TriggerAuthentication with secretTargetRef")


no_secret_in_config = resource_policy(
    name="no-secret-in-configmaps",
    description="No secret in ConfigMaps (config files included) or in KEDA trigger metadata.",
    check=_config_data,
    remediation="Keep config files secret-free: pass passwords at start from a Secret (env var, mounted Secret, TriggerAuthentication).",
    area=AREA,
)


# ---- annotations and labels -----------------------------------------------------------------------------


def _metadata(obj: Obj, _cfg: dict, say: Say) -> None:
    places = [("", obj.metadata)]
    template = pod_template(obj)
    if template is not None and obj.kind != "Pod":
        places.append(("pod template ", as_dict(template.get("metadata"))))
    for where, meta in places:
        for key, value in as_dict(meta.get("annotations")).items():
            if not isinstance(value, str) or key == "kubectl.kubernetes.io/last-applied-configuration":
                continue
            what = value_problem(value)
            if what:
                say(f"{obj.ref}: {where}annotation {key} holds {what}; annotations are readable by anyone who can list the object")
            elif secret_name(key) and not placeholder(value):
                say(f"{obj.ref}: {where}annotation {key} looks like a secret value; move it to a Secret")
        for key, value in as_dict(meta.get("labels")).items():
            what = value_problem(value)
            if what:
                say(f"{obj.ref}: {where}label {key} holds {what}; remove it")


no_secret_in_metadata = resource_policy(
    name="no-secret-in-annotations",
    description="No secret in annotations or labels of any object (pod templates included).",
    check=_metadata,
    remediation="Never annotate objects with credentials; reference a Secret by name instead.",
    area=AREA,
)


POLICIES = [no_secret_in_pod_spec, no_secret_in_config, no_secret_in_metadata]
