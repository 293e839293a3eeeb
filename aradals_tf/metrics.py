"""Calibration metrics in TensorFlow, and a Keras metric for ECE.

(Calibration per robustness bin, the paper's diagnostic, is in `diagnostics`.)

All functions take `(labels, probs)`: int class indices of shape `[n]` and
class probabilities of shape `[n, num_classes]` (or logits with
`from_logits=True`). They return fractions (0.02 is 2 % ECE) as float32
scalars, and run eagerly, inside `tf.function` and on any device.

Conventions, chosen to match TFP and robustness_metrics (and stated here
because ECE numbers differ between libraries by exactly these choices):

- Top-label confidence: `max_k p_k`; the prediction is the argmax, ties going
  to the lowest class index.
- Equal-width bins over [0, 1] (15 by default), each bin `[lo, hi)`, except
  that a confidence of exactly 1.0 falls in the last bin (TFP's edges,
  `tf.histogram_fixed_width_bins`).
- Empty bins are skipped; bins are weighted by their share of examples:
  `ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`.
- Brier score summed over classes, `mean_i sum_k (p_ik - y_ik)^2`, in [0, 2]
  (Brier 1950; as robustness_metrics and uncertainty-baselines report it).
- NLL is the mean of `-log p(label)`.
"""

import keras
import numpy as np
import tensorflow as tf

DEFAULT_NUM_BINS = 15


def _assert(condition, message):
    """Raises `ValueError(message)` eagerly; adds a graph assertion otherwise."""
    if tf.executing_eagerly():
        if not bool(condition):
            raise ValueError(message)
    else:
        tf.debugging.Assert(condition, [message])


def check_inputs(labels, probs, from_logits=False):
    """Checks `(labels, probs)` as every metric here does.

    Returns:
        `(labels int32 [n], log_probs or None, probs)`.
    """
    probs = tf.convert_to_tensor(probs)
    if not probs.dtype.is_floating:
        probs = tf.cast(probs, tf.float32)
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_floating:
        # Float labels are accepted only when they hold whole numbers.
        _assert(
            tf.reduce_all(tf.equal(labels, tf.round(labels))),
            "labels must be integer class indices.",
        )
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    if probs.shape.rank != 2:
        raise ValueError(
            f"probs must have shape [num_examples, num_classes]; got shape {probs.shape}."
        )
    num_classes = tf.shape(probs)[1]
    _assert(
        tf.equal(tf.shape(labels)[0], tf.shape(probs)[0]),
        "labels and probs must have the same number of examples.",
    )
    _assert(
        tf.reduce_all((labels >= 0) & (labels < num_classes)),
        f"labels out of range: every label must be in [0, num_classes) with "
        f"num_classes = {probs.shape[1]}.",
    )
    what = "logits" if from_logits else "probs"
    _assert(
        tf.reduce_all(tf.math.is_finite(probs)),
        f"{what} contain NaN or inf; check the model's outputs.",
    )
    if from_logits:
        log_probs = tf.nn.log_softmax(probs, axis=-1)
        return labels, log_probs, tf.exp(log_probs)
    _assert(
        tf.reduce_all(probs >= 0),
        "probs must be non-negative; pass from_logits=True for logits.",
    )
    return labels, None, probs


def top_label(probs):
    """Top-label confidence and prediction, ties to the lowest class index.

    Args:
        probs: `[n, num_classes]` probabilities.

    Returns:
        `(confidence, prediction)`: float `[n]` and int32 `[n]`.
    """
    probs = tf.convert_to_tensor(probs)
    confidence = tf.reduce_max(probs, axis=-1)
    num_classes = tf.shape(probs)[-1]
    class_index = tf.range(num_classes, dtype=tf.int32)
    # tf.argmax does not promise which index wins a tie; this does.
    is_max = probs >= confidence[:, None]
    prediction = tf.reduce_min(tf.where(is_max, class_index[None, :], num_classes), axis=-1)
    return confidence, prediction


