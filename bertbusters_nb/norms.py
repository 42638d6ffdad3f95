"""Find every normalization site of a transformers model, with its role, layer and stack.

Sites are found by what they are (LayerNorm / RMSNorm classes with a 1-D weight) and
where they sit (inside which layer of which layer stack, and when they run relative to
the layers), never by substring matches on module names. Inside a layer the role comes
from an explicit allow-list of layouts; a layer whose norms match no layout is an error
naming the model type, so a new architecture is never silently half-covered.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import torch
from torch import nn

Role = Literal[
    "embeddings", "attention_output", "cross_attention_output", "block_output",
    "pre_attention", "pre_cross_attention", "pre_ffn", "final", "head",
]
ROLES: tuple[str, ...] = Role.__args__  # type: ignore[attr-defined]


class NormLayoutError(ValueError):
    """The model's normalization layout is not one the site finder knows."""


# Relative names of the norms inside one layer -> role. Post-LN first, then pre-LN.
LAYER_LAYOUTS: dict[str, dict[str, str]] = {
    "bert": {"attention.output.LayerNorm": "attention_output", "output.LayerNorm": "block_output"},
    "distilbert": {"sa_layer_norm": "attention_output", "output_layer_norm": "block_output"},
    "albert": {"attention.LayerNorm": "attention_output", "full_layer_layer_norm": "block_output"},
    "xlnet": {"rel_attn.layer_norm": "attention_output", "ff.layer_norm": "block_output"},
    "bart-encoder": {"self_attn_layer_norm": "attention_output", "final_layer_norm": "block_output"},
    "bart-decoder": {
        "self_attn_layer_norm": "attention_output",
        "encoder_attn_layer_norm": "cross_attention_output",
        "final_layer_norm": "block_output",
    },
    "gpt2": {"ln_1": "pre_attention", "ln_2": "pre_ffn"},
    "llama": {"input_layernorm": "pre_attention", "post_attention_layernorm": "pre_ffn"},
}
# Model types that reuse BART's names but normalise BEFORE each sub-layer (pre-LN).
PRE_LN_BART_NAMES = {"mbart", "pegasus", "m2m_100", "whisper"}
_PRE_LN_RENAME = {"attention_output": "pre_attention", "cross_attention_output": "pre_cross_attention",
                  "block_output": "pre_ffn"}
# Layouts of decoder-only (causal) models: a single stack of these is a "decoder".
CAUSAL_LAYOUTS = {"gpt2", "llama"}


@dataclass(frozen=True)
class NormSite:
    """One normalization module of a model.

    name: full module name, e.g. ``bert.encoder.layer.3.output.LayerNorm``.
    role: what it normalises (see ``ROLES``); ``head`` is an LM head's own norm.
    layer: index within its stack, None outside the layers (embeddings, final, head).
    stack: ``encoder`` or ``decoder``.
    module: the module itself (not compared, not shown).
    """

    name: str
    role: str
    layer: int | None
    stack: str
    module: nn.Module = field(compare=False, repr=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.module, "bias", None)

    @property
    def size(self) -> int:
        return int(self.module.weight.shape[0])


def is_norm(module: nn.Module) -> bool:
    """LayerNorm, or an RMSNorm/LayerNorm-style class (Llama, T5) with a 1-D weight."""
    if isinstance(module, nn.LayerNorm):
        return module.weight is not None
    name = type(module).__name__
    weight = getattr(module, "weight", None)
    return (name.endswith("RMSNorm") or name.endswith("LayerNorm")) and isinstance(weight, nn.Parameter) \
        and weight.dim() == 1


def _layer_lists(model: nn.Module, norm_ids: set[int]) -> list[tuple[str, nn.ModuleList]]:
    """Innermost ModuleLists whose every element holds at least one norm: the layer stacks."""
    candidates = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and all(
            any(id(m) in norm_ids for m in el.modules()) for el in mod
        ):
            candidates.append((name, mod))
    inner_ids = set()
    for _, mod in candidates:
        for _, other in candidates:
            if other is not mod and any(m is other for m in mod.modules()):
                inner_ids.add(id(mod))  # mod contains another candidate: not innermost
    return [(n, m) for n, m in candidates if id(m) not in inner_ids]


