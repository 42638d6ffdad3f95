"""Notebook 07's package functions: token counts, frequency statistics, attention sinks, W8A8 fake-quant, kurtosis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bertbusters_nb.analysis import attention_sinks, frequency, quantization
from bertbusters_nb.analysis.activations import text_batches
from bertbusters_nb.model.ablation import Condition, fingerprints_equal, state_fingerprint
from bertbusters_nb.model.discovery import find_norm_sites
from bertbusters_nb.reporting import claims
from bertbusters_nb.studies import why

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "the film was long , but it was good .",
    "a dull plot . the actors try hard , though .",
    "i loved it ! the end was sad ; the start was fun .",
]


@pytest.fixture(scope="module")
def bbmini():
    from bertbusters_nb import load_model

    return load_model("bbmini", head="mlm", device="cpu")


# ----------------------------------------------------------------------------- quantization


def test_fake_quant_is_exact_on_the_8_bit_grid_and_rounds_off_it():
    scale = 0.037
    grid = torch.arange(-127, 128, dtype=torch.float64) * scale
    assert torch.equal(quantization.fake_quant(grid, 8), grid)
    off = grid + scale / 4  # a quarter step off the grid: rounded back to it, except beyond the range
    back = quantization.fake_quant(torch.cat([off[:-1], grid[-1:]]), 8)
    assert torch.allclose(back[:-1], grid[:-1])
    assert quantization.fake_quant(torch.tensor([0.2, -1.0]), 2).tolist() == [0.0, -1.0]  # 2 bits: {-1, 0, 1} x 1.0


def test_fake_quant_keeps_the_kept_columns_exact_and_scales_by_the_others():
    x = torch.tensor([[0.013, 100.0, -0.5], [0.25, -80.0, 0.5]])
    keep = torch.tensor([False, True, False])
    q = quantization.fake_quant(x, 8, keep)
    assert torch.equal(q[:, 1], x[:, 1])
    step = 0.5 / 127
    assert torch.allclose(q[:, [0, 2]], torch.round(x[:, [0, 2]] / step) * step)
    # without keeping it, the outlier column sets the scale and the small values collapse to 0
    assert quantization.fake_quant(x, 8)[0, 0] == 0


def test_kurtosis_of_known_distributions():
    assert float(quantization.kurtosis(torch.tensor([-1.0, 1.0, -1.0, 1.0]))) == pytest.approx(1.0)
    gauss = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(quantization.kurtosis(gauss)) == pytest.approx(3.0, abs=0.05)
    uniform = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(quantization.kurtosis(uniform)) == pytest.approx(1.8, abs=0.02)


def test_w8a8_changes_the_output_and_restores_the_model_exactly(bbmini):
    model, tokenizer = bbmini
    batch = text_batches(tokenizer, TEXTS, 32, 3)[0]
    before = state_fingerprint(model)
    with torch.no_grad():
        clean = model(**batch).logits
        with quantization.w8a8(model) as names:
            quantized = model(**batch).logits
        again = model(**batch).logits
    assert names and model.get_output_embeddings() is not None
    assert "cls.predictions.decoder" not in names  # the output embedding stays in full precision
    assert not torch.equal(clean, quantized)
    assert (clean - quantized).abs().mean() < 0.25 * clean.std()  # perturbed, not destroyed
    assert torch.equal(clean, again)
    assert fingerprints_equal(before, state_fingerprint(model))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(not m._forward_pre_hooks and "forward" not in m.__dict__ for m in linears)


def test_w8a8_at_16_bits_is_close_and_restores_after_an_exception(bbmini):
    model, tokenizer = bbmini
    batch = text_batches(tokenizer, TEXTS, 32, 3)[0]
    with torch.no_grad():
        clean = model(**batch).logits
        with quantization.w8a8(model, bits=16):
            fine = model(**batch).logits
        with pytest.raises(KeyboardInterrupt):
            with quantization.w8a8(model):
                raise KeyboardInterrupt
        assert torch.equal(model(**batch).logits, clean)
    assert (fine - clean).abs().max() < (clean.abs().max() * 1e-2)


def test_residual_readers_are_the_linears_fed_by_a_norm(bbmini):
    model, tokenizer = bbmini
    readers = quantization.residual_readers(model, text_batches(tokenizer, TEXTS[:1], 32, 1)[0])
    layers = model.config.num_hidden_layers
    expected = {
        f"bert.encoder.layer.{i}.{p}"
        for i in range(layers)
        for p in ("attention.self.query", "attention.self.key", "attention.self.value", "intermediate.dense")
    }
    assert expected <= set(readers)
    assert not any(r.endswith("output.dense") and "attention" not in r for r in readers)  # fed by the FFN, not a norm
    with pytest.raises(ValueError, match="readers"):
        with quantization.w8a8(model, keep_dims=[1]):
            pass


def test_quantization_table_and_verdict(bbmini):
    model, tokenizer = bbmini
    table = quantization.quantization_table(
        model, tokenizer, TEXTS * 2, "mlm", [81], [(5,), (7,)], max_length=32, batch_size=6, progress=False
    )
    assert list(table.group) == ["fp32", "w8a8", "outliers", "random", "random"]
    assert table.delta.iloc[0] == 0 and table.objective.notna().all()
    rescued = claims.quantization_rescued(table, "bbmini", 8)
    assert isinstance(rescued.held, bool) and "W8A8" in rescued.evidence


def test_quantization_verdict_on_hand_built_tables():
    def table(values):
        groups = ["fp32", "w8a8", "outliers"] + ["random"] * (len(values) - 3)
        return pd.DataFrame({"group": groups, "objective": values, "kind": "mlm"})

    rescued = claims.quantization_rescued(table([2.0, 3.0, 2.2, 2.9, 2.95]), "m", 8)
    assert rescued.outcome == claims.HELD and "recovers 80%" in rescued.evidence and "2 draws" in rescued.evidence
    beaten = claims.quantization_rescued(table([2.0, 3.0, 2.2, 2.1, 2.95]), "m", 8)  # a draw does better
    assert beaten.outcome == claims.NOT_HELD
    small = claims.quantization_rescued(table([2.0, 3.0, 2.8, 2.9, 2.95]), "m", 8)  # beyond the draws, recovers 20%
    assert small.outcome == claims.SMALL and small.held is False
    nothing = claims.quantization_rescued(table([2.0, 1.99, 2.0, 2.0, 2.0]), "m", 8)
    assert nothing.held is False and "nothing for the outlier dims to recover" in nothing.evidence


def test_outlier_metrics_leave_dims_out(bbmini):
    model, tokenizer = bbmini
    metrics = quantization.outlier_metrics(
        model, text_batches(tokenizer, TEXTS, 32, 3), {"none": (), "outliers": (81,), "random 0": (5,)}
    )
    assert set(metrics.excluded) == {"none", "outliers", "random 0"}
    assert len(metrics) == 3 * (model.config.num_hidden_layers + 1)
    none, without = (metrics[metrics.excluded == e].set_index("layer") for e in ("none", "outliers"))
    assert (without.max_inf_norm <= none.max_inf_norm + 1e-6).all()
    tails = claims.heavy_tails(metrics, "bbmini")
    assert "Gaussian: 3" in tails.evidence and isinstance(tails.held, bool)


# ----------------------------------------------------------------------------- attention sinks


def test_attention_mass_on_a_hand_built_attention_tensor():
    # one layer, one head, 3 tokens; every query puts 0.7 on token 0, 0.2 on token 1, 0.1 on token 2
    probs = torch.tensor([0.7, 0.2, 0.1]).expand(1, 1, 3, 3).clone()
    masks = {"first": torch.tensor([[True, False, False]]), "delimiter": torch.tensor([[False, False, True]])}
    out = attention_sinks.attention_mass([probs], masks, torch.ones(1, 3))
    assert out["queries"] == 3
    assert out["first"].item() / 3 == pytest.approx(0.7)
    assert out["delimiter"].item() / 3 == pytest.approx(0.1)
    assert out["first_base"].item() / 3 == pytest.approx(1 / 3)
    # a causal pattern: query i sees keys 0..i; the base rate follows what each query sees
    causal = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0.2, 0.4, 0.4]]).view(1, 1, 3, 3)
    out = attention_sinks.attention_mass([causal], {"first": masks["first"]}, torch.ones(1, 3))
    assert out["first"].item() / 3 == pytest.approx((1 + 0.5 + 0.2) / 3)
    assert out["first_base"].item() / 3 == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    # padding: a padded key gets no share and a padded query does not count
    out = attention_sinks.attention_mass([probs], masks, torch.tensor([[1, 1, 0]]))
    assert out["queries"] == 2 and out["first"].item() / 2 == pytest.approx(0.7)


def test_sink_scores_on_bbmini_and_eager_is_restored(bbmini):
    model, tokenizer = bbmini
    before = model.config._attn_implementation
    table = attention_sinks.sink_scores(model, tokenizer, TEXTS)
    assert model.config._attn_implementation == before
    heads = model.config.num_hidden_layers * model.config.num_attention_heads
    assert len(table) == 4 * heads and set(table.category) == {"special", "delimiter", "first", "sink"}
    assert table.mass.between(0, 1 + 1e-6).all() and table.base.between(0, 1).all()
    sink = table[table.category == "sink"].set_index(["layer", "head"])
    for part in ("special", "delimiter", "first"):
        assert (table[table.category == part].set_index(["layer", "head"]).mass <= sink.mass + 1e-6).all()
    sinking = claims.heads_sink(table[table.category == "sink"], "bbmini")
    assert isinstance(sinking.held, bool) and f"{heads} heads" in sinking.evidence


def test_sink_under_conditions_restores_the_model(bbmini):
    model, tokenizer = bbmini
    before = state_fingerprint(model)
    table = attention_sinks.sink_under_conditions(
        model, tokenizer, TEXTS, [Condition("none"), Condition("o", (81,))], progress=False
    )
    assert fingerprints_equal(before, state_fingerprint(model))
    means = attention_sinks.mean_sink(table)
    assert list(means.index) == ["none", "o"] and means["none"] != means["o"]


# ----------------------------------------------------------------------------- frequency


def test_token_categories(minilm):
    _, tokenizer = minilm
    ids = tokenizer(["hello , world ."], return_tensors="pt")["input_ids"]
    cats = frequency.token_categories(tokenizer, ids)
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    assert [t for t, d in zip(tokens, cats["delimiter"][0]) if d] == [",", "."]
    assert [t for t, s in zip(tokens, cats["special"][0]) if s] == ["[CLS]", "[SEP]"]
    assert cats["first"][0].tolist() == [True] + [False] * (len(tokens) - 1)


def test_proxy_counts_on_a_tiny_corpus(tmp_path, minilm, monkeypatch):
    _, tokenizer = minilm
    monkeypatch.setenv("BERTBUSTERS_RESULTS", str(tmp_path / "cache"))
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat . the dog .\nthe end\n")
    from bertbusters_nb.data import texts as data  # load_texts reads is_held_out from texts

    monkeypatch.setattr(data, "is_held_out", lambda text: False)
    counts = frequency.proxy_token_counts(tokenizer, [str(corpus)])
    vocab = tokenizer.get_vocab()
    assert counts.counts[vocab["the"]] == 3 and counts.counts[vocab["."]] == 2 and counts.counts[vocab["cat"]] == 1
    assert counts.counts[tokenizer.cls_token_id] == 2 and counts.counts[tokenizer.sep_token_id] == 2
    assert counts.tokens == 3 + 2 + 1 + 1 + 1 + 4 and not counts.exact
    assert list((tmp_path / "cache" / "token_counts").glob("*/table.parquet"))  # in the shared results cache
    again = frequency.proxy_token_counts(tokenizer, [str(corpus)])
    assert np.array_equal(again.counts, counts.counts)


def test_pretraining_counts_rebuild_the_recorded_chunks(tmp_path, monkeypatch):
    """A tiny model folder made the way pretraining does it: the rebuilt chunks must match its recorded SHA-1."""
    import hashlib
    import json

    from bertbusters_nb import data
    from bertbusters_nb.pretraining import tokenizer as tt

    monkeypatch.setenv("BERTBUSTERS_RESULTS", str(tmp_path / "cache"))
    texts = ["the cat sat . the dog ran .", "a bird , a tree .", "the end of the story ."] * 5
    monkeypatch.setattr(data, "load_texts", lambda name, split="all", min_words=0: list(texts))
    folder = tmp_path / "model"
    tokenizer = tt.train_tokenizer(texts, vocab_size=60, out_dir=folder, min_frequency=1)
    chunks = tt.pack_chunks(tt.encode_texts(tokenizer, texts), 8, tokenizer.cls_token_id, tokenizer.sep_token_id)
    info = {"corpora": ["tiny"], "seq_len": 8, "train_sha1": hashlib.sha1(chunks.tobytes()).hexdigest()}
    (folder / "training_config.json").write_text(json.dumps({"data": info}))
    counts = frequency.pretraining_token_counts(folder)
    assert counts.exact and counts.tokens == chunks.size
    assert np.array_equal(counts.counts[: chunks.max() + 1], np.bincount(chunks.ravel().astype(np.int64)))
    info["train_sha1"] = "0" * 40
    (folder / "training_config.json").write_text(json.dumps({"data": info}))
    assert not frequency.pretraining_token_counts(folder, cache=False).exact
    with pytest.raises(FileNotFoundError, match="proxy_token_counts"):
        frequency.pretraining_token_counts(tmp_path)


def test_partial_correlation_removes_a_shared_cause():
    rng = np.random.default_rng(0)
    z = rng.normal(size=2000)
    x, y = z + rng.normal(size=2000) * 0.3, z + rng.normal(size=2000) * 0.3
    assert np.corrcoef(x, y)[0, 1] > 0.8
    assert abs(frequency.partial_correlation(x, y, z[:, None])) < 0.1
    assert abs(frequency.partial_correlation(x, y, z[:, None], rank=True)) < 0.15


def _table(n: int, slope: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    log_count = rng.uniform(0, 10, n)
    return pd.DataFrame(
        {
            "token_id": range(n),
            "token": [f"t{i}" for i in range(n)],
            "log_count": log_count,
            "count": np.expm1(log_count),
            "mean_abs": slope * log_count + rng.normal(size=n),
            "mean_position": rng.uniform(0, 60, n),
            "special": np.arange(n) < 2,
            "layer": 1,
            "dim": 3,
        }
    )


def test_frequency_correlation_and_verdict():
    counts = frequency.TokenCounts(np.ones(10, dtype=np.int64), "a test corpus", True, 10)
    strong = frequency.frequency_correlation(_table(300, 1.0), n_boot=200)
    assert set(strong.measure) == {"pearson", "spearman", "partial_pearson", "partial_spearman"}
    row = strong.set_index("measure").loc["pearson"]
    assert row.value > 0.8 and row.ci_low <= row.value <= row.ci_high
    assert claims.frequency_correlation_holds(strong) is True
    none = frequency.frequency_correlation(_table(300, 0.0), n_boot=200)
    assert claims.frequency_correlation_holds(none) is False
    assert "No positive correlation" in claims.frequency_sentence(none, counts, "m")
    with pytest.raises(ValueError, match="too few"):
        frequency.frequency_correlation(_table(4, 1.0))


def test_token_occurrences_and_tables_on_bbmini(bbmini):
    model, tokenizer = bbmini
    occ = frequency.token_occurrences(model, tokenizer, TEXTS, [81, 126], max_length=32, progress=False)
    n_tokens = sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    assert len(occ) == n_tokens * (model.config.num_hidden_layers + 1) * 2
    with torch.no_grad():
        states = model.bert(**tokenizer(TEXTS[:1], return_tensors="pt"), output_hidden_states=True).hidden_states
    first = occ[(occ.text == 0) & (occ.layer == 2) & (occ.dim == 81)].sort_values("position")
    assert np.allclose(first.value.to_numpy(), states[2][0, :, 81].numpy(), atol=1e-5)
    counts = frequency.TokenCounts(np.arange(len(tokenizer), dtype=np.int64), "ids as counts", False, 0)
    table = frequency.frequency_table(occ, counts, 2, 81, min_occurrences=1)
    assert (table["count"] == table.token_id).all() and table.occurrences.sum() == n_tokens
    tokens, shares = frequency.top_activation_tokens(occ, 81, top_share=0.2)
    assert 0 <= shares["top_any"] <= 1 and tokens.share_of_top.sum() <= 1 + 1e-9
    assert isinstance(claims.top_activations_on_special_tokens(shares, "bbmini").held, bool)
    with pytest.raises(ValueError, match="No occurrences"):
        frequency.frequency_table(occ, counts, 2, 5)


def test_snapshot_availability_on_bbmini():
    from bertbusters_nb.model.loading import resolve

    emerged, snapshots, steps = frequency.snapshot_availability(resolve("bbmini"), [81])
    assert emerged.dim.tolist() == [81] and emerged.first_step_in_most_sites.notna().all()
    assert snapshots == [] and steps == sorted(steps) and len(steps) > 1
    assert "no intermediate weights" in claims.snapshot_sentence(emerged, len(snapshots), "bbmini", steps, 3.0)


def test_subject_conditions_exclude_the_outliers(bbmini):
    model, tokenizer = bbmini
    counts = frequency.TokenCounts(np.zeros(len(tokenizer), dtype=np.int64), "none", False, 0)
    subject = why.Subject(
        "bbmini", model, tokenizer, "mlm", find_norm_sites(model), [81, 126], counts, ("block_output",)
    )
    conditions = why.conditions(subject, 5, seed=1)
    assert [c.name for c in conditions[:2]] == ["none", "outliers"] and len(conditions) == 7
    assert all(not set(c.dims) & {81, 126} and len(c.dims) == 2 for c in conditions[2:])
    excluded = why.random_excluded(subject, 5, seed=1)
    assert excluded["outliers"] == (81, 126) and [excluded[f"random {i}"] for i in range(5)] == [
        c.dims for c in conditions[2:]
    ]
    assert why.has_trajectory(subject)


def test_run_study_returns_tidy_tables_that_the_claims_state(bbmini):
    """Notebook 07's loops live in why.run_study: one table per measurement with a model column, and the claims
    turn them into one finding per model and section."""
    model, tokenizer = bbmini
    counts = frequency.TokenCounts(np.arange(len(tokenizer), dtype=np.int64), "ids as counts", False, 0)
    subject = why.Subject(
        "bbmini", model, tokenizer, "mlm", find_norm_sites(model), [81, 126], counts, ("block_output",)
    )
    settings = why.WhySettings(
        k=3.0,
        max_length=32,
        batch_size=6,
        min_occurrences=1,
        n_boot=20,
        random_draws=3,
        attention_texts=3,
        quant_texts=3,
    )
    result = why.run_study([subject], TEXTS * 4, settings)
    tables = result.tables()
    assert set(tables) >= {"models", "frequency_correlations", "attention_sinks", "quantization", "kurtosis"}
    assert all((t.model == "bbmini").all() for t in tables.values() if len(t))
    assert set(result.sinks.condition) == {"none", "outliers", "random 0", "random 1", "random 2"}
    assert list(result.quantization.group) == ["fp32", "w8a8", "outliers", "random", "random", "random"]
    assert result.snapshots["bbmini"][0] == 0 and len(result.emergence) == 2  # the packaged model's timeline
    sections = [
        claims.frequency_findings(result),
        claims.over_training_findings(result),
        claims.top_token_findings(result),
        claims.quantization_findings(result),
        claims.kurtosis_findings(result),
    ]
    assert [len(s) for s in sections] == [1, 1, 1, 1, 1] and len(claims.sink_findings(result)) == 2
    assert all(f.outcome in claims.OUTCOMES and f.claim.startswith("bbmini: ") for s in sections for f in s)
    assert claims.over_training_findings(result)[0].held is None
