"""Run the real Pulumi program in-process through the SDK's mock engine and record
every resource it registers.

What the Pulumi engine would do and this module does too:
- config comes from Pulumi.yaml + Pulumi.<stack>.yaml, namespaced and stringified the
  way the CLI hands it to the language host (objects as JSON, scalars as strings);
- a duplicate URN is an error;
- secret values stay wrapped, so the plan can redact them.

What it cannot do: talk to a cluster or decrypt ``secure:`` config values (those are
provided to the program as secret placeholders).

The program is the installed ``tikit`` package: ``tikit.program.main()`` declares every
resource inside a function, so each run registers everything afresh in a fresh mock engine.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .stackfile import StackConfigError, escape
from . import stackfile

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"
STACK_TYPE = "pulumi:pulumi:Stack"


class ProgramConfigError(StackConfigError):
    """The program refused its settings (its own ``ConfigError``, from whichever copy of
    its ``settings`` module this run imported)."""


class DuplicateUrnError(Exception):
    pass


@dataclass
class Record:
    urn: str
    type: str
    name: str
    parent: Optional[str]
    provider: Optional[str]
    custom: bool
    inputs: dict[str, Any]
    dependencies: list[str] = field(default_factory=list)


@dataclass
class Run:
    project: str
    stack: str
    records: list[Record]
    outputs: dict[str, Any]
    secret_config_keys: list[str]
    # Every value the mocks made up for a secret output (passwords, random bytes): none of
    # them may reach a file or the terminal.
    stand_ins: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Project and stack files, read the way the CLI reads them
# --------------------------------------------------------------------------------------


# Pulumi's rule for stack and project names (pkg/backend/httpstate/backend.go,
# stackNameAndProjectRegexp, and `pulumi stack init`'s "Stack names may only contain
# alphanumeric characters, hyphens, underscores, or periods"): ^[A-Za-z0-9_.-]{1,100}$.
# A stack name also becomes a directory (build/<stack>/), so this adds: no '..', and no
# leading '.' ('.', '..' and hidden directories are path components, not stacks).
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}", re.ASCII)


def check_stack_name(stack: str) -> Optional[str]:
    """Why ``stack`` is not a stack name, or None."""
    if not isinstance(stack, str) or not NAME_RE.fullmatch(stack):
        return f"{_quoted(stack)} is not a stack name (1-100 letters, digits, '-', '_' and '.')"
    if stack.startswith(".") or ".." in stack:
        return f"{_quoted(stack)} is not a stack name (no '..' and no leading '.': it names a directory)"
    return None


def _quoted(text: Any, limit: int = 60) -> str:
    shown = escape(str(text))
    return "'" + (shown if len(shown) <= limit else shown[: limit - 3] + "...") + "'"


def load_project(repo: Path = REPO_ROOT) -> dict[str, Any]:
    path = repo / "Pulumi.yaml"
    if not path.is_file():
        raise StackConfigError("Pulumi.yaml", f"not found in {repo}")
    project = stackfile.load(path, "Pulumi.yaml")
    if not isinstance(project, dict) or not isinstance(project.get("name"), str):
        raise StackConfigError("Pulumi.yaml", "must be a map with a 'name'")
    if not NAME_RE.fullmatch(project["name"]):
        raise StackConfigError("Pulumi.yaml#/name", f"{_quoted(project['name'])} is not a project name (1-100 letters, digits, '-', '_' and '.')")
    return project


def _cli_value(value: Any) -> str:
    """The CLI passes every config value to the program as a string; objects as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True)


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def _strip_secure(value: Any, path: str, secrets: list[str]) -> Any:
    """Replace ``secure:`` ciphertexts (undecryptable here) with a placeholder."""
    if _is_secure(value):
        secrets.append(path)
        return "[secret]"
    if isinstance(value, dict):
        return {k: _strip_secure(v, f"{path}.{k}", secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_secure(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    return value


# Pulumi.yaml's own `config:` block (project-level config, CLI 3.44+), read as the CLI's
# workspace package reads it: a plain value (or list) is shorthand for `default:` under
# the project's namespace and for `value:` under any other; a map declares the key.
_UNSET: Any = object()
_DECLARATION_FIELDS = ("default", "description", "items", "secret", "type", "value")
_CONFIG_TYPES = ("string", "integer", "boolean", "array", "object")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


@dataclass(frozen=True)
class ProjectConfigKey:
    """One entry of Pulumi.yaml's `config:` block."""

    type: Optional[str] = None
    items: Optional[dict[str, Any]] = None
    default: Any = _UNSET
    value: Any = _UNSET
    secret: bool = False
    spelled: str = ""  # the key as Pulumi.yaml spells it

    @property
    def given(self) -> Any:
        return self.default if self.default is not _UNSET else self.value


def _type_name(type_: str, items: Optional[dict[str, Any]]) -> str:
    if items is not None:
        return f"array<{_type_name(str(items.get('type')), items.get('items'))}>"
    return type_


def _config_value_ok(type_: str, items: Optional[dict[str, Any]], value: Any) -> bool:
    """The CLI's check of a config value against a declared type (scalars arrive as the
    strings the CLI stores, so "3" is an integer and "true" a boolean)."""
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return True
        return isinstance(value, str) and bool(_INTEGER.match(value))
    if type_ == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if type_ == "object":
        return isinstance(value, dict)
    if not isinstance(value, list) or items is None:
        return False
    return all(_config_value_ok(str(items.get("type")), items.get("items"), item) for item in value)


def _check_items(where: str, items: Any) -> None:
    if not isinstance(items, dict) or items.get("type") not in _CONFIG_TYPES or set(items) - {"type", "items"}:
        raise StackConfigError(where, f"must be a map with a 'type' (one of {', '.join(_CONFIG_TYPES)}) and, for arrays, 'items'")
    if items["type"] == "array":
        if "items" not in items:
            raise StackConfigError(where, "declares an array but not the type of its 'items'")
        _check_items(f"{where}/items", items["items"])


def project_config(project: dict[str, Any]) -> dict[str, ProjectConfigKey]:
    """Pulumi.yaml's `config:` block as {"<namespace>:<key>": declaration}, validated as the
    CLI validates it."""
    block = project.get("config")
    if block is None or isinstance(block, str):  # a string is the old spelling of stackConfigDir
        return {}
    if not isinstance(block, dict):
        raise StackConfigError("Pulumi.yaml#/config", "must be a map of config keys")
    name = project["name"]
    out: dict[str, ProjectConfigKey] = {}
    for raw_key, decl in block.items():
        key = str(raw_key)
        where = f"Pulumi.yaml#/config/{key}"
        full = key if ":" in key else f"{name}:{key}"
        if full in out:  # `size` and `<project>:size` are one key
            raise StackConfigError("Pulumi.yaml#/config", f"duplicate key {_quoted(key)} (the same key as {_quoted(out[full].spelled)})")
        own = ":" not in key or key.startswith(f"{name}:")
        if decl is None:
            decl = {}
        elif not isinstance(decl, dict):
            decl = {"default": decl} if own else {"value": decl}
        unknown = sorted(str(k) for k in decl if k not in _DECLARATION_FIELDS)
        if unknown:
            raise StackConfigError(where, f"unknown attribute '{unknown[0]}'; allowed: {', '.join(_DECLARATION_FIELDS)}")
        default = decl["default"] if decl.get("default") is not None else _UNSET
        value = decl["value"] if decl.get("value") is not None else _UNSET
        type_, items = decl.get("type"), decl.get("items")
        if default is not _UNSET and value is not _UNSET:
            raise StackConfigError(where, "cannot have both a 'default' and a 'value'")
        if not isinstance(decl.get("secret", False), bool):
            raise StackConfigError(f"{where}/secret", "must be true or false")
        if own:
            if type_ is not None and type_ not in _CONFIG_TYPES:
                raise StackConfigError(f"{where}/type", f"must be one of {', '.join(_CONFIG_TYPES)}; got {json.dumps(type_)}")
            if type_ == "array" and items is None:
                raise StackConfigError(where, "declares an array but not the type of its 'items'")
            if items is not None:
                _check_items(f"{where}/items", items)
            if type_ is not None and default is not _UNSET and not _config_value_ok(type_, items, default):
                raise StackConfigError(f"{where}/default", f"is not of the declared type {_type_name(type_, items)}")
        elif type_ is not None:
            raise StackConfigError(where, "is not in the project's namespace and cannot declare a type")
        elif default is not _UNSET:
            raise StackConfigError(where, "is not in the project's namespace: give it a 'value', not a 'default'")
        elif value is _UNSET:
            raise StackConfigError(where, "is not in the project's namespace and must give a 'value'")
        out[full] = ProjectConfigKey(type_, items, default, value, bool(decl.get("secret", False)), spelled=key)
    return out


def stack_file(stack: str, repo: Path = REPO_ROOT, project: Optional[dict[str, Any]] = None) -> Path:
    """Pulumi.<stack>.yaml, in `stackConfigDir` (or the old string form of `config`) if set."""
    if problem := check_stack_name(stack):
        raise StackConfigError("--stack", problem)
    project = load_project(repo) if project is None else project
    config_dir, old_form = project.get("stackConfigDir"), project.get("config")
    if isinstance(old_form, str):
        if config_dir is not None:
            raise StackConfigError("Pulumi.yaml#/config", "names a stack config directory while stackConfigDir is set; keep only stackConfigDir")
        config_dir = old_form
    if config_dir is not None and not isinstance(config_dir, str):
        raise StackConfigError("Pulumi.yaml#/stackConfigDir", "must be a directory path")
    return repo / (config_dir or ".") / f"Pulumi.{stack}.yaml"


def load_stack_config(stack: str, repo: Path = REPO_ROOT) -> tuple[str, dict[str, str], list[str]]:
    """Return (project, {"<ns>:<key>": value-string}, secret keys) for a stack: the stack
    file's values over Pulumi.yaml's project-level config, as the CLI merges them."""
    project_doc = load_project(repo)
    project = project_doc["name"]
    declared = project_config(project_doc)
    path = stack_file(stack, repo, project_doc)
    if not path.is_file():
        raise StackConfigError("stack", f"no stack file {path.name} in {path.parent.name or repo.name}/")
    doc = stackfile.load(path) or {}
    if not isinstance(doc, dict):
        raise StackConfigError(path.name, "must be a map")
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise StackConfigError(f"{path.name}#/config", "must be a map of keys to values")
    merged: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in config.items():
        key = str(key)
        full = key if ":" in key else f"{project}:{key}"  # bare keys belong to the project
        if full in spelled:
            raise StackConfigError(f"{path.name}#/config", f"duplicate key {_quoted(key)} (the same key as {_quoted(spelled[full])})")
        spelled[full] = key
        merged[full] = value
    missing = []
    for full, decl in sorted(declared.items()):
        if full in merged:
            continue
        if decl.given is not _UNSET:
            merged[full] = decl.given
        elif full.split(":", 1)[0] == project:
            missing.append(full)
    if missing:
        also = f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""
        raise StackConfigError(missing[0], f"declared in Pulumi.yaml without a default and not set in {path.name}{also}")
    out: dict[str, str] = {}
    secrets: list[str] = []
    for full, value in merged.items():
        decl = declared.get(full)
        if decl is not None and decl.type is not None and not _is_secure(value):
            if decl.secret:
                raise StackConfigError(full, "is declared secret in Pulumi.yaml: set it with `pulumi config set --secret`")
            # The CLI checks what it stores: scalars as strings, objects and lists as JSON.
            shown = value if isinstance(value, (dict, list)) else _cli_value(value)
            if not _config_value_ok(decl.type, decl.items, shown):
                raise StackConfigError(full, f"must be of type {_type_name(decl.type, decl.items)} (declared in Pulumi.yaml)")
        secure: list[str] = []
        value = _strip_secure(value, full, secure)
        if secure:
            secrets.append(full)
        out[full] = _cli_value(value)
    return project, out, sorted(secrets)


# --------------------------------------------------------------------------------------
# The mock engine
# --------------------------------------------------------------------------------------


def _placeholder(kind: str, name: str) -> str:
    """A stand-in for a value only a real deployment produces (never a real secret)."""
    return f"offline-{kind}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def _mocks_class():
    import pulumi

    class PreviewMocks(pulumi.runtime.Mocks):
        """Echo inputs back as outputs, and give computed values a deterministic stand-in."""

        def __init__(self) -> None:
            self.stand_ins: list[str] = []

        def _secret(self, value: str) -> dict[str, Any]:
            self.stand_ins.append(value)
            return {SIG_KEY: SECRET_SIG, "value": value}

        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            state = dict(args.inputs)
            if args.typ == "random:index/randomPassword:RandomPassword":
                # The real provider marks `result` secret; mocks skip additionalSecretOutputs,
                # so wrap it here to keep the same contract.
                state["result"] = self._secret(_placeholder("password", args.name))
            if args.typ == "random:index/randomBytes:RandomBytes":
                # Same contract: base64 and hex are secret outputs of the real provider.
                length = int(args.inputs.get("length", 32))
                stand_in = hashlib.sha256(f"offline-bytes-{args.name}".encode()).digest() * (length // 32 + 1)
                state["base64"] = self._secret(base64.b64encode(stand_in[:length]).decode())
                state["hex"] = self._secret(stand_in[:length].hex())
            return f"{args.name}-id", state

        def call(self, args: pulumi.runtime.MockCallArgs):
            return {}, None

    return PreviewMocks


def _monitor_class():
    from pulumi.runtime import rpc
    from pulumi.runtime import settings as runtime_settings
    from pulumi.runtime.mocks import MockMonitor

    class RecordingMonitor(MockMonitor):
        """The SDK's mock monitor, plus what the engine does that mocks skip: parent and
        provider bookkeeping, duplicate-URN rejection and stack outputs."""

        def __init__(self, mocks):
            super().__init__(mocks)
            self.records: list[Record] = []
            self.seen: set[str] = set()
            self.stack_outputs: dict[str, Any] = {}
            self.stack_urn: Optional[str] = None

        def make_urn(self, parent: str, type_: str, name: str) -> str:
            """As the engine builds URNs: the type is qualified by the whole chain of parent
            types (`Region$Backend$kubernetes:apps/v1:Deployment`), less the root stack's.
            (The SDK's mock keeps only the immediate parent's type.)"""
            if parent and parent != self.stack_urn:
                # urn:pulumi:<stack>::<project>::<qualified type>::<name>; names may hold "::".
                type_ = parent.split("::", 3)[2] + "$" + type_
            return "urn:pulumi:" + "::".join([runtime_settings.get_stack(), runtime_settings.get_project(), type_, name])

        def RegisterResource(self, request):
            urn = self.make_urn(request.parent, request.type, request.name)
            if request.type == STACK_TYPE:
                self.stack_urn = urn
                return super().RegisterResource(request)
            if urn in self.seen:
                raise DuplicateUrnError(f"duplicate URN {urn}: resource names must be unique per type and parent")
            self.seen.add(urn)
            response = super().RegisterResource(request)
            self.records.append(
                Record(
                    urn=urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent or None,
                    provider=request.provider or None,
                    custom=bool(request.custom),
                    inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                    dependencies=sorted(request.dependencies),
                )
            )
            return response

        def RegisterResourceOutputs(self, request):
            if request.urn == self.stack_urn:
                self.stack_outputs = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
            return super().RegisterResourceOutputs(request)

    return RecordingMonitor


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what a failed program left pending and close the loop, so nothing reports
    "Task was destroyed but it is pending!" at exit."""
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def run_program(
    stack: str,
    repo: Path = REPO_ROOT,
    *,
    config_override: Optional[dict[str, str]] = None,
    program: Optional[Callable[[], None]] = None,
) -> Run:
    """Run the program (tikit.program.main, or ``program``) for one stack and return every
    registered resource.

    Raises StackConfigError for unusable project or stack files and ProgramConfigError
    (a StackConfigError) when the program's settings refuse the config."""
    # The stack files first: a file refused here costs no Pulumi import.
    project, config, secret_keys = load_stack_config(stack, repo)
    from pulumi.runtime import config as runtime_config
    from pulumi.runtime import settings as runtime_settings
    from pulumi.runtime.mocks import MockEngine, MockSettings
    from pulumi.runtime.stack import run_in_stack

    if config_override is not None:
        config = config_override
    # Imported here, not at module level: the preview's other commands (diff, the CLI's
    # argument errors) never pay for the program's imports.
    from tikit.settings import ConfigError

    if program is None:
        from tikit.program import main as program

    mocks = _mocks_class()()
    monitor = _monitor_class()(mocks)
    runtime_config.set_all_config(config, secret_keys)
    runtime_settings.ROOT.set(None)
    runtime_settings.configure(
        MockSettings(
            monitor=monitor,
            monitor_features=set(monitor.GetDeploymentInfo(None).supportedFeatures),
            engine=MockEngine(logging.getLogger("pulumi")),
            project=project,
            stack=stack,
            dry_run=False,
            organization="organization",
            callbacks=None,
        )
    )
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(run_in_stack(program))
    except ConfigError as exc:
        raise ProgramConfigError(exc.key, exc.message) from exc
    finally:
        _close_loop(loop)
        asyncio.set_event_loop(None)
        runtime_settings.ROOT.set(None)
        runtime_config.set_all_config({}, [])
    return Run(
        project=project,
        stack=stack,
        records=monitor.records,
        outputs=monitor.stack_outputs,
        secret_config_keys=secret_keys,
        stand_ins=list(mocks.stand_ins),
    )
