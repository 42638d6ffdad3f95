"""The batch runner: every notebook's smoke profile (network blocked), failures, re-runs, parameters."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from bertbusters_nb import runner
from bertbusters_nb.runner import ParameterError, check_parameters, numbered_notebooks, run_series

REPO = Path(__file__).resolve().parent.parent
GUARD = Path(__file__).resolve().parent / "network_guard"


def test_smoke_profile_of_every_notebook_runs_offline_with_sockets_blocked(tmp_path, monkeypatch):
    """CI's run of the whole series: each notebook in the smoke profile, no network connection allowed."""
    log = tmp_path / "network.log"
    monkeypatch.setenv("PYTHONPATH", f"{GUARD}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("BB_NETWORK_LOG", str(log))
    results = run_series("smoke", figures_dir=tmp_path / "figures")
    assert [r.notebook for r in results] == [p.stem for p in numbered_notebooks()]
    failed = {r.notebook: f"cell {r.cell}: {r.error}" for r in results if r.status != "ok"}
    assert not failed, failed
    assert Path(str(log) + ".loaded").exists(), "the network guard was not loaded in the kernels"
    assert not log.exists() or log.read_text() == "", log.read_text()
    summary = (tmp_path / "figures" / "smoke" / "SUMMARY.md").read_text()
    for r in results:
        assert r.notebook in summary
        assert (tmp_path / "figures" / "smoke" / r.notebook / f"{r.notebook}.ipynb").exists()
        assert list((tmp_path / "figures" / "smoke" / r.notebook).glob("*.png")), f"{r.notebook} saved no figure"
        assert r.findings, f"{r.notebook} recorded no finding"


def _notebook(path: Path, code: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('out_dir = "x"\nprofile = "smoke"\nsize = 3\nname = "a"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in code]
    nbformat.write(nb, path)
    return path


@pytest.fixture()
def fake_series(tmp_path):
    books = tmp_path / "notebooks"
    books.mkdir()
    ok = "from pathlib import Path\nPath(out_dir).mkdir(parents=True, exist_ok=True)\n" \
         "Path(out_dir, 'table.csv').write_text('a\\n1\\n')\nPath(out_dir, 'runs.txt').open('a').write('x')"
    _notebook(books / "01_first.ipynb", [ok])
    _notebook(books / "02_broken.ipynb", ["x = 1", "raise RuntimeError('planted failure')"])
    _notebook(books / "03_third.ipynb", [ok])
    return tmp_path


def test_failing_notebook_is_named_and_others_are_kept(fake_series):
    figures = fake_series / "figures"
    results = run_series("smoke", figures_dir=figures, notebooks_dir=fake_series / "notebooks", kernel_name="python3")
    status = {r.notebook: r for r in results}
    assert status["01_first"].status == "ok" and status["03_third"].status == "ok"
    broken = status["02_broken"]
    assert broken.status == "failed" and "planted failure" in broken.error and "raise RuntimeError" in broken.error
    assert broken.cell == 4  # In [4]: parameters, injected parameters, x = 1, then the failure
    assert (figures / "smoke" / "01_first" / "table.csv").exists()
    assert (figures / "smoke" / "03_third" / "table.csv").exists()
    summary = (figures / "smoke" / "SUMMARY.md").read_text()
    assert "02_broken | failed" in summary and "planted failure" in summary


def test_rerun_skips_finished_notebooks_unless_redo(fake_series):
    kwargs = dict(figures_dir=fake_series / "figures", notebooks_dir=fake_series / "notebooks",
                  kernel_name="python3", only=["01"])
    assert run_series("smoke", **kwargs)[0].status == "ok"
    assert run_series("smoke", **kwargs)[0].status == "skipped"
    assert run_series("smoke", redo=True, **kwargs)[0].status == "ok"
    assert (fake_series / "figures" / "smoke" / "01_first" / "runs.txt").read_text() == "xx"
    # a corrupt marker is not trusted: the notebook runs again
    (fake_series / "figures" / "smoke" / "01_first" / ".done.json").write_text("{trunc")
    assert run_series("smoke", **kwargs)[0].status == "ok"


@pytest.mark.parametrize("values, match", [
    ({"sise": 4}, "no parameter 'sise'. Did you mean 'size'"),
    ({"size": "four"}, "'size' must be int"),
    ({"name": 3}, "'name' must be str"),
])
def test_bad_parameters_are_rejected_before_running(fake_series, values, match):
    with pytest.raises(ParameterError, match=match):
        check_parameters(fake_series / "notebooks" / "01_first.ipynb", values)


def test_unknown_profile_is_an_error():
    with pytest.raises(ValueError, match="Unknown profile"):
        runner.profile_parameters(numbered_notebooks()[0], "fast")


def test_profiles_files_only_name_declared_parameters():
    for book in numbered_notebooks():
        for profile in runner.PROFILES:
            check_parameters(book, runner.profile_parameters(book, profile))
