"""How a policy is declared: a name, a description, an enforcement level, a remediation
hint, an optional config schema with defaults, and a check over one Kubernetes object or
over the whole stack.  The checks receive plain values (``model.Obj`` / ``model.Stack``)
and the policy's config with the schema defaults filled in, exactly as the Pulumi engine
fills them before it calls the pack."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from .model import Obj, Stack, to_obj

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

Report = Callable[..., None]


def schema(**properties: Mapping[str, Any]) -> Optional[PolicyConfigSchema]:
    """A config schema from JSON-schema property definitions (each with a default)."""
    return PolicyConfigSchema(properties={k: dict(v) for k, v in properties.items()}) if properties else None


def integer(default: int, description: str, *, minimum: int = 0, maximum: Optional[int] = None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "integer", "default": default, "minimum": minimum, "description": description}
    if maximum is not None:
        prop["maximum"] = maximum
    return prop


def number(default: float, description: str, *, minimum: float = 0, maximum: Optional[float] = None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "number", "default": default, "minimum": minimum, "description": description}
    if maximum is not None:
        prop["maximum"] = maximum
    return prop


def strings(default: list[str], description: str, *, enum: Optional[list[str]] = None) -> dict[str, Any]:
    items: dict[str, Any] = {"type": "string"}
    if enum:
        items["enum"] = list(enum)
    return {"type": "array", "items": items, "default": list(default), "description": description}


def boolean(default: bool, description: str) -> dict[str, Any]:
    return {"type": "boolean", "default": default, "description": description}


def choice(default: str, options: list[str], description: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(options), "default": default, "description": description}


def config_of(config: Mapping[str, Any], config_schema: Optional[PolicyConfigSchema]) -> dict[str, Any]:
    """Schema defaults overlaid with the given config (what the engine hands a policy)."""
    out: dict[str, Any] = {}
    if config_schema is not None:
        out = {k: v["default"] for k, v in config_schema.properties.items() if "default" in v}
    out.update(dict(config or {}))
    return out


_LAST_OBJ: list = []  # [(props, Obj)]: resource policies called with the same props share one Obj


def _obj(args: ResourceValidationArgs) -> Optional[Obj]:
    if _LAST_OBJ and _LAST_OBJ[0][0] is args.props:
        return _LAST_OBJ[0][1]
    obj = to_obj(args.resource_type, args.props, args.urn)
    _LAST_OBJ[:] = [(args.props, obj)]
    return obj


def resource_policy(
    *,
    name: str,
    description: str,
    check: Callable[[Obj, dict, Callable[[str], None]], None],
    remediation: str,
    area: str,
    level: EnforcementLevel = MANDATORY,
    config: Optional[PolicyConfigSchema] = None,
) -> ResourceValidationPolicy:
    """A policy over each Kubernetes object on its own."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        obj = _obj(args)
        if obj is None:
            return
        check(obj, config_of(args.get_config(), config), lambda message: report_violation(message, None))

    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=level,
        config_schema=config,
        remediation_steps=remediation,
        tags=[area],
    )


_LAST: list = []  # [(resources list, Stack)]: stack policies called with the same list share one model


def _stack(resources: list) -> Stack:
    if _LAST and _LAST[0][0] is resources:
        return _LAST[0][1]
    stack = Stack.from_resources(resources)
    _LAST[:] = [(resources, stack)]
    return stack


def stack_policy(
    *,
    name: str,
    description: str,
    check: Callable[[Stack, dict, Report], None],
    remediation: str,
    area: str,
    level: EnforcementLevel = MANDATORY,
    config: Optional[PolicyConfigSchema] = None,
) -> StackValidationPolicy:
    """A policy over the whole stack (cross-resource invariants)."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        stack = _stack(args.resources)

        def report(message: str, obj: Optional[Obj] = None) -> None:
            report_violation(message, obj.urn if obj is not None else None)

        check(stack, config_of(args.get_config(), config), report)

    return StackValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=level,
        config_schema=config,
        remediation_steps=remediation,
        tags=[area],
    )
