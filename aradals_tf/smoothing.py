"""Label smoothing: soft labels, robustness strata and the AR-AdaLS update.

Soft labels use Keras's form, `(1 - eps) * onehot(y) + eps / K`, with `eps`
a scalar (uniform label smoothing) or one value per example (AR-AdaLS).
"""

import tensorflow as tf

from aradals_tf.choices import EPS_UPDATES


def soft_labels(labels, num_classes, eps):
    """Smoothed one-hot targets.

    Args:
        labels: int class indices, shape `[n]` (or `[n, 1]`).
        num_classes: K.
        eps: smoothing strength, a scalar or a `[n]` tensor, in [0, 1].

    Returns:
        float32 `[n, K]` targets `(1 - eps) * onehot + eps / K`; rows sum to 1.

    Example:

    >>> soft_labels([1], 4, 0.2).numpy()
    array([[0.05, 0.85, 0.05, 0.05]], dtype=float32)
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
    eps = tf.cast(eps, tf.float32)
    if eps.shape.rank:
        eps = tf.reshape(eps, [-1, 1])
    return (1.0 - eps) * onehot + eps / tf.cast(num_classes, tf.float32)


def thresholds_from_histogram(histogram, num_strata):
    """Equal-mass stratum thresholds from a histogram of scores (bin = level).

    With `C(l)` the cumulative count of levels `<= l` and `N` the total, the
    r-th threshold (r = 1..R-1) is the smallest level `q_r` with
    `C(q_r) >= r * N / R`: the r/R-quantile. An example of level `l` then
    belongs to stratum `#{r : l > q_r}` (see `assign_strata`), so stratum 0
    holds the least robust examples. Examples in one bin cannot be split, so
    strata are of equal size up to the largest bin's count (tied quantiles
    give equal thresholds and the strata between them stay empty).

    Args:
        histogram: counts per bin (level), `[num_levels]`.
        num_strata: R.

    Returns:
        int32 `[R - 1]` non-decreasing thresholds (all equal to the last
        level when the histogram is empty).

    Example:

    >>> thresholds_from_histogram([4, 0, 4, 2], 2).numpy()  # C = 4, 4, 8, 10
    array([2], dtype=int32)
    """
    histogram = tf.cast(tf.convert_to_tensor(histogram), tf.float64)
    cumulative = tf.cumsum(histogram)
    total = cumulative[-1]
    targets = tf.range(1, num_strata, dtype=tf.float64) * total / num_strata
    # Smallest level whose cumulative count reaches each target; a tiny
    # tolerance keeps r * N / R exact when N is a multiple of R.
    reached = cumulative[None, :] >= targets[:, None] - 1e-9
    thresholds = tf.argmax(tf.cast(reached, tf.int32), axis=1, output_type=tf.int32)
    last_level = tf.shape(histogram)[0] - 1
    return tf.where(total > 0, thresholds, tf.fill(tf.shape(thresholds), last_level))


def assign_strata(levels, thresholds):
    """Stratum of each level: the number of thresholds it exceeds.

    Args:
        levels: int robustness levels, `[n]`.
        thresholds: int32 `[R - 1]` from `thresholds_from_histogram`.

    Returns:
        int32 `[n]` strata in `0..R-1` (0 = least robust).

    Example:

    >>> assign_strata([0, 1, 2, 3], [0, 2]).numpy()
    array([0, 1, 1, 2], dtype=int32)
    """
    levels = tf.cast(tf.reshape(levels, [-1, 1]), tf.int32)
    thresholds = tf.cast(tf.reshape(thresholds, [1, -1]), tf.int32)
    return tf.reduce_sum(tf.cast(levels > thresholds, tf.int32), axis=1)


def stratum_counts(histogram, thresholds):
    """How many of a histogram's examples each stratum holds under `thresholds`.

    Args:
        histogram: counts per bin, `[num_bins]`.
        thresholds: int32 `[R - 1]` (see `thresholds_from_histogram`).

    Returns:
        float32 `[R]`.

    Example:

    >>> stratum_counts([4, 0, 4, 2], [2]).numpy()
    array([8., 2.], dtype=float32)
    """
    histogram = tf.cast(tf.convert_to_tensor(histogram), tf.float32)
    bins = tf.range(tf.shape(histogram)[0])
    strata = assign_strata(bins, thresholds)
    return tf.math.unsorted_segment_sum(histogram, strata, tf.size(thresholds) + 1)


def stratum_calibration(strata, confidence, correct, num_strata):
    """Per-stratum count, mean confidence and accuracy.

    Args:
        strata: int32 `[n]`.
        confidence: float `[n]` top-label confidence.
        correct: bool or float `[n]`.
        num_strata: R.

    Returns:
        `(count, confidence, accuracy)`, float32 `[R]` each; empty strata have
        count 0 and confidence = accuracy = 0.
    """
    strata = tf.reshape(tf.cast(strata, tf.int32), [-1])
    ones = tf.ones_like(strata, tf.float32)
    count = tf.math.unsorted_segment_sum(ones, strata, num_strata)
    safe = tf.maximum(count, 1.0)
    confidence = tf.math.unsorted_segment_sum(tf.cast(confidence, tf.float32), strata, num_strata)
    accuracy = tf.math.unsorted_segment_sum(tf.cast(correct, tf.float32), strata, num_strata)
    return count, confidence / safe, accuracy / safe


def stratum_gap_standard_error(strata, confidence, correct, num_strata):
    """Standard error of each stratum's `conf_r - acc_r`.

    The gap is the mean of `d_i = confidence_i - correct_i` over the
    stratum's examples, so its standard error is `std(d) / sqrt(n_r)` (sample
    standard deviation); `inf` for strata with fewer than two examples.

    Args:
        strata: int32 `[n]`.
        confidence: float `[n]` top-label confidence.
        correct: bool or float `[n]`.
        num_strata: R.

    Returns:
        float32 `[R]`.

    Example:

    >>> stratum_gap_standard_error([0, 0, 1], [0.9, 0.7, 0.6], [1, 0, 1], 2).numpy().round(4)
    array([0.4,  inf], dtype=float32)
    """
    strata = tf.reshape(tf.cast(strata, tf.int32), [-1])
    d = tf.cast(confidence, tf.float32) - tf.cast(correct, tf.float32)
    count = tf.math.unsorted_segment_sum(tf.ones_like(d), strata, num_strata)
    total = tf.math.unsorted_segment_sum(d, strata, num_strata)
    squares = tf.math.unsorted_segment_sum(d * d, strata, num_strata)
    mean = total / tf.maximum(count, 1.0)
    variance = tf.maximum(squares - count * mean * mean, 0.0) / tf.maximum(count - 1.0, 1.0)
    error = tf.sqrt(variance / tf.maximum(count, 1.0))
    return tf.where(count >= 2, error, tf.fill(tf.shape(error), float("inf")))


# Gaps within this many standard errors of zero do not move eps (rule "shrunk").
SHRINKAGE_STANDARD_ERRORS = 2.0


def update_eps(
    eps, confidence, accuracy, count, alpha, eps_cap, rule="additive", gap_standard_error=None
):
    """The AR-AdaLS update: `eps_r <- clip(eps_r + alpha * step_r, 0, cap)`.

    Over-confident strata (conf > acc) get softer labels, under-confident
    ones harder labels; strata without validation examples keep their eps.
    Two rules for the step, with the same sign and the same fixed point
    (conf = acc):

    - `"additive"` (the method's rule): `step_r = conf_r - acc_r`.
    - `"relative"`: `step_r = (conf_r - acc_r) / max(1 - conf_r, 1 - acc_r,
      1 / n_r)`, the gap between predicted and observed error rates relative
      to the larger of the two, floored at the resolution `1 / n_r` of the
      stratum's `n_r` validation examples; `|step_r| <= 1`. Why: a stratum
      whose examples are nearly all right has `conf_r - acc_r` of the order
      of `1 - conf_r` (1e-4 and less), so under the additive rule its eps
      hardly moves, while even a small eps caps the logit margin its examples
      are trained towards at `log((1 - eps + eps / K) / (eps / K))` (7.6 for
      eps = 0.005 and K = 10): smoothing picked up early in training then stays
      and shrinks the logits of the most robust strata. The relative step
      takes such a stratum back towards hard labels as fast as a stratum
      with many errors moves.
    - `"shrunk"`: the gap shrunk towards zero by `SHRINKAGE_STANDARD_ERRORS`
      of its standard error `s_r` (`stratum_gap_standard_error`),
      `step_r = sign(g_r) max(|g_r| - 2 s_r, 0)`: a gap within noise of zero
      (a stratum of 25-50 validation examples has `s_r` of 0.03-0.05) leaves
      eps where it is, a real gap moves it by what exceeds the noise.

    Args:
        eps: float `[R]` current smoothing per stratum.
        confidence: float `[R]` mean validation confidence per stratum.
        accuracy: float `[R]` validation accuracy per stratum.
        count: float `[R]` validation examples per stratum.
        alpha: step size.
        eps_cap: upper bound of eps.
        rule: `"additive"`, `"relative"` or `"shrunk"`.
        gap_standard_error: float `[R]`, needed by `"shrunk"`.

    Returns:
        float32 `[R]` updated eps.

    Example:

    >>> update_eps([0.25, 0.25], [0.75, 0.5], [0.5, 1.0], [5, 5], 1.0, 0.375).numpy()
    array([0.375, 0.   ], dtype=float32)
    >>> update_eps([0.004, 0.08], [0.9998, 0.8], [1.0, 0.85], [100, 50], 0.25, 0.1,
    ...            rule="relative").numpy().round(4)  # steps -0.25 * 0.02, -0.25 * 0.25
    array([0.    , 0.0175], dtype=float32)
    """
    if rule not in EPS_UPDATES:
        raise ValueError(f"rule must be one of {', '.join(EPS_UPDATES)}; got {rule!r}.")
    eps = tf.cast(eps, tf.float32)
    confidence = tf.cast(confidence, tf.float32)
    accuracy = tf.cast(accuracy, tf.float32)
    count = tf.cast(count, tf.float32)
    step = confidence - accuracy
    if rule == "relative":
        resolution = 1.0 / tf.maximum(count, 1.0)
        step = step / tf.maximum(tf.maximum(1.0 - confidence, 1.0 - accuracy), resolution)
    elif rule == "shrunk":
        if gap_standard_error is None:
            raise ValueError("rule='shrunk' needs gap_standard_error (stratum_gap_standard_error).")
        noise = SHRINKAGE_STANDARD_ERRORS * tf.cast(gap_standard_error, tf.float32)
        step = tf.sign(step) * tf.maximum(tf.abs(step) - noise, 0.0)
    updated = tf.clip_by_value(eps + alpha * step, 0.0, eps_cap)
    return tf.where(count > 0, updated, eps)
