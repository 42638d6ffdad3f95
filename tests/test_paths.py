"""The one rule for finding the checkout (paths.py): $BERTBUSTERS_PROJECT, else the current folder or its nearest
ancestor holding notebooks/ + a pyproject.toml naming bertbusters_nb; relative result paths go under its figures/."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from bertbusters_nb import paths
from bertbusters_nb.reporting import RunRecorder
from bertbusters_nb.runner import declared_parameters, numbered_notebooks

REPO = Path(__file__).resolve().parent.parent


def _project(folder: Path, name: str = "bertbusters_nb") -> Path:
    (folder / "notebooks").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n')
    return folder


@pytest.fixture
def no_setting(monkeypatch):
    monkeypatch.delenv(paths.PROJECT_ENV, raising=False)


def test_the_checkout_is_found_from_its_top_and_from_notebooks(no_setting, monkeypatch):
    monkeypatch.chdir(REPO)
    assert paths.project_root() == REPO
    monkeypatch.chdir(REPO / "notebooks")
    assert paths.project_root() == REPO
    assert paths.figures_dir() == REPO / "figures" and paths.notebooks_dir() == REPO / "notebooks"
    assert numbered_notebooks() == numbered_notebooks(REPO / "notebooks")


def test_outside_a_checkout_the_error_names_the_fix(no_setting, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(paths.ProjectNotFoundError, match=paths.PROJECT_ENV):
        paths.project_root()
    _project(tmp_path / "other", name="someone_else")  # a pyproject naming another package is no marker
    monkeypatch.chdir(tmp_path / "other" / "notebooks")
    with pytest.raises(paths.ProjectNotFoundError):
        paths.project_root()


def test_the_setting_wins_and_is_checked(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.PROJECT_ENV, str(REPO))
    assert paths.project_root() == REPO
    monkeypatch.setenv(paths.PROJECT_ENV, str(tmp_path))
    with pytest.raises(paths.ProjectNotFoundError, match="not a checkout"):
        paths.project_root()


def test_a_kernel_started_in_notebooks_writes_to_the_top_level_figures(no_setting, monkeypatch, tmp_path):
    root = _project(tmp_path / "checkout")
    monkeypatch.chdir(root / "notebooks")  # where `make lab` starts its kernels
    rec = RunRecorder("figures/smoke/00_tiny", config={"n": 1})
    rec.table(pd.DataFrame({"a": [1]}), "t")
    assert (root / "figures" / "smoke" / "00_tiny" / "t.csv").is_file()
    assert not (root / "notebooks" / "figures").exists()
    assert paths.in_project(tmp_path / "abs") == tmp_path / "abs"  # an absolute path stays


def test_papermill_with_cwd_notebooks_writes_to_the_top_level_figures(no_setting, tmp_path):
    import papermill

    root = _project(tmp_path / "checkout")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('out_dir = "figures/smoke/00_tiny"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import pandas as pd\nimport bertbusters_nb as bb\n"
            "bb.RunRecorder(out_dir).table(pd.DataFrame({'a': [1]}), 't')"
        ),
    ]
    source = root / "notebooks" / "00_tiny.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(
        str(source), str(tmp_path / "executed.ipynb"), kernel_name="python3", cwd=str(root / "notebooks")
    )
    assert (root / "figures" / "smoke" / "00_tiny" / "t.csv").is_file()
    assert not (root / "notebooks" / "figures").exists()


def test_every_notebook_names_its_results_relative_to_the_project():
    for book in numbered_notebooks(REPO / "notebooks"):
        out_dir = declared_parameters(book)["out_dir"]
        assert not Path(out_dir).is_absolute() and Path(out_dir).parts[0] == "figures", (book.name, out_dir)
