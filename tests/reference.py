"""Plain numpy reference implementations the tests compare the package with.

Written from the definitions, independently of the package's TF code.
"""

import numpy as np


def softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def equal_width_bins(confidence, num_bins):
    # [lo, hi) bins with 1.0 in the last bin.
    return np.minimum((confidence * num_bins).astype(np.int64), num_bins - 1)


def _binned_gaps(labels, probs, bin_of):
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels  # numpy argmax: first maximum
    gaps, weights = [], []
    for b in np.unique(bin_of):
        members = bin_of == b
        gaps.append(abs(correct[members].mean() - confidence[members].mean()))
        weights.append(members.mean())
    return np.array(gaps), np.array(weights)


def ece(labels, probs, num_bins=15):
    gaps, weights = _binned_gaps(labels, probs, equal_width_bins(probs.max(1), num_bins))
    return float((gaps * weights).sum())


def mce(labels, probs, num_bins=15):
    gaps, _ = _binned_gaps(labels, probs, equal_width_bins(probs.max(1), num_bins))
    return float(gaps.max())


def adaptive_ece(labels, probs, num_bins=15):
    n = len(labels)
    order = np.argsort(probs.max(1), kind="stable")
    bin_of = np.empty(n, np.int64)
    bin_of[order] = np.arange(n) * num_bins // n
    gaps, weights = _binned_gaps(labels, probs, bin_of)
    return float((gaps * weights).sum())


def nll(labels, probs):
    return float(-np.mean(np.log(probs[np.arange(len(labels)), labels])))


def brier(labels, probs):
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def calibrated_logits(rng, n, num_classes, scale=2.0):
    """Logits with labels drawn from their own softmax: calibrated by construction."""
    logits = scale * rng.normal(size=(n, num_classes))
    probs = softmax(logits)
    labels = np.array([rng.choice(num_classes, p=p) for p in probs])
    return logits.astype(np.float32), labels.astype(np.int32)


SCORE_BINS = 2048


def score_bins(source, logits, radius=None, eps_max=0.3):
    """AR-AdaLS's histogram bin of each example's score, written out in numpy:
    a monotone map of the raw score onto [0, 1), then 2048 equal bins."""
    logits = np.asarray(logits, np.float64)
    if source == "attack":
        unit = np.asarray(radius, np.float64) / (2 * eps_max)
    elif source == "first_order":
        radius = np.asarray(radius, np.float64)
        unit = radius / (radius + eps_max)
    else:
        if source == "margin":
            top = np.sort(logits, axis=1)
            raw = top[:, -1] - top[:, -2]
        else:  # confidence, as -log(1 - p_max)
            raw = -np.log1p(-softmax(logits).max(axis=1))
        unit = raw / (raw + 1.0)
    return np.clip(np.floor(unit * SCORE_BINS), 0, SCORE_BINS - 1).astype(np.int64)
