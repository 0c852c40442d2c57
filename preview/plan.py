"""Turn recorded registrations into the plan: redacted, integer-clean, sorted, with the
region of every resource, plus the Kubernetes objects the providers would apply."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .engine import REPO_ROOT, SECRET_SIG, SIG_KEY, Record, Run

REDACTED = "[secret]"
REGION_TYPE = "tikit:platform:Region"
PROVIDER_TYPE = "pulumi:providers:kubernetes"


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def clean(value: Any, *, repo: Path = REPO_ROOT) -> Any:
    """Redact secrets (keeping map keys visible), turn integral floats back into ints and
    show paths inside the repository relative to it, so plans compare across machines.

    Every key stays, "__"-prefixed ones included (a ConfigMap may hold `__init__.py`): the
    SDK's mock engine adds no internal properties to the inputs it records."""
    if is_secret(value):
        inner = value.get("value")
        if isinstance(inner, dict) and not is_secret(inner):
            return {k: REDACTED for k in sorted(inner)}
        return REDACTED
    if isinstance(value, dict):
        return {k: clean(v, repo=repo) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [clean(v, repo=repo) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        root = str(repo)
        if value == root:
            return "."
        if value.startswith(root + "/"):
            return value[len(root) + 1 :]
    return value


@dataclass(frozen=True)
class Resource:
    urn: str
    type: str
    name: str
    parent: Optional[str]
    region: Optional[str]
    custom: bool
    inputs: dict[str, Any]
    # URNs this resource depends on (depends_on and the resources its inputs came from),
    # sorted: what the engine hands a stack policy as PolicyResource.dependencies.
    dependencies: tuple[str, ...] = ()

    @property
    def is_kubernetes(self) -> bool:
        """A Kubernetes object the provider applies (a Helm Chart is a component: the
        objects it renders are its children, made by the provider during `pulumi up`)."""
        return self.custom and self.type.startswith("kubernetes:")

    @property
    def manifest(self) -> dict[str, Any]:
        return self.inputs

    def as_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "region": self.region,
            "inputs": self.inputs,
            "dependencies": list(self.dependencies),
        }


@dataclass(frozen=True)
class Plan:
    project: str
    stack: str
    resources: tuple[Resource, ...]
    outputs: dict[str, Any]

    @property
    def regions(self) -> list[str]:
        return sorted({r.region for r in self.resources if r.region})

    def targets(self) -> dict[str, str]:
        """Region -> where `pulumi up` sends it: "context <name>" (a cluster) or
        "rendered to <dir>" (renderYamlToDirectory), from the region's provider."""
        out = {}
        for r in self.by_type(PROVIDER_TYPE):
            if r.region is None:
                continue
            context, directory = r.inputs.get("context"), r.inputs.get("renderYamlToDirectory")
            out[r.region] = f"context {context}" if context else f"rendered to {directory}/" if directory else "default kubeconfig"
        return dict(sorted(out.items()))

    def kubernetes_objects(self, region: Optional[str] = None) -> list[Resource]:
        return [r for r in self.resources if r.is_kubernetes and (region is None or r.region == region)]

    def by_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def as_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "stack": self.stack,
            "regions": self.regions,
            "resourceCount": len(self.resources),
            "resources": [r.as_json() for r in self.resources],
            "outputs": self.outputs,
        }


def _provider_urn(ref: Optional[str]) -> Optional[str]:
    # A provider reference is "<urn>::<id>"; the URN itself contains "::".
    return ref.rsplit("::", 1)[0] if ref else None


def _regions(records: list[Record]) -> dict[str, Optional[str]]:
    """Region of each URN: the nearest tikit:platform:Region ancestor (or provider's)."""
    by_urn = {r.urn: r for r in records}
    memo: dict[str, Optional[str]] = {}

    def region_of(urn: Optional[str]) -> Optional[str]:
        if urn is None or urn not in by_urn:
            return None
        if urn in memo:
            return memo[urn]
        rec = by_urn[urn]
        if rec.type == REGION_TYPE:
            found: Optional[str] = rec.name
        else:
            found = region_of(rec.parent) or region_of(_provider_urn(rec.provider))
        memo[urn] = found
        return found

    return {r.urn: region_of(r.urn) for r in records}


def build(run: Run) -> Plan:
    regions = _regions(run.records)
    resources = tuple(
        sorted(
            (
                Resource(
                    urn=r.urn,
                    type=r.type,
                    name=r.name,
                    parent=r.parent,
                    region=regions[r.urn],
                    custom=r.custom,
                    inputs=clean(r.inputs),
                    dependencies=tuple(sorted(set(r.dependencies))),
                )
                for r in run.records
            ),
            key=lambda r: r.urn,
        )
    )
    return Plan(project=run.project, stack=run.stack, resources=resources, outputs=clean(run.outputs))


def manifest_filename(obj: dict[str, Any]) -> str:
    """The file name pulumi-kubernetes' renderYamlToDirectory gives an object."""

    def sanitise(s: str) -> str:
        return s.replace("/", "_").replace(":", "_")

    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    return f"{sanitise(obj['apiVersion'])}-{obj['kind'].lower()}-{sanitise(namespace)}-{sanitise(meta['name'])}.yaml"


def manifest_subdir(obj: dict[str, Any]) -> str:
    return "0-crd" if obj.get("kind") == "CustomResourceDefinition" else "1-manifest"