def bin_statistics(labels, probs, num_bins=DEFAULT_NUM_BINS, from_logits=False):
    """Per-bin counts, correct counts and confidence sums (equal-width bins).

    Args:
        labels: int class indices, `[n]`.
        probs: probabilities (or logits with `from_logits=True`), `[n, k]`.
        num_bins: number of equal-width confidence bins over [0, 1].
        from_logits: whether `probs` holds logits.

    Returns:
        `(count, correct, confidence_sum)`, each float32 `[num_bins]`.
    """
    labels, _, probs = check_inputs(labels, probs, from_logits)
    return _bin_statistics(labels, probs, num_bins)


def _bin_statistics(labels, probs, num_bins, sample_weight=None):
    confidence, prediction = top_label(probs)
    confidence = tf.cast(confidence, tf.float32)
    bins = tf.histogram_fixed_width_bins(confidence, [0.0, 1.0], nbins=num_bins)
    correct = tf.cast(tf.equal(prediction, labels), tf.float32)
    weight = (
        tf.ones_like(confidence)
        if sample_weight is None
        else tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
    )
    count = tf.math.unsorted_segment_sum(weight, bins, num_bins)
    correct_sum = tf.math.unsorted_segment_sum(weight * correct, bins, num_bins)
    confidence_sum = tf.math.unsorted_segment_sum(weight * confidence, bins, num_bins)
    return count, correct_sum, confidence_sum


def _gap_from_statistics(count, correct, confidence_sum):
    """Per-bin |acc - conf| (0 for empty bins) and the bins' weights."""
    safe_count = tf.maximum(count, 1e-12)
    gap = tf.abs(correct - confidence_sum) / safe_count
    gap = tf.where(count > 0, gap, tf.zeros_like(gap))
    weight = count / tf.maximum(tf.reduce_sum(count), 1e-12)
    return gap, weight


def ece_from_statistics(count, correct, confidence_sum):
    """ECE from accumulated bin statistics (see `bin_statistics`)."""
    gap, weight = _gap_from_statistics(count, correct, confidence_sum)
    return tf.reduce_sum(weight * gap)


def expected_calibration_error(labels, probs, num_bins=DEFAULT_NUM_BINS, from_logits=False):
    """Expected calibration error with equal-width confidence bins.

    `ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|` over non-empty bins
    `B_m = {i : conf_i in [m / M, (m + 1) / M)}` (1.0 in the last bin), with
    top-label confidence (Guo et al. 2017; TFP's binning).

    Args:
        labels: int class indices, `[n]`.
        probs: probabilities `[n, k]` (logits with `from_logits=True`).
        num_bins: number of bins, 15 by default.
        from_logits: whether `probs` holds logits.

    Returns:
        A float32 scalar in [0, 1].

    Example:

    >>> float(expected_calibration_error([0, 1], [[0.9, 0.1], [0.8, 0.2]]))
    0.45...
    """
    counts = bin_statistics(labels, probs, num_bins, from_logits)
    return ece_from_statistics(*counts)


def maximum_calibration_error(labels, probs, num_bins=DEFAULT_NUM_BINS, from_logits=False):
    """Maximum calibration error: the largest |acc - conf| over non-empty bins.

    Bins, confidence and tie conventions as in `expected_calibration_error`.

    Args:
        labels: int class indices, `[n]`.
        probs: probabilities `[n, k]` (logits with `from_logits=True`).
        num_bins: number of equal-width bins, 15 by default.
        from_logits: whether `probs` holds logits.

    Returns:
        A float32 scalar in [0, 1].
    """
    gap, _ = _gap_from_statistics(*bin_statistics(labels, probs, num_bins, from_logits))
    return tf.reduce_max(gap)


