"""The batch runner: every notebook's smoke profile (network blocked), failures, re-runs, parameters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from bertbusters_nb import runner
from bertbusters_nb.runner import ParameterError, check_parameters, numbered_notebooks, run_series

REPO = Path(__file__).resolve().parent.parent
GUARD = Path(__file__).resolve().parent / "network_guard"


@pytest.mark.slow
@pytest.mark.parametrize("book", [p.stem for p in numbered_notebooks()])
def test_smoke_profile_of_every_notebook_runs_offline_with_sockets_blocked(book, tmp_path, monkeypatch):
    """CI's run of the whole series: each notebook in the smoke profile through the runner, no network connection
    allowed. One test per notebook, so that pytest-xdist spreads the series over its workers instead of leaving
    one worker alone with all of it at the end."""
    log = tmp_path / "network.log"
    monkeypatch.setenv("PYTHONPATH", f"{GUARD}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("BB_NETWORK_LOG", str(log))
    results = run_series("smoke", only=[book], figures_dir=tmp_path / "figures")
    assert [r.notebook for r in results] == [book]
    failed = {r.notebook: f"cell {r.cell}: {r.error}" for r in results if r.status != "ok"}
    assert not failed, failed
    assert Path(str(log) + ".loaded").exists(), "the network guard was not loaded in the kernel"
    assert not log.exists() or log.read_text() == "", log.read_text()
    folder = tmp_path / "figures" / "smoke" / book
    assert book in (tmp_path / "figures" / "smoke" / "SUMMARY.md").read_text()
    assert (folder / f"{book}.ipynb").exists()
    assert list(folder.glob("*.png")), f"{book} saved no figure"
    assert results[0].findings, f"{book} recorded no finding"
    if book.startswith("08_"):
        _assert_planted_super_weights_verified(folder)


def _assert_planted_super_weights_verified(folder: Path) -> None:
    """Notebook 08's smoke profile runs on planted models: each one's recorded super weights are its plant."""
    import pandas as pd

    from bertbusters_nb.model.planted import plant_of

    models = json.loads((folder / "config.json").read_text())["models"]
    found = pd.read_csv(folder / "super_weights.csv")
    findings = {f["claim"]: f["held"] for f in json.loads((folder / "findings.json").read_text())}
    for name in models:
        plant = plant_of(name)
        assert plant is not None, f"notebook 08's smoke model {name} has no planted super weight"
        rows = found[found.model == name]
        assert [(r.layer, r.out_channel, r.in_channel) for r in rows.itertuples()] == [
            (plant.layer, plant.row, plant.col)
        ], f"{name}: recorded {rows.to_dict('records')}"
        assert findings[f"{name}: a single weight scalar creates a massive activation"] is True


def _notebook(path: Path, code: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('out_dir = "x"\nprofile = "smoke"\nsize = 3\nname = "a"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in code]
    nbformat.write(nb, path)
    path.with_suffix(".schema.json").write_text(
        json.dumps(
            {
                "out_dir": {"type": "str", "nonempty": True},
                "profile": {"type": "str", "choices": list(runner.PROFILES)},
                "size": {"type": "int", "min": 1, "max": 10},
                "name": {"type": "str", "nonempty": True},
            }
        )
    )
    return path


@pytest.fixture()
def fake_series(tmp_path):
    books = tmp_path / "notebooks"
    books.mkdir()
    ok = (
        "from pathlib import Path\nPath(out_dir).mkdir(parents=True, exist_ok=True)\n"
        "Path(out_dir, 'table.csv').write_text('a\\n1\\n')\nPath(out_dir, 'runs.txt').open('a').write('x')"
    )
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
    assert "line 1: `raise RuntimeError" in broken.error
    assert broken.cell == 4  # In [4]: parameters, injected parameters, x = 1, then the failure
    assert (figures / "smoke" / "01_first" / "table.csv").exists()
    assert (figures / "smoke" / "03_third" / "table.csv").exists()
    summary = (figures / "smoke" / "SUMMARY.md").read_text()
    assert "| 02_broken | no good run |" in summary and "| 02_broken | failed attempt |" in summary
    assert "cell 4: RuntimeError: planted failure" in summary and "kept in `attempts/02_broken/`" in summary
    assert broken.attempt_dir == str(figures / "smoke" / "attempts" / "02_broken")
    assert (figures / "smoke" / "attempts" / "02_broken" / "02_broken.ipynb").exists()
    assert not (figures / "smoke" / "02_broken").exists()  # no results folder for a run that never finished


def test_rerun_skips_finished_notebooks_unless_redo(fake_series):
    kwargs = dict(
        figures_dir=fake_series / "figures", notebooks_dir=fake_series / "notebooks", kernel_name="python3", only=["01"]
    )
    assert run_series("smoke", **kwargs)[0].status == "ok"
    assert run_series("smoke", **kwargs)[0].status == "skipped"
    assert run_series("smoke", redo=True, **kwargs)[0].status == "ok"
    # a re-run starts from an empty folder and replaces the old one: nothing of the previous run is mixed in
    assert (fake_series / "figures" / "smoke" / "01_first" / "runs.txt").read_text() == "x"
    # a corrupt marker is not trusted: the notebook runs again
    (fake_series / "figures" / "smoke" / "01_first" / ".done.json").write_text("{trunc")
    assert run_series("smoke", **kwargs)[0].status == "ok"


@pytest.mark.parametrize(
    "values, match",
    [
        ({"sise": 4}, "no parameter 'sise'. Did you mean 'size'"),
        ({"size": "four"}, "'size' must be int"),
        ({"name": 3}, "'name' must be str"),
        ({"size": 0}, "size must be an integer >= 1 and <= 10; got 0"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
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


def test_the_line_that_raised_is_reported_not_the_first_line_of_the_cell(fake_series):
    books = fake_series / "notebooks"
    _notebook(books / "04_deep.ipynb", ["from pathlib import Path\nx = 1\nPath('/no/such/file').read_text()\ny = 2"])
    result = run_series(
        "smoke", figures_dir=fake_series / "figures", notebooks_dir=books, kernel_name="python3", only=["04"]
    )[0]
    assert result.status == "failed" and "FileNotFoundError" in result.error
    assert "line 3: `Path('/no/such/file').read_text()`" in result.error, result.error


def _every_parameter_out_of_range():
    from bertbusters_nb.schema import load_schema, out_of_range_example

    for book in numbered_notebooks():
        for name, spec in load_schema(book).items():
            if name not in runner.RESERVED:
                yield pytest.param(book, name, out_of_range_example(spec), id=f"{book.stem[:2]}-{name}")


@pytest.mark.parametrize("book, name, value", list(_every_parameter_out_of_range()))
def test_every_parameter_out_of_its_range_is_refused_before_any_kernel_starts(book, name, value, monkeypatch):
    """Table-driven: each parameter of each notebook gets a value just outside its declared range."""
    import papermill

    from bertbusters_nb.schema import describe, load_schema

    def no_kernel(*args, **kwargs):
        raise AssertionError("a kernel was started for a refused parameter")

    monkeypatch.setattr(papermill, "execute_notebook", no_kernel)
    with pytest.raises(ParameterError) as refused:
        run_series("offline", only=[book.stem], overrides={name: value}, figures_dir=Path("/nonexistent/figures"))
    message = str(refused.value)
    assert f"{name} must be {describe(load_schema(book)[name])}" in message, message


def test_every_notebook_parameter_has_a_declared_range():
    from bertbusters_nb.schema import load_schema, out_of_range_example, violation

    for book in numbered_notebooks():
        schema = load_schema(book)
        assert set(schema) == set(runner.declared_parameters(book)), book.name
        for name, spec in schema.items():
            assert violation(out_of_range_example(spec), spec), f"{book.name}: {name} declares no range"


def test_cli_refuses_a_negative_count_naming_the_parameter_and_its_range(capsys):
    from bertbusters_nb.__main__ import main

    assert main(["run", "--profile", "smoke", "--only", "00", "--set", "n_texts=-5"]) == 2
    assert "n_texts must be an integer >= 1, or 0 (all); got -5." in capsys.readouterr().err


def test_jobs_run_notebooks_at_once_with_their_share_of_threads(tmp_path):
    """Each of two notebooks waits for the other's marker file (run one at a time, the first would never see it
    and fail at its deadline), records the threads its kernel was given, and results come back in series order."""
    books, marks, figures = tmp_path / "notebooks", tmp_path / "marks", tmp_path / "figures"
    books.mkdir()
    marks.mkdir()
    meet = (
        "import os, time\nfrom pathlib import Path\nPath(out_dir).mkdir(parents=True, exist_ok=True)\n"
        "Path(marks, me).touch()\ndeadline = time.monotonic() + 600\n"
        "while not Path(marks, other).exists():\n"
        "    assert time.monotonic() < deadline, 'the other notebook never ran alongside this one'\n"
        "    time.sleep(0.2)\n"
        "Path(out_dir, 'threads.txt').write_text(os.environ.get('OMP_NUM_THREADS', 'unset'))"
    )
    _notebook(books / "01_a.ipynb", [f"marks, me, other = {str(marks)!r}, 'a', 'b'", meet])
    _notebook(books / "02_b.ipynb", [f"marks, me, other = {str(marks)!r}, 'b', 'a'", meet])
    before = os.environ.get("OMP_NUM_THREADS")  # preset under pytest-xdist (conftest), which the runner keeps
    expected = before or str(max(1, (os.cpu_count() or 1) // 2))
    results = run_series("smoke", figures_dir=figures, notebooks_dir=books, kernel_name="python3", jobs=2)
    assert [(r.notebook, r.status) for r in results] == [("01_a", "ok"), ("02_b", "ok")], results
    for stem in ("01_a", "02_b"):
        assert (figures / "smoke" / stem / "threads.txt").read_text() == expected
    assert os.environ.get("OMP_NUM_THREADS") == before  # the runner's own process is as it was
    summary = (figures / "smoke" / "SUMMARY.md").read_text()
    assert "| 01_a | ok |" in summary and "| 02_b | ok |" in summary


def test_jobs_must_be_a_positive_whole_number(fake_series):
    with pytest.raises(ValueError, match="--jobs 2"):
        run_series("smoke", notebooks_dir=fake_series / "notebooks", figures_dir=fake_series / "f", jobs=0)
    assert not (fake_series / "f").exists()


def test_the_longest_notebook_starts_first_by_this_machines_runs_else_the_committed_hints(fake_series):
    """A fresh clone has no finished run: the committed seconds order it; a notebook never measured goes first; a
    finished run on this machine overrides the hint."""
    books, figures = fake_series / "notebooks", fake_series / "figures"
    plans = [runner.plan_notebook(book, "smoke", figures_dir=figures) for book in numbered_notebooks(books)]
    assert [p.notebook.stem for p in runner._longest_first(plans)] == ["01_first", "02_broken", "03_third"]
    (books / runner.ORDER_HINTS).write_text(json.dumps({"smoke": {"01_first": 5, "02_broken": 50}}))
    assert [p.notebook.stem for p in runner._longest_first(plans)] == ["03_third", "02_broken", "01_first"]
    first = plans[0].folders.results
    first.mkdir(parents=True)
    (first / runner.DONE).write_text(json.dumps({"seconds": 100.0}))
    assert [p.notebook.stem for p in runner._longest_first(plans)] == ["03_third", "01_first", "02_broken"]
    (books / runner.ORDER_HINTS).write_text(json.dumps({"smoke": {"01_first": "long"}}))
    with pytest.raises(ValueError, match="must map notebook stems to seconds"):
        runner._longest_first(plans)


def test_the_committed_order_hints_name_every_notebook_of_the_main_job():
    hints = runner.order_hints(numbered_notebooks()[0].parent, "offline")
    assert sorted(hints) == [book.stem for book in numbered_notebooks()]
    assert all(seconds > 0 for seconds in hints.values())
