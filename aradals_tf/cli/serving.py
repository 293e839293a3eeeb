"""`export` and `predict`: a run as a TF Serving SavedModel, and running one."""

import click

from aradals_tf import choices
from aradals_tf import quiet_tensorflow
from aradals_tf.cli.group import PREDICT_SIGNATURES
from aradals_tf.cli.group import cli
from aradals_tf.cli.group import resolve_run
from aradals_tf.cli.group import run_or_model_options


@cli.command("export")
@run_or_model_options
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
def export(calibration, name, model_version, base_dir, eps_max, attack_steps, **source):
    """Export a run as a calibrated SavedModel for TF Serving, in
    BASE_DIR/NAME/VERSION/ (written atomically).

    Signatures: serving_default (float32 images in [0, 1]) and serving_uint8
    (uint8 images 0-255) return calibrated probabilities and confidence;
    robustness returns each input's adversarial robustness radius. Metadata
    (T, validation ECE before and after, where the model and data came
    from) goes to assets.extra/aradals_tf.json. --model PATH --data DATA
    exports a classifier of your own the same way."""
    from aradals_tf import experiments

    run_dir = resolve_run(**source)
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
    type=click.Choice(PREDICT_SIGNATURES),
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
