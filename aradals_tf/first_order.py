"""The first-order robustness estimate: margin over the input gradient's dual norm.

A DeepFool-style linearisation of the distance to the decision boundary from
one forward and one backward pass (the attack in `robustness` takes T of
each); exact on a linear model's nearest class. AR-AdaLS can sort strata by
it (`strata_by="first_order"`).
"""

import numpy as np
import tensorflow as tf

from aradals_tf import attack
from aradals_tf import robustness


def first_order_radius(model, x, *, norm="inf"):
    """DeepFool-style estimate of the distance to the decision boundary.

    `margin(x) / ||grad_x margin(x)||_*`, with `margin` the predicted class's
    logit minus the best other logit and `||.||_*` the dual norm (L1 for an
    L-inf radius, L2 for L2). Exact for a linear model's nearest class; one
    forward and one backward pass, against T of each for the attack.

    Args:
        model: a callable producing logits (called with `training=False`).
        x: a batch of inputs.
        norm: `"inf"` or 2.

    Returns:
        `(radius, logits)`: float32 `[batch]` estimated radius (>= 0) and the
        clean logits.
    """
    x = tf.stop_gradient(tf.cast(x, tf.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = attack.model_logits(model, x)
        margin = prediction_margin(logits)
        total = tf.reduce_sum(margin)
    return radius_from_margin(margin, tape.gradient(total, x), norm), logits


def prediction_margin(logits):
    """Per-example predicted logit minus the best other logit (>= 0), float32."""
    logits32 = tf.cast(logits, tf.float32)
    prediction = tf.argmax(logits32, axis=-1, output_type=tf.int32)
    return -attack.margin_loss(prediction, logits32)


def radius_from_margin(margin, gradient, norm="inf"):
    """`margin / ||gradient||_*` per example: the first-order radius.

    Args:
        margin: float `[batch]` from `prediction_margin`.
        gradient: the margin's gradient with respect to the inputs, `[batch, ...]`.
        norm: `"inf"` (dual norm L1) or 2.

    Returns:
        float32 `[batch]` radius, without gradient.
    """
    order = attack.norm_order(norm)
    gradient = tf.reshape(tf.cast(gradient, tf.float32), [tf.shape(gradient)[0], -1])
    if order == np.inf:
        dual = tf.reduce_sum(tf.abs(gradient), axis=-1)
    else:
        dual = tf.norm(gradient, axis=-1)
    return tf.stop_gradient(margin / tf.maximum(dual, 1e-12))


def levels_from_radius(radius, eps_max, steps):
    """Maps radii onto the attack's level grid (level l: radius in (l h, (l+1) h]).

    Args:
        radius: float `[n]` radii (`inf` allowed).
        eps_max: the attack's largest radius.
        steps: T; `h = eps_max / T`.

    Returns:
        int32 `[n]` levels in `0..T` (T: beyond eps_max).
    """
    step = eps_max / steps
    radius = tf.minimum(tf.cast(radius, tf.float32), 2.0 * eps_max)
    # The tolerance keeps radii on the grid (0.3 / 0.06) in their level
    # despite float32 rounding.
    level = tf.math.ceil(radius / step - 1e-5) - 1.0
    return tf.cast(tf.clip_by_value(level, 0.0, float(steps)), tf.int32)


def fit_first_order_scale(
    model, x, *, eps_max, steps=10, norm="inf", clip_min=0.0, clip_max=1.0, loss="margin"
):
    """The factor that puts first-order radii on the attack's level grid.

    The first-order estimate is a linearisation; on ReLU networks it is
    systematically smaller than the radius at which the growing-radius attack
    first flips the prediction, so `levels_from_radius(first_order_radius(...))`
    sits below the attack's levels. This returns the scale `s` (searched on a
    0.01 grid in [0.5, 4]) at which the mean level of
    `levels_from_radius(s * radius)` is closest to the attack's mean level on
    `x`: a diagnostic of how far the cheap estimate is from the attack in
    radius units. (AR-AdaLS strata are quantiles of the score, which a scale
    does not change.) Measure it on held-out data, never on the test split.

    Args:
        model: a callable producing logits.
        x: a batch of inputs in `[clip_min, clip_max]`.
        eps_max: the attack's largest radius (`adversarial_robustness`).
        steps: the attack's steps.
        norm: `"inf"` or `"2"`.
        clip_min: smallest valid input value.
        clip_max: largest valid input value.
        loss: the attack's loss, `"margin"` or `"cross_entropy"`.

    Returns:
        `(scale, exact_agreement)`: the float scale and the fraction of
        examples whose scaled first-order level equals the attack's level.

    Example:

    >>> scale, agreement = fit_first_order_scale(model, validation_images, eps_max=0.3)
    """
    _, attack_level = robustness.adversarial_robustness(
        model,
        x,
        eps_max=eps_max,
        steps=steps,
        norm=norm,
        clip_min=clip_min,
        clip_max=clip_max,
        loss=loss,
        # The attack the estimate linearises: both follow the runner-up logit.
        candidates=1,
    )
    attack_level = np.asarray(attack_level)
    radius, _ = first_order_radius(model, x, norm=norm)
    scales = np.round(np.arange(0.5, 4.0 + 1e-9, 0.01), 2)
    # One [scales, n] level matrix: the search is a single vectorised op.
    levels = levels_from_radius(
        scales.astype(np.float32)[:, None] * np.asarray(radius)[None, :], eps_max, steps
    ).numpy()
    gap = np.abs(levels.mean(axis=1) - attack_level.mean())
    best = int(np.argmin(gap))
    return float(scales[best]), float(np.mean(levels[best] == attack_level))
