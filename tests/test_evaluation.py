"""Evaluation engine: fixed masking, agreement with straightforward per-condition evaluation, OOM back-off."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import transformers as T
from conftest import TINY, tiny_model
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from bertbusters_nb.evaluation import (
    compute_metrics,
    evaluate,
    evaluate_conditions,
    prepare_causal_eval,
    prepare_classification_eval,
    prepare_mlm_eval,
    row_condition,
    table_columns,
)
from bertbusters_nb.evaluation.engine import AblationEngine
from bertbusters_nb.evaluation.sets import IGNORE_INDEX
from bertbusters_nb.model.ablation import Condition, state_fingerprint
from bertbusters_nb.model.discovery import find_norm_sites

WORDS = [f"w{i}" for i in range(100)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer() -> T.PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS (ids < 120, the tiny models' vocabulary), BERT-style framing."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return T.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def random_texts(n: int, seed: int = 0, lo: int = 4, hi: int = 30) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


TOK = tiny_tokenizer()
TEXTS = random_texts(24)
BERT = tiny_model("bert")
GPT2 = tiny_model("gpt2")
CONDITIONS = [
    Condition("none"),
    Condition("one dim, all layers", (3,)),
    Condition("two dims, layers 1-2", (5, 7), layers=(1, 2)),
    Condition("last layer", (11,), layers=(2,)),
    Condition("another last layer", (12,), layers=(2,)),
    Condition("mean mode", (3, 4), mode="mean", layers=(1,)),
    Condition("with embeddings", (9,), roles=("embeddings", "block_output")),
    Condition("attention + head", (2,), roles=("attention_output", "head"), layers=(1,)),
]
GPT2_CONDITIONS = [
    Condition("none"),
    Condition("pre_ffn all", (3,), roles="pre_ffn"),
    Condition("pre_attention 1-2", (4, 8), roles="pre_attention", layers=(1, 2)),
    Condition("final", (6,), roles="final"),
    Condition("pre_ffn last, mean", (1,), roles="pre_ffn", layers=(2,), mode="mean"),
]
ENGINE_VARIANTS = [
    dict(prefix_cache=True),
    dict(prefix_cache=False),
    dict(prefix_cache=True, conditions_per_forward=3),
    dict(prefix_cache=False, batch_size=5),
    dict(prefix_cache=True, cache_budget_bytes=1),
]  # one batch per span


def reference_lm_losses(model, eval_set, conditions, causal: bool) -> list[float]:
    """Per condition: load nothing clever, apply, run HF's own loss batch by batch, token-weighted mean."""
    sites = find_norm_sites(model)
    out = []
    for cond in conditions:
        total, count = 0.0, 0
        with cond.apply(sites), torch.no_grad():
            for batch in eval_set.batches():
                if causal:  # HF shifts the labels itself: label t is the token at t, pads ignored
                    labels = batch.inputs["input_ids"].masked_fill(batch.inputs["attention_mask"] == 0, IGNORE_INDEX)
                else:
                    labels = batch.targets
                n = int((batch.targets != IGNORE_INDEX).sum())
                loss = model(**batch.inputs, labels=labels).loss
                total += float(loss) * n
                count += n
        out.append(total / count)
    return out


@pytest.mark.parametrize("options", ENGINE_VARIANTS)
def test_mlm_engine_matches_straightforward_evaluation(options):
    eval_set = prepare_mlm_eval(TOK, TEXTS, max_length=24, batch_size=8, device="cpu")
    expected = reference_lm_losses(BERT, eval_set, CONDITIONS, causal=False)
    before = state_fingerprint(BERT)
    table = evaluate_conditions(BERT, eval_set, CONDITIONS, progress=False, **options)
    np.testing.assert_allclose(table["eval_loss"], expected, rtol=0, atol=1e-5)
    assert (table["value"] == table["eval_loss"]).all() and (table["metric"] == "eval_loss").all()
    assert all(torch.equal(v, state_fingerprint(BERT)[k]) for k, v in before.items())


