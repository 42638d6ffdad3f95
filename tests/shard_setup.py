"""The tiny model and eval set of the sharding test, built the same way in every process."""

from __future__ import annotations

from conftest import tiny_model
from test_evaluation import TOK, random_texts

from bertbusters_nb.evaluation import prepare_mlm_eval


def tiny_scan_setup():
    return tiny_model("bert"), prepare_mlm_eval(TOK, random_texts(12, seed=5), seed=2, batch_size=4, device="cpu")
