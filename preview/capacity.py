"""The capacity model of a rendered stack: ``python -m preview capacity --stack prod``
(``make capacity STACK=prod``).

It renders the stack as the preview does (and writes the preview's files), builds each
region's capacity model from the rendered objects (policy/tikit_policies/placement.py),
replays the load profile and the peak floor's step with and without the warm headroom
(policy/tikit_policies/simulation.py, worst case over the HPA sync and scrape phases), and
writes ``build/<stack>/capacity/``:

| file | what it is |
|---|---|
| ``timeseries.csv`` | per region, scenario and headroom: demand, serving capacity, replicas, ready pods and nodes launched, second by second (the worst-case run) |
| ``plot.png`` | demand against serving capacity, replicas and nodes, one panel per region and scenario |
| ``summary.md`` | the figures printed on the console |

plan.md carries a short summary (``plan_section``): the same model with the headroom, for
every region, cheap enough for every preview.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import cli, output
from .plan import Plan

CAPACITY_DIR = "capacity"


def stack_of(plan: Plan) -> Any:
    from tikit_policies.model import Stack, to_obj

    return Stack([to_obj(r.type, r.inputs, r.urn, r.region) for r in plan.kubernetes_objects()])


@dataclass
class Scenario:
    region: str
    name: str
    headroom: bool
    run: Any
    steps: tuple


def replay(plan: Plan, *, without_headroom: bool = True) -> tuple[Any, list[Scenario]]:
    """Every region's scenarios, with the headroom (and without, unless told not to)."""
    from tikit_policies import nodes, placement

    stack = stack_of(plan)
    out: list[Scenario] = []
    for region in stack.regions:
        m = placement.capacity_model(stack, region)
        if m is None:
            continue
        for profile in nodes.scenarios(m, ["profile", "peak"]):
            for headroom in (True, False) if without_headroom else (True,):
                run, steps = nodes.worst_case(m, profile, headroom)
                out.append(Scenario(region, profile.name, headroom, run, steps))
    return stack, out


def _ttc(step: Any) -> str:
    return "not reached" if step.time_to_capacity is None else f"{step.time_to_capacity} s"


def pool_rows(stack: Any) -> list[tuple[str, str, str, str, str, int]]:
    """(region, pool, limits, need at maximum, tenants) per NodePool."""
    from tikit_policies import placement

    rows = []
    for region in stack.regions:
        shapes = placement.pod_shapes(stack, region)
        for pool in placement.node_pools(stack, region):
            members = placement.tenants(shapes, pool)
            n = placement.need(pool, members)
            cpu, mem = pool.limits
            limit = f"{(cpu or 0) / 1000:g} CPU, {(mem or 0) / 2**30:g}Gi"
            pods = f"{n.pods_cpu / 1000:.2f} CPU, {n.pods_memory / 2**30:.1f}Gi"
            with_nodes = f"{n.cpu_millis / 1000:.2f} CPU, {n.memory_bytes / 2**30:.1f}Gi ({n.nodes} smallest nodes)"
            rows.append((region, pool.name, limit, pods, with_nodes, len(members)))
    return rows


