"""Batch reproduction: run every numbered notebook in order with papermill, per parameter profile.

Each notebook ``notebooks/NN_name.ipynb`` has a cell tagged ``parameters`` (literals only)
and a sibling ``NN_name.profiles.json`` mapping profile -> parameter overrides. A run of
profile P first plans every notebook it was asked for (parameters in their declared ranges, a device
this machine has, no ``--set`` of the runner's own ``out_dir``/``profile``): a refused run stops there and
writes nothing. Then each notebook runs into ``figures/P/attempts/NN_name/`` and, when it finishes,
replaces ``figures/P/NN_name/`` (executed notebook, tables, figures, ``config.json``, ``findings.json``,
``run.log``) in one step; a failed or killed one leaves the last good results as they were and keeps its
attempt folder (see ``run_folders``). ``figures/P/SUMMARY.md`` is rebuilt from disk (``run_summary``). A
failing notebook is reported by name, cell and error and the others go on; a re-run skips notebooks that
already finished with the same parameters unless ``redo``, and resumes a kept attempt of the same parameters.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import paths
from .atomic import read_json
from .run_folders import (
    DONE,
    LOG,
    RunFolders,
    check_not_running,
    close_attempt,
    open_attempt,
    publish,
    read_record,
)
from .run_summary import write_summary
from .schema import ParameterError, check_value, load_schema

log = logging.getLogger(__name__)

PROFILES = ("smoke", "offline", "paper")
KERNEL_NAME = "bertbusters_nb"
RESERVED = ("profile", "out_dir")
DEVICES = "'auto' (a CUDA GPU when one is visible, else the CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'"
HINTS = {"device": f"Use {DEVICES}."}  # appended to a refusal of that parameter


@dataclass
class NotebookResult:
    """Outcome of one notebook: status is 'ok', 'failed' or 'skipped' (already done).

    out_dir: the results folder (the last good run). attempt_dir: where a failed run's executed notebook and
    ``run.log`` are kept (empty when the run succeeded or was skipped)."""

    notebook: str
    status: str
    seconds: float = 0.0
    error: str = ""
    cell: int | None = None  # execution count (In [n]) of the failing cell in the executed notebook
    out_dir: str = ""
    findings: list = field(default_factory=list)
    attempt_dir: str = ""


@dataclass(frozen=True)
class RunPlan:
    """One notebook's run, decided (and checked) before any kernel starts."""

    notebook: Path
    profile: str
    parameters: dict  # what the notebook runs with; ``out_dir`` names the results folder
    overrides: dict  # the ``--set`` values among them
    fingerprint: str  # notebook bytes + parameters: a finished run with the same one is skipped
    folders: RunFolders

    def kernel_parameters(self) -> dict:
        """The parameters papermill injects: ``out_dir`` is the attempt folder, so the run writes only there."""
        if "out_dir" not in self.parameters:
            return dict(self.parameters)
        return {**self.parameters, "out_dir": str(self.folders.attempt)}


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
        try:
            check_value(notebook.name, name, value, schema[name])
        except ParameterError as exc:
            if name in HINTS:
                raise ParameterError(f"{exc} {HINTS[name]}") from None
            raise
    return values


def check_device(notebook_name: str, value: Any, source: str) -> None:
    """Refuse a device this machine does not have, before any kernel starts (a kernel would only fail at its
    first model load, after minutes of setup): ``cuda`` without a visible CUDA GPU, ``cuda:N`` past the last
    GPU, ``mps`` without Apple's Metal backend. ``source`` says where the value came from."""
    if value in (None, "auto", "cpu"):
        return
    import torch

    kind, _, index = str(value).partition(":")
    fix = "Run with --set device=cpu, or device=auto (a GPU when there is one, else the CPU)."
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(
                f"{notebook_name}: device={value!r} ({source}) needs a CUDA GPU, and none is visible on this "
                f"machine (torch.cuda.is_available() is False). {fix}"
            )
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise ParameterError(
                f"{notebook_name}: device={value!r} ({source}), but this machine has {count} CUDA GPU(s), "
                f"cuda:0 to cuda:{count - 1}. {fix}"
            )
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ParameterError(
            f"{notebook_name}: device={value!r} ({source}) needs Apple's Metal backend, which this machine "
            f"does not have. {fix}"
        )


def _check_reserved(notebook: Path, overrides: dict, profile_values: dict, figures_dir: Path, profile: str) -> None:
    """``out_dir`` and ``profile`` belong to the runner: a ``--set`` of either is refused, naming the way that works."""
    for name, source in [(n, "--set") for n in overrides] + [
        (n, f"{notebook.stem}.profiles.json") for n in profile_values
    ]:
        if name == "out_dir":
            raise ParameterError(
                f"{source} out_dir=... is not honoured: the runner puts each notebook's results in "
                f"<figures>/<profile>/<notebook>/ (here {figures_dir / profile / notebook.stem}/). To write them "
                "elsewhere, pass --figures-dir DIR (results go to DIR/<profile>/<notebook>/)."
            )
        if name == "profile":
            raise ParameterError(f"{source} profile=... is not honoured: choose the profile with --profile {PROFILES}.")


