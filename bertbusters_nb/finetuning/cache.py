"""The fine-tuning cache: one folder per (model, its weights' hash, task, data source, seed, weight-changing settings).

An entry holds the model as safetensors, its tokenizer and a manifest (``finetune.json``) with the key, the
settings and a SHA-256 of every file. It is written through ``atomic.atomic_folder`` (a temp folder beside it,
renamed into place), so it is complete or absent; ``check_entry`` says what is wrong with one that does not
check out, and the caller recomputes it with a ``CacheWarning``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..atomic import atomic_folder, atomic_write_json, read_json
from ..data import assets
from ..evaluation.tasks import GLUE_HUB, get_task
from ..model.fingerprint import sha256_file as _sha256
from ..model.fingerprint import weights_fingerprint
from .settings import FinetuneSettings

CACHE_ENV = "BERTBUSTERS_FINETUNED"
FORMAT_VERSION = 1  # bump when the cached layout or the training recipe changes
MANIFEST = "finetune.json"


class CacheWarning(UserWarning):
    """A cached fine-tune was corrupt or incomplete and is being recomputed."""


def default_cache_dir() -> Path:
    """``$BERTBUSTERS_FINETUNED`` or ``~/.cache/bertbusters_nb/finetuned``."""
    return Path(os.environ.get(CACHE_ENV, assets.assets_dir().parent / "finetuned"))


def cache_key(model: str | os.PathLike, task: str, settings: FinetuneSettings, glue_source: str = GLUE_HUB) -> dict:
    """Everything that decides the fine-tuned weights, as a JSON-able dict (hashed for the folder name)."""
    spec = get_task(task)
    return {
        "format": FORMAT_VERSION,
        "model": str(model),
        "weights": weights_fingerprint(model),
        "task": spec.name,
        "data": "offline-assets" if spec.source == "offline" else glue_source,
        **settings.key_fields(),
    }


def entry_path(
    model: str | os.PathLike,
    task: str,
    settings: FinetuneSettings,
    cache_dir: str | os.PathLike | None = None,
    glue_source: str = GLUE_HUB,
) -> Path:
    """The cache folder of (model, task, settings): ``<cache_dir>/<task>-<model>-<hash>``."""
    key = cache_key(model, task, settings, glue_source)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(model)).name or str(model)).strip("-")[:40]
    return Path(cache_dir or default_cache_dir()) / f"{key['task']}-{slug}-{digest}"


def check_entry(path: Path, key: dict) -> str | None:
    """None when the cache entry at ``path`` is complete and matches ``key``; else what is wrong."""
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        return f"{MANIFEST} is missing"
    try:
        manifest = read_json(manifest_path)
    except ValueError as exc:
        return str(exc)
    if manifest.get("key") != key:
        return "its manifest was written for other settings"
    files = manifest.get("files") or {}
    if not any(name.endswith(".safetensors") for name in files):
        return "its manifest lists no safetensors weights"
    for name, digest in files.items():
        f = path / name
        if not f.exists():
            return f"{name} is missing"
        if _sha256(f) != digest:
            return f"{name} does not match its checksum"
    return None


def write_entry(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, final: Path, manifest: dict) -> None:
    """save_pretrained into a temp folder beside ``final``, hash every file, publish it (``atomic_folder``)."""
    with atomic_folder(final) as tmp:
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        manifest["files"] = {f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        atomic_write_json(tmp / MANIFEST, manifest)
