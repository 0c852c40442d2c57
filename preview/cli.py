"""The offline preview's commands, shared by ``python -m preview`` and the tests."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import engine, output, plan as plan_mod, report
from .engine import REPO_ROOT, StackConfigError

PROGRAM_DIR = REPO_ROOT / "infra"
if str(PROGRAM_DIR) not in sys.path:
    # The same `settings` module object the program imports, so its ConfigError is ours.
    sys.path.append(str(PROGRAM_DIR))

import settings as program_settings  # noqa: E402


@dataclass(frozen=True)
class Rendered:
    plan: plan_mod.Plan
    policy: Optional[report.PolicyResult]
    files: dict[str, str]

    @property
    def failed(self) -> bool:
        return bool(self.policy and self.policy.mandatory)


def render(stack: str, repo: Path = REPO_ROOT, *, policy_config: Optional[Path] = None) -> Rendered:
    """Run the program for a stack, evaluate the policy pack, and render every file.

    Raises ConfigError / StackConfigError for invalid settings (before anything is written).
    """
    run = engine.run_program(stack, repo)
    the_plan = plan_mod.build(run)
    policy = evaluate_policies(the_plan, policy_config)
    files = output.render_files(the_plan, report.stack_report(the_plan, policy), policy_json(policy))
    return Rendered(plan=the_plan, policy=policy, files=files)


def evaluate_policies(the_plan: plan_mod.Plan, policy_config: Optional[Path]) -> Optional[report.PolicyResult]:
    try:
        from . import policies
    except ImportError:  # pragma: no cover - the policy runner ships with the preview
        return None
    return policies.evaluate(the_plan, policy_config)


def policy_json(result: Optional[report.PolicyResult]) -> Optional[dict]:
    if result is None:
        return None
    return {
        "pack": result.pack,
        "policies": result.policies,
        "findings": [
            {"policy": f.policy, "enforcement": f.enforcement, "urn": f.urn, "message": f.message} for f in result.findings
        ],
    }


def config_errors() -> tuple[type[BaseException], ...]:
    return (program_settings.ConfigError, StackConfigError)


def preview(stack: str, *, out_root: Path, policy_config: Optional[Path] = None, repo: Path = REPO_ROOT) -> int:
    try:
        rendered = render(stack, repo, policy_config=policy_config)
    except config_errors() as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    out_dir = out_root / stack
    output.write(out_dir, rendered.files)
    the_plan = rendered.plan
    print(
        f"{stack}: {len(the_plan.resources)} resources, {len(the_plan.kubernetes_objects())} Kubernetes objects "
        f"in {', '.join(the_plan.regions)} -> {out_dir}"
    )
    if rendered.policy is not None:
        for f in rendered.policy.findings:
            where = f.urn.rsplit("::", 1)[-1] if f.urn else "stack"
            print(f"  [{f.enforcement}] {f.policy} ({where}): {f.message}")
    if rendered.failed:
        print(f"{stack}: {len(rendered.policy.mandatory)} mandatory policy violation(s)", file=sys.stderr)
        return 1
    return 0
