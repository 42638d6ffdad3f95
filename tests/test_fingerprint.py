"""Model identities that key scan checkpoints (in memory) and the fine-tuning cache (on disk)."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import tiny_model

from bertbusters_nb.model.discovery import find_norm_sites
from bertbusters_nb.model.fingerprint import model_fingerprint, weights_fingerprint
from bertbusters_nb.model.sites import select_sites

pytestmark = pytest.mark.usefixtures("one_thread")


def test_model_fingerprint_tells_models_apart_and_is_stable():
    a, b = tiny_model("bert"), tiny_model("bert")  # same seed: the same model
    sites = find_norm_sites(a)
    assert model_fingerprint(a, sites) == model_fingerprint(a, sites) == model_fingerprint(b, find_norm_sites(b))
    assert len(model_fingerprint(a, sites)) == 16
    b.config._name_or_path = "elsewhere"  # where it was loaded from does not change what it is
    assert model_fingerprint(b, find_norm_sites(b)) == model_fingerprint(a, sites)
    assert model_fingerprint(tiny_model("llama"), []) != model_fingerprint(a, [])
    site = select_sites(sites, "block_output")[-1]
    with torch.no_grad():
        site.weight[5] += 0.5  # one norm value deep inside the vector (not among the first 8 of any parameter)
    assert model_fingerprint(a, sites) != model_fingerprint(b, find_norm_sites(b))


def test_weights_fingerprint_hashes_a_folder_by_content(tiny_bert_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert_dir, copy)
    first = weights_fingerprint(tiny_bert_dir)
    assert first.startswith("sha256:") and weights_fingerprint(copy) == first  # same bytes, other place
    (copy / "config.json").write_text((copy / "config.json").read_text().replace('"hidden_act"', '"hidden_act" '))
    assert weights_fingerprint(copy) != first
    assert weights_fingerprint("someone/some-model") == "hub:someone/some-model"
