"""Every bad input gets a clear error that names the fix (issue 8's table).

Each case: the call, the error type, and words of the message that say what to do. A case
also fails if the error escapes from inside torch/transformers/datasets without our message.
"""

from __future__ import annotations

import pytest
from conftest import tiny_model
from torch import nn

import bertbusters_nb as bb
from bertbusters_nb import atomic, data, runner
from bertbusters_nb.model.loading import ModelLoadError
from bertbusters_nb.model.sites import NormLayoutError

MODEL = tiny_model("bert")
SITES = bb.find_norm_sites(MODEL)
BLOCK = bb.select_sites(SITES, "block_output")


def _corrupt_json(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"rows": [1, 2')
    return atomic.read_json(path)


def _unknown_layout():
    from bertbusters_nb.model import architectures

    # MRA's attention does not mix tokens on a short input, so its first LayerNorm looks post-FFN (issue 14)
    return bb.find_norm_sites(architectures.tiny_model("mra", "masked-lm"))


def _blank_corpus(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("  \n\t\n")
    return data.load_texts(str(path))


def _bad_param(tmp_path, values):
    return runner.check_parameters(runner.numbered_notebooks()[0], values)


def _disable(dims):
    with bb.disabled_dims(BLOCK, dims):
        pass


def _eval_set(batch_size=4):
    from transformers import AutoTokenizer

    from bertbusters_nb.data import assets
    from bertbusters_nb.evaluation import prepare_mlm_eval

    return prepare_mlm_eval(
        AutoTokenizer.from_pretrained(assets.minilm_dir()),
        ["a few words here", "and a few more"],
        max_length=16,
        batch_size=batch_size,
    )


def _scan(limit=None, max_examples=None):
    from bertbusters_nb.evaluation import mlm_effects

    return mlm_effects.run_scan(MODEL, _eval_set(), ["block_output"], limit, "/nonexistent/scan.json", max_examples)


def _live(tmp_path, seconds):
    from bertbusters_nb.analysis import emergence

    return emergence.live_pretraining(str(tmp_path / "live"), seconds)


def _pretrain_config(tmp_path, time_limit_s):
    from bertbusters_nb.pretraining import PretrainConfig

    return PretrainConfig(data_dir=str(tmp_path), time_limit_s=time_limit_s)


CASES = {
    "hub name without a hub": (lambda t: bb.load_model("bert-base-uncased"), ModelLoadError, "Offline models"),
    "folder that is not a model": (lambda t: bb.load_model(str(t)), ModelLoadError, "no config.json"),
    "model with no norm layers": (
        lambda t: bb.find_norm_sites(nn.Sequential(nn.Linear(2, 2))),
        NormLayoutError,
        "No LayerNorm or RMSNorm",
    ),
    "layout the site finder does not know": (lambda t: _unknown_layout(), NormLayoutError, "cannot give it a role"),
    "dim out of range": (lambda t: _disable([32]), ValueError, "hidden size is 32"),
    "negative dim": (lambda t: _disable([-3]), ValueError, "out of range"),
    "duplicated dims": (lambda t: _disable([4, 4]), ValueError, "more than once"),
    "dims not integers": (lambda t: _disable([1.0]), TypeError, "integers"),
    "empty dims": (lambda t: _disable([]), ValueError, "at least one"),
    "layer range outside the model": (
        lambda t: bb.select_sites(SITES, "block_output", layers=range(2, 9)),
        ValueError,
        "layers run from 0 to 2",
    ),
    "site role the model lacks": (lambda t: bb.select_sites(SITES, "pre_ffn"), ValueError, "it has"),
    "empty dataset": (lambda t: _blank_corpus(t), ValueError, "no non-empty texts"),
    "unknown corpus": (lambda t: data.load_texts("wikitxt"), ValueError, "pick one of"),
    "misspelled papermill parameter": (
        lambda t: _bad_param(t, {"modle_name": "x"}),
        runner.ParameterError,
        "Did you mean 'model_name'",
    ),
    "papermill parameter of the wrong type": (
        lambda t: _bad_param(t, {"k": "three"}),
        runner.ParameterError,
        "must be float",
    ),
    "papermill parameter out of its range": (
        lambda t: _bad_param(t, {"n_texts": -5}),
        runner.ParameterError,
        r"n_texts must be an integer >= 1, or 0 \(all\); got -5",
    ),
    "negative number of texts": (
        lambda t: data.sample_texts(["a", "b", "c"], -1),
        ValueError,
        r"must be an integer >= 1, or 0 \(all\); got -1",
    ),
    "zero random draws": (lambda t: bb.random_dims(32, 2, draws=0), ValueError, "draws must be >= 1"),
    "negative scan limit": (lambda t: _scan(limit=-3), ValueError, r"limit \(dims to scan\) must be an integer >= 1"),
    "zero-example scan subset": (lambda t: _scan(max_examples=-1), ValueError, "max_examples must be an integer"),
    "zero batch size": (lambda t: _eval_set(batch_size=0), ValueError, "batch_size must be a positive integer"),
    "zero seconds of live pre-training": (lambda t: _live(t, 0), ValueError, "seconds must be a number of seconds > 0"),
    "negative pre-training time limit": (
        lambda t: _pretrain_config(t, -1.0),
        ValueError,
        r"time_limit_s must be a number of seconds > 0, or 0 \(no limit\)",
    ),
    "corrupt results file": (lambda t: _corrupt_json(t), ValueError, "delete it to recompute"),
    "unknown profile": (
        lambda t: runner.profile_parameters(runner.numbered_notebooks()[0], "quick"),
        ValueError,
        "pick one of",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_a_clear_error(case, tmp_path):
    call, error, words = CASES[case]
    with pytest.raises(error, match=words) as info:
        call(tmp_path)
    tb = info.traceback[-1]
    origin = str(tb.path)
    assert "bertbusters_nb" in origin or "tests" in origin, f"{case}: raised from {origin}, not by our code"


def test_too_long_texts_are_truncated_not_an_error(caplog):
    from bertbusters_nb.evaluation import prepare_mlm_eval

    model, tokenizer = bb.load_model("minilm", head="base", device="cpu")
    long_text = "word " * 2000
    with caplog.at_level("WARNING", logger="bertbusters_nb.evaluation.sets"):
        eval_set = prepare_mlm_eval(tokenizer, [long_text, long_text, "a short one"], max_length=32, seed=0)
    assert eval_set.input_ids.shape[1] <= 32
    said = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert said == ["2 of 3 texts are longer than max_length=32 tokens and were truncated."]
