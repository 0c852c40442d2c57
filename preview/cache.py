"""The preview's own cache: prepared CRD schemas and the digests of objects already found
valid, as JSON under ``build/.cache/preview/`` ($TIKIT_PREVIEW_CACHE overrides the
directory; set it empty to turn the cache off).

Nothing here is an output: a missing, unreadable or unwritable cache only costs time, and
every entry is keyed by the digest of everything that decides it (file contents and the
validating code), so a stale entry is never read.  Writes are atomic (a temporary file
renamed into place): runs in parallel at worst repeat each other's work.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

CACHE_ENV = "TIKIT_PREVIEW_CACHE"
REPO_ROOT = Path(__file__).resolve().parent.parent


def crds_dir() -> Path:
    """Where the pinned CRD files are: $TIKIT_CRDS_DIR, else the cache ``make crds`` fills
    (preview/crds.py decides; this is its answer)."""
    from . import crds

    return crds.location()


def cache_dir() -> Optional[Path]:
    """$TIKIT_PREVIEW_CACHE ('' = no cache), else <repo>/build/.cache/preview.  A stack
    name never starts with '.', so no stack directory build/<stack> is ever build/.cache."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return Path(env) if env else None
    return REPO_ROOT / "build" / ".cache" / "preview"


def read_json(path: Optional[Path]) -> Any:
    """The JSON document at ``path``, or None when there is none (or it is unreadable)."""
    if path is None:
        return None
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def write_json(path: Optional[Path], doc: Any) -> None:
    """Write ``doc`` to ``path`` atomically; silently nothing when that is impossible."""
    if path is None:
        return
    try:
        text = json.dumps(doc, separators=(",", ":"))
    except (TypeError, ValueError):
        return
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
