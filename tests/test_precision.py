"""Evaluation precision: the CPU bf16 decision rule, the fp32 switch, and bf16's loss difference on bbmini.

The decision's timing probe is not tested (tests never depend on machine speed): the rule is tested on
given timings, and the switch on what the engine picks.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from test_evaluation import TOK, random_texts

from bertbusters_nb import device as devices
from bertbusters_nb.evaluation import prepare_mlm_eval
from bertbusters_nb.evaluation.engine import AblationEngine
from bertbusters_nb.model.ablation import Condition

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bf16_only_with_native_support_and_a_faster_probe():
    assert devices.cpu_bf16_decision(True, 3.0, 1.0)
    assert not devices.cpu_bf16_decision(False, 3.0, 1.0)  # emulated bf16: fp32 whatever the timing
    assert not devices.cpu_bf16_decision(True, 1.0, 2.0)  # avx512_bf16 without AMX measured slower here
    assert not devices.cpu_bf16_decision(True, 1.2, 1.0)  # below CPU_BF16_MIN_SPEEDUP
    assert not devices.cpu_bf16_decision(True, None, None)


def test_native_bf16_needs_the_cpu_flags():
    assert not devices.native_cpu_bf16(set())
    assert not devices.native_cpu_bf16({"avx2", "avx512f"})


@pytest.fixture()
def probe_says(monkeypatch):
    """Make the once-per-process CPU decision return ``value`` (and clear BERTBUSTERS_FP32)."""

    def set_to(value: bool):
        monkeypatch.delenv(devices.FP32_ENV, raising=False)
        monkeypatch.setattr(devices, "cpu_bf16_pays", lambda: value)

    return set_to


def test_engine_auto_follows_the_decision_and_the_switches_force_fp32(probe_says, monkeypatch):
    model = tiny_model("bert")
    es = prepare_mlm_eval(TOK, random_texts(4), seed=0, batch_size=4)
    probe_says(True)
    assert AblationEngine(model, es, prefix_cache=False).autocast_dtype == torch.bfloat16
    for forced in (None, "fp32", torch.float32):  # the engine argument
        assert AblationEngine(model, es, prefix_cache=False, autocast=forced).autocast_dtype is None
    monkeypatch.setenv(devices.FP32_ENV, "1")  # the environment variable
    assert AblationEngine(model, es, prefix_cache=False).autocast_dtype is None
    probe_says(False)
    assert AblationEngine(model, es, prefix_cache=False).autocast_dtype is None
    with pytest.raises(ValueError, match="autocast must be"):
        AblationEngine(model, es, prefix_cache=False, autocast="half")


def test_the_env_switch_reads_common_spellings(monkeypatch):
    for value, forced in (("1", True), ("true", True), ("YES", True), ("0", False), ("", False)):
        monkeypatch.setenv(devices.FP32_ENV, value)
        assert devices.fp32_forced() is forced


def test_bf16_engine_loss_is_within_002_nats_of_fp32_on_bbmini():
    from bertbusters_nb import load_model
    from bertbusters_nb.data import load_texts

    model, tokenizer = load_model("bbmini", head="mlm", device="cpu")
    es = prepare_mlm_eval(
        tokenizer, load_texts("movie_reviews", split="heldout", min_words=20)[:16], max_length=64, seed=0, batch_size=16
    )
    conditions = [Condition("none"), Condition("top outlier", (81,)), Condition("dim 5", (5,), layers=(2, 3))]
    fp32 = [r["eval_loss"] for r in AblationEngine(model, es, autocast=None).run(conditions, progress=False)]
    bf16 = [r["eval_loss"] for r in AblationEngine(model, es, autocast=torch.bfloat16).run(conditions, progress=False)]
    assert fp32 != bf16  # bf16 really ran
    assert max(abs(a - b) for a, b in zip(fp32, bf16)) <= 0.02
