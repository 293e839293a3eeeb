"""The method comparison: choose each method's settings on validation, then test.

Runs live in `out/<method>/<settings>/seed<s>` and are reused when their
config matches, so an interrupted comparison resumes where it stopped.
"""

import dataclasses
import itertools
import os

import numpy as np

from aradals_tf import atomic
from aradals_tf import corruptions
from aradals_tf import plots
from aradals_tf.experiments import evaluate
from aradals_tf.experiments import tables
from aradals_tf.experiments import train
from aradals_tf.experiments.config import SELECTION_CRITERIA
from aradals_tf.experiments.config import TrainConfig


def _tag(settings):
    if not settings:
        return "default"
    return "_".join(f"{key}{value}" for key, value in sorted(settings.items()))


def _same_config(run_dir, config):
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        return False
    saved = TrainConfig.from_dict(atomic.read_json(path))
    return dataclasses.asdict(saved) == dataclasses.asdict(config)


def _ensure_run(config, run_dir, shifts, verbose):
    """Trains and evaluates `run_dir` unless a matching result exists."""
    if not _same_config(run_dir, config):
        if verbose:
            print(f"--- training {run_dir}")
        train.train_run(
            config, run_dir, overwrite=os.path.exists(run_dir), verbose=2 if verbose else 0
        )
    metrics_path = os.path.join(run_dir, "metrics.json")
    wanted = evaluate.shift_names(shifts)
    if os.path.isfile(metrics_path):
        summary = atomic.read_json(metrics_path)
        if set(wanted) <= set(summary["results"]) - {"clean"}:
            return summary
    if verbose:
        print(f"--- evaluating {run_dir}")
    return evaluate.evaluate_run(run_dir, shifts=shifts, verbose=0)


def _mean_std(summaries, path):
    values = []
    for summary in summaries:
        node = summary
        for key in path:
            node = node[key]
        values.append(node)
    return float(np.mean(values)), float(np.std(values))


def _by_corruption(summaries):
    """Raw ECE and accuracy per corruption type: mean over severities, then
    mean and std over the runs."""
    names = sorted(
        {key.partition(":")[0] for key in summaries[0]["results"] if key != "clean"},
        key=lambda name: corruptions.ALL_CORRUPTIONS.index(name),
    )
    table = {}
    for name in names:
        table[name] = {}
        for metric in ("ece", "accuracy"):
            per_run = [
                np.mean(
                    [
                        summary["results"][key]["raw"][metric]
                        for key in summary["results"]
                        if key.partition(":")[0] == name
                    ]
                )
                for summary in summaries
            ]
            table[name][metric] = (float(np.mean(per_run)), float(np.std(per_run)))
    return table


def _candidates(grid):
    """Every combination of a method's grid, as a list of settings dicts."""
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _score_candidate(label, settings, config_for, out, select_seeds, select_on, verbose):
    """Trains one candidate on the selection seeds; returns its selection entry."""
    clean, held_out = [], []
    for seed in select_seeds:
        run_dir = os.path.join(out, label, _tag(settings), f"seed{seed}")
        summary = _ensure_run(config_for(settings, seed), run_dir, (), verbose)
        clean.append(summary["validation"]["raw"]["ece"])
        if select_on == "validation+held-out":
            held_out.append(evaluate.held_out_validation(run_dir)["shift_mean"]["ece"])
    entry = {"settings": settings, "validation_ece": float(np.mean(clean))}
    entry["score"] = entry["validation_ece"]
    if held_out:
        entry["held_out_validation_ece"] = float(np.mean(held_out))
        entry["score"] = (entry["validation_ece"] + entry["held_out_validation_ece"]) / 2
    if verbose:
        extra = (
            f", held-out shifts {100 * entry['held_out_validation_ece']:.2f} %" if held_out else ""
        )
        print(
            f"{label} {_tag(settings)}: validation ECE {100 * entry['validation_ece']:.2f} %{extra}"
        )
    return entry


def _method_row(method, settings, selection, seeds, summaries):
    """A method's comparison row: mean and std over seeds of every metric."""
    row = {
        "method": method,
        "settings": settings,
        "selection": selection,
        "seeds": list(seeds),
        "runs": [summary["run"] for summary in summaries],
    }
    for kind in ("raw", "temperature"):
        for condition, path in (("clean", ("results", "clean")), ("shift_mean", ("shift_mean",))):
            if condition == "shift_mean" and "shift_mean" not in summaries[0]:
                continue
            row[f"{condition}_{kind}"] = {
                key: _mean_std(summaries, (*path, kind, key))
                for key in summaries[0]["results"]["clean"][kind]
            }
    row["temperature"] = _mean_std(summaries, ("temperature",))
    row["by_corruption"] = _by_corruption(summaries)
    return row