@pytest.mark.parametrize("options", ENGINE_VARIANTS)
def test_causal_engine_matches_straightforward_evaluation(options):
    eval_set = prepare_causal_eval(TOK, TEXTS, max_length=20, batch_size=8, device="cpu")
    expected = reference_lm_losses(GPT2, eval_set, GPT2_CONDITIONS, causal=True)
    table = evaluate_conditions(GPT2, eval_set, GPT2_CONDITIONS, progress=False, **options)
    np.testing.assert_allclose(table["eval_loss"], expected, rtol=0, atol=1e-5)
    assert table["tokens"].iloc[0] == int((eval_set.lengths - 1).sum())


def test_prefix_cache_is_used_and_equals_full_forward():
    eval_set = prepare_mlm_eval(TOK, TEXTS, max_length=24, batch_size=8, device="cpu")
    engine = AblationEngine(BERT, eval_set)
    assert engine.stack is not None and len(engine.stack.layers) == TINY["num_hidden_layers"]
    # post-LN BERT: each layer ends in its block-output LayerNorm, so a condition that touches it in layer l
    # starts at l + 1 from that norm's cached input
    assert sorted(engine.stack.terminal) == [0, 1, 2]
    keys = [p.cache_key for p in engine.plan(CONDITIONS)]
    # embeddings force a full forward; attention-output norms are inside their layer
    assert keys == [(0, False), (1, True), (2, True), (3, True), (3, True), (2, True), (0, False), (1, False)]
    assert engine.plan([Condition("head", (1,), roles="head")])[0].cache_key == (3, False)
    batch = eval_set.batch(0, 8)
    with torch.no_grad():
        full = engine.logits(batch, 1)
        for key in [(1, False), (2, False), (3, False), (1, True), (2, True), (3, True)]:
            cache = engine.capture_prefix(batch, [key], run_to_end=False)[0][key]
            torch.testing.assert_close(engine.logits(batch, 1, key, cache), full, rtol=0, atol=1e-5)
    assert all("forward" not in vars(layer) for layer in engine.stack.layers)  # stubs removed


def test_pre_ln_layers_have_no_terminal_norm():
    eval_set = prepare_causal_eval(TOK, TEXTS, max_length=20, batch_size=8, device="cpu")
    engine = AblationEngine(GPT2, eval_set)
    assert engine.stack is not None and engine.stack.terminal == {}
    assert [p.cache_key for p in engine.plan(GPT2_CONDITIONS)] == [
        (0, False),
        (0, False),
        (1, False),
        (3, False),
        (2, False),
    ]


def test_shared_layers_turn_the_prefix_cache_off():
    albert = tiny_model("albert")
    eval_set = prepare_mlm_eval(TOK, TEXTS[:8], max_length=24, batch_size=4, device="cpu")
    engine = AblationEngine(albert, eval_set)
    assert engine.stack is None
    conditions = [Condition("none"), Condition("d", (3,), layers=(0,))]
    expected = reference_lm_losses(albert, eval_set, conditions, causal=False)
    np.testing.assert_allclose([r["eval_loss"] for r in engine.run(conditions, progress=False)], expected, atol=1e-5)


def test_masking_is_identical_across_runs_and_batch_sizes_and_changes_with_seed():
    a = prepare_mlm_eval(TOK, TEXTS, seed=7, batch_size=8, device="cpu")
    b = prepare_mlm_eval(TOK, TEXTS, seed=7, batch_size=3, device="cpu")
    c = prepare_mlm_eval(TOK, TEXTS, seed=8, batch_size=8, device="cpu")
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.targets, b.targets)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not torch.equal(a.targets, c.targets)