def _stack_owner(list_name: str, model: nn.Module, all_lists: Sequence[str]) -> str:
    """Module path owning a layer list: the parent of its outermost enclosing ModuleList."""
    parts = list_name.split(".")
    modules = dict(model.named_modules())
    owner = ".".join(parts[:-1])
    # climb over enclosing ModuleLists and their elements (ALBERT's layer groups)
    while owner:
        parent = ".".join(owner.split(".")[:-1])
        if isinstance(modules.get(parent), nn.ModuleList) or isinstance(modules.get(owner), nn.ModuleList):
            owner = parent
            continue
        if parent and isinstance(modules.get(".".join(parent.split(".")[:-1])), nn.ModuleList):
            owner = parent
            continue
        break
    return owner


def _expected_layers(config, stack: str, n_stacks: int) -> int | None:
    if getattr(config, "model_type", "") == "albert":
        return config.num_hidden_groups * config.inner_group_num
    if getattr(config, "is_encoder_decoder", False) and n_stacks == 2:
        return getattr(config, f"{stack}_layers", None)
    return getattr(config, "num_hidden_layers", None)


def _dummy_forward_order(model: nn.Module, norms: dict[str, nn.Module],
                         layers: dict[str, nn.Module]) -> dict[str, int]:
    """Call order of norms and layers on a 4-token dummy input: tells embeddings from final norms."""
    order: dict[str, int] = {}
    hooks = []
    for name, mod in {**norms, **layers}.items():
        hooks.append(mod.register_forward_pre_hook(
            lambda _m, _a, name=name: None if name in order else order.__setitem__(name, len(order))))
    device = next(model.parameters()).device
    vocab = getattr(model.config, "vocab_size", 8) or 8
    ids = torch.full((1, 4), min(5, vocab - 1), dtype=torch.long, device=device)
    kwargs = {"input_ids": ids}
    if getattr(model.config, "is_encoder_decoder", False):
        kwargs["decoder_input_ids"] = ids
    try:
        with torch.no_grad():
            model(**kwargs)
    except Exception as exc:  # noqa: BLE001 - re-raised with our message on top
        raise NormLayoutError(
            f"Could not run a 4-token dummy forward of this {model.config.model_type!r} model to place its "
            f"norms ({type(exc).__name__}: {exc}). Pass a model that takes input_ids."
        ) from exc
    finally:
        for h in hooks:
            h.remove()
    return order


def find_norm_sites(model: nn.Module) -> list[NormSite]:
    """Every normalization site of ``model``, in module order, each with role, layer and stack.

    Example:
        >>> sites = find_norm_sites(model)
        >>> [s.name for s in sites if s.role == "block_output"][:1]  # doctest: +SKIP
        ['bert.encoder.layer.0.output.LayerNorm']
    """
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    named = dict(model.named_modules())
    norms = {n: m for n, m in named.items() if is_norm(m)}
    if not norms:
        raise NormLayoutError(
            f"No LayerNorm or RMSNorm modules found in this {model_type!r} model "
            f"({type(model).__name__}); the outlier analysis needs normalization layers."
        )
    lists = _layer_lists(model, {id(m) for m in norms.values()})
    if not lists:
        raise NormLayoutError(f"No layer stack (ModuleList of layers holding norms) found in {model_type!r}.")
    owners: dict[str, list[tuple[str, nn.Module]]] = {}
    for list_name, mod in lists:
        owner = _stack_owner(list_name, model, [n for n, _ in lists])
        owners.setdefault(owner, []).extend((f"{list_name}.{i}", el) for i, el in enumerate(mod))
    stack_names = _name_stacks(list(owners))

    sites: list[NormSite] = []
    placed: set[str] = set()
    layers_by_name: dict[str, nn.Module] = {}
    for owner, layer_items in owners.items():
        stack = stack_names[owner]
        expected = _expected_layers(model.config, stack, len(owners)) if hasattr(model, "config") else None
        if expected is not None and expected != len(layer_items):
            raise NormLayoutError(
                f"Found {len(layer_items)} layers in '{owner}' of this {model_type!r} model but its config says "
                f"{expected}; the site finder does not understand this layout."
            )
        for index, (layer_name, layer) in enumerate(layer_items):
            layers_by_name[layer_name] = layer
            rel = {n[len(layer_name) + 1:]: n for n in norms if n.startswith(layer_name + ".")}
            key, layout = _match_layout(set(rel), model_type, layer_name)
            if len(owners) == 1 and key in CAUSAL_LAYOUTS:
                stack = stack_names[owner] = "decoder"
            for rel_name, full in rel.items():
                sites.append(NormSite(full, layout[rel_name], index, stack, norms[full]))
                placed.add(full)

    loose = {n: m for n, m in norms.items() if n not in placed}
    if loose:
        sites.extend(_place_loose_norms(model, loose, layers_by_name, owners, stack_names))
    order = list(named)
    return sorted(sites, key=lambda s: order.index(s.name))


