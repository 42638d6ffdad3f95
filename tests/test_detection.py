"""Detection: the criteria, the one rule, its agreement with the scan, effect selection on disjoint splits, the
``detect`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers as T

from bertbusters_nb.analysis import criteria
from bertbusters_nb.analysis import detection as D
from bertbusters_nb.analysis.activations import activation_profile
from bertbusters_nb.analysis.detection_report import detection_report
from bertbusters_nb.analysis.effect import effect_criterion, select_dims_by_effect
from bertbusters_nb.analysis.rule import DEFAULT_RULE, DetectionRule
from bertbusters_nb.data import load_texts, sample_texts
from bertbusters_nb.model.loading import load_model

PLANTED = 11


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest's: tiny models run faster on one thread


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm", device="cpu")


@pytest.fixture(scope="module")
def bbmini():
    return load_model("bbmini", head="mlm", device="cpu")


@pytest.fixture(scope="module")
def heldout():
    return sample_texts(load_texts("movie_reviews", split="heldout"), 32, seed=0)


def _no_effect(*_args, **_kwargs):
    raise AssertionError("the default rule must not look at any effect")


def test_minilm_default_names_99_from_parameters_and_activations_only(minilm, monkeypatch):
    monkeypatch.setattr("bertbusters_nb.analysis.effect.effect_criterion", _no_effect)
    monkeypatch.setattr("bertbusters_nb.evaluation.scan.scan_dims", _no_effect)
    monkeypatch.setattr("bertbusters_nb.evaluation.embeddings.embedding_drift", _no_effect)
    model, tokenizer = minilm
    found = D.detect(model, tokenizer)
    assert 99 in found.dims and found.rule == "params+activations"
    assert D.dims_to_ablate(model, tokenizer) == found.dims
    top4 = {99, 157, 223, 338}  # the exhaustive scan's four most damaging dims (issue 13)
    assert len(set(found.dims) & top4) >= len(found.dims) / 2


def _planted_activation_model():
    """A random BERT (hidden 128) whose FFN output bias is huge at one dim in every layer: the hidden states
    peak there, while every LayerNorm weight and bias stays ordinary noise."""
    torch.manual_seed(0)
    model = T.BertModel(
        T.BertConfig(vocab_size=120, hidden_size=128, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128)
    ).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.05)
                module.bias.normal_(0.0, 0.05)
        for layer in model.encoder.layer:
            layer.output.dense.bias[PLANTED] = 60.0
    return model


def test_planted_activation_outlier_is_found_by_activations_not_parameters():
    model = _planted_activation_model()
    torch.manual_seed(1)
    batches = [{"input_ids": torch.randint(5, 120, (8, 24)), "attention_mask": torch.ones(8, 24, dtype=torch.long)}]
    profile = activation_profile(model, batches)
    acts = criteria.activation_criterion(profile, "magnitude")
    params = criteria.parameter_criterion(model)
    assert list(acts.dim[acts.selected]) == [PLANTED]
    assert PLANTED not in set(params.dim[params.selected])
    assert not params.selected.any()
    dims, rule, _ = D.combine(params, acts)
    assert dims == [PLANTED] and rule == "params+activations"


@pytest.mark.slow
def test_bbmini_effect_ranking_top_two_are_81_and_126(bbmini, heldout):
    model, tokenizer = bbmini
    effect = effect_criterion(model, tokenizer, heldout)
    assert len(effect) == model.config.hidden_size  # exhaustive
    assert set(effect.dim.head(2)) == {81, 126}
    assert effect.attrs["objective"] == "mlm"
    # the screened scan (notebook 02's default) finds the same two among its exactly evaluated dims, with the
    # exhaustive scan's values there
    screened = effect_criterion(model, tokenizer, heldout, method="screen")
    exact_rows = screened[screened.effect_kind == "exact"].set_index("dim")
    assert len(exact_rows) == 16 and set(screened.dim.head(2)) == {81, 126} <= set(exact_rows.index)
    exhaustive = effect.set_index("dim").damage.loc[exact_rows.index]
    assert np.allclose(exact_rows.damage.to_numpy(), exhaustive.to_numpy(), atol=1e-5)


def test_screened_ranking_puts_exact_rows_above_every_estimate_on_minilm(minilm, heldout):
    # MiniLM's Gauss-Newton estimates overshoot (dims whose exact damage is ~0.01 are estimated at ~0.13), so a
    # ranking that mixed estimates with exact values named dims that were never evaluated as the most damaging
    # (notebook 02's screened table of 2026-12-03). Only exact rows may rank; their values are the exact scan's.
    model, tokenizer = minilm
    screened = effect_criterion(model, tokenizer, heldout, method="screen")
    kinds = screened.effect_kind.tolist()
    assert kinds == sorted(kinds, key=lambda kind: kind != "exact"), "every exact row comes before every estimate"
    assert screened.score[screened.effect_kind == "estimate"].isna().all()
    assert screened.effect_rank.tolist() == list(range(1, len(screened) + 1))
    estimates = screened[screened.effect_kind == "estimate"]
    top = screened.head(4)
    assert estimates.damage.max() > top.damage.min()  # the case the old ranking got wrong: estimates above exact
    exact = effect_criterion(model, tokenizer, heldout, dims=top.dim.tolist()).set_index("dim").damage
    assert np.allclose(top.set_index("dim").damage.to_numpy(), exact.loc[top.dim].to_numpy(), atol=1e-5)


def test_effect_selected_dims_are_judged_on_a_disjoint_split(bbmini, heldout):
    model, tokenizer = bbmini
    dims = list(range(0, 256, 3)) + [81, 126]  # a subset keeps the test short; 81 and 126 among them
    chosen = select_dims_by_effect(model, tokenizer, heldout, count=2, dims=sorted(set(dims)))
    assert not set(chosen.selection_texts) & set(chosen.evaluation_texts)
    assert set(chosen.selection_texts) | set(chosen.evaluation_texts) == set(heldout)
    assert chosen.selection.attrs["texts"] == len(chosen.selection_texts)
    assert chosen.evaluation.attrs["texts"] == len(chosen.evaluation_texts)
    assert set(chosen.dims) == {81, 126}
    ranks = chosen.evaluation.set_index("dim").effect_rank
    assert ranks[81] == 1  # still the most damaging on texts that did not choose it


def test_report_refuses_effect_texts_that_chose_the_dims(bbmini):
    model, tokenizer = bbmini
    texts = criteria.texts_for_activations(8)
    with pytest.raises(ValueError, match="another split"):
        detection_report(model, tokenizer, activation_texts=texts, effect_texts=texts[:4])


def test_report_agreement_on_bbmini(bbmini, heldout):
    model, tokenizer = bbmini
    report = detection_report(model, tokenizer, effect_texts=heldout[:16], effect_dims=range(0, 256, 1))
    table = report.agreement.set_index("criterion")
    rule = table.loc[D.RULE_CRITERION]
    assert rule.names_most_damaging and rule.precision >= 0.5
    assert report.agreement.attrs["most_damaging"][0] == 81
    assert {"sites[all]", "act_ratio_median", "damage", "effect_rank", "default"} <= set(report.per_dim.columns)
    assert report.per_dim.dim.iloc[0] == 81


def test_init_model_still_gets_strongest_candidates():
    torch.manual_seed(0)
    model = T.BertModel(
        T.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    ).eval()
    found = D.detect(model)  # LayerNorms at init: all ones and zeros, nothing stands out
    assert found.rule == "strongest candidates" and len(found.dims) == DEFAULT_RULE.fallback


def test_every_place_that_chose_dims_calls_the_one_rule(monkeypatch, bbmini):
    """Swap the rule's core for a sentinel: every former chooser must return the sentinel's dims."""
    from bertbusters_nb import widgets
    from bertbusters_nb.analysis import consistency, emergence, trajectory
    from bertbusters_nb.pretraining import NormTrajectory

    sentinel = [5, 3]
    real = D.combine

    def fake(params, activations=None, fallback=2):
        _, rule, table = real(params, activations, fallback)
        return list(sentinel), rule, table

    monkeypatch.setattr(D, "combine", fake)
    model, tokenizer = bbmini
    assert D.dims_to_ablate(model) == sentinel
    assert trajectory.select_outlier_dims(model)[0] == sentinel
    assert widgets.candidate_dims(model, None, 4)[1] == sentinel
    flags = emergence.flags_over_steps(NormTrajectory.load(consistency.run_folder("bbmini") / "norm_trajectory.npz"))
    assert emergence.final_outlier_dims(flags) == sentinel
    assert consistency.model_profile("bbmini", ["a short text", "another one"])["outlier_dims"] == "5 3"
    import bertbusters_nb as bb

    assert bb.dims_to_ablate is D.dims_to_ablate
    from bertbusters_nb.analysis import outliers

    assert not hasattr(outliers, "top_dims_by_magnitude") and not hasattr(outliers, "dims_to_ablate")


def test_detect_command_prints_json_with_dims():
    out = subprocess.run(
        [sys.executable, "-m", "bertbusters_nb", "detect", "bbmini", "--json", "--texts", "8"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    assert payload["dims"][0] == 81 and payload["rule"] == "params+activations"
    rule = DEFAULT_RULE.as_dict()
    assert payload["settings"] == {**rule, "n_texts": 8, "activations": True}  # the rule it applied, every field


def test_the_rule_is_one_frozen_dataclass_whose_options_are_its_fields():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_RULE.k = 4.0  # type: ignore[misc]
    assert DEFAULT_RULE.with_options(k=4.0) == DetectionRule(k=4.0) and DEFAULT_RULE.k == 3.0
    with pytest.raises(ValueError, match="no setting"):
        DEFAULT_RULE.with_options(sigma=4.0)
    with pytest.raises(ValueError, match="k must be positive"):
        DetectionRule(k=0)
    assert DetectionRule(param_roles=["block_output"]).param_roles == ("block_output",)  # hashable
    model = _planted_activation_model()
    assert D.detect(model, k=50.0).settings == D.detect(model, rule=DetectionRule(k=50.0)).settings
    with pytest.raises(ValueError, match="no setting"):
        D.detect(model, sigma=4.0)


def test_no_signature_retypes_the_rules_thresholds():
    """Every ``k`` / ``min_share`` / ``fallback_count`` default in the package comes from the rule (or a named
    constant), never a typed number: changing ``DetectionRule``'s defaults changes them all."""
    import ast
    from pathlib import Path

    package = Path(D.__file__).resolve().parents[1]
    retyped = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args.posonlyargs + node.args.args
            pairs = list(zip(args[len(args) - len(node.args.defaults) :], node.args.defaults))
            pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
            retyped += [
                f"{path.relative_to(package)}:{node.lineno} {node.name}({a.arg}={ast.unparse(d)})"
                for a, d in pairs
                if a.arg in ("k", "min_share", "fallback_count") and isinstance(d, ast.Constant) and d.value is not None
            ]
    assert not retyped, "thresholds typed instead of taken from DEFAULT_RULE:\n" + "\n".join(retyped)