def test_masking_is_identical_across_conditions():
    eval_set = prepare_mlm_eval(TOK, TEXTS, max_length=24, batch_size=8, device="cpu")
    snapshot = (eval_set.input_ids.clone(), eval_set.targets.clone())
    sites = find_norm_sites(BERT)  # (its 4-token probe forward is not part of the evaluation)
    seen: list[torch.Tensor] = []
    handle = BERT.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["input_ids"].clone()), with_kwargs=True)
    try:
        evaluate_conditions(BERT, eval_set, CONDITIONS[:4], sites, progress=False, prefix_cache=False, chunk_size=1)
    finally:
        handle.remove()
    assert len(seen) == 4 * 3  # 4 conditions x 3 batches, no other forward
    per_condition = [seen[i * 3 : (i + 1) * 3] for i in range(4)]
    for batches in per_condition[1:]:
        assert all(torch.equal(x, y) for x, y in zip(batches, per_condition[0]))
    assert torch.equal(snapshot[0], eval_set.input_ids) and torch.equal(snapshot[1], eval_set.targets)


def test_masking_follows_80_10_10_and_spares_special_tokens():
    texts = random_texts(400, seed=3, lo=20, hi=30)
    eval_set = prepare_mlm_eval(TOK, texts, mask_prob=0.15, seed=1, device="cpu")
    original = torch.tensor(np.asarray([_pad(TOK(t)["input_ids"], eval_set.input_ids.shape[1]) for t in texts]))
    chosen = eval_set.targets != IGNORE_INDEX
    real = (eval_set.attention_mask == 1) & (original != 2) & (original != 3)
    assert not (chosen & ~real).any()  # [CLS], [SEP], padding never chosen
    assert torch.equal(eval_set.targets[chosen], original[chosen])
    share = chosen.sum() / real.sum()
    masked = (eval_set.input_ids == TOK.mask_token_id) & chosen
    kept = (eval_set.input_ids == original) & chosen
    assert abs(float(share) - 0.15) < 0.01
    assert abs(float(masked.sum() / chosen.sum()) - 0.8) < 0.02
    assert abs(float(kept.sum() / chosen.sum()) - 0.1) < 0.02  # (random may hit the same token: +1/len(vocab))
    assert torch.equal(eval_set.input_ids[~chosen], original[~chosen])


def _pad(ids, width):
    return ids + [0] * (width - len(ids))


def test_out_of_memory_backs_off_to_a_fitting_batch():
    eval_set = prepare_mlm_eval(TOK, TEXTS, max_length=24, batch_size=16, device="cpu")
    expected = reference_lm_losses(BERT, eval_set, CONDITIONS[:4], causal=False)

    def fake_oom(_module, _args, kwargs):
        if kwargs["input_ids"].shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    handle = BERT.register_forward_pre_hook(fake_oom, with_kwargs=True)
    try:
        engine = AblationEngine(BERT, eval_set, conditions_per_forward=2)
        results = engine.run(CONDITIONS[:4], progress=False)
    finally:
        handle.remove()
    np.testing.assert_allclose([r["eval_loss"] for r in results], expected, atol=1e-5)
    assert engine.batch_size == 4 and engine.conditions_per_forward == 1 and engine.backoffs == 3


