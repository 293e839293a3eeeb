"""Label smoothing: soft labels, and strata as quantiles of a score histogram.

Soft labels use Keras's form, `(1 - eps) * onehot(y) + eps / K`, with `eps`
a scalar (uniform label smoothing) or one value per example (AR-AdaLS). How
eps moves is in `eps_rules`.
"""

import tensorflow as tf


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
