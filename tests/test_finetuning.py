"""Fine-tuning on HF Trainer: settings, the cache (key, reuse, atomic entries, corrupt entries), determinism."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers as T

from bertbusters_nb.finetuning import (
    MANIFEST,
    CacheWarning,
    FinetuneSettings,
    build_parser,
    cache_key,
    check_entry,
    entry_path,
    finetune,
    per_device_batch_size,
)
from bertbusters_nb.finetuning.trainer import _last_complete_checkpoint
from bertbusters_nb.model.fingerprint import weights_fingerprint

FAST = dict(
    epochs=1.0, max_steps=3, batch_size=8, max_length=24, max_train_samples=24, checkpoint_steps=0, learning_rate=1e-3
)


@pytest.fixture(scope="module")
def cached(tiny_bert_dir, tmp_path_factory):
    """One fine-tune of the tiny model on rt, written to a fresh cache."""
    cache = tmp_path_factory.mktemp("finetuned")
    return finetune(tiny_bert_dir, "rt", FinetuneSettings(**FAST), cache_dir=cache, device="cpu", progress=False), cache


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_defaults_are_the_follow_up_protocol():
    s = FinetuneSettings()
    assert (s.epochs, s.learning_rate, s.batch_size, s.max_length, s.weight_decay, s.seed) == (
        4,
        2e-5,
        32,
        256,
        0.01,
        42,
    )


@pytest.mark.parametrize(
    "bad",
    [
        dict(epochs=0),
        dict(learning_rate=-1.0),
        dict(batch_size=0),
        dict(max_steps=0),
        dict(max_train_samples=-5),
        dict(warmup_ratio=1.5),
        dict(weight_decay=-0.1),
        dict(batch_size=32, gradient_accumulation_steps=3),
        dict(max_eval_samples=True),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(bad):
    with pytest.raises(ValueError, match="|".join(bad)):
        FinetuneSettings(**bad)


def test_the_key_holds_what_changes_the_weights_and_only_that(tiny_bert_dir):
    base = FinetuneSettings(**FAST)
    key = cache_key(tiny_bert_dir, "rt", base)
    assert key["weights"].startswith("sha256:") and key["task"] == "rt" and key["seed"] == 42
    for change in (dict(seed=1), dict(learning_rate=2e-3), dict(max_train_samples=48), dict(group_by_length=True)):
        assert entry_path(tiny_bert_dir, "rt", FinetuneSettings(**{**FAST, **change}), "/c") != entry_path(
            tiny_bert_dir, "rt", base, "/c"
        ), change
    for change in (dict(max_eval_samples=10), dict(eval_batch_size=7), dict(checkpoint_steps=5)):
        assert entry_path(tiny_bert_dir, "rt", FinetuneSettings(**{**FAST, **change}), "/c") == entry_path(
            tiny_bert_dir, "rt", base, "/c"
        ), change
    assert entry_path(tiny_bert_dir, "snli", base, "/c") != entry_path(tiny_bert_dir, "rt", base, "/c")
    assert weights_fingerprint("bert-base-uncased") == "hub:bert-base-uncased"


def test_a_finetune_writes_a_complete_safetensors_entry(cached):
    result, cache = cached
    assert not result.reused and result.path.parent == cache
    names = {p.name for p in result.path.iterdir()}
    assert "model.safetensors" in names and MANIFEST in names and not any(n.endswith(".bin") for n in names)
    assert not [p for p in cache.iterdir() if p.name.startswith((".tmp-", ".work-"))]  # nothing left half-done
    manifest = json.loads((result.path / MANIFEST).read_text())
    assert manifest["train"]["steps"] == 3 and manifest["settings"]["max_steps"] == 3
    assert set(manifest["files"]) >= {"model.safetensors", "config.json"}
    assert result.model.config.num_labels == 2 and result.model.config.id2label[1] == "positive"
    assert not result.model.training
    assert manifest["train"]["last_layer_first_token_only"] is True  # a BERT head reads the first token


def test_the_same_key_reuses_the_entry_without_training(cached, tiny_bert_dir, monkeypatch):
    result, cache = cached
    import bertbusters_nb.finetuning.trainer as ft  # finetune() calls trainer._train

    monkeypatch.setattr(ft, "_train", lambda *a, **k: pytest.fail("trained although the cache holds the entry"))
    again = finetune(
        tiny_bert_dir,
        "rt",
        FinetuneSettings(**{**FAST, "max_eval_samples": 5}),
        cache_dir=cache,
        device="cpu",
        progress=False,
    )
    assert again.reused and again.path == result.path
    for name, tensor in _weights(again.model).items():
        assert torch.equal(tensor, _weights(result.model)[name]), name


def test_training_is_deterministic_and_changes_the_weights(cached, tiny_bert_dir, tmp_path):
    result, _ = cached
    redo = finetune(tiny_bert_dir, "rt", FinetuneSettings(**FAST), cache_dir=tmp_path, device="cpu", progress=False)
    first, second = _weights(result.model), _weights(redo.model)
    assert all(torch.equal(first[k], second[k]) for k in first)
    pretrained = T.BertModel.from_pretrained(tiny_bert_dir).state_dict()
    assert not torch.equal(
        first["bert.encoder.layer.0.output.LayerNorm.weight"], pretrained["encoder.layer.0.output.LayerNorm.weight"]
    )


@pytest.mark.parametrize("damage", ["truncate_weights", "drop_manifest", "corrupt_manifest", "drop_weights"])
def test_a_corrupt_or_incomplete_entry_is_recomputed_with_a_warning(cached, tiny_bert_dir, tmp_path, damage):
    result, _ = cached
    settings = FinetuneSettings(**FAST)
    path = tmp_path / result.path.name
    shutil.copytree(result.path, path)  # a good entry, then damaged
    assert check_entry(path, cache_key(tiny_bert_dir, "rt", settings)) is None
    if damage == "truncate_weights":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "drop_manifest":
        (path / MANIFEST).unlink()
    elif damage == "corrupt_manifest":
        (path / MANIFEST).write_text('{"key": ')
    else:
        (path / "model.safetensors").unlink()
    assert check_entry(path, cache_key(tiny_bert_dir, "rt", settings)) is not None
    with pytest.warns(CacheWarning, match="recomputing"):
        again = finetune(tiny_bert_dir, "rt", settings, cache_dir=tmp_path, device="cpu", progress=False)
    assert not again.reused and check_entry(path, cache_key(tiny_bert_dir, "rt", settings)) is None
    assert all(torch.equal(v, _weights(result.model)[k]) for k, v in _weights(again.model).items())


def test_an_entry_for_other_settings_is_not_trusted(cached, tiny_bert_dir):
    result, _ = cached
    other = cache_key(tiny_bert_dir, "rt", FinetuneSettings(**{**FAST, "seed": 7}))
    assert "other settings" in check_entry(result.path, other)


def test_resume_picks_the_newest_complete_trainer_checkpoint(tmp_path):
    assert _last_complete_checkpoint(tmp_path / "absent") is None
    for step, complete in ((5, True), (10, True), (15, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert _last_complete_checkpoint(tmp_path).endswith("checkpoint-10")


def test_the_batch_is_total_and_split_over_processes(monkeypatch):
    assert per_device_batch_size(FinetuneSettings(batch_size=32), world_size=4) == 8
    assert per_device_batch_size(FinetuneSettings(batch_size=32, gradient_accumulation_steps=2), world_size=2) == 8
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun / accelerate launch set
    assert per_device_batch_size(FinetuneSettings(batch_size=32)) == 16
    with pytest.raises(ValueError, match="does not split over 3"):
        per_device_batch_size(FinetuneSettings(batch_size=32), world_size=3)


def test_command_line_builds_the_settings():
    args = build_parser().parse_args(
        ["--model", "minilm", "--task", "rt", "--epochs", "2", "--max_train_samples", "100", "--group_by_length"]
    )
    assert args.epochs == 2.0 and args.max_train_samples == 100 and args.group_by_length and args.seed == 42
    assert args.max_steps is None


def test_unknown_task_is_refused_before_any_training(tiny_bert_dir, tmp_path):
    with pytest.raises(ValueError, match="Unknown task"):
        finetune(tiny_bert_dir, "sst-2", FinetuneSettings(**FAST), cache_dir=tmp_path)


def test_command_line_parses_into_the_two_dataclasses_and_refuses_what_it_does_not_know():
    from bertbusters_nb.finetuning.cli import FinetuneCommand, parse

    command, settings = parse(
        ["--model", "minilm", "--task", "rt", "--recompute", "--max_steps", "7", "--cache_dir", "/c"]
    )
    assert command == FinetuneCommand(model="minilm", task="rt", cache_dir="/c", recompute=True)
    assert settings == FinetuneSettings(max_steps=7)
    with pytest.raises(SystemExit):
        parse(["--model", "minilm", "--task", "rt", "--no_such_flag", "1"])
    with pytest.raises(SystemExit):
        parse(["--task", "rt"])  # --model is required
    with pytest.raises(ValueError, match="epochs"):
        parse(["--model", "minilm", "--task", "rt", "--epochs", "0"])


def test_the_command_line_fine_tunes_into_the_cache_and_reuses_it(cached, tiny_bert_dir, capsys):
    """``python -m bertbusters_nb.finetuning`` and ``python -m bertbusters_nb finetune`` print the same entry."""
    from bertbusters_nb.__main__ import main as top_main
    from bertbusters_nb.finetuning.cli import main

    result, cache = cached
    flags = ["--model", tiny_bert_dir, "--task", "rt", "--cache_dir", str(cache), "--device", "cpu"] + [
        x for k, v in FAST.items() for x in (f"--{k}", str(v))
    ]
    assert main(flags) == 0
    assert capsys.readouterr().out.strip() == str(result.path)
    assert top_main(["finetune", *flags]) == 0
    assert capsys.readouterr().out.strip() == str(result.path)


def test_the_cache_keys_backbones_with_the_one_weights_fingerprint(tiny_bert_dir):
    assert cache_key(tiny_bert_dir, "rt", FinetuneSettings(**FAST))["weights"] == weights_fingerprint(tiny_bert_dir)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_training_the_last_layer_at_the_first_token_only_trains_the_same_weights(dropout):
    """The head reads the first token, so running the last layer's token-wise part there alone changes no gradient:
    a few AdamW steps end at the same weights, with dropout too (the last layer's dropouts draw the full layer's
    masks, so every later draw is the same); a head that averages every token is refused by the check."""
    from bertbusters_nb.evaluation.surgery import checked_first_token_entry, first_token_only

    config = T.BertConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=120,
        num_labels=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(0)
    ids = torch.randint(5, 120, (6, 11))
    mask = torch.ones_like(ids)
    mask[3:, 7:] = 0  # padded examples too
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0, 1, 0])}
    trained = []
    for gather in (False, True):
        torch.manual_seed(1)
        model = T.BertForSequenceClassification(config).train()
        entry, layer = checked_first_token_entry(model, batch) if gather else (None, None)
        assert (entry is model.bert.encoder.layer[-1].attention.output) == gather and model.training
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        seen = []
        last_ffn = model.bert.encoder.layer[-1].intermediate
        handle = last_ffn.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape[:2])))
        with first_token_only(entry, layer):
            for _ in range(4):
                model(**batch).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
        handle.remove()
        assert seen == [(6, 1 if gather else 11)] * 4
        trained.append(_weights(model))
    for name, tensor in trained[0].items():
        torch.testing.assert_close(trained[1][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    torch.manual_seed(1)
    initial = T.BertForSequenceClassification(config)
    assert not torch.equal(
        trained[1]["bert.encoder.layer.2.output.dense.weight"], initial.bert.encoder.layer[2].output.dense.weight
    )

    averaging = T.BertForSequenceClassification(config)
    dense = averaging.bert.pooler.dense
    averaging.bert.pooler.forward = lambda hidden: torch.tanh(dense(hidden.mean(1)))
    assert checked_first_token_entry(averaging, batch) == (None, None)
