"""Run the real Pulumi program in-process through the SDK's mock engine and record
every resource it registers.

What the Pulumi engine would do and this module does too:
- config comes from Pulumi.yaml + Pulumi.<stack>.yaml, namespaced and stringified the
  way the CLI hands it to the language host (objects as JSON, scalars as strings);
- a duplicate URN is an error;
- secret values stay wrapped, so the plan can redact them.

What it cannot do: talk to a cluster or decrypt ``secure:`` config values (those are
provided to the program as secret placeholders).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"
STACK_TYPE = "pulumi:pulumi:Stack"


class StackConfigError(Exception):
    """The project or stack file itself is unusable (exit code 2, like a settings error)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


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


# --------------------------------------------------------------------------------------
# Project and stack files, read the way the CLI reads them
# --------------------------------------------------------------------------------------


def load_project(repo: Path = REPO_ROOT) -> dict[str, Any]:
    path = repo / "Pulumi.yaml"
    try:
        project = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StackConfigError("Pulumi.yaml", f"not found in {repo}")
    if not isinstance(project, dict) or not isinstance(project.get("name"), str):
        raise StackConfigError("Pulumi.yaml", "must be a map with a 'name'")
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


def load_stack_config(stack: str, repo: Path = REPO_ROOT) -> tuple[str, dict[str, str], list[str]]:
    """Return (project, {"<ns>:<key>": value-string}, secret keys) for a stack."""
    project = load_project(repo)["name"]
    path = repo / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise StackConfigError("stack", f"no stack file Pulumi.{stack}.yaml in {repo.name}/")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise StackConfigError(path.name, f"is not valid YAML{where}")
    if not isinstance(doc, dict):
        raise StackConfigError(path.name, "must be a map")
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise StackConfigError(f"{path.name}: config", "must be a map of keys to values")
    out: dict[str, str] = {}
    secrets: list[str] = []
    for key, value in config.items():
        key = str(key)
        full = key if ":" in key else f"{project}:{key}"  # bare keys belong to the project
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

        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            state = dict(args.inputs)
            if args.typ == "random:index/randomPassword:RandomPassword":
                # The real provider marks `result` secret; mocks skip additionalSecretOutputs,
                # so wrap it here to keep the same contract.
                state["result"] = {SIG_KEY: SECRET_SIG, "value": _placeholder("password", args.name)}
            if args.typ == "random:index/randomBytes:RandomBytes":
                # Same contract: base64 and hex are secret outputs of the real provider.
                length = int(args.inputs.get("length", 32))
                stand_in = hashlib.sha256(f"offline-bytes-{args.name}".encode()).digest() * (length // 32 + 1)
                for key, value in (("base64", base64.b64encode(stand_in[:length]).decode()), ("hex", stand_in[:length].hex())):
                    state[key] = {SIG_KEY: SECRET_SIG, "value": value}
            return f"{args.name}-id", state

        def call(self, args: pulumi.runtime.MockCallArgs):
            return {}, None

    return PreviewMocks


def _monitor_class():
    from pulumi.runtime import rpc
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
            # Like the engine: children of the root stack carry no parent type in the URN.
            if parent and parent == self.stack_urn:
                parent = ""
            return super().make_urn(parent, type_, name)

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


@contextlib.contextmanager
def _program_path(program_dir: Path):
    """infra/ first on sys.path, as the CLI's language host sets it; undone afterwards."""
    saved = list(sys.path)
    sys.path.insert(0, str(program_dir))
    try:
        yield
    finally:
        sys.path[:] = saved


def run_program(stack: str, repo: Path = REPO_ROOT, *, config_override: Optional[dict[str, str]] = None) -> Run:
    """Run infra/ for one stack and return every registered resource."""
    import pulumi
    from pulumi.runtime import config as runtime_config
    from pulumi.runtime import settings as runtime_settings
    from pulumi.runtime.mocks import MockEngine, MockSettings
    from pulumi.runtime.stack import run_in_stack

    project_doc = load_project(repo)
    project, config, secret_keys = load_stack_config(stack, repo)
    if config_override is not None:
        config = config_override
    program_dir = repo / str(project_doc.get("main", ".")).rstrip("/")

    monitor = _monitor_class()(_mocks_class()())
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
    main = program_dir / "__main__.py"
    try:
        with _program_path(program_dir):
            loop.run_until_complete(run_in_stack(lambda: runpy.run_path(str(main), run_name="__main__")))
    finally:
        loop.close()
        asyncio.set_event_loop(None)
        runtime_settings.ROOT.set(None)
        runtime_config.set_all_config({}, [])
    return Run(
        project=project,
        stack=stack,
        records=monitor.records,
        outputs=monitor.stack_outputs,
        secret_config_keys=secret_keys,
    )
