"""Bootstrap intervals of calibration metrics, and of paired differences.

On 1,000 test images ECE itself is noisy by about half a point, so a claim
that one method calibrates better than another needs an interval over the
test examples. Here examples are resampled with replacement (the multinomial
bootstrap) and every metric is recomputed on each resample; a paired
difference uses the SAME resamples for both methods, so that what both get
right or wrong together cancels. A corrupted copy of an example belongs to
that example: the shift metrics of one resample use the same examples under
every corruption. Where a method has several runs (seeds) of the same test
examples, each resample's metric is the mean over the runs.

A resample is a weight per example (how many times it was drawn), so ECE and
NLL of all resamples are matrix products, not loops: with weights `w`,
`ECE = sum_m |sum_i w_i (correct_i - conf_i) [bin_i = m]| / n`. Adaptive
(equal-mass) ECE cuts each resample's examples, sorted by confidence, into
bins of equal total weight (all copies of an example fall in the bin of the
first). Bins and top-label conventions are those of `aradals_tf.metrics`.
"""

import numpy as np

DEFAULT_RESAMPLES = 1000
METRICS = ("ece", "adaptive_ece", "nll")


def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True), shifted - np.log(exp.sum(-1, keepdims=True))


def example_statistics(labels, logits, num_bins=15):
    """Per-example confidence, correctness, ECE bin and NLL of one set of logits.

    Args:
        labels: int `[n]`.
        logits: `[n, K]`.
        num_bins: equal-width ECE bins.

    Returns:
        A dict of `[n]` arrays: `confidence`, `correct` (0/1), `bin`, `nll`.
    """
    labels = np.asarray(labels).reshape(-1)
    probs, log_probs = _softmax(logits)
    # float32 confidence and the first maximal class, as metrics.top_label.
    probs32 = probs.astype(np.float32)
    confidence = probs32.max(axis=-1)
    prediction = np.argmax(probs32 >= confidence[:, None], axis=-1)
    bins = np.minimum((confidence.astype(np.float64) * num_bins).astype(int), num_bins - 1)
    return {
        "confidence": confidence.astype(np.float64),
        "correct": (prediction == labels).astype(np.float64),
        "bin": bins,
        "nll": -log_probs[np.arange(len(labels)), labels],
    }


