"""report.md for the pull-request comment: a summary table by stack and region first,
each changed stack's topology, and the details in collapsed sections, cut to fit
GitHub's comment limit with a visible note."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from .diff import StackDiff, policy_status
from .report import TIERS, _node, cell, topology_mermaid

# The comment is found again by this marker and edited in place on every push.
MARKER = "<!-- tikit-preview -->"
# GitHub rejects comment bodies longer than this.  Sizes are counted in UTF-8 bytes, which
# is never less than the character count GitHub applies.
COMMENT_LIMIT = 65_536
FULL_DIFF_HINT = "the full diff is in `build/diff/` (workflow artifact `preview-diff`)"
ACTION = {"add": "+", "remove": "-", "change": "~"}


def size(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass
class Block:
    """A piece of the report: head, items that may be cut, tail (closes what head opened)."""

    head: str
    items: list[str]
    tail: str = ""
    # 0 is kept whole whenever anything is; higher numbers share what is left, evenly.
    priority: int = 0
    more: Callable[[int], str] = lambda n: f"… {n} more line(s) not shown\n"

    def full(self) -> str:
        return self.head + "".join(self.items) + self.tail

    def fit(self, room: int) -> tuple[Optional[str], bool]:
        """(text that fits in room bytes or None, whether anything was cut)."""
        whole = self.full()
        if size(whole) <= room:
            return whole, False
        if not self.items:
            return None, True
        fixed = size(self.head) + size(self.tail)
        n = len(self.items)
        # Largest k whose first k items plus the "more" line fit; at least one item.
        prefix, best = 0, 0
        for k in range(n + 1):
            if k and fixed + prefix + size(self.more(n - k)) <= room:
                best = k
            if k < n:
                prefix += size(self.items[k])
                if fixed + prefix > room:
                    break
        if best == 0:
            return None, True
        return self.head + "".join(self.items[:best]) + self.more(n - best) + self.tail, True


def _fence(lines: Iterable[str]) -> str:
    return "````" if any("```" in line for line in lines) else "```"


def _details(
    summary: str, items: list[str], *, priority: int, code: Optional[str] = None, table_head: str = "", unit: str = "line"
) -> Block:
    if code is not None:
        fence = _fence(items)
        return Block(
            head=f"<details><summary>{summary}</summary>\n\n{fence}{code}\n",
            items=items,
            tail=f"{fence}\n\n</details>\n\n",
            priority=priority,
            more=lambda n: f"… {n} more {unit}(s) not shown: {FULL_DIFF_HINT}\n",
        )
    return Block(
        head=f"<details><summary>{summary}</summary>\n\n{table_head}",
        items=items,
        tail="\n</details>\n\n",
        priority=priority,
        more=lambda n: f"\n… {n} more {unit}(s) not shown: {FULL_DIFF_HINT}\n",
    )


def _counts_text(c: dict[str, int]) -> str:
    return f"{c['add']} added, {c['remove']} removed, {c['change']} changed"


def summary_table(diffs: list[StackDiff]) -> list[str]:
    lines = [
        "| stack | region | added | removed | changed | policy (base → head) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for d in diffs:
        if d.error:
            lines.append(f"| `{d.stack}` | — | | | | **did not render**: {cell(d.error)} |")
            continue
        for region in d.regions:
            c = d.counts(region)
            lines.append(
                f"| `{d.stack}` | {region} | {c['add']} | {c['remove']} | {c['change']} | {cell(d.region_policy(region))} |"
            )
    return lines


def _topology(d: StackDiff) -> str:
    plan = d.head_plan()
    if plan is None:
        return ""
    chart = topology_mermaid(plan)
    touched = set()
    for r in d.resources:
        chain = r.urn.split("::")[2].split("$") if r.urn.count("::") >= 3 else []
        tiers = [t for t in chain if t in TIERS]
        if tiers and r.region:
            touched.add(_node(r.region, tiers[-1]))
    present = {line.strip().split("[", 1)[0] for line in chart.splitlines() if "[" in line and "subgraph" not in line}
    touched &= present
    if touched:
        chart += "\n  classDef changed stroke:#d29922,stroke-width:3px"
        chart += f"\n  class {','.join(sorted(touched))} changed"
    caption = "Tiers with changes are outlined." if touched else "No tier component changed (see the resources below)."
    return f"```mermaid\n{chart}\n```\n\n{caption}\n\n"


def _resource_rows(d: StackDiff) -> list[str]:
    return [
        f"| {ACTION[r.action]} | `{cell(r.name)}` | `{cell(r.type)}` | {r.row_region} | {cell(r.note)} |\n"
        for r in d.resources
    ]


def _field_lines(d: StackDiff) -> list[str]:
    lines: list[str] = []
    for r in d.resources:
        if r.action != "change":
            continue
        lines.append(f"~ {r.name} ({r.type}, {r.row_region})\n")
        lines += [f"    {f.render()}\n" for f in r.fields]
    return lines


def _policy_rows(d: StackDiff) -> list[str]:
    rows = []
    for label, findings in (("new", d.policy.introduced), ("resolved", d.policy.resolved)):
        for f in findings:
            where = (f.get("urn") or "").rsplit("::", 1)[-1] or "stack"
            rows.append(f"| {label} | {f.get('enforcement')} | `{f.get('policy')}` | `{cell(where)}` | {cell(f.get('message'))} |\n")
    return rows


def stack_blocks(d: StackDiff) -> list[Block]:
    c = d.counts()
    heading = [f"### `{d.stack}`: {_counts_text(c)}; policy {d.policy.status}\n\n"]
    heading += [f"> {note}\n" for note in d.notes]
    if d.error:
        heading.append(f"> **The head revision did not render `{d.stack}`**: {d.error}\n")
    if d.notes or d.error:
        heading.append("\n")
    blocks = [Block("".join(heading), [])]
    topology = _topology(d)
    if topology:
        blocks.append(Block(topology, []))
    if d.resources:
        blocks.append(
            _details(
                f"Resources ({_counts_text(c)})",
                _resource_rows(d),
                table_head="| | resource | type | region | note |\n|---|---|---|---|---|\n",
                unit="resource",
                priority=1,
            )
        )
    fields = _field_lines(d)
    if fields:
        blocks.append(_details(f"Field changes ({c['change']} resource(s))", fields, code="text", priority=2))
    rows = _policy_rows(d)
    if rows:
        blocks.append(
            _details(
                f"Policy findings: {len(d.policy.introduced)} new, {len(d.policy.resolved)} resolved",
                rows,
                table_head="| | level | policy | resource | message |\n|---|---|---|---|---|\n",
                unit="finding",
                priority=2,
            )
        )
    if d.manifests:
        status = {s: sum(1 for m in d.manifests if m.status == s) for s in ("added", "removed", "changed")}
        # In-place changes first: they are what a reviewer reads, and they survive a cut.
        order = {"changed": 0, "removed": 1, "added": 2}
        ordered = sorted(d.manifests, key=lambda m: (order[m.status], m.path))
        lines = [line for m in ordered for line in m.diff.splitlines(keepends=True)]
        blocks.append(
            _details(
                f"Manifest diffs: {len(d.manifests)} file(s) ({status['added']} added, {status['removed']} removed, {status['changed']} changed)",
                lines,
                code="diff",
                priority=3,
            )
        )
    return blocks


def truncation_note(omitted: int) -> str:
    return (
        f"> [!WARNING]\n> **Truncated**: this report is cut to stay under GitHub's {COMMENT_LIMIT:,}-character "
        f"comment limit ({omitted} section(s) shortened or left out); {FULL_DIFF_HINT}.\n\n"
    )


def render(diffs: list[StackDiff], *, base_label: str, head_label: str, limit: int = COMMENT_LIMIT) -> str:
    changed = [d for d in diffs if d.changed]
    unchanged = [d.stack for d in diffs if not d.changed]
    top = [
        MARKER,
        "## Offline preview: what this change does to each stack",
        "",
        f"Base {base_label} → head {head_label}. Rendered offline through the Pulumi mock engine; "
        "secrets are redacted on both sides.",
        "",
        *summary_table(diffs),
        "",
    ]
    if unchanged:
        top += [f"No changes in {', '.join(f'`{s}`' for s in unchanged)}.", ""]
    head = "\n".join(top) + "\n"
    footer = "<sub>The full diff is in `build/diff/` (workflow artifact `preview-diff`); `make diff BASE=<ref>` reproduces it.</sub>\n"

    per_stack = [stack_blocks(d) for d in changed]
    room = limit - size(head) - size(footer) - size(truncation_note(10**6))
    texts: dict[tuple[int, int], str] = {}
    cut = 0
    for priority in sorted({b.priority for blocks in per_stack for b in blocks}):
        group = [(i, j, b) for i, blocks in enumerate(per_stack) for j, b in enumerate(blocks) if b.priority == priority]
        # Smallest first, each taking at most an even share of what is left: small sections
        # stay whole, and one huge diff cannot starve the other stacks.
        group.sort(key=lambda x: size(x[2].full()))
        for n, (i, j, block) in enumerate(group):
            share = room if priority == 0 else room // (len(group) - n)
            text, was_cut = block.fit(max(share, 0))
            cut += was_cut
            if text is not None:
                texts[(i, j)] = text
                room -= size(text)
    body = "".join(texts[key] for key in sorted(texts))
    report = head + (truncation_note(cut) if cut else "") + body + footer
    if size(report) > limit:
        # Only when the summary alone is over the limit: cut at a line.
        report = report.encode("utf-8")[:limit].decode("utf-8", "ignore")
        report = report[: report.rfind("\n") + 1]
    return report


def stack_status_line(d: StackDiff) -> str:
    """One line per stack for the terminal."""
    if d.error:
        return f"{d.stack}: did not render: {d.error}"
    c = d.counts()
    return (
        f"{d.stack}: {_counts_text(c)}, {len(d.manifests)} manifest(s) differ; "
        f"policy {policy_status(d.policy.before) if d.policy.base_rendered else 'no base'} → {policy_status(d.policy.after)}"
    )