def adaptive_calibration_error(labels, probs, num_bins=DEFAULT_NUM_BINS, from_logits=False):
    """ECE with equal-mass (adaptive) bins.

    Examples are sorted by top-label confidence and cut into `num_bins` bins
    of (as nearly as possible) equal count: the example of rank `r` (0-based,
    ties in confidence kept in input order) goes to bin `floor(r * M / n)`.
    Then `sum_m |B_m| / n * |acc(B_m) - conf(B_m)|` as for ECE. This is the
    equal-mass ECE of Nixon et al. 2019 and robustness_metrics's
    `adaptive_ece`, not their class-wise ACE.

    Args:
        labels: int class indices, `[n]`.
        probs: probabilities `[n, k]` (logits with `from_logits=True`).
        num_bins: number of bins, 15 by default.
        from_logits: whether `probs` holds logits.

    Returns:
        A float32 scalar in [0, 1].
    """
    labels, _, probs = check_inputs(labels, probs, from_logits)
    confidence, prediction = top_label(probs)
    confidence = tf.cast(confidence, tf.float32)
    correct = tf.cast(tf.equal(prediction, labels), tf.float32)
    n = tf.shape(confidence)[0]
    order = tf.argsort(confidence, stable=True)
    rank = tf.math.invert_permutation(order)
    bins = (rank * num_bins) // tf.maximum(n, 1)
    count = tf.math.unsorted_segment_sum(tf.ones_like(confidence), bins, num_bins)
    correct_sum = tf.math.unsorted_segment_sum(correct, bins, num_bins)
    confidence_sum = tf.math.unsorted_segment_sum(confidence, bins, num_bins)
    return ece_from_statistics(count, correct_sum, confidence_sum)


def negative_log_likelihood(labels, probs, from_logits=False):
    """Mean negative log-likelihood, `mean_i -log p_i(label_i)`.

    With probabilities, `p` is clipped below at 1e-12 so that a confident
    mistake costs about 27.6 nats rather than infinity; pass logits with
    `from_logits=True` for the exact value.

    Args:
        labels: int class indices, `[n]`.
        probs: probabilities `[n, k]` (logits with `from_logits=True`).
        from_logits: whether `probs` holds logits.

    Returns:
        A float32 scalar (nats).
    """
    labels, log_probs, probs = check_inputs(labels, probs, from_logits)
    if log_probs is None:
        log_probs = tf.math.log(tf.maximum(probs, 1e-12))
    picked = tf.gather(log_probs, labels[:, None], batch_dims=1)
    return tf.cast(-tf.reduce_mean(picked), tf.float32)


def brier_score(labels, probs, from_logits=False):
    """Brier score summed over classes, `mean_i sum_k (p_ik - y_ik)^2`.

    Range [0, 2] (Brier 1950), as robustness_metrics and uncertainty-baselines
    report it; divide by the number of classes for the per-class mean.

    Args:
        labels: int class indices, `[n]`.
        probs: probabilities `[n, k]` (logits with `from_logits=True`).
        from_logits: whether `probs` holds logits.

    Returns:
        A float32 scalar.
    """
    labels, _, probs = check_inputs(labels, probs, from_logits)
    onehot = tf.one_hot(labels, tf.shape(probs)[1], dtype=probs.dtype)
    return tf.cast(
        tf.reduce_mean(tf.reduce_sum(tf.square(probs - onehot), axis=-1)),
        tf.float32,
    )


def accuracy(labels, probs, from_logits=False):
    """Top-1 accuracy (ties go to the lowest class index).

    Args:
        labels: int class indices, `[n]`.
        probs: probabilities `[n, k]` (or logits; argmax is the same).
        from_logits: accepted for symmetry with the other metrics.

    Returns:
        A float32 scalar in [0, 1].
    """
    labels, _, probs = check_inputs(labels, probs, from_logits)
    _, prediction = top_label(probs)
    return tf.reduce_mean(tf.cast(tf.equal(prediction, labels), tf.float32))


def reliability_diagram_data(labels, probs, num_bins=DEFAULT_NUM_BINS, from_logits=False):
    """The numbers behind a reliability diagram.

    Args:
        labels: int class indices, `[n]`.
        probs: probabilities `[n, k]` (logits with `from_logits=True`).
        num_bins: number of equal-width bins.
        from_logits: whether `probs` holds logits.

    Returns:
        A dict of numpy arrays and floats: `edges` (`num_bins + 1`), `count`,
        `accuracy` and `confidence` per bin (NaN for empty bins), `ece`.
    """
    count, correct, confidence_sum = bin_statistics(labels, probs, num_bins, from_logits)
    ece = float(ece_from_statistics(count, correct, confidence_sum))
    count = count.numpy()
    with_data = count > 0
    safe = count.clip(min=1)
    return {
        "edges": np.linspace(0.0, 1.0, num_bins + 1),
        "count": count,
        "accuracy": np.where(with_data, correct.numpy() / safe, np.nan),
        "confidence": np.where(with_data, confidence_sum.numpy() / safe, np.nan),
        "ece": ece,
    }


