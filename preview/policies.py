"""Run the policy pack over an offline plan, the way the Pulumi engine runs it.

The policies are the very objects ``policy/__main__.py`` hands to ``PolicyPack`` (imported
from policy/tikit_policies).  What the engine does and this module does too:

- every resource goes to each ResourceValidationPolicy as ResourceValidationArgs (its
  inputs behind the analyzer's unknown-checking proxy; the plan's inputs are already
  redacted and integer-clean), then the whole stack to each StackValidationPolicy as
  StackValidationArgs (resources with props and parent links);
- each policy gets its config: the schema's defaults, overlaid with the policy config
  file (the same JSON `pulumi preview --policy-pack-config <file>` takes);
- enforcement levels: the policy's own, else the pack default; the file may override them
  per policy or for "all"; "disabled" skips a policy, "remediate" counts as mandatory.

Stricter than the engine: unknown policy names and unknown or ill-typed properties in the
config file are errors (exit code 2 in the preview), not silently ignored.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import tikit_policies
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from .engine import StackConfigError
from .plan import Plan
from .report import Finding, PolicyResult

LEVELS = {level.value: level for level in EnforcementLevel}


class PolicyConfigError(StackConfigError):
    """The policy config file is unusable: a config error (exit code 2), like bad settings.
    Keys read `policy-config.<policy>.<setting>`; names from the file are echoed on one line
    (StackConfigError escapes line breaks)."""


@dataclass(frozen=True)
class Resolved:
    """One policy's effective enforcement level and config."""

    level: EnforcementLevel
    config: dict[str, Any]


# --------------------------------------------------------------------------------------
# The policy config file
# --------------------------------------------------------------------------------------

def _settings_schema(p: Policy) -> dict[str, Any]:
    """A policy's entry in the config file as JSON Schema: its config schema's properties
    plus enforcementLevel, nothing else."""
    schema = p.config_schema
    return {
        "type": "object",
        "properties": {"enforcementLevel": {"enum": list(LEVELS)}, **(dict(schema.properties) if schema else {})},
        "additionalProperties": False,
    }


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'aeio' else 'a'} {word}"


def _message(error: Any) -> str:
    """jsonschema's complaint in the words of a settings error."""
    value, kind, arg = error.instance, error.validator, error.validator_value
    item = f"item {error.path[-1]} " if error.path and isinstance(error.path[-1], int) else ""
    if kind == "type":
        return f"{item}must be {_article(str(arg))}, got {json.dumps(value)}"
    if kind == "enum":
        return f"{item}must be one of {', '.join(map(str, arg))}; got {json.dumps(value)}"
    if kind == "minimum":
        return f"{item}must be >= {arg}, got {value}"
    if kind == "maximum":
        return f"{item}must be <= {arg}, got {value}"
    return f"{item}{error.message}"


def _check(where: str, value: Any, schema: Mapping[str, Any]) -> None:
    import jsonschema  # only when a config file is given: the common run never pays for it

    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(value))
    if error is None:
        return
    key = ".".join([where, *(str(k) for k in error.path if not isinstance(k, int))])
    if error.validator == "additionalProperties":
        (extra,) = sorted(set(value) - set(schema["properties"]))[:1]
        allowed = ", ".join(["enforcementLevel", *sorted(k for k in schema["properties"] if k != "enforcementLevel")])
        raise PolicyConfigError(f"{where}.{extra}", f"unknown setting; allowed: {allowed}")
    raise PolicyConfigError(key, _message(error))


def _level(where: str, value: Any) -> EnforcementLevel:
    _check(where, value, {"enum": list(LEVELS)})
    return LEVELS[value]


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: a second entry for a policy would silently
    override the first one a reviewer read."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def load_config(path: Optional[Path]) -> dict[str, Any]:
    """The policy config file as JSON (an empty file or none is an empty config)."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
    except OSError:
        raise PolicyConfigError("policy-config", f"cannot read {path}")
    if not text.strip():
        return {}
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise PolicyConfigError(Path(path).name, f"is not valid JSON (line {exc.lineno})")
    except _DuplicateKey as exc:
        raise PolicyConfigError(Path(path).name, f"names {str(exc)!r} twice; JSON keeps only the last, so say it once")
    if not isinstance(doc, dict):
        raise PolicyConfigError(Path(path).name, "must be a JSON object mapping policy names to a level or settings")
    return doc


def resolve(policies: list[Policy], default: EnforcementLevel, config: Mapping[str, Any]) -> dict[str, Resolved]:
    """Each policy's level and config, from its schema defaults and the config file."""
    by_name = {p.name: p for p in policies}
    for name in config:
        if name != "all" and name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise PolicyConfigError(f"policy-config.{name}", f"unknown policy; {hint}known: {', '.join(sorted(by_name))}")
    all_level: Optional[EnforcementLevel] = None
    if "all" in config:
        entry = config["all"]
        value = entry.get("enforcementLevel") if isinstance(entry, dict) else entry
        if isinstance(entry, dict) and set(entry) - {"enforcementLevel"}:
            raise PolicyConfigError("policy-config.all", "takes only an enforcementLevel")
        all_level = _level("policy-config.all", value)
    out: dict[str, Resolved] = {}
    for p in policies:
        props = dict(p.config_schema.properties) if p.config_schema else {}
        settings = {k: v["default"] for k, v in props.items() if "default" in v}
        level = p.enforcement_level or default
        if all_level is not None:
            level = all_level
        entry = config.get(p.name)
        where = f"policy-config.{p.name}"
        if isinstance(entry, str):
            level = _level(where, entry)
        elif isinstance(entry, dict):
            _check(where, entry, _settings_schema(p))
            settings.update(entry)
            level = LEVELS[settings.pop("enforcementLevel")] if "enforcementLevel" in entry else level
        elif entry is not None:
            raise PolicyConfigError(where, f"must be an enforcement level or an object, got {json.dumps(entry)}")
        for key in (p.config_schema.required or []) if p.config_schema else []:
            if key not in settings:
                raise PolicyConfigError(f"{where}.{key}", "is required")
        out[p.name] = Resolved(level=level, config=settings)
    return out


