"""plan.md's effective-settings tables read back what the program rendered: they follow the
presets, the stack file and any override, and name where each region deploys."""

from __future__ import annotations

import json

import pytest

from preview import effective, engine, plan as plan_mod, report
from tikit import names, settings, versions

STACKS = ("dev", "staging", "prod")


def rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the first table under ``heading`` as lists of cells."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("| ") and not line.startswith("|---"):
            table.append([c.strip() for c in line.strip("|").split(" | ")])
    return table[1:]  # without the header


def plan_md(plan) -> str:
    return report.stack_report(plan)


@pytest.mark.parametrize("stack", STACKS)
def test_api_and_database_rows_follow_the_stack_settings(rendered, stack):
    plan = rendered(stack).plan
    s = settings.load({}, stack=stack)
    md = plan_md(plan)
    workloads = rows(md, "### Workloads")
    for region in plan.regions:
        (api,) = [r for r in workloads if r[0] == region and r[1] == f"Deployment/{names.BACKEND}"]
        assert api[2].startswith(f"{s.backend.min_replicas}-{s.backend.max_replicas} (ScaledObject")
        assert api[4] == f"`{s.backend.image}`"
        assert api[5].startswith(f"{s.backend.cpu} / ") and api[6] == f"{s.backend.memory} / {s.backend.memory}"
    pg = rows(md, "### PostgreSQL")
    assert {r[0] for r in pg} == set(plan.regions)
    for r in pg:
        assert r[3:6] == [str(s.postgres.instances), s.postgres.storage_size, s.postgres.wal_storage_size]
        assert f"(keeps {s.postgres.retention})" in r[8]
    primary = [r for r in pg if r[2] == "primary"]
    assert len(primary) == 1
    redis = rows(md, "### Redis")
    assert [r[2] for r in redis] == [str(s.redis.replicas)] * len(plan.regions)
    assert all("AOF fsync everysec" in r[4] and "RDB save" in r[4] for r in redis)


def test_every_rendered_image_is_listed(rendered):
    plan = rendered("prod").plan
    md = plan_md(plan)
    listed = {r[0].strip("`") for r in rows(md, "### Images")}
    stack = effective.stack_model(plan)
    from tikit_policies.model import containers

    seen = {c["image"] for w in stack.workloads for _, c in containers(w.pod_spec)}
    seen |= {c.obj.spec["imageName"] for c in stack.clusters}
    assert seen and seen <= listed


def test_targets_name_each_region_context_and_its_add_ons(rendered):
    plan = rendered("prod").plan
    targets = rows(plan_md(plan), "## Where each region deploys")
    installed = {o.key for o in versions.OPERATORS if o.installed}
    assert [r[:3] for r in targets] == [["lagos", "primary", "context tikit-prod-lagos"], ["london", "backup", "context tikit-prod-london"]]
    for r in targets:
        shown = {part.rsplit(" ", 1)[0] for part in r[3].split(", ")}
        assert shown and shown <= installed
        assert "cloudnative-pg 1.30.0" in r[3] and "keda 2.20.2" in r[3]


def cli_config(stack: str, **changes) -> dict[str, str]:
    project, config, _ = engine.load_stack_config(stack)
    return {**config, **{f"{project}:{k}": json.dumps(v) for k, v in changes.items()}}


def test_an_override_and_an_external_region_show_in_the_tables():
    regions = [
        {"name": "lagos", "role": "primary", "context": "tikit-prod-lagos", "objectStorage": {"endpoint": "https://s3.af-south-1.amazonaws.com"}},
        {"name": "london", "role": "backup", "context": "platform-london", "addons": "external", "objectStorage": {"endpoint": "https://s3.eu-west-2.amazonaws.com"}},
    ]
    config = cli_config("prod", regions=regions, backend={"maxReplicas": 14, "memory": "3Gi"})
    plan = plan_mod.build(engine.run_program("prod", config_override=config))
    md = plan_md(plan)
    api = [r for r in rows(md, "### Workloads") if r[1] == f"Deployment/{names.BACKEND}"]
    assert [(r[2].split(" ")[0], r[6]) for r in api] == [("2-14", "3Gi / 3Gi")] * 2
    targets = {r[0]: r for r in rows(md, "## Where each region deploys")}
    assert targets["london"][2] == "context platform-london"
    assert targets["london"][3] == effective.ADDONS_NOT_INSTALLED["external"]
    assert "cert-manager 1.21.1" in targets["lagos"][3]
