"""The evidence of a comparison: intervals over test examples, and verdicts.

Each method's ECE, adaptive ECE and NLL, clean and averaged over the shifted
copies, get a 95 % bootstrap interval over the test examples
(`aradals_tf.intervals`); each pair of methods that decides a claim gets the
paired interval of its difference, over the same resamples, and a verdict:
better, worse or no difference at 95 %. Runs of one method over several
seeds and folds are pooled by example id: with cross-fitting folds every
example of the dataset is tested once per seed.
"""

import numpy as np

from aradals_tf import data
from aradals_tf import intervals
from aradals_tf.experiments import evaluate

CONDITIONS = ("clean", "shift")
KINDS = {"raw": "", "temperature": "+ts"}


def run_examples(run_dir, config, kind="raw", num_bins=15):
    """`(ids, {"clean": [stats], "shift": [stats per shifted copy]})` of a run.

    Args:
        run_dir: an evaluated run (its `predictions_test.npz`).
        config: the run's `TrainConfig` (names its test examples).
        kind: `"raw"` or `"temperature"` (logits over the run's fitted T).
        num_bins: bins of the ECEs.
    """
    labels, logits, temperature = evaluate.read_predictions(run_dir)
    if data.dataset_info(config.dataset).source == "embedded":
        ids = data.split_indices(
            config.dataset, "test", config.seed, fold=config.fold, folds=config.folds
        )
    else:  # tfds test splits are fixed slices: the same examples in every run
        ids = np.arange(len(labels))
    scale = temperature if kind == "temperature" else 1.0

    def stats(key):
        return intervals.example_statistics(labels, logits[key] / scale, num_bins)

    shifts = [stats(key) for key in sorted(logits) if key != "clean"]
    return np.asarray(ids), {"clean": [stats("clean")], "shift": shifts}


def parse_pair(text, labels):
    """`"A:B"` (each label optionally `+ts`, temperature-scaled) into
    `((label, kind), (label, kind))`, checked against the comparison's labels."""
    sides = text.split(":")
    if len(sides) != 2:
        raise ValueError(f"A pair is 'A:B' (e.g. 'ar-adals:vanilla+ts'); got {text!r}.")
    parsed = []
    for side in sides:
        kind = "temperature" if side.endswith("+ts") else "raw"
        label = side.removesuffix("+ts")
        if label not in labels:
            raise ValueError(
                f"Unknown method {label!r} in pair {text!r}; methods: {', '.join(labels)}."
            )
        parsed.append((label, kind))
    return tuple(parsed)


def default_pairs(labels, reference="vanilla"):
    """Every method against `reference`, raw and temperature-scaled."""
    if reference not in labels:
        return []
    return [
        f"{label}:{reference}{suffix}"
        for label in labels
        if label != reference
        for suffix in KINDS.values()
    ]


def comparison_evidence(runs, pairs=(), resamples=intervals.DEFAULT_RESAMPLES, seed=0):
    """Intervals for every method and verdicts for `pairs`.

    Args:
        runs: `{label: [(run_dir, config), ...]}`, every run evaluated.
        pairs: `"A:B"` strings (see `parse_pair`).
        resamples: bootstrap resamples, shared by every method and pair.
        seed: seed of the resamples.

    Returns:
        `{"resamples", "examples", "methods": {label: {kind: {condition:
        {metric: interval}}}}, "pairs": [{"a", "b", condition: {metric:
        interval with verdict}}]}`.
    """
    parsed = [(text, parse_pair(text, list(runs))) for text in pairs]
    examples = {
        (label, kind): [run_examples(run_dir, config, kind) for run_dir, config in entries]
        for label, entries in runs.items()
        for kind in KINDS
    }
    union = intervals.example_union(
        [[(ids, None) for ids, _ in group] for group in examples.values()]
    )
    weights = intervals.resample_weights(len(union), resamples, seed)
    conditions = [c for c in CONDITIONS if all(e[1][c] for g in examples.values() for e in g)]
    cache = {}

    def replicates(key, condition, metric):
        if (key, condition, metric) not in cache:
            group = [(ids, by_condition[condition]) for ids, by_condition in examples[key]]
            cache[key, condition, metric] = intervals.run_replicates(group, union, weights, metric)
        return cache[key, condition, metric]

    methods = {
        label: {
            kind: {
                condition: {
                    metric: intervals.summarize(*replicates((label, kind), condition, metric))
                    for metric in intervals.METRICS
                }
                for condition in conditions
            }
            for kind in KINDS
        }
        for label in runs
    }
    verdicts = []
    for text, (a, b) in parsed:
        entry = {"pair": text, "a": list(a), "b": list(b)}
        for condition in conditions:
            entry[condition] = {}
            for metric in intervals.METRICS:
                value_a, draws_a = replicates(a, condition, metric)
                value_b, draws_b = replicates(b, condition, metric)
                entry[condition][metric] = intervals.summarize(
                    value_a - value_b, draws_a - draws_b, paired=True
                )
        verdicts.append(entry)
    return {
        "resamples": resamples,
        "examples": int(len(union)),
        "methods": methods,
        "pairs": verdicts,
    }
