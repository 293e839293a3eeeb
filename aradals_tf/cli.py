"""The `aradals-tf` command line: `train`, `evaluate`, `robustness`, `compare`, `export`, `predict`.

Each command reads its arguments, makes one library call and prints the result.
`train`'s options are `experiments.TrainConfig`'s fields and every choice list
comes from the library, so the CLI restates none of them. TensorFlow is imported
only inside commands (`--help` answers at once), its C++ start-up logging hidden
unless `ARADALS_TF_DEBUG=1` or `TF_CPP_MIN_LOG_LEVEL` is set. Bad input ends with
a one-line `Error: ...` and exit status 1, never a traceback (`ARADALS_TF_DEBUG=1`
shows it anyway).
"""

import dataclasses
import os
import sys
import types

import click

from aradals_tf import choices
from aradals_tf import quiet_tensorflow
from aradals_tf.experiments import config as config_lib
from aradals_tf.version import __version__

_DEBUG = "ARADALS_TF_DEBUG"
_SPLITS = ("test", "validation")
_PREDICT_SIGNATURES = ("serving_default", "robustness")


def _keras_verbosity():
    """A live progress bar on a terminal, one line per epoch in logs."""
    return 1 if sys.stdout.isatty() else 2


def _config_options(command):
    """Adds one option per `TrainConfig` field, typed, with its help and choices."""
    hints = {field.name: field.type for field in dataclasses.fields(config_lib.TrainConfig)}
    for field in reversed(dataclasses.fields(config_lib.TrainConfig)):
        kind = hints[field.name]
        if isinstance(kind, types.UnionType):  # `float | None` and the like
            kind = next(arg for arg in kind.__args__ if arg is not type(None))
        valid = field.metadata.get("choices")
        command = click.option(
            "--" + field.name.replace("_", "-"),
            field.name,
            type=click.Choice(valid) if valid else kind,
            default=field.default,
            show_default=field.default is not None,
            help=field.metadata["help"],
        )(command)
    return command


_run_option = click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(),
    help="Run directory from `aradals-tf train`.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aradals-tf")
def cli():
    """Calibrated Keras classifiers with AR-AdaLS (adversarial-robustness-based
    adaptive label smoothing).

    Datasets: mnist5k and digits ship with the package's dependencies and work
    offline; the TensorFlow Datasets names (mnist, cifar10, cifar10_corrupted/...)
    need prepared data (--data-dir).
    """