def run_comparison(
    out,
    base,
    methods,
    seeds,
    grids=None,
    overrides=None,
    select_seeds=None,
    shifts=("all",),
    select_on="validation",
    verbose=1,
):
    """The method comparison: select hyper-parameters on validation, then test.

    For each method, every combination in its grid is trained on
    `select_seeds` and evaluated on the validation split; the combination
    with the lowest selection score is then trained with every seed and
    evaluated on the test split, clean and shifted. The score is the mean
    validation ECE (raw, 15 bins) with `select_on="validation"`; with
    `"validation+held-out"` it is the mean of that and of the validation
    split's ECE under the held-out corruptions (types that no test suite
    contains, averaged over severities 1-5). Runs live
    in `out/<method>/<settings>/seed<s>` and are reused when their config
    matches, so an interrupted comparison resumes where it stopped.

    Args:
        out: root directory of the comparison.
        base: the `TrainConfig` shared by all runs (dataset, epochs, ...).
        methods: method names, or `(label, method)` pairs for variants.
        seeds: seeds of the final runs.
        grids: `{method: {param: [values]}}` searched on validation.
        overrides: `{method or None: {param: value}}` fixed settings.
        select_seeds: seeds used for selection (default: the first seed).
        shifts: `--shift` values for the final evaluation.
        select_on: `"validation"` or `"validation+held-out"`.
        verbose: print progress.

    Returns:
        The summary written to `out/comparison.json`.
    """
    if select_on not in SELECTION_CRITERIA:
        raise ValueError(
            f"Unknown selection criterion {select_on!r}; "
            f"use one of: {', '.join(SELECTION_CRITERIA)}."
        )
    if "held-out" in shifts:
        raise ValueError(
            "The held-out corruptions are for validation only; evaluate the test split on "
            "'all' or named shifts."
        )
    grids = grids or {}
    overrides = overrides or {}
    select_seeds = list(select_seeds or seeds[:1])
    evaluate.shift_names(shifts)  # fail early on bad names
    rows = {}
    for label, method in [(m, m) if isinstance(m, str) else tuple(m) for m in methods]:
        fixed = {**overrides.get(None, {}), **overrides.get(label, {})}

        def config_for(settings, seed, method=method, fixed=fixed):
            values = {
                **dataclasses.asdict(base),
                **fixed,
                **settings,
                "method": method,
                "seed": seed,
            }
            return TrainConfig.from_dict(values).validate()

        candidates = _candidates(grids.get(label, {}))
        selection = []
        if len(candidates) > 1:
            selection = [
                _score_candidate(label, settings, config_for, out, select_seeds, select_on, verbose)
                for settings in candidates
            ]
            chosen = min(selection, key=lambda item: item["score"])["settings"]
        else:
            chosen = candidates[0]
        summaries = [
            _ensure_run(
                config_for(chosen, seed),
                os.path.join(out, label, _tag(chosen), f"seed{seed}"),
                shifts,
                verbose,
            )
            for seed in seeds
        ]
        rows[label] = _method_row(method, {**fixed, **chosen}, selection, seeds, summaries)
    summary = {
        "dataset": base.dataset,
        "epochs": base.epochs,
        "seeds": list(seeds),
        "select_seeds": select_seeds,
        "select_on": select_on,
        "shifts": list(shifts),
        "methods": rows,
    }
    atomic.write_json(os.path.join(out, "comparison.json"), summary)
    summary["plot"] = plots.comparison(summary, os.path.join(out, "comparison.png"))
    return summary


def tabulate_runs(run_dirs):
    """Table rows `[(label, calibration, metrics)]` of evaluated run directories
    (clean and shift-mean rows of each run's `metrics.json`)."""
    rows = []
    for run_dir in run_dirs:
        path = os.path.join(run_dir, "metrics.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found; run `aradals-tf evaluate --run {run_dir}` first."
            )
        name = os.path.basename(os.path.normpath(run_dir))
        for condition, kind, values in tables.summary_rows(atomic.read_json(path), False):
            rows.append((f"{name} [{condition}]", kind, values))
    return rows
