"""The method comparison: choose each method's settings on validation, then test.

Runs live in `out/<method>/<settings>/seed<s>` (with cross-fitting folds,
`out/<method>/fold<f>/<settings>/seed<s>`) and are reused when their config
matches, so an interrupted comparison resumes where it stopped.
"""

import dataclasses
import itertools
import os

import numpy as np

from aradals_tf import atomic
from aradals_tf import corruptions
from aradals_tf import intervals
from aradals_tf import plots
from aradals_tf.experiments import evaluate
from aradals_tf.experiments import evidence
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
    predictions_path = os.path.join(run_dir, "predictions_test.npz")
    if os.path.isfile(metrics_path) and os.path.isfile(predictions_path):
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
        run_dir = os.path.join(out, _tag(settings), f"seed{seed}")
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


def _choose(label, grid, config_for, out, select_seeds, select_on, verbose):
    """`(chosen settings, selection entries)`: the grid's best on validation."""
    candidates = _candidates(grid)
    if len(candidates) == 1:
        return candidates[0], []
    selection = [
        _score_candidate(label, settings, config_for, out, select_seeds, select_on, verbose)
        for settings in candidates
    ]
    return min(selection, key=lambda item: item["score"])["settings"], selection


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
    folds=None,
    pairs=None,
    resamples=intervals.DEFAULT_RESAMPLES,
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
    contains, averaged over severities 1-5).

    With `folds=K` (embedded datasets) every method is cross-fitted: for
    each fold of a stratified K-way partition (one per seed), settings are
    chosen on that fold's validation split (carved out of the other folds,
    never the test fold) and the chosen model is tested on the fold, so
    every example of the dataset is tested exactly once per seed; the
    intervals pool the folds. Every table then carries 95 % bootstrap
    intervals over the test examples (`experiments.evidence`) and, for
    `pairs`, paired intervals of the differences with a verdict.

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
        folds: K for cross-fitting, or None for the fixed test split.
        pairs: `"A:B"` differences to judge (default: every method against
            `vanilla`, raw and temperature-scaled, when it is compared).
        resamples: bootstrap resamples of the intervals.
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
    labelled = [(m, m) if isinstance(m, str) else tuple(m) for m in methods]
    pairs = list(
        evidence.default_pairs([label for label, _ in labelled]) if pairs is None else pairs
    )
    for text in pairs:  # bad pairs fail before any training
        evidence.parse_pair(text, [label for label, _ in labelled])
    fold_list = [None] if folds is None else list(range(int(folds)))
    rows, runs = {}, {}
    for label, method in labelled:
        fixed = {**overrides.get(None, {}), **overrides.get(label, {})}
        summaries, runs[label], chosen_by_fold, selections = [], [], [], []
        for fold in fold_list:

            def config_for(settings, seed, method=method, fixed=fixed, fold=fold):
                values = {
                    **dataclasses.asdict(base),
                    **fixed,
                    **settings,
                    "method": method,
                    "seed": seed,
                    "fold": fold,
                    "folds": base.folds if folds is None else int(folds),
                }
                return TrainConfig.from_dict(values).validate()

            where = (
                os.path.join(out, label)
                if fold is None
                else os.path.join(out, label, f"fold{fold}")
            )
            chosen, selection = _choose(
                label, grids.get(label, {}), config_for, where, select_seeds, select_on, verbose
            )
            chosen_by_fold.append(chosen)
            selections += selection
            for seed in seeds:
                config = config_for(chosen, seed)
                run_dir = os.path.join(where, _tag(chosen), f"seed{seed}")
                summaries.append(_ensure_run(config, run_dir, shifts, verbose))
                runs[label].append((run_dir, config))
        rows[label] = _method_row(
            method, {**fixed, **chosen_by_fold[0]}, selections, seeds, summaries
        )
        # Relative, so that a moved or copied study directory still names its runs.
        rows[label]["run_dirs"] = [os.path.relpath(run_dir, out) for run_dir, _ in runs[label]]
        if folds is not None:
            rows[label]["settings_by_fold"] = [{**fixed, **c} for c in chosen_by_fold]
    if verbose:
        print("--- bootstrap intervals over the test examples")
    summary = {
        "dataset": base.dataset,
        "epochs": base.epochs,
        "seeds": list(seeds),
        "folds": folds,
        "select_seeds": select_seeds,
        "select_on": select_on,
        "shifts": list(shifts),
        "methods": rows,
        "evidence": evidence.comparison_evidence(runs, pairs, resamples),
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