def user_model_lines(stack: Any) -> list[str]:
    """The 10,000-user arithmetic, and what the k6 user as the concurrent user would take."""
    from tikit_policies import annotations as ann
    from tikit_policies import placement
    from tikit_policies.parse import as_float

    region = stack.primary_region
    if region is None:
        return []
    users = as_float(stack.namespace_annotation(region, ann.TARGET_CONCURRENT_USERS))
    per_user = as_float(stack.namespace_annotation(region, ann.REQUESTS_PER_USER_PER_MINUTE))
    k6_user = as_float(stack.namespace_annotation(region, ann.PROFILE_REQUESTS_PER_USER_PER_MINUTE))
    w = placement.serving_workload(stack, region)
    if not (users and per_user and w and w.max_replicas):
        return []
    per_instance = as_float(w.obj.annotations.get(ann.SUSTAINABLE_REQUESTS_PER_MINUTE)) or 0.0
    threshold = w.autoscaler.requests_per_minute_per_instance() if w.autoscaler else None
    demand = users * per_user
    capacity = w.max_replicas * per_instance
    lines = [
        f"- **User model** ({region}): {users:,.0f} concurrent users x {per_user:g} requests/min = {demand:,.0f} requests/min; "
        f"with 20 % headroom {demand * 1.2:,.0f}; capacity {w.max_replicas} x {per_instance:,.0f} "
        f"(`{ann.SUSTAINABLE_REQUESTS_PER_MINUTE}`) = {capacity:,.0f} requests/min "
        f"({'holds' if capacity >= demand * 1.2 else 'does NOT hold'}).",
    ]
    if threshold:
        lines.append(
            f"- The scale-up threshold ({threshold:,.0f} requests/min per instance) is {threshold / per_instance:.0%} of an "
            f"instance's capacity: the HPA reaches its maximum of {w.max_replicas} at {w.max_replicas * threshold:,.0f} "
            "requests/min and beyond that only capacity absorbs load."
        )
    if k6_user and k6_user > per_user:
        k6_demand = users * k6_user * 1.2
        instances = math.ceil(k6_demand / per_instance) if per_instance else 0
        c = w.obj.spec.get("template", {}).get("spec", {}).get("containers", [{}])[0].get("resources", {}).get("requests", {})
        from tikit_policies.parse import quantity

        cpu, mem = (quantity(c.get("cpu")) or 0) * instances, (quantity(c.get("memory")) or 0) * instances
        conns = as_float(w.obj.annotations.get(ann.DB_CONNECTIONS_PER_REPLICA)) or 0
        pools = [p for p in stack.pools() if p.workload.region == region]
        # Each pool's pods x max_client_conn, less the exporter's login on each.
        slots = min(((p.workload.min_replicas or 0) * ((p.setting("max_client_conn", 100) or 0) - 1) for p in pools), default=0)
        lines.append(
            f"- **Finding: the notes' k6 user is not this user model.** A k6 virtual user sends {k6_user:g} requests/min "
            f"(one request, then `sleep(1)`). If each of the {users:,.0f} concurrent users did, the region would need "
            f"{users * k6_user:,.0f} requests/min, {k6_demand:,.0f} with 20 % headroom: {instances} instances "
            f"({cpu:,.0f} CPU, {mem / 2**30:,.0f}Gi for the API alone, against maxReplicas {w.max_replicas}), and "
            f"{instances * conns:,.0f} client connections into each PgBouncer pool, which admits {slots:,.0f}. "
            f"The {per_user:g} requests/min per user is the notes' own ratio (their k6 test proves the 10,000-user target with "
            f"1,000 virtual users at {k6_user:g} requests/min): measure it in production and re-size."
        )
    return lines


def plan_section(plan: Plan) -> list[str]:
    """plan.md's capacity summary: each region's steps with the warm headroom, the pools."""
    try:
        stack, scenarios = replay(plan, without_headroom=False)
    except Exception as exc:  # noqa: BLE001 - the summary must not take the preview down
        return [f"The capacity model could not run: {type(exc).__name__}: {exc}"]
    if not scenarios:
        return ["No region declares a serving workload with its capacity: nothing to model."]
    from .report import _table

    lines = [
        "Worst case over the HPA sync and scrape phases, with the warm headroom (`make capacity` adds the runs "
        "without it, the time series and the plot; docs/autoscaling.md defines the figures).",
        "",
        *_table(
            ["region", "scenario", "step", "time to capacity", "requests above capacity", "binds"],
            (
                (s.region, s.name, st.label, _ttc(st), f"{st.requests_above:,.0f}", st.binds or "-")
                for s in scenarios
                for st in s.steps
            ),
        ),
        "",
        *_table(
            ["region", "NodePool", "limits", "requests at maximum", "with per-node overhead", "tenants"],
            pool_rows(stack),
        ),
        "",
        *user_model_lines(stack),
    ]
    return lines


# --- make capacity ------------------------------------------------------------------------


def timeseries_csv(scenarios: list[Scenario]) -> str:
    rows = ["region,scenario,headroom,second,demand_rpm,capacity_rpm,replicas,ready,nodes_launched"]
    for s in scenarios:
        r = s.run
        for i, t in enumerate(r.time):
            rows.append(
                f"{s.region},{s.name},{'yes' if s.headroom else 'no'},{t},{r.demand[i]:.0f},{r.capacity[i]:.0f},"
                f"{r.replicas[i]},{r.ready[i]},{r.nodes[i]}"
            )
    return "\n".join(rows) + "\n"


