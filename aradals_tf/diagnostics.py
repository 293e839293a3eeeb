"""The paper's diagnostic: calibration per equal-size bin of a per-example score.

`calibration_by_robustness` sorts examples by adversarial robustness (and, for
contrast, by confidence), cuts them into bins of equal size and reports each
bin's accuracy, confidence and ECE: AR-AdaLS's finding is that the least
robust bins are the over-confident ones.
"""

import numpy as np
import tensorflow as tf

from aradals_tf import metrics


def _equal_size_bin_table(labels, probs, sort_key, num_bins, ece_bins, key_name):
    """Per-bin calibration of equal-size bins of examples ordered by `sort_key`."""
    confidence, prediction = metrics.top_label(probs)
    correct = tf.cast(tf.equal(prediction, labels), tf.float32)
    n = int(tf.shape(labels)[0])
    if n < num_bins:
        raise ValueError(f"Need at least num_bins = {num_bins} examples; got {n}.")
    order = tf.argsort(sort_key, stable=True).numpy()
    key = np.asarray(sort_key)
    rows = []
    for index, members in enumerate(np.array_split(order, num_bins)):
        members = tf.constant(members)
        bin_labels = tf.gather(labels, members)
        bin_probs = tf.gather(probs, members)
        accuracy_value = float(tf.reduce_mean(tf.gather(correct, members)))
        confidence_value = float(tf.reduce_mean(tf.gather(confidence, members)))
        rows.append(
            {
                "bin": index,
                "count": int(members.shape[0]),
                f"{key_name}_min": float(key[members.numpy()].min()),
                f"{key_name}_max": float(key[members.numpy()].max()),
                "accuracy": accuracy_value,
                "confidence": confidence_value,
                "gap": confidence_value - accuracy_value,
                "ece": float(metrics.expected_calibration_error(bin_labels, bin_probs, ece_bins)),
            }
        )
    return rows


def calibration_by_robustness(
    labels,
    probs,
    robustness,
    num_bins=10,
    from_logits=False,
    ece_bins=metrics.DEFAULT_NUM_BINS,
):
    """Calibration per robustness bin, and per confidence bin for contrast.

    Examples are sorted by robustness radius (never flipped last; ties
    in input order) and cut into `num_bins` bins of equal size (sizes differ by
    at most one); the same is done by top-label confidence. For each bin:
    `count`, the key's range, `accuracy`, mean `confidence`,
    `gap = confidence - accuracy` (> 0: over-confident) and the bin's own
    `ece` (`ece_bins` equal-width bins). AR-AdaLS's finding is that the least
    robust bins are the over-confident ones.

    Args:
        labels: int class indices, `[n]`.
        probs: probabilities `[n, k]` (logits with `from_logits=True`).
        robustness: per-example radius, `[n]` (e.g. from
            `robustness.adversarial_robustness`).
        num_bins: number of equal-size bins (10 by default).
        from_logits: whether `probs` holds logits.
        ece_bins: bins of each bin's ECE.

    Returns:
        `{"by_robustness": [row, ...], "by_confidence": [row, ...]}`, rows as
        dicts of Python numbers; robustness rows have `radius_min/max`,
        confidence rows `confidence_min/max`.
    """
    labels, _, probs = metrics.check_inputs(labels, probs, from_logits)
    robustness = tf.reshape(tf.cast(robustness, tf.float32), [-1])
    if int(robustness.shape[0]) != int(labels.shape[0]):
        raise ValueError("robustness must have one value per example.")
    confidence, _ = metrics.top_label(probs)
    return {
        "by_robustness": _equal_size_bin_table(
            labels, probs, robustness, num_bins, ece_bins, "radius"
        ),
        "by_confidence": _equal_size_bin_table(
            labels, probs, confidence, num_bins, ece_bins, "confidence"
        ),
    }
