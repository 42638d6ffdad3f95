"""What the site finder reads from names: which module classes are norms (``is_norm``: by type, or by a class
name ending like a norm's), and the module-name cross-check of traced roles (``name_disagreements``).

Names are never decisive for a role: roles are traced (``dataflow``). A module name that suggests another role
than the traced one (``NAME_ROLES``) makes the finder raise rather than trust either.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from torch import nn

from .sites import NormSite

NORM_CLASS_ENDS = ("layernorm", "rmsnorm", "layer_norm", "rms_norm", "nonorm")


def has_norm_class_name(module: nn.Module) -> bool:
    """The module's class name ends like a norm's (``*LayerNorm``, ``*RMSNorm``, ``NoNorm``, ...), whatever it holds
    (a gated-norm wrapper too: AXK2's ``GatedRMSNorm``)."""
    return type(module).__name__.lower().endswith(NORM_CLASS_ENDS)


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
    if not has_norm_class_name(module):
        return False
    if any(True for c in module.children() for _ in c.parameters()):
        return False
    params = dict(module.named_parameters(recurse=False))
    weight = getattr(module, "weight", None)
    if not params:
        return weight is None
    return isinstance(weight, nn.Parameter) and weight.dim() == 1 and set(params) <= {"weight", "bias"}


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
