"""Notebooks: committed without outputs, in step with their py:percent source, no logic in cells."""

from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file
from jupytext.paired_paths import paired_paths

REPO = Path(__file__).resolve().parent.parent
BOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted((REPO / "notebooks" / "src").glob("*.py"))


def test_there_are_notebooks():
    assert BOOKS


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(book):
    nb = nbformat.read(book, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{book.name}: strip outputs"


def test_every_source_has_its_notebook():
    assert [p.stem for p in SOURCES] == [p.stem for p in BOOKS]


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.stem)
def test_paired_by_jupytext_with_its_source(book):
    """notebooks/jupytext.toml pairs NN_name.ipynb with src/NN_name.py (py:percent), both ways."""
    config = load_jupytext_configuration_file(find_jupytext_configuration_file(str(book.parent)))
    source = book.parent / "src" / f"{book.stem}.py"
    for path, fmt in ((book, "ipynb"), (source, "py:percent")):
        pairs = paired_paths(str(path), fmt, config.default_formats(str(path)))
        assert [Path(p) for p, _ in pairs] == [book, source]
        assert [f.get("format_name") for _, f in pairs] == [None, "percent"]


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.stem)
def test_in_step_with_its_source(book):
    source = REPO / "notebooks" / "src" / f"{book.stem}.py"
    built = jupytext.read(source, fmt="py:percent")
    committed = nbformat.read(book, as_version=4)
    assert [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in committed.cells] == [
        (c.cell_type, c.source, c.metadata.get("tags", [])) for c in built.cells
    ], (
        f"rebuild with: make notebooks (jupytext --update --to ipynb -o {book.relative_to(REPO)} {source.relative_to(REPO)})"
    )
    assert committed.metadata.kernelspec.name == "bertbusters_nb", "the kernelspec the runner and JupyterLab use"


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
