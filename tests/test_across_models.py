"""Notebook 06's protocol: norm placement, the pre-LN output-projection analogue, activations, one tidy table."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_model

from bertbusters_nb import find_norm_sites, fingerprints_equal, state_fingerprint
from bertbusters_nb.data import load_texts, sample_texts
from bertbusters_nb.model.sites import ablation_roles, norm_placement
from bertbusters_nb.reporting import claims as claims_module
from bertbusters_nb.studies import across_models as am

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def texts():
    return sample_texts(load_texts("movie_reviews", split="heldout"), 8, seed=0)


@pytest.mark.parametrize(
    "arch, placement, roles",
    [
        ("bert", "post-LN", ("block_output",)),
        ("bart", "post-LN", ("block_output",)),
        ("gpt2", "pre-LN", ("pre_attention", "pre_ffn")),
        ("llama", "pre-LN", ("pre_attention", "pre_ffn")),
    ],
)
def test_norm_placement_and_the_roles_disabled(arch, placement, roles):
    sites = find_norm_sites(tiny_model(arch))
    stacks = am.stacks_of(sites)
    assert stacks == (["decoder", "encoder"] if arch == "bart" else [None])
    for stack in stacks:
        assert norm_placement(sites, stack) == placement
        assert ablation_roles(sites, stack) == roles


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_output_projections_zero_what_blocks_write_into_the_stream_and_restore_exactly(arch):
    model = tiny_model(arch)
    sites = find_norm_sites(model)
    before = state_fingerprint(model)
    ids = torch.arange(1, 9).unsqueeze(0)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        with am.output_dense_disabled(model, sites, [3, 7]) as n_modules:
            assert n_modules == 2 * 3  # attention and MLP output projection of each of the 3 layers
            states = model(input_ids=ids, output_hidden_states=True).hidden_states
    # no block writes into dims 3 and 7 any more: the stream keeps the embedding's value there to the last layer
    # (GPT-2 adds position embeddings first, so compare with the first hidden state)
    start = states[0]
    assert torch.allclose(states[-2][..., [3, 7]], start[..., [3, 7]], atol=1e-6)
    assert not torch.allclose(states[-2][..., [4, 5]], start[..., [4, 5]])
    if arch == "llama":
        assert torch.equal(start, embeds)
    assert fingerprints_equal(before, state_fingerprint(model))


def test_activation_profile_finds_a_planted_massive_dim_on_the_first_token(texts):
    from bertbusters_nb.analysis.activations import (
        activation_profile,
        carriers_by_token_kind,
        layer_dominance,
        text_batches,
    )

    model, tokenizer = am.tiny_random_model("llama")
    layer = model.model.layers[1]
    original = layer.forward

    def planted(hidden_states, *args, **kwargs):  # a massive activation at dim 5 of the first token
        out = original(hidden_states, *args, **kwargs)
        hidden = out[0] if isinstance(out, tuple) else out
        hidden = hidden.clone()
        hidden[:, 0, 5] = 500.0
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    layer.forward = planted
    try:
        batches = text_batches(tokenizer, texts, max_length=24, batch_size=4)
        per_layer = layer_dominance(activation_profile(model, batches), [5])
        carriers = carriers_by_token_kind(model, tokenizer, batches, [5])
    finally:
        del layer.forward
    peak = per_layer.loc[per_layer.max_abs.idxmax()]
    assert int(peak.max_dim) == 5 and int(peak.layer) == 2 and peak.max_ratio > 100
    at = carriers[carriers.layer == 2].set_index("kind")
    assert at.loc["first token", "mean_abs_at_dims"] > 100 * at.loc["other", "mean_abs_at_dims"]
    assert math.isclose(at.token_share.sum(), 1.0) and math.isclose(at.mass_share.sum(), 1.0)


def test_the_protocol_on_a_real_model_and_a_tiny_decoder_gives_one_tidy_table(texts):
    result = am.run_protocol(
        ["bbmini", "tiny-random-llama"],
        texts,
        random_draws=20,
        max_length=32,
        batch_size=8,
        activation_texts=8,
        device="cpu",
        progress=False,
    )
    table = result.table.set_index("model")
    assert list(table.index) == ["bbmini", "tiny-random-llama"]
    bb, llama = table.loc["bbmini"], table.loc["tiny-random-llama"]
    assert (bb.placement, bb.objective, llama.placement, llama.objective) == (
        "post-LN",
        "masked-LM loss",
        "pre-LN",
        "causal-LM loss",
    )
    assert "81" in bb.dims.split() and bb.beyond_every_draw  # the pretrained outlier wrecks the MLM loss
    assert bb.outliers_zero > bb.random_max > bb.intact - 0.1
    assert math.isnan(bb.output_dense_zero) and not math.isnan(llama.output_dense_zero)
    assert set(result.draws.model) == {"bbmini", "tiny-random-llama"}
    assert (result.draws.groupby("model").condition.apply(lambda c: c.str.startswith("random").sum()) == 20).all()
    precision = am.precision_table(result.table)
    assert list(precision.model) == ["bbmini", "tiny-random-llama"]
    assert (precision.bf16_minus_fp32_intact.abs() < 0.05).all()  # bf16 and fp32 agree closely
    assert set(precision.bf16_gemms) <= {"native", "fp32 products of bf16 operands"}
    for source in table.rule_profile:  # where each model's detection took its activation profile from
        assert source.startswith("computed in this run") or source.startswith("read from the shared results cache")
    claims = claims_module.across_models_findings(result.table)
    assert claims[0].outcome == claims_module.HELD
    assert (claims[1].outcome != claims_module.NOT_HELD) == bool(llama.beyond_every_draw)
    assert "81" in claims[0].evidence and "GPT-2 analogue" in claims[1].evidence
    assert "bbmini" in claims_module.across_models_report(result.table)
    fig = am.figure(result)
    assert len(fig.axes) == 4


def test_objective_follows_the_head():
    from bertbusters_nb.evaluation.model_objective import objective_of

    model, tokenizer = am.tiny_random_model("bert")
    assert objective_of(model, tokenizer) == "mlm"
    assert objective_of(model.bert, tokenizer) == "embedding"  # the encoder without its head
    model, tokenizer = am.tiny_random_model("gpt2")
    assert objective_of(model, tokenizer) == "causal"
    assert objective_of(model.transformer, tokenizer) == "embedding"
    with pytest.raises(ValueError, match="Unknown tiny model"):
        am.tiny_random_model("t5")
    with pytest.raises(ValueError, match="models is empty"):
        am.run_protocol([], ["a text"])
