"""Load a model and its tokenizer from a hub name, a local folder or a short offline alias.

Weights load from safetensors; pickle checkpoints need ``allow_pickle=True`` (a pickle
can run arbitrary code when loaded). ``trust_remote_code`` is never turned on here. A GGUF
file (or a folder holding one) is converted once to a safetensors folder in the cache
(``model.gguf``) and loaded from there; the alias ``smollm2`` is the packaged SmolLM2-135M.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Literal

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..data import assets
from ..device import best_device
from .gguf import GGUFError, converted_folder, find_gguf

log = logging.getLogger(__name__)

Head = Literal["base", "mlm", "causal-lm", "classification"]
_AUTO = {
    "base": AutoModel,
    "mlm": AutoModelForMaskedLM,
    "causal-lm": AutoModelForCausalLM,
    "classification": AutoModelForSequenceClassification,
}
# Model types whose checkpoints are decoder-only causal LMs: loaded with head="causal-lm", scored on next-token
# loss (the one list: evaluation.next_token, studies and widgets read it).
CAUSAL_TYPES: tuple[str, ...] = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gptj", "opt", "phi", "gemma")


def _smollm2_dir() -> Path:
    return converted_folder(assets.smollm2_gguf())


# Short names for the offline default models.
ALIASES: dict[str, Callable[[], Path]] = {
    "minilm": assets.minilm_dir,
    "bbmini": assets.bbmini_dir,  # package data: works from an installed wheel too
    "smollm2": _smollm2_dir,
}


class ModelLoadError(OSError):
    """A model could not be loaded; the message says why and what to use instead."""


def resolve(name_or_path: str | os.PathLike) -> str:
    """An alias to its folder; a GGUF file (or a folder holding one) to its converted safetensors folder
    in the cache; another path stays a path; anything else is taken as a hub name."""
    text = str(name_or_path)
    if text in ALIASES:
        try:
            return str(ALIASES[text]())
        except (assets.MissingAssetError, GGUFError) as exc:
            raise ModelLoadError(str(exc)) from None
    try:
        gguf = find_gguf(text)
        return str(converted_folder(gguf)) if gguf is not None else text
    except GGUFError as exc:
        raise ModelLoadError(str(exc)) from None


def _offline_hint() -> str:
    return (
        "Offline models: 'minilm' (packaged all-MiniLM-L6-v2, no MLM head), 'bbmini' (this "
        "project's own pre-trained small BERT with an MLM head), 'smollm2' (packaged SmolLM2-135M, a "
        "causal LM: head='causal-lm'), or any local model folder or GGUF file."
    )


def load_model(
    name_or_path: str | os.PathLike,
    head: Head = "base",
    device: str | torch.device | None = None,
    num_labels: int | None = None,
    allow_pickle: bool = False,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (in eval mode, on ``device`` or the best one) and tokenizer.

    Example:
        >>> model, tokenizer = load_model("minilm")           # packaged, offline
        >>> model, tokenizer = load_model("smollm2", head="causal-lm")  # packaged GGUF, converted once  # doctest: +SKIP
        >>> model, tokenizer = load_model("bert-base-uncased", head="mlm")  # needs the hub  # doctest: +SKIP
    """
    if head not in _AUTO:
        raise ValueError(f"Unknown head {head!r}; pick one of {list(_AUTO)}.")
    source = resolve(name_or_path)
    path = Path(source)
    looks_local = path.exists() or source.startswith((".", "/", "~")) or os.sep in source and not _hubish(source)
    if looks_local:
        _check_local_folder(path, allow_pickle)
    kwargs = {"use_safetensors": None if allow_pickle else True}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = _AUTO[head].from_pretrained(source, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ModelLoadError(_explain(source, looks_local, exc)) from None
    target = best_device(str(device) if device is not None else None)
    return model.to(target).eval(), tokenizer


def _hubish(text: str) -> bool:
    return text.count("/") == 1 and not Path(text).exists()


def _check_local_folder(path: Path, allow_pickle: bool) -> None:
    if not path.exists():
        raise ModelLoadError(f"Model folder {path} does not exist. " + _offline_hint())
    if not path.is_dir():
        raise ModelLoadError(
            f"{path} is a file; pass the model's folder (with config.json and weights) or a llama.cpp .gguf file."
        )
    if not (path / "config.json").exists():
        raise ModelLoadError(
            f"{path} is not a model folder: it has no config.json. Point at a folder written by "
            f"save_pretrained(). " + _offline_hint()
        )
    has_safe = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("pytorch_model*.bin"))
    if not has_safe and has_pickle and not allow_pickle:
        raise ModelLoadError(
            f"{path} holds only pickle weights (pytorch_model.bin). Unpickling can run arbitrary code; if you "
            f"trust the folder, pass allow_pickle=True, or convert it to safetensors."
        )
    if not has_safe and not has_pickle:
        raise ModelLoadError(f"{path} has a config.json but no weights (*.safetensors); the folder is incomplete.")


def _explain(source: str, local: bool, exc: Exception) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if local:
        return f"Could not load the model folder {source}: {first_line}"
    return (
        f"Could not load {source!r} from the Hugging Face hub (is it reachable, and is the name right? "
        f"No network here means no hub). {_offline_hint()} [{type(exc).__name__}: {first_line[:200]}]"
    )


def model_summary(model: PreTrainedModel) -> dict:
    """Architecture facts for result tables and notebook headers."""
    config = model.config
    return {
        "model_type": config.model_type,
        "class": type(model).__name__,
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden": getattr(config, "hidden_size", None),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(next(model.parameters()).device),
    }
