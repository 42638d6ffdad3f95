"""Acceptance on the real packaged MiniLM: consistent outlier dims that matter more than random ones."""

from __future__ import annotations

from bertbusters_nb import Condition, detect, find_norm_sites, find_outliers, random_dims, select_sites
from bertbusters_nb.data import load_texts, sample_texts
from bertbusters_nb.evaluation.embeddings import embedding_drift


def test_outlier_dims_recur_in_most_layers(minilm):
    model, _ = minilm
    report = find_outliers(select_sites(find_norm_sites(model), "block_output"))
    assert report.dims, report.summary()
    top = report.per_dim.iloc[0]
    assert top.sites_flagged > report.n_sites / 2


def test_disabling_outliers_moves_embeddings_more_than_every_random_draw(minilm):
    model, tokenizer = minilm
    sites = find_norm_sites(model)
    report = find_outliers(select_sites(sites, "block_output"))
    texts = sample_texts(load_texts("movie_reviews", split="heldout"), 24, seed=0)
    draws = random_dims(model.config.hidden_size, len(report.dims), draws=20, exclude=report.dims, seed=0)
    conditions = [Condition("outliers", report.dims)] + [Condition(f"r{i}", d) for i, d in enumerate(draws)]
    drift = embedding_drift(model, tokenizer, texts, conditions, progress=False)
    outlier, random = drift.cosine_mean.iloc[0], drift.cosine_mean.iloc[1:]
    assert len(random) >= 20
    assert outlier < random.min(), (outlier, random.min())


def test_sentence_embeddings_keep_the_texts_order_and_equal_each_text_embedded_alone(minilm):
    """Texts are batched by length (less padding); each row is still the embedding of the text at its position,
    the one it gets alone, and no gradient is kept."""
    import torch

    from bertbusters_nb.evaluation.embeddings import sentence_embeddings

    model, tokenizer = minilm
    texts = ["a film.", load_texts("movie_reviews", split="heldout")[0], "dull", "the plot made no sense at all ."]
    together = sentence_embeddings(model, tokenizer, texts, batch_size=2)
    alone = torch.cat([sentence_embeddings(model, tokenizer, [t]) for t in texts])
    assert together.shape == (4, model.config.hidden_size) and not together.requires_grad
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(together[0], together[2], atol=1e-3)  # distinct texts, distinct rows


def test_embedding_drift_on_the_engine_equals_each_condition_embedded_directly(minilm):
    """The drift table comes from the engine (cached prefix, batches of its own): its mean and least cosine per
    condition are those of the plain embeddings under each condition, and the model is left as it was."""
    import torch

    from bertbusters_nb.evaluation.embeddings import sentence_embeddings
    from bertbusters_nb.model.ablation import fingerprints_equal, state_fingerprint

    model, tokenizer = minilm
    texts = sample_texts(load_texts("movie_reviews", split="heldout"), 12, seed=1) + ["dull", "a fine film ."]
    dims = tuple(detect(model, tokenizer).dims)  # the package's one rule
    (other,) = random_dims(model.config.hidden_size, 1, draws=1, exclude=dims, seed=0)
    conditions = [Condition("outliers", dims, ("block_output",)), Condition("random", other, ("block_output",))]
    before = state_fingerprint(model)
    drift = embedding_drift(model, tokenizer, texts, conditions, progress=False, batch_size=4, max_length=64)
    assert fingerprints_equal(state_fingerprint(model), before)
    sites = find_norm_sites(model)
    intact = sentence_embeddings(model, tokenizer, texts, max_length=64)
    for row, condition in zip(drift.itertuples(), conditions):
        with condition.apply(sites):
            cos = torch.nn.functional.cosine_similarity(
                intact, sentence_embeddings(model, tokenizer, texts, max_length=64), dim=-1
            )
        assert abs(row.cosine_mean - float(cos.mean())) < 1e-5 and abs(row.cosine_min - float(cos.min())) < 1e-5
    assert drift.cosine_min.iloc[0] < drift.cosine_mean.iloc[0] < 1.0