@cli.command()
@_config_options
@click.option(
    "--out", required=True, type=click.Path(), help="Run directory to create, e.g. runs/vanilla."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@quiet_tensorflow.needs_tensorflow
def train(out, overwrite, **settings):
    """Train a model and save it as a run directory (model.keras,
    config.json, history.json; AR-AdaLS adds eps_per_stratum.png).

    Methods: vanilla (hard labels), label-smoothing (uniform eps), focal,
    mixup, ar-adals (adaptive per-robustness-stratum smoothing). An
    interrupted run resumes from its last finished epoch when the same
    command is run again."""
    from aradals_tf import experiments

    config = experiments.TrainConfig(**settings).validate()
    experiments.train_run(config, out, overwrite=overwrite, verbose=_keras_verbosity())
    click.echo(f"Saved run to {out}")


@cli.command()
@_run_option
@click.option(
    "--shift",
    "shifts",
    multiple=True,
    metavar="all|NAME:SEVERITY",
    help="Also evaluate on corrupted copies of the split (repeatable); "
    "'all' is every test-suite corruption at severities 1-5.",
)
@click.option("--split", type=click.Choice(_SPLITS), default="test", show_default=True)
@click.option(
    "--bins", type=click.IntRange(min=1), default=15, show_default=True, help="Bins of ECE and MCE."
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write reliability diagrams here.",
)
@click.option(
    "--each-shift/--shift-mean-only",
    default=False,
    show_default=True,
    help="Print one row per shift, or only their mean.",
)
@quiet_tensorflow.needs_tensorflow
def evaluate(run_dir, shifts, split, bins, plots_dir, each_shift):
    """Evaluate a run: accuracy, ECE, adaptive ECE, MCE, NLL and Brier, raw
    and temperature-scaled (T fitted on the validation split). Writes
    metrics.json into the run directory."""
    from aradals_tf import experiments

    summary = experiments.evaluate_run(
        run_dir,
        shifts=shifts,
        split=split,
        num_bins=bins,
        plots_dir=plots_dir,
        verbose=_keras_verbosity(),
    )
    click.echo()
    click.echo(f"{summary['method']} on {summary['dataset']} ({split} split), {bins}-bin ECE:")
    click.echo(experiments.format_table(experiments.summary_rows(summary, each_shift)))
    for path in summary.get("plots", []):
        click.echo(f"Wrote {path}")


@cli.command()
@_run_option
@click.option("--split", type=click.Choice(_SPLITS), default="test", show_default=True)
@click.option(
    "--shift", default=None, metavar="NAME:SEVERITY", help="Score a corrupted copy of the split."
)
@click.option(
    "--eps-max",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Largest attack radius (default: the dataset's).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Attack steps = radii tried.",
)
@click.option("--norm", type=click.Choice(choices.NORMS), default="inf", show_default=True)
@click.option(
    "--loss",
    type=click.Choice(choices.ATTACK_LOSSES),
    default="margin",
    show_default=True,
    help="Loss each attack step ascends.",
)
@click.option(
    "--candidates",
    type=click.IntRange(min=1),
    default=None,
    help="Margin attack: head for the nearest of this many largest other logits "
    "(1: the runner-up; default 3, or 1 with --loss cross_entropy).",
)
@click.option(
    "--bins",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Equal-size robustness bins.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write accuracy/confidence per bin as PNG.",
)
@quiet_tensorflow.needs_tensorflow
def robustness(run_dir, split, shift, eps_max, steps, norm, loss, candidates, bins, plot):
    """Measure each example's adversarial robustness (one growing-radius
    attack) and show calibration per robustness bin. Writes the table as
    JSON into the run directory."""
    from aradals_tf import experiments

    summary = experiments.robustness_run(
        run_dir,
        split=split,
        shift=shift,
        eps_max=eps_max,
        steps=steps,
        num_bins=bins,
        norm=norm,
        loss=loss,
        candidates=candidates,
        plot=plot,
        verbose=_keras_verbosity(),
    )
    click.echo()
    click.echo(
        f"{summary['method']} on {summary['dataset']} {split}"
        f"{f' ({shift})' if shift else ''}: accuracy {100 * summary['accuracy']:.2f} %, "
        f"ECE {100 * summary['ece']:.2f} %, never flipped within eps_max: "
        f"{100 * summary['never_flipped']:.1f} %"
    )
    click.echo("By adversarial robustness (bin 0 = least robust):")
    click.echo(experiments.format_bin_table(summary["by_robustness"], "radius"))
    click.echo("By confidence, for contrast:")
    click.echo(experiments.format_bin_table(summary["by_confidence"], "confidence"))
    click.echo(f"Wrote {summary['json']}")
    if plot:
        click.echo(f"Wrote {summary['plot']}")


@cli.command()
@click.argument("runs", nargs=-1, type=click.Path())
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Run the comparison study into this directory (resumable).",
)
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option(
    "--methods",
    default="vanilla,label-smoothing,ar-adals",
    show_default=True,
    help="Comma-separated methods ("
    + ", ".join(config_lib.METHODS)
    + "); LABEL=METHOD adds a variant (e.g. independent=ar-adals).",
)
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds of the final runs.")
@click.option(
    "--select-seeds",
    default=None,
    help="Seeds used to select hyper-parameters (default: the first seed).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--grid",
    "grids",
    multiple=True,
    metavar="METHOD.PARAM=V1,V2",
    help="Candidate values, chosen on validation (repeatable).",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="[METHOD.]PARAM=VALUE",
    help="Fixed setting for one or all methods (repeatable).",
)
@click.option(
    "--shift",
    "shifts",
    multiple=True,
    default=("all",),
    show_default=True,
    metavar="all|NAME:SEVERITY",
)
@click.option(
    "--select-on",
    type=click.Choice(config_lib.SELECTION_CRITERIA),
    default="validation",
    show_default=True,
    help="Selection score: validation ECE, or its mean with the validation "
    "ECE under the held-out corruptions (types the test suite never uses).",
)
@quiet_tensorflow.needs_tensorflow
def compare(
    runs, out, dataset, methods, seeds, select_seeds, epochs, grids, sets, shifts, select_on
):
    """Compare methods, or tabulate evaluated runs.

    With --out: for each method, pick hyper-parameters from its --grid by
    validation ECE (never the test split), train it with every seed,
    evaluate on clean and shifted test data and print mean +- std over seeds
    (the temperature-scaled rows are the temperature-scaling baseline).
    Runs are reused when their config matches, so the study resumes after an
    interruption. With RUN arguments instead: print one table of their
    metrics.json.
    """
    from aradals_tf import experiments

    if bool(runs) == bool(out):
        raise click.UsageError(
            "Give either RUN directories to tabulate or --out DIR to run a comparison."
        )
    if runs:
        click.echo(
            experiments.format_table(experiments.tabulate_runs(runs), first_header="run [data]")
        )
        return
    method_list = experiments.parse_methods(methods)
    grid_map, override_map = experiments.parse_grids_and_sets(
        grids, sets, [label for label, _ in method_list]
    )
    seed_list = experiments.parse_seeds(seeds)
    summary = experiments.run_comparison(
        out,
        experiments.TrainConfig(dataset=dataset, epochs=epochs).validate(),
        method_list,
        seed_list,
        grids=grid_map,
        overrides=override_map,
        select_seeds=experiments.parse_seeds(select_seeds) if select_seeds else None,
        shifts=shifts,
        select_on=select_on,
    )
    click.echo()
    click.echo(
        f"{dataset}, {epochs} epochs, test split, mean ± std over seeds {seed_list}; 15-bin ECE:"
    )
    click.echo(experiments.format_comparison(summary))
    click.echo(f"Wrote {os.path.join(out, 'comparison.json')} and {summary['plot']}")


@cli.command("export")
@_run_option
@click.option(
    "--calibration",
    type=click.Choice(choices.CALIBRATIONS),
    default="temperature",
    show_default=True,
    help="temperature: T fitted on the run's validation split; none: T = 1.",
)
@click.option(
    "--name",
    default=None,
    help="Model name (TF Serving's MODEL_NAME; default: the run directory's name).",
)
@click.option(
    "--version",
    "model_version",
    type=click.IntRange(min=1),
    default=None,
    help="Version to write (default: the next free integer); never overwritten.",
)
@click.option(
    "--base-dir",
    type=click.Path(file_okay=False),
    default="saved_models",
    show_default=True,
    help="TF Serving base directory.",
)
@click.option(
    "--eps-max",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Attack budget of the robustness signature (default: the run's).",
)
@click.option(
    "--attack-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Radii tried by the robustness signature (default: the run's).",
)
@quiet_tensorflow.needs_tensorflow
def export(run_dir, calibration, name, model_version, base_dir, eps_max, attack_steps):
    """Export a run as a calibrated SavedModel for TF Serving, in
    BASE_DIR/NAME/VERSION/ (written atomically).

    Signatures: serving_default (float32 images in [0, 1]) and serving_uint8
    (uint8 images 0-255) return calibrated probabilities and confidence;
    robustness returns each input's adversarial robustness radius. Metadata
    (T, validation ECE before and after) goes to assets.extra/aradals_tf.json."""
    from aradals_tf import experiments

    config, path, meta = experiments.export_run(
        run_dir,
        base_dir,
        name=name,
        version=model_version,
        calibration=calibration,
        eps_max=eps_max,
        attack_steps=attack_steps,
    )
    click.echo(experiments.format_export(run_dir, config, path, meta))


@cli.command()
@click.option(
    "--saved-model",
    "saved_model",
    required=True,
    type=click.Path(),
    help="SavedModel version directory (saved_models/NAME/VERSION), or NAME directory "
    "for its latest version.",
)
@click.option(
    "--input",
    "inputs",
    required=True,
    multiple=True,
    type=click.Path(),
    help="Input file (repeatable): .npy (one HxWxC image or a batch; float in [0, 1] or "
    "uint8 0-255) or an image (PNG, JPEG, GIF, BMP).",
)
@click.option(
    "--signature",
    type=click.Choice(_PREDICT_SIGNATURES),
    default="serving_default",
    show_default=True,
    help="Signature to run (uint8 inputs run serving_uint8 in place of serving_default).",
)
@click.option(
    "--resize",
    is_flag=True,
    help="Resize images of another size to the model's (bilinear) instead of failing.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print TF Serving\'s REST predict response ({"predictions": [...]}).',
)
@click.option(
    "--request",
    "as_request",
    is_flag=True,
    help="Print the REST request body for these inputs instead of running the model.",
)
@quiet_tensorflow.needs_tensorflow
def predict(saved_model, inputs, signature, resize, as_json, as_request):
    """Run an exported SavedModel on input files, as TF Serving would.

    Prints a table, or with --json the REST response; --request prints the
    matching request body (POST it to
    http://HOST:8501/v1/models/NAME:predict)."""
    from aradals_tf import export as export_lib

    version_dir, name, batch, loaded = export_lib.prepare_inputs(
        saved_model, inputs, signature, resize
    )
    if as_request:
        click.echo(export_lib.dumps(export_lib.rest_request(batch, name)))
        return
    if loaded is None:
        loaded, _ = export_lib.load_saved_model(version_dir)
    outputs = export_lib.run_signature(loaded, name, batch)
    if as_json:
        click.echo(export_lib.dumps(export_lib.rest_response(outputs)))
        return
    temperature = ((export_lib.read_metadata(version_dir) or {}).get("calibration") or {}).get(
        "temperature"
    )
    click.echo(
        f"{version_dir} [{name}]" + (f", T = {temperature:.4f}" if temperature is not None else "")
    )
    click.echo(export_lib.format_predictions(outputs))


_USER_ERRORS = (ValueError, OSError, KeyError)


def main(argv=None):
    """Console-script entry point: runs the CLI with one-line errors."""
    quiet_tensorflow.configure(show_logs=bool(os.environ.get(_DEBUG)))
    try:
        code = cli.main(args=argv, prog_name="aradals-tf", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; nothing half-written was left behind.", err=True)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - user errors become one line
        if os.environ.get(_DEBUG) or not _is_user_error(error):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        click.echo(f"Error: {message}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _is_user_error(error):
    if isinstance(error, _USER_ERRORS):
        return True
    # TensorFlow's InvalidArgumentError (e.g. a graph assertion on bad data).
    return type(error).__name__ == "InvalidArgumentError"


if __name__ == "__main__":
    main()
