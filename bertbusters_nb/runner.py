"""Batch reproduction: run every numbered notebook in order with papermill, per parameter profile.

Each notebook ``notebooks/NN_name.ipynb`` has a cell tagged ``parameters`` (literals only)
and a sibling ``NN_name.profiles.json`` mapping profile -> parameter overrides. A run of
profile P writes, per notebook, ``figures/P/NN_name/``: the executed notebook, its tables,
figures, ``config.json`` and ``findings.json``; then ``figures/P/SUMMARY.md`` collects the
verdicts. A failing notebook is reported by name, cell and error and the others go on; a
re-run skips notebooks that already finished with the same parameters unless ``redo``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import paths
from .atomic import atomic_write_json, atomic_write_text, read_json
from .schema import ParameterError, check_value, load_schema

log = logging.getLogger(__name__)

PROFILES = ("smoke", "offline", "paper")
KERNEL_NAME = "bertbusters_nb"
RESERVED = ("profile", "out_dir")


@dataclass
class NotebookResult:
    """Outcome of one notebook: status is 'ok', 'failed' or 'skipped' (already done)."""

    notebook: str
    status: str
    seconds: float = 0.0
    error: str = ""
    cell: int | None = None  # execution count (In [n]) of the failing cell in the executed notebook
    out_dir: str = ""
    findings: list = field(default_factory=list)


def numbered_notebooks(directory: Path | None = None, only: Iterable[str] | None = None) -> list[Path]:
    """``NN_*.ipynb`` in order (default folder: ``paths.notebooks_dir()``); ``only`` filters by number prefix or
    stem (e.g. ['00', '03_mlm'])."""
    directory = Path(directory) if directory is not None else paths.notebooks_dir()
    books = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = list(only)
        chosen = [p for p in books if any(p.stem == w or p.stem.split("_")[0] == w for w in wanted)]
        missing = [w for w in wanted if not any(p.stem == w or p.stem.split("_")[0] == w for p in books)]
        if missing:
            raise ValueError(f"No notebook matches {missing}; have {[p.stem for p in books]}.")
        return chosen
    return books


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """Name -> default value of the notebook's ``parameters`` cell (literals only)."""
    import ast

    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{notebook.name} must have exactly one cell tagged 'parameters' (has {len(cells)}).")
    values = {}
    for node in ast.parse(cells[0].source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ParameterError(f"{notebook.name}: the parameters cell may only assign literals to names.")
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def profile_parameters(notebook: Path, profile: str) -> dict[str, Any]:
    """The overrides of ``profile`` for ``notebook`` from its ``.profiles.json`` (empty if none)."""
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; pick one of {PROFILES}.")
    path = notebook.with_suffix(".profiles.json")
    if not path.exists():
        return {}
    return dict(read_json(path).get(profile, {}))


def _same_type(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)) and isinstance(value, (int, float)):
        return isinstance(default, float) or isinstance(value, int)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return True
    return isinstance(value, type(default))


def check_parameters(notebook: Path, values: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown names (with the closest declared name), values of the wrong type and values
    outside the range declared in the notebook's schema (``NN_name.schema.json``); the notebook's
    own defaults are checked too, so nothing out of range reaches a kernel."""
    declared = declared_parameters(notebook)
    schema = load_schema(notebook)
    undeclared = sorted(set(declared) - set(schema))
    if undeclared:
        raise ParameterError(
            f"{notebook.name}: parameter(s) {undeclared} have no range in "
            f"{notebook.with_suffix('.schema.json').name}; declare one for each."
        )
    for name, value in values.items():
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Declared: {sorted(declared)}."
            raise ParameterError(f"{notebook.name} has no parameter {name!r}.{hint}")
        if not _same_type(declared[name], value):
            raise ParameterError(
                f"{notebook.name}: parameter {name!r} must be {type(declared[name]).__name__} "
                f"(like its default {declared[name]!r}), got {type(value).__name__} {value!r}."
            )
    for name, value in {**declared, **values}.items():
        check_value(notebook.name, name, value, schema[name])
    return values


def _fingerprint(notebook: Path, params: dict) -> str:
    h = hashlib.sha256(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()


def run_notebook(
    notebook: Path,
    profile: str,
    overrides: dict | None = None,
    redo: bool = False,
    figures_dir: Path | None = None,
    kernel_name: str | None = KERNEL_NAME,
) -> NotebookResult:
    """Execute one notebook headless with papermill (in the project root, results under ``figures_dir``, default
    ``paths.figures_dir()``); never raises for a failing cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    figures_dir = Path(figures_dir) if figures_dir is not None else paths.figures_dir()
    out_dir = figures_dir / profile / notebook.stem
    params = {**profile_parameters(notebook, profile), **(overrides or {})}
    declared = declared_parameters(notebook)
    params = {k: v for k, v in params.items() if k in declared or k not in RESERVED}
    params.update({k: v for k, v in {"profile": profile, "out_dir": str(out_dir)}.items() if k in declared})
    check_parameters(notebook, params)
    done_marker = out_dir / ".done.json"
    stamp = _fingerprint(notebook, params)
    if not redo and done_marker.exists():
        try:
            if read_json(done_marker).get("fingerprint") == stamp:
                return NotebookResult(notebook.stem, "skipped", out_dir=str(out_dir), findings=_findings(out_dir))
        except ValueError:
            log.warning("ignoring corrupt %s; re-running %s", done_marker, notebook.name)
    done_marker.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(out_dir / notebook.name),
            parameters=params,
            kernel_name=kernel_name,
            progress_bar=False,
            cwd=str(paths.project_root()),
            log_output=False,
        )
    except PapermillExecutionError as exc:
        line, code = raising_line(exc.traceback, exc.source)
        where = f"line {line}: `{code[:100]}`" if line else f"`{code[:100]}`"
        return NotebookResult(
            notebook.stem,
            "failed",
            time.perf_counter() - start,
            f"{exc.ename}: {exc.evalue} (at {where})",
            exc.exec_count,
            str(out_dir),
        )
    except Exception as exc:  # noqa: BLE001 - kernel death, missing kernel: reported, not raised
        return NotebookResult(
            notebook.stem, "failed", time.perf_counter() - start, f"{type(exc).__name__}: {exc}", None, str(out_dir)
        )
    seconds = time.perf_counter() - start
    atomic_write_json(done_marker, {"fingerprint": stamp, "seconds": seconds, "parameters": params})
    return NotebookResult(notebook.stem, "ok", seconds, out_dir=str(out_dir), findings=_findings(out_dir))


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ARROW = re.compile(r"^-+> *(\d+) ?(.*)$")