def plot_png(scenarios: list[Scenario], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(s.region, s.name) for s in scenarios})
    fig, axes = plt.subplots(len(panels), 2, figsize=(14, 3.6 * len(panels)), squeeze=False)
    for row, (region, name) in enumerate(panels):
        for col, headroom in enumerate((True, False)):
            ax = axes[row][col]
            match = [s for s in scenarios if (s.region, s.name, s.headroom) == (region, name, headroom)]
            if not match:
                ax.axis("off")
                continue
            s = match[0]
            r = s.run
            minutes = [t / 60 for t in r.time]
            ax.plot(minutes, [d / 1000 for d in r.demand], label="demand (k req/min)", color="tab:red")
            ax.plot(minutes, [c / 1000 for c in r.capacity], label="serving capacity (k req/min)", color="tab:blue")
            ax.set_ylabel("k requests / min")
            ax.set_xlabel("minutes")
            for st in s.steps:
                ax.axvline(st.start / 60, color="grey", linestyle=":", linewidth=0.8)
            ax2 = ax.twinx()
            ax2.step(minutes, r.replicas, where="post", label="replicas", color="tab:green", linewidth=1)
            ax2.step(minutes, r.ready, where="post", label="ready pods", color="tab:olive", linewidth=1, linestyle="--")
            ax2.step(minutes, r.nodes, where="post", label="nodes launched", color="tab:purple", linewidth=1, linestyle="-.")
            ax2.set_ylabel("pods / nodes")
            ttc = ", ".join(f"{st.label}: {_ttc(st)}" for st in s.steps)
            ax.set_title(f"{region} {name}, {'with' if headroom else 'without'} headroom\n{ttc}", fontsize=9)
            if row == 0 and col == 0:
                h1, l1 = ax.get_legend_handles_labels()
                h2, l2 = ax2.get_legend_handles_labels()
                ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def summary_text(stack_name: str, stack: Any, scenarios: list[Scenario]) -> str:
    lines = [f"# Capacity model: `{stack_name}`", ""]
    for s in scenarios:
        head = "with headroom" if s.headroom else "without headroom"
        for st in s.steps:
            bind = f", bound by {st.binds}" if st.binds else ""
            lines.append(
                f"- {s.region} {s.name} ({head}): {st.label}: time to capacity {_ttc(st)} "
                f"({st.goal_replicas} ready replicas), {st.requests_above:,.0f} requests above capacity{bind}"
            )
    lines += ["", "Pool limits against what can land there at maximum:", ""]
    for region, pool, limit, pods, with_nodes, n in pool_rows(stack):
        lines.append(f"- {region} {pool}: limits {limit}; {n} tenants request {pods}; with per-node overhead {with_nodes}")
    lines += ["", *user_model_lines(stack)]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preview capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--out", type=Path, default=cli.REPO_ROOT / "build")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out_dir = args.out / args.stack
    try:
        output.check_replaceable(out_dir)
        rendered = cli.render(args.stack)
    except cli.config_errors() as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return cli.CONFIG_ERROR
    except output.OutputDirError as exc:
        print(f"config error: --out: {exc}", file=sys.stderr)
        return cli.CONFIG_ERROR
    stack, scenarios = replay(rendered.plan)
    summary = summary_text(args.stack, stack, scenarios)
    files: dict[str, Any] = dict(rendered.files)
    files[f"{CAPACITY_DIR}/timeseries.csv"] = timeseries_csv(scenarios)
    files[f"{CAPACITY_DIR}/summary.md"] = summary
    files[f"{CAPACITY_DIR}/plot.png"] = plot_png(scenarios, f"tikit {args.stack}: demand, serving capacity, replicas, nodes")
    output.write(out_dir, files)
    print(summary, end="")
    print(f"wrote {out_dir / CAPACITY_DIR}/{{timeseries.csv,plot.png,summary.md}} in {time.perf_counter() - started:.1f} s")
    return cli.POLICY_VIOLATION if rendered.failed else cli.OK


if __name__ == "__main__":
    sys.exit(main())
