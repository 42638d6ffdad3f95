"""The package is a package: its wheel, installed into a fresh environment and used from a folder outside the
checkout, loads all three offline aliases (bbmini from its own package data) and runs the detect command, offline.

The fresh venv sees the checkout venv's third-party packages through a one-line ``.pth`` naming that venv's
site-packages: a path listed in a ``.pth`` is only appended to ``sys.path`` (its own ``.pth`` files are not run), so
the checkout's editable install of bertbusters_nb (an ``__editable__`` ``.pth`` finder) stays invisible and every
``import bertbusters_nb`` there must come from the installed wheel, which the test checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import hashlib, json, sys
from pathlib import Path

import torch

import bertbusters_nb as bb
from bertbusters_nb.model.loading import resolve

out = {"file": bb.__file__, "models": {}}
for alias, head in (("minilm", "base"), ("bbmini", "mlm"), ("smollm2", "causal-lm")):
    model, tokenizer = bb.load_model(alias, head=head, device="cpu")
    batch = tokenizer(["the film was good"], return_tensors="pt")
    with torch.no_grad():
        output = model(**batch)
    width = (output.logits if head != "base" else output.last_hidden_state).shape[-1]
    folder = Path(resolve(alias))
    out["models"][alias] = {
        "folder": str(folder),
        "class": type(model).__name__,
        "width": int(width),
        "expected_width": int(model.config.vocab_size if head != "base" else model.config.hidden_size),
        "sha256": hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest(),
    }
print(json.dumps(out))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BERTBUSTERS_PROJECT", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Build the wheel from a copy of the package's sources (no stale build/ of the checkout can leak in), install
    it into a fresh venv that sees the checkout venv's dependencies but not its editable install."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "bertbusters_nb", source / "bertbusters_nb", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp / "dist"
    env = _clean_env()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        check=True,
        cwd=tmp,
        env=env,
    )
    (wheel,) = dist.glob("bertbusters_nb-*.whl")
    target = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "checkout_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=env)
    elsewhere = tmp / "elsewhere"  # outside the checkout: no notebooks/, no pyproject.toml
    elsewhere.mkdir()
    return {"python": python, "site": site, "wheel": wheel, "cwd": elsewhere}


def test_the_wheel_carries_bbmini_and_no_checkout_paths(installed):
    import zipfile

    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "norm_trajectory.npz", "training_config.json"):
        assert f"bertbusters_nb/data/bbmini/{name}" in names, name
    assert not [n for n in names if n.startswith(("models/", "notebooks/", "tests/", "figures/"))]


@pytest.mark.slow
def test_installed_wheel_loads_every_alias_from_another_folder(installed):
    done = subprocess.run(
        [str(installed["python"]), "-c", CHILD],
        cwd=installed["cwd"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).is_relative_to(installed["site"]), report["file"]  # the wheel, not the checkout
    models = report["models"]
    assert Path(models["bbmini"]["folder"]).is_relative_to(installed["site"] / "bertbusters_nb" / "data")
    checkout_bbmini = REPO / "bertbusters_nb" / "data" / "bbmini" / "model.safetensors"
    assert models["bbmini"]["sha256"] == hashlib.sha256(checkout_bbmini.read_bytes()).hexdigest()
    assert models["bbmini"]["class"].endswith("ForMaskedLM") and models["smollm2"]["class"].endswith("ForCausalLM")
    for alias, seen in models.items():
        assert seen["width"] == seen["expected_width"], alias


@pytest.mark.slow
def test_installed_wheel_runs_detect_from_another_folder_as_the_checkout_does(installed):
    command = ["-m", "bertbusters_nb", "detect", "bbmini", "--json"]
    done = subprocess.run(
        [str(installed["python"]), *command],
        cwd=installed["cwd"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ours = subprocess.run(
        [sys.executable, *command], cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=1200
    )
    assert ours.returncode == 0, ours.stderr[-3000:]
    installed_dims = json.loads(done.stdout)["dims"]
    assert installed_dims and installed_dims == json.loads(ours.stdout)["dims"]
