"""The per-environment table of docs/sizing.md, generated from tikit/presets.py.

docs/sizing.md keeps the generated table between two marker comments; prose around it
is written by hand.  tests/test_presets_doc.py keeps the file equal to this output.
Regenerate after changing a preset:

    .venv/bin/python -m preview.docs        # rewrites the marked section in place
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tikit import presets

BEGIN = "<!-- presets:begin (generated from tikit/presets.py by `python -m preview.docs`; do not edit) -->"
END = "<!-- presets:end -->"
SIZING_MD = Path(__file__).resolve().parent.parent / "docs" / "sizing.md"


def _cell(value: Any) -> str:
    """A preset value as a stack file spells it (YAML booleans are lowercase)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _regions(environment: str) -> str:
    return ", ".join(f"{r['name']} ({r['role']})" for r in presets.REGION_PRESETS[environment])


def sizing_table_markdown() -> str:
    """One row per preset key (as written in a stack file), one column per environment."""
    envs = presets.ENVIRONMENTS
    lines = [
        "| setting | " + " | ".join(envs) + " |",
        "|---|" + "---|" * len(envs),
        "| regions | " + " | ".join(_regions(e) for e in envs) + " |",
    ]
    for key, row in presets.PRESETS.items():
        lines.append(f"| `{key}` | " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def section() -> str:
    return f"{BEGIN}\n{sizing_table_markdown()}{END}"


def marked_section(text: str) -> str:
    """The generated part of a document, markers included ('' when the markers are missing)."""
    # Any begin marker counts (its wording may change), up to the end marker.
    start, end = text.find(BEGIN.split(" (", 1)[0]), text.find(END)
    if start < 0 or end < start:
        return ""
    return text[start : end + len(END)]


def update(text: str) -> str:
    """``text`` with its marked section replaced by the current table."""
    current = marked_section(text)
    if not current:
        raise ValueError(f"no '{BEGIN}' ... '{END}' section")
    return text.replace(current, section(), 1)


def main() -> int:
    SIZING_MD.write_text(update(SIZING_MD.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
