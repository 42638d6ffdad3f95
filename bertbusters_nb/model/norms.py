"""Find every normalization site of a transformers model, with its role, layer and stack.

Roles come from what each norm does in the forward pass, not from its name. One dummy forward
on a 7-token input (plus a few forwards of the same input with one tensor changed) records, for
every norm inside a layer, where its input comes from and where its output goes:

* ``in_res``: the norm's input carries the residual stream. With every parametrised leaf module
  of the layers (Linear, Conv1D, Embedding, ...) forced to output zeros, the sub-layers contribute
  nothing and only the skip paths remain (a parametrised leaf that adds two tensors of its output's shape
  is the residual add itself, ZAYA's scaled residual, and keeps running); the norm's input still changes when the layer input
  changes. True for pre-LN and post-LN norms, false for sandwich norms (they see a sub-layer's
  output) and for q/k norms (they see a projection).
* ``out_res``: the norm's output reaches the layer output through the skip paths alone (same
  zeroed forward, the norm's output changed). True for post-LN and sandwich norms, false for pre-LN
  norms (their output only feeds a sub-layer) and q/k norms.
* the sub-layers a tensor feeds: the outermost parametrised modules of the layer that receive
  that exact tensor (matched by value in the plain forward). Each is tested for token mixing
  (its input changed at one token, its output changes at other tokens: attention or another token
  mixer) and for reading the encoder output (cross-attention); otherwise it is token-wise (FFN). A tensor
  padded with zeros along the sequence before a sub-layer (Pegasus-X's staggered blocks) still feeds it, and a
  norm inside a gated-norm wrapper (AXK2) feeds what the wrapper's output feeds.

From these: a norm that alone receives the layer's input and whose output is the stream from there on is
``block_input`` (MiniMax normalises the stream on entry to each layer, RWKV in its first block only); pre-LN norms are ``pre_attention`` / ``pre_cross_attention`` / ``pre_ffn`` by the
sub-layer their output feeds, ``pre_parallel`` when it feeds attention and FFN at once (GPT-J,
Phi, Falcon, CodeGen); post-LN norms (in call order) are ``attention_output`` /
``cross_attention_output`` after the sub-layer that reads the previous residual point, and
``block_output`` when it closes the FFN and its output is the layer's output; sandwich norms are
``post_attention`` / ``post_cross_attention`` / ``post_ffn`` by the module whose output they
normalise (Gemma2/3, OLMo2); norms inside a token mixer that see neither stream are ``qk_norm``
(Qwen3, OLMo2, Gemma3: their input moves only at the token whose mixer input moved); any other norm that
sees neither stream is ``inner`` (inside a sub-layer: BitNet's sub-norms, DiffLlama's group norm, Mamba's
dt norm). Both are left out of hidden-dim ablation (``HIDDEN_ROLES``): their size is not the stream's.
A stack's layers are the elements of the outermost ModuleList whose every element holds a norm (blocks of
layers, Funnel's ModuleList of ModuleLists, are flattened in order); a sequence shorter than the probe token
(Funnel pools 7 tokens to 4, then 2) is probed at its last token, and an input that is an earlier layer's
output of the same stack (Funnel's unpooled keys and values beside the pooled query) moves with the traced
tensor and is never taken for the encoder's output. Outside the layers a norm is ``head`` when it is not in the base model, else ``embeddings`` or
``final`` by whether it runs before or after its stack's layers. A single stack is a ``decoder``
when it is causal (a change at one token leaves earlier tokens alone), else an ``encoder``.
Norms that do not run on the text-only forward (vision / audio towers, the cross-attention norms of a
decoder used alone) are not sites, with a warning naming them. Anything else (a norm whose output feeds nothing, a post-LN norm after a token-wise sub-layer
whose output is not the layer's output, a norm of the wrong size on the stream) is a
``NormLayoutError`` that says what was seen; module names are only echoed, never decisive, and
the layer count is checked against the config.

"Disabling" dim d of a norm means its effective scale and shift are zero there: the weight value
that zeroes the output is probed once per norm (0 for ``x * w``, -1 for Gemma's ``x * (1 + w)``;
``NormSite.scale_offset``), and a norm without affine parameters has nothing to disable
(``NormSite.can_disable`` is False, and the ablation says so). ``disabled_fill`` is the one
definition, used by the ablation context, the engine's per-condition path and the explorer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
from torch import nn

from .hooks import Trace

if TYPE_CHECKING:
    import pandas as pd

ROLES: tuple[str, ...] = (
    "embeddings",
    "block_input",
    "attention_output",
    "cross_attention_output",
    "block_output",
    "pre_attention",
    "pre_cross_attention",
    "pre_ffn",
    "pre_parallel",
    "post_attention",
    "post_cross_attention",
    "post_ffn",
    "qk_norm",
    "inner",
    "final",
    "head",
)
Role = str
# Roles whose norm sits on the hidden dim of the stream (what a hidden-dim ablation touches by default).
HIDDEN_ROLES: tuple[str, ...] = tuple(r for r in ROLES if r not in ("qk_norm", "inner"))
POST_LN_ROLES = ("block_input", "attention_output", "cross_attention_output", "block_output")
PRE_LN_ROLES = ("pre_attention", "pre_cross_attention", "pre_ffn", "pre_parallel")
SANDWICH_ROLES = ("post_attention", "post_cross_attention", "post_ffn")

SEQ_LEN = 7  # dummy input length (decoder side: SEQ_LEN - 1), chosen unlike any hidden or head size
PROBE_TOKEN = 3  # the token a perturbation changes


class NormLayoutError(ValueError):
    """The model's normalization layout is not one the site finder can place with certainty."""


