"""Compare two offline previews of one stack: resources added, removed and changed (by
URN, with field-level changes), unified diffs of the manifests, and the policy results
before and after.

Both sides are what ``python -m preview`` wrote (plan.json, the manifests, policy.json
when the policy runner ran), so secrets are already redacted on both; on top of that a
field whose value is redacted on either side is shown redacted on both, so a value that
only now became secret is not printed from the old side.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from . import output
from .plan import REDACTED, Plan, Resource

# A removed and an added resource of one type whose inputs agree on at least this share of
# their leaf fields are reported as a possible rename.
RENAME_SIMILARITY = 0.9
RENAME_NOTE = "possible rename: use aliases to avoid replacement"
SECRET_KINDS = {"Secret"}
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: same result, faster
SECRET_FIELDS = ("data", "stringData")
GLOBAL = "global"  # row for resources outside any region (stack-wide credentials, ...)


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()


# --------------------------------------------------------------------------------------
# One side of the comparison, as the preview wrote it
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    plan: dict[str, Any]
    manifests: dict[str, str]  # "<region>/<0-crd|1-manifest>/<file>.yaml" -> text
    policy: Optional[dict[str, Any]] = None

    @classmethod
    def load(cls, stack_dir: Path) -> "Side":
        plan = json.loads((stack_dir / "plan.json").read_text())
        manifests = {
            p.relative_to(stack_dir).as_posix(): p.read_text()
            for p in sorted(stack_dir.glob("*/*/*.yaml"))
        }
        policy_file = stack_dir / "policy.json"
        policy = json.loads(policy_file.read_text()) if policy_file.is_file() else None
        return cls(plan=plan, manifests=manifests, policy=policy)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return {r["urn"]: r for r in self.plan.get("resources", [])}

    @property
    def regions(self) -> list[str]:
        return list(self.plan.get("regions", []))


def plan_from_json(doc: dict[str, Any]) -> Plan:
    """A Plan object back from plan.json (for the topology diagram)."""
    resources = tuple(
        Resource(
            urn=r["urn"],
            type=r["type"],
            name=r["name"],
            parent=r.get("parent"),
            region=r.get("region"),
            custom=not r["type"].startswith("tikit:"),
            inputs=r.get("inputs") or {},
            dependencies=tuple(r.get("dependencies") or ()),
        )
        for r in doc.get("resources", [])
    )
    return Plan(project=doc.get("project", ""), stack=doc.get("stack", ""), resources=resources, outputs=doc.get("outputs") or {})


# --------------------------------------------------------------------------------------
# Field-level changes
# --------------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _join(path: str, key: str) -> str:
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _named(items: list[Any]) -> Optional[dict[str, Any]]:
    """Lists of named maps (containers, env, ports, volumes) keyed by name, so inserting an
    entry shows as one addition rather than a shift of every later index."""
    if not items or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    names = [i["name"] for i in items]
    if len(set(names)) != len(names):
        return None
    return {n: i for n, i in zip(names, items)}


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Leaf path -> value; empty maps and lists are leaves."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for key in sorted(value):
            out.update(flatten(value[key], _join(path, str(key))))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            out.update(flatten(item, f"{path}[{i}]"))
    else:
        out[path] = value
    return out


def _leaf_changes(old: Any, new: Any, path: str) -> Iterable[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict) and (old or new):
        for key in sorted(set(old) | set(new), key=str):
            sub = _join(path, str(key))
            if key not in old:
                yield from ((p, MISSING, v) for p, v in flatten(new[key], sub).items())
            elif key not in new:
                yield from ((p, v, MISSING) for p, v in flatten(old[key], sub).items())
            else:
                yield from _leaf_changes(old[key], new[key], sub)
        return
    if isinstance(old, list) and isinstance(new, list) and (old or new):
        old_named, new_named = _named(old), _named(new)
        if old_named is not None and new_named is not None:
            for name in list(old_named) + [n for n in new_named if n not in old_named]:
                sub = f"{path}[name={name}]"
                if name not in old_named:
                    yield from ((p, MISSING, v) for p, v in flatten(new_named[name], sub).items())
                elif name not in new_named:
                    yield from ((p, v, MISSING) for p, v in flatten(old_named[name], sub).items())
                else:
                    yield from _leaf_changes(old_named[name], new_named[name], sub)
            return
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(old):
                yield from ((p, MISSING, v) for p, v in flatten(new[i], sub).items())
            elif i >= len(new):
                yield from ((p, v, MISSING) for p, v in flatten(old[i], sub).items())
            else:
                yield from _leaf_changes(old[i], new[i], sub)
        return
    if old != new:
        yield path, old, new


def _is_secret_path(kind: Optional[str], path: str) -> bool:
    return kind in SECRET_KINDS and any(path == f or path.startswith((f + ".", f + "[")) for f in SECRET_FIELDS)


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any

    @property
    def secret(self) -> bool:
        return self.old == REDACTED and self.new == REDACTED

    def render(self) -> str:
        return f"{self.path}: {_show(self.old)} -> {_show(self.new)}"


def _show(value: Any) -> str:
    if value is MISSING:
        return "(absent)"
    return json.dumps(value, sort_keys=True)


def field_changes(old_inputs: dict[str, Any], new_inputs: dict[str, Any], kind: Optional[str] = None) -> list[FieldChange]:
    changes = []
    for path, old, new in _leaf_changes(old_inputs, new_inputs, ""):
        if old == REDACTED or new == REDACTED or _is_secret_path(kind, path):
            # Redacted on either side (or a Secret's data): redacted on both.
            old = MISSING if old is MISSING else REDACTED
            new = MISSING if new is MISSING else REDACTED
        changes.append(FieldChange(path, old, new))
    return changes


# --------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceChange:
    action: str  # "add" | "remove" | "change"
    urn: str
    type: str
    name: str
    region: Optional[str]
    fields: tuple[FieldChange, ...] = ()
    note: str = ""

    @property
    def row_region(self) -> str:
        return self.region or GLOBAL

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "region": self.region,
            "note": self.note,
            "fields": [
                {"path": f.path, "old": None if f.old is MISSING else f.old, "new": None if f.new is MISSING else f.new}
                for f in self.fields
            ],
        }


def _kind(res: dict[str, Any]) -> Optional[str]:
    inputs = res.get("inputs") or {}
    return inputs.get("kind") if res["type"].startswith("kubernetes:") else None


def _k8s_identity(res: dict[str, Any]) -> Optional[tuple]:
    inputs = res.get("inputs") or {}
    meta = inputs.get("metadata") if isinstance(inputs.get("metadata"), dict) else {}
    if not res["type"].startswith("kubernetes:") or not meta.get("name"):
        return None
    return (res.get("region"), inputs.get("kind"), meta.get("namespace"), meta.get("name"))


def _leaves(inputs: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, json.dumps(value, sort_keys=True)) for path, value in flatten(inputs).items()}


def similarity(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Share of leaf fields (path and value) the two inputs have in common."""
    return _similarity(_leaves(a), _leaves(b))


