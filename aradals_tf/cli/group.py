"""The `aradals-tf` command group and what its commands share: options
generated from `TrainConfig`, the run-directory option, progress verbosity."""

import dataclasses
import sys
import types

import click

from aradals_tf.experiments import config as config_lib
from aradals_tf.version import __version__

DEBUG = "ARADALS_TF_DEBUG"
SPLITS = ("test", "validation")
PREDICT_SIGNATURES = ("serving_default", "robustness")


def keras_verbosity():
    """A live progress bar on a terminal, one line per epoch in logs."""
    return 1 if sys.stdout.isatty() else 2


def config_options(command):
    """Adds one option per `TrainConfig` field, typed, with its help and choices."""
    hints = {field.name: field.type for field in dataclasses.fields(config_lib.TrainConfig)}
    for field in reversed(dataclasses.fields(config_lib.TrainConfig)):
        kind = hints[field.name]
        if isinstance(kind, types.UnionType):  # `float | None`, `int | str` and the like
            args = [arg for arg in kind.__args__ if arg is not type(None)]
            kind = str if str in args else args[0]
        valid = field.metadata.get("choices")
        command = click.option(
            "--" + field.name.replace("_", "-"),
            *field.metadata.get("aliases", ()),
            field.name,
            type=click.Choice(valid) if valid else kind,
            default=field.default,
            show_default=field.default is not None,
            help=field.metadata["help"],
        )(command)
    return command


run_option = click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(),
    help="Run directory from `aradals-tf train`.",
)


def run_or_model_options(command):
    """`--run DIR`, or a classifier of the user's: `--model PATH --data DATA`."""
    options = [
        click.option(
            "--run",
            "run_dir",
            type=click.Path(),
            default=None,
            help="Run directory from `aradals-tf train`.",
        ),
        click.option(
            "--model",
            "model_path",
            type=click.Path(),
            default=None,
            help="Instead of --run: a classifier of your own, a .keras file or a SavedModel "
            "directory (with --data); its logits are taken before a final softmax.",
        ),
        click.option(
            "--data",
            "data",
            default=None,
            help="With --model: the data (a folder of class subfolders, a .npz of x and y, "
            "tfds:NAME, or a registry name); the temperature is fitted on its validation split.",
        ),
        click.option("--image-size", default=None, help="With --model: resize images to HxW."),
        click.option("--data-dir", default=None, help="With --model: tfds data directory."),
        click.option(
            "--unsafe-load",
            is_flag=True,
            help="With --model: load a .keras file that holds code (e.g. a Lambda layer); "
            "this runs the file's code, so only for files you trust.",
        ),
        click.option(
            "--model-run",
            "model_run_dir",
            type=click.Path(),
            default=None,
            help="With --model: the run directory to write (default runs/MODEL-on-DATA).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def resolve_run(run_dir, model_path, data, image_size, data_dir, unsafe_load, model_run_dir):
    """The run directory a command works on: `--run`, or one made for `--model`."""
    if (run_dir is None) == (model_path is None):
        raise click.UsageError("Give either --run DIR or --model PATH --data DATA.")
    if run_dir is not None:
        if data is not None:
            raise click.UsageError("--data goes with --model; a run knows its data.")
        return run_dir
    if data is None:
        raise click.UsageError("--model needs --data: the data to evaluate it on.")
    from aradals_tf.experiments import external

    out = model_run_dir or external.default_run_dir(model_path, data)
    _, note = external.model_run(
        model_path, data, out, image_size=image_size, data_dir=data_dir, unsafe=unsafe_load
    )
    click.echo(f"{model_path}: {note}; run directory {out}")
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aradals-tf")
def cli():
    """Calibrated Keras classifiers with AR-AdaLS (adversarial-robustness-based
    adaptive label smoothing).

    Datasets: mnist5k and digits ship with the package's dependencies and work
    offline; the TensorFlow Datasets names (mnist, cifar10, cifar10_corrupted/...)
    need prepared data (--data-dir).
    """
