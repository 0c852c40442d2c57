"""plan.md: a reviewer's summary of one stack that fits in a pull-request comment."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional

from . import effective
from .plan import Plan

# Component type tokens -> label in the topology diagram, in drawing order.
TIERS = {
    "tikit:traffic:Failover": "k8gb Gslb",
    "tikit:traffic:Gateway": "Gateway",
    "tikit:app:Backend": "API",
    "tikit:app:Workers": "Workers",
    "tikit:data:PgBouncer": "PgBouncer",
    "tikit:data:Postgres": "PostgreSQL",
    "tikit:data:Redis": "Redis",
    "tikit:observability:Monitoring": "Monitoring",
    "tikit:security:NetworkPolicies": "NetworkPolicies",
    "tikit:resilience:Resilience": "Chaos + load test",
    "tikit:platform:Nodes": "NodePools",
}
# Links inside one region (from, to).
LINKS = [
    ("tikit:traffic:Failover", "tikit:traffic:Gateway"),
    ("tikit:traffic:Gateway", "tikit:app:Backend"),
    ("tikit:app:Backend", "tikit:data:PgBouncer"),
    ("tikit:app:Workers", "tikit:data:PgBouncer"),
    ("tikit:data:PgBouncer", "tikit:data:Postgres"),
    ("tikit:app:Backend", "tikit:data:Redis"),
    ("tikit:app:Workers", "tikit:data:Redis"),
]
# Links between the primary region and each backup region (label).
CROSS = [
    ("tikit:data:Postgres", "WAL replica stream"),
    ("tikit:traffic:Failover", "DNS failover"),
]


@dataclass(frozen=True)
class Finding:
    policy: str
    enforcement: str  # mandatory | advisory
    message: str
    urn: Optional[str] = None


@dataclass(frozen=True)
class PolicyResult:
    pack: str
    policies: int
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def mandatory(self) -> list[Finding]:
        return [f for f in self.findings if f.enforcement == "mandatory"]

    @property
    def advisory(self) -> list[Finding]:
        return [f for f in self.findings if f.enforcement != "mandatory"]


def _node(region: str, type_: str) -> str:
    return f"{region}_{type_.rsplit(':', 1)[-1].lower()}"


def topology_mermaid(plan: Plan, primary: Optional[str] = None) -> str:
    """Regions as subgraphs, tiers as nodes, links within and across regions."""
    present = {(r.region, r.type) for r in plan.resources if r.region and r.type in TIERS}
    regions = plan.regions
    primary = primary or (plan.outputs.get("primaryRegion") if isinstance(plan.outputs, dict) else None) or (
        regions[0] if regions else None
    )
    lines = ["flowchart LR"]
    for region in regions:
        role = "primary" if region == primary else "backup"
        lines.append(f'  subgraph {region}["{region} ({role})"]')
        for type_, label in TIERS.items():
            if (region, type_) in present:
                lines.append(f'    {_node(region, type_)}["{label}"]')
        lines.append("  end")
    for region in regions:
        for a, b in LINKS:
            if (region, a) in present and (region, b) in present:
                lines.append(f"  {_node(region, a)} --> {_node(region, b)}")
    for region in regions:
        if region == primary:
            continue
        for type_, label in CROSS:
            if (primary, type_) in present and (region, type_) in present:
                lines.append(f"  {_node(primary, type_)} -. {label} .-> {_node(region, type_)}")
    return "\n".join(lines)


# plan.md must fit in a pull-request comment: findings past this many rows are counted,
# not listed (policy.json has them all).
MAX_FINDING_ROWS = 200


def cell(text: object) -> str:
    """A value as one Markdown table cell: pipes escaped, line breaks flattened."""
    return str(text).replace("|", "\\|").replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    header = list(header)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return out


def policy_section(result: Optional[PolicyResult], max_rows: int = MAX_FINDING_ROWS) -> list[str]:
    if result is None:
        return ["Policies were not run."]
    status = "FAILED" if result.mandatory else "passed"
    lines = [
        f"Policy pack `{result.pack}`: {result.policies} policies, "
        f"{len(result.mandatory)} mandatory violation(s), {len(result.advisory)} advisory finding(s): **{status}**."
    ]
    if result.findings:
        shown = result.findings[:max_rows]  # mandatory findings sort first, so they are the ones shown
        lines.append("")
        lines += _table(
            ["level", "policy", "resource", "message"],
            (
                (f.enforcement, f"`{f.policy}`", f"`{f.urn.rsplit('::', 1)[-1]}`" if f.urn else "stack", f.message)
                for f in shown
            ),
        )
        if len(result.findings) > len(shown):
            lines += ["", f"... {len(result.findings) - len(shown)} more findings (see policy.json)"]
    return lines


def stack_report(plan: Plan, policy: Optional[PolicyResult] = None, capacity: Optional[list[str]] = None) -> str:
    counts = Counter((r.region or "global", r.type) for r in plan.resources)
    per_region = Counter(r.region or "global" for r in plan.resources)
    lines = [
        f"# Offline preview: `{plan.project}` / `{plan.stack}`",
        "",
        f"{len(plan.resources)} resources; {len(plan.kubernetes_objects())} Kubernetes objects rendered.",
        "",
        "## Resources per region",
        "",
        *_table(
            ["region", "resources", "Kubernetes objects"],
            ((reg, n, sum(1 for r in plan.kubernetes_objects() if (r.region or "global") == reg)) for reg, n in sorted(per_region.items())),
        ),
        "",
        "## Policies",
        "",
        *policy_section(policy),
        "",
        *effective.section(plan, _table),
        "",
        *(["## Capacity", "", *capacity, ""] if capacity else []),
        "## Topology",
        "",
        "```mermaid",
        topology_mermaid(plan),
        "```",
        "",
        "<details><summary>Resources per region and type</summary>",
        "",
        *_table(["region", "type", "count"], ((reg, f"`{t}`", n) for (reg, t), n in sorted(counts.items()))),
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)
