"""Where a notebook run spends its time: a per-cell profile read from papermill's executed notebooks.

papermill stamps every executed cell with ``metadata.papermill`` (start, end, duration). This script reads the
executed notebooks of one profile (``figures/<profile>/<notebook>/<notebook>.ipynb``), writes a tidy table (one
row a cell: notebook, cell index, seconds, share of the notebook, the cell's first code line) as CSV, and puts
a section into ``benchmarks/RESULTS.md`` with each notebook's total and its slowest cells. The run's own
start, end and the machine (CPU model, cores, load average now) are stated; nothing is assumed.

    python benchmarks/cell_profile.py --figures figures/offline --top 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_benchmark import machine, write_section  # noqa: E402


def first_code_line(source: str | list[str]) -> str:
    """The first line of a cell that is neither blank nor a comment (what the cell does, roughly)."""
    text = "".join(source) if isinstance(source, list) else source
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped[:90]
    return "(comments only)"


def cell_table(notebook: Path) -> pd.DataFrame:
    """One row per executed code cell of ``notebook`` with papermill's timing."""
    cells = json.loads(notebook.read_text())["cells"]
    rows = []
    for index, cell in enumerate(cells):
        timing = cell.get("metadata", {}).get("papermill", {})
        if cell.get("cell_type") != "code" or timing.get("duration") is None:
            continue
        rows.append(
            {
                "notebook": notebook.stem,
                "cell": index,
                "seconds": float(timing["duration"]),
                "start": timing.get("start_time"),
                "code": first_code_line(cell.get("source", "")),
            }
        )
    table = pd.DataFrame(rows, columns=["notebook", "cell", "seconds", "start", "code"])
    if len(table):
        table["share"] = table["seconds"] / table["seconds"].sum()
    return table


def profile(figures: Path) -> pd.DataFrame:
    """Every executed notebook under ``figures`` (one folder per notebook), failed attempts left out."""
    found = sorted(p for p in figures.glob("*/*.ipynb") if p.stem == p.parent.name)
    if not found:
        raise SystemExit(
            f"No executed notebooks under {figures}; run `python -m bertbusters_nb run --profile ...` first."
        )
    return pd.concat([cell_table(p) for p in found], ignore_index=True)


def report(table: pd.DataFrame, top: int, figures: Path) -> str:
    totals = table.groupby("notebook")["seconds"].agg(["sum", "count"]).rename(columns={"sum": "s", "count": "cells"})
    first, last = table["start"].dropna().min(), table["start"].dropna().max()
    lines = [
        f"Read from the executed notebooks under `{figures}` (papermill's per-cell durations; cells started between "
        f"{first} and {last}). Profiled on: {machine()}, {os.cpu_count()} CPUs (load average when this report was "
        "written, not during the run).",
        "",
        f"Cells in all: {len(table)}; their durations add up to {table['seconds'].sum():.0f} s (kernel start-up and "
        "the runner's own work between notebooks are not cells).",
        "",
        "| notebook | cells | seconds | slowest cells (seconds, first code line) |",
        "|---|---:|---:|---|",
    ]
    for name, row in totals.iterrows():
        slow = table[table.notebook == name].nlargest(top, "seconds")
        cells = "; ".join(f"{r.seconds:.0f} s `{r.code.replace('|', '/')}`" for r in slow.itertuples())
        lines.append(f"| {name} | {int(row.cells)} | {row.s:.0f} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", default="figures/offline", help="a profile's results folder")
    parser.add_argument("--top", type=int, default=4, help="slowest cells listed per notebook")
    parser.add_argument("--csv", default=None, help="write the tidy per-cell table here")
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent / "RESULTS.md"))
    parser.add_argument("--label", default=None, help="section name in RESULTS.md (default: from the folder)")
    args = parser.parse_args(argv)
    figures = Path(args.figures)
    table = profile(figures)
    if args.csv:
        table.to_csv(args.csv, index=False)
    text = report(table, args.top, figures)
    print(text)
    label = args.label or f"per-cell profile, {figures.name} profile"
    write_section(Path(args.results), label, f"## {label}\n\n{text}")
    return table


if __name__ == "__main__":
    main()
