"""The pinned upstream CRD files the preview and the tests validate custom resources against.

``python -m preview crds`` (``make crds``) makes sure every file that tikit/versions.py pins
is present, byte for byte:

* with ``$TIKIT_CRDS_DIR`` set, that directory is an air-gapped mirror with the cache's
  layout (``<folder>/<file>``, e.g. ``keda/keda.sh_scaledobjects.yaml``); it is checked,
  never written;
* otherwise the files are downloaded from their release tags on GitHub into ``.crds/`` at
  the repository's root (git-ignored), each checked against its sha256 before it is kept;
  ``$TIKIT_CRDS_BASE_URL`` points the downloads at an HTTP mirror of
  raw.githubusercontent.com (same ``<repo>/<tag>/<path>`` layout).

Either way a missing or altered file stops the command with one line that says what to do.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Optional

from tikit.versions import RAW_BASE, CrdFiles, crd_files

CRDS_ENV = "TIKIT_CRDS_DIR"
BASE_URL_ENV = "TIKIT_CRDS_BASE_URL"
REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE = REPO_ROOT / ".crds"
DOWNLOAD_TIMEOUT_SECONDS = 20
FIX = (
    "run `make crds` where github.com is reachable, or set TIKIT_CRDS_DIR to a mirror of the "
    "pinned files (layout <folder>/<file>, tikit/versions.py)"
)


class CrdsUnavailable(Exception):
    """The pinned CRD files cannot be had; ``str(err)`` is one line."""


def location() -> Path:
    """$TIKIT_CRDS_DIR when set, else the repository's cache."""
    env = os.environ.get(CRDS_ENV)
    return Path(env) if env else CACHE


def pinned_paths(root: Path) -> list[Path]:
    return [root / c.folder / f for c, f in crd_files()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def problems(root: Optional[Path] = None) -> list[str]:
    """What is wrong with ``root`` (default: location()): one entry per pinned file that is
    missing or differs from its sum."""
    root = location() if root is None else root
    out = []
    for crds, file in crd_files():
        path = root / crds.folder / file
        if not path.is_file():
            out.append(f"{crds.folder}/{file} is missing")
        elif _sha256(path) != crds.files[file].sha256:
            out.append(f"{crds.folder}/{file} is not the file of {crds.repo} {crds.tag} (sha256 differs)")
    return out


def summary(found: list[str], root: Path) -> str:
    first = found[0]
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    return f"CRDs in {root}: {first}{more}; {FIX}"


def _download(crds: CrdFiles, file: str, target: Path) -> None:
    url = crds.url(file, os.environ.get(BASE_URL_ENV) or RAW_BASE)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CrdsUnavailable(f"cannot download {url}: {reason}; {FIX}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != crds.files[file].sha256:
        raise CrdsUnavailable(f"{url} has sha256 {digest}, not the pinned {crds.files[file].sha256}; refusing it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{file}.", delete=False) as tmp:
        tmp.write(data)
    Path(tmp.name).replace(target)


def ensure(root: Optional[Path] = None, *, download: Optional[bool] = None) -> list[str]:
    """Make every pinned file present under ``root``; returns the files it downloaded.
    A mirror ($TIKIT_CRDS_DIR) is only checked.  Raises CrdsUnavailable."""
    mirror = root is None and CRDS_ENV in os.environ
    root = location() if root is None else root
    download = (not mirror) if download is None else download
    fetched = []
    for crds, file in crd_files():
        path = root / crds.folder / file
        if path.is_file() and _sha256(path) == crds.files[file].sha256:
            continue
        if not download:
            raise CrdsUnavailable(summary(problems(root), root))
        _download(crds, file, path)
        fetched.append(f"{crds.folder}/{file}")
    return fetched


def main(argv: Iterable[str] = ()) -> int:
    if list(argv):
        print("usage: python -m preview crds   (no arguments; TIKIT_CRDS_DIR names a mirror)", file=sys.stderr)
        return 2
    try:
        fetched = ensure()
    except CrdsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    root = location()
    total = len(crd_files())
    origin = "mirror" if CRDS_ENV in os.environ else "cache"
    print(f"crds: {total} pinned CRD files in {root} ({origin}; {len(fetched)} downloaded)")
    return 0
