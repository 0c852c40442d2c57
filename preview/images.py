"""Image digests: refresh the third-party pins, and set the app images of a deploy.

``python -m preview images [--write] [--registry URL]`` asks each image's registry which
digest its tag points at today (the OCI distribution API: a HEAD of the manifest, with an
anonymous bearer token where the registry asks for one) and prints one line per pin:
``same``, or the registry's digest where it differs. ``--write`` puts the registry's
digests into tikit/images.py, each recorded as read from that registry on that day.
``--registry`` sends every request to one registry mirror instead (air-gapped mirrors).
Exit 0 when every pin matches (or was written), 1 when some differ, 2 when a registry
cannot be asked.

``python -m preview app-images --stack S [--backend REF] [--worker REF]`` is what the
deploy workflow runs before `pulumi up`: it checks each reference is one of the platform's
own repositories with a tag and a sha256 digest, writes it into Pulumi.<S>.yaml
(``backend.image`` / ``workers.image``) and loads the stack's settings to prove the file
still validates. Exit 2 with one line on a bad reference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import yaml

from tikit import images

from . import engine

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_FILE = REPO_ROOT / "tikit" / "images.py"
# The manifest kinds asked for, the multi-platform index first: its digest is the one a
# node of any architecture pulls by.
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
# Docker Hub serves its registry API on another host than its name.
REGISTRY_HOSTS = {"docker.io": "registry-1.docker.io"}
TIMEOUT_SECONDS = 20
# Where each app image goes in a stack file.
APP_SETTINGS = {"backend": ("backend", "image"), "worker": ("workers", "image")}


class RegistryError(Exception):
    pass


def _endpoint(repository: str, registry: Optional[str]) -> tuple[str, str]:
    """(base URL, repository path) for a reference's repository."""
    host, _, path = repository.partition("/")
    base = registry.rstrip("/") if registry else f"https://{REGISTRY_HOSTS.get(host, host)}"
    return base, path


def _bearer(challenge: str, opener: Callable) -> str:
    """An anonymous token for a `WWW-Authenticate: Bearer realm=...,service=...,scope=...`."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm", None)
    if not realm:
        raise RegistryError(f"cannot authenticate: {challenge!r}")
    url = f"{realm}?{urllib.parse.urlencode(params)}"
    with opener(urllib.request.Request(url), timeout=TIMEOUT_SECONDS) as resp:
        body = json.load(resp)
    token = body.get("token") or body.get("access_token")
    if not token:
        raise RegistryError(f"no token from {realm}")
    return token


def registry_digest(repository: str, tag: str, *, registry: Optional[str] = None, opener: Callable = urllib.request.urlopen) -> str:
    """The digest ``repository:tag`` points at in its registry today."""
    base, path = _endpoint(repository, registry)
    url = f"{base}/v2/{path}/manifests/{tag}"
    headers = {"Accept": ACCEPT}
    for _ in range(2):
        request = urllib.request.Request(url, method="HEAD", headers=headers)
        try:
            with opener(request, timeout=TIMEOUT_SECONDS) as resp:
                digest = resp.headers.get("Docker-Content-Digest", "")
                if not images.DIGEST_RE.match(digest):
                    raise RegistryError(f"{url} answered without a sha256 digest")
                return digest
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate", "") if exc.headers else ""
            if exc.code == 401 and challenge.lower().startswith("bearer") and "Authorization" not in headers:
                headers["Authorization"] = f"Bearer {_bearer(challenge[len('bearer'):].strip(), opener)}"
                continue
            raise RegistryError(f"{url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    raise RegistryError(f"{url}: not authorised")


def write_pin(text: str, key: str, digest: str, record: str) -> str:
    """tikit/images.py's text with the pin ``key`` moved to ``digest``."""
    block = re.compile(r'(Pin\(\s*key="' + re.escape(key) + r'",.*?digest=")sha256:[a-f0-9]{64}(",\s*record=")(.*?)(",)', re.S)
    new, count = block.subn(lambda m: f"{m.group(1)}{digest}{m.group(2)}{record}{m.group(4)}", text, count=1)
    if count != 1:
        raise RegistryError(f"tikit/images.py has no pin {key!r}")
    return new


