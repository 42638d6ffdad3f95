"""The one edit context: every kind of edit is undone bit for bit, after an exception too, and nested blocks
restore what they found; a single weight scalar is an edit like a norm's dims."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from bertbusters_nb.model.ablation import disabled_dims, fingerprints_equal, state_fingerprint
from bertbusters_nb.model.discovery import find_norm_sites
from bertbusters_nb.model.edits import EvalMode, ParamFill, disabled_fill, edited, eval_mode, norm_dim_edits
from bertbusters_nb.model.sites import select_sites


class Boom(Exception):
    pass


def _linear(model):
    """The first attention-output projection of a BERT (an nn.Linear)."""
    return model.bert.encoder.layer[0].attention.output.dense


def test_a_weight_scalar_is_zeroed_inside_and_restored_bit_exactly_after_an_exception():
    model = tiny_model("bert")
    before = state_fingerprint(model)
    weight = _linear(model).weight
    row, col = 5, 7
    original = weight[row, col].item()
    assert original != 0
    with pytest.raises(Boom):
        with edited([ParamFill(weight, (row, col), 0.0)]) as made:
            assert len(made) == 1
            assert weight[row, col].item() == 0.0
            changed = (weight != before["bert.encoder.layer.0.attention.output.dense.weight"]).nonzero().tolist()
            assert changed == [[row, col]]  # that one scalar, nothing else
            raise Boom
    assert fingerprints_equal(before, state_fingerprint(model))


def test_a_gpt2_conv1d_scalar_is_an_edit_like_any_other():
    model = tiny_model("gpt2")
    before = state_fingerprint(model)
    conv = model.transformer.h[0].mlp.c_proj  # Conv1D: weight (in, out)
    with edited([ParamFill(conv.weight, (3, 2), 0.0)]):
        assert conv.weight[3, 2].item() == 0.0
    assert fingerprints_equal(before, state_fingerprint(model))


def test_a_failing_edit_undoes_the_edits_made_before_it():
    model = tiny_model("bert")
    before = state_fingerprint(model)
    weight = _linear(model).weight
    bad = ParamFill(weight, (10_000, 0), 0.0)  # out of range: fails when made
    with pytest.raises(IndexError):
        with edited([ParamFill(weight, (0, 0), 0.0), ParamFill(weight, ..., 1.0), bad]):
            pass  # never reached
    assert fingerprints_equal(before, state_fingerprint(model))


def test_nested_blocks_restore_what_they_found_and_keyboard_interrupt_restores():
    model = tiny_model("bert")
    before = state_fingerprint(model)
    weight = _linear(model).weight
    with pytest.raises(KeyboardInterrupt):
        with edited([ParamFill(weight, (1, 1), 0.0)]):
            with edited([ParamFill(weight, (1, 1), 3.0), ParamFill(weight, (2, 2), 0.0)]):
                assert weight[1, 1].item() == 3.0
            assert weight[1, 1].item() == 0.0  # the outer edit, as the inner block found it
            assert weight[2, 2].item() != 0.0
            raise KeyboardInterrupt
    assert fingerprints_equal(before, state_fingerprint(model))


def test_a_fill_may_be_a_function_of_the_current_values():
    model = tiny_model("bert")
    weight = _linear(model).weight
    before = weight.detach().clone()
    with edited([ParamFill(weight, ..., lambda now: now * 2)]):
        assert torch.equal(weight, before * 2)
    assert torch.equal(weight, before)


def test_eval_mode_is_an_edit_that_restores_each_modules_own_flag():
    model = tiny_model("bert").train()
    model.bert.encoder.layer[1].eval()  # a mixed state must come back as it was
    flags = [m.training for m in model.modules()]
    with pytest.raises(Boom):
        with eval_mode(model):
            assert not any(m.training for m in model.modules())
            raise Boom
    assert [m.training for m in model.modules()] == flags
    with edited([EvalMode(model)]):
        assert not model.training
    assert [m.training for m in model.modules()] == flags


def test_disabled_dims_is_the_norm_dim_edit_and_uses_the_one_fill():
    model = tiny_model("bert")
    sites = select_sites(find_norm_sites(model), "block_output")
    edits = list(norm_dim_edits(sites, [4, 9], "zero"))
    assert len(edits) == 2 * len(sites)  # weight and bias of each site
    assert all(float(e.value) == float(disabled_fill(sites[0], sites[0].weight)) for e in edits)
    with disabled_dims(sites, [4, 9]):
        for site in sites:
            assert site.weight[[4, 9]].abs().sum().item() == 0.0
            assert site.bias[[4, 9]].abs().sum().item() == 0.0