def _fingerprint(notebook: Path, params: dict) -> str:
    h = hashlib.sha256(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()


def plan_notebook(
    notebook: Path, profile: str, overrides: dict | None = None, figures_dir: Path | None = None
) -> RunPlan:
    """Decide one notebook's run and check it, writing nothing: raises ``ParameterError`` for a parameter that is
    unknown, of the wrong type, out of its range or a device this machine lacks, or a ``--set`` of ``out_dir``
    or ``profile``; ``RunRefusedError`` when another live process is running it into the same folder."""
    figures_dir = Path(figures_dir) if figures_dir is not None else paths.figures_dir()
    overrides = dict(overrides or {})
    profile_values = profile_parameters(notebook, profile)
    _check_reserved(notebook, overrides, profile_values, figures_dir, profile)
    folders = RunFolders.of(figures_dir, profile, notebook.stem)
    declared = declared_parameters(notebook)
    params = {**profile_values, **overrides}
    params.update({k: v for k, v in {"profile": profile, "out_dir": str(folders.results)}.items() if k in declared})
    check_parameters(notebook, params)
    if "device" in declared:
        source = (
            "from --set"
            if "device" in overrides
            else f"from the {profile} profile in {notebook.stem}.profiles.json"
            if "device" in profile_values
            else "the notebook's default"
        )
        check_device(notebook.name, params.get("device", declared["device"]), source)
    check_not_running(folders)
    return RunPlan(notebook, profile, params, overrides, _fingerprint(notebook, params), folders)


def _finished(plan: RunPlan) -> bool:
    done = read_record(plan.folders.results / DONE)
    if done and "unreadable" in done:
        log.warning("ignoring corrupt %s; re-running %s", plan.folders.results / DONE, plan.notebook.name)
    return done is not None and bool(done) and done.get("fingerprint") == plan.fingerprint


def execute(plan: RunPlan, redo: bool = False, kernel_name: str | None = KERNEL_NAME) -> NotebookResult:
    """Run a planned notebook into its attempt folder and publish it when it finishes; never raises for a
    failing cell (a KeyboardInterrupt marks the attempt interrupted and is raised on). The profile's summary
    is rewritten when the attempt starts and when it ends."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    folders, stem = plan.folders, plan.notebook.stem
    figures_dir = folders.results.parent.parent
    cwd = str(paths.project_root())  # no checkout: an error before anything is written
    if not redo and _finished(plan):
        return NotebookResult(stem, "skipped", out_dir=str(folders.results), findings=_findings(folders.results))
    open_attempt(
        folders,
        {
            "notebook": stem,
            "profile": plan.profile,
            "fingerprint": plan.fingerprint,
            "parameters": plan.parameters,
            "overrides": plan.overrides,
        },
    )
    write_summary(plan.profile, figures_dir)
    start = time.perf_counter()
    failure: dict | None = None
    try:
        with open(folders.attempt / LOG, "a") as log_file:
            papermill.execute_notebook(
                str(plan.notebook),
                str(folders.attempt / plan.notebook.name),
                parameters=plan.kernel_parameters(),
                kernel_name=kernel_name,
                progress_bar=False,
                cwd=cwd,
                log_output=False,
                stdout_file=log_file,
                stderr_file=log_file,
            )
    except PapermillExecutionError as exc:
        line, code = raising_line(exc.traceback, exc.source)
        where = f"line {line}: `{code[:100]}`" if line else f"`{code[:100]}`"
        failure = {"error": f"{exc.ename}: {exc.evalue} (at {where})", "cell": exc.exec_count}
    except KeyboardInterrupt:
        close_attempt(folders, "interrupted", error="KeyboardInterrupt", seconds=time.perf_counter() - start)
        write_summary(plan.profile, figures_dir)
        raise
    except Exception as exc:  # noqa: BLE001 - kernel death, missing kernel: reported, not raised
        failure = {"error": f"{type(exc).__name__}: {exc}", "cell": None}
    seconds = time.perf_counter() - start
    if failure is not None:
        close_attempt(folders, "failed", seconds=seconds, **failure)
        write_summary(plan.profile, figures_dir)
        return NotebookResult(
            stem,
            "failed",
            seconds,
            failure["error"],
            failure["cell"],
            str(folders.results),
            attempt_dir=str(folders.attempt),
        )
    done = {
        "fingerprint": plan.fingerprint,
        "seconds": seconds,
        "parameters": plan.parameters,
        "overrides": plan.overrides,
        "profile": plan.profile,
        "notebook": stem,
    }
    publish(folders, done, plan.kernel_parameters().get("out_dir"))
    write_summary(plan.profile, figures_dir)
    return NotebookResult(stem, "ok", seconds, out_dir=str(folders.results), findings=_findings(folders.results))


def run_notebook(
    notebook: Path,
    profile: str,
    overrides: dict | None = None,
    redo: bool = False,
    figures_dir: Path | None = None,
    kernel_name: str | None = KERNEL_NAME,
) -> NotebookResult:
    """Check and execute one notebook headless with papermill (in the project root, results under
    ``figures_dir``, default ``paths.figures_dir()``); raises only for a refused run, never for a failing cell."""
    return execute(plan_notebook(notebook, profile, overrides, figures_dir), redo, kernel_name)


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
    jobs: int = 1,
) -> list[NotebookResult]:
    """Plan every notebook (a refusal raises before anything is written), run them, and keep
    ``figures/<profile>/SUMMARY.md`` describing what is on disk.

    ``jobs``: how many notebooks run at once, each in its own kernel with ``cores // jobs`` threads (set through
    ``OMP_NUM_THREADS`` unless the caller set it). The notebooks are independent (each reads only the
    package's caches, which are written atomically), so the results are those of a one-at-a-time run up to the
    summation order of fewer threads; a
    kernel's start-up, tokenisation, tables and plots run on one core, so two at once use the second. The
    longest notebook starts first (by this machine's last finished run, else ``notebooks/run_seconds.json``);
    results come back in series order.

    Example:
        >>> results = run_series("smoke")  # doctest: +SKIP
        >>> [r.status for r in results]  # doctest: +SKIP
        ['ok', 'ok']
    """
    from tqdm.auto import tqdm

    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}: give a whole number of notebooks to run at once, 1 or more (e.g. --jobs 2).")
    figures_dir = Path(figures_dir) if figures_dir is not None else paths.figures_dir()
    books = numbered_notebooks(notebooks_dir, only)
    plans = [plan_notebook(book, profile, overrides, figures_dir) for book in books]  # refused: before hours of work
    results: dict[str, NotebookResult] = {}
    bar = tqdm(total=len(plans), desc=f"notebooks ({profile})")

    def run_one(plan: RunPlan) -> None:
        result = execute(plan, redo, kernel_name)
        _log_result(plan, result)
        results[plan.notebook.stem] = result
        bar.update(1)

    try:
        if jobs == 1:
            for plan in plans:
                run_one(plan)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with _threads_per_kernel(jobs), ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(run_one, plan) for plan in _longest_first(plans)]
                try:
                    for future in futures:
                        future.result()
                except BaseException:  # Ctrl-C or a runner error: start nothing more; running kernels end as they do
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return [results[p.notebook.stem] for p in plans if p.notebook.stem in results]


def _log_result(plan: RunPlan, result: NotebookResult) -> None:
    log.info("%s: %s %.0fs %s", plan.notebook.stem, result.status, result.seconds, result.error)
    if result.status == "failed":
        log.error(
            "notebook %s failed at cell %s: %s (kept in %s; last good results untouched in %s)",
            plan.notebook.stem,
            result.cell,
            result.error,
            result.attempt_dir,
            result.out_dir,
        )


ORDER_HINTS = "run_seconds.json"  # in the notebooks folder: {profile: {notebook stem: seconds}}, committed


def _longest_first(plans: list[RunPlan]) -> list[RunPlan]:
    """The plans ordered longest first, so that the last notebook to start is a short one: by this machine's last
    finished run of each, else by the seconds committed in ``notebooks/run_seconds.json`` (a measured main job: a
    fresh clone has no run of its own, and in series order its longest notebooks started last and ran alone), else
    first and in series order (never run, never measured)."""

    hints: dict[tuple[Path, str], dict[str, float]] = {}  # the committed file, read once per folder and profile

    def expected_seconds(plan: RunPlan) -> float:
        record = read_record(plan.folders.results / DONE) or {}
        seconds = record.get("seconds")
        if not isinstance(seconds, (int, float)):
            key = (plan.notebook.parent, plan.profile)
            if key not in hints:
                hints[key] = order_hints(*key)
            seconds = hints[key].get(plan.notebook.stem)
        return float(seconds) if isinstance(seconds, (int, float)) else float("inf")

    return sorted(plans, key=expected_seconds, reverse=True)


def order_hints(notebooks_dir: Path, profile: str) -> dict[str, float]:
    """Notebook stem -> seconds it took in the measured run committed for ``profile`` (empty when none is)."""
    path = Path(notebooks_dir) / ORDER_HINTS
    if not path.exists():
        return {}
    hints = read_json(path).get(profile, {})
    if not isinstance(hints, dict) or not all(isinstance(v, (int, float)) for v in hints.values()):
        raise ValueError(f"{path}: {profile!r} must map notebook stems to seconds (e.g. {{'04_glue': 910}}).")
    return {str(k): float(v) for k, v in hints.items()}


@contextlib.contextmanager
def _threads_per_kernel(jobs: int) -> Iterator[None]:
    """Kernels started inside take ``cores // jobs`` threads (``OMP_NUM_THREADS``) unless the caller chose."""
    chosen = os.environ.get("OMP_NUM_THREADS")
    if chosen is None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    try:
        yield
    finally:
        if chosen is None:
            os.environ.pop("OMP_NUM_THREADS", None)
