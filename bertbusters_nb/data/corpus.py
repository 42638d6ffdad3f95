"""The explorer's default corpus: a small seeded sample of the held-out movie reviews.

Kept here (the data layer) so that the choice of the explorer's eval texts is one named rule, next to the
corpora it draws from, and the widgets only call it.

Example:
    >>> texts = explorer_texts(16, seed=42)  # doctest: +SKIP
"""

from __future__ import annotations

EXPLORER_CORPUS = "movie_reviews"
EXPLORER_SPLIT = "heldout"


def explorer_texts(n_texts: int = 16, seed: int = 42) -> list[str]:
    """``n_texts`` held-out movie reviews drawn with ``seed`` (the explorer's eval set when none is given)."""
    from .texts import load_texts, sample_texts

    return sample_texts(load_texts(EXPLORER_CORPUS, split=EXPLORER_SPLIT), n_texts, seed=seed)


__all__ = ["EXPLORER_CORPUS", "EXPLORER_SPLIT", "explorer_texts"]
