"""Build a notebook (outputs empty) from a py:percent source: `python tools/percent_to_ipynb.py src.py out.ipynb`.

Cells start with `# %%` (code), `# %% [markdown]` (markdown; lines start with `# `) or
`# %% tags=["parameters"]` (the papermill parameters cell). Used by developers to write
notebooks as reviewable text; only the .ipynb is committed.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=\[(?P<tags>[^\]]*)\])?\s*$")


def convert(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "bertbusters_nb", "display_name": "Python (bertbusters_nb)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    current = None
    for line in source.splitlines():
        m = HEADER.match(line)
        if m:
            current = {"md": bool(m.group("md")), "tags": [t.strip().strip("\"'") for t in (m.group("tags") or "").split(",") if t.strip()], "lines": []}
            nb.cells.append(current)
            continue
        if current is None:
            continue
        if current["md"]:
            line = line[2:] if line.startswith("# ") else line.lstrip("#")
        current["lines"].append(line)
    cells = []
    for index, c in enumerate(nb.cells):
        text = "\n".join(c["lines"]).strip("\n")
        cell = nbformat.v4.new_markdown_cell(text) if c["md"] else nbformat.v4.new_code_cell(text)
        if c["tags"]:
            cell.metadata["tags"] = c["tags"]
        cell["id"] = f"cell-{index:02d}"
        cells.append(cell)
    nb.cells = cells
    return nb


if __name__ == "__main__":
    src, out = map(Path, sys.argv[1:3])
    nb = convert(src.read_text())
    nbformat.validate(nb)
    nbformat.write(nb, out)
    print(f"wrote {out} ({len(nb.cells)} cells)")