@dataclass(frozen=True)
class NormSite:
    """One normalization module of a model.

    name: full module name, e.g. ``bert.encoder.layer.3.output.LayerNorm``.
    role: what it normalises (see ``ROLES`` and the module docstring); ``head`` is an LM head's own norm.
    layer: index within its stack, None outside the layers (embeddings, final, head).
    stack: ``encoder`` or ``decoder``.
    module: the module itself (not compared, not shown).
    scale_offset: the effective scale is ``scale_offset + weight`` (1.0 for Gemma's RMSNorm), or None
        when no weight value zeroes the output (then it cannot be disabled).
    """

    name: str
    role: str
    layer: int | None
    stack: str
    module: nn.Module = field(compare=False, repr=False)
    scale_offset: float | None = field(default=0.0, compare=False, repr=False)
    width: int | None = field(default=None, compare=False, repr=False)

    @property
    def weight(self) -> torch.Tensor | None:
        return getattr(self.module, "weight", None)

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.module, "bias", None)

    @property
    def size(self) -> int:
        if self.weight is not None:
            return int(self.weight.shape[0])
        return int(self.width) if self.width is not None else 0

    @property
    def can_disable(self) -> bool:
        """Whether some parameter value zeroes this norm's output at a dim (False without affine parameters)."""
        return self.weight is not None and self.scale_offset is not None


def disabled_fill(site: NormSite, param: torch.Tensor, mode: str = "zero") -> torch.Tensor:
    """The value a disabled dim of ``param`` (the site's weight or bias) takes: the one definition of "disable".

    ``zero``: effective scale and shift 0 (weight ``-scale_offset``, bias 0). ``mean``: the mean effective
    value over the dims (weight and bias keep their own mean; the offset is common to every dim).
    Raises ValueError for a site that has nothing to disable.
    """
    if not site.can_disable:
        why = "it has no affine parameters" if site.weight is None else "no weight value zeroes its output (probed)"
        raise ValueError(
            f"Cannot disable dims of the norm '{site.name}': {why}, so there is nothing to switch off. "
            "Pick other roles (see sites_table(find_norm_sites(model)))."
        )
    if mode == "mean":
        return param.detach().float().mean().to(param.dtype)
    if mode != "zero":
        raise ValueError(f"Unknown mode {mode!r}; pick 'zero' or 'mean'.")
    fill = -float(site.scale_offset) if param is site.weight else 0.0
    return torch.tensor(fill, dtype=param.dtype, device=param.device)


_NORM_NAME_ENDS = ("layernorm", "rmsnorm", "layer_norm", "rms_norm", "nonorm")


def is_norm(module: nn.Module) -> bool:
    """LayerNorm / RMSNorm (torch's or a model's own class named ``*LayerNorm`` / ``*RMSNorm``), with a 1-D
    weight or no parameters at all; children without parameters are allowed (I-BERT's ``IntLayerNorm`` holds
    an activation quantizer). Gated norms (two inputs, inside a mixer) are not sites.

    MobileBERT's ``NoNorm`` (``x * weight + bias``, no normalisation) counts too: it takes the place of the
    LayerNorm in MobileBERT's layers and its elementwise scale and shift are what a LayerNorm's disabling sets
    to zero, so disabling dim d zeroes that dim of its output exactly as for a LayerNorm (verified by the
    sweep). What it lacks is the normalisation itself: a dim's size is not set relative to the other dims.
    """
    if isinstance(module, (nn.LayerNorm, getattr(nn, "RMSNorm", nn.LayerNorm))):
        return True
    name = type(module).__name__.lower()
    if not name.endswith(_NORM_NAME_ENDS):
        return False
    if any(True for c in module.children() for _ in c.parameters()):
        return False
    params = dict(module.named_parameters(recurse=False))
    weight = getattr(module, "weight", None)
    if not params:
        return weight is None
    return isinstance(weight, nn.Parameter) and weight.dim() == 1 and set(params) <= {"weight", "bias"}


def _probe_offset(module: nn.Module) -> float | None:
    """0.0 when weight 0 zeroes the output, 1.0 when weight -1 does (x * (1 + w)), else None."""
    weight = getattr(module, "weight", None)
    if weight is None:
        return None
    bias = getattr(module, "bias", None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, weight.shape[0], generator=gen).to(device=weight.device, dtype=weight.dtype)
    saved_w = weight.detach().clone()
    saved_b = None if bias is None else bias.detach().clone()
    try:
        with torch.no_grad():
            if bias is not None:
                bias.zero_()
            for offset in (0.0, 1.0):
                weight.fill_(-offset)
                y = module(x)
                y = y[0] if isinstance(y, (tuple, list)) else y
                if torch.is_tensor(y) and y.shape == x.shape and float(y.float().abs().max()) < 1e-6:
                    return offset
    except Exception:  # noqa: BLE001 - a norm we cannot call alone cannot be probed
        return None
    finally:
        with torch.no_grad():
            weight.copy_(saved_w)
            if bias is not None:
                bias.copy_(saved_b)
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


# ----------------------------------------------------------------------------- tracing


def _tensors(obj, depth: int = 0) -> list[torch.Tensor]:
    """Floating-point tensors in an argument / output structure, in order."""
    if torch.is_tensor(obj):
        return [obj] if obj.is_floating_point() else []
    if depth > 3:
        return []
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o, depth + 1)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o, depth + 1)]
    return []


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.numel() == b.numel() and a.numel() > 0 and torch.equal(a.reshape(-1), b.reshape(-1))


def _padded(t: torch.Tensor, x: torch.Tensor) -> bool:
    """``t`` is ``x`` with zeros added before and / or after it along one non-last dim."""
    if t.dim() != x.dim() or t.dim() < 2 or t.shape == x.shape:
        return False
    diff = [d for d in range(t.dim()) if t.shape[d] != x.shape[d]]
    if len(diff) != 1 or diff[0] == t.dim() - 1 or t.shape[diff[0]] < x.shape[diff[0]]:
        return False
    d, n = diff[0], x.shape[diff[0]]
    for lo in range(t.shape[d] - n + 1):
        if torch.equal(t.narrow(d, lo, n), x):
            rest = torch.cat([t.narrow(d, 0, lo), t.narrow(d, lo + n, t.shape[d] - lo - n)], dim=d)
            return not bool(rest.any())
    return False


