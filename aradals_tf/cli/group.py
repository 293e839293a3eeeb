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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aradals-tf")
def cli():
    """Calibrated Keras classifiers with AR-AdaLS (adversarial-robustness-based
    adaptive label smoothing).

    Datasets: mnist5k and digits ship with the package's dependencies and work
    offline; the TensorFlow Datasets names (mnist, cifar10, cifar10_corrupted/...)
    need prepared data (--data-dir).
    """
