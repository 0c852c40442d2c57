"""Hostile project and stack files: the preview reads Pulumi.yaml and Pulumi.<stack>.yaml
with bounds (file size, scalar length, nesting, aliases, expanded size) checked on the
event stream before anything is built, and refuses what the files must never hold
(duplicate keys, non-finite numbers, control characters, keys that are not text, tags
beyond YAML's plain types) with exit 2 and one line, in bounded time and memory.

Every hostile case is also run through ``cli.preview``: exit 2, one line on stderr,
nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from conftest import REPO
from preview import cli, engine, stackfile

PROJECT = "name: p\nruntime: python\n"


def project(tmp_path: Path, stack_yaml: str | bytes, project_yaml: str = PROJECT, stack: str = "dev") -> Path:
    repo = tmp_path / "proj"
    repo.mkdir(exist_ok=True)
    (repo / "Pulumi.yaml").write_text(project_yaml)
    path = repo / f"Pulumi.{stack}.yaml"
    if isinstance(stack_yaml, bytes):
        path.write_bytes(stack_yaml)
    else:
        path.write_text(stack_yaml)
    return repo


def config_error(repo: Path, stack: str = "dev") -> str:
    with pytest.raises(engine.StackConfigError) as err:
        engine.load_stack_config(stack, repo)
    text = str(err.value)
    assert "\n" not in text and "\r" not in text and text.isprintable(), text
    return text


def preview_refuses(tmp_path: Path, repo: Path, capsys, stack: str = "dev") -> str:
    """cli.preview of a hostile file: exit 2, one `config error:` line, nothing written."""
    out = tmp_path / "out"
    assert cli.preview(stack, out_root=out, repo=repo, program=lambda: None) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: "), captured.err
    assert captured.out == "" and not out.exists()
    return lines[0]


def billion_laughs(levels: int = 9) -> str:
    lines = ['lol0: &l0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "config:\n" + textwrap.indent("\n".join(lines), "  ") + "\n"


# --------------------------------------------------------------------------------------
# Duplicate keys, at any depth
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stack_yaml, where, key",
    [
        ("config:\n  p:a: 1\nconfig:\n  p:a: 2\n", "Pulumi.dev.yaml", "config"),
        ("config:\n  p:a: 1\n  p:a: 2\n", "Pulumi.dev.yaml#/config", "p:a"),
        ("config:\n  p:a:\n    b:\n      c: 1\n      c: 2\n", "Pulumi.dev.yaml#/config/p:a/b", "c"),
        ("config:\n  p:a:\n    - {x: 1, x: 2}\n", "Pulumi.dev.yaml#/config/p:a/0", "x"),
        ("config:\n  p:backend: {}\n  backend: {}\n", "Pulumi.dev.yaml#/config", "backend"),  # bare keys are the project's
        ("config:\n  'p:a': 1\n  \"p:a\": 2\n", "Pulumi.dev.yaml#/config", "p:a"),
    ],
    ids=["top-level", "config", "nested", "in-a-list", "bare-and-namespaced", "differently-quoted"],
)
def test_duplicate_keys_are_refused(tmp_path, capsys, stack_yaml, where, key):
    repo = project(tmp_path, stack_yaml)
    text = config_error(repo)
    assert text.startswith(f"{where}: duplicate key '{key}'"), text
    assert preview_refuses(tmp_path, repo, capsys) == f"config error: {text}"


def test_duplicate_keys_in_the_project_file_are_refused(tmp_path):
    repo = project(tmp_path, "config: {}\n", PROJECT + "config:\n  size: 1\n  size: 2\n")
    assert config_error(repo).startswith("Pulumi.yaml#/config: duplicate key 'size'")
    repo = project(tmp_path, "config: {}\n", PROJECT + "config:\n  size: 1\n  p:size: 2\n")
    assert config_error(repo).startswith("Pulumi.yaml#/config: duplicate key 'p:size'")


def test_a_merge_key_may_be_overridden(tmp_path):
    repo = project(tmp_path, "base: &b {x: 1, y: 2}\nconfig:\n  p:a:\n    <<: *b\n    x: 3\n")
    assert engine.load_stack_config("dev", repo)[1] == {"p:a": '{"x": 3, "y": 2}'}


# --------------------------------------------------------------------------------------
# Non-finite numbers, anywhere
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [".nan", ".NaN", ".inf", "-.inf", "+.Inf", "!!float nan", "!!float inf", "1.0e+999", "-1.5e400"]
)
def test_non_finite_numbers_are_refused_anywhere(tmp_path, capsys, value):
    repo = project(tmp_path, f"config:\n  p:monitoring:\n    thresholds:\n      - 1.5\n      - {value}\n")
    text = config_error(repo)
    assert text.startswith("Pulumi.dev.yaml#/config/p:monitoring/thresholds/1: ") and "not a finite number" in text, text
    preview_refuses(tmp_path, repo, capsys)


def test_non_finite_numbers_in_the_project_file_are_refused(tmp_path):
    repo = project(tmp_path, "config: {}\n", PROJECT + "config:\n  ratio: .nan\n")
    assert config_error(repo).startswith("Pulumi.yaml#/config/ratio: ")


def test_nan_and_inf_as_text_stay_text():
    """`nan` is a string in YAML; the settings refuse it where a number or a PostgreSQL
    value is expected (tests/test_settings_hostile.py)."""
    assert stackfile.loads("a: nan\nb: inf\n", "f.yaml") == {"a": "nan", "b": "inf"}


# --------------------------------------------------------------------------------------
# Control characters, long values, keys that are not text
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stack_yaml, where",
    [
        ('config:\n  "backend\\nmaxReplicas": 3\n', "Pulumi.dev.yaml#/config"),
        ('config:\n  "p:a\\tb": 3\n', "Pulumi.dev.yaml#/config"),
        ('config:\n  p:a: "x\\0y"\n', "Pulumi.dev.yaml#/config/p:a"),
        ('config:\n  p:a: "x\\u2028y"\n', "Pulumi.dev.yaml#/config/p:a"),
        ('config:\n  p:a: "x\\u202Ey"\n', "Pulumi.dev.yaml#/config/p:a"),
        ('config:\n  p:a: "x\\ry"\n', "Pulumi.dev.yaml#/config/p:a"),
        ('config:\n  p:a: "\\e[31mred"\n', "Pulumi.dev.yaml#/config/p:a"),
        ('config:\n  p:a:\n    - "\\x85"\n', "Pulumi.dev.yaml#/config/p:a/0"),
    ],
    ids=["newline-in-key", "tab-in-key", "nul", "u2028", "bidi-override", "cr", "escape", "nel"],
)
def test_control_characters_are_refused(tmp_path, capsys, stack_yaml, where):
    repo = project(tmp_path, stack_yaml)
    text = config_error(repo)
    assert text.startswith(f"{where}: ") and "control character" in text, text
    preview_refuses(tmp_path, repo, capsys)


def test_newlines_and_tabs_in_values_are_text():
    """Block scalars (a certificate, a description) legitimately hold line breaks and tabs;
    each setting decides whether it takes more than one line (the settings take none)."""
    assert stackfile.loads("a: |\n  line one\n  \tline two\n", "f.yaml") == {"a": "line one\n\tline two\n"}


@pytest.mark.parametrize("stack_yaml", [b"config:\n  p:a: x\x00y\n", b'config:\n  p:a: "\\uD800"\n', b"config:\n  p:a: x\x1by\n"],
                         ids=["raw-nul", "lone-surrogate", "raw-escape"])
def test_what_yaml_itself_forbids_is_refused(tmp_path, capsys, stack_yaml):
    repo = project(tmp_path, stack_yaml)
    assert config_error(repo).startswith("Pulumi.dev.yaml: is not valid YAML at line 2")
    preview_refuses(tmp_path, repo, capsys)


def test_text_that_is_not_utf8_is_refused(tmp_path):
    repo = project(tmp_path, b"config:\n  p:a: \xff\xfe\n")
    assert config_error(repo) == "Pulumi.dev.yaml: is not UTF-8 text"


@pytest.mark.parametrize(
    "stack_yaml",
    ["config:\n  p:a: " + "x" * (stackfile.MAX_SCALAR_CHARS + 1) + "\n",
     "config:\n  p:" + "k" * (stackfile.MAX_KEY_CHARS + 1) + ": 1\n"],
    ids=["value", "key"],
)
def test_over_long_scalars_are_refused(tmp_path, capsys, stack_yaml):
    repo = project(tmp_path, stack_yaml)
    text = config_error(repo)
    assert "characters; at most" in text, text
    preview_refuses(tmp_path, repo, capsys)


@pytest.mark.parametrize("key, shown", [("on", "true"), ("1", "1"), ("null", "null"), ("1.5", "1.5"), ("[a]", "a sequence")])
def test_keys_must_be_text(tmp_path, key, shown):
    repo = project(tmp_path, f"config:\n  p:a:\n    {'? ' if key.startswith('[') else ''}{key}: x\n")
    text = config_error(repo)
    assert text.startswith("Pulumi.dev.yaml#/config/p:a: ") and "key" in text and "quote" in text, text


@pytest.mark.parametrize(
    "value",
    ["!!binary aGVsbG8=", "!!python/object/apply:os.system ['true']", "!!set {a, b}", "!!omap [a: 1]", "!!timestamp 2024-01-01", "!custom x"],
)
def test_tags_beyond_plain_types_are_refused(tmp_path, capsys, value):
    repo = project(tmp_path, f"config:\n  p:a: {value}\n")
    text = config_error(repo)
    assert text.startswith("Pulumi.dev.yaml"), text
    preview_refuses(tmp_path, repo, capsys)


def test_dates_stay_text_as_the_cli_reads_them(tmp_path):
    """The CLI's YAML library hands a date-like scalar to the program as text; a date object
    used to end the preview with a traceback (JSON cannot encode it)."""
    repo = project(tmp_path, "config:\n  p:since: 2024-01-01\n  p:at: {t: 2024-01-01T10:00:00Z}\n")
    assert engine.load_stack_config("dev", repo)[1] == {"p:since": "2024-01-01", "p:at": '{"t": "2024-01-01T10:00:00Z"}'}


def test_more_than_one_document_is_refused(tmp_path):
    repo = project(tmp_path, "config: {}\n---\nconfig: {}\n")
    assert config_error(repo).startswith("Pulumi.dev.yaml: ")


# --------------------------------------------------------------------------------------
# Size, nesting and aliases: bounded before anything is built
# --------------------------------------------------------------------------------------


def test_the_file_size_is_bounded_before_reading_it_all(tmp_path, capsys):
    repo = project(tmp_path, "config:\n  p:a: |\n" + ("    " + "x" * 1000 + "\n") * 10_000)  # 10 MB
    tracemalloc.start()
    start = time.process_time()
    text = config_error(repo)
    elapsed = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert text == f"Pulumi.dev.yaml: is larger than {stackfile.MAX_FILE_BYTES // 1024} KiB"
    assert elapsed < 0.5 and peak < 2 * stackfile.MAX_FILE_BYTES, (elapsed, peak)
    preview_refuses(tmp_path, repo, capsys)


@pytest.mark.parametrize("opening", ["[", "{a: ", "- "], ids=["flow-sequences", "flow-maps", "block-sequences"])
def test_deep_nesting_is_refused_without_recursion(tmp_path, capsys, opening):
    depth = 50_000 if opening != "- " else 300
    if opening == "- ":
        body = "".join("  " * i + "-\n" for i in range(depth))
    else:
        body = opening * depth
    repo = project(tmp_path, "config:\n  p:a: " + body + "\n" if opening != "- " else "config:\n  p:a:\n" + textwrap.indent(body, "    "))
    start = time.process_time()
    text = config_error(repo)
    assert time.process_time() - start < 1.0
    assert f"nested deeper than {stackfile.MAX_DEPTH}" in text, text
    preview_refuses(tmp_path, repo, capsys)


def test_billion_laughs_is_refused_in_bounded_time_and_memory(tmp_path, capsys):
    repo = project(tmp_path, billion_laughs())
    tracemalloc.start()
    start = time.process_time()
    text = config_error(repo)
    elapsed = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert text.startswith("Pulumi.dev.yaml: ") and "aliases" in text, text
    assert elapsed < 1.0 and peak < 1024 * 1024, (elapsed, peak)
    preview_refuses(tmp_path, repo, capsys)


def test_billion_laughs_in_a_process_of_its_own(tmp_path):
    """The whole command, as CI runs it: exit 2 within a second of CPU, under an address
    space limit of 512 MiB, with a peak resident size (the interpreter and the preview's
    imports included) under 100 MiB; one such file used to take 5.9 GB."""
    repo = project(tmp_path, billion_laughs())
    code = textwrap.dedent(
        f"""
        import resource, sys, time
        from pathlib import Path
        resource.setrlimit(resource.RLIMIT_AS, (512 * 1024 * 1024, 512 * 1024 * 1024))
        from preview import cli
        start = time.process_time()
        rc = cli.preview("dev", out_root=Path({str(tmp_path / 'out')!r}), repo=Path({str(repo)!r}))
        # Peak resident size of this process image: VmHWM (ru_maxrss would carry over the
        # parent's peak across fork and exec).
        status = Path("/proc/self/status").read_text()
        peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
        print(time.process_time() - start, peak)
        sys.exit(rc)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "aliases" in result.stderr
    cpu, maxrss_kib = result.stdout.split()
    assert float(cpu) < 1.0 and int(maxrss_kib) < 100 * 1024, result.stdout
    assert not (tmp_path / "out").exists()


