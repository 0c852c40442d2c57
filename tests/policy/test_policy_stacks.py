"""The real stacks pass every mandatory policy, and plan.md reports the policy results."""

from __future__ import annotations

import pytest

import policy_fixtures as F
from conftest import STACKS
from preview import report

import tikit_policies


@pytest.mark.parametrize("stack", STACKS)
def test_real_stack_passes_every_mandatory_policy(rendered, stack):
    result = rendered(stack).policy
    assert result is not None and result.pack == "tikit" and result.policies == len(tikit_policies.ALL)
    assert [f"{f.policy}: {f.message}" for f in result.mandatory] == []


@pytest.mark.parametrize("stack", STACKS)
def test_plan_md_lists_the_policy_results(rendered, stack):
    r = rendered(stack)
    md = r.files["plan.md"]
    assert "## Policies" in md
    assert f"Policy pack `tikit`: {len(tikit_policies.ALL)} policies, {len(r.policy.mandatory)} mandatory violation(s)" in md
    assert '"pack": "tikit"' in r.files["policy.json"]


def test_plan_md_tables_each_finding(rendered):
    plan = F.edit(
        rendered("dev").plan,
        "Deployment",
        "api",
        "lagos",
        lambda o: o["spec"]["template"]["spec"]["containers"][0].__setitem__("image", "ghcr.io/tikit/backend:latest"),
    )
    md = report.stack_report(plan, F.run(plan))
    assert "1 mandatory violation(s), 0 advisory finding(s): **FAILED**" in md
    assert "| mandatory | `image-pinned` | `api-lagos` | Deployment/api in lagos: containers 'api' image" in md


def test_a_crashing_policy_fails_the_run_visibly(rendered, monkeypatch):
    from tikit_policies import capacity

    def boom(*_args):
        raise KeyError("spec")

    monkeypatch.setattr(capacity.request_capacity, "validate", boom)
    found = F.of(F.run(rendered("dev").plan), "request-capacity")
    assert [(f.enforcement, f.message) for f in found] == [("mandatory", "policy failed to run: KeyError: 'spec'")]