def resample_weights(n, resamples=DEFAULT_RESAMPLES, seed=0):
    """`[resamples, n]` multinomial counts: how often each example is drawn."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def _ece(stats, weights, num_bins):
    gap = stats["correct"] - stats["confidence"]
    per_bin = np.zeros((len(gap), num_bins))
    per_bin[np.arange(len(gap)), stats["bin"]] = gap
    return np.abs(weights @ per_bin).sum(axis=-1) / weights.sum(axis=-1)


def _adaptive_ece(stats, weights, num_bins):
    order = np.argsort(stats["confidence"], kind="stable")
    sorted_weights = weights[:, order]
    total = sorted_weights.sum(axis=-1, keepdims=True)
    before = np.cumsum(sorted_weights, axis=-1) - sorted_weights
    bins = np.minimum((before * num_bins // total).astype(int), num_bins - 1)
    gap = (stats["correct"] - stats["confidence"])[order]
    # One bincount over (resample, bin) pairs: the per-bin sums of every resample.
    flat = (np.arange(len(weights))[:, None] * num_bins + bins).reshape(-1)
    sums = np.bincount(flat, (sorted_weights * gap).reshape(-1), len(weights) * num_bins)
    return np.abs(sums.reshape(len(weights), num_bins)).sum(axis=-1) / total[:, 0]


def _nll(stats, weights, num_bins):
    return weights @ stats["nll"] / weights.sum(axis=-1)


_FUNCTIONS = {"ece": _ece, "adaptive_ece": _adaptive_ece, "nll": _nll}


def metric_replicates(runs, weights, metric="ece", num_bins=15):
    """A metric on every resample: mean over runs, and over shifts.

    Args:
        runs: a list (one per run, e.g. seed) of lists (one per condition:
            the clean set, or each shifted copy) of `example_statistics`
            dicts over the same n examples.
        weights: `[R, n]` from `resample_weights`; a row of ones gives the
            metric of the sample itself.
        metric: one of `METRICS`.
        num_bins: bins of the ECEs.

    Returns:
        float `[R]`: per resample, the metric averaged over conditions, then runs.
    """
    function = _FUNCTIONS[metric]
    per_run = [
        np.mean([function(stats, weights, num_bins) for stats in conditions], axis=0)
        for conditions in runs
    ]
    return np.mean(per_run, axis=0)


def verdict(low, high, lower_is_better=True):
    """`"better"`, `"worse"` or `"no difference"` for an interval of A - B."""
    if high < 0:
        return "better" if lower_is_better else "worse"
    if low > 0:
        return "worse" if lower_is_better else "better"
    return "no difference"


def bootstrap_interval(
    runs, metric="ece", resamples=DEFAULT_RESAMPLES, seed=0, num_bins=15, other=None
):
    """Point value and 95 % bootstrap interval of a metric, or of the paired
    difference `runs - other` over the same resamples (see `summarize`).

    Examples are named by ids, so that runs over different test sets (the
    fixed test split of each seed) or in different orders (pooled folds)
    are resampled consistently: the resamples are drawn over the union of
    all ids, and each run's metric uses the weights of its own examples.

    Args:
        runs: a list of `(ids, conditions)`, one per run: int ids `[n]` of
            its test examples and a list of `example_statistics` dicts over
            them (the clean set, or each shifted copy).
        metric: one of `METRICS`.
        resamples: bootstrap resamples.
        seed: seed of the resamples (the same seed gives the same resamples,
            so that intervals of different methods are comparable).
        num_bins: bins of the ECEs.
        other: runs of a second method over the same examples, for a paired
            difference.

    Returns:
        `{"value", "low", "high"}`, plus `"verdict"` for a difference (lower
        is better for all three metrics).

    Example:

    >>> stats = example_statistics(labels, logits)
    >>> bootstrap_interval([(np.arange(len(labels)), [stats])], "ece")["high"]
    """
    every = [runs] if other is None else [runs, other]
    union = example_union(every)
    weights = resample_weights(len(union), resamples, seed)
    value, draws = run_replicates(runs, union, weights, metric, num_bins)
    if other is not None:
        other_value, other_draws = run_replicates(other, union, weights, metric, num_bins)
        return summarize(value - other_value, draws - other_draws, paired=True)
    return summarize(value, draws)


def example_union(groups):
    """The sorted ids of every example of every run of `groups` (lists of runs)."""
    return np.unique(np.concatenate([np.asarray(ids) for group in groups for ids, _ in group]))


def run_replicates(runs, union, weights, metric="ece", num_bins=15):
    """`(value, draws [R])` of a metric over runs whose examples are named by ids.

    Args:
        runs: a list of `(ids, conditions)` (see `bootstrap_interval`).
        union: sorted ids covering every run's (`example_union`).
        weights: `[R, len(union)]` from `resample_weights`.
        metric: one of `METRICS`.
        num_bins: bins of the ECEs.
    """

    def mean_over_runs(w):
        return np.mean(
            [
                metric_replicates([conditions], w[:, np.searchsorted(union, ids)], metric, num_bins)
                for ids, conditions in runs
            ],
            axis=0,
        )

    return float(mean_over_runs(np.ones((1, len(union))))[0]), mean_over_runs(weights)


def summarize(value, draws, paired=False):
    """`{"value", "low", "high"}`, with `"verdict"` for a paired difference.

    The interval is the spread of the resampled values around their mean
    (their 2.5 and 97.5 percentiles minus the mean), placed on the sample's
    own value. The resampled ECEs of a sample lie mostly above its ECE (the
    absolute per-bin gaps grow with the resampling noise, most where the
    model is well calibrated), so their plain percentiles can exclude the
    sample's value; the spread is what measures the sampling noise.
    """
    low, high = value + np.percentile(draws, [2.5, 97.5]) - np.mean(draws)
    result = {"value": float(value), "low": float(low), "high": float(high)}
    if paired:
        result["verdict"] = verdict(low, high)
    return result