def _len(t: torch.Tensor) -> int | None:
    """Sequence length of a traced tensor: the dummy input's length when a non-last dim has it (heads may
    outnumber tokens), else its longest non-last dim (models that pad or prepend tokens; the batch is 1)."""
    if t.dim() < 2:
        return None
    for length in (SEQ_LEN, SEQ_LEN - 1):
        if length in t.shape[:-1]:
            return length
    return max(t.shape[:-1])


def _seq_dim(t: torch.Tensor, length: int | None) -> int | None:
    if length is None or length <= 1:
        return None
    for d in range(t.dim()):
        if t.shape[d] == length and (d < t.dim() - 1 or t.dim() == 1):
            return d
    return None


def _delta(
    base: torch.Tensor, gen: torch.Generator, token: int | None, length: int | None, others: bool = False
) -> torch.Tensor:
    """A perturbation of ``base``: everywhere (token None), only at ``token`` along the sequence dim, or
    (``others``) at every token but ``token``."""
    scale = float(base.float().std()) if base.numel() > 1 else 1.0
    noise = torch.randn(base.shape, generator=gen).to(base.dtype) * (0.5 * (scale or 1.0) + 0.1)
    if token is not None:
        d = _seq_dim(base, length)
        if d is None:
            raise NormLayoutError(
                f"A layer input of shape {tuple(base.shape)} has no sequence dim of length "
                f"{length}; cannot trace the norms."
            )
        mask = torch.zeros(base.shape[d], dtype=base.dtype)
        mask[_clamp(token, base.shape[d])] = 1
        if others:
            mask = 1 - mask
        noise = noise * mask.reshape([-1 if i == d else 1 for i in range(base.dim())])
    return base + noise.to(base.device)


def _differs(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> bool:
    """Changed beyond float noise (kernels that regroup tokens, e.g. MoE, are not bit-stable)."""
    if a.numel() == 0:
        return False
    tol = 1e-4 * (float(scale.float().abs().max()) + 1e-6)
    return bool(((a.float() - b.float()).abs() > tol).any())


def _clamp(token: int, length: int) -> int:
    """The probe token of a sequence shorter than the dummy input (Funnel pools 7 tokens to 4, then 2): its last."""
    return min(token, length - 1)


def _changed_elsewhere(base: torch.Tensor, new: torch.Tensor, token: int, length: int) -> bool:
    if base.shape != new.shape:
        return False
    d = _seq_dim(base, length)
    if d is None:
        return False
    token = _clamp(token, base.shape[d])
    keep = [i for i in range(base.shape[d]) if i != token]
    idx = torch.tensor(keep, device=base.device)
    return _differs(base.index_select(d, idx), new.index_select(d, idx), base)


def _changed_at(base: torch.Tensor, new: torch.Tensor, token: int, length: int) -> bool:
    d = _seq_dim(base, length)
    if d is None or base.shape != new.shape:
        return False
    idx = torch.tensor([_clamp(token, base.shape[d])], device=base.device)
    return _differs(base.index_select(d, idx), new.index_select(d, idx), base)


def _changed_before(base: torch.Tensor, new: torch.Tensor, token: int, length: int) -> bool:
    d = _seq_dim(base, length)
    if d is None or base.shape != new.shape:
        return False
    idx = torch.arange(_clamp(token, base.shape[d]), device=base.device)
    return _differs(base.index_select(d, idx), new.index_select(d, idx), base)


@dataclass
class _Call:
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    start: int
    end: int


class _Tracer:
    """Hooks on layers, norms and sub-layer modules; each ``run`` is one forward under given forcings."""

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, nn.Module],
        norms: dict[str, nn.Module],
        watched: dict[str, nn.Module],
        leaves: dict[str, nn.Module],
    ):
        self.model, self.layers, self.norms, self.watched, self.leaves = model, layers, norms, watched, leaves
        self.config = getattr(model, "config", None)
        vocab = self._vocab()
        gen = torch.Generator().manual_seed(0)
        device = next(model.parameters()).device
        low = 4 if vocab > 12 else 0
        self.ids = torch.randint(low, vocab, (1, SEQ_LEN), generator=gen).to(device)
        self.gen = gen

    def _vocab(self) -> int:
        config = self.config
        vocab = getattr(config, "vocab_size", None)
        if not isinstance(vocab, int) and config is not None and hasattr(config, "get_text_config"):
            vocab = getattr(config.get_text_config(), "vocab_size", None)
        return vocab if isinstance(vocab, int) and vocab > 1 else 8

    def _kwargs(self) -> dict:
        kwargs = {"input_ids": self.ids}
        import inspect

        if "use_cache" in inspect.signature(self.model.forward).parameters:
            kwargs["use_cache"] = False  # hybrid (Mamba + attention) caches fail on a plain forward
        if getattr(self.config, "is_encoder_decoder", False):
            kwargs["decoder_input_ids"] = self.ids[:, : SEQ_LEN - 1]
        return kwargs

    def run(self, *, layer_input=None, norm_output=None, module_input=None, zero_leaves: bool = False):
        """One forward. ``layer_input`` / ``module_input``: (name, call) -> replacement of the first tensor input;
        ``norm_output``: (name, call) -> replacement output. Returns {name: [_Call per call]}."""
        layer_input, norm_output, module_input = layer_input or {}, norm_output or {}, module_input or {}

        def edit_input(name, call):
            forced = layer_input if name in self.layers else module_input
            new = forced.get((name, call.index))
            if new is None:
                return None
            args, kwargs = call.args, call.kwargs
            if isinstance(new, list):  # every float input replaced, in _tensors order
                it = iter(new)
                return _substitute(args, it), _substitute(kwargs, it)
            if args and torch.is_tensor(args[0]):
                return (new,) + tuple(args[1:]), kwargs
            if torch.is_tensor(kwargs.get("hidden_states")):
                return args, {**kwargs, "hidden_states": new}
            raise NormLayoutError(f"Cannot find the hidden-state input of '{name}' to trace it.")

        def edit_output(name, out, call):
            if zero_leaves and name in self.leaves:
                return _zero_like(out)
            new = norm_output.get((name, call.index)) if name in self.norms else None
            if new is None:
                return None
            return new if torch.is_tensor(out) else (new,) + tuple(out[1:])

        # clone: copies taken at hook time, since a model may later change a tensor in place
        # (Falcon: mlp_output += attention_output)
        trace = Trace(
            self.model,
            {**self.layers, **self.norms, **self.watched},
            retain_input=True,
            clone=True,
            edit_input=edit_input,
            edit_output=edit_output,
        )
        others = {n: m for n, m in self.leaves.items() if n not in self.watched} if zero_leaves else {}
        zeroed = Trace(self.model, others, retain_output=False, edit_output=lambda _n, out, _c: _zero_like(out))
        with trace, zeroed, torch.no_grad():
            first = not getattr(self, "ran_once", False)
            try:
                self.model(**self._kwargs())
                self.ran_once = True
            except NormLayoutError:
                raise
            except Exception as exc:  # noqa: BLE001 - re-raised with our message on top
                if not first:  # the plain forward worked: this error is the model's or the caller's, as is
                    raise
                raise NormLayoutError(
                    f"Could not run a {SEQ_LEN}-token dummy forward of this "
                    f"{getattr(self.config, 'model_type', type(self.model).__name__)!r} model to trace its "
                    f"norms ({type(exc).__name__}: {exc}). Pass a model that takes input_ids."
                ) from exc
        ran = sorted((r for r in trace.records.values() if r.calls), key=lambda r: r.calls[0].start)  # call order
        return {
            r.name: [_Call(_tensors(c.args) + _tensors(c.kwargs), _tensors(c.output), c.start, c.end) for c in r.calls]
            for r in ran
        }


