"""Which model is this? Short identities that key caches and checkpoints.

Two questions, two functions (one place for both; the values are the ones the scan checkpoints and
the fine-tuning cache have always used, so existing caches stay valid):

- ``model_fingerprint(model, sites)``: a model *in memory* (a random init, a loaded checkpoint, possibly
  edited): its class, config, parameter names and shapes, a few values per parameter and every norm
  value. Keys resumable scans (``evaluation.scan``).
- ``weights_fingerprint(name_or_path)``: a model *on disk*, before loading it: the sha256 of a local
  folder's config and safetensors files, else the hub name. Keys the fine-tuning cache
  (``finetuning.cache``), where loading a backbone just to name its cache entry would cost a load.
- ``weights_digest(model)``: a model in memory down to every byte of every parameter and buffer (one edited scalar
  changes it). Keys the shared results (``shared_results``), which a later notebook must never read for an edited
  model; ~1 s per 500 MB of weights.

A bit-exact snapshot for restoration asserts is a different thing: ``ablation.state_fingerprint``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import torch

from ..shared_results import tensors_digest
from .gguf import sha256_file
from .loading import resolve
from .sites import NormSite

__all__ = ["model_fingerprint", "weights_digest", "weights_fingerprint", "sha256_file"]


def model_fingerprint(model: torch.nn.Module, sites: Sequence[NormSite]) -> str:
    """A short hash of the model's config, parameter shapes and norm values (cheap; identifies a checkpoint).

    Example:
        >>> model_fingerprint(model, find_norm_sites(model))   # doctest: +SKIP
        '3f2a9c0e5b7d1a44'
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    digest.update(type(model).__name__.encode())
    if config is not None:
        digest.update(
            json.dumps(
                {
                    k: str(v)
                    for k, v in sorted(config.to_dict().items())
                    if k not in ("transformers_version", "_name_or_path", "dtype", "torch_dtype")
                },
                sort_keys=True,
            ).encode()
        )
    for name, param in model.named_parameters():  # names, shapes and a few values (tells random inits apart)
        digest.update(f"{name}{tuple(param.shape)}".encode())
        digest.update(param.detach().flatten()[:8].float().cpu().numpy().round(6).tobytes())
    for site in sites:
        for norm_param in (site.weight, site.bias):
            if norm_param is not None:
                digest.update(norm_param.detach().float().cpu().numpy().round(6).tobytes())
    return digest.hexdigest()[:16]


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter's and buffer's name, dtype, shape and bytes (``shared_results.tensors_digest``).

    Example:
        >>> weights_digest(model)   # doctest: +SKIP
        '9b1c...'
    """
    named = list(model.named_parameters()) + list(model.named_buffers())
    names = json.dumps([name for name, _ in named]).encode()
    return hashlib.blake2b(names + tensors_digest(value for _, value in named).encode(), digest_size=16).hexdigest()


def weights_fingerprint(name_or_path: str | os.PathLike) -> str:
    """Identity of a backbone on disk: a hash of a local folder's config and weights, else the hub name.

    Example:
        >>> weights_fingerprint("minilm")   # doctest: +SKIP
        'sha256:...'
    """
    source = Path(resolve(name_or_path))
    if source.is_dir():
        files = sorted(source.glob("*.safetensors")) + [source / "config.json"]
        digest = hashlib.sha256()
        for f in (f for f in files if f.exists()):
            digest.update(f.name.encode() + sha256_file(f).encode())
        return "sha256:" + digest.hexdigest()
    return "hub:" + str(name_or_path)
