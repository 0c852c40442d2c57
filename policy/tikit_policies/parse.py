"""Pure parsers the policies share: resource values, quantities, images, cron expressions,
pgbouncer.ini and redis.conf.  No Pulumi, no I/O: values in, values out.

Under the Pulumi CLI the analyzer hands resource properties over as read-only proxies that
raise on values unknown during preview; ``plain`` turns them into ordinary dicts and lists
and unknown values into ``UNKNOWN``, so a policy can skip what it cannot know instead of
failing as a whole.  Numbers arrive as floats there (3.0) and as ints offline.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Optional

try:  # The sentinels the engine uses for values unknown during preview.
    from pulumi_policy.proxy import (
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_OBJECT_VALUE,
        UNKNOWN_STRING_VALUE,
    )

    _SENTINELS = frozenset(
        {
            UNKNOWN_ARCHIVE_VALUE,
            UNKNOWN_ARRAY_VALUE,
            UNKNOWN_ASSET_VALUE,
            UNKNOWN_BOOLEAN_VALUE,
            UNKNOWN_NUMBER_VALUE,
            UNKNOWN_OBJECT_VALUE,
            UNKNOWN_STRING_VALUE,
        }
    )
except ImportError:  # pragma: no cover - pulumi-policy is always installed with the pack
    _SENTINELS = frozenset({"04da6b54-80e4-46f7-96ec-b56ff0331ba9"})


class _Unknown:
    """A value the engine cannot know during preview (computed by another resource)."""

    _instance: Optional["_Unknown"] = None

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown>"

    def __bool__(self) -> bool:
        return False


UNKNOWN = _Unknown()

# The offline preview redacts every Pulumi secret to this marker (preview/plan.py REDACTED).
REDACTED = "[secret]"


def plain(value: Any) -> Any:
    """Analyzer proxies -> plain dicts and lists; unknown sentinels -> UNKNOWN."""
    if isinstance(value, str):
        return UNKNOWN if value in _SENTINELS else value
    if isinstance(value, Mapping):
        target: Any = value
        if not isinstance(value, dict):
            try:  # pulumi_policy's proxies expose the wrapped object as "__target"
                target = value["__target"]
            except Exception:  # noqa: BLE001 - any other Mapping
                target = {k: value[k] for k in value}
        return {str(k): plain(v) for k, v in target.items()}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        target = value
        if not isinstance(value, (list, tuple)):
            try:
                target = value["__target"]  # type: ignore[index]
            except Exception:  # noqa: BLE001
                target = list(value)
        return [plain(v) for v in target]
    inner = getattr(value, "value", None)
    if type(value).__name__ == "Secret" and inner is not None:  # pulumi_policy.Secret
        return plain(inner)
    return value


def get(obj: Any, *path: Any, default: Any = None) -> Any:
    """obj[path[0]][path[1]]... or default when any step is missing or of the wrong kind."""
    cur = obj
    for step in path:
        if isinstance(step, int):
            if not isinstance(cur, list) or not -len(cur) <= step < len(cur):
                return default
            cur = cur[step]
        else:
            if not isinstance(cur, dict) or step not in cur:
                return default
            cur = cur[step]
    return cur


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def as_int(value: Any) -> Optional[int]:
    """3, 3.0 and "3" -> 3; anything else (unknown, "50%", 2.5) -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    return None


