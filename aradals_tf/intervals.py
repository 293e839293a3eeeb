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

The plug-in ECE is biased upward by noise (an absolute value of a noisy
gap), most where a model is well calibrated: at 1,000 examples a perfectly
calibrated model scores about 1.7 %. `debiased_ece` corrects each bin: its
observed `|mean gap|` is the mean of a folded normal, `E|mu + s Z|`, with
`s` the bin's standard error, and the estimate is the `|mu|` whose folded
mean equals the observation (0 where the observation is within what noise
alone gives, `s sqrt(2 / pi)`). Simulations with known population ECE
(tests/test_intervals.py, docs: the evidence pages) show its interval
covering the population value; the verdicts rest on it, NLL and Brier.

Training noise: where a method has runs of several seeds, a two-level
resample draws the seeds too (with replacement, the same draws for both
sides of a paired difference) as well as the examples. Runs of one seed
over several cross-fitting folds are pooled (their predictions
concatenated) before any metric is computed.
"""

import numpy as np
from scipy import special

DEFAULT_RESAMPLES = 10_000
# Resamples are drawn and reduced in chunks of this many, to bound memory.
CHUNK = 1_000
METRICS = ("ece", "debiased_ece", "adaptive_ece", "nll", "brier", "accuracy")
# The estimators the verdicts rest on (their intervals' coverage is tested).
VERDICT_METRICS = ("debiased_ece", "nll", "brier")


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
        A dict of `[n]` arrays: `confidence`, `correct` (0/1), `bin`, `nll`,
        `brier` (the squared error summed over classes).
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
        "brier": np.sum((probs - np.eye(probs.shape[1])[labels]) ** 2, axis=-1),
    }


def _weight_chunks(n, resamples, seed):
    """The `[resamples, n]` multinomial counts, in chunks of at most `CHUNK` rows."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)


def resample_weights(n, resamples=DEFAULT_RESAMPLES, seed=0):
    """`[resamples, n]` multinomial counts: how often each example is drawn."""
    return np.concatenate(list(_weight_chunks(n, resamples, seed)))


def seed_weights(num_seeds, resamples=DEFAULT_RESAMPLES, seed=0):
    """`[resamples, S]`: how often each of S seeds is drawn in each resample
    (all ones for one seed); the same for every method with S seeds."""
    if num_seeds == 1:
        return np.ones((resamples, 1))
    rng = np.random.default_rng([seed, num_seeds])
    return rng.multinomial(num_seeds, np.full(num_seeds, 1.0 / num_seeds), size=resamples).astype(
        np.float64
    )


def pool(parts):
    """One run from the runs of one seed over several folds: `(ids, conditions)`
    with their predictions concatenated, so a metric sees all examples at once.

    Args:
        parts: `(ids, conditions)` per fold, the conditions in the same order.
    """
    ids = np.concatenate([np.asarray(part_ids) for part_ids, _ in parts])
    conditions = [
        {key: np.concatenate([stats[key] for stats in same]) for key in same[0]}
        for same in zip(*(part_conditions for _, part_conditions in parts))
    ]
    return ids, conditions


def _bin_sums(conditions, weights, num_bins):
    """Per resample, condition and bin: weighted count, sum of gaps and of
    squared gaps, `[R, C, num_bins]` each (one matrix product for all
    conditions)."""
    n, c = len(conditions[0]["bin"]), len(conditions)
    columns = np.stack([stats["bin"] for stats in conditions], 1) + num_bins * np.arange(c)
    gap = np.stack([stats["correct"] - stats["confidence"] for stats in conditions], 1)
    onehot = np.zeros((n, c * num_bins))
    rows = np.repeat(np.arange(n), c)
    onehot[rows, columns.reshape(-1)] = 1.0
    signed = np.zeros_like(onehot)
    signed[rows, columns.reshape(-1)] = gap.reshape(-1)
    shape = (len(weights), c, num_bins)
    return (
        (weights @ onehot).reshape(shape),
        (weights @ signed).reshape(shape),
        (weights @ signed**2).reshape(shape),
    )


