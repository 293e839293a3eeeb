"""The mixup baseline as a soft-target Keras model."""

import keras
import tensorflow as tf

from aradals_tf import soft_target


@keras.saving.register_keras_serializable(package="aradals_tf")
class MixupModel(soft_target.SoftTargetModel):
    """Mixup baseline (Zhang et al. 2018; Thulasidasan et al. 2019 on calibration).

    Each batch is mixed with a shuffled copy of itself: `x = lam x_i + (1 -
    lam) x_j`, targets mixed likewise, `lam ~ Beta(alpha, alpha)` per batch.

    Args:
        backbone: a `keras.Model` producing logits.
        num_classes: K.
        alpha: Beta distribution parameter (0.2 by default).
        seed: seed of the mixing draws.
        **kwargs: base `Model` arguments.
    """

    def __init__(self, backbone, num_classes, alpha=0.2, seed=None, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        if not float(alpha) > 0:
            raise ValueError(f"mixup alpha must be > 0; got {alpha}.")
        self.alpha = float(alpha)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def soft_targets(self, x, labels, index=None):
        lam = keras.random.beta((), self.alpha, self.alpha, seed=self.seed_generator)
        permutation = keras.random.shuffle(tf.range(tf.shape(labels)[0]), seed=self.seed_generator)
        onehot = tf.one_hot(labels, self.num_classes)
        mixed_x = lam * x + (1.0 - lam) * tf.gather(x, permutation)
        mixed_targets = lam * onehot + (1.0 - lam) * tf.gather(onehot, permutation)
        dominant = tf.where(lam >= 0.5, labels, tf.gather(labels, permutation))
        return mixed_x, mixed_targets, dominant, None

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "seed": self.seed})
        return config
