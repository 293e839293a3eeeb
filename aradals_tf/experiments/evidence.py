"""The evidence of a comparison: intervals over test examples and seeds, and verdicts.

Each method's plug-in ECE, debiased ECE, NLL, Brier score and accuracy, clean
and averaged over the shifted copies, get a 95 % bootstrap interval
(`aradals_tf.intervals`); each pair of methods that decides a claim gets the
paired interval of its difference over the same resamples. The runs of one
seed over the cross-fitting folds are pooled first (their predictions
concatenated: every example of the dataset is tested once per seed), and
with several seeds every resample draws seeds as well as examples, so the
intervals carry training noise. The verdicts (better, worse, no difference)
rest on the debiased ECE, NLL and Brier (accuracy is reported, not judged),
Holm-adjusted over the whole family of differences a comparison judges.
"""

import numpy as np

from aradals_tf import data
from aradals_tf import intervals
from aradals_tf.experiments import build
from aradals_tf.experiments import evaluate

CONDITIONS = ("clean", "shift")
KINDS = {"raw": "", "temperature": "+ts"}
# Accuracy is reported beside the calibration endpoints but judged by no verdict.
METRICS = ("ece", "debiased_ece", "nll", "brier", "accuracy")


def run_examples(run_dir, config, kind="raw", num_bins=15):
    """`(ids, {"clean": [stats], "shift": [stats per shifted copy]})` of a run.

    Args:
        run_dir: an evaluated run (its `predictions_test.npz`).
        config: the run's `TrainConfig` (names its test examples).
        kind: `"raw"` or `"temperature"` (logits over the run's fitted T).
        num_bins: bins of the ECEs.
    """
    labels, logits, temperature = evaluate.read_predictions(run_dir)
    if build.dataset_info(config).source == "embedded":
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


def _pooled_by_seed(entries, kind):
    """One pooled `(ids, {condition: [stats]})` per seed of a method's runs."""
    by_seed = {}
    for run_dir, config in entries:
        by_seed.setdefault(config.seed, []).append(run_examples(run_dir, config, kind))
    pooled = []
    for seed in sorted(by_seed):
        parts = by_seed[seed]
        ids = np.concatenate([part_ids for part_ids, _ in parts])
        conditions = {
            condition: intervals.pool([(i, by_cond[condition]) for i, by_cond in parts])[1]
            for condition in parts[0][1]
            if parts[0][1][condition]
        }
        pooled.append((ids, conditions))
    return pooled


def comparison_evidence(runs, pairs=(), resamples=intervals.DEFAULT_RESAMPLES, seed=0):
    """Intervals for every method and Holm-adjusted verdicts for `pairs`.

    Args:
        runs: `{label: [(run_dir, config), ...]}`, every run evaluated.
        pairs: `"A:B"` strings (see `parse_pair`).
        resamples: bootstrap resamples, shared by every method and pair.
        seed: seed of the resamples.

    Returns:
        `{"resamples", "examples", "seeds", "methods": {label: {kind:
        {condition: {metric: interval}}}}, "pairs": [{"pair", "a", "b",
        condition: {metric: interval with p, p_holm, verdict}}], "family"}`.
    """
    parsed = [(text, parse_pair(text, list(runs))) for text in pairs]
    examples = {
        (label, kind): _pooled_by_seed(entries, kind)
        for label, entries in runs.items()
        for kind in KINDS
    }
    union = intervals.example_union(
        [[(ids, None) for ids, _ in group] for group in examples.values()]
    )
    conditions = [c for c in CONDITIONS if all(c in e[1] for g in examples.values() for e in g)]
    cache = {}

    def replicates(key, condition, metric):
        if (key, condition, metric) not in cache:
            group = [(ids, by_condition[condition]) for ids, by_condition in examples[key]]
            cache[key, condition, metric] = intervals.run_replicates(
                group, union, resamples, seed, metric
            )
        return cache[key, condition, metric]

    methods = {
        label: {
            kind: {
                condition: {
                    metric: intervals.summarize(*replicates((label, kind), condition, metric))
                    for metric in METRICS
                }
                for condition in conditions
            }
            for kind in KINDS
        }
        for label in runs
    }
    verdicts, family = [], []
    for text, (a, b) in parsed:
        entry = {"pair": text, "a": list(a), "b": list(b)}
        for condition in conditions:
            entry[condition] = {}
            for metric in METRICS:
                value_a, draws_a = replicates(a, condition, metric)
                value_b, draws_b = replicates(b, condition, metric)
                result = intervals.summarize(value_a - value_b, draws_a - draws_b, paired=True)
                if metric == "accuracy":  # higher is better, and it is not judged
                    del result["verdict"]
                entry[condition][metric] = result
                if metric in intervals.VERDICT_METRICS:
                    family.append(result)
        verdicts.append(entry)
    for result, adjusted in zip(family, intervals.holm([r["p"] for r in family])):
        result["p_holm"] = adjusted
        result["verdict"] = intervals.holm_verdict(result, adjusted)
    return {
        "resamples": resamples,
        "examples": int(len(union)),
        "seeds": {label: len(examples[label, "raw"]) for label in runs},
        "methods": methods,
        "pairs": verdicts,
        "family": len(family),
    }
