"""GGUF checkpoints (llama.cpp's format) converted once to a safetensors model folder in the cache.

GGUF is not pickle, but transformers reads it only by de-quantizing every tensor (about 20 s for
SmolLM2-135M on one core), so the result is cached as an ordinary ``save_pretrained`` folder:
``<cache>/<stem>-<sha256[:16]>/`` with config.json, model.safetensors, the tokenizer and
``SOURCE.json`` (the GGUF's path, size and full sha256). The folder is written to a temporary
sibling and renamed into place, so a killed conversion never leaves a folder a later run trusts;
a GGUF whose bytes change gets a new folder. A file lock beside the cache (``converted.lock``) lets
one process convert while the others (notebooks run side by side) wait and then read its folder.
The cache is ``$BERTBUSTERS_CONVERTED`` or
``~/.cache/bertbusters_nb/converted``.

Example:
    >>> folder = converted_folder(assets.smollm2_gguf())   # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained(folder)       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from ..atomic import atomic_write_json, read_json
from ..data import assets

log = logging.getLogger(__name__)

CONVERTED_ENV = "BERTBUSTERS_CONVERTED"
SOURCE_FILE = "SOURCE.json"
GGUF_PIN = "gguf==0.19.0"


class GGUFError(OSError):
    """A GGUF file could not be found, read or converted; the message says what to do."""


def converted_cache_dir() -> Path:
    """``$BERTBUSTERS_CONVERTED`` or ``~/.cache/bertbusters_nb/converted`` (beside the other caches)."""
    return Path(os.environ.get(CONVERTED_ENV, assets.assets_dir().parent / "converted"))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_gguf(path: str | os.PathLike) -> Path | None:
    """The GGUF file ``path`` names: the file itself, or the only ``*.gguf`` of a folder without config.json.

    None when ``path`` is not about GGUF at all (an ordinary model folder or a hub name); a folder
    with several GGUF files is an error naming them.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise GGUFError(f"{path} holds several GGUF files ({[f.name for f in found]}); pass the one to load.")
        return found[0] if found else None
    return None


def _check_readable(gguf: Path) -> None:
    with open(gguf, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise GGUFError(
            f"{gguf} is not a GGUF file (it does not start with the bytes 'GGUF'); pass a llama.cpp "
            f".gguf checkpoint or a model folder written by save_pretrained()."
        )
    try:
        import gguf as _reader  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise GGUFError(
            f"Reading {gguf.name} needs the 'gguf' package: run `make setup` (or `pip install {GGUF_PIN}`)."
        ) from None


def converted_folder(
    gguf: str | os.PathLike, cache_dir: str | os.PathLike | None = None, progress: bool = False
) -> Path:
    """The safetensors folder of ``gguf`` (causal-LM weights, config and tokenizer), converting it once.

    Example:
        >>> converted_folder("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
        PosixPath('/root/.cache/bertbusters_nb/converted/SmolLM2-135M-Instruct.Q4_1-5a1c...')
    """
    gguf = Path(gguf).expanduser().resolve()
    if not gguf.is_file():
        raise GGUFError(f"GGUF file {gguf} does not exist.")
    _check_readable(gguf)
    sha = sha256_file(gguf)
    root = Path(cache_dir or converted_cache_dir())
    final = root / f"{gguf.stem}-{sha[:16]}"
    if _complete(final, sha):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(conversion_lock(root)):
        if _complete(final, sha):  # another process converted it while this one waited
            return final
        return _convert_into(gguf, sha, root, final, progress)


def conversion_lock(root: Path) -> Path:
    """The lock file that serialises conversions into ``root``: beside it, so the cache holds only model folders."""
    return root.parent / f"{root.name}.lock"


def _convert_into(gguf: Path, sha: str, root: Path, final: Path, progress: bool) -> Path:
    if final.exists():
        log.warning("the converted folder %s is incomplete or stale; converting again", final)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp"))
    try:
        _convert(gguf, tmp, progress)
        atomic_write_json(
            tmp / SOURCE_FILE,
            {"gguf": str(gguf), "name": gguf.name, "bytes": gguf.stat().st_size, "sha256": sha, "converter": GGUF_PIN},
        )
        for f in [tmp, *tmp.iterdir()]:  # readable like any cache folder (mkdtemp/mkstemp make them private)
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        if final.exists():  # stale, or written meanwhile by another process
            if _complete(final, sha):
                return final
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        if _complete(final, sha):  # another process renamed its copy into place first
            return final
        raise GGUFError(f"Could not write the converted model to {final}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s -> %s", gguf.name, final)
    return final


def _complete(folder: Path, sha: str) -> bool:
    source = folder / SOURCE_FILE
    if not source.exists() or not any(folder.glob("*.safetensors")) or not (folder / "config.json").exists():
        return False
    try:
        return read_json(source).get("sha256") == sha
    except ValueError:
        return False


def _convert(gguf: Path, out: Path, progress: bool) -> None:
    """De-quantize with transformers' GGUF reader and save model (fp32 safetensors) and tokenizer."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    verbosity = transformers.logging.get_verbosity()
    if not progress:
        transformers.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GGUFError(
            f"transformers could not read {gguf.name} ({type(exc).__name__}: {first[:200]}); only "
            f"architectures transformers supports in GGUF (llama, mistral, qwen2, gpt2, ...) load."
        ) from None
    finally:
        if not progress:
            transformers.logging.enable_progress_bar()
        transformers.logging.set_verbosity(verbosity)
    # The weights are plain float tensors now (de-quantized on reading): save and load them as such.
    setattr(model, "hf_quantizer", None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