def _substitute(obj, it, depth: int = 0):
    """``obj`` with its float tensors (in ``_tensors`` order) replaced by the next items of ``it``."""
    if torch.is_tensor(obj):
        return next(it) if obj.is_floating_point() else obj
    if depth > 3:
        return obj
    if isinstance(obj, tuple):
        return tuple(_substitute(o, it, depth + 1) for o in obj)
    if isinstance(obj, list):
        return [_substitute(o, it, depth + 1) for o in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, it, depth + 1) for k, v in obj.items()}
    return obj


class _jittered:
    """Temporarily add small distinct noise to every norm's parameters; restored bit for bit on exit."""

    def __init__(self, norms: dict[str, nn.Module]):
        self.params = [p for m in norms.values() for p in m.parameters(recurse=False)]
        self.saved: list[torch.Tensor] = []

    def __enter__(self):
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in self.params:
                self.saved.append(p.detach().clone())
                noise = torch.randn(p.shape, generator=gen).to(device=p.device, dtype=p.dtype)
                p.add_(noise * (0.1 * (float(p.detach().float().abs().mean()) + 0.1)))
        return self

    def __exit__(self, *exc):
        with torch.no_grad():
            for p, s in zip(self.params, self.saved):
                p.copy_(s)
        return False


def _zero_like(out):
    if torch.is_tensor(out):
        return torch.zeros_like(out) if out.is_floating_point() else out
    if isinstance(out, tuple):
        return tuple(_zero_like(o) for o in out)
    return out


@dataclass
class _NormFacts:
    name: str
    layer_name: str
    call: int
    in_res: bool = False
    out_res: bool = False
    is_layer_output: bool = False
    feeds: frozenset = frozenset()  # kinds of the sub-layers its output feeds
    producer_kind: str | None = None  # kind of the module whose output is its input (sandwich)
    inside_mixer: bool = False
    before_mixing: bool = False  # inside a token mixer, on a tensor not yet mixed across tokens (q/k/v)
    size: int = 0
    hidden: int = 0
    start: int = 0


def _trace_layers(
    model,
    layer_items: dict[str, nn.Module],
    norms: dict[str, nn.Module],
    enc_dec: bool,
    stack_of: dict[str, str] | None = None,
):
    """Facts for every norm in a layer, the call order of everything, memory use and causality."""
    layer_names = list(layer_items)
    named = dict(model.named_modules())  # a module shared by several layers appears once, under its first name
    layer_set = set(layer_names)
    in_layer: dict[str, str] = {}  # module name -> name of the layer holding it
    for n in named:
        parts = n.split(".")
        for i in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:i]) in layer_set:
                in_layer[n] = ".".join(parts[:i])
                break
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
    tracer = _Tracer(model, layer_items, norms, subs, leaves)
    tracer.enc_dec = enc_dec
    tracer.stack_of = stack_of or {}

    # eval mode (no dropout: every forward deterministic) and distinct norm parameters (two norms of one
    # input must not give equal outputs), both undone on exit
    with _eval_mode(model), _jittered(norms):
        return _trace_runs(tracer, model, layer_items, norms, in_layer, subs)