def refresh(*, write: bool, registry: Optional[str], path: Path = IMAGES_FILE, out=None, opener: Callable = urllib.request.urlopen) -> int:
    out = out or sys.stdout
    text = path.read_text()
    differ = 0
    today = dt.date.today().isoformat()
    for pin in images.PINS:
        try:
            current = registry_digest(pin.repository, pin.tag, registry=registry, opener=opener)
        except RegistryError as exc:
            print(f"error: {pin.repository}:{pin.tag}: {exc}", file=sys.stderr)
            return 2
        if current == pin.digest:
            print(f"same     {pin.repository}:{pin.tag}", file=out)
            continue
        differ += 1
        print(f"differs  {pin.repository}:{pin.tag}  pinned {pin.digest}  registry {current}", file=out)
        if write:
            host = _endpoint(pin.repository, registry)[0].split("://", 1)[-1]
            text = write_pin(text, pin.key, current, f"{host} manifest of {pin.tag}, read {today} (python -m preview images --write)")
    if write and differ:
        path.write_text(text)
        print(f"wrote {differ} digest(s) to {path.name}", file=out)
        return 0
    return 1 if differ else 0


def app_reference_problem(ref: str) -> Optional[str]:
    repository, tag, digest = images.split(ref)
    if not images.is_app(ref):
        return f"is not one of the platform's repositories ({', '.join(images.APP_REPOSITORIES)})"
    if not tag:
        return "has no tag (name:tag@sha256:...)"
    if not images.DIGEST_RE.match(digest):
        return "has no sha256 digest (name:tag@sha256:<64 hex>)"
    return None


def set_app_images(stack: str, refs: dict[str, str], repo: Path = REPO_ROOT) -> None:
    """Write the app image references into Pulumi.<stack>.yaml (the deploy's checkout)."""
    from tikit import settings

    for which, ref in refs.items():
        problem = app_reference_problem(ref)
        if problem:
            raise settings.ConfigError(f"--{which}", f"{ref!r} {problem}")
    project = engine.load_project(repo)["name"]
    path = engine.stack_file(stack, repo, engine.load_project(repo))
    doc = yaml.safe_load(path.read_text()) or {}
    config = doc.setdefault("config", {})
    for which, ref in refs.items():
        section, key = APP_SETTINGS[which]
        full = f"{project}:{section}"
        value = config.get(full, config.pop(section, None)) or {}
        if not isinstance(value, dict):
            raise settings.ConfigError(full, "must be a map to take the image")
        value[key] = ref
        config[full] = value
    # The stack file must still validate (contexts included: the deploy runs `pulumi up`
    # next) before it is written.
    ours = {k.split(":", 1)[1]: v for k, v in config.items() if str(k).startswith(f"{project}:")}
    settings.load(ours, stack=stack, deploying=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m preview images", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update tikit/images.py with the registries' digests")
    parser.add_argument("--registry", help="ask this registry (a mirror) for every repository")
    args = parser.parse_args(argv)
    return refresh(write=args.write, registry=args.registry)


def app_main(argv: list[str]) -> int:
    from tikit import settings

    parser = argparse.ArgumentParser(prog="python -m preview app-images", description="Set the app images of a deploy.")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--backend", default="", help="the API image, name:tag@sha256:...")
    parser.add_argument("--worker", default="", help="the workers image, name:tag@sha256:...")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the checkout holding Pulumi.<stack>.yaml; default .")
    args = parser.parse_args(argv)
    refs = {k: v for k, v in (("backend", args.backend), ("worker", args.worker)) if v}
    try:
        if not refs:
            raise settings.ConfigError("app-images", "give --backend and/or --worker")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", args.stack):
            raise settings.ConfigError("--stack", f"{args.stack!r} is not a stack name")
        set_app_images(args.stack, refs, args.repo)
    except (settings.ConfigError, engine.StackConfigError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    for which, ref in refs.items():
        print(f"{'.'.join(APP_SETTINGS[which])} = {ref}")
    return 0