def _similarity(la: set[tuple[str, str]], lb: set[tuple[str, str]]) -> float:
    paths = {p for p, _ in la} | {p for p, _ in lb}
    return len(la & lb) / len(paths) if paths else 0.0


def _renames(removed: list[dict[str, Any]], added: list[dict[str, Any]]) -> dict[str, str]:
    """removed URN <-> added URN for pairs that look like one resource under a new URN."""
    candidates: list[tuple[float, str, str]] = []
    leaves: dict[str, set[tuple[str, str]]] = {}

    def leaves_of(res: dict[str, Any]) -> set[tuple[str, str]]:
        if res["urn"] not in leaves:
            leaves[res["urn"]] = _leaves(res.get("inputs") or {})
        return leaves[res["urn"]]

    for r in removed:
        same_type = [a for a in added if a["type"] == r["type"]]
        for a in same_type:
            ident = _k8s_identity(r)
            if ident is not None and ident == _k8s_identity(a):
                candidates.append((2.0, r["urn"], a["urn"]))  # the same object in the cluster
                continue
            if r.get("inputs") or a.get("inputs"):
                score = _similarity(leaves_of(r), leaves_of(a))
                if score >= RENAME_SIMILARITY:
                    candidates.append((score, r["urn"], a["urn"]))
            elif r.get("region") == a.get("region"):
                # Components carry no inputs: pair them only when the match is unambiguous.
                peers_r = [x for x in removed if x["type"] == r["type"] and x.get("region") == r.get("region")]
                peers_a = [x for x in same_type if x.get("region") == r.get("region")]
                if len(peers_r) == 1 and len(peers_a) == 1:
                    candidates.append((1.0, r["urn"], a["urn"]))
    pairs: dict[str, str] = {}
    used: set[str] = set()
    for _, r_urn, a_urn in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if r_urn in pairs or a_urn in used:
            continue
        pairs[r_urn] = a_urn
        used.add(a_urn)
    return pairs


