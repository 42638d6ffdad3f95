"""The explorer's super-weight toggle (causal LMs): offered for the planted scalar of a tiny Llama
(``model.planted``), zeroing it through the edit context changes every view, switching it off restores the
weight bit-exactly; the same model without the plant says there is none; an encoder has no such control."""

from __future__ import annotations

import pytest
import torch
from test_widgets import TEXTS  # the same short reviews as the encoder explorer's tests

from bertbusters_nb.model.planted import PLANTS, planted_model
from bertbusters_nb.widgets import Explorer, ExplorerWidget

pytestmark = pytest.mark.usefixtures("one_thread")


def _explorer(arch: str, plant: bool) -> Explorer:
    model, tokenizer = planted_model(arch, plant=plant)
    return Explorer(model, tokenizer, TEXTS, max_length=32, n_top_dims=4, debounce_s=0.0, cpu_threads=1)


@pytest.fixture(scope="module")
def planted():
    ex = _explorer("llama", plant=True)
    return ex, ExplorerWidget(ex)


def test_the_planted_super_weight_gets_a_toggle(planted):
    ex, widget = planted
    spec = PLANTS["llama"]
    key = (f"model.layers.{spec.layer}.mlp.down_proj", spec.row, spec.col)
    assert list(widget.super_weight_buttons) == [key]
    button = widget.super_weight_buttons[key]
    assert button.description == f"layer {spec.layer} mlp.down_proj [{spec.row}, {spec.col}]" and not button.value
    assert "1 super weight verified" in widget.super_weight_label.value
    assert widget.super_weight_row in widget.box.children and button in widget.super_weight_box.children


def test_switching_it_on_zeroes_the_scalar_and_every_view_changes_then_off_restores_it(planted):
    ex, widget = planted
    (found,) = ex.super_weights().found
    name, row, col = found.key
    module = ex.model.get_submodule(name)
    before = module.weight.detach().clone()
    intact_view, intact_png = widget.last_view, widget.plot.value
    seen: list[float] = []
    hook = module.register_forward_pre_hook(lambda m, args: seen.append(float(m.weight[row, col])))
    try:
        widget.super_weight_buttons[found.key].value = True  # no event loop here: computed at once
    finally:
        hook.remove()
    on = widget.last_view
    assert widget.state().super_weights == (found.key,)
    assert seen and set(seen) == {0.0}  # every forward of this view ran with the scalar at 0
    assert on["loss_intact"] == intact_view["loss"] and abs(on["loss_delta"]) > 5 * found.control_max
    assert abs(on["loss_delta"]) > 0.01 and on["loss"] != intact_view["loss"]
    assert on["predictions"] is not None and "bb-predictions" in widget.predictions.value
    assert f"{name}.weight[{row}, {col}] set to 0" in on["description"]
    assert widget.plot.value != intact_png  # the figure marks the dim the scalar writes
    assert "bb-loss-delta" in widget.loss.value and f"{on['loss_delta']:+.4f}" in widget.loss.value

    widget.super_weight_buttons[found.key].value = False
    assert torch.equal(module.weight, before)
    assert widget.state().super_weights == () and widget.last_view["loss"] == intact_view["loss"]
    assert ex.recheck_intact()


def test_the_toggle_combines_with_dims_and_a_bad_scalar_is_named(planted):
    ex, _ = planted
    (found,) = ex.super_weights().found
    both = ex.compute_view(ex.state_with(dims=(PLANTS["llama"].row,), super_weights=(found.key,)))
    dims_only = ex.compute_view(ex.state_with(dims=(PLANTS["llama"].row,)))
    assert both["loss"] != dims_only["loss"] and both["n_sites"] == dims_only["n_sites"] > 0
    with pytest.raises(ValueError, match="not a residual writer"):
        ex.check_state(ex.state_with(super_weights=(("model.layers.0.mlp.up_proj", 0, 0),)))
    with pytest.raises(ValueError, match="outside"):
        ex.check_state(ex.state_with(super_weights=((found.key[0], 10**6, 0),)))


def test_without_the_plant_the_control_says_there_is_none():
    ex = _explorer("llama", plant=False)
    widget = ExplorerWidget(ex)
    assert ex.super_weights().found == [] and widget.super_weight_buttons == {}
    assert "No super weight in this model" in widget.super_weight_label.value
    assert widget.super_weight_row in widget.box.children and not widget.super_weight_box.children


def test_an_encoder_explorer_has_no_super_weight_control():
    ex = _explorer("bert", plant=True)
    widget = ExplorerWidget(ex)
    assert ex.kind == "mlm" and widget.super_weight_buttons == {}
    assert widget.super_weight_row is None and ex.compute_view(ex.initial)["super_weights"] == []
    with pytest.raises(ValueError, match="causal LMs only"):
        ex.super_weights()


def test_the_state_keeps_zeroed_scalars_apart_from_the_dims():
    from bertbusters_nb.widgets import ExplorerState

    key = ("model.layers.1.mlp.down_proj", 5, 7)
    state = ExplorerState(super_weights=[key, list(key)], roles=())
    assert state.super_weights == (key,) and state.ablates and not state.disables_dims
    assert state.condition().dims == () and state.touched([]) == []
    assert state.model_key == ((key,),) and ExplorerState(sentence="x").model_key == ()
    with pytest.raises(TypeError, match="triples"):
        ExplorerState(super_weights=key)  # one key, not a sequence of keys


def test_the_explorer_loader_takes_a_causal_alias_with_its_lm_head():
    from bertbusters_nb.evaluation.model_objective import objective_of
    from bertbusters_nb.widgets import load_for_explorer

    model, tokenizer = load_for_explorer("planted:llama", device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and objective_of(model, tokenizer) == "causal"
