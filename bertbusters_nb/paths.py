"""Where the project checkout is: the one rule for finding ``notebooks/`` and ``figures/`` (base layer).

The package may be installed anywhere (a wheel in site-packages, an editable install); its API needs nothing
outside itself (``bbmini`` ships inside as package data, see ``data.assets``). The notebook series, its schemas
and profiles, and the results it writes belong to a *checkout* of the project instead, and are found by this
rule, never by walking up from the installed code:

1. the folder named by ``$BERTBUSTERS_PROJECT``, when set (it must be a project folder);
2. else the current folder, or its nearest ancestor, that is a project folder.

A project folder holds ``notebooks/`` and a ``pyproject.toml`` whose ``[project] name`` is ``bertbusters_nb``.
So a shell at the checkout's top, a JupyterLab kernel started in ``notebooks/`` (``make lab``) and the runner all
find the same root, and a relative path such as a notebook's ``out_dir = "figures/offline/00_core_minilm"`` means
``<root>/figures/offline/00_core_minilm`` wherever the kernel started. When no project is found,
``ProjectNotFoundError`` names the fix (run from inside the checkout, or set ``$BERTBUSTERS_PROJECT``).

Example:
    >>> from bertbusters_nb import paths
    >>> paths.project_root()                       # doctest: +SKIP
    PosixPath('/work/main')
    >>> paths.in_project("figures/smoke/00_core_minilm")  # from notebooks/ too  # doctest: +SKIP
    PosixPath('/work/main/figures/smoke/00_core_minilm')
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

__all__ = [
    "PACKAGE_NAME",
    "PROJECT_ENV",
    "ProjectNotFoundError",
    "figures_dir",
    "in_project",
    "is_project",
    "notebooks_dir",
    "project_root",
]

PROJECT_ENV = "BERTBUSTERS_PROJECT"
PACKAGE_NAME = "bertbusters_nb"


class ProjectNotFoundError(FileNotFoundError):
    """No checkout of the project was found; the message says how to point at one."""


def is_project(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds ``notebooks/`` and a ``pyproject.toml`` naming this package (the marker)."""
    folder = Path(folder)
    marker = folder / "pyproject.toml"
    if not (folder / "notebooks").is_dir() or not marker.is_file():
        return False
    try:
        return tomllib.loads(marker.read_text()).get("project", {}).get("name") == PACKAGE_NAME
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The checkout by the rule above: ``$BERTBUSTERS_PROJECT``, else ``start`` (default: the current folder)
    or its nearest ancestor that is a project folder."""
    setting = os.environ.get(PROJECT_ENV)
    if setting:
        root = Path(setting).expanduser().resolve()
        if not is_project(root):
            raise ProjectNotFoundError(
                f"${PROJECT_ENV}={setting} is not a checkout of {PACKAGE_NAME} (it needs notebooks/ and a "
                f"pyproject.toml naming {PACKAGE_NAME}); point it at the checkout's top folder or unset it."
            )
        return root
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_project(folder):
            return folder
    raise ProjectNotFoundError(
        f"No checkout of {PACKAGE_NAME} at or above {here} (a folder with notebooks/ and a pyproject.toml naming "
        f"{PACKAGE_NAME}). Run from inside the checkout, or set ${PROJECT_ENV} to its top folder."
    )


def notebooks_dir() -> Path:
    """``<project>/notebooks``: the numbered notebooks with their ``.profiles.json`` and ``.schema.json``."""
    return project_root() / "notebooks"


def figures_dir() -> Path:
    """``<project>/figures``: every run's results, ``figures/<profile>/<notebook>/`` and ``SUMMARY.md``."""
    return project_root() / "figures"


def in_project(path: str | os.PathLike) -> Path:
    """An absolute path unchanged; a relative one taken from the project root (not from the current folder),
    so a kernel started in ``notebooks/`` writes where one started at the top does."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path
