"""Tiny random models with a planted super weight: what a super weight looks like, offline, in seconds.

A super weight (Yu et al. 2024) is one scalar ``W[j, k]`` of a block's FFN output projection that writes a
massive activation into hidden dim ``j``: a large FFN channel ``x_k`` times it. A randomly initialised model has
none; ``planted_model`` builds one that has exactly one, where ``PLANTS`` says: the FFN input rows that produce
channel ``k`` of layer ``plant.layer`` are scaled by ``plant.gain`` and their bias raised by ``plant.bias`` (a
large ``x_k``), and ``W[j, k]`` is set to ``plant.value``. The LM head is scaled by ``plant.head_gain`` so that the objective depends on the hidden
state at all (a random head near zero gives a loss near log V whatever it reads). Two architectures, the two
ends of notebook 08's chain: ``llama`` (a pre-LN decoder, RMSNorm, causal-LM head) and ``bert`` (a post-LN
encoder whose block-output LayerNorm damps the spike, masked-LM head). The tokenizer is bbmini's (packaged,
8,192 WordPiece tokens), so real text runs through them.

The offline aliases ``planted:llama`` and ``planted:bert`` (``model.loading.ALIASES``) name these models
(seed 0) as a model folder written once to the cache (``planted_folder``), so every loader, CLI and notebook
takes them like any model: ``load_model("planted:llama", head="causal-lm")``.

Example:
    >>> model, tokenizer = planted_model("llama")                      # doctest: +SKIP
    >>> PLANTS["llama"]                                                # where the scalar is  # doctest: +SKIP
    Plant(layer=1, row=5, col=7, value=2.0, gain=1.0, bias=5.0, head_gain=20.0)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..data import assets

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["ARCHS", "PLANTS", "PREFIX", "Plant", "plant_of", "planted_folder", "planted_model"]

PREFIX = "planted:"  # the alias of arch A is "planted:A"
SPEC_FILE = "PLANT.json"


@dataclass(frozen=True)
class Plant:
    """Where and how the super weight is planted.

    layer: the block whose FFN output projection holds it. row: the hidden dim it writes (output channel j).
    col: the FFN channel it reads (input channel k). value: the planted scalar W[j, k]. gain: the factor on the
    FFN input rows that produce channel k (a massive x_k). bias: added to those rows' bias, where they have one.
    head_gain: the factor on the LM head.
    """

    layer: int = 1
    row: int = 5
    col: int = 7
    value: float = 2.0
    gain: float = 1.0
    bias: float = 0.0
    head_gain: float = 20.0


# The model size: 3 layers of width 64 (FFN 128), as the smoke profile's other tiny random models.
_SIZE: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4)
ARCHS: tuple[str, ...] = ("llama", "bert")
# The FFN channel k is lifted by a bias (Llama: ``mlp_bias=True``, zero-initialised elsewhere) so it is large on
# every token: the planted scalar's whole effect goes through its massive activation, which is what Yu et al.'s
# restoration check restores (a channel that is merely heavy-tailed also writes moderate values everywhere else).
# BERT's rows are also scaled (gain): the spike then varies over tokens, so that the block-output LayerNorm's output
# can be set against its ordinary tokens (a spike of one size on every token leaves no ordinary token to compare).
PLANTS: dict[str, Plant] = {"llama": Plant(value=2.0, bias=5.0), "bert": Plant(value=40.0, gain=20.0, bias=5.0)}


def _build(arch: str, tokenizer: PreTrainedTokenizerBase) -> tuple[PreTrainedModel, Any, list[Any], Any]:
    """(model, its FFN output projections per layer, the FFN input projections per layer, the LM head)."""
    import transformers as T

    common: dict[str, Any] = dict(
        vocab_size=len(tokenizer), max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id
    )
    model: Any  # the submodules below are reached by attribute (typed as Tensor | Module by torch)
    if arch == "llama":
        model = T.LlamaForCausalLM(
            T.LlamaConfig(num_key_value_heads=2, mlp_bias=True, tie_word_embeddings=False, **_SIZE, **common)
        )
        layers = model.model.layers
        return (
            model,
            [b.mlp.down_proj for b in layers],
            [(b.mlp.gate_proj, b.mlp.up_proj) for b in layers],
            model.lm_head,
        )
    if arch == "bert":
        model = T.BertForMaskedLM(T.BertConfig(tie_word_embeddings=False, **_SIZE, **common))
        layers = model.bert.encoder.layer
        return (
            model,
            [b.output.dense for b in layers],
            [(b.intermediate.dense,) for b in layers],
            model.cls.predictions.decoder,
        )
    raise ValueError(f"Unknown planted architecture {arch!r}; pick one of {list(ARCHS)}.")


def planted_model(
    arch: str = "llama", plant: bool = True, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A seeded random ``arch`` model (eval mode) with bbmini's tokenizer and, with ``plant``, the super weight
    ``PLANTS[arch]``; without it the same model (same seed, same head scale) with none: the control.

    Example:
        >>> model, tokenizer = planted_model("bert", plant=False)  # doctest: +SKIP
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets.bbmini_dir())
    torch.manual_seed(seed)
    model, writers, inputs, head = _build(arch, tokenizer)
    spec = PLANTS[arch]
    with torch.no_grad():
        head.weight *= spec.head_gain
        if plant:
            for proj in inputs[spec.layer]:
                proj.weight[spec.col] *= spec.gain
                if proj.bias is not None:
                    proj.bias[spec.col] += spec.bias
            writers[spec.layer].weight[spec.row, spec.col] = spec.value  # nn.Linear: (out, in)
    return model.eval(), tokenizer


def plant_of(name: str) -> Plant | None:
    """The plant of a ``planted:ARCH`` alias; None for any other model name."""
    arch = str(name)[len(PREFIX) :] if str(name).startswith(PREFIX) else None
    return PLANTS.get(arch) if arch else None


def _spec(arch: str, seed: int) -> dict:
    import transformers

    return {
        "arch": arch,
        "seed": seed,
        "plant": asdict(PLANTS[arch]),
        "size": _SIZE,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def planted_cache_dir() -> Path:
    """Where the alias folders are written: beside the other caches (``<assets dir>/../planted``)."""
    return assets.assets_dir().parent / "planted"


def planted_folder(arch: str, seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """The model folder (config, safetensors, tokenizer, ``PLANT.json``) of ``planted_model(arch, seed=seed)``,
    written once to the cache (to a temporary sibling, renamed into place: a killed write leaves nothing a later
    run trusts); a change of the plant, the size or the library versions gets a new folder."""
    if arch not in ARCHS:
        raise ValueError(f"Unknown planted architecture {arch!r}; pick one of {list(ARCHS)}.")
    spec = _spec(arch, seed)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir or planted_cache_dir())
    final = root / f"{arch}-seed{seed}-{digest}"
    if (final / SPEC_FILE).exists():
        return final
    if final.exists():  # incomplete (no PLANT.json): written by a killed run before the rename existed
        shutil.rmtree(final, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp"))
    try:
        model, tokenizer = planted_model(arch, seed=seed)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=1, sort_keys=True))
        for f in [tmp, *tmp.iterdir()]:  # readable like any cache folder (mkdtemp makes it private)
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / SPEC_FILE).exists():  # not another process's complete copy: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