def test_other_errors_are_not_swallowed_and_the_model_is_restored():
    eval_set = prepare_mlm_eval(TOK, TEXTS, max_length=24, batch_size=8, device="cpu")
    before = state_fingerprint(BERT)
    calls = []

    def boom(_module, _args, _kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyError("not an OOM")

    handle = BERT.register_forward_pre_hook(boom, with_kwargs=True)
    try:
        with pytest.raises(KeyError):
            evaluate_conditions(BERT, eval_set, CONDITIONS, progress=False, prefix_cache=False)
    finally:
        handle.remove()
    after = state_fingerprint(BERT)
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_classification_engine_matches_straightforward_evaluation():
    torch.manual_seed(0)
    model = T.BertForSequenceClassification(T.BertConfig(**TINY, num_labels=3)).eval()
    labels = [i % 3 for i in range(len(TEXTS))]
    eval_set = prepare_classification_eval(
        TOK, TEXTS, labels, task="snli", text_pairs=TEXTS[::-1], max_length=40, batch_size=8, device="cpu"
    )
    sites = find_norm_sites(model)
    table = evaluate_conditions(model, eval_set, CONDITIONS[:4], progress=False, conditions_per_forward=2)
    for cond, (_, row) in zip(CONDITIONS[:4], table.iterrows()):
        with cond.apply(sites), torch.no_grad():
            logits = torch.cat([model(**b.inputs).logits for b in eval_set.batches()])
        ref = compute_metrics("snli", logits.numpy(), labels)
        loss = float(torch.nn.functional.cross_entropy(logits, torch.tensor(labels)))
        assert row["accuracy"] == pytest.approx(ref["accuracy"]) and row["value"] == row["accuracy"]
        assert row["eval_loss"] == pytest.approx(loss, abs=1e-5)
    assert list(table.columns) == table_columns(eval_set)
    assert (table["metric"] == "accuracy").all() and (table["tokens"] == len(TEXTS)).all()


def test_regression_task_reports_pearson_and_spearman():
    torch.manual_seed(0)
    model = T.BertForSequenceClassification(T.BertConfig(**TINY, num_labels=1)).eval()
    scores = [float(i % 5) for i in range(len(TEXTS))]
    eval_set = prepare_classification_eval(TOK, TEXTS, scores, task="stsb", batch_size=8, device="cpu")
    result = evaluate(model, eval_set)
    with torch.no_grad():
        preds = torch.cat([model(**b.inputs).logits[:, 0] for b in eval_set.batches()])
    assert set(result) >= {"pearson", "spearmanr", "eval_loss"}
    assert result["pearson"] == pytest.approx(np.corrcoef(preds.numpy(), scores)[0, 1], abs=1e-6)
    assert result["eval_loss"] == pytest.approx(float(((preds - torch.tensor(scores)) ** 2).mean()), abs=1e-5)


def test_table_schema_and_evaluate():
    eval_set = prepare_mlm_eval(TOK, TEXTS, max_length=24, batch_size=8, device="cpu")
    table = evaluate_conditions(BERT, eval_set, CONDITIONS[:3], progress=False)
    assert list(table.columns) == [
        "condition",
        "dims",
        "n_dims",
        "roles",
        "layers",
        "stack",
        "mode",
        "n_sites",
        "metric",
        "value",
        "eval_loss",
        "perplexity",
        "tokens",
        "examples",
        "seed",
        "kind",
        "spec",
    ]
    assert table["dims"].tolist() == ["", "3", "5 7"] and table["layers"].tolist() == ["all", "all", "1 2"]
    assert table["n_sites"].tolist() == [0, 3, 2] and (table["seed"] == 42).all()
    intact = evaluate(BERT, eval_set)
    assert intact["eval_loss"] == pytest.approx(table["eval_loss"].iloc[0], abs=1e-6)
    assert intact["perplexity"] == pytest.approx(np.exp(intact["eval_loss"]))
    assert intact["tokens"] == eval_set.n_targets


def test_bad_inputs_raise_clear_errors():
    eval_set = prepare_mlm_eval(TOK, TEXTS[:4], device="cpu")
    with pytest.raises(ValueError, match="conditions is empty"):
        evaluate_conditions(BERT, eval_set, [], progress=False)
    with pytest.raises(ValueError, match="out of range"):
        evaluate_conditions(BERT, eval_set, [Condition("x", (99,))], progress=False)
    with pytest.raises(ValueError, match="Unknown task"):
        prepare_classification_eval(TOK, TEXTS[:2], [0, 1], task="nope")
    with pytest.raises(ValueError, match="out of range"):
        prepare_classification_eval(TOK, TEXTS[:2], [0, 2], task="rt")
    with pytest.raises(ValueError, match="empty"):
        prepare_mlm_eval(TOK, [])
    with pytest.raises(ValueError, match="batch_size"):
        AblationEngine(BERT, eval_set, batch_size=0)


def test_rmsnorm_decoder_with_batched_conditions():
    """Llama: RMSNorm sites (the per-condition norm hook's generic path) and the prefix cache."""
    llama = tiny_model("llama")
    eval_set = prepare_causal_eval(TOK, TEXTS[:12], max_length=20, batch_size=6, device="cpu")
    conditions = [
        Condition("none"),
        Condition("pre_ffn", (3,), roles="pre_ffn"),
        Condition("pre_attention 2", (4, 5), roles="pre_attention", layers=(2,)),
        Condition("final", (1,), roles="final"),
        Condition("mean", (7,), roles="pre_ffn", mode="mean"),
    ]
    expected = reference_lm_losses(llama, eval_set, conditions, causal=True)
    assert AblationEngine(llama, eval_set).stack is not None
    for options in (dict(), dict(conditions_per_forward=5), dict(prefix_cache=False, conditions_per_forward=2)):
        table = evaluate_conditions(llama, eval_set, conditions, progress=False, **options)
        np.testing.assert_allclose(table["eval_loss"], expected, rtol=0, atol=1e-5)


def test_each_condition_context_is_entered_once_per_span(monkeypatch):
    eval_set = prepare_mlm_eval(TOK, TEXTS, max_length=24, batch_size=8, device="cpu")  # 3 batches
    entered = []
    original = Condition.apply
    monkeypatch.setattr(Condition, "apply", lambda self, sites: entered.append(self.name) or original(self, sites))
    engine = AblationEngine(BERT, eval_set)
    engine.run(CONDITIONS, progress=False)
    assert sorted(entered) == sorted(c.name for c in CONDITIONS if c.dims)  # once each, not once per batch
    entered.clear()
    small = AblationEngine(BERT, eval_set, cache_budget_bytes=1)
    small.run(CONDITIONS, progress=False)
    cached = [p.condition.name for p in small.plan(CONDITIONS) if p.level > 0]
    assert len(cached) == 6  # all but the intact one and the one that touches the embeddings
    assert sorted(entered) == sorted(
        [c.name for c in CONDITIONS if c.dims and c.name not in cached] + cached * 3
    )  # a span per batch for the conditions that use the cache


def test_head_is_a_smaller_set_with_the_same_masking():
    eval_set = prepare_mlm_eval(TOK, TEXTS, max_length=24, batch_size=8, device="cpu")
    small = eval_set.head(5)
    assert len(small) == 5 and small.batch_size == eval_set.batch_size and small.seed == eval_set.seed
    assert torch.equal(small.input_ids, eval_set.input_ids[:5]) and torch.equal(small.targets, eval_set.targets[:5])
    assert small.fingerprint() != eval_set.fingerprint()
    expected = reference_lm_losses(BERT, small, CONDITIONS[:2], causal=False)
    np.testing.assert_allclose(
        evaluate_conditions(BERT, small, CONDITIONS[:2], progress=False)["eval_loss"], expected, rtol=0, atol=1e-5
    )
    assert eval_set.head(len(eval_set) + 10) is eval_set
    with pytest.raises(ValueError, match="positive"):
        eval_set.head(0)


def test_every_row_reruns_exactly_from_its_stored_condition(tmp_path):
    """Each row carries its condition (``spec``, Condition.to_dict as JSON); re-run alone, also after a CSV
    round trip, it gives the row's numbers bit for bit."""
    import pandas as pd

    eval_set = prepare_mlm_eval(TOK, TEXTS, max_length=24, batch_size=8, device="cpu")
    table = evaluate_conditions(BERT, eval_set, CONDITIONS, progress=False)
    table.to_csv(tmp_path / "table.csv", index=False)
    stored = pd.read_csv(tmp_path / "table.csv", keep_default_na=False)
    assert [row_condition(row) for _, row in stored.iterrows()] == CONDITIONS
    for i in (1, 2, 5, 7):  # all layers, a layer range, mean mode, two roles
        again = evaluate_conditions(BERT, eval_set, [row_condition(stored.iloc[i])], progress=False)
        assert again["value"].iloc[0] == table["value"].iloc[i]
        assert again["eval_loss"].iloc[0] == table["eval_loss"].iloc[i]
    with pytest.raises(ValueError, match="no 'spec'"):
        row_condition(stored.drop(columns="spec").iloc[0])


def _rows_seen_by_last_ffn(model, engine, condition):
    """The (rows, tokens) of every input the last layer's feed-forward block got while ``engine`` evaluated."""
    seen = []
    last = model.base_model.encoder.layer[-1].intermediate
    handle = last.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape[:2])))
    try:
        metrics = engine.evaluate(condition)
    finally:
        handle.remove()
    return seen, metrics


