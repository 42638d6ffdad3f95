"""What a profile's run will fetch and run, before anything downloads: ``run --profile paper --plan`` (app layer).

Computed from each notebook's parameters (its defaults, the profile, ``--set``) and the package's own tables:
which parameters name models (``MODEL_PARAMETERS``), corpora (``CORPUS_PARAMETERS``) and tasks
(``TASK_PARAMETERS``); the offline aliases (``model.loading.ALIASES``); the hub datasets behind a corpus name
(``data.texts.HUB_DATASETS``); the GLUE tasks and their eval splits (``evaluation.tasks.TASKS``).
``tests/test_plan.py`` checks that every notebook parameter holding a model name is in ``MODEL_PARAMETERS``, so
a new model parameter cannot slip past the plan.

Per notebook the plan lists: the hub models it loads (fetched on first use) and the local ones, the hub
dataset configs, the fine-tunes (backbone x task), the number of evaluation conditions of its versus-random
comparison (intact + the rule's dims + ``random_draws`` random draws, per model, task and eval split), and the
device; a device this machine lacks is named as the reason the run would be refused (``runner.check_device``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .data.texts import HUB_DATASETS
from .evaluation.tasks import TASKS
from .model.loading import ALIASES
from .runner import ParameterError, check_device, declared_parameters, numbered_notebooks, profile_parameters

# Parameters whose value is a model name or a list of them; a corpus name or list; a task name or list.
MODEL_PARAMETERS = (
    "model_name",
    "models",
    "checkpoints",
    "compare_models",
    "detection_models",
    "seed_runs",
    "backbones",
    "no_head_model",
)
CORPUS_PARAMETERS = ("corpus", "count_corpora")
TASK_PARAMETERS = ("tasks", "scan_tasks")
DRAW_PARAMETERS = ("random_draws", "live_draws", "draws")


@dataclass
class NotebookPlan:
    """One notebook's share of a run, as listed by ``--plan``."""

    notebook: str
    device: str
    hub_models: list[str] = field(default_factory=list)
    local_models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    fine_tunes: list[str] = field(default_factory=list)
    conditions: int = 0
    refused: str = ""


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def is_hub_name(name: str) -> bool:
    """True for a name that loads from the Hugging Face hub: not an alias, not an existing folder or file, not a
    path (``./x``, ``/x``, ``a/b/c``), not a built-in tiny random model (``tiny-random-*``)."""
    if name in ALIASES or name.startswith("tiny-random-") or not name:
        return False
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists():
        return False
    return not name.endswith(".gguf")


def notebook_plan(book: Path, profile: str, overrides: dict | None = None) -> NotebookPlan:
    """The plan of one notebook under ``profile`` with ``overrides`` (only the names it declares)."""
    declared = declared_parameters(book)
    given = {**profile_parameters(book, profile), **{k: v for k, v in (overrides or {}).items() if k in declared}}
    params = {**declared, **given}
    plan = NotebookPlan(book.stem, str(params.get("device", "auto")))
    models: list[str] = []
    for name in MODEL_PARAMETERS:
        models += [m for m in _names(params.get(name)) if m not in models]
    plan.hub_models = [m for m in models if is_hub_name(m)]
    plan.local_models = [m for m in models if not is_hub_name(m)]
    for name in CORPUS_PARAMETERS:
        for corpus in _names(params.get(name)):
            if corpus in HUB_DATASETS:
                entry = "/".join(HUB_DATASETS[corpus])
                if entry not in plan.datasets:
                    plan.datasets.append(entry)
    tasks: list[str] = []
    for name in TASK_PARAMETERS:
        tasks += [t for t in _names(params.get(name)) if t not in tasks]
    glue = str(params.get("glue_source", "nyu-mll/glue"))
    plan.datasets += [f"{glue}/{t}" for t in tasks if t in TASKS and TASKS[t].source == "glue"]
    backbones = _names(params.get("backbones"))
    trained = _names(params.get("tasks"))
    plan.fine_tunes = [f"{b} on {t}" for b in backbones for t in trained]
    draws = next((int(params[n]) for n in DRAW_PARAMETERS if params.get(n)), 0)
    per_unit = 2 + draws if draws else 0
    if plan.fine_tunes:
        units = sum(len(TASKS[t].eval_splits) for t in trained if t in TASKS) * len(backbones)
    else:
        units = len(_names(params.get("models")) or _names(params.get("model_name")))
    plan.conditions = per_unit * units
    try:
        check_device(book.name, params.get("device"), "--set" if "device" in (overrides or {}) else profile)
    except ParameterError as exc:
        plan.refused = str(exc).split(": ", 1)[-1]  # the same reason for every notebook: listed once
    return plan


def series_plan(
    profile: str, only: Iterable[str] | None = None, overrides: dict | None = None, notebooks_dir: Path | None = None
) -> list[NotebookPlan]:
    """The plan of every notebook a ``run`` with these arguments would run."""
    return [notebook_plan(book, profile, overrides) for book in numbered_notebooks(notebooks_dir, only)]


def format_plan(plans: list[NotebookPlan], profile: str) -> str:
    """The plan as text: one block per notebook, then the totals and any refusal."""
    lines = [f"plan of the `{profile}` run (nothing downloaded yet; hub models load on first use into $HF_HOME)"]
    for p in plans:
        lines.append(f"\n{p.notebook}  device={p.device}")
        if p.hub_models:
            lines.append(f"  hub models ({len(p.hub_models)}): {', '.join(p.hub_models)}")
        if p.local_models:
            lines.append(f"  local/packaged models: {', '.join(p.local_models)}")
        if p.datasets:
            lines.append(f"  hub datasets ({len(p.datasets)}): {', '.join(p.datasets)}")
        if p.fine_tunes:
            lines.append(f"  fine-tunes ({len(p.fine_tunes)}): {', '.join(p.fine_tunes)}")
        if p.conditions:
            lines.append(f"  versus-random evaluation conditions: {p.conditions}")
        if p.refused:
            lines.append("  REFUSED: the device (see below)")
    hub = sorted({m for p in plans for m in p.hub_models})
    data = sorted({d for p in plans for d in p.datasets})
    tunes = sum(len(p.fine_tunes) for p in plans)
    lines.append(
        f"\ntotal: {len(hub)} hub models, {len(data)} hub dataset configs, {tunes} fine-tunes, "
        f"{sum(p.conditions for p in plans)} versus-random evaluation conditions"
    )
    refusals = sorted({p.refused for p in plans if p.refused})
    if refusals:
        lines.append("this run would be refused before any kernel starts:")
        lines += [f"  {r}" for r in refusals]
    return "\n".join(lines)


def hub_cache_dir() -> str:
    """Where hub downloads go (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))
