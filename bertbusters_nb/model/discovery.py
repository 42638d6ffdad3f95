"""Find every normalization site of a transformers model, with its role, layer and stack: ``find_norm_sites``.

Roles come from what each norm does in the forward pass, not from its name: ``dataflow`` traces, for every norm
inside a layer, whether its input is the residual stream, whether its output reaches the layer output by the
skip path, which sub-layers (token mixing, cross-attention, token-wise) its output feeds and which sub-layer
feeds it. From these facts:

a norm that alone receives the layer's input and whose output is the stream from there on is ``block_input``
(MiniMax normalises the stream on entry to each layer, RWKV in its first block only); pre-LN norms are
``pre_attention`` / ``pre_cross_attention`` / ``pre_ffn`` by the sub-layer their output feeds, ``pre_parallel``
when it feeds attention and FFN at once (GPT-J, Phi, Falcon, CodeGen); post-LN norms (in call order) are
``attention_output`` / ``cross_attention_output`` after the sub-layer that reads the previous residual point,
and ``block_output`` when it closes the FFN and its output is the layer's output; sandwich norms are
``post_attention`` / ``post_cross_attention`` / ``post_ffn`` by the module whose output they normalise
(Gemma2/3, OLMo2); norms inside a token mixer that see neither stream are ``qk_norm`` (Qwen3, OLMo2, Gemma3:
their input moves only at the token whose mixer input moved); any other norm that sees neither stream is
``inner`` (inside a sub-layer: BitNet's sub-norms, DiffLlama's group norm, Mamba's dt norm).

A stack's layers are the elements of the outermost ModuleList whose every element holds a norm (blocks of
layers, Funnel's ModuleList of ModuleLists, are flattened in order); a sequence shorter than the probe token
(Funnel pools 7 tokens to 4, then 2) is probed at its last token. Outside the layers a norm is ``head`` when
it is not in the base model, else ``embeddings`` or ``final`` by whether it runs before or after its stack's
layers. A single stack is a ``decoder`` when it is causal (a change at one token leaves earlier tokens alone),
else an ``encoder``. Norms that do not run on the text-only forward (vision / audio towers, the
cross-attention norms of a decoder used alone) are not sites, with a warning naming them. Anything else (a norm
whose output feeds nothing, a post-LN norm after a token-wise sub-layer whose output is not the layer's
output, a norm of the wrong size on the stream) is a ``NormLayoutError`` that says what was seen; module names
are only echoed and cross-checked (``naming``), never decisive, and the layer count is checked against the
config.

Each site also records the weight value that zeroes its output, probed once per norm (0 for ``x * w``, -1 for
Gemma's ``x * (1 + w)``; ``NormSite.scale_offset``): what "disabling" a dim sets (``edits.disabled_fill``).

Sites are found once per model: the result is kept for the model object (weakly: it does not keep the model
alive) and found again when the model's modules or parameter dtypes change. Roles depend on the model's
structure, not on its weight values, so a model trained or edited in place keeps its sites.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .dataflow import LayerTrace, NormFacts, trace_layers
from .edits import ParamFill, edited
from .naming import is_norm, name_disagreements
from .sites import NormLayoutError, NormSite


def find_norm_sites(model: nn.Module) -> list[NormSite]:
    """Every normalization site of ``model``, in module order, each with role, layer and stack (see module doc).

    Found once per model object and structure (see the module doc); each call returns a new list.

    Example:
        >>> sites = find_norm_sites(model)
        >>> [s.name for s in sites if s.role == "block_output"][:1]  # doctest: +SKIP
        ['bert.encoder.layer.0.output.LayerNorm']
    """
    structure = _Structure.of(model)
    found = _FOUND.get(model)
    if found is not None and found.structure == structure:
        if found.warning:  # said again, as a fresh search would
            warnings.warn(found.warning, stacklevel=2)
        return list(found.sites)
    sites, warning = _find(model)  # warns itself, where it always did
    _FOUND[model] = _Found(structure, tuple(sites), warning)
    return list(sites)


@dataclass(frozen=True, eq=False)
class _Structure:
    """What a model's sites depend on: its modules (by name, identity and class) and its parameter dtypes."""

    modules: tuple[tuple[str, "weakref.ReferenceType[nn.Module]", type], ...]
    dtypes: frozenset

    @classmethod
    def of(cls, model: nn.Module) -> "_Structure":
        modules = tuple((n, weakref.ref(m), type(m)) for n, m in model.named_modules())
        return cls(modules, frozenset(p.dtype for p in model.parameters()))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Structure)
            and self.dtypes == other.dtypes
            and len(self.modules) == len(other.modules)
            and all(
                n == m and a() is not None and a() is b() and t is u
                for (n, a, t), (m, b, u) in zip(self.modules, other.modules)
            )
        )


