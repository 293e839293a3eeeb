"""Training: the baselines' losses (and, with the next pieces, AR-AdaLS).

Every loss here takes integer class labels and logits, so the same dataset
of `(image, label)` serves every method.
"""

import keras
import tensorflow as tf

from aradals_tf import smoothing


def _flat_labels(y_true):
    return tf.reshape(tf.cast(y_true, tf.int32), [-1])


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
            raise ValueError(
                f"label_smoothing must be in [0, 1]; got {label_smoothing}."
            )
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        targets = smoothing.soft_labels(
            _flat_labels(y_true), tf.shape(y_pred)[-1], self.label_smoothing
        )
        return keras.losses.categorical_crossentropy(
            targets, y_pred, from_logits=self.from_logits
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"label_smoothing": self.label_smoothing, "from_logits": self.from_logits}
        )
        return config