def as_float(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def fmt(n: float) -> str:
    """12000 -> '12,000'; 1.5 -> '1.5': numbers in messages, readable."""
    if float(n).is_integer():
        return f"{int(n):,}"
    return f"{n:,.2f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------------------
# Kubernetes quantities and int-or-percent values
# --------------------------------------------------------------------------------------

_QUANTITY_RE = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)(?:[eE]([+-]?[0-9]+))?(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SUFFIX = {
    None: 1,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
}


def quantity(value: Any) -> Optional[float]:
    """A Kubernetes resource quantity ('512Mi', '0.5', '250m', 1) as a number of base units."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    m = _QUANTITY_RE.match(value.strip())
    if not m:
        return None
    number = float(m.group(1)) * (10 ** int(m.group(2)) if m.group(2) else 1)
    return number * _SUFFIX[m.group(3)]


def mib(n_bytes: float) -> str:
    return f"{fmt(round(n_bytes / 1024**2, 1))}Mi"


def int_or_percent(value: Any, total: int, *, round_up: bool) -> Optional[int]:
    """A PDB's minAvailable / maxUnavailable against ``total`` pods (Kubernetes rounds both up)."""
    n = as_int(value)
    if n is not None:
        return n
    if isinstance(value, str) and re.fullmatch(r"[0-9]+%", value.strip()):
        exact = int(value.strip()[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return None


# --------------------------------------------------------------------------------------
# Container images
# --------------------------------------------------------------------------------------


def image_problem(image: Any) -> Optional[str]:
    """Why an image reference is not pinned (None when it has a version tag or a digest)."""
    if not isinstance(image, str):
        return None if image is UNKNOWN else "is not a string"
    ref = image.strip()
    if not ref:
        return "is empty"
    name, _, digest = ref.partition("@")
    if digest:
        if not re.fullmatch(r"sha256:[a-f0-9]{64}", digest):
            return f"has a malformed digest '{digest}'"
        return None
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag or digest (the runtime pulls 'latest')"
    tag = last.split(":", 1)[1]
    if tag.lower() in ("latest", "main", "master", "stable", "edge", "nightly", "dev"):
        return f"uses the floating tag '{tag}'"
    return None


# --------------------------------------------------------------------------------------
# Cron expressions
# --------------------------------------------------------------------------------------

_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
_DAYS = "SUN MON TUE WED THU FRI SAT".split()
# (name, low, high, names)
_SECOND = ("second", 0, 59, ())
_MINUTE = ("minute", 0, 59, ())
_HOUR = ("hour", 0, 23, ())
_DOM = ("day of month", 1, 31, ())
_MONTH = ("month", 1, 12, tuple(_MONTHS))
# 0-6 only: the Go cron parser that CronJobs, KEDA, CNPG and Karpenter use refuses 7
# (tikit.cron.DAY_OF_WEEK_MAX says the same; a test keeps them equal).
_DOW = ("day of week", 0, 6, tuple(_DAYS))
FIVE_FIELDS = (_MINUTE, _HOUR, _DOM, _MONTH, _DOW)
SIX_FIELDS = (_SECOND, *FIVE_FIELDS)
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _cron_value(text: str, low: int, high: int, names: tuple[str, ...]) -> Optional[int]:
    if text.isdigit():
        v = int(text)
        return v if low <= v <= high else None
    upper = text.upper()
    if upper in names:
        # JAN is month 1; SUN is day 0.
        return names.index(upper) + (1 if names == tuple(_MONTHS) else 0)
    return None


def _cron_field_problem(text: str, spec: tuple[str, int, int, tuple[str, ...]]) -> Optional[str]:
    name, low, high, names = spec
    for part in text.split(","):
        if not part:
            return f"{name} '{text}' has an empty list item"
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            return f"{name} step '/{step}' must be a positive number"
        if base in ("*", "?"):
            continue
        lo, dash, hi = base.partition("-")
        for piece in (lo, hi) if dash else (lo,):
            if _cron_value(piece, low, high, names) is None:
                return f"{name} '{piece}' is outside {low}-{high}"
    return None


def cron_problem(expr: Any, fields: tuple, *, macros: bool = False) -> Optional[str]:
    """Why ``expr`` is not a valid cron expression with exactly ``len(fields)`` fields."""
    if not isinstance(expr, str):
        return None if expr is UNKNOWN else "is not a string"
    text = expr.strip()
    if macros and text in CRON_MACROS:
        return None
    if text.startswith(("TZ=", "CRON_TZ=")):
        return "carries a TZ= prefix; set the resource's time zone field instead"
    parts = text.split()
    if len(parts) != len(fields):
        return f"has {len(parts)} fields, expected {len(fields)} ({' '.join(f[0].split()[0] for f in fields)})"
    for part, spec in zip(parts, fields):
        problem = _cron_field_problem(part, spec)
        if problem:
            return problem
    return None


# --------------------------------------------------------------------------------------
# Config files
# --------------------------------------------------------------------------------------


def ini_sections(text: str) -> dict[str, dict[str, str]]:
    """pgbouncer.ini -> {section: {key: value}} (keys lower-cased; ';' and '#' comments)."""
    sections: dict[str, dict[str, str]] = {}
    current: Optional[dict[str, str]] = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        m = re.fullmatch(r"\[([^\]]+)\]", line)
        if m:
            current = sections.setdefault(m.group(1).strip().lower(), {})
            continue
        if current is None or "=" not in line:
            continue
        key, _, value = line.partition("=")
        current[key.strip().lower()] = value.strip()
    return sections


def libpq_params(conninfo: str) -> dict[str, str]:
    """'host=a port=5432 dbname=b' -> {'host': 'a', ...} (quoted values allowed)."""
    out: dict[str, str] = {}
    for m in re.finditer(r"([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", conninfo):
        value = m.group(2)
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            value = value[1:-1]
        out[m.group(1).lower()] = value
    return out


def redis_directives(text: str) -> dict[str, list[list[str]]]:
    """redis.conf -> {directive: [args of each occurrence]}; 'save ""' resets the save rules."""
    out: dict[str, list[list[str]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        if not words:
            continue
        name, args = words[0].lower(), words[1:]
        if name == "save" and (not args or args == [""]):
            out["save"] = []
            continue
        out.setdefault(name, []).append(args)
    return out


_REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def redis_bytes(value: str) -> Optional[int]:
    """Redis memory notation: '1gb' = 1024^3, '1g' = 10^9, plain bytes."""
    m = re.fullmatch(r"([0-9]+)\s*([a-zA-Z]*)", value.strip())
    if not m or m.group(2).lower() not in _REDIS_UNITS:
        return None
    return int(m.group(1)) * _REDIS_UNITS[m.group(2).lower()]


def retention_days(value: Any) -> Optional[int]:
    """Barman retention ('7d', '2w', '1m') as days (a month counts 30)."""
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*([0-9]+)\s*([dwmDWM])\s*", value)
    if not m:
        return None
    return int(m.group(1)) * {"d": 1, "w": 7, "m": 30}[m.group(2).lower()]