@dataclass(frozen=True)
class _Found:
    structure: _Structure
    sites: tuple[NormSite, ...]
    warning: str | None


_FOUND: "weakref.WeakKeyDictionary[nn.Module, _Found]" = weakref.WeakKeyDictionary()


def _find(model: nn.Module) -> tuple[list[NormSite], str | None]:
    """The sites of ``model`` and the warning about norms that did not run (also given here), or a
    NormLayoutError saying what was seen."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", type(model).__name__)
    named = dict(model.named_modules())
    norms = {n: m for n, m in named.items() if is_norm(m)}
    if not norms:
        raise NormLayoutError(
            f"No LayerNorm or RMSNorm modules found in this {model_type!r} model "
            f"({type(model).__name__}); the outlier analysis needs normalization layers."
        )
    owners = _layer_stacks(model, named, norms, model_type)
    layer_items = {n: el for items in owners.values() for n, el in items}
    enc_dec = len(owners) == 2 or bool(getattr(config, "is_encoder_decoder", False))
    stack_of = {n: owner for owner, items in owners.items() for n, _ in items}
    trace = trace_layers(model, layer_items, norms, enc_dec, stack_of)
    warning = None
    if trace.not_run:
        warning = (
            f"{len(trace.not_run)} norm(s) of this {model_type!r} model did not run on a text-only forward and are "
            f"not sites (they do not touch its outputs): {trace.not_run[:4]}"
        )
        warnings.warn(warning, stacklevel=3)
    owners, norms = _what_ran(trace, owners, norms, layer_items, model_type)
    stack_names = _name_stacks(owners, trace.causal, trace.has_memory)
    offsets = {n: _probe_offset(m) for n, m in norms.items()}
    sites = _sites_in_layers(trace, owners, norms, stack_names, offsets, config, model_type)
    placed = {s.name for s in sites}
    loose = {n: m for n, m in norms.items() if n not in placed}
    if loose:
        sites.extend(_place_loose_norms(model, loose, trace.base, owners, stack_names, offsets))
    _check_names(sites, trace, model_type)
    order = list(named)
    return sorted(sites, key=lambda s: order.index(s.name)), warning


def _layer_stacks(
    model: nn.Module, named: dict[str, nn.Module], norms: dict[str, nn.Module], model_type: str
) -> dict[str, list[tuple[str, nn.Module]]]:
    """Stack owner -> its layers (name, module) in order: the outermost ModuleLists of layers holding norms."""
    lists = _layer_lists(model, {id(m) for m in norms.values()})
    if not lists:
        held = [n for n, m in named.items() if isinstance(m, nn.ModuleList) and len(m) and all(is_norm(e) for e in m)]
        extra = f" (its norms sit in ModuleLists of norms: {held[:2]}, outside any layer module)" if held else ""
        raise NormLayoutError(f"No layer stack (ModuleList of layers holding norms) found in {model_type!r}{extra}.")
    owners: dict[str, list[tuple[str, nn.Module]]] = {}

    def flat(prefix: str, mod: nn.ModuleList):  # blocks of layers (Funnel: ModuleList of ModuleLists) in order
        for i, el in enumerate(mod):
            yield from (flat(f"{prefix}.{i}", el) if isinstance(el, nn.ModuleList) else [(f"{prefix}.{i}", el)])

    for list_name, mod in lists:
        owners.setdefault(_stack_owner(list_name, model), []).extend(flat(list_name, mod))
    return owners


def _what_ran(
    trace: LayerTrace,
    owners: dict[str, list[tuple[str, nn.Module]]],
    norms: dict[str, nn.Module],
    layer_items: dict[str, nn.Module],
    model_type: str,
) -> tuple[dict[str, list[tuple[str, nn.Module]]], dict[str, nn.Module]]:
    """The stacks and norms that ran on the text-only forward: stacks none of whose layers ran (vision / audio
    towers) hold no sites, nor do norms that did not run."""
    base = trace.base
    ran = {o: items for o, items in owners.items() if any(base.get(ln) for ln, _ in items)}
    if not ran:
        inside = [n for n in norms if base.get(n) and any(n.startswith(ln + ".") for ln in layer_items)]
        why = (
            f" Their norms did run ({inside[:2]}): the model calls its layers past the module hooks "
            "(layer.forward(...), SqueezeBERT), so the layer boundaries cannot be traced."
            if inside
            else ""
        )
        raise NormLayoutError(f"None of the layer stacks of this {model_type!r} model ran on a text-only forward.{why}")
    dropped = {n for o in owners if o not in ran for n in norms if n.startswith(o + ".")} | set(trace.not_run)
    kept = {
        n: m
        for n, m in norms.items()
        if n not in dropped
        and (base.get(n) or any(n.startswith(ln + ".") for items in ran.values() for ln, _ in items))
    }
    return ran, kept


def _sites_in_layers(
    trace: LayerTrace,
    owners: dict[str, list[tuple[str, nn.Module]]],
    norms: dict[str, nn.Module],
    stack_names: dict[str, str],
    offsets: dict[str, float | None],
    config,
    model_type: str,
) -> list[NormSite]:
    """The sites inside the layers, layer by layer; the layer count checked against the config, a shared layer
    checked to play the same roles at every call, and every norm of a layer placed."""
    base, per_layer, facts, layer_feeds = trace.base, trace.per_layer, trace.facts, trace.layer_feeds
    sites: list[NormSite] = []
    placed: set[str] = set()
    for owner, items in owners.items():
        stack = stack_names[owner]
        expected = _expected_layers(config, stack, len(owners))
        if expected is not None and expected != len(items):
            raise NormLayoutError(
                f"Found {len(items)} layers in '{owner}' of this {model_type!r} model but its config says "
                f"{expected}; the site finder does not understand this layout."
            )
        for index, (layer_name, _) in enumerate(items):
            members = per_layer.get((layer_name, 0), [])
            roles = _layer_roles(
                members, facts, layer_feeds[(layer_name, 0)] if members else frozenset(), model_type, layer_name
            )
            for c in range(1, len(base[layer_name])):  # a shared layer called again must play the same roles
                again = _layer_roles(
                    per_layer.get((layer_name, c), []),
                    facts,
                    layer_feeds.get((layer_name, c), frozenset()),
                    model_type,
                    layer_name,
                )
                if again != roles:
                    raise NormLayoutError(f"The shared layer '{layer_name}' plays different roles per call.")
            for name, role in roles.items():
                sites.append(NormSite(name, role, index, stack, norms[name], offsets[name], facts[(name, 0)].size))
                placed.add(name)
        in_layers = {n for n in norms if any(n.startswith(ln + ".") for ln, _ in items)}
        missing = in_layers - placed
        if missing:
            raise NormLayoutError(f"The norms {sorted(missing)[:3]} of {model_type!r} did not run inside their layer.")
    return sites


def _check_names(sites: list[NormSite], trace: LayerTrace, model_type: str) -> None:
    """Raise when a module name suggests another role than the traced one (``naming``)."""
    off_stream = {name for (name, _), f in trace.facts.items() if f.size != f.hidden}
    disagree = name_disagreements(sites, off_stream)
    if disagree:
        raise NormLayoutError(
            f"In this {model_type!r} model the traced roles and the module names disagree: "
            + "; ".join(disagree[:2])
            + ". The site finder will not guess which is right."
        )


# ----------------------------------------------------------------------------- the norm's own probe


def _probe_offset(module: nn.Module) -> float | None:
    """0.0 when weight 0 zeroes the output, 1.0 when weight -1 does (x * (1 + w)), else None."""
    weight = getattr(module, "weight", None)
    if weight is None:
        return None
    bias = getattr(module, "bias", None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, weight.shape[0], generator=gen).to(device=weight.device, dtype=weight.dtype)
    for offset in (0.0, 1.0):
        fills = [ParamFill(weight, ..., -offset)] + ([] if bias is None else [ParamFill(bias, ..., 0.0)])
        try:
            with edited(fills), torch.no_grad():
                y = module(x)
        except Exception:  # noqa: BLE001 - a norm we cannot call alone cannot be probed
            return None
        y = y[0] if isinstance(y, (tuple, list)) else y
        if torch.is_tensor(y) and y.shape == x.shape and float(y.float().abs().max()) < 1e-6:
            return offset
    return None


# ----------------------------------------------------------------------------- layer stacks


def _layer_lists(model: nn.Module, norm_ids: set[int]) -> list[tuple[str, nn.ModuleList]]:
    """Outermost ModuleLists whose every element holds at least one norm (and is not itself a norm)."""
    candidates = []
    for name, mod in model.named_modules():
        if (
            isinstance(mod, nn.ModuleList)
            and len(mod) > 0
            and all(id(el) not in norm_ids and any(id(m) in norm_ids for m in el.modules()) for el in mod)
        ):
            candidates.append((name, mod))
    outer = []
    for name, mod in candidates:
        if not any(other is not mod and any(m is mod for m in other.modules()) for _, other in candidates):
            outer.append((name, mod))
    return outer


def _stack_owner(list_name: str, model: nn.Module) -> str:
    """Module path owning a layer list: its parent module, climbing over enclosing ModuleLists."""
    modules = dict(model.named_modules())
    owner = ".".join(list_name.split(".")[:-1])
    while owner and isinstance(modules.get(owner), nn.ModuleList):
        owner = ".".join(owner.split(".")[:-1])
    return owner


def _expected_layers(config, stack: str, n_stacks: int) -> int | None:
    if config is None:
        return None
    if getattr(config, "model_type", "") == "albert":
        return config.num_hidden_groups
    if hasattr(config, "get_text_config"):
        try:
            config = config.get_text_config(decoder=stack == "decoder") if n_stacks == 1 else config
        except TypeError:
            config = config.get_text_config()
    if n_stacks == 2:
        names = (f"{stack}_layers", f"num_{stack}_layers", "num_layers", "num_hidden_layers")
        if stack == "encoder":
            names = ("encoder_layers", "num_encoder_layers", "num_layers", "num_hidden_layers")
    else:
        names = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


# ----------------------------------------------------------------------------- roles from the traced facts


_SUBLAYER = {"mix": "attention", "memory": "cross-attention", "tokenwise": "feed-forward"}


def _describe(f: NormFacts) -> str:
    feeds = "+".join(sorted(_SUBLAYER[k] for k in f.feeds)) or "nothing"
    return (
        f"'{f.name}' (size {f.size}, stream {f.hidden}): input {'is' if f.in_res else 'is not'} the residual "
        f"stream, output {'reaches' if f.out_res else 'does not reach'} the layer output by the skip path, "
        f"feeds {feeds}"
    )


def _layer_roles(members, facts, layer_feeds, model_type: str, layer_name: str) -> dict[str, str]:
    roles: dict[str, str] = {}
    prev_feeds = layer_feeds
    post = [m for m in members if facts[m].in_res and facts[m].out_res]

    def fail(f, why):
        raise NormLayoutError(
            f"In '{layer_name}' of this {model_type!r} model the norm {_describe(f)}; {why}. "
            "The site finder cannot give it a role with certainty."
        )

    for m in members:
        f = facts[m]
        name = m[0]
        if (f.in_res or f.out_res) and f.size != f.hidden:
            fail(f, "a norm on the stream should have the stream's size")
        if f.in_res and f.out_res:
            if not layer_feeds and m is post[0] and not prev_feeds:
                # the layer's input goes to this norm alone, and its output is the stream from here on
                # (MiniMax's input_layernorm, RWKV's pre_ln in the first block): the stream normalised on entry
                role = "block_input"
            elif "memory" in prev_feeds:
                role = "cross_attention_output"
            elif prev_feeds == {"mix"}:
                role = "attention_output"
            elif "tokenwise" in prev_feeds:
                # the residual point before it feeds the feed-forward (and in MobileBERT, beside its bottleneck,
                # also the attention's values): the norm closing the layer, if its output is the layer's output
                if not (f.is_layer_output and m is post[-1]):
                    fail(f, "a post-LN norm after a feed-forward whose output is not the layer's output")
                role = "block_output"
            else:
                fail(f, "the residual point before it feeds " + ("+".join(sorted(prev_feeds)) or "nothing"))
            prev_feeds = f.feeds
        elif f.in_res:
            if "memory" in f.feeds:
                role = "pre_cross_attention"
            elif f.feeds == {"mix", "tokenwise"}:
                role = "pre_parallel"
            elif f.feeds == {"mix"}:
                role = "pre_attention"
            elif f.feeds == {"tokenwise"}:
                role = "pre_ffn"
            else:
                fail(f, "a pre-LN norm should feed a sub-layer")
        elif f.out_res:
            kind = f.producer_kind
            if kind is None:
                fail(f, "a norm after a sub-layer (sandwich) whose sub-layer could not be found")
            role = {"mix": "post_attention", "memory": "post_cross_attention", "tokenwise": "post_ffn"}[kind]
        elif f.inside_mixer and f.before_mixing:
            role = "qk_norm"
        else:
            role = "inner"
        if name in roles and roles[name] != role:
            # one norm called twice in a layer (Pegasus-X's final_layer_norm on the tokens, then on the global
            # tokens, a side stream): the role it plays on the stream, else no role with certainty
            if "inner" not in (roles[name], role):
                fail(f, f"it is called again in this layer as {roles[name]}")
            role = roles[name] if role == "inner" else role
        roles[name] = role
    return roles


# ----------------------------------------------------------------------------- stacks and the norms outside the layers


def _name_stacks(owners: dict[str, list], causal: dict[str, bool], has_memory: dict[str, bool]) -> dict[str, str]:
    names = list(owners)
    if len(names) == 1:
        layers = [ln for ln, _ in owners[names[0]]]
        return {names[0]: "decoder" if all(causal[ln] for ln in layers) else "encoder"}
    if len(names) == 2:
        mem = {o: any(has_memory[ln] for ln, _ in owners[o]) for o in names}
        if sum(mem.values()) == 1:
            return {o: "decoder" if mem[o] else "encoder" for o in names}
    out: dict[str, str] = {}
    for owner in names:
        last = owner.split(".")[-1]
        if last not in ("encoder", "decoder") or last in out.values():
            raise NormLayoutError(f"Several layer stacks found ({names}); cannot tell encoder from decoder.")
        out[owner] = last
    return out


def _place_loose_norms(model, loose, base, owners, stack_names, offsets) -> list[NormSite]:
    """Norms outside the layers: head (outside the base model), else embeddings or final by call order."""
    base_model = getattr(model, "base_model", model)
    base_ids = {id(m) for m in base_model.modules()}
    sites = []
    for name, mod in loose.items():
        calls = base.get(name)
        width = int(calls[0].outputs[0].shape[-1]) if calls and calls[0].outputs else None
        if id(mod) not in base_ids:
            sites.append(NormSite(name, "head", None, _only_or_encoder(stack_names), mod, offsets[name], width))
            continue
        owner = next((o for o in owners if o and name.startswith(o + ".")), None)
        if owner is None and len(owners) == 1:
            owner = next(iter(owners))
        if owner is None:  # the stack sharing the longest module path with the norm (EncoderDecoderModel)
            common = {o: _common_prefix(o, name) for o in owners}
            best = max(common.values())
            starts = {o: base[items[0][0]][0].start for o, items in owners.items()}
            ends = {o: base[items[-1][0]][-1].end for o, items in owners.items()}
            if best > 0 and list(common.values()).count(best) == 1:
                owner = max(common, key=common.__getitem__)
            elif calls and calls[0].end < min(starts.values()):  # before every stack (Funnel's embedding norm)
                owner = min(starts, key=starts.__getitem__)
            elif calls and calls[0].start > max(ends.values()):  # after every stack
                owner = max(ends, key=ends.__getitem__)
            else:
                raise NormLayoutError(f"Cannot tell which layer stack the norm '{name}' belongs to.")
        first_layer = owners[owner][0][0]
        last_layer = owners[owner][-1][0]
        if not calls:
            raise NormLayoutError(f"The norm '{name}' did not run in a dummy forward; cannot place it.")
        if calls[0].end < base[first_layer][0].start:
            role = "embeddings"
        elif calls[0].start > base[last_layer][-1].end:
            role = "final"
        else:
            raise NormLayoutError(f"The norm '{name}' runs between the layers of its stack; cannot place it.")
        sites.append(NormSite(name, role, None, stack_names[owner], mod, offsets[name], width))
    return sites


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        n += 1
    return n


def _only_or_encoder(stack_names: dict[str, str]) -> str:
    values = set(stack_names.values())
    return values.pop() if len(values) == 1 else "decoder"
