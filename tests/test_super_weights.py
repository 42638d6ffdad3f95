"""Super weights: the residual writers found by tracing, a planted super weight found and verified, none
reported without the plant, and a zeroed scalar restored bit-exactly (also after an exception)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import transformers as T
from conftest import tiny_model

from bertbusters_nb.analysis import super_weights as sw
from bertbusters_nb.model.ablation import fingerprints_equal, state_fingerprint
from bertbusters_nb.model.planted import ARCHS, PLANTS, planted_model
from bertbusters_nb.model.writers import find_residual_writers, writers_table
from bertbusters_nb.reporting import claims

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(arch: str) -> torch.nn.Module:
    if arch == "opt":
        torch.manual_seed(0)
        config = T.OPTConfig(
            hidden_size=32, num_hidden_layers=3, ffn_dim=64, num_attention_heads=2, vocab_size=120,
            word_embed_proj_dim=32, max_position_embeddings=64,
        )  # fmt: skip
        return T.OPTForCausalLM(config).eval()
    return tiny_model(arch)


@pytest.mark.parametrize(
    "arch, module_end, transposed",
    [("bert", ".output.dense", False), ("llama", ".mlp.down_proj", False), ("gpt2", ".mlp.c_proj", True),
     ("opt", ".fc2", False)],
)  # fmt: skip
def test_residual_writer_found_by_tracing(arch, module_end, transposed):
    model = _tiny(arch)
    writers = find_residual_writers(model)
    assert [w.layer for w in writers] == [0, 1, 2]
    for w in writers:
        assert w.name.endswith(module_end) and ".attention." not in w.name and ".attn." not in w.name
        assert w.transposed is transposed
        assert w.out_features == 32 and w.in_features > 32  # the FFN's width in, the stream's out
        assert tuple(w.matrix().shape) == (w.out_features, w.in_features)
    table = writers_table(writers)
    assert list(table.layer) == [0, 1, 2] and table.feeds_norm.str.len().gt(0).all()
    if arch == "bert":  # post-LN: the writer feeds its own block's output LayerNorm
        assert all(w.norm.startswith(w.name.rsplit(".dense", 1)[0]) and w.norm_role == "block_output" for w in writers)


def _planted(plant: bool, arch: str = "llama") -> tuple[torch.nn.Module, list[dict], torch.Tensor]:
    """The package's planted model (``model.planted``), with or without its super weight, and two batches of
    random token ids (the prompts) whose concatenation is the eval set."""
    model, tokenizer = planted_model(arch, plant=plant)
    gen = torch.Generator().manual_seed(1)
    vocab = len(tokenizer)
    batches = [{"input_ids": torch.randint(0, vocab, (4, 16), generator=gen)} for _ in range(2)]
    ids = torch.cat([b["input_ids"] for b in batches])
    return model, batches, ids


def _loss(model: torch.nn.Module, ids: torch.Tensor):
    def objective() -> float:
        with torch.no_grad():
            return float(model(input_ids=ids, labels=ids).loss)

    return objective


@pytest.mark.parametrize("arch", ARCHS)
def test_planted_super_weight_found_and_beats_controls(arch):
    plant = PLANTS[arch]  # where the package plants its super weight (not a model's finding)
    model, batches, ids = _planted(plant=True, arch=arch)
    report = sw.find_super_weights(model, batches, _loss(model, ids))
    spikes = report.spikes[report.spikes.spike]
    assert list(zip(spikes.layer, spikes.channel)) == [(plant.layer, plant.row)]
    found = report.super_weights
    assert list(zip(found.layer, found.row, found.col)) == [(plant.layer, plant.row, plant.col)]
    row = found.iloc[0]
    assert abs(row.delta) > report.rule.control_factor * row.control_max > 0
    controls = report.controls
    assert (controls.kind == "random").sum() >= 20 and (controls.kind == "largest |w|").sum() >= 20
    assert controls.delta.abs().max() < abs(row.delta)
    table = sw.super_weight_table(report, "tiny")
    assert table["index"].tolist() == [[plant.row, plant.col]]  # nn.Linear: (out, in)
    note = claims.published_super_weights_note(f"planted:{arch}", table)
    assert note.endswith("— found.") and "NOT found" in claims.published_super_weights_note(
        f"planted:{arch}", table[:0]
    )
    # the massive activation is carried by the stream into the next norm's input; a post-LN LayerNorm damps it
    # inside itself (its output far less extreme), a pre-LN RMSNorm with unit weights does not
    spike = spikes.iloc[0]
    assert spike.norm_in_ratio > report.rule.spike_ratio
    assert bool(spike.norm_out_ratio < report.rule.spike_ratio) == (arch == "bert")


@pytest.mark.parametrize("arch", ARCHS)
def test_restoring_the_super_activation_alone_recovers_the_loss(arch):
    model, batches, ids = _planted(plant=True, arch=arch)
    objective = _loss(model, ids)
    report = sw.find_super_weights(model, batches, objective)
    (writer, row, col), spike = report.scalars()[0], report.spikes[report.spikes.spike].iloc[0]
    threshold = 5 * spike.out_median  # tokens where the plant writes far more than a typical channel
    intact = objective()
    with sw.restored_activation(model, writer, row, col, threshold), sw.zeroed([(writer, row, col)]):
        restored = objective()
    with sw.zeroed([(writer, row, col)]):
        zeroed = objective()
    assert abs(restored - intact) < 0.5 * abs(zeroed - intact)


@pytest.mark.parametrize("arch", ARCHS)
def test_no_plant_no_super_weight(arch):
    model, batches, ids = _planted(plant=False, arch=arch)
    report = sw.find_super_weights(model, batches, _loss(model, ids))
    assert not report.spikes.spike.any()
    assert report.super_weights.empty and report.candidates.empty
    assert len(report.spikes) == len(report.writers) * report.rule.spikes_per_layer  # the table shows why


def test_zeroed_scalar_restored_bit_exactly_after_an_exception():
    model = tiny_model("gpt2")
    writer = find_residual_writers(model)[1]
    before = state_fingerprint(model)
    value = writer.matrix()[3, 9].item()
    with pytest.raises(RuntimeError, match="inside"):
        with sw.zeroed([(writer, 3, 9), (writer, 4, 10)]):
            assert writer.matrix()[3, 9].item() == 0.0 and writer.weight[9, 3].item() == 0.0  # Conv1D: (in, out)
            raise RuntimeError("raised inside the edit context")
    assert writer.matrix()[3, 9].item() == value
    assert fingerprints_equal(before, state_fingerprint(model))


def test_a_rogue_dim_dominates_cosine_until_standardised():
    from bertbusters_nb.analysis.similarity import cosine_shares, separation_table

    gen = torch.Generator().manual_seed(0)
    n, hidden, rogue = 200, 16, 3  # a planted rogue dim, as Timkey & van Schijndel describe
    a = torch.randn(n, hidden, generator=gen)
    positive = torch.arange(n) % 2 == 0
    b = torch.where(
        positive[:, None], a + 0.5 * torch.randn(n, hidden, generator=gen), torch.randn(n, hidden, generator=gen)
    )
    a[:, rogue] += 40 + 20 * torch.randn(n, generator=gen)
    b[:, rogue] += 40 + 20 * torch.randn(n, generator=gen)
    shares = cosine_shares(a, b)
    assert int(shares.dim.iloc[0]) == rogue and float(shares.share.iloc[0]) > 0.5
    table = separation_table(a, b, positive.tolist(), [rogue], [[0], [1]]).set_index("condition").auc
    assert table["outlier dims standardised"] > table["raw"] + 0.05
    assert table["outlier dims standardised"] > max(
        table["random dims 0 standardised"], table["random dims 1 standardised"]
    )


@pytest.mark.parametrize("arch, head", [("llama", "causal-lm"), ("bert", "mlm")])
def test_planted_alias_loads_the_builders_model_from_one_cached_folder(arch, head, tmp_path, monkeypatch):
    from bertbusters_nb.model.loading import load_model
    from bertbusters_nb.model.planted import plant_of, planted_cache_dir

    monkeypatch.setenv("BERTBUSTERS_ASSETS", str(tmp_path / "assets"))  # the cache folder beside it, not $HOME's
    name = f"planted:{arch}"
    model, tokenizer = load_model(name, head=head, device="cpu")
    again, _ = load_model(name, head=head, device="cpu")
    built, built_tokenizer = planted_model(arch)
    assert fingerprints_equal(state_fingerprint(model), state_fingerprint(built))
    assert fingerprints_equal(state_fingerprint(again), state_fingerprint(built))
    assert tokenizer.get_vocab() == built_tokenizer.get_vocab()
    assert len(list(planted_cache_dir().iterdir())) == 1  # written once, no temporary folder left
    assert plant_of(name) == PLANTS[arch] and plant_of("bbmini") is None


def test_a_candidate_is_rejected_at_the_first_control_that_matches_it_and_a_verified_one_meets_all():
    """Verification measures a matrix's controls only as far as a verdict needs: an objective that reads the
    weights decides each scalar's effect, so the verdicts are known in advance."""
    plant = PLANTS["llama"]
    model, _ = planted_model("llama")
    writer = next(w for w in find_residual_writers(model) if w.layer == plant.layer)
    weak = (0, 0)
    order = writer.matrix().abs().flatten().argsort(descending=True).tolist()
    # the largest |w| of the matrix that is not a candidate: the first control measured
    top_j, top_k = next(
        divmod(i, writer.matrix().shape[1])
        for i in order
        if divmod(i, writer.matrix().shape[1]) not in ((plant.row, plant.col), weak)
    )

    def objective() -> float:  # zeroing the plant costs 1.0, the weak candidate 0.05, the largest |w| 0.02
        m = writer.matrix()
        return (
            1.0
            + 1.0 * bool(m[plant.row, plant.col] == 0)
            + 0.05 * bool(m[weak] == 0)
            + 0.02 * bool(m[top_j, top_k] == 0)
        )

    columns = dict(layer=plant.layer, stack="", writer=writer.name, weight=0.0, share=1.0, w_rank=1)
    candidates = pd.DataFrame(
        [{**columns, "row": weak[0], "col": weak[1]}, {**columns, "row": plant.row, "col": plant.col}]
    )
    rule = sw.SuperWeightRule(controls=20, control_factor=5.0, min_effect=0.01)
    verdicts, controls = sw.verify([writer], candidates, objective, rule)
    weak_row, plant_row = verdicts.iloc[0], verdicts.iloc[1]
    assert not weak_row.super_weight and weak_row.controls_measured == 1  # 5 x 0.02 >= 0.05 after one control
    assert plant_row.super_weight and plant_row.controls_measured == 40 and len(controls) == 40
    assert controls.delta.abs().max() == pytest.approx(0.02) and plant_row.control_max == pytest.approx(0.02)


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_the_suffix_objective_equals_the_whole_models_under_every_layers_scalar_edit(arch):
    """A scalar edit in layer L is evaluated from layer L on (the intact input of layer L cached once): the value
    is the whole model's under the same edit, in every layer, and the model is restored bit-exactly."""
    from bertbusters_nb.data import load_texts
    from bertbusters_nb.evaluation.engine import AblationEngine
    from bertbusters_nb.evaluation.sets import prepare_causal_eval, prepare_mlm_eval
    from bertbusters_nb.model.discovery import find_norm_sites

    model, tokenizer = planted_model(arch)
    texts = load_texts("movie_reviews", split="heldout")[:6]
    prepare = prepare_causal_eval if arch == "llama" else prepare_mlm_eval
    eval_set = prepare(tokenizer, texts, max_length=24, batch_size=4)
    engine = AblationEngine(model, eval_set, find_norm_sites(model), autocast=None)
    objective = sw.SuffixObjective(engine)
    writers = find_residual_writers(model)
    assert engine.stack is not None and [objective.key_of(w)[0] for w in writers] == [w.layer for w in writers]
    before = state_fingerprint(model)
    plant, intact = PLANTS[arch], objective()
    for writer in writers:
        with sw.zeroed([(writer, plant.row, plant.col)]):
            whole, suffix = objective(), objective.from_writer(writer)
        assert suffix == pytest.approx(whole, abs=1e-5)
        if writer.layer == plant.layer:  # the planted super weight: an edit the suffix must see
            assert abs(suffix - intact) > 0.05
    assert fingerprints_equal(before, state_fingerprint(model))
