"""Write a plan to disk: plan.json, the manifests in renderYamlToDirectory's layout, and
plan.md.  Everything is rendered in memory first, then swapped into place, so a failed
run never leaves a half-written directory and the same plan gives the same bytes."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .plan import Plan, manifest_filename, manifest_subdir

_FIRST = ("apiVersion", "kind", "metadata")
# What tells a stack directory the preview wrote: its plan.json has these keys.
_PLAN_KEYS = {"project", "stack", "regions", "resourceCount", "resources"}


class RenderError(ValueError):
    """The program's objects cannot be laid out as the contract says (two objects in one
    file, an object outside any region): a program error."""


class OutputDirError(Exception):
    """The output directory holds something the preview did not write: left alone."""


# libyaml's emitter (yaml.CSafeDumper) writes the same bytes as PyYAML's pure-Python one for
# these documents, several times faster; PyYAML built without libyaml falls back to it.
class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str):
    # Multi-line strings (config files in ConfigMaps) as literal blocks: reviewable diffs.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def manifest_yaml(obj: dict[str, Any]) -> str:
    ordered = {k: obj[k] for k in _FIRST if k in obj}
    ordered.update({k: obj[k] for k in sorted(obj) if k not in _FIRST})
    return yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.as_json(), indent=2, sort_keys=True) + "\n"


def render_files(plan: Plan, report_md: str, policy_json: dict[str, Any] | None = None) -> dict[str, Any]:
    """Relative path -> file text, for everything the preview writes for one stack."""
    files: dict[str, str] = {"plan.json": plan_json(plan), "plan.md": report_md}
    if policy_json is not None:
        files["policy.json"] = json.dumps(policy_json, indent=2, sort_keys=True) + "\n"
    for res in plan.kubernetes_objects():
        obj = res.manifest
        if not res.region:
            # The contract has build/<stack>/<region>/ only: every object belongs to a Region.
            raise RenderError(f"{res.urn} is not inside any tikit:platform:Region, so it has no build/<stack>/<region>/ directory")
        path = f"{res.region}/{manifest_subdir(obj)}/{manifest_filename(obj)}"
        if path in files:
            raise RenderError(f"two objects render to {path}: {res.urn}")
        files[path] = manifest_yaml(obj)
    return files


def _written_by_preview(out_dir: Path) -> bool:
    try:
        doc = json.loads((out_dir / "plan.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and _PLAN_KEYS <= set(doc)


def check_replaceable(out_dir: Path) -> None:
    """Raise OutputDirError unless out_dir is absent, empty, or an earlier preview's output."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise OutputDirError(f"{out_dir} exists and is not a directory; remove it or choose another --out")
    if any(out_dir.iterdir()) and not _written_by_preview(out_dir):
        raise OutputDirError(
            f"{out_dir} holds files the preview did not write (no plan.json of its own), such as YAML "
            "that `pulumi up` rendered there with Secrets in clear text; move it away or choose another --out"
        )


def write(out_dir: Path, files: dict[str, Any]) -> None:
    """Replace out_dir with exactly these files.  Only an absent or empty directory, or
    one an earlier preview wrote, is replaced (OutputDirError otherwise)."""
    check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        for rel, text in sorted(files.items()):
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(text, bytes):
                path.write_bytes(text)  # the capacity plot
            else:
                path.write_text(text)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