def test_few_aliases_that_expand_beyond_the_bound_are_refused(tmp_path):
    """Sixteen aliases at most, and each one counted at its expanded size: eight
    nested levels of two aliases each expand 256-fold."""
    lines = ["a0: &a0 [" + ", ".join(['"' + "x" * 100 + '"'] * 100) + "]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]")
    repo = project(tmp_path, "\n".join(lines) + "\nconfig: {}\n")
    text = config_error(repo)
    assert text.startswith("Pulumi.dev.yaml: ") and "expands to more than" in text, text


@pytest.mark.parametrize(
    "stack_yaml, what",
    [("config:\n  p:a: &x [*x]\n", "refers to itself"), ("config:\n  p:a: *nowhere\n", "undefined alias")],
)
def test_recursive_and_undefined_aliases_are_refused(tmp_path, stack_yaml, what):
    assert what in config_error(project(tmp_path, stack_yaml))


def test_a_few_aliases_are_fine(tmp_path):
    repo = project(tmp_path, "base: &r {role: backup}\nconfig:\n  p:regions:\n    - {<<: *r, name: a}\n    - {<<: *r, name: b}\n")
    assert engine.load_stack_config("dev", repo)[1] == {
        "p:regions": '[{"name": "a", "role": "backup"}, {"name": "b", "role": "backup"}]'
    }