def raising_line(traceback: Iterable[str] | None, source: str | None = None) -> tuple[int | None, str]:
    """(line number, code) of the line of the failing cell that raised, read from the kernel's
    traceback (the arrow under ``Cell In[n], line L``); the cell's first line when there is none."""
    text = _ANSI.sub("", "\n".join(traceback or []))
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Cell In["):
            for follow in lines[i + 1 :]:
                match = _ARROW.match(follow)
                if match:
                    return int(match.group(1)), match.group(2).strip()
                if follow.startswith("File ") or follow.startswith("Cell In["):
                    break
            break
    first = (source or "").strip().splitlines()[:1]
    return None, first[0] if first else ""


def _findings(out_dir: Path) -> list:
    path = Path(out_dir) / "findings.json"
    try:
        return read_json(path) if path.exists() else []
    except ValueError:
        return []


def run_series(
    profile: str,
    only: Iterable[str] | None = None,
    redo: bool = False,
    overrides: dict | None = None,
    figures_dir: Path | None = None,
    notebooks_dir: Path | None = None,
    kernel_name: str | None = KERNEL_NAME,
) -> list[NotebookResult]:
    """Run the numbered notebooks in order and write ``figures/<profile>/SUMMARY.md``.

    Example:
        >>> results = run_series("smoke")  # doctest: +SKIP
        >>> [r.status for r in results]  # doctest: +SKIP
        ['ok', 'ok']
    """
    from tqdm.auto import tqdm

    figures_dir = Path(figures_dir) if figures_dir is not None else paths.figures_dir()
    books = numbered_notebooks(notebooks_dir, only)
    for book in books:  # fail fast on bad parameters before hours of work
        check_parameters(
            book,
            {
                k: v
                for k, v in {**profile_parameters(book, profile), **(overrides or {})}.items()
                if k in declared_parameters(book) or k not in RESERVED
            },
        )
    results = []
    for book in tqdm(books, desc=f"notebooks ({profile})"):
        result = run_notebook(book, profile, overrides, redo, figures_dir, kernel_name)
        log.info("%s: %s %.0fs %s", book.stem, result.status, result.seconds, result.error)
        if result.status == "failed":
            log.error("notebook %s failed at cell %s: %s", book.stem, result.cell, result.error)
        results.append(result)
    write_summary(results, profile, figures_dir)
    return results


def write_summary(results: list[NotebookResult], profile: str, figures_dir: Path | None = None) -> Path:
    """A one-page markdown summary: per notebook, status, time and the verdict of each claim."""
    figures_dir = Path(figures_dir) if figures_dir is not None else paths.figures_dir()
    from .reporting.claims import summary_verdict

    lines = [
        f"# Summary of the `{profile}` run",
        "",
        "| notebook | status | seconds | note |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        note = f"cell {r.cell}: {r.error}" if r.status == "failed" else ""
        lines.append(f"| {r.notebook} | {r.status} | {r.seconds:.0f} | {note.replace('|', '/')[:300]} |")
    lines.append("")
    for r in results:
        if not r.findings:
            continue
        lines += [f"## {r.notebook}", ""]
        for f in r.findings:
            verdict = summary_verdict(f)  # held, did NOT hold, inconclusive, or beyond every random draw but small
            lines.append(f"- **{f['claim']}**: {verdict}. {f['evidence']}")
        lines.append("")
    path = Path(figures_dir) / profile / "SUMMARY.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_json(Path(figures_dir) / profile / "summary.json", [r.__dict__ for r in results])
    return path