def calibration_summary(labels, logits, num_bins=DEFAULT_NUM_BINS):
    """All the package's metrics of one set of logits, as Python floats.

    Args:
        labels: int class indices, `[n]`.
        logits: `[n, k]` logits.
        num_bins: number of bins for ECE, adaptive ECE and MCE.

    Returns:
        A dict with `accuracy`, `ece`, `adaptive_ece`, `mce`, `nll`, `brier`
        (fractions, nats) and `count`.
    """
    kwargs = {"from_logits": True}
    return {
        "count": int(tf.shape(logits)[0]),
        "accuracy": float(accuracy(labels, logits, **kwargs)),
        "ece": float(expected_calibration_error(labels, logits, num_bins, **kwargs)),
        "adaptive_ece": float(adaptive_calibration_error(labels, logits, num_bins, **kwargs)),
        "mce": float(maximum_calibration_error(labels, logits, num_bins, **kwargs)),
        "nll": float(negative_log_likelihood(labels, logits, **kwargs)),
        "brier": float(brier_score(labels, logits, **kwargs)),
    }


@keras.saving.register_keras_serializable(package="aradals_tf")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error accumulated over batches.

    The metric keeps per-bin sums (count, correct, confidence) in variables
    and computes ECE from them in `result()`, so the value over an epoch is the
    ECE of all its examples, not a mean of per-batch ECEs. The variables sum
    across replicas, so the result is right under `tf.distribute`. Binning
    conventions as in `expected_calibration_error`.

    Args:
        num_bins: number of equal-width confidence bins, 15 by default.
        from_logits: whether the model outputs logits (else probabilities).
        name: metric name.
        dtype: metric dtype.

    Example:

    ```python
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[ExpectedCalibrationError(from_logits=True)],
    )
    ```
    `y_true` may be int class indices (`[n]` or `[n, 1]`) or one-hot /
    soft labels `[n, k]` (their argmax is used).
    """

    def __init__(self, num_bins=DEFAULT_NUM_BINS, from_logits=False, name="ece", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if int(num_bins) < 1:
            raise ValueError(f"num_bins must be >= 1; got {num_bins}.")
        self.num_bins = int(num_bins)
        self.from_logits = bool(from_logits)
        self.bin_count = self.add_variable(
            (self.num_bins,), "zeros", dtype="float32", name="bin_count"
        )
        self.bin_correct = self.add_variable(
            (self.num_bins,), "zeros", dtype="float32", name="bin_correct"
        )
        self.bin_confidence = self.add_variable(
            (self.num_bins,), "zeros", dtype="float32", name="bin_confidence"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank == 2 and y_true.shape[-1] == y_pred.shape[-1] != 1:
            y_true = tf.argmax(y_true, axis=-1)
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        probs = tf.cast(y_pred, tf.float32)
        if self.from_logits:
            probs = tf.nn.softmax(probs, axis=-1)
        count, correct, confidence = _bin_statistics(labels, probs, self.num_bins, sample_weight)
        self.bin_count.assign_add(count)
        self.bin_correct.assign_add(correct)
        self.bin_confidence.assign_add(confidence)

    def result(self):
        return ece_from_statistics(
            tf.convert_to_tensor(self.bin_count),
            tf.convert_to_tensor(self.bin_correct),
            tf.convert_to_tensor(self.bin_confidence),
        )

    def reset_state(self):
        for variable in self.variables:
            variable.assign(tf.zeros_like(variable))

    def get_config(self):
        config = super().get_config()
        config.update({"num_bins": self.num_bins, "from_logits": self.from_logits})
        return config