class _eval_mode:
    """The model in eval mode for the block; each module's own training flag restored on exit."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.flags = [(m, m.training) for m in model.modules()]

    def __enter__(self):
        self.model.eval()
        return self

    def __exit__(self, *exc):
        for m, flag in self.flags:
            m.training = flag
        return False


def _trace_runs(tracer, model, layer_items, norms, in_layer, subs):
    base = tracer.run()
    layer_names = [ln for ln in layer_items if base.get(ln)]
    # a parametrised leaf that adds two tensors of its output's shape is a residual add (ZAYA's scaled
    # residual: (residual + b) * s + branch); zeroing it would cut the skip path, so it is left running
    tracer.leaves = {
        n: m
        for n, m in tracer.leaves.items()
        if not any(
            call.outputs and sum(t.shape == call.outputs[0].shape for t in call.inputs) >= 2 for call in base.get(n, [])
        )
    }
    norm_in_layer = {n: m for n, m in norms.items() if in_layer.get(n) in layer_names}
    enc_dec = tracer.enc_dec
    iso = {(ln, c): call.inputs[0] for ln in layer_names for c, call in enumerate(base[ln]) if call.inputs}

    def layer_key(name: str, start: int) -> tuple[str, int] | None:
        ln = in_layer.get(name)
        if ln is None:
            return None
        for c, call in enumerate(base[ln]):
            if call.start <= start <= call.end:
                return ln, c
        return None

    # which (layer, call) each norm call belongs to, and the norms of each layer call in call order
    per_layer: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for name in norm_in_layer:
        for c, call in enumerate(base.get(name, [])):
            key = layer_key(name, call.start)
            if key is not None:
                per_layer.setdefault(key, []).append((name, c))
    for key in per_layer:
        per_layer[key].sort(key=lambda nc: base[nc[0]][nc[1]].start)
    not_run = sorted(n for n in norm_in_layer if not base.get(n))  # e.g. cross-attention norms of a decoder alone
    norm_in_layer = {n: m for n, m in norm_in_layer.items() if n not in not_run}

    # zeroed leaves: skip paths only
    zero_base = tracer.run(layer_input=iso, zero_leaves=True)
    moved = {k: _delta(v, tracer.gen, None, None) for k, v in iso.items()}
    zero_moved = tracer.run(layer_input=moved, zero_leaves=True)
    facts: dict[tuple[str, int], _NormFacts] = {}
    for (ln, c), members in per_layer.items():
        hidden = int(base[ln][c].inputs[0].shape[-1])
        layer_out = base[ln][c].outputs[0] if base[ln][c].outputs else None
        for name, nc in members:
            call = base[name][nc]
            f = _NormFacts(
                name, ln, c, size=int(call.outputs[0].shape[-1]) if call.outputs else 0, hidden=hidden, start=call.start
            )
            f.in_res = _differs(
                zero_base[name][nc].inputs[0], zero_moved[name][nc].inputs[0], zero_moved[name][nc].inputs[0]
            )
            f.is_layer_output = layer_out is not None and bool(call.outputs) and _same(call.outputs[0], layer_out)
            facts[(name, nc)] = f
    depth = max((len(m) for m in per_layer.values()), default=0)
    for j in range(depth):
        forced = {}
        for members in per_layer.values():
            if j < len(members):
                name, nc = members[j]
                forced[(name, nc)] = _delta(zero_base[name][nc].outputs[0], tracer.gen, None, None)
        zero_forced = tracer.run(layer_input=iso, norm_output=forced, zero_leaves=True)
        for (ln, c), members in per_layer.items():
            if j < len(members):
                facts[members[j]].out_res = _differs(
                    zero_base[ln][c].outputs[0], zero_forced[ln][c].outputs[0], zero_forced[ln][c].outputs[0]
                )

    # sub-layers: outermost parametrised modules receiving a tensor, their kind (mix / memory / tokenwise)
    memory: dict[tuple[str, int], list[torch.Tensor]] = {}
    stack_of = getattr(tracer, "stack_of", {})
    own_outputs = {}  # per stack: the outputs of its layers (Funnel's pooled layers also get the unpooled stream)
    for ln in layer_names:
        own_outputs.setdefault(stack_of.get(ln), []).extend(call.outputs[0] for call in base[ln] if call.outputs)
    tracer.own_outputs = own_outputs
    for ln, c in per_layer:
        first = base[ln][c].inputs[0]
        # the encoder's output (encoder-decoder models only): same width, another length than the stream,
        # and not the output of a layer of the same stack
        memory[(ln, c)] = [
            t
            for t in base[ln][c].inputs[1:]
            if enc_dec
            and t.dim() == first.dim()
            and t.dim() >= 2
            and t.shape[-1] == first.shape[-1]
            and _len(t) != _len(first)
            and not any(_same(t, o) for o in own_outputs.get(stack_of.get(ln), []))
        ]

    def sub_calls(key):
        ln, c = key
        lo, hi = base[ln][c].start, base[ln][c].end
        return [
            (n, k)
            for n in subs
            if in_layer.get(n) == ln
            for k, call in enumerate(base.get(n, []))
            if lo < call.start < hi
        ]

    def outermost(found):
        names = {n for n, _ in found}
        return [(n, k) for n, k in found if not any(n.startswith(o + ".") for o in names if o != n)]

    def consumers(key, tensor):
        found = [(n, k) for n, k in sub_calls(key) if any(_same(t, tensor) for t in base[n][k].inputs)]
        if not found:  # the tensor padded along the sequence before the sub-layer (Pegasus-X's staggered blocks)
            found = [(n, k) for n, k in sub_calls(key) if any(_padded(t, tensor) for t in base[n][k].inputs)]
        return outermost(found)

    cons: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for key, members in per_layer.items():
        for name, nc in members:
            cons[(name, nc)] = consumers(key, base[name][nc].outputs[0])
            # a norm wrapped in a gated norm (AXK2's GatedRMSNorm: y = norm(x); y * sigmoid(mlp(y))): when all it
            # feeds is inside the wrapper, it feeds what the wrapper's output feeds
            wrap = next(
                (
                    n
                    for n in subs
                    if name.startswith(n + ".") and type(subs[n]).__name__.lower().endswith(_NORM_NAME_ENDS)
                ),
                None,
            )
            if wrap is not None and cons[(name, nc)] and all(c.startswith(wrap + ".") for c, _ in cons[(name, nc)]):
                calls = [k for k, call in enumerate(base.get(wrap, [])) if call.start < base[name][nc].start < call.end]
                if calls and base[wrap][calls[0]].outputs:
                    cons[(name, nc)] = consumers(key, base[wrap][calls[0]].outputs[0])
    producers: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for (name, nc), f in facts.items():
        if not f.in_res and f.out_res:
            key = (f.layer_name, f.call)
            found = [
                (n, k)
                for n, k in sub_calls(key)
                if base[n][k].outputs
                and base[n][k].end < f.start
                and _same(base[n][k].outputs[0], base[name][nc].inputs[0])
            ]
            if not found:  # the norm closes a sub-layer from inside it (AXK1's post_mlp_layernorm in the MoE):
                # that sub-layer, when the norm's output is its output
                found = [
                    (n, k)
                    for n, k in sub_calls(key)
                    if name.startswith(n + ".")
                    and base[n][k].outputs
                    and base[n][k].start < f.start < base[n][k].end
                    and _same(base[n][k].outputs[0], base[name][nc].outputs[0])
                ]
            producers[(name, nc)] = outermost(found)
    layer_in_cons = {key: consumers(key, base[key[0]][key[1]].inputs[0]) for key in per_layer}
    candidates = {m for group in (*cons.values(), *producers.values(), *layer_in_cons.values()) for m in group}
    which = {}  # candidate -> index of the input that is the traced tensor
    for key, members in per_layer.items():
        points = [base[key[0]][key[1]].inputs[0]] + [base[n][c].outputs[0] for n, c in members]
        for m in (*layer_in_cons[key], *(x for n, c in members for x in cons[(n, c)])):
            which.setdefault(
                m, next((i for i, t in enumerate(base[m[0]][m[1]].inputs) if any(_same(t, p) for p in points)), None)
            )
    kinds, pre_mix = _module_kinds(tracer, base, iso, candidates, memory, in_layer, which, norm_in_layer)

    def kind_set(found):
        return frozenset(kinds[m] for m in found)

    mixers = [n for (n, _), kind in kinds.items() if kind == "mix"]
    for (name, nc), f in facts.items():
        f.feeds = kind_set(cons[(name, nc)])
        if (name, nc) in producers:
            found = kind_set(producers[(name, nc)])
            f.producer_kind = next(iter(found)) if len(found) == 1 else None
        f.inside_mixer = any(name.startswith(m + ".") for m in mixers)
        f.before_mixing = pre_mix.get((name, nc), False)
    layer_feeds = {key: kind_set(found) for key, found in layer_in_cons.items()}

    # causality: a change at the probe token of every layer input; does anything before it move?
    moved_tok = {k: _delta(v, tracer.gen, PROBE_TOKEN, _len(v)) for k, v in iso.items()}
    after = tracer.run(layer_input=moved_tok)
    causal = {
        ln: all(
            not _changed_before(
                base[ln][c].outputs[0], after[ln][c].outputs[0], PROBE_TOKEN, _len(base[ln][c].inputs[0])
            )
            for c in range(len(base[ln]))
            if base[ln][c].outputs
        )
        for ln in layer_names
    }
    has_memory = {ln: any(memory.get((ln, c)) for c in range(len(base[ln]))) for ln in layer_names}
    return facts, per_layer, layer_feeds, base, causal, has_memory, not_run


def _module_kinds(tracer, base, iso, candidates, memory, in_layer, which, norm_in_layer):
    """mix / memory / tokenwise for each candidate sub-layer call (nested candidates run in separate forwards),
    and for norms inside a mixer whether their input is still unmixed when the mixer's input moves at one token."""
    pre_mix: dict[tuple[str, int], bool] = {}
    reads_memory: set[tuple[str, int]] = set()  # cross-attention, unless it also mixes its own tokens (merged)
    kinds: dict[tuple[str, int], str] = {}
    rest = []
    for n, k in candidates:
        ln = in_layer[n]
        mem = [t for c in range(len(base[ln])) for t in memory.get((ln, c), [])]
        if any(_same(t, m) for t in base[n][k].inputs for m in mem):
            reads_memory.add((n, k))
        rest.append((n, k))
    groups: list[list[tuple[str, int]]] = []
    for n, k in sorted(rest):
        for group in groups:
            if not any(n.startswith(o + ".") or o.startswith(n + ".") or o == n for o, _ in group):
                group.append((n, k))
                break
        else:
            groups.append([(n, k)])
    for group in groups:
        forced, forced_others, lengths = {}, {}, {}
        for n, k in group:
            inputs = list(base[n][k].inputs)
            i = which.get((n, k))
            if i is None:
                i = next((j for j, t in enumerate(inputs) if _seq_dim(t, _len(t)) is not None), None)
            if i is None:
                kinds[(n, k)] = "tokenwise"
                continue
            lengths[(n, k)] = _len(inputs[i])
            others = list(inputs)
            # every input that is the traced tensor moves with it (Funnel's attention gets it as query, key, value)
            same = [j for j, t in enumerate(inputs) if j == i or _same(t, inputs[i]) and t.shape == inputs[i].shape]
            moved = _delta(inputs[i], tracer.gen, PROBE_TOKEN, lengths[(n, k)])
            moved_others = _delta(others[i], tracer.gen, PROBE_TOKEN, lengths[(n, k)], others=True)
            for j in same:
                inputs[j], others[j] = moved, moved_others
            # and the unpooled stream beside a pooled query (Funnel): an input that is an earlier layer's output
            # of the same stack moves at the same token
            earlier = tracer.own_outputs.get(tracer.stack_of.get(in_layer[n]), [])
            for j, t in enumerate(base[n][k].inputs):
                if j not in same and _seq_dim(t, _len(t)) is not None and any(_same(t, o) for o in earlier):
                    inputs[j] = _delta(t, tracer.gen, PROBE_TOKEN, _len(t))
                    others[j] = _delta(t, tracer.gen, PROBE_TOKEN, _len(t), others=True)
            forced[(n, k)] = inputs
            forced_others[(n, k)] = others
        after = tracer.run(layer_input=iso, module_input=forced)
        # and every token but the probe moved: a saturated softmax that ignores the probe token still mixes
        after_others = tracer.run(layer_input=iso, module_input=forced_others)
        for n, k in forced:
            lo, hi = base[n][k].start, base[n][k].end

            def pairs(run):
                own = list(zip(base[n][k].outputs, run[n][k].outputs))
                return own + [
                    (b, a)
                    for m in base
                    if m.startswith(n + ".") and m in run
                    for cb, ca in zip(base[m], run[m])
                    if lo < cb.start < hi
                    for b, a in zip(cb.outputs, ca.outputs)
                ]

            length = lengths[(n, k)]
            mixed = any(_changed_elsewhere(b, a, PROBE_TOKEN, length) for b, a in pairs(after)) or any(
                _changed_at(b, a, PROBE_TOKEN, length) for b, a in pairs(after_others)
            )
            kinds[(n, k)] = "mix" if mixed else "memory" if (n, k) in reads_memory else "tokenwise"
            for m in norm_in_layer:
                if m.startswith(n + ".") and m in after:
                    for c, (cb, ca) in enumerate(zip(base[m], after[m])):
                        if lo < cb.start < hi and cb.inputs:
                            changed = _differs(cb.inputs[0], ca.inputs[0], cb.inputs[0])
                            unmixed = changed and not _changed_elsewhere(
                                cb.inputs[0], ca.inputs[0], PROBE_TOKEN, _len(cb.inputs[0])
                            )
                            pre_mix[(m, c)] = pre_mix.get((m, c), False) or unmixed
    return kinds, pre_mix


