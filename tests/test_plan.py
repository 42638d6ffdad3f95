"""`run --plan`: what a profile will fetch and run, listed before anything downloads or any kernel starts."""

from __future__ import annotations

import pytest

from bertbusters_nb import __main__ as cli
from bertbusters_nb import plan
from bertbusters_nb.data.texts import HUB_DATASETS
from bertbusters_nb.evaluation.tasks import TASKS
from bertbusters_nb.model.loading import ALIASES
from bertbusters_nb.runner import declared_parameters, numbered_notebooks, profile_parameters


def _paper(book) -> dict:
    return {**declared_parameters(book), **profile_parameters(book, "paper")}


def test_every_parameter_that_names_a_model_is_known_to_the_plan():
    """A parameter whose value (default or any profile's) names an alias or a profile's hub model is a model
    parameter: a new one must join plan.MODEL_PARAMETERS, or the plan would miss its downloads."""
    for book in numbered_notebooks():
        values = {**declared_parameters(book)}
        for profile in ("smoke", "offline", "paper"):
            for name, value in profile_parameters(book, profile).items():
                values.setdefault(name, value)
                values[f"{profile}:{name}"] = value
        for key, value in values.items():
            name = key.split(":")[-1]
            items = value if isinstance(value, list) else [value]
            if any(isinstance(v, str) and v in ALIASES for v in items):
                assert name in plan.MODEL_PARAMETERS, f"{book.stem}.{name} names models; add it to MODEL_PARAMETERS"


def test_the_paper_plan_lists_each_notebooks_hub_models_datasets_and_fine_tunes():
    plans = {p.notebook: p for p in plan.series_plan("paper", overrides={"device": "cpu"})}
    for book in numbered_notebooks():
        params = _paper(book)
        p = plans[book.stem]
        named = [m for n in plan.MODEL_PARAMETERS for m in plan._names(params.get(n))]
        assert set(p.hub_models) | set(p.local_models) == set(named)
        assert all(m not in ALIASES for m in p.hub_models)
        assert p.device == "cpu" and not p.refused
        corpora = [c for n in plan.CORPUS_PARAMETERS for c in plan._names(params.get(n)) if c in HUB_DATASETS]
        assert {"/".join(HUB_DATASETS[c]) for c in corpora} <= set(p.datasets)
    glue = plans["04_glue_degradation"]
    tasks = _paper(numbered_notebooks(only=["04"])[0])["tasks"]
    assert {f"nyu-mll/glue/{t}" for t in tasks} <= set(glue.datasets)
    backbones = _paper(numbered_notebooks(only=["04"])[0])["backbones"]
    assert len(glue.fine_tunes) == len(backbones) * len(tasks)
    draws = _paper(numbered_notebooks(only=["04"])[0])["random_draws"]
    splits = sum(len(TASKS[t].eval_splits) for t in tasks)
    assert glue.conditions == len(backbones) * splits * (2 + draws)
    emergence = plans["01_emergence"]
    assert set(_paper(numbered_notebooks(only=["01"])[0])["checkpoints"]) <= set(emergence.hub_models)


def test_plan_cli_prints_without_running_and_refuses_cuda_on_a_machine_without_it(capsys, monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cli.main(["run", "--profile", "paper", "--plan"]) == 2
    out = capsys.readouterr().out
    assert "REFUSED" in out and "CUDA" in out and "--set device=cpu" in out
    assert "bert-base-uncased" in out and "nyu-mll/glue/mnli" in out
    assert not (tmp_path / "hf").exists(), "the plan downloaded or cached something"
    assert cli.main(["run", "--profile", "paper", "--plan", "--only", "04", "--set", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "REFUSED" not in out and "fine-tunes (16)" in out


@pytest.mark.parametrize("name", ["bert-base-uncased", "google/multiberts-seed_0-step_0k", "gpt2"])
def test_hub_names_are_told_from_aliases_and_paths(name):
    assert plan.is_hub_name(name)
    for other in ("minilm", "bbmini", "smollm2", "./folder", "/abs/folder", "a/b/c", "tiny-random-gpt2"):
        assert not plan.is_hub_name(other)
