"""The offline preview's commands, shared by ``python -m preview`` and the tests."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import admission, engine, output, plan as plan_mod, report
from .engine import REPO_ROOT, DuplicateUrnError, StackConfigError

# Exit codes of `python -m preview` (README and __main__ say the same).
OK, POLICY_VIOLATION, CONFIG_ERROR, PROGRAM_ERROR = 0, 1, 2, 3


@dataclass(frozen=True)
class Rendered:
    plan: plan_mod.Plan
    policy: Optional[report.PolicyResult]
    files: dict[str, str]
    # The values the mock engine made up for secret outputs: they must appear nowhere.
    stand_ins: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.policy and self.policy.mandatory)


def render(
    stack: str,
    repo: Path = REPO_ROOT,
    *,
    policy_config: Optional[Path] = None,
    program: Optional[Callable[[], None]] = None,
) -> Rendered:
    """Run the program for a stack, evaluate the policy pack, and render every file.

    Raises StackConfigError (the program's own settings errors included, as
    engine.ProgramConfigError) for invalid settings, and admission.ObjectRejected (a
    StackConfigError too) for a rendered object the API server or etcd would refuse,
    before anything is written.
    """
    run = engine.run_program(stack, repo, program=program)
    the_plan = plan_mod.build(run)
    policy = evaluate_policies(the_plan, policy_config)
    from . import capacity

    files = output.render_files(
        the_plan, report.stack_report(the_plan, policy, capacity.plan_section(the_plan)), policy_json(policy)
    )
    # What `pulumi up` would have refused: schemas, names and labels, size limits.
    admission.check([(r.region or "", r.manifest) for r in the_plan.kubernetes_objects()])
    return Rendered(plan=the_plan, policy=policy, files=files, stand_ins=tuple(run.stand_ins))


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
    # The program's settings.ConfigError arrives as engine.ProgramConfigError, whichever
    # copy of the program ran, so nothing here imports the program.
    return (StackConfigError,)


def _one_line(text: str) -> str:
    """One line of printable text: line breaks and other control characters escaped."""
    return engine.escape(text)


def _program_error(exc: Exception) -> str:
    """`error: <message>` for a program that cannot be previewed (not a settings problem)."""
    if isinstance(exc, (DuplicateUrnError, output.RenderError)):
        message = str(exc)
    else:  # a bug in the program or the preview: the exception's type says which kind
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return "error: " + _one_line(message)


def preview(
    stack: str,
    *,
    out_root: Path,
    policy_config: Optional[Path] = None,
    repo: Path = REPO_ROOT,
    program: Optional[Callable[[], None]] = None,
) -> int:
    """Render a stack into out_root/<stack>/ and print a summary.

    0 done; 1 a mandatory policy is violated; 2 invalid settings or stack files, a --stack
    that is not a stack name, a rendered object the API server would refuse, or an output
    directory the preview did not write (one line on stderr, nothing written); 3 the program cannot
    be previewed (duplicate URNs, two objects in one file, an object outside any region,
    an exception in the program): one line `error: <message>` on stderr, nothing written.
    """
    if problem := engine.check_stack_name(stack):
        print(f"config error: --stack: {problem}", file=sys.stderr)  # before it names a directory
        return CONFIG_ERROR
    out_dir = out_root / stack
    try:
        output.check_replaceable(out_dir)
        rendered = render(stack, repo, policy_config=policy_config, program=program)
        output.write(out_dir, rendered.files)
    except config_errors() as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    except output.OutputDirError as exc:
        print(_one_line(f"config error: --out: {exc}"), file=sys.stderr)
        return CONFIG_ERROR
    except Exception as exc:  # noqa: BLE001 - one line instead of a traceback, and exit 3
        print(_program_error(exc), file=sys.stderr)
        return PROGRAM_ERROR
    the_plan = rendered.plan
    targets = the_plan.targets()
    where = ", ".join(f"{region} ({targets.get(region, 'no provider')})" for region in the_plan.regions)
    print(
        f"{stack}: {len(the_plan.resources)} resources, {len(the_plan.kubernetes_objects())} Kubernetes objects "
        f"in {where} -> {out_dir}"
    )
    if rendered.policy is not None:
        for f in rendered.policy.findings:
            where = f.urn.rsplit("::", 1)[-1] if f.urn else "stack"
            print(f"  [{f.enforcement}] {f.policy} ({where}): {f.message}")
    if rendered.failed:
        print(f"{stack}: {len(rendered.policy.mandatory)} mandatory policy violation(s)", file=sys.stderr)
        return POLICY_VIOLATION
    return OK
