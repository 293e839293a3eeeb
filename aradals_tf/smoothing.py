"""Label smoothing: soft labels, robustness strata and the AR-AdaLS update.

Soft labels use Keras's form, `(1 - eps) * onehot(y) + eps / K`, with `eps`
a scalar (uniform label smoothing) or one value per example (AR-AdaLS).
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
