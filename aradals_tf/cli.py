"""The `aradals-tf` command line.

Commands: `train`, `evaluate`, `robustness`, `compare`, `export`, `predict`.
TensorFlow is imported only inside commands, so `aradals-tf --help` answers
at once.

Bad input (unknown names, missing or corrupt run directories, an existing
`--out`) ends with a one-line `Error: ...` and exit status 1, never a
traceback; set `ARADALS_TF_DEBUG=1` to see the traceback anyway.
"""

import os
import sys

import click

from aradals_tf.version import __version__

# Imported by name from the click callbacks; kept here so that `--help`
# lists the choices without importing TensorFlow.
METHOD_CHOICES = ("vanilla", "label-smoothing", "focal", "mixup", "ar-adals")
STRATEGY_CHOICES = ("default", "mirrored", "multiworker")
EMBEDDED_DATASETS = ("mnist5k", "digits")
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped")


def _keras_verbosity():
    """A live progress bar on a terminal, one line per epoch in logs."""
    return 1 if sys.stdout.isatty() else 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aradals-tf")
def cli():
    """Calibrated Keras classifiers with AR-AdaLS (adversarial-robustness-based
    adaptive label smoothing).

    Datasets: mnist5k and digits ship with the package's dependencies and work
    offline; mnist, fashion_mnist, cifar10, cifar100, svhn_cropped and
    cifar10_corrupted/<corruption>_<severity> come from TensorFlow Datasets
    (--data-dir).
    """


@cli.command()
@click.option(
    "--dataset",
    default="mnist5k",
    show_default=True,
    help="Dataset name: " + ", ".join(EMBEDDED_DATASETS + TFDS_DATASETS) + ".",
)
@click.option(
    "--method",
    type=click.Choice(METHOD_CHOICES),
    default="vanilla",
    show_default=True,
    help="Training method.",
)
@click.option(
    "--label-smoothing",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="eps of uniform label smoothing (--method label-smoothing).",
)
@click.option("--focal-gamma", type=click.FloatRange(min=0), default=3.0, show_default=True, help="gamma of --method focal.")
@click.option("--mixup-alpha", type=click.FloatRange(min=0, min_open=True), default=0.2, show_default=True, help="Beta(alpha, alpha) of --method mixup.")
@click.option("--num-strata", type=click.IntRange(min=1), default=10, show_default=True, help="AR-AdaLS: robustness strata.")
@click.option("--eps-max", type=click.FloatRange(min=0, min_open=True), default=None, help="AR-AdaLS: attack radius (default: the dataset's, 0.3 for MNIST-like data).")
@click.option("--attack-steps", type=click.IntRange(min=1), default=10, show_default=True, help="AR-AdaLS: attack steps = robustness levels.")
@click.option("--alpha", type=click.FloatRange(min=0), default=1.0, show_default=True, help="AR-AdaLS: step of the eps update.")
@click.option("--eps-init", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="AR-AdaLS: initial eps of every stratum.")
@click.option("--eps-cap", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="AR-AdaLS: largest eps.")
@click.option(
    "--eps-update",
    type=click.Choice(["additive", "relative"]),
    default="additive",
    show_default=True,
    help="AR-AdaLS: step of the eps update, 'additive' alpha (conf - acc) of "
    "the method, or 'relative': that gap over the stratum's error rate, so "
    "strata that are nearly always right return to hard labels.",
)
@click.option(
    "--robustness-estimate",
    type=click.Choice(["attack", "first_order"]),
    default="attack",
    show_default=True,
    help="AR-AdaLS: 'attack' runs the growing-radius attack on every batch; "
    "'first_order' is the cheaper mode (margin / input-gradient norm: about 1.8x "
    "a vanilla epoch instead of 8-11x, measured on mnist5k).",
)
@click.option(
    "--first-order-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="AR-AdaLS first_order mode: factor on the first-order radius before it "
    "is mapped onto the attack's levels (the linearisation underestimates the "
    "attack's radius; at.fit_first_order_scale measures the factor on "
    "validation data: 1.3 on mnist5k).",
)
@click.option("--attack-loss", type=click.Choice(["margin", "cross_entropy"]), default="margin", show_default=True, help="AR-AdaLS: loss each attack step ascends.")
@click.option(
    "--smoothing-data",
    type=click.Choice(["clean", "clean+held-out"]),
    default="clean",
    show_default=True,
    help="AR-AdaLS: data the eps update measures calibration on: the validation "
    "split, or it plus a copy carrying the held-out corruptions (defocus blur, "
    "fog; never in the test suite).",
)
@click.option("--strategy", type=click.Choice(STRATEGY_CHOICES), default="default", show_default=True, help="tf.distribute strategy.")
@click.option("--ensemble-size", type=click.IntRange(min=1), default=1, show_default=True, help="Train M members (different seeds) averaged by a LogitEnsemble.")
@click.option(
    "--ensemble-mode",
    type=click.Choice(["joint", "independent"]),
    default="joint",
    show_default=True,
    help="AR-AdaLS ensembles: 'joint' adapts eps from the ensemble's averaged "
    "prediction and robustness (members side by side); 'independent' trains "
    "members one by one, each adapting on its own.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Adam learning rate.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights, shuffling and data split.")
