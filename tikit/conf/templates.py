"""Shell programs as real files under tikit/conf/templates/, which shellcheck reads as they
are, rendered with the values a tier needs.

Two kinds of placeholder, both `@NAME@` (upper case, digits, underscores), which is an
ordinary word to the shell and to shellcheck:

* inside a line, ``@NAME@`` becomes the value;
* a line that holds nothing but ``@NAME@`` (indentation allowed) becomes the value as a
  block of lines, or disappears when the value is empty: that is how optional parts (the
  Sentinel functions where Sentinel runs) and shared function libraries are put in.

A placeholder left without a value, or a value given for none, is an error: a template and
its caller never drift apart silently.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Union

DIR = Path(__file__).resolve().parent / "templates"
_TOKEN = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_BLOCK = re.compile(r"^[ \t]*@([A-Z][A-Z0-9_]*)@[ \t]*$")

Value = Union[str, int]


@functools.lru_cache(maxsize=None)
def source(name: str) -> str:
    """A template's text, as shellcheck sees it."""
    return (DIR / name).read_text()


def placeholders(name: str) -> set[str]:
    return set(_TOKEN.findall(source(name)))


def render(name: str, **values: Value) -> str:
    """The template ``name`` (a path under templates/) with every placeholder filled in."""
    wanted = placeholders(name)
    unknown, missing = set(values) - wanted, wanted - set(values)
    if unknown or missing:
        raise KeyError(f"template {name}: unknown {sorted(unknown)}, missing {sorted(missing)}")
    out = []
    for line in source(name).split("\n"):
        block = _BLOCK.match(line)
        if block:
            text = str(values[block.group(1)])
            if text:
                out.append(text.rstrip("\n"))
            continue
        out.append(_TOKEN.sub(lambda m: str(values[m.group(1)]), line))
    return "\n".join(out)
