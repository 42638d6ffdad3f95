"""GGUF checkpoints: the packaged SmolLM2 by alias and by path, converted once to safetensors in the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bertbusters_nb import ModelLoadError, find_norm_sites, load_model
from bertbusters_nb.data import assets
from bertbusters_nb.model import gguf as gguf_module
from bertbusters_nb.model.gguf import SOURCE_FILE, converted_folder, sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2", head="causal-lm", device="cpu")


def test_smollm2_alias_is_the_real_pretrained_llama(smollm2):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert (model.config.num_hidden_layers, model.config.hidden_size, len(tokenizer)) == (30, 576, 49152)
    roles = [s.role for s in find_norm_sites(model)]
    assert (roles.count("pre_attention"), roles.count("pre_ffn"), roles.count("final")) == (30, 30, 1)
    batch = tokenizer(["The film was a delight from start to finish, and the cast was wonderful."], return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape == (1, batch["input_ids"].shape[1], 49152)
    assert float(out.loss) < 6.0  # a pretrained LM; uniform guessing would be ln(49152) = 10.8


def test_conversion_is_cached_with_the_gguf_checksum(smollm2, monkeypatch):
    gguf = assets.smollm2_gguf()
    folder = converted_folder(gguf)
    source = json.loads((folder / SOURCE_FILE).read_text())
    assert source["sha256"] == sha256_file(gguf) and source["name"] == gguf.name
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.gguf"))

    def no_conversion(*_args, **_kwargs):
        raise AssertionError("converted again although the cache holds the safetensors")

    monkeypatch.setattr(gguf_module, "_convert", no_conversion)
    assert converted_folder(gguf) == folder
    model, _ = load_model(gguf, head="causal-lm", device="cpu")  # a GGUF path loads from the same cache folder
    reference = smollm2[0].model.layers[3].post_attention_layernorm.weight
    assert torch.equal(model.model.layers[3].post_attention_layernorm.weight, reference)


def _fake_gguf(path: Path, payload: bytes = b"weights") -> Path:
    path.write_bytes(b"GGUF" + payload)
    return path


def test_conversion_is_atomic_and_redone_when_stale(tmp_path, monkeypatch):
    gguf = _fake_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"

    def broken(_gguf, out, _progress):
        (out / "config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(gguf_module, "_convert", broken)
    with pytest.raises(gguf_module.GGUFError, match="disk full"):
        converted_folder(gguf, cache)
    assert list(cache.iterdir()) == []  # neither a half folder nor a temporary one

    def fake(_gguf, out, _progress):
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"x")

    monkeypatch.setattr(gguf_module, "_convert", fake)
    folder = converted_folder(gguf, cache)
    assert [p.name for p in cache.iterdir()] == [folder.name] and folder.name.startswith("tiny-")
    (folder / SOURCE_FILE).write_text(json.dumps({"sha256": "0" * 64}))  # written for other bytes
    (folder / "model.safetensors").write_bytes(b"stale")
    assert converted_folder(gguf, cache) == folder and (folder / "model.safetensors").read_bytes() == b"x"
    _fake_gguf(gguf, b"other weights")  # new bytes, new folder
    assert converted_folder(gguf, cache) != folder


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: _fake_gguf(p / "m.gguf").write_bytes(b"PK\x03\x04 not gguf") and p / "m.gguf", "not a GGUF file"),
        (lambda p: [_fake_gguf(p / "a.gguf"), _fake_gguf(p / "b.gguf")] and p, "several GGUF files"),
        (lambda p: p / "missing.gguf", "does not exist"),
    ],
)
def test_bad_gguf_paths_are_clear_errors(tmp_path, make, match):
    with pytest.raises(ModelLoadError, match=match):
        load_model(make(tmp_path), head="causal-lm")


def test_a_second_process_waits_for_the_conversion_instead_of_converting_again(tmp_path, monkeypatch):
    """Two notebooks that start on SmolLM2 at once convert it once: the later one waits on the lock, then reads."""
    import threading

    from filelock import FileLock

    gguf = _fake_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"
    cache.mkdir()
    converted = []

    def fake(_gguf, out, _progress):
        converted.append(out)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"x")

    monkeypatch.setattr(gguf_module, "_convert", fake)
    first_check = threading.Event()
    real_complete = gguf_module._complete

    def complete(folder, sha):
        done = real_complete(folder, sha)
        first_check.set()  # the waiter has seen no folder: without the lock it would convert now
        return done

    monkeypatch.setattr(gguf_module, "_complete", complete)
    result = {}
    with FileLock(gguf_module.conversion_lock(cache)):  # "the other process" holds the lock while it converts
        waiter = threading.Thread(target=lambda: result.setdefault("folder", converted_folder(gguf, cache)))
        waiter.start()
        assert first_check.wait(timeout=60)
        folder = gguf_module._convert_into(
            gguf, sha256_file(gguf), cache, cache / f"tiny-{sha256_file(gguf)[:16]}", False
        )
    waiter.join(timeout=60)
    assert result["folder"] == folder and len(converted) == 1
    assert [p.name for p in cache.iterdir()] == [folder.name]
