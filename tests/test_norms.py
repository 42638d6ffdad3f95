"""Norm-site finder: roles and counts per architecture, the real MiniLM, and clear errors."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import tiny_model
from torch import nn

from bertbusters_nb.model.discovery import find_norm_sites

# (stack, role) -> count for the tiny models of conftest (3 layers; BART decoder 2).
from bertbusters_nb.model.sites import NormLayoutError, select_sites, sites_table

# (stack, role) -> count for the tiny models of conftest (3 layers; BART decoder 2).
EXPECTED = {
    "bert": {
        ("encoder", "embeddings"): 1,
        ("encoder", "attention_output"): 3,
        ("encoder", "block_output"): 3,
        ("encoder", "head"): 1,
    },
    "roberta": {
        ("encoder", "embeddings"): 1,
        ("encoder", "attention_output"): 3,
        ("encoder", "block_output"): 3,
        ("encoder", "head"): 1,
    },
    "distilbert": {
        ("encoder", "embeddings"): 1,
        ("encoder", "attention_output"): 3,
        ("encoder", "block_output"): 3,
        ("encoder", "head"): 1,
    },
    # ALBERT shares one layer's parameters across all layers: one site per role.
    "albert": {
        ("encoder", "embeddings"): 1,
        ("encoder", "attention_output"): 1,
        ("encoder", "block_output"): 1,
        ("encoder", "head"): 1,
    },
    "electra": {
        ("encoder", "embeddings"): 1,
        ("encoder", "attention_output"): 3,
        ("encoder", "block_output"): 3,
        ("encoder", "head"): 1,
    },
    "xlnet": {("encoder", "attention_output"): 3, ("encoder", "block_output"): 3},
    "bart": {
        ("encoder", "embeddings"): 1,
        ("encoder", "attention_output"): 3,
        ("encoder", "block_output"): 3,
        ("decoder", "embeddings"): 1,
        ("decoder", "attention_output"): 2,
        ("decoder", "cross_attention_output"): 2,
        ("decoder", "block_output"): 2,
    },
    "gpt2": {("decoder", "pre_attention"): 3, ("decoder", "pre_ffn"): 3, ("decoder", "final"): 1},
    "llama": {("decoder", "pre_attention"): 3, ("decoder", "pre_ffn"): 3, ("decoder", "final"): 1},
}


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_roles_and_counts_per_architecture(arch):
    sites = find_norm_sites(tiny_model(arch))
    assert Counter((s.stack, s.role) for s in sites) == EXPECTED[arch]
    layered = [s for s in sites if s.role not in ("embeddings", "final", "head")]
    for stack in {s.stack for s in layered}:
        for role in {s.role for s in layered if s.stack == stack}:
            layers = sorted(s.layer for s in layered if s.stack == stack and s.role == role)
            assert layers == list(range(len(layers)))


def test_bert_names_are_the_output_layernorms():
    sites = find_norm_sites(tiny_model("bert"))
    block = [s.name for s in select_sites(sites, "block_output")]
    assert block == [f"bert.encoder.layer.{i}.output.LayerNorm" for i in range(3)]
    head = [s.name for s in sites if s.role == "head"]
    assert head == ["cls.predictions.transform.LayerNorm"]
    assert "cls.predictions.transform.LayerNorm" not in [s.name for s in select_sites(sites, None) if s.role != "head"]


def test_llama_rmsnorm_without_bias_is_found():
    sites = find_norm_sites(tiny_model("llama"))
    assert all(type(s.module).__name__ == "LlamaRMSNorm" for s in sites)
    assert all(s.bias is None for s in sites)
    assert [s.name for s in sites if s.role == "final"] == ["model.norm"]


def test_layer_selection_does_not_confuse_layer_1_with_11():
    torch.manual_seed(0)
    import transformers as T

    model = T.BertModel(
        T.BertConfig(hidden_size=16, num_hidden_layers=12, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    )
    chosen = select_sites(find_norm_sites(model), "block_output", layers=[1])
    assert [s.name for s in chosen] == ["encoder.layer.1.output.LayerNorm"]


def test_real_minilm_sites(minilm):
    model, _ = minilm
    sites = find_norm_sites(model)
    assert Counter(s.role for s in sites) == {"embeddings": 1, "attention_output": 6, "block_output": 6}
    assert all(s.size == 384 for s in sites)
    assert list(sites_table(sites).columns) == ["name", "role", "layer", "stack", "size", "has_bias"]


def test_model_without_norms_is_a_clear_error():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(NormLayoutError, match="No LayerNorm or RMSNorm"):
        find_norm_sites(model)


def test_norm_that_never_runs_is_no_site_and_is_named_in_a_warning():
    model = tiny_model("bert")
    layer = model.bert.encoder.layer[0]
    layer.extra_norm = nn.LayerNorm(32)  # held by the layer, never called: it cannot touch the outputs
    with pytest.warns(UserWarning, match="'bert' model did not run.*extra_norm"):
        sites = find_norm_sites(model)
    assert "bert.encoder.layer.0.extra_norm" not in [s.name for s in sites]
    assert Counter(s.role for s in sites)["block_output"] == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"roles": "pre_attention"}, "has no"),
        ({"roles": "bogus"}, "Unknown site role"),
        ({"layers": [7]}, "outside this model"),
        ({"layers": [-1]}, "outside this model"),
        ({"stack": "decoder"}, "Unknown stack"),
    ],
)
def test_bad_selections_are_clear_errors(kwargs, match):
    sites = find_norm_sites(tiny_model("bert"))
    with pytest.raises(ValueError, match=match):
        select_sites(sites, **kwargs)


def _runs_during(model, call) -> bool:
    """Whether ``model``'s first layer ran while ``call()`` did."""
    from bertbusters_nb.model.hooks import Trace

    with Trace(model, "bert.encoder.layer.0", retain_output=False) as trace:
        call()
    return bool(trace["bert.encoder.layer.0"].calls)


def test_sites_are_found_once_per_model_and_again_when_its_structure_changes():
    model = tiny_model("bert")
    kept = []
    assert _runs_during(model, lambda: kept.append(find_norm_sites(model)))  # a new model is traced (traces nest)
    first = kept.pop()
    assert not _runs_during(model, lambda: kept.append(find_norm_sites(model)))  # found once: not traced again
    assert kept[0] == first and kept[0] is not first  # equal sites, a new list each call
    kept[0].clear()
    assert find_norm_sites(model) == first
    # a module replaced: the sites are found again and hold the new module
    new_norm = nn.LayerNorm(32)
    model.bert.encoder.layer[1].output.LayerNorm = new_norm
    assert _runs_during(model, lambda: kept.append(find_norm_sites(model)))
    assert next(s for s in kept[-1] if s.name == "bert.encoder.layer.1.output.LayerNorm").module is new_norm
    # another dtype: found again
    model.to(torch.float64)
    assert _runs_during(model, lambda: find_norm_sites(model))


def test_the_found_sites_do_not_keep_the_model_alive_and_warnings_are_said_again():
    import gc
    import weakref

    model = tiny_model("bert")
    model.bert.encoder.layer[0].extra_norm = nn.LayerNorm(32)
    with pytest.warns(UserWarning, match="did not run.*extra_norm"):
        find_norm_sites(model)
    with pytest.warns(UserWarning, match="did not run.*extra_norm"):  # from the kept result, as a search would
        find_norm_sites(model)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
