"""The package's layers, enforced over the imports of every module (top-level and inside functions;
imports under ``if TYPE_CHECKING:`` never run and do not count).

Lowest first; a module may import its own layer and lower ones only, never a higher one. There are no
compatibility shims: every module holds code of its own. Command lines (``__main__``, ``*/cli.py``) sit on top with
the runner: they wire the layers together. The import graph between modules has no circles.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bertbusters_nb"
LAYERS = {
    "base": ["checks", "atomic", "device", "paths"],
    "data": ["data"],
    "model": ["model"],
    "evaluation": ["evaluation"],
    "training": ["pretraining", "finetuning"],
    "analysis": ["analysis"],
    "studies": ["studies"],
    "reporting": ["reporting"],
    "widgets": ["widgets"],
    "app": ["schema", "run_folders", "run_summary", "runner", "__main__", "__init__"],
}
RANK = {unit: i for i, units in enumerate(LAYERS.values()) for unit in units}
APP = len(LAYERS) - 1


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


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
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem for a in node.names]
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


def forwards_elsewhere(path: Path) -> bool:
    """A module-level ``__getattr__`` naming another module of the package: a compatibility shim.

    A package ``__init__`` that loads its own submodules lazily (``f"{__name__}.texts"``) names none.
    """
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            strings = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            if any("bertbusters_nb" in s or "moved" in s for s in strings):
                return True
    return False


def test_no_module_forwards_names_to_another():
    """No compatibility layer: no module serves another module's names under an old path."""
    bad = [m for m, path in MODULES.items() if forwards_elsewhere(path)]
    assert not bad, f"modules that forward names: {bad}"
    assert not (PACKAGE / "_moved.py").exists()


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
