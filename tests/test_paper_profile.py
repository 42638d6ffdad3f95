"""Every notebook's paper profile, rehearsed end to end on a hub mirror (``tests/hub_mirror.py``), on the CPU.

Each notebook runs through the real command line (``python -m bertbusters_nb run --profile paper --only NN
--set device=cpu ...``) with ``HF_HOME`` at the mirror, ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1`` and
sockets blocked (``tests/network_guard``): hub names, GLUE configs and wikitext load by the calls a hub user's
run makes, from a cache laid out as ``huggingface_hub`` and ``datasets`` leave one. The paper profile's models,
tasks, corpora and series stay as they are; ``SHRINK`` only cuts counts (texts, draws, steps, rows) so each
notebook takes seconds of compute. A new notebook needs its line in ``SHRINK`` (the test says so), and any hub
model its paper profile names needs its line in ``hub_mirror.REPOS``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hub_mirror
import pandas as pd
import pytest

from bertbusters_nb.runner import numbered_notebooks, profile_parameters

REPO = Path(__file__).resolve().parent.parent
GUARD = Path(__file__).resolve().parent / "network_guard"

# notebook number -> --set values that shrink its paper profile (counts only; models, tasks, corpora unchanged)
SHRINK: dict[str, dict] = {
    "00": {"n_texts": 16, "random_draws": 3},
    "01": {"live_seconds": 2.0, "live_texts": 200, "live_hidden": 32, "live_layers": 2, "live_draws": 3},
    "02": {"n_texts": 8, "max_length": 32, "detection_texts": 4, "detection_dims": 8},
    "03": {"n_texts": 8, "batch_size": 8, "random_draws": 3, "scan_texts": 4, "snli_pairs": 8, "max_length": 64},
    "04": {
        "max_train_samples": 16,
        "max_eval_samples": 8,
        "max_steps": 1,
        "batch_size": 8,
        "max_length": 32,
        "random_draws": 3,
        "scan_samples": 4,
    },
    "05": {"n_texts": 4, "max_length": 32},
    "06": {"n_texts": 6, "activation_texts": 3, "random_draws": 3, "max_length": 32, "batch_size": 8},
    "07": {
        "n_texts": 6,
        "attention_texts": 3,
        "quant_texts": 3,
        "n_boot": 10,
        "random_draws": 3,
        "max_length": 32,
        "batch_size": 8,
    },
    "08": {"n_prompts": 2, "n_eval": 2, "max_length": 16, "batch_size": 4, "draws": 2, "sink_texts": 2},
}
# The paper's metric per GLUE task (Kovaleva et al. 2021, Table 2, as GLUE defines them).
PAPER_METRICS = {
    "cola": {"matthews_correlation"},
    "stsb": {"pearson", "spearmanr"},
    "mrpc": {"accuracy", "f1"},
    "qqp": {"accuracy", "f1"},
    "mnli": {"accuracy"},  # on validation_matched and validation_mismatched, checked apart below
}
BOOKS = numbered_notebooks()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, worker_id) -> Path:
    """One mirror for the whole run: pytest-xdist workers share it (built by the first under a file lock, ~25 s),
    as hub users' processes share one cache (datasets and huggingface_hub lock what they write there)."""
    if worker_id == "master":
        return hub_mirror.build(tmp_path_factory.mktemp("hub-mirror"))
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent / "hub-mirror"
    with FileLock(f"{root}.lock"):
        if not (root / ".built").exists():
            hub_mirror.build(root)
            (root / ".built").touch()
    return root


def _number(book: Path) -> str:
    return book.stem.split("_")[0]


def test_every_paper_hub_model_is_in_the_mirror():
    """The mirror holds every hub model a paper profile names (a new one is a line in hub_mirror.REPOS)."""
    from bertbusters_nb.plan import series_plan

    named = {m for p in series_plan("paper", overrides={"device": "cpu"}) for m in p.hub_models}
    assert named <= set(hub_mirror.hub_names()), sorted(named - set(hub_mirror.hub_names()))


def test_every_notebook_has_a_shrink_line():
    assert sorted(_number(b) for b in BOOKS) == sorted(SHRINK), "add the new notebook's counts to SHRINK"


def run_paper(book: Path, mirror: Path, figures: Path) -> subprocess.CompletedProcess:
    """The real command line, one notebook, the paper profile shrunk by SHRINK, on the mirror, offline."""
    log = figures / "network.log"
    env = {
        **os.environ,
        **hub_mirror.environment(mirror),
        "PYTHONPATH": f"{GUARD}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "BB_NETWORK_LOG": str(log),
        "BERTBUSTERS_PROJECT": str(REPO),
    }
    sets = [f"{k}={v!r}" for k, v in {"device": "cpu", **SHRINK[_number(book)]}.items()]
    command = [sys.executable, "-m", "bertbusters_nb", "run", "--profile", "paper", "--only", _number(book)]
    command += ["--redo", "--figures-dir", str(figures), "--set", *sets]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.stem)
def test_paper_profile_runs_on_the_hub_mirror(book, mirror, tmp_path):
    done = run_paper(book, mirror, tmp_path)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    out = tmp_path / "paper" / book.stem
    assert (out / f"{book.stem}.ipynb").exists() and list(out.glob("*.png")), sorted(p.name for p in out.iterdir())
    assert Path(str(tmp_path / "network.log") + ".loaded").exists(), "the network guard was not loaded"
    blocked = tmp_path / "network.log"
    assert not blocked.exists() or blocked.read_text() == "", blocked.read_text()
    findings = json.loads((out / "findings.json").read_text())
    assert findings, "no finding recorded"
    CHECKS.get(_number(book), lambda out, book: None)(out, book)


def _check_emergence(out: Path, book: Path) -> None:
    """Notebook 01 reads the MultiBERTs series as a trajectory: one row set per checkpoint, at its step."""
    steps = profile_parameters(book, "paper")["checkpoint_steps"]
    flags = pd.read_csv(out / "flags_over_steps.csv")
    assert sorted(flags.step.unique()) == sorted(steps)
    assert (out / "emergence_steps.csv").exists()


def _check_glue(out: Path, book: Path) -> None:
    """Notebook 04's table has the paper's metric for each GLUE task, MNLI's two dev sets apart."""
    tasks = profile_parameters(book, "paper")["tasks"]
    table = pd.read_csv(out / "ablations.csv")  # one row per condition, a column per metric of the task
    for task in tasks:
        rows = table[table.task == task]
        assert not rows.empty, f"no rows for {task}"
        metrics = {c for c in rows.columns if rows[c].notna().all()}
        wanted = PAPER_METRICS.get(task, {"accuracy"})
        assert wanted <= metrics, (task, sorted(metrics))
    mnli = table[table.task == "mnli"]
    assert {"validation_matched", "validation_mismatched"} <= set(mnli.split), sorted(set(mnli.split))


def _check_across(out: Path, book: Path) -> None:
    """Notebook 06 covers every model of its paper profile, BART's encoder and decoder as two rows."""
    models = profile_parameters(book, "paper")["models"]
    table = pd.read_csv(out / "across_models.csv")
    covered = {label.split(" (")[0] for label in table.model}
    assert set(models) <= covered, sorted(set(models) - covered)
    bart = table[table.model_type == "bart"]
    assert sorted(bart["stack"]) == ["decoder", "encoder"], bart[["model", "stack"]].to_dict("records")
    assert len(table) == len(models) + 1, table[["model", "stack"]].to_dict("records")


CHECKS = {"01": _check_emergence, "04": _check_glue, "06": _check_across}
