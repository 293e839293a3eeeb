"""Losses on logits that take integer class labels, for the training models
and the baselines.

- `SoftTargetCrossentropy`: cross-entropy against per-example soft targets
  (what `ARAdaLSModel` and `MixupModel` train on) or integer labels.
- `SparseLabelSmoothingCrossentropy`: uniform label smoothing, the baseline.
- `SparseFocalCrossentropy`: focal loss, the baseline.

Every loss here takes integer class labels, so one dataset of
`(image, label)` serves every method.
"""

import keras
import tensorflow as tf

from aradals_tf import smoothing


def flat_labels(y_true):
    """Integer labels `[n]` or `[n, 1]` as a flat int32 `[n]` tensor."""
    return tf.reshape(tf.cast(y_true, tf.int32), [-1])


def class_labels(y_true, num_classes):
    """Integer labels from integer (`[n]`, `[n, 1]`) or one-hot (`[n, K]`) labels.

    Example:

    >>> class_labels([[0.0, 1.0, 0.0]], 3).numpy()
    array([1], dtype=int32)
    """
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == 2 and y_true.shape[-1] == num_classes and num_classes > 1:
        return tf.argmax(y_true, axis=-1, output_type=tf.int32)
    return flat_labels(y_true)


def _is_soft_target(y_true, y_pred):
    """Whether y_true already holds per-class targets (else int labels)."""
    return (
        y_true.dtype.is_floating
        and y_true.shape.rank == y_pred.shape.rank
        and y_true.shape[-1] is not None
        and y_true.shape[-1] == y_pred.shape[-1]
        and y_true.shape[-1] != 1
    )


@keras.saving.register_keras_serializable(package="aradals_tf")
class SoftTargetCrossentropy(keras.losses.Loss):
    """Cross-entropy on logits against soft targets or integer labels.

    `y_true` is either a `[n, K]` float target distribution (what the
    training models' `train_step` passes) or int labels `[n]` / `[n, 1]`
    (what `evaluate` passes; they become one-hot). Being a Keras `Loss`, it is
    scaled correctly under `tf.distribute`.

    Args:
        name: loss name.
        **kwargs: base `Loss` arguments.
    """

    def __init__(self, name="soft_target_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = tf.convert_to_tensor(y_true)
        if _is_soft_target(y_true, y_pred):
            targets = tf.cast(y_true, y_pred.dtype)
        else:
            targets = tf.one_hot(flat_labels(y_true), tf.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(targets, y_pred, from_logits=True)


@keras.saving.register_keras_serializable(package="aradals_tf")
class SparseLabelSmoothingCrossentropy(keras.losses.Loss):
    """Cross-entropy against uniformly smoothed targets, from integer labels.

    Keras's `SparseCategoricalCrossentropy` has no `label_smoothing`; this is
    `CategoricalCrossentropy(label_smoothing=eps)` on `onehot(y_true)`.

    Args:
        label_smoothing: eps in [0, 1]; targets `(1 - eps) onehot + eps / K`.
        from_logits: whether `y_pred` holds logits (else probabilities).
        name: loss name.
        **kwargs: base `Loss` arguments (`reduction`, `dtype`).
    """

    def __init__(
        self,
        label_smoothing=0.1,
        from_logits=True,
        name="sparse_label_smoothing_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1]; got {label_smoothing}.")
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        targets = smoothing.soft_labels(
            flat_labels(y_true), tf.shape(y_pred)[-1], self.label_smoothing
        )
        return keras.losses.categorical_crossentropy(targets, y_pred, from_logits=self.from_logits)

    def get_config(self):
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing, "from_logits": self.from_logits})
        return config


@keras.saving.register_keras_serializable(package="aradals_tf")
class SparseFocalCrossentropy(keras.losses.Loss):
    """Focal loss (Lin et al. 2017) from integer labels, on logits.

    `-(1 - p_y)^gamma log p_y`; Mukhoti et al. (2020) showed it improves
    calibration (gamma = 3 there). Keras's categorical focal loss on one-hot
    labels with `alpha = 1`.

    Args:
        gamma: focusing parameter >= 0 (0 is plain cross-entropy).
        name: loss name.
        **kwargs: base `Loss` arguments.
    """

    def __init__(self, gamma=3.0, name="sparse_focal_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not float(gamma) >= 0:
            raise ValueError(f"gamma must be >= 0; got {gamma}.")
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        onehot = tf.one_hot(flat_labels(y_true), tf.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_focal_crossentropy(
            onehot, y_pred, alpha=1.0, gamma=self.gamma, from_logits=True
        )

    def get_config(self):
        config = super().get_config()
        config["gamma"] = self.gamma
        return config
