"""The command line: a real train -> evaluate -> compare cycle and its errors."""

import json
import os
import subprocess
import sys

import pytest

from aradals_tf import cli
from aradals_tf import experiments


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One small real run on the embedded digits (MLP, 3 epochs)."""
    root = tmp_path_factory.mktemp("runs")
    out = str(root / "digits_vanilla")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--dataset", "digits", "--epochs", "3", "--out", out])
    assert exit_info.value.code == 0
    return out


def test_train_writes_a_complete_run(trained_run):
    assert sorted(os.listdir(trained_run)) == [
        "config.json",
        "history.csv",
        "history.json",
        "model.keras",
    ]
    config = json.load(open(os.path.join(trained_run, "config.json")))
    assert config["dataset"] == "digits" and config["backbone"] == "mlp"
    history = json.load(open(os.path.join(trained_run, "history.json")))
    assert len(history["loss"]) == 3 and "val_ece" in history
    # Only the run itself: no partial siblings left behind.
    assert not [n for n in os.listdir(os.path.dirname(trained_run)) if "partial" in n]


def test_evaluate_prints_table_and_writes_metrics(trained_run, tmp_path, capsys):
    code, out, err = run_main(
        [
            "evaluate",
            "--run",
            trained_run,
            "--shift",
            "contrast:5",
            "--shift",
            "gaussian_noise:2",
            "--plots",
            str(tmp_path),
            "--each-shift",
        ],
        capsys,
    )
    assert code == 0, err
    for needle in ("ECE %", "clean", "contrast:5", "shift mean", "TS (T="):
        assert needle in out
    summary = json.load(open(os.path.join(trained_run, "metrics.json")))
    assert set(summary["results"]) == {"clean", "contrast:5", "gaussian_noise:2"}
    clean = summary["results"]["clean"]
    # Temperature scaling keeps accuracy; the printed percent is 100 x the fraction.
    assert clean["raw"]["accuracy"] == clean["temperature"]["accuracy"]
    assert f"{100 * clean['raw']['ece']:.2f}" in out
    assert os.path.getsize(tmp_path / "digits_vanilla_reliability.png") > 10_000
    code, out, _ = run_main(["compare", trained_run, trained_run], capsys)
    assert code == 0 and out.count("digits_vanilla [clean]") == 4


def test_label_smoothing_run_is_less_confident(tmp_path, capsys):
    out = str(tmp_path / "ls")
    code, _, err = run_main(
        [
            "train",
            "--dataset",
            "digits",
            "--method",
            "label-smoothing",
            "--label-smoothing",
            "0.3",
            "--epochs",
            "3",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    config, model = experiments.load_run(out)
    import numpy as np

    from aradals_tf import data

    images, _ = data.load_arrays("digits", "test")
    probs = np.asarray(__import__("tensorflow").nn.softmax(model.predict(images, verbose=0)))
    # With eps = 0.3 over 10 classes the loss is minimised at a top
    # probability of 0.73: training must not push far beyond it.
    assert np.mean(probs.max(1)) < 0.8


def test_robustness_command_prints_and_writes_table(trained_run, tmp_path, capsys):
    plot = tmp_path / "robustness.png"
    code, out, err = run_main(
        [
            "robustness",
            "--run",
            trained_run,
            "--bins",
            "4",
            "--steps",
            "5",
            "--shift",
            "contrast:3",
            "--plot",
            str(plot),
        ],
        capsys,
    )
    assert code == 0, err
    assert "By adversarial robustness" in out and "By confidence" in out
    summary = json.load(open(os.path.join(trained_run, "robustness_test_contrast-3.json")))
    rows = summary["by_robustness"]
    assert len(rows) == 4 and sum(row["count"] for row in rows) == summary["count"]
    assert [row["radius_min"] for row in rows] == sorted(row["radius_min"] for row in rows)
    assert summary["attack"]["eps_max"] == 0.3 and plot.stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--dataset", "imagenet", "--out", "x"], "registry name (mnist5k"),
        (["train", "--method", "dropout", "--out", "x"], "dropout"),
        (
            ["train", "--backbone", "vgg", "--dataset", "digits", "--out", "x"],
            "valid names: small_cnn",
        ),
        (["train", "--dataset", "cifar10_corrupted/fog_1", "--out", "x"], "no train split"),
        (["evaluate", "--run", "does/not/exist"], "not found"),
        (["evaluate", "--run", "RUN", "--shift", "snowstorm:2"], "use one of: gaussian_noise"),
        (["evaluate", "--run", "RUN", "--shift", "contrast:9"], "1"),
        (["compare", "does/not/exist"], "metrics.json"),
        (["robustness", "--run", "RUN", "--eps-max", "0"], "eps-max"),
        (["robustness", "--run", "RUN", "--steps", "0"], "steps"),
        (["robustness", "--run", "RUN", "--shift", "frost:2"], "use one of"),
        (["train", "--smoothing-data", "test", "--out", "x"], "clean+held-out"),
        (["compare", "--out", "x", "--select-on", "test"], "validation+held-out"),
    ],
)
def test_bad_input_is_one_line_error(args, message, trained_run, capsys):
    args = [trained_run if a == "RUN" else a for a in args]
    code, out, err = run_main(args, capsys)
    assert code != 0
    assert message in err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and message in error_lines[0]


def test_train_an_ensemble_with_progress_per_member(tmp_path, capsys):
    out = str(tmp_path / "ensemble")
    code, stdout, err = run_main(
        ["train", "--dataset", "digits", "--epochs", "1", "--ensemble-size", "2", "--out", out],
        capsys,
    )
    assert code == 0, err
    assert "Member 1/2" in stdout and "Member 2/2" in stdout
    config, model = experiments.load_run(out)
    assert config.ensemble_size == 2 and type(model).__name__ == "LogitEnsemble"


def test_existing_out_needs_overwrite(trained_run, capsys):
    code, _, err = run_main(
        ["train", "--dataset", "digits", "--epochs", "1", "--out", trained_run], capsys
    )
    assert code == 1 and "--overwrite" in err


def test_corrupt_run_directory(tmp_path, capsys):
    run = tmp_path / "broken"
    run.mkdir()
    code, _, err = run_main(["evaluate", "--run", str(run)], capsys)
    assert code == 1 and "not a run directory" in err
    (run / "config.json").write_text("{not json")
    (run / "model.keras").write_text("garbage")
    code, _, err = run_main(["evaluate", "--run", str(run)], capsys)
    assert code == 1 and "not valid JSON" in err
    (run / "config.json").write_text('{"dataset": "digits"}')
    code, _, err = run_main(["evaluate", "--run", str(run)], capsys)
    assert code == 1 and "Cannot load" in err


def test_console_script_help_for_every_command():
    script = os.path.join(os.path.dirname(sys.executable), "aradals-tf")
    for command in ([], ["train"], ["evaluate"], ["compare"], ["robustness"]):
        completed = subprocess.run(
            [script, *command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert completed.returncode == 0 and "Usage: aradals-tf" in completed.stdout


def test_cli_options_come_from_the_library():
    import dataclasses
    import types

    from aradals_tf import choices

    def option(command, name):
        (param,) = [p for p in command.params if p.name == name]
        return param

    commands = types.SimpleNamespace(**cli.cli.commands)
    fields = dataclasses.fields(experiments.TrainConfig)
    assert {p.name for p in commands.train.params} == {f.name for f in fields} | {
        "out",
        "overwrite",
    }
    for field in fields:
        param = option(commands.train, field.name)
        assert param.default == field.default and param.help == field.metadata["help"]
        if field.metadata["choices"]:
            assert tuple(param.type.choices) == field.metadata["choices"]
    assert tuple(option(commands.train, "method").type.choices) == experiments.METHODS
    assert tuple(option(commands.train, "eps_update").type.choices) == choices.EPS_UPDATES
    assert (
        tuple(option(commands.compare, "select_on").type.choices) == experiments.SELECTION_CRITERIA
    )
    assert tuple(option(commands.robustness, "loss").type.choices) == choices.ATTACK_LOSSES
    assert tuple(option(commands.export, "calibration").type.choices) == choices.CALIBRATIONS


def test_help_texts_hold_no_measured_figures():
    """Figures such as "1.8x" or "1.3 on mnist5k" go stale; the docs hold them."""
    import re

    import click

    texts = [cli.cli.help]
    for command in cli.cli.commands.values():
        texts.append(command.help)
        texts += [p.help or "" for p in command.params if isinstance(p, click.Option)]
    for text in texts:
        assert not re.search(r"\d(\.\d+)?x\b|measured|\d+ ?%", text), text


def test_tensorflow_start_up_lines_hidden_unless_asked(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "aradals-tf")
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ARADALS_TF_DEBUG")
    }
    missing = str(tmp_path / "no_such_run")

    def stderr_lines(extra_env):
        completed = subprocess.run(
            [script, "evaluate", "--run", missing],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, **extra_env},
        )
        assert completed.returncode == 1
        return completed.stderr.strip().splitlines()

    # TensorFlow was imported (the command needs it), yet only the error shows.
    quiet = stderr_lines({})
    assert (
        len(quiet) == 1 and quiet[0].startswith("Error: Run directory") and "not found" in quiet[0]
    )
    # A user who sets TensorFlow's own log level gets TensorFlow's lines back.
    loud = stderr_lines({"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert len(loud) > 1 and loud[-1] == quiet[0]


@pytest.mark.parametrize("source", ["attack", "first_order", "margin", "confidence"])
def test_every_strata_source_trains_through_the_cli(source, tmp_path, capsys):
    out = str(tmp_path / source)
    code, _, err = run_main(
        [
            "train",
            "--dataset",
            "digits",
            "--method",
            "ar-adals",
            "--strata-by",
            source,
            "--epochs",
            "2",
            "--num-strata",
            "3",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["strata_by"] == source
    history = json.load(open(os.path.join(out, "history.json")))
    assert len(history["stratum0_eps"]) == 2 and len(history["stratum2_train_count"]) == 2
    _, model = experiments.load_run(out)
    assert model.strata_by == source
