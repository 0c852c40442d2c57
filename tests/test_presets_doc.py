"""docs/sizing.md shows the preset table of tikit/presets.py, generated, and stays equal to it."""

from __future__ import annotations

from preview import docs as presets_doc
from tikit import presets


def test_sizing_md_holds_exactly_the_generated_table():
    text = presets_doc.SIZING_MD.read_text()
    assert text.count(presets_doc.BEGIN) == 1 and text.count(presets_doc.END) == 1
    assert presets_doc.marked_section(text) == presets_doc.section(), (
        "docs/sizing.md is out of date: run .venv/bin/python -m preview.docs"
    )


def test_table_has_every_preset_and_environment():
    table = presets_doc.sizing_table_markdown()
    rows = table.splitlines()
    assert rows[0] == "| setting | dev | staging | prod |"
    for key, (dev, staging, prod) in presets.PRESETS.items():
        line = next(r for r in rows if r.startswith(f"| `{key}` |"))
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")][1:]
        spelled = [("true" if v else "false") if isinstance(v, bool) else str(v) for v in (dev, staging, prod)]
        assert cells == spelled
    assert len(rows) == 2 + 1 + len(presets.PRESETS)  # header, rule, regions, presets


def test_update_replaces_only_the_marked_section():
    stale = f"intro\n\n{presets_doc.BEGIN}\n| old |\n{presets_doc.END}\n\nprose after\n"
    updated = presets_doc.update(stale)
    assert updated.startswith("intro\n\n") and updated.endswith("\n\nprose after\n")
    assert presets_doc.marked_section(updated) == presets_doc.section()