@click.option("--backbone", default=None, help="small_cnn, mlp, resnet20 or wide_resnet_28_10 (default: by image size).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="tfds data directory.")
@click.option("--out", required=True, type=click.Path(), help="Run directory to create, e.g. runs/vanilla.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
def train(**options):
    """Train a model and save it as a run directory (model.keras,
    config.json, history.json; AR-AdaLS adds eps_per_stratum.png).

    Methods: vanilla (hard labels), label-smoothing (uniform eps), focal,
    mixup, ar-adals (adaptive per-robustness-stratum smoothing). An
    interrupted run resumes from its last finished epoch when the same
    command is run again."""
    from aradals_tf import experiments

    out = options.pop("out")
    overwrite = options.pop("overwrite")
    config = experiments.TrainConfig(**options).validate()
    experiments.train_run(config, out, overwrite=overwrite, verbose=_keras_verbosity())
    click.echo(f"Saved run to {out}")


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run directory from `aradals-tf train`.")
@click.option(
    "--shift",
    "shifts",
    multiple=True,
    metavar="all|NAME:SEVERITY",
    help="Also evaluate on corrupted copies of the split (repeatable); "
    "'all' is every corruption at severities 1-5.",
)
@click.option("--split", type=click.Choice(["test", "validation"]), default="test", show_default=True)
@click.option("--bins", type=click.IntRange(min=1), default=15, show_default=True, help="Bins of ECE and MCE.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), default=None, help="Write reliability diagrams here.")
@click.option("--each-shift/--shift-mean-only", default=False, show_default=True, help="Print one row per shift, or only their mean.")
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
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run directory from `aradals-tf train`.")
@click.option("--split", type=click.Choice(["test", "validation"]), default="test", show_default=True)
@click.option("--shift", default=None, metavar="NAME:SEVERITY", help="Score a corrupted copy of the split.")
@click.option("--eps-max", type=click.FloatRange(min=0, min_open=True), default=None, help="Largest attack radius (default: the dataset's, 0.3 for MNIST-like data).")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True, help="Attack steps = radii tried.")
@click.option("--norm", type=click.Choice(["inf", "2"]), default="inf", show_default=True)
@click.option("--loss", type=click.Choice(["margin", "cross_entropy"]), default="margin", show_default=True, help="Loss each attack step ascends.")
@click.option("--bins", type=click.IntRange(min=1), default=10, show_default=True, help="Equal-size robustness bins.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write accuracy/confidence per bin as PNG.")
def robustness(run_dir, split, shift, eps_max, steps, norm, loss, bins, plot):
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


def _int_list(ctx, param, value):
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers; got {value!r}") from None


@cli.command()
@click.argument("runs", nargs=-1, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run the comparison study into this directory (resumable).")
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--methods", default="vanilla,label-smoothing,ar-adals", show_default=True, help="Comma-separated methods; LABEL=METHOD adds a variant (e.g. independent=ar-adals).")
@click.option("--seeds", default="0,1,2", show_default=True, callback=_int_list, help="Seeds of the final runs.")
@click.option("--select-seeds", default=None, help="Seeds used to select hyper-parameters (default: the first seed).")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--grid", "grids", multiple=True, metavar="METHOD.PARAM=V1,V2", help="Candidate values, chosen by validation ECE (repeatable).")
@click.option("--set", "sets", multiple=True, metavar="[METHOD.]PARAM=VALUE", help="Fixed setting for one or all methods (repeatable).")
@click.option("--shift", "shifts", multiple=True, default=("all",), show_default=True, metavar="all|NAME:SEVERITY")
@click.option(
    "--select-on",
    type=click.Choice(["validation", "validation+held-out"]),
    default="validation",
    show_default=True,
    help="Selection score: validation ECE, or its mean with the validation "
    "ECE under the held-out corruptions (types the test suite never uses).",
)
def compare(runs, out, dataset, methods, seeds, select_seeds, epochs, grids, sets, shifts, select_on):
    """Compare methods, or tabulate evaluated runs.

    With --out: for each method, pick hyper-parameters from its --grid by
    validation ECE (never the test split), train it with every seed,
    evaluate on clean and shifted test data and print mean +- std over seeds
    (the temperature-scaled rows are the temperature-scaling baseline).
    Runs are reused when their config matches, so the study resumes after an
    interruption. With RUN arguments instead: print one table of their
    metrics.json.
    """
    from aradals_tf import atomic
    from aradals_tf import experiments

    if runs and out:
        raise click.UsageError("Give either RUN directories to tabulate or --out to run a comparison.")
    if not runs and not out:
        raise click.UsageError("Give RUN directories to tabulate, or --out DIR to run a comparison.")
    if runs:
        rows = []
        for run_dir in runs:
            path = os.path.join(run_dir, "metrics.json")
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{path} not found; run `aradals-tf evaluate --run {run_dir}` first."
                )
            summary = atomic.read_json(path)
            name = os.path.basename(os.path.normpath(run_dir))
            for condition, kind, values in experiments.summary_rows(summary, False):
                rows.append((f"{name} [{condition}]", kind, values))
        click.echo(experiments.format_table(rows, first_header="run [data]"))
        return
    method_list = experiments.parse_methods(methods)
    labels = [label for label, _ in method_list]
    grid_map, override_map = {}, {}
    for text in grids:
        method, param, values = experiments.parse_override(text, labels)
        if method is None:
            raise ValueError(f"--grid needs METHOD.PARAM=...; got {text!r}.")
        grid_map.setdefault(method, {})[param] = values
    for text in sets:
        method, param, values = experiments.parse_override(text, labels)
        if len(values) != 1:
            raise ValueError(f"--set takes one value; use --grid for several ({text!r}).")
        override_map.setdefault(method, {})[param] = values[0]
    base = experiments.TrainConfig(dataset=dataset, epochs=epochs).validate()
    summary = experiments.run_comparison(
        out,
        base,
        method_list,
        seeds,
        grids=grid_map,
        overrides=override_map,
        select_seeds=_int_list(None, None, select_seeds) if select_seeds else None,
        shifts=shifts,
        select_on=select_on,
    )
    click.echo()
    click.echo(f"{dataset}, {epochs} epochs, test split, mean ± std over seeds {seeds}; 15-bin ECE:")
    click.echo(experiments.format_comparison(summary))
    click.echo(f"Wrote {os.path.join(out, 'comparison.json')} and {summary['plot']}")


@cli.command("export")
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run directory from `aradals-tf train`.")
@click.option(
    "--calibration",
    type=click.Choice(["temperature", "none"]),
    default="temperature",
    show_default=True,
    help="temperature: T fitted on the run's validation split; none: T = 1.",
)
@click.option("--name", default=None, help="Model name (TF Serving's MODEL_NAME; default: the run directory's name).")
@click.option("--version", "model_version", type=click.IntRange(min=1), default=None, help="Version to write (default: the next free integer); never overwritten.")
@click.option("--base-dir", type=click.Path(file_okay=False), default="saved_models", show_default=True, help="TF Serving base directory.")
@click.option("--eps-max", type=click.FloatRange(min=0, min_open=True), default=None, help="Attack budget of the robustness signature (default: the run's, i.e. the dataset's).")
@click.option("--attack-steps", type=click.IntRange(min=1), default=None, help="Radii tried by the robustness signature (default: the run's, 10).")
def export(run_dir, calibration, name, model_version, base_dir, eps_max, attack_steps):
    """Export a run as a calibrated SavedModel for TF Serving, in
    BASE_DIR/NAME/VERSION/ (written atomically).

    Signatures: serving_default (float32 images in [0, 1]) and serving_uint8
    (uint8 images 0-255) return probabilities, confidence, predicted_class,
    calibrated logits and predicted_label; robustness returns each input's
    adversarial robustness radius. Metadata (T, validation ECE before and
    after) goes to assets.extra/aradals_tf.json."""
    import re

    from aradals_tf import data
    from aradals_tf import experiments
    from aradals_tf import export as export_lib

    config, model = experiments.load_run(run_dir)
    info = data.dataset_info(config.dataset)
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(os.path.normpath(os.path.abspath(run_dir)))).lstrip(".-") or "model"
    validation = data.load_dataset(config.dataset, "validation", config.seed, data_dir=config.data_dir)
    logits, labels = experiments.predict_logits(model, validation)
    path = export_lib.export_saved_model(
        model,
        base_dir,
        name=name,
        version=model_version,
        calibration=calibration,
        validation_data={"logits": logits, "labels": labels},
        class_names=info.class_names,
        training_method=config.method,
        input_shape=info.image_shape,
        eps_max=eps_max or config.eps_max or info.eps_max,
        attack_steps=attack_steps or config.attack_steps,
        metadata={"run": os.path.abspath(run_dir), "dataset": config.dataset, "seed": config.seed},
    )
    meta = export_lib.read_metadata(path)
    cal, attack = meta["calibration"], meta["robustness"]
    click.echo(f"Exported {run_dir} ({config.method} on {config.dataset}) to {path}")
    click.echo(
        f"  calibration: {calibration}, T = {cal['temperature']:.4f}"
        + (f" (fitted on the validation split, {cal['validation']['examples']} examples)" if calibration == "temperature" else "")
    )
    summary = cal["validation"]
    click.echo(
        f"  validation ECE {100 * summary['ece_before']:.2f} % -> {100 * summary['ece_after']:.2f} %, "
        f"NLL {summary['nll_before']:.4f} -> {summary['nll_after']:.4f}"
    )
    click.echo(
        "  signatures: serving_default (float32 images in [0, 1]), serving_uint8 (uint8 0-255), "
        f"robustness (L-{attack['norm']} eps_max {attack['eps_max']:.4g}, {attack['steps']} steps)"
    )
    model_dir = os.path.abspath(os.path.dirname(path))
    click.echo(
        f"Serve: docker run -p 8501:8501 -p 8500:8500 -v {model_dir}:/models/{name} "
        f"-e MODEL_NAME={name} tensorflow/serving"
    )


@cli.command()
@click.option("--saved-model", "saved_model", required=True, type=click.Path(), help="SavedModel version directory (saved_models/NAME/VERSION), or NAME directory for its latest version.")
@click.option("--input", "inputs", required=True, multiple=True, type=click.Path(), help="Input file (repeatable): .npy (one HxWxC image or a batch; float in [0, 1] or uint8 0-255) or an image (PNG, JPEG, GIF, BMP).")
@click.option("--signature", type=click.Choice(["serving_default", "robustness"]), default="serving_default", show_default=True, help="Signature to run (uint8 inputs run serving_uint8 in place of serving_default).")
@click.option("--resize", is_flag=True, help="Resize images of another size to the model's (bilinear) instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print TF Serving's REST predict response ({\"predictions\": [...]}).")
@click.option("--request", "as_request", is_flag=True, help="Print the REST request body for these inputs instead of running the model.")
def predict(saved_model, inputs, signature, resize, as_json, as_request):
    """Run an exported SavedModel on input files, as TF Serving would.

    Prints a table, or with --json the REST response; --request prints the
    matching request body (POST it to
    http://HOST:8501/v1/models/NAME:predict)."""
    from aradals_tf import export as export_lib

    version_dir, name, batch, loaded = export_lib.prepare_inputs(saved_model, inputs, signature, resize)
    if as_request:
        click.echo(export_lib.dumps(export_lib.rest_request(batch, name)))
        return
    if loaded is None:
        loaded, _ = export_lib.load_saved_model(version_dir)
    outputs = export_lib.run_signature(loaded, name, batch)
    if as_json:
        click.echo(export_lib.dumps(export_lib.rest_response(outputs)))
        return
    meta = export_lib.read_metadata(version_dir) or {}
    temperature = (meta.get("calibration") or {}).get("temperature")
    click.echo(f"{version_dir} [{name}]" + (f", T = {temperature:.4f}" if temperature is not None else ""))
    columns = ["predicted_class", "predicted_label", "confidence", "radius", "flipped"]
    columns = [c for c in columns if c in outputs]
    click.echo("  ".join(["input"] + [f"{c:>15}" for c in columns]))
    for row in range(len(batch)):
        cells = []
        for column in columns:
            value = outputs[column][row]
            if isinstance(value, bytes):
                value = value.decode("utf-8", errors="replace")
            elif column in ("confidence", "radius"):
                value = f"{float(value):.4f}" if not (column == "radius" and value < 0) else "never"
            cells.append(f"{str(value):>15}")
        click.echo("  ".join([f"{row:>5}"] + cells))


_USER_ERRORS = (ValueError, OSError, KeyError)


def main(argv=None):
    """Console-script entry point: runs the CLI with one-line errors."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
        if os.environ.get("ARADALS_TF_DEBUG") or not _is_user_error(error):
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