def _ece(conditions, weights, num_bins):
    _, total, _ = _bin_sums(conditions, weights, num_bins)
    return np.abs(total).sum(axis=-1) / weights.sum(axis=-1, keepdims=True)


def _folded_mean_inverse(ratio, iterations=40):
    """The `t >= 0` with `E|t + Z| = ratio` (Z standard normal), for ratio >= sqrt(2/pi)."""
    # Beyond 30 standard errors E|t + Z| = t to double precision (and t * t
    # would overflow where the error is rounding noise): the ratio itself.
    far = ratio > 30.0
    target = np.where(far, 30.0, ratio)
    t = target.copy()
    for _ in range(iterations):  # Newton: E|t + Z| is convex and increasing in t
        folded = np.sqrt(2 / np.pi) * np.exp(-t * t / 2) + t * special.erf(t / np.sqrt(2))
        t = np.maximum(t - (folded - target) / np.maximum(special.erf(t / np.sqrt(2)), 1e-6), 0)
    return np.where(far, ratio, t)


def _debiased_ece(conditions, weights, num_bins):
    count, total, squares = _bin_sums(conditions, weights, num_bins)
    size = np.maximum(count, 1.0)
    gap = np.abs(total) / size
    variance = (
        np.maximum(squares / size - (total / size) ** 2, 0) * count / np.maximum(count - 1, 1)
    )
    error = np.sqrt(variance / size)
    ratio = gap / np.maximum(error, 1e-300)
    floor = np.sqrt(2 / np.pi)
    corrected = error * _folded_mean_inverse(np.maximum(ratio, floor))
    # Within noise: 0. No spread to judge by (one example, or equal gaps): the gap itself.
    debiased = np.where(ratio > floor, corrected, 0.0)
    debiased = np.where(error > 0, debiased, gap)
    return (count * debiased).sum(axis=-1) / weights.sum(axis=-1, keepdims=True)


def _per_example(key):
    def mean(conditions, weights, num_bins):
        values = np.stack([stats[key] for stats in conditions], 1)
        return weights @ values / weights.sum(axis=-1, keepdims=True)

    return mean


def _adaptive_ece(conditions, weights, num_bins):
    return np.stack([_adaptive_one(stats, weights, num_bins) for stats in conditions], 1)


def _adaptive_one(stats, weights, num_bins):
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


_FUNCTIONS = {
    "ece": _ece,
    "debiased_ece": _debiased_ece,
    "adaptive_ece": _adaptive_ece,
    "nll": _per_example("nll"),
    "brier": _per_example("brier"),
    "accuracy": _per_example("correct"),
}