def resource_changes(base: dict[str, dict[str, Any]], head: dict[str, dict[str, Any]]) -> list[ResourceChange]:
    """Changes between two {urn: plan.json resource} maps, removals first, then additions,
    then in-place changes, each sorted by URN."""
    removed = [base[u] for u in sorted(set(base) - set(head))]
    added = [head[u] for u in sorted(set(head) - set(base))]
    renames = _renames(removed, added)
    renamed_to = {a: r for r, a in renames.items()}
    out: list[ResourceChange] = []
    for res in removed:
        note = f"{RENAME_NOTE} (now `{head[renames[res['urn']]]['name']}`)" if res["urn"] in renames else ""
        out.append(ResourceChange("remove", res["urn"], res["type"], res["name"], res.get("region"), note=note))
    for res in added:
        note = f"{RENAME_NOTE} (was `{base[renamed_to[res['urn']]]['name']}`)" if res["urn"] in renamed_to else ""
        out.append(ResourceChange("add", res["urn"], res["type"], res["name"], res.get("region"), note=note))
    for urn in sorted(set(base) & set(head)):
        old, new = base[urn], head[urn]
        fields = field_changes(old.get("inputs") or {}, new.get("inputs") or {}, _kind(new) or _kind(old))
        for key in ("parent", "region"):
            if old.get(key) != new.get(key):
                fields.append(FieldChange(f"({key})", old.get(key), new.get(key)))
        if fields:
            out.append(ResourceChange("change", urn, new["type"], new["name"], new.get("region"), tuple(fields)))
    return out


# --------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestDiff:
    path: str
    status: str  # "added" | "removed" | "changed"
    diff: str


def _mask_secret_manifest(text: str) -> str:
    """A Secret's values redacted, whatever the rendered file holds."""
    try:
        obj = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text
    if not isinstance(obj, dict) or obj.get("kind") not in SECRET_KINDS:
        return text
    for key in SECRET_FIELDS:
        if isinstance(obj.get(key), dict):
            obj[key] = {k: REDACTED for k in obj[key]}
    return output.manifest_yaml(obj)


def _mask_pair(old: Any, new: Any) -> tuple[Any, Any, bool]:
    """Values redacted on one side redacted on the other too (a value that just became
    secret must not be printed from the old manifest)."""
    if old == REDACTED or new == REDACTED:
        return REDACTED, REDACTED, old != new
    if isinstance(old, dict) and isinstance(new, dict):
        old, new, changed = dict(old), dict(new), False
        for key in set(old) & set(new):
            old[key], new[key], c = _mask_pair(old[key], new[key])
            changed |= c
        return old, new, changed
    if isinstance(old, list) and isinstance(new, list):
        old, new, changed = list(old), list(new), False
        for i in range(min(len(old), len(new))):
            old[i], new[i], c = _mask_pair(old[i], new[i])
            changed |= c
        return old, new, changed
    return old, new, False


def _mask_manifest_pair(old_text: str, new_text: str) -> tuple[str, str]:
    try:
        old_obj, new_obj = yaml.load(old_text, Loader=_Loader), yaml.load(new_text, Loader=_Loader)
    except yaml.YAMLError:
        return old_text, new_text
    if not isinstance(old_obj, dict) or not isinstance(new_obj, dict):
        return old_text, new_text
    old_obj, new_obj, changed = _mask_pair(old_obj, new_obj)
    if not changed:
        return old_text, new_text  # byte for byte what the preview wrote
    return output.manifest_yaml(old_obj), output.manifest_yaml(new_obj)


def manifest_diffs(stack: str, base: dict[str, str], head: dict[str, str], context: int = 3) -> list[ManifestDiff]:
    out = []
    for path in sorted(set(base) | set(head)):
        if base.get(path) == head.get(path):
            continue  # most files: nothing to parse or mask
        old = _mask_secret_manifest(base[path]) if path in base else ""
        new = _mask_secret_manifest(head[path]) if path in head else ""
        if old and new:
            old, new = _mask_manifest_pair(old, new)
        if old == new:
            continue
        status = "added" if path not in base else "removed" if path not in head else "changed"
        diff = "".join(
            difflib.unified_diff(
                old.splitlines(keepends=True),
                new.splitlines(keepends=True),
                fromfile="/dev/null" if status == "added" else f"a/{stack}/{path}",
                tofile="/dev/null" if status == "removed" else f"b/{stack}/{path}",
                n=context,
            )
        )
        if not diff.endswith("\n"):
            diff += "\n"
        out.append(ManifestDiff(path, status, diff))
    return out


# --------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------