# --------------------------------------------------------------------------------------
# Running the policies
# --------------------------------------------------------------------------------------


def _options(parent: Optional[str]) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=parent,
    )


def _props(inputs: Mapping[str, Any]) -> Any:
    """A resource's inputs as the analyzer delivers them: behind the unknown-checking proxy
    (which builds its own containers, so the plan is never shared with a policy)."""
    return unknown_checking_proxy(dict(inputs))


def _stack_resources(plan: Plan) -> list[PolicyResource]:
    resources = {
        r.urn: PolicyResource(r.type, _props(r.inputs), r.urn, r.name, _options(r.parent), None, None, [], {})
        for r in plan.resources
    }
    for r in plan.resources:
        res = resources[r.urn]
        if r.parent in resources:
            res.parent = resources[r.parent]
        res.dependencies = [resources[d] for d in r.dependencies if d in resources]
    return list(resources.values())


async def _await(awaitable: Any) -> Any:
    return await awaitable


def evaluate_config(plan: Plan, config: Mapping[str, Any]) -> PolicyResult:
    """Run every enabled policy of the pack over ``plan`` with an already-parsed config."""
    policies = list(tikit_policies.ALL)
    resolved = resolve(policies, tikit_policies.ENFORCEMENT, config)
    findings: list[Finding] = []
    enabled = [p for p in policies if resolved[p.name].level != EnforcementLevel.DISABLED]

    def reporter(policy: Policy, default_urn: Optional[str]):
        level = resolved[policy.name].level
        # Remediation cannot fix a validation-only policy: the engine reports it as mandatory.
        name = "mandatory" if level in (EnforcementLevel.MANDATORY, EnforcementLevel.REMEDIATE) else "advisory"

        def report_violation(message: str, urn: Optional[str] = None) -> None:
            findings.append(Finding(policy=policy.name, enforcement=name, message=message, urn=default_urn or urn))

        return report_violation

    def run(policy: Policy, call) -> None:
        try:
            result = call()
            if inspect.isawaitable(result):  # async validations, run to completion as the analyzer does
                asyncio.run(_await(result))
        except UnknownValueError as exc:  # the engine turns these into advisory notes
            findings.append(Finding(policy.name, "advisory", f"can't run during preview: {exc.message}"))
        except Exception as exc:  # noqa: BLE001 - a crashing policy must fail the run visibly
            findings.append(Finding(policy.name, "mandatory", f"policy failed to run: {type(exc).__name__}: {exc}"))

    resource_policies = [p for p in enabled if isinstance(p, ResourceValidationPolicy)]
    for r in plan.resources:
        props, opts = _props(r.inputs), _options(r.parent)
        for policy in resource_policies:
            args = ResourceValidationArgs(r.type, props, r.urn, r.name, opts, None, resolved[policy.name].config)
            run(policy, lambda: policy.validate(args, reporter(policy, r.urn)))
    stack_resources = _stack_resources(plan)
    for policy in enabled:
        if not isinstance(policy, StackValidationPolicy):
            continue
        args = StackValidationArgs(stack_resources, resolved[policy.name].config)
        run(policy, lambda: policy.validate(args, reporter(policy, None)))
    order = {p.name: i for i, p in enumerate(policies)}
    findings.sort(key=lambda f: (f.enforcement != "mandatory", order[f.policy], f.urn or "", f.message))
    return PolicyResult(pack=tikit_policies.PACK_NAME, policies=len(enabled), findings=tuple(findings))


def evaluate(plan: Plan, policy_config: Optional[Path] = None) -> PolicyResult:
    """The policy result for a plan; raises PolicyConfigError for a bad config file."""
    return evaluate_config(plan, load_config(policy_config))
