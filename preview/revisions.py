"""``python -m preview diff``: render two revisions of every stack and compare them.

The base revision is exported from git into a temporary directory and rendered by its
own code (``python -m preview --stack <s> --out <dir>`` with that copy as the working
directory and the only PYTHONPATH entry), so the old program runs through the old
preview.  The head is the working tree, rendered the same way.  Both run as separate
processes, two at a time: the mock engine keeps per-process state, and a second core
halves the wall time.

Exit codes: 0 report written; 1 report written, but a head stack does not render or
violates a mandatory policy; 2 the comparison could not run (unknown --base, no git).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import diff_report
from .diff import Side, StackDiff, compare
from .engine import REPO_ROOT, check_stack_name

DEFAULT_STACKS = ("dev", "staging", "prod")
DEFAULT_OUT = REPO_ROOT / "build" / "diff"
MAIN_BRANCHES = ("main", "origin/main")
RENDER_TIMEOUT = 600  # seconds per stack and side


class DiffError(Exception):
    """The comparison cannot run at all (exit code 2)."""


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise DiffError(f"git {' '.join(args)}: {result.stderr.strip() or f'exit code {result.returncode}'}")
    return result.stdout.strip()


def _is_commit(repo: Path, ref: str) -> bool:
    result = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], capture_output=True, text=True
    )
    return result.returncode == 0


@dataclass(frozen=True)
class Base:
    sha: str
    label: str  # for the report, e.g. "`1a2b3c4` (merge-base of HEAD and main)"


def resolve_base(repo: Path, ref: Optional[str] = None) -> Base:
    """The given ref, or the merge-base of HEAD with main (origin/main), or HEAD."""
    if ref:
        if not _is_commit(repo, ref):
            raise DiffError(f"--base {ref}: not a commit in {repo}")
        sha = git(repo, "rev-parse", f"{ref}^{{commit}}")
        return Base(sha, f"`{ref}`" if ref.startswith(sha[:7]) else f"`{ref}` (`{sha[:7]}`)")
    if not _is_commit(repo, "HEAD"):
        raise DiffError(f"{repo} has no commit to compare against; pass --base")
    for branch in MAIN_BRANCHES:
        if _is_commit(repo, branch):
            sha = git(repo, "merge-base", "HEAD", branch)
            return Base(sha, f"`{sha[:7]}` (merge-base of HEAD and {branch})")
    sha = git(repo, "rev-parse", "HEAD")
    print("diff: neither main nor origin/main exists; comparing the working tree with HEAD", file=sys.stderr)
    return Base(sha, f"`{sha[:7]}` (HEAD; no main branch found)")


def head_label(repo: Path) -> str:
    sha = git(repo, "rev-parse", "--short=7", "HEAD")
    dirty = bool(git(repo, "status", "--porcelain", "--untracked-files=normal"))
    return f"working tree at `{sha}`" + (" with uncommitted changes" if dirty else "")


def _safe_members(tar: tarfile.TarFile, dest: Path):
    """The archive's members, each checked as tarfile's "data" filter checks them (for
    Pythons before 3.11.4, which lack it): no absolute paths, nothing outside dest, no
    links out of it, no devices or FIFOs."""
    root = dest.resolve()

    def inside(path: Path) -> bool:
        return path == root or root in path.parents

    for member in tar:
        name = member.name
        target = (root / name).resolve()
        if name.startswith("/") or ".." in Path(name).parts or not inside(target):
            raise DiffError(f"git archive: refusing {name!r}: outside the export directory")
        if member.issym():
            link = (target.parent / member.linkname).resolve()
            if member.linkname.startswith("/") or not inside(link):
                raise DiffError(f"git archive: refusing symlink {name!r} -> {member.linkname!r}: points outside the export")
        elif member.islnk():
            if member.linkname.startswith("/") or not inside((root / member.linkname).resolve()):
                raise DiffError(f"git archive: refusing hard link {name!r} -> {member.linkname!r}: points outside the export")
        elif not (member.isfile() or member.isdir()):
            raise DiffError(f"git archive: refusing {name!r}: not a file, directory or link")
        yield member


def _extract(stream, dest: Path) -> None:
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+ (3.12+, and backports)
            tar.extractall(dest, members=_safe_members(tar, dest), filter="data")
        else:
            tar.extractall(dest, members=_safe_members(tar, dest))


def export(repo: Path, sha: str, dest: Path) -> None:
    """The tree of a commit, as files (no .git, no worktree bookkeeping)."""
    dest.mkdir(parents=True, exist_ok=True)
    if not git(repo, "ls-tree", sha):
        return  # an empty tree archives to no tar members at all
    # stderr goes to a file, not a pipe: a pipe nobody reads while the tar stream is read
    # could fill up and stall git, and reading it while git waits on a full stdout pipe
    # would stall us.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", sha], stdout=subprocess.PIPE, stderr=errors)
        failure: Optional[BaseException] = None
        try:
            _extract(proc.stdout, dest)
            proc.stdout.read()  # the archive's zero padding, so git exits 0 rather than on SIGPIPE
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after git is stopped
            failure = exc
        finally:
            proc.stdout.close()
            if failure is not None and proc.poll() is None:
                proc.kill()  # it may be blocked writing to the pipe we no longer read
            proc.wait()
        errors.seek(0)
        stderr = errors.read().decode(errors="replace").strip()
    if isinstance(failure, DiffError) or (failure is not None and not isinstance(failure, (tarfile.TarError, OSError))):
        raise failure
    if failure is not None or proc.returncode != 0:
        # git's own message says most (an unknown object, a corrupt repository).
        why = stderr or (f"cannot extract ({type(failure).__name__}: {failure})" if failure else f"exit code {proc.returncode}")
        raise DiffError(f"git archive {sha[:7]}: {why}")


def render_stack(checkout: Path, stack: str, out_root: Path, *, python: str = sys.executable) -> tuple[Optional[Side], Optional[str]]:
    """(what the preview wrote, None) or (None, why there is nothing)."""
    if not (checkout / "preview" / "__main__.py").is_file():
        return None, "has no offline preview (no preview/ package)"
    # The checkout alone on PYTHONPATH: its own preview and program, nothing of ours.
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    try:
        result = subprocess.run(
            [python, "-m", "preview", "--stack", stack, "--out", str(out_root)],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=RENDER_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return None, f"did not render `{stack}` within {RENDER_TIMEOUT} s"
    stack_dir = out_root / stack
    # Exit 1 is a mandatory policy violation: the files are written and worth comparing.
    if result.returncode in (0, 1) and (stack_dir / "plan.json").is_file():
        return Side.load(stack_dir), None
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    why = lines[-1].strip() if lines else f"exit code {result.returncode}"
    return None, f"does not render `{stack}` ({why})"


@dataclass(frozen=True)
class Result:
    diffs: list[StackDiff]
    report: str
    seconds: float

    @property
    def failed(self) -> bool:
        return any(
            d.error or any(f.get("enforcement") == "mandatory" for f in ((d.policy.after or {}).get("findings") or []))
            for d in self.diffs
        )


def run(
    stacks: list[str],
    *,
    repo: Path = REPO_ROOT,
    out: Path = DEFAULT_OUT,
    base_ref: Optional[str] = None,
    python: str = sys.executable,
    jobs: Optional[int] = None,
    limit: int = diff_report.COMMENT_LIMIT,
) -> Result:
    started = time.monotonic()
    repo = repo.resolve()
    out = out.resolve()
    base = resolve_base(repo, base_ref)
    head = head_label(repo)
    for side in ("base", "head"):
        shutil.rmtree(out / side, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="tikit-diff-") as tmp:
        checkout = Path(tmp) / "base"
        export(repo, base.sha, checkout)
        tasks = [(checkout, s, out / "base") for s in stacks] + [(repo, s, out / "head") for s in stacks]
        workers = jobs or max(1, min(len(tasks), os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            rendered = list(pool.map(lambda t: render_stack(*t, python=python), tasks))
    diffs = []
    for i, stack in enumerate(stacks):
        (base_side, base_why), (head_side, head_why) = rendered[i], rendered[len(stacks) + i]
        notes = []
        if base_side is None:
            notes.append(f"No base for `{stack}`: the base revision {base_why}; everything is shown as added.")
        diffs.append(compare(stack, base_side, head_side, notes=notes, error=head_why))
    report = diff_report.render(diffs, base_label=base.label, head_label=head, limit=limit)
    write(out, diffs, report, base=base, head=head)
    return Result(diffs, report, time.monotonic() - started)


def write(out: Path, diffs: list[StackDiff], report: str, *, base: Base, head: str) -> None:
    """report.md (the comment), diff.json (everything, machine-readable) and one
    <stack>.diff per stack with every manifest diff, uncut."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.diff"):
        stale.unlink()
    (out / "report.md").write_text(report)
    doc = {"base": {"sha": base.sha, "label": base.label}, "head": head, "stacks": [d.as_json() for d in diffs]}
    (out / "diff.json").write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    for d in diffs:
        if d.manifests:
            (out / f"{d.stack}.diff").write_text("".join(m.diff for m in d.manifests))


def _stacks(text: str) -> list[str]:
    stacks = [s for s in text.replace(",", " ").split() if s]
    if not stacks:
        raise argparse.ArgumentTypeError("no stack named")
    for stack in stacks:  # each names a directory and a file under --out
        if problem := check_stack_name(stack):
            raise argparse.ArgumentTypeError(problem)
    return list(dict.fromkeys(stacks))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preview diff",
        description="Compare the offline preview of two revisions for each stack (base: merge-base with main; head: the working tree).",
    )
    parser.add_argument("--base", default=None, help="git ref to compare against; default: merge-base of HEAD and main")
    parser.add_argument(
        "--stacks", type=_stacks, default=list(DEFAULT_STACKS), help="stacks, comma- or space-separated; default dev,staging,prod"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory; default build/diff/")
    args = parser.parse_args(argv)
    try:
        result = run(args.stacks, out=args.out, base_ref=args.base)
    except DiffError as exc:
        print(f"diff: {exc}", file=sys.stderr)
        return 2
    for d in result.diffs:
        print(diff_report.stack_status_line(d))
    print(f"report: {args.out / 'report.md'} ({len(result.report):,} characters) in {result.seconds:.1f} s")
    return 1 if result.failed else 0