def _findings(doc: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    return list((doc or {}).get("findings") or [])


def _finding_key(f: dict[str, Any]) -> tuple:
    return (f.get("policy"), f.get("enforcement"), f.get("urn"), f.get("message"))


def policy_status(doc: Optional[dict[str, Any]], findings: Optional[list[dict[str, Any]]] = None) -> str:
    if doc is None:
        return "not run"
    findings = _findings(doc) if findings is None else findings
    mandatory = sum(1 for f in findings if f.get("enforcement") == "mandatory")
    advisory = len(findings) - mandatory
    status = f"FAILED ({mandatory} mandatory)" if mandatory else "passed"
    return f"{status}, {advisory} advisory" if advisory else status


@dataclass(frozen=True)
class PolicyDiff:
    before: Optional[dict[str, Any]]
    after: Optional[dict[str, Any]]
    base_rendered: bool = True
    head_rendered: bool = True

    @property
    def introduced(self) -> list[dict[str, Any]]:
        old = {_finding_key(f) for f in _findings(self.before)}
        return [f for f in _findings(self.after) if _finding_key(f) not in old]

    @property
    def resolved(self) -> list[dict[str, Any]]:
        new = {_finding_key(f) for f in _findings(self.after)}
        return [f for f in _findings(self.before) if _finding_key(f) not in new]

    def side_status(self, side: str, findings: Optional[list[dict[str, Any]]] = None) -> str:
        """Status of "base" or "head" (optionally of a subset of its findings)."""
        if side == "base":
            return policy_status(self.before, findings) if self.base_rendered else "no base"
        return policy_status(self.after, findings) if self.head_rendered else "not rendered"

    @property
    def status(self) -> str:
        return f"{self.side_status('base')} → {self.side_status('head')}"

    @property
    def changed(self) -> bool:
        return bool(self.introduced or self.resolved) or (self.before is None) != (self.after is None)


# --------------------------------------------------------------------------------------
# A stack
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackDiff:
    stack: str
    base: Optional[Side]
    head: Optional[Side]
    resources: tuple[ResourceChange, ...] = ()
    manifests: tuple[ManifestDiff, ...] = ()
    policy: PolicyDiff = field(default_factory=lambda: PolicyDiff(None, None))
    notes: tuple[str, ...] = ()
    error: Optional[str] = None  # the head side did not render

    @property
    def changed(self) -> bool:
        return bool(self.resources or self.manifests or self.error or self.policy.changed)

    @property
    def regions(self) -> list[str]:
        regions = set()
        for side in (self.base, self.head):
            if side is not None:
                regions.update(side.regions)
        rows = sorted(regions)
        if any(r.region is None for r in self.resources) or any(
            self._finding_region(side, f) == GLOBAL
            for side, doc in ((self.base, self.policy.before), (self.head, self.policy.after))
            for f in _findings(doc)
        ):
            rows.append(GLOBAL)
        return rows or [GLOBAL]

    @staticmethod
    def _finding_region(side: Optional[Side], finding: dict[str, Any]) -> str:
        """Region of the resource a finding names; stack-wide findings are `global`."""
        res = (side.resources if side else {}).get(finding.get("urn"))
        return (res or {}).get("region") or GLOBAL

    def counts(self, region: Optional[str] = None) -> dict[str, int]:
        counts = {"add": 0, "remove": 0, "change": 0}
        for r in self.resources:
            if region is None or r.row_region == region:
                counts[r.action] += 1
        return counts

    def region_policy(self, region: str) -> str:
        """Policy status of one region's resources (stack-wide findings go to `global`)."""

        def status(which: str, side: Optional[Side], doc: Optional[dict[str, Any]]) -> str:
            if side is None or doc is None:
                return self.policy.side_status(which)
            mine = [f for f in _findings(doc) if self._finding_region(side, f) == region]
            return self.policy.side_status(which, mine)

        return f"{status('base', self.base, self.policy.before)} → {status('head', self.head, self.policy.after)}"

    def head_plan(self) -> Optional[Plan]:
        side = self.head or self.base
        return plan_from_json(side.plan) if side is not None else None

    def as_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "changed": self.changed,
            "error": self.error,
            "notes": list(self.notes),
            "counts": {region: self.counts(region) for region in self.regions},
            "policy": {
                "before": policy_status(self.policy.before),
                "after": policy_status(self.policy.after),
                "introduced": self.policy.introduced,
                "resolved": self.policy.resolved,
            },
            "resources": [r.as_json() for r in self.resources],
            "manifests": [{"path": m.path, "status": m.status} for m in self.manifests],
        }


def compare(stack: str, base: Optional[Side], head: Optional[Side], *, notes: Iterable[str] = (), error: Optional[str] = None) -> StackDiff:
    """Diff one stack.  No base: everything the head has is added.  No head (it failed to
    render): nothing to compare, the error is the result."""
    policy = PolicyDiff(base.policy if base else None, head.policy if head else None, base is not None, head is not None)
    if head is None:
        return StackDiff(stack, base, None, policy=policy, notes=tuple(notes), error=error or "did not render")
    base_resources = base.resources if base else {}
    return StackDiff(
        stack,
        base,
        head,
        resources=tuple(resource_changes(base_resources, head.resources)),
        manifests=tuple(manifest_diffs(stack, base.manifests if base else {}, head.manifests)),
        policy=policy,
        notes=tuple(notes),
    )
