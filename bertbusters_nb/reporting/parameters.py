"""A notebook's parameters, captured once from its namespace for ``RunRecorder(config=...)``.

nanoGPT saves the config its globals hold instead of retyping it; here the names come from the
notebook's parameter schema (``notebooks/NN_name.schema.json``, one entry per name of the
``parameters`` cell, which the runner keeps complete), and the values from the namespace, so they
are the parameters cell's literals or the values papermill injected after it.

Example:
    >>> rec = bb.RunRecorder(out_dir, config=bb.notebook_parameters(globals()))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["notebook_parameters", "parameter_names"]


def parameter_names(notebooks_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Notebook stem -> its parameter names, in schema order, for every ``NN_name.schema.json`` in ``notebooks_dir``."""
    from ..paths import notebooks_dir as project_notebooks

    folder = Path(notebooks_dir) if notebooks_dir is not None else project_notebooks()
    names = {}
    for path in sorted(folder.glob("[0-9][0-9]_*.schema.json")):
        try:
            names[path.name[: -len(".schema.json")]] = list(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); fix the schema file.") from None
    if not names:
        raise FileNotFoundError(f"No NN_name.schema.json in {folder}; pass notebooks_dir= the folder that holds them.")
    return names


def _which(namespace: Mapping[str, Any], schemas: dict[str, list[str]], notebook: str | None) -> str:
    if notebook is not None:
        chosen = [s for s in schemas if s == notebook or s.split("_")[0] == notebook]
        if len(chosen) != 1:
            raise ValueError(
                f"notebook={notebook!r} names {len(chosen)} of the schemas {sorted(schemas)}; "
                "pass a stem or its number (e.g. '03')."
            )
        return chosen[0]
    complete = [s for s, names in schemas.items() if all(n in namespace for n in names)]
    out_dir = namespace.get("out_dir")
    if out_dir is not None and Path(str(out_dir)).name in complete:
        return Path(str(out_dir)).name
    if complete:
        most = max(len(schemas[s]) for s in complete)
        largest = [s for s in complete if len(schemas[s]) == most]
        if len(largest) == 1:
            return largest[0]
    closest = max(schemas, key=lambda s: sum(n in namespace for n in schemas[s]))
    missing = [n for n in schemas[closest] if n not in namespace]
    raise ValueError(
        "Cannot tell which notebook these parameters belong to"
        + (f" (closest: {closest}, which also needs {missing})" if missing else "")
        + "; call notebook_parameters(globals()) after the parameters cell, or pass notebook='NN'."
    )


def notebook_parameters(
    namespace: Mapping[str, Any], notebook: str | None = None, notebooks_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The values of the notebook's parameters in ``namespace`` (a notebook's ``globals()``), by schema order.

    The notebook is ``notebook`` (stem or number) when given, else the one whose ``out_dir`` folder name
    is its stem (the runner's and the parameters cells' convention), else the one with the most names of
    which all are in ``namespace``. Values are deep copies: a later change in the notebook leaves the
    captured config as it was.

    Example:
        >>> notebook_parameters({"profile": "smoke", "out_dir": "figures/smoke/05_explorer", ...})  # doctest: +SKIP
        {'profile': 'smoke', 'out_dir': 'figures/smoke/05_explorer', ...}
    """
    schemas = parameter_names(notebooks_dir)
    stem = _which(namespace, schemas, notebook)
    missing = [n for n in schemas[stem] if n not in namespace]
    if missing:
        raise ValueError(f"{stem}'s parameters {missing} are not defined; run the parameters cell first.")
    return {name: copy.deepcopy(namespace[name]) for name in schemas[stem]}
