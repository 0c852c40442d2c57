"""Offline preview of a stack: ``python -m preview [--stack dev]``.

Exit codes: 0 ok; 1 a mandatory policy is violated; 2 the settings or the stack files are
invalid, ``--stack`` is not a stack name, or a rendered object would be refused by the API
server or etcd (one line on stderr, ``config error: <key>: <what is wrong>``, nothing
written; preview/admission.py says what is checked), or ``--out`` holds a stack directory
the preview did not write; 3 the program cannot be previewed
(duplicate URNs, two objects rendering to one file, a Kubernetes object outside any
region, an exception in the program): one line on stderr, ``error: <message>``, nothing
written.

``python -m preview diff [--base REF] [--stacks dev,staging,prod] [--out build/diff]``
compares two revisions of every stack (preview/revisions.py); ``python -m preview crds``
fetches or checks the pinned CRD files the validation reads (preview/crds.py); ``python -m
preview images`` compares the image pins with their registries and ``python -m preview
app-images`` sets a deploy's app images (preview/images.py).

``python -m preview capacity [--stack prod] [--out build]`` also replays the capacity
model and writes build/<stack>/capacity/ (preview/capacity.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import cli


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["diff"]:
        from . import revisions

        return revisions.main(argv[1:])
    if argv[:1] == ["crds"]:
        from . import crds

        return crds.main(argv[1:])
    if argv[:1] == ["capacity"]:
        from . import capacity

        return capacity.main(argv[1:])
    if argv[:1] == ["images"]:
        from . import images

        return images.main(argv[1:])
    if argv[:1] == ["app-images"]:
        from . import images

        return images.app_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m preview",
        description=__doc__.splitlines()[0],
        epilog="python -m preview diff --help: compare two revisions of every stack",
    )
    parser.add_argument("--stack", default="dev", help="stack name (Pulumi.<stack>.yaml): letters, digits, '-', '_' and '.'; default dev")
    parser.add_argument("--out", type=Path, default=cli.REPO_ROOT / "build", help="output root; default build/")
    parser.add_argument(
        "--policy-config",
        type=Path,
        default=None,
        help="policy config file, the same JSON `pulumi preview --policy-pack-config` takes",
    )
    args = parser.parse_args(argv)
    return cli.preview(args.stack, out_root=args.out, policy_config=args.policy_config)


if __name__ == "__main__":
    sys.exit(main())
