"""Load a model and its tokenizer from a hub name, a local folder or a short offline alias.

Weights load from safetensors (a pickle can run arbitrary code when loaded). A hub repository whose main
branch holds only pickle weights (``pytorch_model.bin``: the MultiBERTs, for one) loads from the hub's own
safetensors conversion, the pull request the hub's conversion bot opened (``refs/pr/N``), when it has one;
else only when the caller names it in ``allow_pickle`` (or passes ``True``), accepting that risk for that
repository. Every refusal and failure names its cause: not in the local hub cache while offline, no such
repository, the hub unreachable, pickle-only weights. ``trust_remote_code`` is never turned on here. A GGUF
file (or a folder holding one) is converted once to a safetensors folder in the cache
(``model.gguf``) and loaded from there; the alias ``smollm2`` is the packaged SmolLM2-135M;
``planted:llama`` and ``planted:bert`` are tiny random models with one planted super weight (``model.planted``).
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, Collection, Literal

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..data import assets
from ..device import best_device
from .gguf import GGUFError, converted_folder, find_gguf
from .planted import ARCHS as PLANTED_ARCHS
from .planted import PREFIX, planted_folder

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
    # tiny random models with one planted super weight (``model.planted``), written once to the cache
    **{f"{PREFIX}{arch}": partial(planted_folder, arch) for arch in PLANTED_ARCHS},
}


class ModelLoadError(OSError):
    """A model could not be loaded; the message says why and what to use instead."""


SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
CONVERSION_BOT = "SFconvertbot"  # the hub's bot that opens a "safetensors variant" pull request on a repository
AllowPickle = bool | Collection[str]


def pickle_allowed(allow_pickle: AllowPickle, name: str) -> bool:
    """True when ``allow_pickle`` is True or names ``name`` (a hub name or folder the caller trusts)."""
    if isinstance(allow_pickle, bool):
        return allow_pickle
    return name in {str(n) for n in allow_pickle}


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _cache_folder(repo: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))


def _cached_weights(repo: str, revision: str) -> set[str] | None:
    """Weight files of ``repo`` at ``revision`` in the local hub cache; None when that revision is not cached."""
    ref = _cache_folder(repo) / "refs" / revision
    if not ref.is_file():
        return None
    snapshot = _cache_folder(repo) / "snapshots" / ref.read_text().strip()
    return {name for name in SAFE_WEIGHTS + PICKLE_WEIGHTS if (snapshot / name).exists()}


def hub_weights(repo: str, revision: str = "main") -> set[str]:
    """The weight files (safetensors and pickle, sharded or not) of a hub repository at ``revision``: from the
    local hub cache when offline (``HF_HUB_OFFLINE=1``), else from the hub's file listing. Raises
    ``ModelLoadError`` naming the cause: not cached while offline, no such repository, the hub unreachable."""
    if _offline():
        cached = _cached_weights(repo, revision)
        if cached is None:
            raise ModelLoadError(
                f"{repo!r} (revision {revision}) is not in the local Hugging Face cache ({_cache_folder(repo).parent}) "
                f"and HF_HUB_OFFLINE=1 forbids downloading it. Download it once online (or point HF_HOME / "
                f"HF_HUB_CACHE at a cache that has it). {_offline_hint()}"
            ) from None
        return cached
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = HfApi().list_repo_files(repo, revision=revision)
    except GatedRepoError:
        raise ModelLoadError(f"{repo!r} is gated on the hub: accept its terms and log in (`hf auth login`).") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"No model {repo!r} on the Hugging Face hub (or it is private: log in). Check the name. {_offline_hint()}"
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"{repo!r} has no revision {revision!r} on the hub.") from None
    except OSError as exc:  # connection refused, DNS, timeouts (httpx errors derive from OSError here or not)
        raise ModelLoadError(_unreachable(repo, exc)) from None
    except Exception as exc:  # noqa: BLE001 - httpx.ConnectError etc. are not OSErrors
        if "connect" in type(exc).__name__.lower() or "timeout" in type(exc).__name__.lower():
            raise ModelLoadError(_unreachable(repo, exc)) from None
        raise
    return {name for name in files if name in SAFE_WEIGHTS + PICKLE_WEIGHTS}


def _unreachable(repo: str, exc: Exception) -> str:
    return (
        f"Could not reach the Hugging Face hub for {repo!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}). "
        f"No network means no hub: set HF_HUB_OFFLINE=1 to use the local cache. {_offline_hint()}"
    )


def conversion_revision(repo: str) -> str | None:
    """The hub's safetensors conversion of a pickle-only repository: the open pull request by the hub's conversion
    bot (``refs/pr/N``), or None. Offline: a cached ``refs/pr/N`` holding safetensors (it got into the cache by
    an online load, which picked it by its author)."""
    if _offline():
        refs = sorted((_cache_folder(repo) / "refs" / "refs" / "pr").glob("*"), key=lambda p: (len(p.name), p.name))
        for ref in refs:
            if (_cached_weights(repo, f"refs/pr/{ref.name}") or set()) & set(SAFE_WEIGHTS):
                return f"refs/pr/{ref.name}"
        return None
    from huggingface_hub import HfApi

    try:
        for pr in HfApi().get_repo_discussions(repo, author=CONVERSION_BOT, discussion_type="pull_request"):
            if pr.status in ("open", "merged"):
                revision = f"refs/pr/{pr.num}"
                if hub_weights(repo, revision) & set(SAFE_WEIGHTS):
                    return revision
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a listing that fails leaves only the opt-in
        log.warning("could not list %s's pull requests (%s): no safetensors conversion found", repo, exc)
    return None


def hub_revision(repo: str, allow_pickle: AllowPickle = False) -> tuple[str, bool]:
    """(revision, use_safetensors) to load a hub repository by: main when it has safetensors; else the hub's
    safetensors conversion (``conversion_revision``); else main's pickle weights when ``allow_pickle`` names the
    repository (or is True); else ``ModelLoadError`` naming the repository, the risk and the two ways out."""
    files = hub_weights(repo)
    if files & set(SAFE_WEIGHTS):
        return "main", True
    if not files & set(PICKLE_WEIGHTS):
        raise ModelLoadError(f"{repo!r} has no PyTorch weights (safetensors or pytorch_model.bin) on its main branch.")
    converted = conversion_revision(repo)
    if converted is not None:
        log.info("%s: main holds only pickle weights; loading the hub's safetensors conversion %s", repo, converted)
        return converted, True
    if pickle_allowed(allow_pickle, repo):
        log.warning("%s: loading pickle weights (pytorch_model.bin), allowed by the caller", repo)
        return "main", False
    raise ModelLoadError(
        f"{repo!r} holds only pickle weights (pytorch_model.bin) on its main branch, and the hub has no safetensors "
        f"conversion of it (no pull request by {CONVERSION_BOT}{' in the local cache' if _offline() else ''}). "
        f"Unpickling a file can run arbitrary code. If you trust its publisher, name it: "
        f"load_model({repo!r}, allow_pickle=[{repo!r}]) (in a notebook: the allow_pickle parameter)."
    )


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
        "causal LM: head='causal-lm'), 'planted:llama' / 'planted:bert' (tiny random models with one planted "
        "super weight), or any local model folder or GGUF file."
    )


def load_model(
    name_or_path: str | os.PathLike,
    head: Head = "base",
    device: str | torch.device | None = None,
    num_labels: int | None = None,
    allow_pickle: AllowPickle = False,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (in eval mode, on ``device`` or the best one) and tokenizer.

    ``allow_pickle``: True, or the hub names / folders whose pickle weights the caller trusts (see the module
    docstring: a hub repository's safetensors conversion is preferred to its pickle weights).

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
    revision = None
    kwargs: dict[str, Any]
    if looks_local:
        _check_local_folder(
            path, pickle_allowed(allow_pickle, str(name_or_path)) or pickle_allowed(allow_pickle, source)
        )
        kwargs = {"use_safetensors": None if pickle_allowed(allow_pickle, source) else True}
    else:
        revision, safe = hub_revision(source, allow_pickle)
        kwargs = {"use_safetensors": True if safe else None, "revision": revision}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = _AUTO[head].from_pretrained(source, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ModelLoadError(_explain(source, looks_local, exc, revision)) from None
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


def _explain(source: str, local: bool, exc: Exception, revision: str | None = None) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if local:
        return f"Could not load the model folder {source}: {first_line}"
    # The repository and its weights were found (hub_revision); what failed is this load of its files.
    return (
        f"Could not load {source!r} (revision {revision}) from the Hugging Face "
        f"{'cache (HF_HUB_OFFLINE=1)' if _offline() else 'hub'}: {type(exc).__name__}: {first_line[:300]}"
    )


def load_config(name_or_path: str | os.PathLike) -> PretrainedConfig:
    """The model's config (alias, folder, GGUF or hub name) without its weights; ``ModelLoadError`` names the
    cause (no such folder, not cached while offline, no such repository, the hub unreachable)."""
    from transformers import AutoConfig

    source = resolve(name_or_path)
    path = Path(source)
    local = path.exists() or source.startswith((".", "/", "~")) or os.sep in source and not _hubish(source)
    if local and not (path / "config.json").exists():
        _check_local_folder(path, allow_pickle=True)
    if not local:
        hub_weights(source)  # names the cause when the repository is missing, uncached or unreachable
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_explain(source, local, exc)) from None


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
