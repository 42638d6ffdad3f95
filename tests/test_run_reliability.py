"""A failed, refused or killed run never destroys or mixes the results of the last good one (issue 23).

Each fault is tried on tiny throwaway notebooks in a temporary notebooks folder (seconds per run): the last
good results folder is hashed file by file before and after, and the summary must name the failure on a line
of its own. The resume tests show that a re-run reuses what a failed run finished: the kept attempt folder's
checkpoints (runner), and notebook 04's fine-tunes and scans (``studies.downstream`` on tiny models).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

from bertbusters_nb import runner
from bertbusters_nb.run_folders import ATTEMPT, ATTEMPTS, LOG, attempt_status, read_record
from bertbusters_nb.run_summary import write_summary
from bertbusters_nb.runner import ParameterError, run_series

REPO = Path(__file__).resolve().parent.parent
FAIL_ENV = "BB_TINY_FAIL"  # set in the runner's environment (the kernel inherits it): fails cell 4 of 01_tiny

PARAMETERS = 'out_dir = "x"\nprofile = "smoke"\nsize = 3\ndevice = "auto"\nfail_at = 0\nmarker = ""'
SCHEMA = {
    "out_dir": {"type": "str", "nonempty": True},
    "profile": {"type": "str", "choices": list(runner.PROFILES)},
    "size": {"type": "int", "min": 1, "max": 10},
    "device": {"type": "str", "pattern": "auto|cpu|mps|cuda(:\\d+)?"},
    "fail_at": {"type": "int", "min": 0, "max": 10},
    "marker": {"type": "str"},
}
CELLS = [
    # In [3]: results, as RunRecorder writes them (config.json with out_dir, a table, findings)
    "import json, os, time, uuid\nfrom pathlib import Path\nout = Path(out_dir)\nout.mkdir(parents=True, exist_ok=True)\n"
    "(out / 'config.json').write_text(json.dumps({'out_dir': out_dir, 'size': size}))\n"
    "(out / 'table.csv').write_text(f'size\\n{size}\\n')\n"
    "(out / 'findings.json').write_text(json.dumps([{'claim': 'tiny claim', 'held': True, "
    "'evidence': f'size {size}'}]))\nif fail_at == 3:\n    raise RuntimeError('planted failure in cell 3')",
    # In [4]: a resumable checkpoint: computed once per attempt folder (a fresh token each time it is computed)
    "ck = out / 'scan-tiny.json'\nif not ck.exists():\n    ck.write_text(json.dumps({'token': uuid.uuid4().hex}))\n"
    "(out / 'partial.txt').write_text('written before the failure point')\n"
    f"if fail_at == 4 or os.environ.get('{FAIL_ENV}') == '1':\n    raise RuntimeError('planted failure in cell 4')",
    # In [5]: with a marker: say so (with this kernel's pid), then wait for a file that never appears
    "if marker:\n    Path(marker).write_text(str(os.getpid()))\n    give_up = time.monotonic() + 600\n"
    "    while not Path(marker + '.never').exists() and time.monotonic() < give_up:\n        time.sleep(0.05)\n"
    "    raise RuntimeError('the test never killed this run')",
    "(out / 'done.txt').write_text('the last cell ran')",
]


def _tiny_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in CELLS]
    nbformat.write(nb, path)
    path.with_suffix(".schema.json").write_text(json.dumps(SCHEMA))
    return path


def _series(folder: Path) -> dict:
    books = folder / "notebooks"
    books.mkdir()
    _tiny_notebook(books / "01_tiny.ipynb")
    _tiny_notebook(books / "02_other.ipynb")
    return {"figures_dir": folder / "figures", "notebooks_dir": books, "kernel_name": "python3"}


@pytest.fixture()
def series(tmp_path):
    return _series(tmp_path)


@pytest.fixture(scope="module")
def good_series(tmp_path_factory):
    """Two tiny notebooks with a good run each, shared by the refusal tests (a refusal writes nothing)."""
    found = _series(tmp_path_factory.mktemp("good-series"))
    _good_runs(found)
    return found


def digest(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder`` (the folder's bytes, file by file)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _good_runs(series) -> dict[str, str]:
    results = run_series("smoke", **series)
    assert [r.status for r in results] == ["ok", "ok"], [(r.notebook, r.error) for r in results]
    good = series["figures_dir"] / "smoke" / "01_tiny"
    before = digest(good)
    assert {"01_tiny.ipynb", "table.csv", "findings.json", "config.json", ".done.json", "run.log"} <= set(before)
    return before


def _summary(series) -> tuple[str, dict]:
    base = series["figures_dir"] / "smoke"
    return (base / "SUMMARY.md").read_text(), {
        e["notebook"]: e for e in json.loads((base / "summary.json").read_text())["notebooks"]
    }


def _assert_good_line_kept(text: str, entries: dict) -> None:
    for stem in ("01_tiny", "02_other"):
        assert f"| {stem} | ok |" in text, text
        assert entries[stem]["last_good"]["status"] == "ok"
        assert entries[stem]["last_good"]["findings"] == [{"claim": "tiny claim", "held": True, "evidence": "size 3"}]
    assert "**tiny claim**: held. size 3" in text


# ---------------------------------------------------------------------------------------- fault 1: failed cell
def test_a_run_failing_at_a_chosen_cell_leaves_the_good_results_byte_for_byte(series):
    before = _good_runs(series)
    good = series["figures_dir"] / "smoke" / "01_tiny"
    for fail_at, cell in ((3, 3), (4, 4)):  # In [n]: the parameters cell is In [1], papermill's injected one In [2]
        failed = run_series("smoke", only=["01"], overrides={"fail_at": fail_at}, **series)[0]
        assert failed.status == "failed" and failed.cell == cell, failed
        assert f"planted failure in cell {fail_at}" in failed.error
        assert digest(good) == before, "a failed run changed the last good results"
        attempt = Path(failed.attempt_dir)
        assert attempt == series["figures_dir"] / "smoke" / ATTEMPTS / "01_tiny"
        executed = nbformat.read(attempt / "01_tiny.ipynb", as_version=4)
        errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert errors and errors[0]["evalue"] == f"planted failure in cell {fail_at}"
        assert f"planted failure in cell {fail_at}" in (attempt / LOG).read_text()
        record = read_record(attempt / ATTEMPT)
        assert record["status"] == "failed" and record["cell"] == cell and record["overrides"] == {"fail_at": fail_at}
        text, entries = _summary(series)
        _assert_good_line_kept(text, entries)
        assert "| 01_tiny | failed attempt |" in text and f"cell {cell}: RuntimeError: planted failure" in text
        assert "kept in `attempts/01_tiny/`" in text
        assert entries["01_tiny"]["attempt"]["status"] == "failed" and entries["01_tiny"]["attempt"]["cell"] == cell
        assert entries["02_other"]["attempt"] is None
    # an --only run of another notebook keeps both lines of 01 (the summary is read from disk)
    assert run_series("smoke", only=["02"], redo=True, **series)[0].status == "ok"
    text, entries = _summary(series)
    _assert_good_line_kept(text, entries)
    assert entries["01_tiny"]["attempt"]["status"] == "failed" and "| 01_tiny | failed attempt |" in text
    assert digest(good) == before


# ---------------------------------------------------------------------------------------- fault 2: refused run
@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"size": 0}, "size must be an integer >= 1 and <= 10; got 0"),
        ({"sise": 4}, "no parameter 'sise'. Did you mean 'size'"),
        ({"device": "cuda"}, "needs a CUDA GPU, and none is visible on this machine"),
        ({"device": "cuda:1"}, "needs a CUDA GPU"),
        ({"device": "gpu"}, "Use 'auto' (a CUDA GPU when one is visible, else the CPU), 'cpu', 'cuda'"),
        ({"out_dir": "/tmp/elsewhere"}, "--figures-dir DIR"),
        ({"profile": "paper"}, "choose the profile with --profile"),
    ],
)
def test_a_refused_run_starts_no_kernel_and_writes_nothing(good_series, overrides, words, monkeypatch):
    import papermill

    series = good_series
    figures = series["figures_dir"]
    before = digest(figures / "smoke" / "01_tiny")
    everything = digest(figures)
    folders = sorted(p for p in figures.rglob("*") if p.is_dir())

    def no_kernel(*args, **kwargs):
        raise AssertionError("a kernel was started for a refused run")

    monkeypatch.setattr(papermill, "execute_notebook", no_kernel)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the refusal must not depend on the machine
    with pytest.raises(ParameterError) as refused:
        run_series("smoke", overrides=overrides, redo=True, **series)
    assert words in str(refused.value), str(refused.value)
    assert digest(figures) == everything and sorted(p for p in figures.rglob("*") if p.is_dir()) == folders
    assert digest(figures / "smoke" / "01_tiny") == before
    text, entries = _summary(series)
    _assert_good_line_kept(text, entries)
    assert all(e["attempt"] is None for e in entries.values()) and "attempt |" not in text
    # into a figures folder that does not exist yet: none is created
    fresh = figures.parent / "fresh-figures"
    with pytest.raises(ParameterError):
        run_series("smoke", overrides=overrides, **{**series, "figures_dir": fresh})
    assert not fresh.exists()


def test_the_cli_refuses_cuda_without_a_gpu_and_out_dir_naming_the_fix(tmp_path, capsys, monkeypatch):
    """Real notebooks: ``--set device=cuda`` on a machine without CUDA, the paper profile's own ``device='cuda'``,
    and ``--set out_dir=...`` are refused before any kernel starts; nothing is written."""
    from bertbusters_nb.__main__ import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    figures = tmp_path / "figures"
    assert (
        main(["run", "--profile", "smoke", "--only", "05", "--set", "device=cuda", "--figures-dir", str(figures)]) == 2
    )
    err = capsys.readouterr().err
    assert "device='cuda' (from --set) needs a CUDA GPU" in err and "--set device=cpu" in err, err
    assert "refused: nothing was run or written" in err
    assert main(["run", "--profile", "paper", "--only", "00", "--figures-dir", str(figures)]) == 2
    err = capsys.readouterr().err
    assert "from the paper profile in 00_core_minilm.profiles.json" in err and "--set device=cpu" in err, err
    assert (
        main(["run", "--profile", "smoke", "--only", "05", "--set", "out_dir=elsewhere", "--figures-dir", str(figures)])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{figures}/smoke/05_explorer/" in err and "--figures-dir DIR" in err, err
    assert not figures.exists()


# ---------------------------------------------------------------------------------------- fault 3: SIGKILL
def test_a_run_killed_with_sigkill_mid_notebook_leaves_the_good_results_byte_for_byte(series, tmp_path):
    before = _good_runs(series)
    good = series["figures_dir"] / "smoke" / "01_tiny"
    marker = tmp_path / "kernel-is-in-cell-5"
    script = (
        "import sys; from pathlib import Path; from bertbusters_nb.runner import run_series; "
        f"run_series('smoke', only=['01'], overrides={{'marker': {str(marker)!r}}}, "
        f"figures_dir=Path({str(series['figures_dir'])!r}), notebooks_dir=Path({str(series['notebooks_dir'])!r}), "
        "kernel_name='python3')"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, start_new_session=True)
    kernel_pid = None
    try:
        deadline = time.monotonic() + 300  # a bound, not a timing assumption: the kernel reaches cell 5 or we fail
        while not (marker.exists() and marker.read_text().strip()):
            assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before reaching the blocking cell"
            assert time.monotonic() < deadline, "the run never reached the blocking cell"
            time.sleep(0.1)
        kernel_pid = int(marker.read_text())
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if kernel_pid is not None:  # the kernel runs in a session of its own (jupyter_client): end it too
            try:
                os.kill(kernel_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == -signal.SIGKILL
    assert digest(good) == before, "a killed run changed the last good results"
    attempt = series["figures_dir"] / "smoke" / ATTEMPTS / "01_tiny"
    assert attempt_status(read_record(attempt / ATTEMPT)) == "interrupted"
    assert (attempt / "partial.txt").exists() and (attempt / "01_tiny.ipynb").exists()
    text, entries = _summary(series)  # as the killed run left it: the attempt was marked running when it started
    _assert_good_line_kept(text, entries)
    assert "| 01_tiny | running attempt |" in text or "| 01_tiny | interrupted attempt |" in text, text
    write_summary("smoke", series["figures_dir"])  # any later run rewrites it: the pid is gone, so interrupted
    text, entries = _summary(series)
    _assert_good_line_kept(text, entries)
    assert "| 01_tiny | interrupted attempt |" in text and "killed" in text, text
    assert entries["01_tiny"]["attempt"]["status"] == "interrupted"
    # the next good run of the same notebook publishes in one step and drops the attempt
    assert run_series("smoke", only=["01"], overrides={"size": 4}, **series)[0].status == "ok"
    assert (good / "table.csv").read_text() == "size\n4\n" and not attempt.exists()
    text, entries = _summary(series)
    assert entries["01_tiny"]["attempt"] is None and "attempt |" not in text


# ---------------------------------------------------------------------------------------- publishing and resume
def test_a_finished_run_replaces_the_whole_folder_and_config_names_it(series):
    _good_runs(series)
    good = series["figures_dir"] / "smoke" / "01_tiny"
    (good / "stale.csv").write_text("from a run that no longer describes this folder")
    assert run_series("smoke", only=["01"], redo=True, overrides={"size": 5}, **series)[0].status == "ok"
    assert not (good / "stale.csv").exists()
    assert json.loads((good / "config.json").read_text())["out_dir"] == str(good)
    done = json.loads((good / ".done.json").read_text())
    assert done["overrides"] == {"size": 5} and done["parameters"]["out_dir"] == str(good) and done["finished"]
    assert not (series["figures_dir"] / "smoke" / ATTEMPTS).exists()
    text, _ = _summary(series)
    assert "| 01_tiny | ok |" in text and "`--set size=5`" in text


def test_a_rerun_with_the_same_parameters_resumes_the_kept_attempt(series, monkeypatch):
    monkeypatch.setenv(FAIL_ENV, "1")  # cell 4 fails after the checkpoint is written; parameters unchanged
    failed = run_series("smoke", only=["01"], **series)[0]
    assert failed.status == "failed" and "planted failure in cell 4" in failed.error
    attempt = Path(failed.attempt_dir)
    token = json.loads((attempt / "scan-tiny.json").read_text())["token"]
    monkeypatch.delenv(FAIL_ENV)
    assert run_series("smoke", only=["01"], **series)[0].status == "ok"
    good = series["figures_dir"] / "smoke" / "01_tiny"
    assert json.loads((good / "scan-tiny.json").read_text())["token"] == token, "the checkpoint was recomputed"
    assert "(resuming)" in (good / LOG).read_text()


def test_a_run_with_other_parameters_starts_fresh_but_carries_the_scan_checkpoints(series, monkeypatch):
    monkeypatch.setenv(FAIL_ENV, "1")
    failed = run_series("smoke", only=["01"], **series)[0]
    token = json.loads((Path(failed.attempt_dir) / "scan-tiny.json").read_text())["token"]
    (Path(failed.attempt_dir) / "leftover.txt").write_text("a file only the failed attempt wrote")
    monkeypatch.delenv(FAIL_ENV)
    assert run_series("smoke", only=["01"], overrides={"size": 2}, **series)[0].status == "ok"
    good = series["figures_dir"] / "smoke" / "01_tiny"
    assert json.loads((good / "scan-tiny.json").read_text())["token"] == token  # key-named: safe to carry
    assert not (good / "leftover.txt").exists()  # nothing else of the other run is mixed in
    assert "(resuming)" not in (good / LOG).read_text()


def test_the_carried_pattern_matches_the_scan_checkpoint_names():
    from fnmatch import fnmatch

    from bertbusters_nb.evaluation.scan import checkpoint_name
    from bertbusters_nb.run_folders import CARRY_OVER

    assert any(fnmatch(checkpoint_name({"any": "key"}), pattern) for pattern in CARRY_OVER)


def test_a_second_process_running_the_same_notebook_is_refused(series):
    """An attempt marked running by a live process (here: a sleeping child) is not taken over."""
    from bertbusters_nb.atomic import atomic_write_json
    from bertbusters_nb.run_folders import RunRefusedError

    attempt = series["figures_dir"] / "smoke" / ATTEMPTS / "01_tiny"
    attempt.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        atomic_write_json(attempt / ATTEMPT, {"status": "running", "pid": other.pid, "fingerprint": "x"})
        with pytest.raises(RunRefusedError, match=f"being run by process {other.pid}"):
            run_series("smoke", only=["01"], **series)
    finally:
        other.kill()
        other.wait()
    assert run_series("smoke", only=["01"], **series)[0].status == "ok"  # its process gone: interrupted, resumed


# ---------------------------------------------------------------------------------------- notebook 04 resumes
@pytest.fixture(scope="module")
def tiny_backbones(tmp_path_factory):
    """Two 2-layer BERTs (hidden 16, seeds 0 and 1) with a planted LayerNorm outlier at dim 3."""
    import transformers as T

    from bertbusters_nb.data import assets

    tokenizer = T.AutoTokenizer.from_pretrained(assets.minilm_dir())
    folders = []
    for seed in range(2):
        torch.manual_seed(seed)
        config = T.BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
        model = T.BertModel(config)
        with torch.no_grad():
            for layer in model.encoder.layer:
                layer.output.LayerNorm.weight[3] = 8.0
                layer.attention.output.LayerNorm.weight[3] = 8.0
        folder = tmp_path_factory.mktemp(f"tiny-backbone-{seed}")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(str(folder))
    return folders


def test_notebook_04_rerun_after_a_failure_in_a_later_task_reuses_finished_fine_tunes_and_scans(
    tiny_backbones, tmp_path, monkeypatch
):
    """Notebook 04's stages on 2 tiny backbones x 2 tasks (4 fine-tunes, then 4 scans; the paper profile: 1 x 8):
    a failure in the third pair's fine-tune, then in its scan; each re-run trains and scans only what had not
    finished (the pairs before the failure are reused, the one after it is done too)."""
    from bertbusters_nb.evaluation import engine as engine_module
    from bertbusters_nb.finetuning import FinetuneSettings
    from bertbusters_nb.finetuning import trainer as trainer_module
    from bertbusters_nb.studies.downstream import DownstreamStudy

    settings = FinetuneSettings(
        epochs=1.0,
        max_steps=2,
        batch_size=8,
        max_length=24,
        max_train_samples=16,
        max_eval_samples=16,
        checkpoint_steps=0,
    )
    cache, scans = tmp_path / "finetuned", tmp_path / "out_dir"

    def study():
        return DownstreamStudy(tiny_backbones, ["rt", "snli"], settings, device="cpu", progress=False, cache_dir=cache)

    pairs = [(b, t) for b in tiny_backbones for t in ("rt", "snli")]
    later, earlier = pairs[2], pairs[:2]
    real_train = trainer_module._train

    def train_failing_on_the_later(model_name, spec, *args, **kwargs):
        if (model_name, spec.name) == later:
            raise RuntimeError("injected failure in a later fine-tune")
        return real_train(model_name, spec, *args, **kwargs)

    # run 1: fails while fine-tuning the third pair
    monkeypatch.setattr(trainer_module, "_train", train_failing_on_the_later)
    with pytest.raises(RuntimeError, match="later fine-tune"):
        study().finetune()
    entries = sorted(cache.iterdir())
    assert len(entries) == 2
    stamps = {p.name: (p / "finetune.json").stat().st_mtime_ns for p in entries}

    # run 2: the two finished fine-tunes are reused (training them again would raise); it fails scanning the third
    def train_only_the_unfinished(model_name, spec, *args, **kwargs):
        assert (model_name, spec.name) not in earlier, f"re-trained {model_name} on {spec.name}"
        return real_train(model_name, spec, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "_train", train_only_the_unfinished)
    second = study()
    baseline = second.finetune()
    reused = baseline.drop_duplicates(["backbone", "task"]).reused_cache.tolist()
    assert reused == [True, True, False, False]
    assert {p.name: (p / "finetune.json").stat().st_mtime_ns for p in entries} == stamps
    real_run = engine_module.AblationEngine.run
    later_model = second.pairs[2].tuned.model

    def run_failing_on_the_later(self, conditions, *args, **kwargs):
        if self.model is later_model and any(c.dims for c in conditions):  # its single-dim conditions
            raise RuntimeError("injected failure in a later scan")
        return real_run(self, conditions, *args, **kwargs)

    monkeypatch.setattr(engine_module.AblationEngine, "run", run_failing_on_the_later)
    with pytest.raises(RuntimeError, match="later scan"):
        second.scan(max_samples=8, every=4, checkpoint_dir=scans)
    checkpoints = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in scans.glob("scan-*.json")}
    assert len(checkpoints) == 2  # the two finished scans (the third failed before its first chunk)

    # run 3: nothing is trained; the two finished scans are read, not computed again
    def never_train(model_name, spec, *args, **kwargs):
        raise AssertionError(f"re-trained {model_name} on {spec.name}")

    monkeypatch.setattr(trainer_module, "_train", never_train)
    third = study()
    assert third.finetune().reused_cache.all()
    finished = {id(p.tuned.model) for p in third.pairs[:2]}

    def run_only_the_unfinished(self, conditions, *args, **kwargs):
        # the intact model is still evaluated (downstream's intact_loss); no dim of a finished scan is
        if id(self.model) in finished and any(c.dims for c in conditions):
            raise AssertionError("a finished scan was computed again")
        return real_run(self, conditions, *args, **kwargs)

    monkeypatch.setattr(engine_module.AblationEngine, "run", run_only_the_unfinished)
    table = third.scan(max_samples=8, every=4, checkpoint_dir=scans)
    assert table.groupby(["backbone", "task"]).ngroups == 4
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in scans.glob("scan-*.json")}
    unchanged = [name for name in checkpoints if after[name] == checkpoints[name]]
    assert len(unchanged) == 2 and len(after) == 4, "the finished scans' checkpoints were rewritten"
