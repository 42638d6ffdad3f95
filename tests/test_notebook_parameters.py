"""bb.notebook_parameters(globals()): a notebook's parameters captured once, for RunRecorder(config=...)."""

from __future__ import annotations

import json

import pytest

import bertbusters_nb as bb
from bertbusters_nb.runner import declared_parameters, numbered_notebooks

BOOKS = numbered_notebooks()


def kernel_namespace(book, **injected):
    """What a kernel's globals hold after the parameters cell (and papermill's injected cell) and the imports."""
    return {
        "__name__": "__main__",
        "bb": bb,
        "display": print,
        "In": ["", "x = 1"],
        **declared_parameters(book),
        **injected,
    }


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.stem)
def test_every_notebook_gets_exactly_its_parameters(book):
    namespace = kernel_namespace(book)
    captured = bb.notebook_parameters(namespace)
    assert captured == declared_parameters(book)


def test_papermill_values_win_and_are_copied(tmp_path):
    book = next(b for b in BOOKS if b.stem.startswith("03"))
    namespace = kernel_namespace(book, profile="smoke", out_dir="figures/smoke/03_mlm_degradation", n_texts=8)
    captured = bb.notebook_parameters(namespace)
    assert captured["profile"] == "smoke" and captured["n_texts"] == 8
    assert captured["sentences"] == declared_parameters(book)["sentences"]  # the name the hand-typed config forgot
    namespace["roles"].append("attention_output")  # a later change in the notebook leaves the config as it was
    assert captured["roles"] == declared_parameters(book)["roles"]
    rec = bb.RunRecorder(tmp_path, config=captured)
    assert json.loads((rec.out_dir / "config.json").read_text()) == json.loads(json.dumps(captured))


def test_a_notebook_whose_names_contain_another_ones_is_told_apart():
    """00's names are all among 03's: the out_dir folder, else the larger set of names, decides."""
    first, third = (next(b for b in BOOKS if b.stem.startswith(n)) for n in ("00", "03"))
    assert set(declared_parameters(first)) < set(declared_parameters(third))
    assert bb.notebook_parameters(kernel_namespace(first)) == declared_parameters(first)
    elsewhere = kernel_namespace(third, out_dir="/tmp/my_run")
    assert set(bb.notebook_parameters(elsewhere)) == set(declared_parameters(third))
    named = bb.notebook_parameters(kernel_namespace(third), notebook="00")
    assert set(named) == set(declared_parameters(first))


def test_schema_folder_can_be_given(tmp_path):
    (tmp_path / "01_a.schema.json").write_text(json.dumps({"x": {"type": "int"}, "y": {"type": "int"}}))
    (tmp_path / "02_b.schema.json").write_text(json.dumps({"x": {"type": "int"}, "z": {"type": "int"}}))
    assert bb.notebook_parameters({"x": 1, "y": 2, "q": 0}, notebooks_dir=tmp_path) == {"x": 1, "y": 2}
    with pytest.raises(ValueError, match="Cannot tell which notebook"):
        bb.notebook_parameters({"x": 1, "y": 2, "z": 3}, notebooks_dir=tmp_path)  # both complete, same size
    assert bb.notebook_parameters({"x": 1, "y": 2, "z": 3}, notebook="02", notebooks_dir=tmp_path) == {"x": 1, "z": 3}


def test_missing_parameters_name_the_fix(tmp_path):
    book = next(b for b in BOOKS if b.stem.startswith("05"))
    namespace = kernel_namespace(book)
    del namespace["top_k"]
    with pytest.raises(ValueError, match=r"also needs \['top_k'\].*after the parameters cell"):
        bb.notebook_parameters(namespace)
    with pytest.raises(ValueError, match=r"\['top_k'\] are not defined; run the parameters cell first"):
        bb.notebook_parameters(namespace, notebook="05")
    with pytest.raises(ValueError, match="names 0 of the schemas"):
        bb.notebook_parameters(namespace, notebook="99")
    with pytest.raises(FileNotFoundError, match="No NN_name.schema.json"):
        bb.notebook_parameters(namespace, notebooks_dir=tmp_path)


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.stem)
def test_the_parameters_cell_holds_the_offline_profile(book):
    """The README's promise: each parameters cell holds the offline profile's values, so opening a notebook and
    running it is the main job's run; the offline profile overrides nothing with another value."""
    from bertbusters_nb.runner import profile_parameters

    declared = declared_parameters(book)
    assert declared["profile"] == "offline" and declared["out_dir"] == f"figures/offline/{book.stem}"
    differing = {k: v for k, v in profile_parameters(book, "offline").items() if declared.get(k) != v}
    assert differing == {}, f"{book.stem}: the offline profile sets {differing}; put those values in the cell"
