"""The one Trace context: captures equal a plain forward's, edits take effect, early stop skips later layers,
hooks are always removed (normal exit, exceptions, KeyboardInterrupt, nesting)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from bertbusters_nb.model.hooks import Trace, first_tensor

pytestmark = pytest.mark.usefixtures("one_thread")

BERT = tiny_model("bert")
LLAMA = tiny_model("llama")
IDS = torch.randint(4, 120, (2, 7), generator=torch.Generator().manual_seed(0))


def _layers(model) -> list[str]:
    prefix = "bert.encoder.layer" if hasattr(model, "bert") else "model.layers"
    return [f"{prefix}.{i}" for i in range(3)]


def _no_hooks(model) -> bool:
    """No Trace hook left on any module (transformers 5 keeps its own output-capturing hooks on some layers
    once a forward asked for hidden states: those are not ours and stay)."""
    hooks = [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]
    return not [h for h in hooks if h.__qualname__.startswith("Trace.")] and not any(
        m._forward_hooks_with_kwargs or m._forward_pre_hooks_with_kwargs for m in model.modules()
    )


@pytest.mark.parametrize("model", [BERT, LLAMA], ids=["bert", "llama"])
def test_captures_equal_a_plain_forward(model):
    with torch.no_grad():
        plain = model(input_ids=IDS, output_hidden_states=True)
        with Trace(model, _layers(model), retain_input=True) as trace:
            traced = model(input_ids=IDS, output_hidden_states=True)
    assert torch.equal(plain.logits, traced.logits)  # plain hooks change nothing
    for i, name in enumerate(_layers(model)):
        assert torch.equal(trace[name].input, plain.hidden_states[i])
        if hasattr(model, "bert") or i < 2:  # llama's last hidden state is after the final norm
            assert torch.equal(first_tensor(trace[name].output), plain.hidden_states[i + 1])
        assert len(trace[name].calls) == 1
    starts = [trace[n].calls[0].start for n in _layers(model)]
    assert starts == sorted(starts) and all(trace[n].calls[0].end > trace[n].calls[0].start for n in _layers(model))
    assert _no_hooks(model)


def test_single_module_output_and_unknown_name():
    name = "bert.encoder.layer.1.output.LayerNorm"
    with torch.no_grad(), Trace(BERT, name) as trace:
        BERT(input_ids=IDS)
    assert trace.output.shape == (2, 7, 32)
    with pytest.raises(LookupError, match="close"):
        Trace(BERT, "bert.encoder.layer.1.output.layernorm")
    with pytest.raises(LookupError, match="did not run"):
        with Trace(BERT, name) as unused:
            pass
        unused.output
    assert _no_hooks(BERT)


@pytest.mark.parametrize("model", [BERT, LLAMA], ids=["bert", "llama"])
def test_hooks_removed_after_an_exception(model):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with Trace(model, _layers(model), retain_input=True):
            model(input_ids=IDS)
            raise Boom
    assert _no_hooks(model)

    def explode(_name, _out, _call):
        raise Boom

    with pytest.raises(Boom):  # raised inside a hook, mid-forward
        with Trace(model, _layers(model)[1:2], edit_output=explode):
            model(input_ids=IDS)
    assert _no_hooks(model)
    with pytest.raises(KeyboardInterrupt):
        with Trace(model, _layers(model)):
            raise KeyboardInterrupt
    assert _no_hooks(model)


def test_early_stop_returns_captures_without_computing_later_layers():
    first_two, last = _layers(LLAMA)[:2], _layers(LLAMA)[2]

    def must_not_run(_name, _call):
        raise AssertionError("the forward went on after every traced module had returned")

    with torch.no_grad():
        plain = LLAMA(input_ids=IDS, output_hidden_states=True)
        with Trace(LLAMA, [last], edit_input=must_not_run) as outer:
            with Trace(LLAMA, first_two, stop=True) as trace:
                LLAMA(input_ids=IDS)
                pytest.fail("the model call should have been stopped")
    assert trace.stopped and not outer.stopped
    assert outer[last].calls == []
    for i, name in enumerate(first_two):
        assert torch.equal(first_tensor(trace[name].output), plain.hidden_states[i + 1])
    assert _no_hooks(LLAMA)


def test_an_outer_stop_passes_through_an_inner_trace():
    layers = _layers(BERT)
    with torch.no_grad(), Trace(BERT, layers[:1], stop=True) as outer:
        with Trace(BERT, layers[1:]) as inner:
            BERT(input_ids=IDS)
        pytest.fail("the outer stop must leave the inner block too")
    assert outer.stopped and not inner.stopped and inner[layers[1]].calls == []
    assert _no_hooks(BERT)


def test_edit_output_and_input_change_the_forward():
    norm = "bert.encoder.layer.2.output.LayerNorm"
    with torch.no_grad():
        plain = BERT(input_ids=IDS).logits

        def zero_dim_3(_name, out, _call):
            out = out.clone()
            out[..., 3] = 0
            return out

        with Trace(BERT, norm, edit_output=zero_dim_3) as trace:
            edited = BERT(input_ids=IDS).logits
        assert torch.all(trace.output[..., 3] == 0)  # the kept output is the edited one
        assert not torch.equal(plain, edited)
        # the same edit as a replaced input of the next module (the MLM head's transform)
        with Trace(
            BERT, "cls.predictions", edit_input=lambda _n, call: ((zero_dim_3(_n, call.args[0], call),), call.kwargs)
        ):
            via_input = BERT(input_ids=IDS).logits
    assert torch.equal(edited, via_input)
    assert _no_hooks(BERT)


def test_clone_keeps_a_copy_that_later_in_place_changes_cannot_touch():
    name = "bert.encoder.layer.0.output.LayerNorm"

    def in_place(_name, out, _call):
        out.mul_(2)  # an in-place change after the output was kept

    with torch.no_grad():
        with (
            Trace(BERT, name, clone=True) as cloned,
            Trace(BERT, name) as kept,
            Trace(BERT, name, edit_output=in_place),
        ):
            BERT(input_ids=IDS)
        with Trace(BERT, name) as plain:
            BERT(input_ids=IDS)
    assert torch.equal(cloned.output, plain.output)
    assert torch.equal(kept.output, plain.output * 2)  # without clone: the model's own (changed) tensor
    assert _no_hooks(BERT)