def test_detect_command_names_a_bad_model():
    out = subprocess.run(
        [sys.executable, "-m", "bertbusters_nb", "detect", "/no/such/folder"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_the_screen_switches_in_behind_the_same_function(bbmini, heldout):
    model, tokenizer = bbmini
    effect = effect_criterion(model, tokenizer, heldout[:16], method="screen", screen_top_k=8)
    assert set(effect.dim.head(2)) == {81, 126} and (effect.effect_kind.head(2) == "exact").all()
    with pytest.raises(ValueError, match="exact"):
        effect_criterion(model, tokenizer, heldout[:4], method="guess")


def test_norms_without_parameters_leave_the_rule_to_its_activation_part():
    """OLMo's LayerNorm has no weight or bias: the parameter criterion flags nothing instead of failing."""
    import transformers as T

    import bertbusters_nb as bb
    from bertbusters_nb.analysis.criteria import parameter_criterion

    torch.manual_seed(0)
    config = T.OlmoConfig(
        vocab_size=200,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        eos_token_id=1,
        pad_token_id=0,
    )
    model = T.OlmoForCausalLM(config).eval()
    assert all(site.weight is None and site.bias is None for site in bb.find_norm_sites(model))
    table = parameter_criterion(model)
    assert len(table) == 32 and not table.selected.any() and (table.n_param_sites == 0).all()
    found = bb.detect(model)
    assert found.rule == "strongest candidates" and len(found.dims) == found.settings.fallback


def test_notebook_02s_scan_loads_each_model_on_the_device_it_was_given(monkeypatch):
    """The paper profile gives notebook 02 a GPU: its criteria table must load bert-base there, not on the CPU."""
    from bertbusters_nb.analysis.detection_report import agreement_across_models
    from bertbusters_nb.model import loading

    asked = []

    def refuse(name, **options):
        asked.append(options.get("device"))
        raise RuntimeError("stop after recording the device")

    monkeypatch.setattr(loading, "load_model", refuse)
    with pytest.raises(RuntimeError, match="stop after recording"):
        agreement_across_models(["bbmini"], n_effect_texts=2, device="cuda:3")
    assert asked == ["cuda:3"]
