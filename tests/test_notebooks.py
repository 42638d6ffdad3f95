"""Notebooks: committed without outputs, in step with their py:percent source, no logic in cells."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
from percent_to_ipynb import convert  # noqa: E402

BOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert BOOKS


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(book):
    nb = nbformat.read(book, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{book.name}: strip outputs"


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.stem)
def test_in_step_with_its_source(book):
    source = REPO / "notebooks" / "src" / f"{book.stem}.py"
    built = convert(source.read_text())
    committed = nbformat.read(book, as_version=4)
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in built.cells], \
        f"rebuild with: python tools/percent_to_ipynb.py {source.relative_to(REPO)} {book.relative_to(REPO)}"


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.stem)
def test_no_logic_in_cells_and_a_literal_parameters_cell(book):
    nb = nbformat.read(book, as_version=4)
    assert nb.cells[0].cell_type == "markdown", "the first cell states the claim"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for node in ast.parse(params[0].source).body:
        assert isinstance(node, ast.Assign)
        ast.literal_eval(node.value)
    for cell in nb.cells:
        if cell.cell_type == "code":
            tree = ast.parse(cell.source)
            defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
            assert not defs, f"{book.name}: move function/class definitions into the package"
