"""What each norm inside a layer reads and feeds, traced from the forward pass: the facts ``discovery`` turns
into roles.

One dummy forward on a 7-token input (plus a few forwards of the same input with one tensor changed, see
``tracing``) records, for every norm inside a layer, where its input comes from and where its output goes:

* ``in_res``: the norm's input carries the residual stream. With every parametrised leaf module of the layers
  (Linear, Conv1D, Embedding, ...) forced to output zeros, the sub-layers contribute nothing and only the skip
  paths remain (a parametrised leaf that adds two tensors of its output's shape is the residual add itself,
  ZAYA's scaled residual, and keeps running); the norm's input still changes when the layer input changes.
  True for pre-LN and post-LN norms, false for sandwich norms (they see a sub-layer's output) and for q/k norms
  (they see a projection).
* ``out_res``: the norm's output reaches the layer output through the skip paths alone (same zeroed forward,
  the norm's output changed). True for post-LN and sandwich norms, false for pre-LN norms (their output only
  feeds a sub-layer) and q/k norms.
* the sub-layers a tensor feeds: the outermost parametrised modules of the layer that receive that exact
  tensor (matched by value in the plain forward). Each is tested for token mixing (its input changed at one
  token, its output changes at other tokens: attention or another token mixer) and for reading the encoder
  output (cross-attention); otherwise it is token-wise (FFN). A tensor padded with zeros along the sequence
  before a sub-layer (Pegasus-X's staggered blocks) still feeds it, and a norm inside a gated-norm wrapper
  (AXK2) feeds what the wrapper's output feeds. An input that is an earlier layer's output of the same stack
  (Funnel's unpooled keys and values beside the pooled query) moves with the traced tensor and is never taken
  for the encoder's output.

Every trace runs in eval mode with small distinct noise on the norms' parameters, both undone on exit
(``edits``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .edits import EvalMode, edited
from .naming import has_norm_class_name
from .tracing import (
    PROBE_TOKEN,
    TracedCall,
    Tracer,
    changed_at,
    changed_before,
    changed_elsewhere,
    differs,
    jittered,
    perturbed,
    same_values,
    seq_dim,
    seq_length,
    zero_padded,
)

Key = tuple[str, int]  # (module name, index of its call in the forward)
Calls = dict[str, list[TracedCall]]  # module name -> its calls, as Tracer.run returns them


@dataclass
class NormFacts:
    """What one call of a norm inside a layer reads and feeds (the module docstring says how each is traced).

    name / layer_name / call: the norm, its layer and which call of that layer it ran in.
    in_res / out_res: its input carries the residual stream / its output reaches the layer output by the skip path.
    is_layer_output: its output is the layer's output.
    feeds: kinds (``mix``, ``memory``, ``tokenwise``) of the sub-layers its output feeds.
    producer_kind: kind of the sub-layer whose output is its input (sandwich norms), None when not one kind.
    inside_mixer / before_mixing: inside a token mixer / there, on a tensor not yet mixed across tokens (q/k).
    size / hidden: its width and its layer's stream width. start: the trace clock when it ran.
    """

    name: str
    layer_name: str
    call: int
    in_res: bool = False
    out_res: bool = False
    is_layer_output: bool = False
    feeds: frozenset = frozenset()
    producer_kind: str | None = None
    inside_mixer: bool = False
    before_mixing: bool = False
    size: int = 0
    hidden: int = 0
    start: int = 0


@dataclass
class LayerTrace:
    """Everything ``trace_layers`` found.

    facts: (norm, call) -> its facts, for every norm call inside a layer.
    per_layer: (layer, call) -> its norm calls in call order.
    layer_feeds: (layer, call) -> kinds of the sub-layers the layer's input feeds.
    base: every call of the plain forward (layers, norms, sub-layers), in call order.
    causal: layer -> a change at one token leaves the earlier tokens of its output alone.
    has_memory: layer -> it reads the encoder's output (an encoder-decoder's decoder).
    not_run: norms inside layers that did not run on the text-only forward.
    """

    facts: dict[Key, NormFacts]
    per_layer: dict[Key, list[Key]]
    layer_feeds: dict[Key, frozenset]
    base: Calls
    causal: dict[str, bool]
    has_memory: dict[str, bool]
    not_run: list[str]


def trace_layers(
    model: nn.Module,
    layer_items: dict[str, nn.Module],
    norms: dict[str, nn.Module],
    enc_dec: bool,
    stack_of: dict[str, str] | None = None,
) -> LayerTrace:
    """Facts for every norm in a layer, the call order of everything, memory use and causality.

    layer_items: layer name -> layer module (every stack's, in order); norms: every norm of the model;
    enc_dec: the model has an encoder and a decoder; stack_of: layer name -> the stack that owns it.
    """
    in_layer = _layer_of_modules(model, layer_items)
    subs, leaves = _sub_layer_modules(model, norms, in_layer)
    tracer = Tracer(model, layer_items, norms, subs, leaves)
    # eval mode (no dropout: every forward deterministic) and distinct norm parameters (two norms of one
    # input must not give equal outputs), both undone on exit
    with edited([EvalMode(model)]), jittered(norms):
        return _trace(tracer, layer_items, norms, in_layer, subs, enc_dec, stack_of or {})


def _layer_of_modules(model: nn.Module, layer_items: dict[str, nn.Module]) -> dict[str, str]:
    """Module name -> name of the layer holding it (innermost), for every module inside a layer."""
    layer_set = set(layer_items)
    in_layer: dict[str, str] = {}
    for n in dict(model.named_modules()):  # a module shared by several layers appears once, under its first name
        parts = n.split(".")
        for i in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:i]) in layer_set:
                in_layer[n] = ".".join(parts[:i])
                break
    return in_layer


def _sub_layer_modules(
    model: nn.Module, norms: dict[str, nn.Module], in_layer: dict[str, str]
) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """The parametrised modules inside the layers that are not norms nor inside one (candidate sub-layers), and
    among them the leaves (parameters of their own, none in their children)."""
    named = dict(model.named_modules())
    norm_in_layer = {n: m for n, m in norms.items() if n in in_layer}
    norm_descendants = {f"{n}.{s}" for n in norm_in_layer for s, _ in norms[n].named_modules() if s}
    subs = {
        n: named[n]
        for n in in_layer
        if n not in norms and n not in norm_descendants and any(True for _ in named[n].parameters())
    }
    leaves = {
        n: m
        for n, m in subs.items()
        if any(True for _ in m.parameters(recurse=False))
        and not any(True for c in m.children() for _ in c.parameters())
    }
    return subs, leaves


def _trace(
    tracer: Tracer,
    layer_items: dict[str, nn.Module],
    norms: dict[str, nn.Module],
    in_layer: dict[str, str],
    subs: dict[str, nn.Module],
    enc_dec: bool,
    stack_of: dict[str, str],
) -> LayerTrace:
    """The steps, in the order their forwards draw from the tracer's generator (keep it: a trace is seeded)."""
    base = tracer.run()
    layer_names = [ln for ln in layer_items if base.get(ln)]
    tracer.leaves = _without_residual_adds(tracer.leaves, base)
    norm_in_layer = {n: m for n, m in norms.items() if in_layer.get(n) in layer_names}
    layer_inputs = {(ln, c): call.inputs[0] for ln in layer_names for c, call in enumerate(base[ln]) if call.inputs}
    per_layer = _norm_calls_per_layer(base, norm_in_layer, in_layer)
    not_run = sorted(n for n in norm_in_layer if not base.get(n))  # e.g. cross-attention norms of a decoder alone
    norm_in_layer = {n: m for n, m in norm_in_layer.items() if n not in not_run}

    facts = _stream_facts(tracer, base, layer_inputs, per_layer)

    own_outputs = _own_outputs(base, layer_names, stack_of)
    memory = _encoder_memory(base, per_layer, enc_dec, own_outputs, stack_of)
    sub_layers = _SubLayers(base, subs, in_layer)
    fed = _fed_by_norms(sub_layers, base, per_layer, subs)
    producers = _sandwich_producers(sub_layers, base, facts)
    layer_fed = {key: sub_layers.fed_by(key, base[key[0]][key[1]].inputs[0]) for key in per_layer}
    candidates = {m for group in (*fed.values(), *producers.values(), *layer_fed.values()) for m in group}
    which = _traced_input_positions(base, per_layer, layer_fed, fed)
    kinds, pre_mix = _module_kinds(
        tracer, base, layer_inputs, candidates, memory, in_layer, which, norm_in_layer, own_outputs, stack_of
    )
    _note_sub_layers(facts, fed, producers, kinds, pre_mix)
    layer_feeds = {key: frozenset(kinds[m] for m in found) for key, found in layer_fed.items()}

    causal = _causal_layers(tracer, base, layer_inputs, layer_names)
    has_memory = {ln: any(memory.get((ln, c)) for c in range(len(base[ln]))) for ln in layer_names}
    return LayerTrace(facts, per_layer, layer_feeds, base, causal, has_memory, not_run)


# ----------------------------------------------------------------------------- which norm ran where


def _without_residual_adds(leaves: dict[str, nn.Module], base: Calls) -> dict[str, nn.Module]:
    """The leaves to zero: not those that add two tensors of their output's shape, the residual add itself
    (ZAYA's scaled residual: (residual + b) * s + branch); zeroing it would cut the skip path."""
    return {
        n: m
        for n, m in leaves.items()
        if not any(
            call.outputs and sum(t.shape == call.outputs[0].shape for t in call.inputs) >= 2 for call in base.get(n, [])
        )
    }


def _norm_calls_per_layer(base: Calls, norm_in_layer: dict[str, nn.Module], in_layer: dict[str, str]):
    """(layer, call) -> the norm calls that ran inside that layer call, in call order."""

    def layer_call(name: str, start: int) -> Key | None:
        ln = in_layer.get(name)
        if ln is None:
            return None
        for c, call in enumerate(base[ln]):
            if call.start <= start <= call.end:
                return ln, c
        return None

    per_layer: dict[Key, list[Key]] = {}
    for name in norm_in_layer:
        for c, call in enumerate(base.get(name, [])):
            key = layer_call(name, call.start)
            if key is not None:
                per_layer.setdefault(key, []).append((name, c))
    for key in per_layer:
        per_layer[key].sort(key=lambda nc: base[nc[0]][nc[1]].start)
    return per_layer


# ----------------------------------------------------------------------------- the residual stream


def _stream_facts(tracer: Tracer, base: Calls, layer_inputs: dict, per_layer: dict) -> dict[Key, NormFacts]:
    """Facts of every norm call, with ``in_res``, ``out_res`` and ``is_layer_output`` set: with the leaves zeroed
    only the skip paths carry anything, so what moves with the layer input is the stream."""
    zero_base = tracer.run(layer_input=layer_inputs, zero_leaves=True)
    moved = {k: perturbed(v, tracer.gen, None, None) for k, v in layer_inputs.items()}
    zero_moved = tracer.run(layer_input=moved, zero_leaves=True)
    facts: dict[Key, NormFacts] = {}
    for (ln, c), members in per_layer.items():
        hidden = int(base[ln][c].inputs[0].shape[-1])
        layer_out = base[ln][c].outputs[0] if base[ln][c].outputs else None
        for name, nc in members:
            call = base[name][nc]
            f = NormFacts(
                name, ln, c, size=int(call.outputs[0].shape[-1]) if call.outputs else 0, hidden=hidden, start=call.start
            )
            f.in_res = differs(
                zero_base[name][nc].inputs[0], zero_moved[name][nc].inputs[0], zero_moved[name][nc].inputs[0]
            )
            f.is_layer_output = layer_out is not None and bool(call.outputs) and same_values(call.outputs[0], layer_out)
            facts[(name, nc)] = f
    _mark_stream_writers(tracer, facts, per_layer, layer_inputs, zero_base)
    return facts


def _mark_stream_writers(tracer: Tracer, facts: dict, per_layer: dict, layer_inputs: dict, zero_base: Calls) -> None:
    """``out_res``: the j-th norm of every layer call moved at once (one forward per position j), leaves zeroed;
    a norm writes the stream when its layer's output moves."""
    depth = max((len(m) for m in per_layer.values()), default=0)
    for j in range(depth):
        forced = {}
        for members in per_layer.values():
            if j < len(members):
                name, nc = members[j]
                forced[(name, nc)] = perturbed(zero_base[name][nc].outputs[0], tracer.gen, None, None)
        zero_forced = tracer.run(layer_input=layer_inputs, norm_output=forced, zero_leaves=True)
        for (ln, c), members in per_layer.items():
            if j < len(members):
                facts[members[j]].out_res = differs(
                    zero_base[ln][c].outputs[0], zero_forced[ln][c].outputs[0], zero_forced[ln][c].outputs[0]
                )


def _own_outputs(base: Calls, layer_names: list[str], stack_of: dict[str, str]) -> dict:
    """Per stack: the outputs of its layers (Funnel's pooled layers also get the unpooled stream)."""
    own: dict = {}
    for ln in layer_names:
        own.setdefault(stack_of.get(ln), []).extend(call.outputs[0] for call in base[ln] if call.outputs)
    return own


def _encoder_memory(base: Calls, per_layer: dict, enc_dec: bool, own_outputs: dict, stack_of: dict) -> dict:
    """(layer, call) -> its inputs that are the encoder's output (encoder-decoder models only): same width,
    another length than the stream, and not the output of a layer of the same stack."""
    memory: dict[Key, list[torch.Tensor]] = {}
    for ln, c in per_layer:
        first = base[ln][c].inputs[0]
        memory[(ln, c)] = [
            t
            for t in base[ln][c].inputs[1:]
            if enc_dec
            and t.dim() == first.dim()
            and t.dim() >= 2
            and t.shape[-1] == first.shape[-1]
            and seq_length(t) != seq_length(first)
            and not any(same_values(t, o) for o in own_outputs.get(stack_of.get(ln), []))
        ]
    return memory


# ----------------------------------------------------------------------------- the sub-layers a tensor feeds


class _SubLayers:
    """The parametrised sub-layer calls inside each layer call of the plain forward, and which receive a tensor."""

    def __init__(self, base: Calls, subs: dict[str, nn.Module], in_layer: dict[str, str]):
        self.base, self.subs, self.in_layer = base, subs, in_layer

    def calls_in(self, key: Key) -> list[Key]:
        ln, c = key
        lo, hi = self.base[ln][c].start, self.base[ln][c].end
        return [
            (n, k)
            for n in self.subs
            if self.in_layer.get(n) == ln
            for k, call in enumerate(self.base.get(n, []))
            if lo < call.start < hi
        ]

    @staticmethod
    def outermost(found: list[Key]) -> list[Key]:
        names = {n for n, _ in found}
        return [(n, k) for n, k in found if not any(n.startswith(o + ".") for o in names if o != n)]

    def fed_by(self, key: Key, tensor: torch.Tensor) -> list[Key]:
        """The outermost sub-layer calls of layer call ``key`` that receive ``tensor`` (or it zero-padded along the
        sequence, Pegasus-X's staggered blocks)."""
        base = self.base
        found = [(n, k) for n, k in self.calls_in(key) if any(same_values(t, tensor) for t in base[n][k].inputs)]
        if not found:
            found = [(n, k) for n, k in self.calls_in(key) if any(zero_padded(t, tensor) for t in base[n][k].inputs)]
        return self.outermost(found)


def _gated_wrapper(name: str, subs: dict[str, nn.Module]) -> str | None:
    """The gated-norm wrapper a norm sits in (AXK2's GatedRMSNorm: y = norm(x); y * sigmoid(mlp(y))), if any."""
    return next((n for n in subs if name.startswith(n + ".") and has_norm_class_name(subs[n])), None)


def _fed_by_norms(sub_layers: _SubLayers, base: Calls, per_layer: dict, subs: dict) -> dict[Key, list[Key]]:
    """(norm, call) -> the sub-layer calls its output feeds; a norm whose output feeds only the inside of its
    gated-norm wrapper feeds what the wrapper's output feeds."""
    fed: dict[Key, list[Key]] = {}
    for key, members in per_layer.items():
        for name, nc in members:
            fed[(name, nc)] = sub_layers.fed_by(key, base[name][nc].outputs[0])
            wrap = _gated_wrapper(name, subs)
            if wrap is not None and fed[(name, nc)] and all(c.startswith(wrap + ".") for c, _ in fed[(name, nc)]):
                calls = [k for k, call in enumerate(base.get(wrap, [])) if call.start < base[name][nc].start < call.end]
                if calls and base[wrap][calls[0]].outputs:
                    fed[(name, nc)] = sub_layers.fed_by(key, base[wrap][calls[0]].outputs[0])
    return fed


def _sandwich_producers(sub_layers: _SubLayers, base: Calls, facts: dict[Key, NormFacts]) -> dict[Key, list[Key]]:
    """(norm, call) -> the sub-layer calls whose output is its input, for norms that write the stream without
    reading it (sandwich norms); a norm closing a sub-layer from inside it (AXK1's post_mlp_layernorm in the
    MoE) has that sub-layer, when the norm's output is the sub-layer's output."""
    producers: dict[Key, list[Key]] = {}
    for (name, nc), f in facts.items():
        if not f.in_res and f.out_res:
            key = (f.layer_name, f.call)
            found = [
                (n, k)
                for n, k in sub_layers.calls_in(key)
                if base[n][k].outputs
                and base[n][k].end < f.start
                and same_values(base[n][k].outputs[0], base[name][nc].inputs[0])
            ]
            if not found:
                found = [
                    (n, k)
                    for n, k in sub_layers.calls_in(key)
                    if name.startswith(n + ".")
                    and base[n][k].outputs
                    and base[n][k].start < f.start < base[n][k].end
                    and same_values(base[n][k].outputs[0], base[name][nc].outputs[0])
                ]
            producers[(name, nc)] = sub_layers.outermost(found)
    return producers


def _traced_input_positions(base: Calls, per_layer: dict, layer_fed: dict, fed: dict) -> dict[Key, int | None]:
    """Sub-layer call -> index of its input that is a traced tensor (the layer input or a norm's output)."""
    which: dict[Key, int | None] = {}
    for key, members in per_layer.items():
        points = [base[key[0]][key[1]].inputs[0]] + [base[n][c].outputs[0] for n, c in members]
        for m in (*layer_fed[key], *(x for n, c in members for x in fed[(n, c)])):
            which.setdefault(
                m,
                next(
                    (i for i, t in enumerate(base[m[0]][m[1]].inputs) if any(same_values(t, p) for p in points)), None
                ),
            )
    return which


def _note_sub_layers(facts: dict, fed: dict, producers: dict, kinds: dict, pre_mix: dict) -> None:
    """Copy into each norm's facts the kinds of what it feeds and of what feeds it, and where it sits in a mixer."""
    mixers = [n for (n, _), kind in kinds.items() if kind == "mix"]
    for (name, nc), f in facts.items():
        f.feeds = frozenset(kinds[m] for m in fed[(name, nc)])
        if (name, nc) in producers:
            found = frozenset(kinds[m] for m in producers[(name, nc)])
            f.producer_kind = next(iter(found)) if len(found) == 1 else None
        f.inside_mixer = any(name.startswith(m + ".") for m in mixers)
        f.before_mixing = pre_mix.get((name, nc), False)


# ----------------------------------------------------------------------------- token mixing and causality


def _module_kinds(
    tracer: Tracer,
    base: Calls,
    layer_inputs: dict,
    candidates: set[Key],
    memory: dict,
    in_layer: dict[str, str],
    which: dict[Key, int | None],
    norm_in_layer: dict[str, nn.Module],
    own_outputs: dict,
    stack_of: dict[str, str],
) -> tuple[dict[Key, str], dict[Key, bool]]:
    """mix / memory / tokenwise for each candidate sub-layer call (nested candidates run in separate forwards),
    and for norms inside a mixer whether their input is still unmixed when the mixer's input moves at one token."""
    reads_memory = _reading_memory(base, candidates, memory, in_layer)
    pre_mix: dict[Key, bool] = {}
    kinds: dict[Key, str] = {}
    for group in _unnested_groups(candidates):
        forced, forced_others, lengths = {}, {}, {}
        for n, k in group:
            earlier = own_outputs.get(stack_of.get(in_layer[n]), [])
            moved = _moved_at_probe(tracer, base, (n, k), which.get((n, k)), earlier)
            if moved is None:
                kinds[(n, k)] = "tokenwise"
                continue
            forced[(n, k)], forced_others[(n, k)], lengths[(n, k)] = moved
        after = tracer.run(layer_input=layer_inputs, module_input=forced)
        # and every token but the probe moved: a saturated softmax that ignores the probe token still mixes
        after_others = tracer.run(layer_input=layer_inputs, module_input=forced_others)
        for n, k in forced:
            mixed = _mixes(base, (n, k), after, after_others, lengths[(n, k)])
            kinds[(n, k)] = "mix" if mixed else "memory" if (n, k) in reads_memory else "tokenwise"
            _note_unmixed_inputs(pre_mix, base, after, (n, k), norm_in_layer)
    return kinds, pre_mix


def _reading_memory(base: Calls, candidates: set[Key], memory: dict, in_layer: dict[str, str]) -> set[Key]:
    """Candidates that receive the encoder's output: cross-attention, unless it also mixes its own tokens (merged)."""
    out = set()
    for n, k in candidates:
        ln = in_layer[n]
        mem = [t for c in range(len(base[ln])) for t in memory.get((ln, c), [])]
        if any(same_values(t, m) for t in base[n][k].inputs for m in mem):
            out.add((n, k))
    return out


def _unnested_groups(candidates: set[Key]) -> list[list[Key]]:
    """The candidates in groups with no module inside another (each group is probed in one forward)."""
    groups: list[list[Key]] = []
    for n, k in sorted(candidates):
        for group in groups:
            if not any(n.startswith(o + ".") or o.startswith(n + ".") or o == n for o, _ in group):
                group.append((n, k))
                break
        else:
            groups.append([(n, k)])
    return groups


def _moved_at_probe(
    tracer: Tracer, base: Calls, key: Key, i: int | None, earlier: list[torch.Tensor]
) -> tuple[list, list, int | None] | None:
    """The call's inputs with the traced one moved at the probe token only, and moved at every other token, and
    its sequence length; None when no input has a sequence dim (then it is token-wise)."""
    n, k = key
    inputs = list(base[n][k].inputs)
    if i is None:
        i = next((j for j, t in enumerate(inputs) if seq_dim(t, seq_length(t)) is not None), None)
    if i is None:
        return None
    length = seq_length(inputs[i])
    others = list(inputs)
    # every input that is the traced tensor moves with it (Funnel's attention gets it as query, key, value)
    same = [j for j, t in enumerate(inputs) if j == i or same_values(t, inputs[i]) and t.shape == inputs[i].shape]
    moved = perturbed(inputs[i], tracer.gen, PROBE_TOKEN, length)
    moved_others = perturbed(others[i], tracer.gen, PROBE_TOKEN, length, others=True)
    for j in same:
        inputs[j], others[j] = moved, moved_others
    # and the unpooled stream beside a pooled query (Funnel): an input that is an earlier layer's output
    # of the same stack moves at the same token
    for j, t in enumerate(base[n][k].inputs):
        if j not in same and seq_dim(t, seq_length(t)) is not None and any(same_values(t, o) for o in earlier):
            inputs[j] = perturbed(t, tracer.gen, PROBE_TOKEN, seq_length(t))
            others[j] = perturbed(t, tracer.gen, PROBE_TOKEN, seq_length(t), others=True)
    return inputs, others, length


def _output_pairs(base: Calls, run: Calls, key: Key) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(plain, moved) outputs of a call and of every module called inside it."""
    n, k = key
    lo, hi = base[n][k].start, base[n][k].end
    own = list(zip(base[n][k].outputs, run[n][k].outputs))
    return own + [
        (b, a)
        for m in base
        if m.startswith(n + ".") and m in run
        for cb, ca in zip(base[m], run[m])
        if lo < cb.start < hi
        for b, a in zip(cb.outputs, ca.outputs)
    ]


def _mixes(base: Calls, key: Key, after: Calls, after_others: Calls, length: int | None) -> bool:
    """A change at the probe token moves other tokens, or a change elsewhere moves the probe token."""
    return any(changed_elsewhere(b, a, PROBE_TOKEN, length) for b, a in _output_pairs(base, after, key)) or any(
        changed_at(b, a, PROBE_TOKEN, length) for b, a in _output_pairs(base, after_others, key)
    )


def _note_unmixed_inputs(pre_mix: dict, base: Calls, after: Calls, key: Key, norm_in_layer: dict) -> None:
    """For each norm inside the call: its input moved, but only at the probe token (not yet mixed: q/k norms)."""
    n, k = key
    lo, hi = base[n][k].start, base[n][k].end
    for m in norm_in_layer:
        if m.startswith(n + ".") and m in after:
            for c, (cb, ca) in enumerate(zip(base[m], after[m])):
                if lo < cb.start < hi and cb.inputs:
                    changed = differs(cb.inputs[0], ca.inputs[0], cb.inputs[0])
                    unmixed = changed and not changed_elsewhere(
                        cb.inputs[0], ca.inputs[0], PROBE_TOKEN, seq_length(cb.inputs[0])
                    )
                    pre_mix[(m, c)] = pre_mix.get((m, c), False) or unmixed


def _causal_layers(tracer: Tracer, base: Calls, layer_inputs: dict, layer_names: list[str]) -> dict[str, bool]:
    """Layer -> nothing before the probe token moves when every layer input moves at it."""
    moved = {k: perturbed(v, tracer.gen, PROBE_TOKEN, seq_length(v)) for k, v in layer_inputs.items()}
    after = tracer.run(layer_input=moved)
    return {
        ln: all(
            not changed_before(
                base[ln][c].outputs[0], after[ln][c].outputs[0], PROBE_TOKEN, seq_length(base[ln][c].inputs[0])
            )
            for c in range(len(base[ln]))
            if base[ln][c].outputs
        )
        for ln in layer_names
    }
