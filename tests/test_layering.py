"""The package's layers, enforced over the imports of every module (top-level and inside functions;
for the layers, imports under ``if TYPE_CHECKING:`` never run and do not count).

Lowest first; a module may import its own layer and lower ones only, never a higher one. There are no
compatibility shims: every module holds code of its own. Command lines (``__main__``, ``*/cli.py``) sit on top with
the runner: they wire the layers together. The import graph between modules has no circles, ``TYPE_CHECKING``
imports included (a type a lower module needs lives in that module, or is a Protocol there). No module uses
another module's private names (leading underscore): not by import, not as an attribute of an imported module,
not as an attribute of another module's object, not by overriding another module's class's private members.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bertbusters_nb"
LAYERS = {
    "base": ["checks", "atomic", "device", "paths", "shared_results"],
    "data": ["data"],
    "model": ["model"],
    "evaluation": ["evaluation"],
    "training": ["pretraining", "finetuning"],
    "analysis": ["analysis"],
    "studies": ["studies"],
    "reporting": ["reporting"],
    "widgets": ["widgets"],
    "app": ["schema", "run_folders", "run_summary", "runner", "plan", "__main__", "__init__"],
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


def imported(module: str, path: Path, typing_too: bool = False) -> set[str]:
    """Package modules ``module`` imports (resolved: ``from .x import y`` names module x.y when it exists);
    imports under ``if TYPE_CHECKING:`` only with ``typing_too``."""
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    tree = ast.parse(path.read_text())
    typing_only = (
        set()
        if typing_too
        else {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for n in ast.walk(block)
        }
    )
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
GRAPH_WITH_TYPING = {m: imported(m, p, typing_too=True) for m, p in MODULES.items()}


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
    """``TYPE_CHECKING`` imports count: a circle of type hints is still two modules that need each other."""
    edges = {m: {t for t in ts if t in MODULES and t != "bertbusters_nb"} for m, ts in GRAPH_WITH_TYPING.items()}
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


# ----------------------------------------------------------------------------- private names
# Private attributes of objects from outside the package, each with why there is no public way.
FOREIGN_PRIVATE = {
    ("bertbusters_nb.analysis.attention_sinks", "_attn_implementation"): "transformers: the config's attention "
    "backend, read to restore it after switching to eager (set_attn_implementation has no getter)",
    ("bertbusters_nb.device", "_is_mkldnn_bf16_supported"): "torch: the only probe for bf16 support on a CPU",
    ("bertbusters_nb.pretraining.cli", "_actions"): "argparse: the parser's declared options (no public list)",
    ("bertbusters_nb.pretraining.tokenizer", "_tokenizer"): "tokenizers: the Rust tokenizer inside a "
    "BertWordPieceTokenizer, which PreTrainedTokenizerFast(tokenizer_object=...) needs",
}
# Private-looking names that are public protocols of other libraries.
PROTOCOL_NAMES = {"_repr_mimebundle_", "_repr_html_", "_ipython_display_", "_asdict", "_replace", "_fields"}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name not in PROTOCOL_NAMES


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` in ``module`` imports from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    root = base[: len(base) - node.level + 1]
    return ".".join(root + ([node.module] if node.module else []))


def private_defined(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, assignments, ``x._name = ...`` and class fields."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)  # dataclasses.replace(x, _field=...) names its own class's field
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
    return {n for n in names if is_private(n)}


TREES = {m: ast.parse(p.read_text()) for m, p in MODULES.items()}
FOREIGN_USED: set[tuple[str, str]] = set()
DEFINED = {m: private_defined(tree) for m, tree in TREES.items()}


def module_aliases(module: str, tree: ast.AST) -> dict[str, str]:
    """Local names bound to package modules (``from . import x``, ``import bertbusters_nb.x as y``)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            stem = resolve(module, node)
            for a in node.names:
                if f"{stem}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{stem}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES and a.asname:
                    aliases[a.asname] = a.name
    return aliases


def class_origins(module: str, tree: ast.AST) -> dict[str, str]:
    """Names imported from other package modules -> the module they come from."""
    origins = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            stem = resolve(module, node)
            if stem in MODULES and stem != module:
                for a in node.names:
                    origins[a.asname or a.name] = stem
    return origins


def private_uses(module: str) -> list[str]:
    """Every use in ``module`` of a private name that another module defines (see the module docstring)."""
    tree, own = TREES[module], DEFINED[module]
    aliases, origins = module_aliases(module, tree), class_origins(module, tree)
    bad = []
    for node in ast.walk(tree):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom):
            stem = resolve(module, node)
            if stem.startswith("bertbusters_nb") and stem != module:
                bad += [f"{where} imports {a.name} from {stem}" for a in node.names if is_private(a.name)]
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner in aliases:
                bad.append(f"{where} uses {owner}.{node.attr} of module {aliases[owner]}")
            elif owner not in ("self", "cls") and node.attr not in own:
                if (module, node.attr) not in FOREIGN_PRIVATE:
                    bad.append(f"{where} uses {ast.unparse(node)}, a private name this module does not define")
                else:
                    FOREIGN_USED.add((module, node.attr))
        elif isinstance(node, ast.ClassDef):
            bases = [b.id for b in node.bases if isinstance(b, ast.Name) and b.id in origins]
            for base in bases:
                theirs = DEFINED[origins[base]]
                for inner in ast.walk(node):
                    name = (
                        inner.name
                        if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef))
                        else inner.attr
                        if isinstance(inner, ast.Attribute)
                        else None
                    )
                    if name and is_private(name) and name in theirs:
                        bad.append(f"{where} class {node.name} uses or overrides {base}.{name} ({origins[base]})")
    return bad


def test_no_module_uses_another_modules_private_names():
    """Another module's private names are not an API: a module that needs one gets a public name for it."""
    bad = [use for m in MODULES for use in private_uses(m)]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)
    stale = sorted(set(FOREIGN_PRIVATE) - FOREIGN_USED)
    assert not stale, f"FOREIGN_PRIVATE lists uses that no longer exist (remove them): {stale}"


def test_the_private_name_check_catches_each_kind_of_use():
    """The checker itself, on the patterns it must catch."""
    source = {
        "bertbusters_nb.evaluation.engine": (
            "class AblationEngine:\n    def _logits(self): ...\n    def _score(self): ...\n"
        ),
        "bertbusters_nb.evaluation.screen": (
            "from .engine import AblationEngine, _helper\n"
            "from . import engine as eng\n"
            "def f(engine):\n    return engine._logits(), eng._helper\n"
            "class Sub(AblationEngine):\n    def _score(self): ...\n"
        ),
    }
    saved = {m: (TREES.get(m), DEFINED.get(m)) for m in source}
    try:
        for m, text in source.items():
            TREES[m] = ast.parse(text)
            DEFINED[m] = private_defined(TREES[m])
        found = "\n".join(private_uses("bertbusters_nb.evaluation.screen"))
    finally:
        for m, (tree, defined) in saved.items():
            TREES[m], DEFINED[m] = tree, defined
    assert "imports _helper" in found
    assert "eng._helper of module" in found
    assert "uses engine._logits, a private name" in found
    assert "class Sub uses or overrides AblationEngine._score" in found
