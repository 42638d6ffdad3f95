"""Loading through hub names from a hub cache laid out as huggingface_hub leaves one (``tests/hub_mirror.py``).

The MultiBERTs hold only pickle weights on main: they load from the hub's safetensors conversion (``refs/pr/1``),
by their hub name; without a conversion they are refused, naming the repository and the opt-in; every error
names its real cause."""

from __future__ import annotations

import shutil

import hub_mirror
import pytest
from huggingface_hub import constants

from bertbusters_nb.model import loading
from bertbusters_nb.model.loading import ModelLoadError, load_config, load_model
from bertbusters_nb.studies.across_models import load_for_protocol

MULTIBERTS = "google/multiberts-seed_0-step_0k"
REPOS = tuple(r for r in hub_mirror.REPOS if r.name in (MULTIBERTS, "bert-base-uncased"))


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = hub_mirror.build(tmp_path_factory.mktemp("hub"), REPOS, with_datasets=False)
    patch = pytest.MonkeyPatch()
    patch.setattr(constants, "HF_HUB_CACHE", str(root / "hub"))
    patch.setattr(constants, "HF_HUB_OFFLINE", True)
    patch.setenv("HF_HUB_CACHE", str(root / "hub"))
    patch.setenv("HF_HUB_OFFLINE", "1")
    yield root
    patch.undo()


def test_the_mirror_has_the_multiberts_layout(mirror):
    folder = mirror / "hub" / "models--google--multiberts-seed_0-step_0k"
    main = (folder / "refs" / "main").read_text()
    assert sorted(p.name for p in (folder / "snapshots" / main).iterdir()) == sorted(hub_mirror._MULTIBERTS_FILES)
    assert (folder / "refs" / "refs" / "pr" / "1").is_file()
    assert loading.hub_weights(MULTIBERTS) == {"pytorch_model.bin"}


def test_multiberts_load_by_hub_name_from_the_safetensors_conversion(mirror):
    assert loading.hub_revision(MULTIBERTS) == ("refs/pr/1", True)
    model, tokenizer = load_model(MULTIBERTS, device="cpu")
    assert model.config.model_type == "bert" and tokenizer.tokenize("Hello") == ["hello"]
    assert load_config(MULTIBERTS).model_type == "bert"


def test_pickle_only_without_a_conversion_is_refused_unless_named(mirror, tmp_path):
    folder = mirror / "hub" / "models--google--multiberts-seed_0-step_0k"
    pr = folder / "refs" / "refs"
    moved = tmp_path / "refs"
    shutil.move(str(pr), moved)
    try:
        with pytest.raises(ModelLoadError, match=r"only pickle weights.*allow_pickle=\['google/multiberts") as info:
            load_model(MULTIBERTS, device="cpu")
        assert MULTIBERTS in str(info.value) and "arbitrary code" in str(info.value)
        model, _ = load_model(MULTIBERTS, device="cpu", allow_pickle=[MULTIBERTS])
        assert model.config.model_type == "bert"
        with pytest.raises(ModelLoadError, match="only pickle"):
            load_model(MULTIBERTS, device="cpu", allow_pickle=["bert-base-uncased"])
    finally:
        shutil.move(str(moved), pr)


def test_safetensors_on_main_load_from_main(mirror):
    assert loading.hub_revision("bert-base-uncased") == ("main", True)


@pytest.mark.parametrize("call", [load_model, load_config, load_for_protocol])
def test_an_unknown_name_offline_names_the_cache_not_the_network(mirror, call):
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache.*HF_HUB_OFFLINE=1") as info:
        call("nope")
    assert "reachable" not in str(info.value)
