"""Add-ons: every operator pinned to an exact release, every custom resource of a kind that
release serves, and every custom resource installed after its operator.

The releases are tikit/versions.py, the one table the program installs from and the CRD
files come from; the pack reads that table (pure data) and the rendered resources only.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Optional

from pulumi_policy import (
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from tikit import versions

from .base import MANDATORY, Report, stack_policy
from .model import Obj, _region_from_parents, from_chart

AREA = "addons"
CHART_TYPES = ("kubernetes:helm.sh/v4:Chart", "kubernetes:helm.sh/v3:Chart", "kubernetes:helm.sh/v3:Release")
# An exact chart release: no ranges, wildcards, "latest" or empty.
EXACT_VERSION = re.compile(r"^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$")
# Groups the Kubernetes API server serves itself (no operator needed).
BUILTIN_GROUP = re.compile(r"^$|^[a-z0-9.-]*\.k8s\.io$|^(apps|batch|policy|autoscaling)$")
REGION_TYPE = "tikit:platform:Region"


def _pinned(chart: str, version: str) -> Optional[versions.Operator]:
    for operator in versions.OPERATORS:
        if any(c.name == chart and c.version == version for c in operator.charts):
            return operator
    return None


def _check_chart(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in CHART_TYPES:
        return
    props = args.props
    chart, version = str(props.get("chart") or ""), str(props.get("version") or "")
    name = args.urn.rsplit("::", 1)[-1]
    if not EXACT_VERSION.match(version):
        report(
            f"Helm chart {chart or '?'} ({name}) is not pinned to an exact release (version {version or 'unset'!r}); "
            "set the chart version of tikit/versions.py",
            None,
        )
    elif _pinned(chart, version) is None:
        known = ", ".join(f"{c.name} {c.version}" for o in versions.OPERATORS for c in o.charts)
        report(f"Helm chart {chart} {version} ({name}) is not a release tikit/versions.py pins ({known})", None)


addon_pinned = ResourceValidationPolicy(
    name="addon-pinned",
    description="Every add-on's Helm chart is pinned to the exact release tikit/versions.py names.",
    validate=_check_chart,
    enforcement_level=MANDATORY,
    remediation_steps="Install operators through components/addons.py, which reads the chart and version from tikit/versions.py.",
    tags=[AREA],
)


def _served() -> dict[tuple[str, str], versions.Operator]:
    return {gvk: o for o in versions.OPERATORS for gvk in versions.served_kinds(o)}


def _custom_resources(stack: Any) -> Iterable[Obj]:
    for obj in stack.objects:
        if obj.type.startswith("kubernetes:") and not BUILTIN_GROUP.match(obj.group):
            yield obj


def _check_served(stack: Any, cfg: dict, report: Report) -> None:
    served = _served()
    for obj in _custom_resources(stack):
        if (obj.api_version, obj.kind) in served:
            continue
        groups = sorted(v for v, k in served if v.rpartition("/")[0] == obj.group)
        hint = f"the pinned release serves {', '.join(groups)}" if groups else f"no pinned operator serves group {obj.group!r}"
        report(f"{obj.ref}: {obj.api_version} {obj.kind} is not served by the pinned CRDs ({hint})", obj)


custom_resources_served = stack_policy(
    name="custom-resource-served",
    description="Every custom resource's apiVersion and kind is served by the CRDs of the release tikit/versions.py pins.",
    check=_check_served,
    remediation="Use an apiVersion and kind the pinned operator release serves, or bump the release in tikit/versions.py.",
    area=AREA,
)


def _closure(resource: Any) -> set[str]:
    """URNs ``resource`` waits for, directly or through what it waits for."""
    seen: set[str] = set()
    todo = list(resource.dependencies or [])
    while todo:
        dep = todo.pop()
        if dep.urn in seen:
            continue
        seen.add(dep.urn)
        todo.extend(dep.dependencies or [])
    return seen


def _validate_order(args: StackValidationArgs, report: ReportViolation) -> None:
    resources = list(args.resources)
    charts: dict[tuple[Optional[str], str], list[str]] = {}  # (region, operator key) -> chart URNs
    for r in resources:
        if r.resource_type in CHART_TYPES:
            operator = _pinned(str(r.props.get("chart") or ""), str(r.props.get("version") or ""))
            if operator is not None:
                charts.setdefault((_region_from_parents(r), operator.key), []).append(r.urn)
    managed = {region for region, _ in charts}
    for r in resources:
        if r.resource_type in CHART_TYPES or not r.resource_type.startswith("kubernetes:") or from_chart(r.urn):
            continue  # charts themselves, non-Kubernetes resources, and a chart's own objects
        api_version = r.resource_type.split(":")[1]
        group = api_version.rpartition("/")[0]
        operator = versions.operator_for_group(group)
        region = _region_from_parents(r)
        if operator is None or not operator.installed or region not in managed:
            continue  # a built-in kind, the cluster's own provisioner, or a region whose operators are external
        installing = charts.get((region, operator.key), [])
        if not set(installing) & _closure(r):
            name = r.urn.rsplit("::", 1)[-1]
            report(
                f"{r.resource_type.split(':', 2)[2]} {name} in {region} does not wait for {operator.title} "
                f"(its chart {'is not installed there' if not installing else 'is not among its dependencies'}); "
                "one `pulumi up` on an empty cluster would fail on it",
                r.urn,
            )


custom_resources_after_addon = StackValidationPolicy(
    name="custom-resource-after-addon",
    description="Where the stack installs the operators, every custom resource depends on the chart that serves its kind.",
    validate=_validate_order,
    enforcement_level=MANDATORY,
    remediation_steps="Declare custom resources with kube.custom(), which adds the dependency on the serving add-on.",
    tags=[AREA],
)

POLICIES = [addon_pinned, custom_resources_served, custom_resources_after_addon]
