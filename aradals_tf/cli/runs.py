"""`train`, `evaluate` and `robustness`: one run directory each."""

import click

from aradals_tf import choices
from aradals_tf import quiet_tensorflow
from aradals_tf.cli.group import SPLITS
from aradals_tf.cli.group import cli
from aradals_tf.cli.group import config_options
from aradals_tf.cli.group import keras_verbosity
from aradals_tf.cli.group import resolve_run
from aradals_tf.cli.group import run_or_model_options


@cli.command()
@config_options
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
    experiments.train_run(config, out, overwrite=overwrite, verbose=keras_verbosity())
    if experiments.is_chief(config):
        click.echo(f"Saved run to {out}")
    else:
        click.echo(f"Worker done; the chief saved the run to {out}")


@cli.command()
@run_or_model_options
@click.option(
    "--shift",
    "shifts",
    multiple=True,
    metavar="all|NAME:SEVERITY",
    help="Also evaluate on corrupted copies of the split (repeatable); "
    "'all' is every test-suite corruption at severities 1-5.",
)
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True)
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
    "--report",
    is_flag=True,
    help="Also write report.html (self-contained: tables, reliability diagrams, ECE by "
    "severity, calibration by robustness, eps per stratum) and report.md into the run.",
)
@click.option(
    "--each-shift/--shift-mean-only",
    default=False,
    show_default=True,
    help="Print one row per shift, or only their mean.",
)
@quiet_tensorflow.needs_tensorflow
def evaluate(shifts, split, bins, plots_dir, report, each_shift, **source):
    """Evaluate a run, or a classifier of your own (--model with --data):
    accuracy, ECE, adaptive ECE, MCE, NLL and Brier, raw and
    temperature-scaled (T fitted on the validation split). Writes
    metrics.json into the run directory."""
    from aradals_tf import experiments

    run_dir = resolve_run(**source)
    summary = experiments.evaluate_run(
        run_dir,
        shifts=shifts,
        split=split,
        num_bins=bins,
        plots_dir=plots_dir,
        verbose=keras_verbosity(),
    )
    click.echo()
    click.echo(f"{summary['method']} on {summary['dataset']} ({split} split), {bins}-bin ECE:")
    click.echo(experiments.format_table(experiments.summary_rows(summary, each_shift)))
    for path in summary.get("plots", []):
        click.echo(f"Wrote {path}")
    if report:
        from aradals_tf.experiments import reporting

        for path in reporting.evaluation_report(run_dir, summary, num_bins=bins):
            click.echo(f"Wrote {path}")


@cli.command()
@run_or_model_options
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True)
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
def robustness(split, shift, eps_max, steps, norm, loss, candidates, bins, plot, **source):
    """Measure each example's adversarial robustness (one growing-radius
    attack) and show calibration per robustness bin, for a run or a
    classifier of your own (--model with --data). Writes the table as JSON
    into the run directory."""
    from aradals_tf import experiments

    run_dir = resolve_run(**source)
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
        verbose=keras_verbosity(),
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
