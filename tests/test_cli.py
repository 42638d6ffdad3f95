"""The one command line ``python -m bertbusters_nb``: its subcommands parse, and pretrain / finetune hand the rest
of the command line to the pre-training and fine-tuning command lines unchanged (a real tiny run of each)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bertbusters_nb.__main__ import DELEGATED, build_parser, main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_subcommand_is_listed():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == ["run", "assets", "detect", "pretrain", "finetune"]
    assert set(DELEGATED) == {"pretrain", "finetune"}


def test_run_assets_and_detect_parse_as_before():
    parser = build_parser()
    run = parser.parse_args(["run", "--profile", "smoke", "--only", "00", "03", "--redo", "--set", "device=cpu"])
    assert (run.command, run.profile, run.only, run.redo, run.set) == (
        "run",
        "smoke",
        ["00", "03"],
        True,
        ["device=cpu"],
    )
    default = parser.parse_args(["run"])
    assert (default.profile, default.only, default.redo, default.set) == ("offline", None, False, [])
    assert parser.parse_args(["assets"]).command == "assets"
    det = parser.parse_args(["detect", "minilm", "--roles", "ffn", "--json", "--texts", "8", "--scan", "4"])
    assert (det.model, det.roles, det.json, det.texts, det.scan) == ("minilm", ["ffn"], True, 8, 4)
    with pytest.raises(SystemExit):
        parser.parse_args(["nonsense"])


def test_assets_is_a_no_op_when_the_assets_are_unpacked(capsys):
    from bertbusters_nb.data.assets import assets_dir, snli_files

    assert all(path.exists() for path in snli_files().values())  # unpacked by make setup
    assert main(["assets"]) == 0
    assert capsys.readouterr().out.strip() == str(assets_dir())


def test_run_refuses_bad_input_before_any_notebook_runs(capsys):
    assert main(["run", "--set", "device"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["run", "--profile", "no-such-profile"]) == 2
    assert "Unknown profile" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, module", [("pretrain", "bertbusters_nb.pretraining.cli"), ("finetune", "bertbusters_nb.finetuning.cli")]
)
def test_delegated_help_is_the_module_command_line(command, module, capsys):
    """``python -m bertbusters_nb CMD --help`` prints what the module's own command line prints."""
    import importlib

    def usage(run, argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exit_info:
            run(argv)
        assert exit_info.value.code == 0
        return capsys.readouterr().out

    direct = usage(importlib.import_module(module).main, ["--help"])
    assert usage(main, [command, "--help"]) == direct and "--help" in direct


def test_python_m_finetuning_still_works():
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "bertbusters_nb.finetuning", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("usage: python -m bertbusters_nb.finetuning") and "--max_train_samples" in done.stdout


def test_finetune_parse_errors_name_the_problem(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--model", "minilm", "--task", "rt", "--no_such_flag", "3"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --no_such_flag 3" in capsys.readouterr().err


def test_pretrain_prepares_and_trains_a_tiny_run_through_the_one_command_line(tmp_path, capsys):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("".join(f"sentence {i} : the cat and the dog sat on mat {i % 7} .\n" for i in range(400)))
    data_dir, out = tmp_path / "data", tmp_path / "run"
    assert (
        main(
            [
                "pretrain",
                "prepare",
                "--out",
                str(data_dir),
                "--corpora",
                str(corpus),
                "--vocab-size",
                "120",
                "--seq-len",
                "16",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "pretrain",
                "train",
                "--out",
                str(out),
                "--data-dir",
                str(data_dir),
                "--hidden",
                "16",
                "--layers",
                "1",
                "--heads",
                "1",
                "--intermediate",
                "32",
                "--batch-size",
                "4",
                "--max-steps",
                "2",
                "--warmup-steps",
                "1",
                "--log-every",
                "1",
                "--save-every",
                "2",
                "--eval-sequences",
                "4",
                "--eval-batch-size",
                "4",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("step 2:")
    assert json.loads((data_dir / "data.json").read_text())["seq_len"] == 16


def test_the_command_line_and_the_runner_start_without_torch():
    """Each ``python -m bertbusters_nb run`` process would otherwise pay torch's and transformers' import (seconds)
    before a kernel pays it again; the package's public names still resolve on first use."""
    probe = (
        "import sys, bertbusters_nb.__main__ as m, bertbusters_nb.runner, bertbusters_nb.run_summary\n"
        "m.build_parser().parse_args(['detect', 'minilm', '--json'])\n"
        "heavy = sorted(k for k in ('torch', 'transformers', 'pandas', 'datasets') if k in sys.modules)\n"
        "import bertbusters_nb as bb\n"
        "print(heavy, bb.DEFAULT_RULE.k, bb.load_model.__module__, bb.model.loading.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "3.0", "bertbusters_nb.model.loading", "bertbusters_nb.model.loading"]
