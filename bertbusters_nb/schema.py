"""Declared ranges of notebook parameters, checked before any kernel starts.

Every numbered notebook has a ``notebooks/NN_name.schema.json`` beside its profiles: for each
name in its ``parameters`` cell, the kind of value and its range or choices. The runner checks
every value (defaults, profile, ``--set``) against it first, so ``n_texts=-5`` is refused with
``n_texts must be an integer >= 1, or 0 (all)`` instead of silently slicing ``texts[:-5]`` in
a kernel minutes later. A spec is a small JSON object:

- ``{"type": "int", "min": 1, "max": 100, "also": [0], "also_means": "all"}``
- ``{"type": "float", "min": 0, "exclusive_min": true, "max": 1}``
- ``{"type": "bool"}``
- ``{"type": "str", "choices": ["auto", "cpu"]}`` (or ``"choices_from": "bertbusters_nb.model.sites:ROLES"``,
  read from the package so the schema never drifts from it), ``{"type": "str", "pattern": "cuda(:\\\\d+)?"}``
  or ``{"type": "str", "nonempty": true}``
- ``{"type": "list", "items": {...}, "min_items": 1, "unique": true}``
- ``{"type": "dict", "value_keys": ["learning_rate"], "values": {"learning_rate": {...}}}``
- any spec with ``"nullable": true`` also takes ``null``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

KINDS = ("int", "float", "bool", "str", "list", "dict")


class ParameterError(ValueError):
    """A notebook parameter is unknown, of the wrong type or out of its declared range."""


def schema_path(notebook: Path) -> Path:
    """``notebooks/NN_name.schema.json`` for ``notebooks/NN_name.ipynb``."""
    return Path(notebook).with_suffix(".schema.json")


def load_schema(notebook: Path) -> dict[str, dict]:
    """The notebook's parameter specs; a missing or malformed schema is an error naming the file."""
    path = schema_path(notebook)
    if not path.exists():
        raise ParameterError(
            f"{Path(notebook).name} has no parameter schema: add {path.name} beside it "
            f"(one spec per parameter, see bertbusters_nb.schema)."
        )
    try:
        schema = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ParameterError(f"{path.name} is not valid JSON ({exc}).") from exc
    for name, spec in schema.items():
        _check_spec(path.name, name, spec)
    return schema


def _check_spec(file: str, name: str, spec: Any) -> None:
    if not isinstance(spec, Mapping) or spec.get("type") not in KINDS:
        raise ParameterError(f"{file}: the spec of {name!r} needs a 'type' among {KINDS}, got {spec!r}.")
    for key in ("items",):
        if key in spec:
            _check_spec(file, f"{name}[]", spec[key])
    for key, sub in spec.get("values", {}).items():
        _check_spec(file, f"{name}.{key}", sub)


def _choices(spec: Mapping) -> list | None:
    """Inline ``choices``, or the names of ``choices_from`` ("module:attribute")."""
    if "choices" in spec:
        return list(spec["choices"])
    if "choices_from" in spec:
        import importlib

        module, attribute = spec["choices_from"].split(":")
        return list(getattr(importlib.import_module(module), attribute))
    return None


def describe(spec: Mapping) -> str:
    """The range in words: ``an integer >= 1, or 0 (all)``."""
    kind = spec["type"]
    if kind in ("int", "float"):
        noun = "an integer" if kind == "int" else "a number"
        bounds = []
        if "min" in spec:
            bounds.append(f"{'>' if spec.get('exclusive_min') else '>='} {spec['min']:g}")
        if "max" in spec:
            bounds.append(f"{'<' if spec.get('exclusive_max') else '<='} {spec['max']:g}")
        text = f"{noun} {' and '.join(bounds)}" if bounds else noun
        if spec.get("also"):
            extra = " or ".join(str(v) for v in spec["also"])
            text += f", or {extra}" + (f" ({spec['also_means']})" if spec.get("also_means") else "")
    elif kind == "bool":
        text = "true or false"
    elif kind == "str":
        choices = _choices(spec)
        if choices is not None:
            text = "one of " + ", ".join(repr(c) for c in choices)
        elif "pattern" in spec:
            text = f"a string matching {spec['pattern']}"
        else:
            text = "a non-empty string" if spec.get("nonempty") else "a string"
    elif kind == "list":
        parts = [f"a list of {describe(spec['items'])}" if "items" in spec else "a list"]
        if "min_items" in spec:
            parts.append(f"with at least {spec['min_items']} item{'s' if spec['min_items'] != 1 else ''}")
        if "max_items" in spec:
            parts.append(f"at most {spec['max_items']}")
        if spec.get("unique"):
            parts.append("no repeats")
        text = ", ".join(parts)
    else:
        keys = spec.get("value_keys")
        text = "a mapping" + (f" of names to mappings with keys among {keys}" if keys else "")
    if spec.get("nullable"):
        text += ", or null"
    return text