def metric_replicates(runs, weights, metric="ece", num_bins=15):
    """A metric on every resample of each run, averaged over conditions.

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
    return np.mean([function(conditions, weights, num_bins).mean(axis=1) for conditions in runs], 0)


def verdict(low, high, lower_is_better=True):
    """`"better"`, `"worse"` or `"no difference"` for an interval of A - B."""
    if high < 0:
        return "better" if lower_is_better else "worse"
    if low > 0:
        return "worse" if lower_is_better else "better"
    return "no difference"


def bootstrap_interval(
    runs, metric="debiased_ece", resamples=DEFAULT_RESAMPLES, seed=0, num_bins=15, other=None
):
    """Point value and 95 % bootstrap interval of a metric, or of the paired
    difference `runs - other` over the same resamples (see `summarize`).

    Examples are named by ids, so that runs over different test sets (the
    fixed test split of each seed) or in different orders (pooled folds)
    are resampled consistently: the resamples are drawn over the union of
    all ids, and each run's metric uses the weights of its own examples.
    With several runs (one per seed), each resample also draws the seeds
    (two-level); a paired difference draws the same seeds on both sides.

    Args:
        runs: a list of `(ids, conditions)`, one per seed (`pool` joins a
            seed's folds): int ids `[n]` of its test examples and a list of
            `example_statistics` dicts over them (the clean set, or each
            shifted copy).
        metric: one of `METRICS`.
        resamples: bootstrap resamples.
        seed: seed of the resamples (the same seed gives the same resamples,
            so that intervals of different methods are comparable).
        num_bins: bins of the ECEs.
        other: runs of a second method over the same examples, for a paired
            difference.

    Returns:
        `{"value", "low", "high"}`, plus `"verdict"` and `"p"` for a
        difference (lower is better for every metric).

    Example:

    >>> stats = example_statistics(labels, logits)
    >>> bootstrap_interval([(np.arange(len(labels)), [stats])], "debiased_ece")["high"]
    """
    every = [runs] if other is None else [runs, other]
    union = example_union(every)
    value, draws = run_replicates(runs, union, resamples, seed, metric, num_bins)
    if other is not None:
        other_value, other_draws = run_replicates(other, union, resamples, seed, metric, num_bins)
        return summarize(value - other_value, draws - other_draws, paired=True)
    return summarize(value, draws)


def example_union(groups):
    """The sorted ids of every example of every run of `groups` (lists of runs)."""
    return np.unique(np.concatenate([np.asarray(ids) for group in groups for ids, _ in group]))


def run_replicates(runs, union, resamples, seed=0, metric="debiased_ece", num_bins=15):
    """`(value, draws [R])` of a metric over runs whose examples are named by ids.

    The value is the mean over runs of each run's metric; draw `r` weighs
    the examples by resample `r` and the runs (seeds) by `seed_weights`.

    Args:
        runs: a list of `(ids, conditions)`, one per seed (see `bootstrap_interval`).
        union: sorted ids covering every run's (`example_union`).
        resamples: R; the examples' resamples are drawn from `seed`, so every
            call with the same union, R and seed draws the same ones.
        seed: seed of the resamples.
        metric: one of `METRICS`.
        num_bins: bins of the ECEs.
    """
    positions = [np.searchsorted(union, ids) for ids, _ in runs]
    ones = np.ones((1, len(union)))
    per_run = [
        metric_replicates([conditions], ones[:, where], metric, num_bins)[0]
        for where, (_, conditions) in zip(positions, runs)
    ]
    draws = []
    for chunk in _weight_chunks(len(union), resamples, seed):
        draws.append(
            np.stack(
                [
                    metric_replicates([conditions], chunk[:, where], metric, num_bins)
                    for where, (_, conditions) in zip(positions, runs)
                ],
                axis=1,
            )
        )
    draws = np.concatenate(draws)  # [R, runs]
    seeds = seed_weights(len(runs), resamples, seed)
    return float(np.mean(per_run)), (draws * seeds).sum(axis=1) / len(runs)


def summarize(value, draws, paired=False):
    """`{"value", "low", "high"}`, with `"verdict"` and `"p"` for a paired difference.

    The interval is the spread of the resampled values around their mean
    (their 2.5 and 97.5 percentiles minus the mean), placed on the sample's
    own value. The resampled plug-in ECEs of a sample lie mostly above its
    ECE (the absolute per-bin gaps grow with the resampling noise, most where
    the model is well calibrated), so their plain percentiles can exclude the
    sample's value; the spread is what measures the sampling noise. `p` is
    the two-sided p-value of that interval: the smallest level at which it
    would exclude 0.
    """
    centred = np.asarray(draws) - np.mean(draws)
    low, high = value + np.percentile(centred, [2.5, 97.5])
    result = {"value": float(value), "low": float(low), "high": float(high)}
    if paired:
        below, above = np.mean(centred <= -value), np.mean(centred >= -value)
        result["p"] = float(min(1.0, 2 * min(below, above)))
        result["verdict"] = verdict(low, high)
    return result


def holm(p_values):
    """Holm's step-down adjustment of a family of p-values (same order back).

    Example:

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    p_values = np.asarray(p_values, np.float64)
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return [float(round(value, 12)) for value in adjusted]


def holm_verdict(result, adjusted_p, alpha=0.05):
    """The verdict of a paired difference after the family's Holm adjustment."""
    if adjusted_p >= alpha:
        return "no difference"
    return "better" if result["value"] < 0 else "worse"