@pytest.mark.parametrize("kind", ["mlm", "classification"])
def test_last_layer_runs_only_at_the_tokens_the_head_reads(kind):
    """Masked LM: the scored tokens; classification: each example's first token. Same losses as every token."""
    torch.manual_seed(0)
    if kind == "mlm":
        model = BERT
        eval_set = prepare_mlm_eval(TOK, TEXTS, max_length=24, batch_size=8, device="cpu")
        expected = [(1, int(eval_set.batch(i, min(i + 8, len(TEXTS))).scored.numel())) for i in range(0, len(TEXTS), 8)]
    else:
        model = T.BertForSequenceClassification(T.BertConfig(**TINY, num_labels=3)).eval()
        labels = [i % 3 for i in range(len(TEXTS))]
        eval_set = prepare_classification_eval(
            TOK, TEXTS, labels, task="snli", text_pairs=TEXTS[::-1], max_length=40, batch_size=8, device="cpu"
        )
        expected = [(min(8, len(TEXTS) - i), 1) for i in range(0, len(TEXTS), 8)]
    fast, full = AblationEngine(model, eval_set), AblationEngine(model, eval_set, gather_last_layer=False)
    assert fast._entry is model.base_model.encoder.layer[-1].attention.output and full._entry is None
    for condition in CONDITIONS[:4]:  # level 0, 1 and 2 (the last layer runs); "last layer" starts after it
        seen, metrics = _rows_seen_by_last_ffn(model, fast, condition)
        seen_full, reference = _rows_seen_by_last_ffn(model, full, condition)
        if condition.name != "last layer":
            assert seen == expected and all(t > 1 for _rows, t in seen_full)
        assert metrics["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-5)


def test_last_layer_gathering_is_off_where_the_head_reads_every_token():
    """A pooler that averages every token, a causal LM and an embedding set: the engine keeps the full last layer."""
    torch.manual_seed(0)
    model = T.BertForSequenceClassification(T.BertConfig(**TINY, num_labels=2)).eval()
    dense = model.bert.pooler.dense
    model.bert.pooler.forward = lambda hidden: torch.tanh(dense(hidden.mean(1)))  # not the first token's state
    labels = [i % 2 for i in range(len(TEXTS))]
    eval_set = prepare_classification_eval(TOK, TEXTS, labels, task="rt", max_length=40, batch_size=8, device="cpu")
    engine = AblationEngine(model, eval_set)
    assert engine._entry is None
    with torch.no_grad():
        logits = torch.cat([model(**b.inputs).logits for b in eval_set.batches()])
    loss = float(torch.nn.functional.cross_entropy(logits, torch.tensor(labels)))
    assert engine.evaluate()["eval_loss"] == pytest.approx(loss, abs=1e-5)
    assert AblationEngine(GPT2, prepare_causal_eval(TOK, TEXTS, max_length=20, batch_size=8))._entry is None
    from bertbusters_nb.evaluation.sets import prepare_embedding_eval

    assert AblationEngine(BERT.bert, prepare_embedding_eval(TOK, TEXTS, max_length=20, batch_size=8))._entry is None