def violation(value: Any, spec: Mapping) -> str | None:
    """Why ``value`` is outside ``spec`` (None when it is inside)."""
    if value is None:
        return None if spec.get("nullable") else "null is not allowed"
    kind = spec["type"]
    if kind in ("int", "float"):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind == "int" and isinstance(value, float))
        ):
            return f"got {type(value).__name__} {value!r}"
        if value in spec.get("also", ()):
            return None
        low, high = spec.get("min"), spec.get("max")
        if low is not None and (value < low or (spec.get("exclusive_min") and value == low)):
            return f"got {value!r}"
        if high is not None and (value > high or (spec.get("exclusive_max") and value == high)):
            return f"got {value!r}"
        if value != value:  # NaN
            return "got NaN"
        return None
    if kind == "bool":
        return None if isinstance(value, bool) else f"got {type(value).__name__} {value!r}"
    if kind == "str":
        if not isinstance(value, str):
            return f"got {type(value).__name__} {value!r}"
        choices = _choices(spec)
        if choices is not None and value not in choices:
            return f"got {value!r}"
        if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
            return f"got {value!r}"
        if spec.get("nonempty") and not value.strip():
            return "got an empty string"
        return None
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            return f"got {type(value).__name__} {value!r}"
        if len(value) < spec.get("min_items", 0):
            return f"got {len(value)} item(s)"
        if "max_items" in spec and len(value) > spec["max_items"]:
            return f"got {len(value)} items"
        if spec.get("unique") and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
            return f"got repeats in {value!r}"
        for item in value if "items" in spec else ():
            why = violation(item, spec["items"])
            if why:
                return f"item {item!r}: {why}"
        return None
    if not isinstance(value, Mapping):
        return f"got {type(value).__name__} {value!r}"
    for key, sub in value.items():
        if not isinstance(sub, Mapping):
            return f"{key!r} maps to {sub!r}, not a mapping"
        keys = spec.get("value_keys")
        unknown = [k for k in sub if keys is not None and k not in keys]
        if unknown:
            return f"{key!r} has unknown key(s) {unknown}"
        for k, v in sub.items():
            why = violation(v, spec.get("values", {}).get(k, {"type": "dict"})) if k in spec.get("values", {}) else None
            if why:
                return f"{key}.{k}: {why}"
    return None


def check_value(notebook_name: str, name: str, value: Any, spec: Mapping) -> None:
    """Raise ParameterError naming the parameter and its range when ``value`` is outside ``spec``."""
    why = violation(value, spec)
    if why:
        raise ParameterError(f"{notebook_name}: {name} must be {describe(spec)}; {why}.")


def out_of_range_example(spec: Mapping) -> Any:
    """A value of the right type just outside ``spec`` (for table-driven tests of the refusals)."""
    kind = spec["type"]
    if kind in ("int", "float"):
        if "min" in spec:
            value = spec["min"] - (1 if kind == "int" else 0.5)
            while value in spec.get("also", ()):
                value -= 1
            return int(value) if kind == "int" else float(value)
        if "max" in spec:
            return int(spec["max"] + 1) if kind == "int" else float(spec["max"]) + 0.5
        return float("nan") if kind == "float" else None
    if kind == "bool":
        return None if not spec.get("nullable") else "yes"
    if kind == "str":
        choices = _choices(spec)
        if choices is not None:
            return "not-" + "-".join(map(str, choices))[:20]
        if "pattern" in spec:
            return " "
        return ""
    if kind == "list":
        if spec.get("min_items", 0) > 0:
            return []
        if "items" in spec:
            bad = out_of_range_example(spec["items"])
            return [bad]
        return None
    keys = spec.get("value_keys") or []
    return {"x": {"not_a_key_" + "_".join(keys)[:10]: 1}}
