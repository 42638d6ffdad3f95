"""The package's layers, enforced over the imports of every module (top-level and inside functions;
imports under ``if TYPE_CHECKING:`` never run and do not count).

Lowest first; a module may import its own layer and lower ones only, never a higher one, and never
through an old-path shim (``_moved.forward``). Command lines (``__main__``, ``*/cli.py``) sit on top with
the runner: they wire the layers together. The import graph between modules has no circles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bertbusters_nb"
LAYERS = {
    "base": ["_moved", "checks", "atomic", "device"],
    "data": ["data"],
    "model": ["model"],
    "evaluation": ["evaluation"],
    "training": ["pretraining", "finetuning"],
    "analysis": ["analysis"],
    "studies": ["studies"],
    "reporting": ["reporting"],
    "widgets": ["widgets"],
    "app": ["schema", "runner", "__main__", "__init__"],
}
RANK = {unit: i for i, units in enumerate(LAYERS.values()) for unit in units}
APP = len(LAYERS) - 1


def is_shim(path: Path) -> bool:
    """A top-level file left at an old path for one release (it forwards through ``_moved``)."""
    return path.parent == PACKAGE and path.name != "_moved.py" and "from ._moved import" in path.read_text()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if not is_shim(p)}
SHIMS = {module_name(p) for p in PACKAGE.rglob("*.py") if is_shim(p)}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def rank_of(module: str) -> int:
    leaf = module.split(".")[-1]
    if leaf in ("__main__", "cli") and module.count(".") >= 2:
        return APP  # a subpackage's command line
    return RANK[unit_of(module)]


def imported(module: str, path: Path) -> set[str]:
    """Package modules ``module`` imports (resolved: ``from .x import y`` names module x.y when it exists)."""
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # imports for type hints only never run
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = base[: len(base) - node.level + 1]
                stem = ".".join(root + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [
                f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES or f"{stem}.{a.name}" in SHIMS else stem
                for a in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t == "bertbusters_nb" or t.startswith("bertbusters_nb.")}
    return found - {module}


GRAPH = {m: imported(m, p) for m, p in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    unknown = sorted({unit_of(m) for m in MODULES} - set(RANK))
    assert not unknown, f"modules outside every layer: {unknown}; add them to LAYERS in tests/test_layering.py"


def reexports_own_command_line(module: str, target: str) -> bool:
    """A subpackage re-exports its own command line's ``main`` (the single modules it replaced had one)."""
    return MODULES[module].name == "__init__.py" and target == module + ".cli"


def test_no_module_imports_a_higher_layer():
    bad = [
        f"{m} ({list(LAYERS)[rank_of(m)]}) imports {t} ({list(LAYERS)[rank_of(t)]})"
        for m, targets in GRAPH.items()
        for t in sorted(targets)
        if t in MODULES and t != "bertbusters_nb" and rank_of(t) > rank_of(m) and not reexports_own_command_line(m, t)
    ]
    assert not bad, "\n".join(bad)


def test_pretraining_and_finetuning_do_not_import_each_other():
    bad = [
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        for t in targets
        if {unit_of(m), unit_of(t)} == {"pretraining", "finetuning"} and rank_of(m) != APP
    ]
    assert not bad, "\n".join(bad)


def test_package_code_never_imports_through_an_old_path_shim():
    bad = [f"{m} imports {t}" for m, targets in GRAPH.items() for t in sorted(targets) if t in SHIMS]
    assert not bad, "\n".join(bad)


def test_the_import_graph_has_no_circles():
    edges = {m: {t for t in ts if t in MODULES and t != "bertbusters_nb"} for m, ts in GRAPH.items()}
    # a package's __init__ re-exporting its own modules is not a circle through them
    edges = {
        m: {t for t in ts if not (m.startswith(t + ".") and MODULES[t].name == "__init__.py")}
        for m, ts in edges.items()
    }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("shim", sorted(SHIMS))
def test_every_shim_forwards_to_a_module_that_exists(shim):
    text = (PACKAGE.parent / (shim.replace(".", "/") + ".py")).read_text()
    targets = [part.split('"')[0] for part in text.split('forward(__name__, "')[1:]]
    assert targets, f"{shim} forwards nowhere"
    assert all(t in MODULES for t in targets), f"{shim} forwards to {targets}, not all modules of the package"