# --------------------------------------------------------------------------------------
# --stack takes stack names only
# --------------------------------------------------------------------------------------

BAD_STACKS = ["../../etc", "prod/../x", "/etc/passwd", "..", ".", ".hidden", "prod\n", "a" * 101, "", "pro d", "prod\\x", "x:y", "prod\x00"]


@pytest.mark.parametrize("name", BAD_STACKS, ids=[repr(n)[:20] for n in BAD_STACKS])
def test_stack_names_follow_pulumis_rule(tmp_path, capsys, name):
    out = tmp_path / "build"
    assert cli.preview(name, out_root=out) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: --stack: "), captured.err
    assert lines[0].isprintable()
    assert not out.exists() and not (tmp_path / "etc").exists()
    with pytest.raises(engine.StackConfigError):
        engine.stack_file(name, REPO)


@pytest.mark.parametrize("name", ["dev", "prod", "feature-x_1.2", "A" * 100])
def test_good_stack_names_pass(name):
    assert engine.check_stack_name(name) is None


def test_a_path_like_stack_writes_nothing_anywhere(tmp_path):
    """`--stack ../../x` once wrote outside build/: now the command line is refused first."""
    out = tmp_path / "a" / "b" / "build"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("../../x", "prod/../x"):
        result = subprocess.run([sys.executable, "-m", "preview", "--stack", name, "--out", str(out)],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith("config error: --stack: ")
    assert list(tmp_path.rglob("*")) == []


def test_diff_takes_stack_names_only(tmp_path):
    from preview import revisions

    with pytest.raises(SystemExit) as exit_:
        revisions.main(["--stacks", "dev,../../etc", "--out", str(tmp_path / "d")])
    assert exit_.value.code == 2
    assert not (tmp_path / "d").exists()



def test_too_many_values_are_refused_without_any_alias(tmp_path):
    repo = project(tmp_path, "config:\n  p:a: [" + ",".join(["1"] * stackfile.MAX_NODES) + "]\n")
    start = time.process_time()
    assert "expands to more than 10,000 values" in config_error(repo)
    assert time.process_time() - start < 1.0
