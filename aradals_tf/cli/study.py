"""`compare`: the method comparison, or a table of evaluated runs."""

import os

import click

from aradals_tf import quiet_tensorflow
from aradals_tf.cli.group import cli
from aradals_tf.experiments import config as config_lib


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
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=None,
    help="Cross-fit on K stratified folds of an embedded dataset: every example is "
    "tested once per seed (settings chosen on each fold's own validation split).",
)
@click.option(
    "--pair",
    "pairs",
    multiple=True,
    metavar="A:B",
    help="A difference to judge with a paired interval, e.g. ar-adals:vanilla+ts "
    "(+ts: temperature-scaled; repeatable; default: every method against vanilla).",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=100),
    default=10_000,
    show_default=True,
    help="Bootstrap resamples of the intervals (examples and seeds).",
)
@quiet_tensorflow.needs_tensorflow
def compare(
    runs,
    out,
    dataset,
    methods,
    seeds,
    select_seeds,
    epochs,
    grids,
    sets,
    shifts,
    select_on,
    folds,
    pairs,
    resamples,
):
    """Compare methods, or tabulate evaluated runs.

    With --out: for each method, pick hyper-parameters from its --grid by
    validation ECE (never the test split), train it with every seed,
    evaluate on clean and shifted test data and print mean +- std over seeds
    (the temperature-scaled rows are the temperature-scaling baseline), then
    bootstrap intervals (at 95 percent) over the test examples and paired
    differences with a verdict (better / worse / no difference). --folds K
    tests every example once. Runs are reused when their config matches, so the study
    resumes after an interruption. With RUN arguments instead: print one
    table of their metrics.json.
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
        folds=folds,
        pairs=list(pairs) or None,
        resamples=resamples,
    )
    click.echo()
    tested = f"{folds} cross-fitted folds" if folds else "test split"
    click.echo(
        f"{dataset}, {epochs} epochs, {tested}, mean ± std over the runs of seeds {seed_list}; "
        "15-bin ECE:"
    )
    click.echo(experiments.format_comparison(summary))
    click.echo(f"Wrote {os.path.join(out, 'comparison.json')} and {summary['plot']}")