# ----------------------------------------------------------------------------- roles

_SUBLAYER = {"mix": "attention", "memory": "cross-attention", "tokenwise": "feed-forward"}


def _describe(f: _NormFacts) -> str:
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


def find_norm_sites(model: nn.Module) -> list[NormSite]:
    """Every normalization site of ``model``, in module order, each with role, layer and stack (see module doc).

    Example:
        >>> sites = find_norm_sites(model)
        >>> [s.name for s in sites if s.role == "block_output"][:1]  # doctest: +SKIP
        ['bert.encoder.layer.0.output.LayerNorm']
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", type(model).__name__)
    named = dict(model.named_modules())
    norms = {n: m for n, m in named.items() if is_norm(m)}
    if not norms:
        raise NormLayoutError(
            f"No LayerNorm or RMSNorm modules found in this {model_type!r} model "
            f"({type(model).__name__}); the outlier analysis needs normalization layers."
        )
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
    layer_items = {n: el for items in owners.values() for n, el in items}
    enc_dec = len(owners) == 2 or bool(getattr(config, "is_encoder_decoder", False))
    stack_of = {n: owner for owner, items in owners.items() for n, _ in items}
    facts, per_layer, layer_feeds, base, causal, has_memory, not_run = _trace_layers(
        model, layer_items, norms, enc_dec, stack_of
    )
    if not_run:
        warnings.warn(
            f"{len(not_run)} norm(s) of this {model_type!r} model did not run on a text-only forward and are "
            f"not sites (they do not touch its outputs): {not_run[:4]}",
            stacklevel=2,
        )
    # stacks none of whose layers ran on a text-only forward (vision / audio towers) hold no sites
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
    dropped = {n for o in owners if o not in ran for n in norms if n.startswith(o + ".")} | set(not_run)
    owners = ran
    norms = {
        n: m
        for n, m in norms.items()
        if n not in dropped
        and (base.get(n) or any(n.startswith(ln + ".") for items in owners.values() for ln, _ in items))
    }
    stack_names = _name_stacks(owners, causal, has_memory)

    sites: list[NormSite] = []
    placed: set[str] = set()
    offsets = {n: _probe_offset(m) for n, m in norms.items()}
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

    loose = {n: m for n, m in norms.items() if n not in placed}
    if loose:
        sites.extend(_place_loose_norms(model, loose, base, owners, stack_names, offsets))
    off_stream = {name for (name, _), f in facts.items() if f.size != f.hidden}
    disagree = name_disagreements(sites, off_stream)
    if disagree:
        raise NormLayoutError(
            f"In this {model_type!r} model the traced roles and the module names disagree: "
            + "; ".join(disagree[:2])
            + ". The site finder will not guess which is right."
        )
    order = list(named)
    return sorted(sites, key=lambda s: order.index(s.name))


# Module-name cross-check (never the decision): a norm whose name has one of these parts must have one of the
# roles, else the finder raises rather than trust either.
NAME_ROLES = {
    "q_norm": {"qk_norm", "inner"},
    "k_norm": {"qk_norm", "inner"},
    "q_layernorm": {"qk_norm", "inner"},
    "k_layernorm": {"qk_norm", "inner"},
    "query_layernorm": {"qk_norm", "inner"},
    "key_layernorm": {"qk_norm", "inner"},
    "pre_feedforward_layernorm": {"pre_ffn"},
    "post_feedforward_layernorm": {"post_ffn"},
    "input_layernorm": {"pre_attention", "pre_parallel", "block_input"},
    "post_attention_layernorm": {"pre_ffn", "post_attention", "attention_output"},
    "ln_1": {"pre_attention", "pre_parallel", "attention_output"},
    "ln_2": {"pre_ffn", "block_output"},
    "self_attn_layer_norm": {"attention_output", "pre_attention"},
    "encoder_attn_layer_norm": {"cross_attention_output", "pre_cross_attention"},
    "attention.output.LayerNorm": {"attention_output"},
}


def name_disagreements(sites: Sequence[NormSite], off_stream: Iterable[str] = ()) -> list[str]:
    """Sites whose module name suggests another role than the traced one. ``off_stream``: names of norms whose
    size is not their layer's stream width (MobileBERT's bottleneck norms): traced ``inner``, they cannot hold a
    stream role whatever their name says, so their names are not held against them."""
    off_stream = set(off_stream)
    out = []
    for site in sites:
        if site.role == "inner" and site.name in off_stream:
            continue
        for part, allowed in NAME_ROLES.items():
            if (site.name.endswith("." + part) or f".{part}." in site.name) and site.role not in allowed:
                out.append(f"'{site.name}' traced as {site.role} but its name suggests {sorted(allowed)}")
    return out


def _name_stacks(owners: dict[str, list], causal: dict[str, bool], has_memory: dict[str, bool]) -> dict[str, str]:
    names = list(owners)
    if len(names) == 1:
        layers = [ln for ln, _ in owners[names[0]]]
        return {names[0]: "decoder" if all(causal[ln] for ln in layers) else "encoder"}
    if len(names) == 2:
        mem = {o: any(has_memory[ln] for ln, _ in owners[o]) for o in names}
        if sum(mem.values()) == 1:
            return {o: "decoder" if mem[o] else "encoder" for o in names}
    out = {}
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
                owner = max(common, key=common.get)
            elif calls and calls[0].end < min(starts.values()):  # before every stack (Funnel's embedding norm)
                owner = min(starts, key=starts.get)
            elif calls and calls[0].start > max(ends.values()):  # after every stack
                owner = max(ends, key=ends.get)
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


def select_sites(
    sites: Sequence[NormSite],
    roles: Iterable[str] | str | None = ("block_output",),
    layers: Iterable[int] | range | None = None,
    stack: str | None = None,
) -> list[NormSite]:
    """The sites with one of ``roles`` (None: every hidden-dim role, not ``qk_norm``), in ``layers``
    (None: all) of ``stack`` (None: any).

    Raises ValueError for a role the model does not have or a layer outside it, and for an
    empty selection.

    Example:
        >>> select_sites(find_norm_sites(model), roles="block_output", layers=range(0, 3))  # doctest: +SKIP
    """
    if isinstance(roles, str):
        roles = (roles,)
    present_roles = {s.role for s in sites}
    if roles is not None:
        roles = tuple(roles)
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"Unknown site role(s) {unknown}; pick from {list(ROLES)}.")
        missing = [r for r in roles if r not in present_roles]
        if missing:
            raise ValueError(f"This model has no {missing} norm sites; it has {sorted(present_roles)}.")
    stacks = {s.stack for s in sites}
    if stack is not None and stack not in stacks:
        raise ValueError(f"Unknown stack {stack!r}; this model has {sorted(stacks)}.")
    wanted = HIDDEN_ROLES if roles is None else roles
    chosen = [s for s in sites if s.role in wanted and (stack is None or s.stack == stack)]
    if layers is not None:
        layers = list(layers)
        n_layers = 1 + max((s.layer for s in sites if s.layer is not None), default=-1)
        bad = [l for l in layers if not isinstance(l, (int,)) or isinstance(l, bool) or not 0 <= l < n_layers]
        if bad:
            raise ValueError(f"Layer(s) {bad} are outside this model: layers run from 0 to {n_layers - 1}.")
        chosen = [s for s in chosen if s.layer is None or s.layer in layers]
    if not chosen:
        raise ValueError(f"No norm sites match roles={roles}, layers={layers}, stack={stack}.")
    return chosen


def default_roles(sites: Sequence[NormSite]) -> tuple[tuple[str, ...], str]:
    """The roles that stand for the paper's block-output LayerNorms in this model, and why (one sentence).

    Post-LN (BERT-like): ``block_output``, the norm whose output is each layer's output. Pre-LN: no norm
    writes the stream, so the norm before the feed-forward (``pre_ffn``, else the parallel one, else the one
    before attention) stands in: it is the last norm of each layer and reads the whole residual stream.
    """
    present = {s.role for s in sites}
    if "block_output" in present:
        return ("block_output",), (
            "post-LN model: the block-output norms, whose output is each layer's output, are the paper's sites"
        )
    for role, what in (
        ("pre_ffn", "the norm before each feed-forward"),
        ("pre_parallel", "the one norm before each layer's parallel attention and feed-forward"),
        ("pre_attention", "the norm before each attention"),
    ):
        if role in present:
            return (role,), (
                f"pre-LN model: no norm writes the residual stream, so {what} ({role}) stands in "
                "for the paper's block-output LayerNorms: it reads the whole stream, and its weight "
                "scales the outlier dims before the sub-layer"
            )
    if "block_input" in present:
        return ("block_input",), (
            "norm-on-entry model: each layer normalises the incoming stream and carries the "
            "normalised stream on (block_input), so that norm, which reads the previous "
            "layer's output and writes the stream, stands in for the paper's block-output "
            "LayerNorms"
        )
    raise ValueError(f"This model has no layer norms to stand in for block-output sites (roles: {sorted(present)}).")


ROLE_LABELS = {
    "embeddings": "embedding",
    "block_input": "block-input",
    "attention_output": "attention-output",
    "cross_attention_output": "cross-attention-output",
    "block_output": "block-output",
    "pre_attention": "pre-attention",
    "pre_cross_attention": "pre-cross-attention",
    "pre_ffn": "pre-FFN",
    "pre_parallel": "pre-parallel",
    "post_attention": "post-attention",
    "post_cross_attention": "post-cross-attention",
    "post_ffn": "post-FFN",
    "qk_norm": "query/key",
    "inner": "inner",
    "final": "final",
    "head": "LM-head",
}


def role_label(roles: Iterable[str] | str) -> str:
    """Words for a role set in titles and sentences, e.g. ``block-output`` or ``pre-FFN``."""
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    return " + ".join(ROLE_LABELS.get(r, r) for r in roles)


def companion_roles(sites: Sequence[NormSite], roles: Iterable[str]) -> tuple[str, ...]:
    """The model's other hidden-dim roles worth showing next to ``roles``: layer roles first (ROLES order), then
    the embedding norm; final and head norms are left out (one site each, shown in the every-site heatmap)."""
    present = {s.role for s in sites}
    roles = set(roles)
    layered = tuple(
        r for r in HIDDEN_ROLES if r in present and r not in roles and r not in ("embeddings", "final", "head")
    )
    return layered + (("embeddings",) if "embeddings" in present and "embeddings" not in roles else ())


def sites_table(sites: Sequence[NormSite]) -> "pd.DataFrame":
    """A tidy table of the sites (name, role, layer, stack, size, has_bias) to show what an ablation touches."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "name": s.name,
                "role": s.role,
                "layer": s.layer,
                "stack": s.stack,
                "size": s.size,
                "has_bias": s.bias is not None,
            }
            for s in sites
        ]
    )


def _first(out) -> torch.Tensor:
    return (out[0] if isinstance(out, (tuple, list)) else out).detach().clone()
