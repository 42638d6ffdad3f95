"""``figures/<profile>/SUMMARY.md`` and ``summary.json``: what is on disk, read from disk (app layer).

The summary is rebuilt from the run folders (``run_folders``) each time the runner writes it, never from the
notebooks one invocation happened to run: per notebook, the last good run (when it finished, how long it took,
its parameters, its findings) and, on a separate line, an attempt that failed, was interrupted or killed, or is
running, with its error and the folder that keeps it. So an ``--only`` run keeps the other notebooks' lines,
and a failed attempt never stands in place of the good run it did not replace.

Example:
    >>> write_summary("offline", Path("figures"))  # doctest: +SKIP
    PosixPath('figures/offline/SUMMARY.md')
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from .atomic import atomic_write_json, atomic_write_text, read_json
from .run_folders import ATTEMPT, ATTEMPTS, DONE, LOG, RunFolders, attempt_status, read_record


def _findings(folder: Path) -> list:
    path = folder / "findings.json"
    try:
        found = read_json(path) if path.is_file() else []
    except ValueError:
        return []
    return found if isinstance(found, list) else []


def _mtime(path: Path) -> str:
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def last_good(results: Path) -> dict | None:
    """The finished run in ``results`` (None when there is no such folder)."""
    if not results.is_dir():
        return None
    done = read_record(results / DONE)
    if not done or "unreadable" in done:
        why = done["unreadable"] if done else f"no {DONE}: not left by a finished run of this runner"
        return {"status": "unfinished", "out_dir": str(results), "note": why, "findings": _findings(results)}
    return {
        "status": "ok",
        "finished": done.get("finished") or _mtime(results / DONE),  # older markers: their write time
        "seconds": done.get("seconds"),
        "parameters": done.get("parameters", {}),
        "overrides": done.get("overrides", {}),
        "out_dir": str(results),
        "findings": _findings(results),
    }


def kept_attempt(attempt: Path) -> dict | None:
    """The attempt kept in ``attempt`` (None when there is none): status, when, error, failing cell, files."""
    record = read_record(attempt / ATTEMPT)
    if record is None:
        return None
    notebook = attempt / f"{attempt.name}.ipynb"
    return {
        "status": attempt_status(record),
        "started": record.get("started"),
        "finished": record.get("finished"),
        "seconds": record.get("seconds"),
        "error": record.get("error") or record.get("unreadable", ""),
        "cell": record.get("cell"),
        "pid": record.get("pid"),
        "overrides": record.get("overrides", {}),
        "folder": str(attempt),
        "executed_notebook": str(notebook) if notebook.is_file() else None,
        "log": str(attempt / LOG) if (attempt / LOG).is_file() else None,
    }


def summary_entries(profile: str, figures_dir: str | os.PathLike) -> list[dict]:
    """One entry per notebook with results or a kept attempt: ``{"notebook", "last_good", "attempt"}``."""
    base = Path(figures_dir) / profile
    stems = {p.name for p in base.glob("[0-9][0-9]_*") if p.is_dir()}
    stems |= {p.name for p in (base / ATTEMPTS).glob("[0-9][0-9]_*") if p.is_dir()}
    entries = []
    for stem in sorted(stems):
        folders = RunFolders.of(figures_dir, profile, stem)
        good, attempt = last_good(folders.results), kept_attempt(folders.attempt)
        if good or attempt:
            entries.append({"notebook": stem, "last_good": good, "attempt": attempt})
    return entries


def _cell(text: object) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _set_flags(overrides: dict) -> str:
    return " ".join(f"{k}={v!r}" for k, v in sorted(overrides.items()))


def _attempt_note(attempt: dict, base: Path) -> str:
    """Where the attempt is kept and with which ``--set`` values first (a long error is cut, never the folder)."""
    flags = _set_flags(attempt["overrides"])
    where = f"kept in `{Path(attempt['folder']).relative_to(base)}/`" + (f" (`--set {flags}`)" if flags else "")
    if attempt["status"] == "running":
        return f"{where}; running (pid {attempt['pid']}, started {attempt['started']})"
    if attempt["status"] == "interrupted":
        cause = attempt["error"] or f"its process (pid {attempt['pid']}) ended without a word: killed"
        return f"{where}; interrupted: {_cut(cause)}"
    cell = f"cell {attempt['cell']}: " if attempt.get("cell") is not None else ""
    return f"{where}; {cell}{_cut(attempt['error'])}"


def _cut(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_markdown(profile: str, entries: list[dict], base: Path) -> str:
    """The one-page summary: a table with a line per last good run and a separate line per kept attempt,
    then each notebook's findings with the run they come from."""
    from .reporting.claims import summary_verdict  # held, did NOT hold, inconclusive, or beyond ... but small

    lines = [
        f"# Summary of the `{profile}` results",
        "",
        f"What is on disk under `{base.name}/`: per notebook the last good run (its folder `NN_name/`) and, on a "
        "line of its own, an attempt that failed, was interrupted or is running (kept in `attempts/NN_name/` with "
        "its executed notebook and `run.log`; it never replaces the good run).",
        "",
        "| notebook | run | finished (UTC) | seconds | note |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in entries:
        good, attempt = entry["last_good"], entry["attempt"]
        if good and good["status"] == "ok":
            flags = _set_flags(good["overrides"])
            note = f"`{profile}` profile" + (f" with `--set {flags}`" if flags else "")
            seconds = f"{good['seconds']:.0f}" if isinstance(good["seconds"], (int, float)) else ""
            lines.append(f"| {entry['notebook']} | ok | {good['finished']} | {seconds} | {_cell(note)} |")
        elif good:
            lines.append(f"| {entry['notebook']} | unfinished | | | {_cell(good['note'])} |")
        else:
            lines.append(f"| {entry['notebook']} | no good run | | | |")
        if attempt:
            when = attempt["finished"] or attempt["started"] or ""
            seconds = f"{attempt['seconds']:.0f}" if isinstance(attempt["seconds"], (int, float)) else ""
            note = _attempt_note(attempt, base)
            lines.append(f"| {entry['notebook']} | {attempt['status']} attempt | {when} | {seconds} | {_cell(note)} |")
    lines.append("")
    for entry in entries:
        good = entry["last_good"]
        if not good or not good["findings"]:
            continue
        lines += [f"## {entry['notebook']}", ""]
        if good["status"] == "ok":
            lines += [
                f"From the run that finished {good['finished']} (parameters in `{entry['notebook']}/config.json`).",
                "",
            ]
        for f in good["findings"]:
            lines.append(f"- **{f.get('claim')}**: {summary_verdict(f)}. {f.get('evidence')}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_summary(profile: str, figures_dir: str | os.PathLike) -> Path:
    """Rewrite ``<figures_dir>/<profile>/SUMMARY.md`` and ``summary.json`` from the run folders on disk."""
    base = Path(figures_dir) / profile
    entries = summary_entries(profile, figures_dir)
    path = base / "SUMMARY.md"
    atomic_write_text(path, render_markdown(profile, entries, base))
    atomic_write_json(base / "summary.json", {"profile": profile, "notebooks": entries})
    return path