def _name_stacks(owners: list[str]) -> dict[str, str]:
    if len(owners) == 1:
        return {owners[0]: "encoder"}  # renamed to decoder below for causal layouts
    names = {}
    for owner in owners:
        last = owner.split(".")[-1]
        if last not in ("encoder", "decoder"):
            raise NormLayoutError(f"Several layer stacks found; cannot tell encoder from decoder at '{owner}'.")
        names[owner] = last
    return names


def _match_layout(rel_names: set[str], model_type: str, layer_name: str) -> tuple[str, dict[str, str]]:
    for key, layout in LAYER_LAYOUTS.items():
        if set(layout) == rel_names:
            if key.startswith("bart") and model_type in PRE_LN_BART_NAMES:
                return key, {n: _PRE_LN_RENAME[r] for n, r in layout.items()}
            return key, layout
    raise NormLayoutError(
        f"The norms inside '{layer_name}' of this {model_type!r} model ({sorted(rel_names)}) match no known "
        f"layout; add one to bertbusters_nb.norms.LAYER_LAYOUTS."
    )


def _place_loose_norms(model, loose, layers_by_name, owners, stack_names) -> list[NormSite]:
    """Norms outside the layers: head (outside the base model), else embeddings or final by call order."""
    base = getattr(model, "base_model", model)
    base_ids = {id(m) for m in base.modules()}
    order = _dummy_forward_order(model, loose, layers_by_name)
    sites = []
    for name, mod in loose.items():
        if id(mod) not in base_ids:
            sites.append(NormSite(name, "head", None, _only_or_encoder(stack_names), mod))
            continue
        owner = next((o for o in owners if o and name.startswith(o + ".")), None)
        if owner is None:
            if len(owners) != 1:
                raise NormLayoutError(f"Cannot tell which layer stack the norm '{name}' belongs to.")
            owner = next(iter(owners))
        first_layer = owners[owner][0][0]
        if name not in order or first_layer not in order:
            raise NormLayoutError(f"The norm '{name}' did not run in a dummy forward; cannot place it.")
        role = "embeddings" if order[name] < order[first_layer] else "final"
        sites.append(NormSite(name, role, None, stack_names[owner], mod))
    return sites


def _only_or_encoder(stack_names: dict[str, str]) -> str:
    values = set(stack_names.values())
    return values.pop() if len(values) == 1 else "decoder"


def select_sites(
    sites: Sequence[NormSite],
    roles: Iterable[str] | str | None = ("block_output",),
    layers: Iterable[int] | range | None = None,
    stack: str | None = None,
) -> list[NormSite]:
    """The sites with one of ``roles``, in ``layers`` (None: all) of ``stack`` (None: any).

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
            raise ValueError(
                f"This model has no {missing} norm sites; it has {sorted(present_roles)}."
            )
    stacks = {s.stack for s in sites}
    if stack is not None and stack not in stacks:
        raise ValueError(f"Unknown stack {stack!r}; this model has {sorted(stacks)}.")
    chosen = [s for s in sites if (roles is None or s.role in roles) and (stack is None or s.stack == stack)]
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


def sites_table(sites: Sequence[NormSite]):
    """A tidy table of the sites (name, role, layer, stack, size, has_bias) to show what an ablation touches."""
    import pandas as pd

    return pd.DataFrame(
        [{"name": s.name, "role": s.role, "layer": s.layer, "stack": s.stack, "size": s.size,
          "has_bias": s.bias is not None} for s in sites]
    )
