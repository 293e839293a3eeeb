"""Per-example robustness scores: what sorts examples into AR-AdaLS strata.

A `ScoreSource` maps a batch to a score in [0, 1) that grows with
robustness, and the score to one of `SCORE_BINS` histogram bins. The
sources (`strata_by`):

- `"attack"`: the growing-radius cleverhans attack's continuous flip radius
  (`attack.growing_radius_attack`), T forward and backward passes;
- `"first_order"`: margin over the dual norm of its input gradient, one
  forward and one backward pass;
- `"margin"`: the top-2 logit margin, and `"confidence"`: the top-label
  probability, from one forward pass.

Every source scores the backbone in inference mode (`training=False`), for
training and validation examples alike: with BatchNorm or dropout a
training-mode pass would score an example by the batch it sits in (and a
cached score by a batch of the few examples due that step).
"""

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import attack
from aradals_tf import first_order
from aradals_tf.choices import STRATA_SOURCES

# Bins of the fixed histogram of normalised scores in [0, 1) whose quantiles
# are the stratum thresholds: fine enough that strata are of equal size to a
# fraction of a percent of an epoch of a few thousand examples.
SCORE_BINS = 2048

# The radius at which a first-order score is 1/2: any positive scale sorts
# the examples the same way; this one spreads pixel-scale radii over the bins.
FIRST_ORDER_SCALE = 0.1


def score_bins(score):
    """Histogram bin of each normalised score in [0, 1): `floor(score * SCORE_BINS)`."""
    bins = tf.floor(tf.cast(score, tf.float32) * SCORE_BINS)
    return tf.cast(tf.clip_by_value(bins, 0.0, SCORE_BINS - 1.0), tf.int32)


def _check_eps_max(eps_max, norm, clip_min, clip_max):
    if eps_max is None:
        raise ValueError(
            "strata_by='attack' needs eps_max, the attack's largest radius in input "
            "units (0.3 for MNIST-like data, 8/255 for CIFAR-like data)."
        )
    eps_max = attack.check_attack_settings(eps_max, 1, norm, clip_min, clip_max)[0]
    if attack.norm_order(norm) == np.inf and None not in (clip_min, clip_max):
        if eps_max > clip_max - clip_min:
            raise ValueError(
                f"eps_max must be in (0, {clip_max - clip_min:g}] (the input range) for "
                f"the L-inf attack; got {eps_max}."
            )
    return eps_max


@keras.saving.register_keras_serializable(package="aradals_tf")
class ScoreSource:
    """The per-example robustness score of one `strata_by` source.

    Args:
        strata_by: `"attack"`, `"first_order"`, `"margin"` or `"confidence"`.
        eps_max: the attack's largest radius (`"attack"` only; required there).
        attack_steps: T, the attack's steps (10).
        norm: `"inf"` or `"2"`, the attack's and the first-order estimate's norm.
        attack_loss: `"margin"` or `"cross_entropy"` (see `attack`).
        attack_candidates: 1 (follow the runner-up logit) or k > 1 (the
            nearest of the k largest other logits).
        clip_min: smallest valid input value.
        clip_max: largest valid input value.

    Example:

    >>> source = ScoreSource("attack", eps_max=0.3)
    >>> score, logits = source(backbone, images)   # score in [0, 1), low = fragile
    """

    def __init__(
        self,
        strata_by="attack",
        eps_max=None,
        attack_steps=10,
        norm="inf",
        attack_loss="margin",
        attack_candidates=1,
        clip_min=0.0,
        clip_max=1.0,
    ):
        if strata_by not in STRATA_SOURCES:
            raise ValueError(
                f"strata_by must be one of {', '.join(STRATA_SOURCES)}; got {strata_by!r}."
            )
        self.strata_by = strata_by
        self.norm = "inf" if attack.norm_order(norm) == np.inf else "2"
        self.clip_min, self.clip_max = clip_min, clip_max
        self.attack_loss = attack_loss
        self.attack_candidates = attack.check_candidates(attack_candidates, attack_loss)
        self.eps_max = None
        self.attack_steps = int(attack_steps)
        if strata_by == "attack":
            self.eps_max = _check_eps_max(eps_max, norm, clip_min, clip_max)
            self.attack_steps = attack.check_attack_settings(
                self.eps_max, attack_steps, norm, clip_min, clip_max
            )[1]
        elif eps_max is not None:
            raise ValueError(
                f"eps_max is the attack's radius; strata_by={strata_by!r} runs no attack "
                "(leave eps_max unset)."
            )

    @property
    def costly(self):
        """Whether the score costs passes of its own (which a score cache saves)."""
        return self.strata_by in ("attack", "first_order")

    def __call__(self, backbone, x):
        """`(score, logits)`: float32 `[n]` in [0, 1) and the clean logits, in
        inference mode and without gradient."""
        x = tf.cast(x, tf.float32)
        if self.strata_by == "attack":
            radius, _, logits = attack.growing_radius_attack(
                backbone,
                x,
                eps_max=self.eps_max,
                steps=self.attack_steps,
                norm=self.norm,
                clip_min=self.clip_min,
                clip_max=self.clip_max,
                loss=self.attack_loss,
                candidates=self.attack_candidates,
            )
            score = radius / (2.0 * self.eps_max)  # never-flipped radii are < 2 eps_max
        elif self.strata_by == "first_order":
            radius, logits = first_order.first_order_radius(backbone, x, norm=self.norm)
            score = radius / (radius + FIRST_ORDER_SCALE)
        else:
            logits = attack.model_logits(backbone, x)
            score = self.score_of_logits(logits)
        return tf.stop_gradient(score), tf.stop_gradient(logits)

    def score_of_logits(self, logits):
        """The margin or confidence score of given logits (the forward-pass sources)."""
        logits = tf.cast(logits, tf.float32)
        if self.strata_by == "margin":
            raw = first_order.prediction_margin(logits)
        elif self.strata_by == "confidence":  # -log(1 - p_max), without rounding 1 - p to 0
            top = tf.one_hot(tf.argmax(logits, axis=-1), tf.shape(logits)[-1]) > 0
            others = tf.where(top, -np.inf, logits)
            raw = tf.reduce_logsumexp(logits, axis=-1) - tf.reduce_logsumexp(others, axis=-1)
        else:
            raise ValueError(f"strata_by={self.strata_by!r} is not a score of the logits alone.")
        return raw / (raw + 1.0)

    def get_config(self):
        return {
            "strata_by": self.strata_by,
            "eps_max": self.eps_max,
            "attack_steps": self.attack_steps,
            "norm": self.norm,
            "attack_loss": self.attack_loss,
            "attack_candidates": self.attack_candidates,
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
