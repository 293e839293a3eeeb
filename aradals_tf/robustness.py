"""Per-example adversarial robustness: the radius at which a prediction flips.

The robustness of an input is the smallest perturbation radius at which an
untargeted attack changes the model's predicted class. It is measured with
ONE projected-gradient run whose radius grows with the step
(`aradals_tf.attack`): at step `t = 1..T` the perturbation is projected onto
the ball of radius `t * eps_max / T`; the radius is where the margin crosses
zero between the last step before the flip and the flip, so radii are
continuous and sort the examples; an example that never flips gets a radius
above `eps_max` that sorts by the margin it has left. The whole measurement
costs at most T forward+backward passes, and only on the examples not yet
flipped, against T x T for a naive sweep of PGD runs at each of the T radii.

This module is the eager, checked entry point: `adversarial_robustness`
compiles the attack with `tf.function` once per model and settings (and runs
inside a `tf.function` too), `score_dataset` scores a whole dataset.
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from aradals_tf.attack import check_attack_settings
from aradals_tf.attack import check_candidates
from aradals_tf.attack import growing_radius_attack
from aradals_tf.attack import margin_loss
from aradals_tf.attack import model_logits
from aradals_tf.attack import norm_order

# The graph-level names, kept importable from here for older callers.
__all__ = [
    "adversarial_robustness",
    "score_dataset",
    "check_attack_settings",
    "check_candidates",
    "growing_radius_attack",
    "margin_loss",
    "model_logits",
    "norm_order",
]


def _attack_settings(eps_max, steps, norm, clip_min, clip_max, loss, candidates):
    """Checked settings as a hashable tuple of `growing_radius_attack` kwargs."""
    eps_max, steps, order = check_attack_settings(eps_max, steps, norm, clip_min, clip_max)
    candidates = check_candidates(candidates, loss)
    return (
        ("eps_max", eps_max),
        ("steps", steps),
        ("norm", "inf" if order == np.inf else 2),
        ("clip_min", clip_min),
        ("clip_max", clip_max),
        ("loss", loss),
        ("candidates", candidates),
    )


# One compiled attack per (model, settings); dropped with the model: the
# functions reach the model through a weak reference, since a value that held
# it would keep its own key alive.
_COMPILED = weakref.WeakKeyDictionary()


def _compiled_attack(model, settings):
    per_model = _COMPILED.setdefault(model, {})
    if settings not in per_model:
        kwargs = dict(settings)
        model_ref = weakref.ref(model)

        @tf.function(reduce_retracing=True)
        def attack(x, labels):
            return growing_radius_attack(model_ref(), x, labels, **kwargs)

        @tf.function(reduce_retracing=True)
        def attack_own_prediction(x):
            return growing_radius_attack(model_ref(), x, None, **kwargs)

        per_model[settings] = (attack, attack_own_prediction)
    return per_model[settings]


def _check_range(x, clip_min, clip_max):
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must be a batch of inputs; got shape {x.shape}.")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch: nothing to attack.")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf.")
    if (clip_min is not None and x.min() < clip_min) or (
        clip_max is not None and x.max() > clip_max
    ):
        raise ValueError(
            f"x has values in [{x.min():.4g}, {x.max():.4g}], outside "
            f"[clip_min, clip_max] = [{clip_min}, {clip_max}]; scale the "
            "inputs or pass matching clip_min/clip_max."
        )


# Models whose outputs were checked to be logits: the check costs an eager
# forward pass, which a scorer called batch by batch would pay every time.
_CHECKED_LOGITS = weakref.WeakSet()


def _check_outputs_logits(model, x):
    if model in _CHECKED_LOGITS:
        return
    probe = np.asarray(model_logits(model, tf.convert_to_tensor(x[:2], tf.float32)))
    if np.all(probe >= 0) and np.allclose(probe.sum(axis=-1), 1.0, atol=1e-4):
        raise ValueError(
            "The model seems to output probabilities (rows sum to 1); the "
            "attack needs logits: remove the final softmax."
        )
    _CHECKED_LOGITS.add(model)


def adversarial_robustness(
    model,
    x,
    *,
    eps_max,
    steps=10,
    norm="inf",
    labels=None,
    clip_min=0.0,
    clip_max=1.0,
    loss="margin",
    candidates=None,
):
    """Per-example adversarial robustness radius from one growing-radius attack.

    Args:
        model: a callable (Keras model) mapping a batch of inputs to logits
            `[batch, num_classes]`; called with `training=False`.
        x: a batch of inputs in `[clip_min, clip_max]`.
        eps_max: the largest radius tried (in input units, L-inf or L2).
        steps: T, the number of attack steps and radii
            (`radius_t = t * eps_max / T`).
        norm: `"inf"` (default) or `2`.
        labels: optional int labels; by default the attack targets the
            model's own prediction, so it works on unlabelled data. With
            labels, an already misclassified example gets radius 0.
        clip_min: smallest valid input value (None: no range projection).
        clip_max: largest valid input value.
        loss: what each step ascends: `"margin"` (default), the best other
            logit minus the reference logit, or `"cross_entropy"` of the
            reference class (cleverhans's default). The margin's gradient
            points at the nearest competing class and does not vanish on very
            confident inputs (on a linear model, whose exact L-inf distance
            to the boundary is known, it brackets that distance more often
            than cross-entropy does; docs: measuring robustness).
        candidates: which class the margin attacks. None (default): the
            nearest of the 3 largest other logits, nearest by the first-order
            distance `margin_j / ||grad margin_j||_dual` at the clean input
            (DeepFool's choice, 2 extra backward passes once); k: among the k
            largest (the number of classes minus 1 considers them all); 1:
            the runner-up logit at every step, the cheapest. Must be 1 with
            `loss="cross_entropy"` (None means 1 there).

    Returns:
        `(radius, level)`. `radius`, float32 `[batch]`: where the prediction
        flips, the radius at which the margin (reference logit minus the
        best other) crosses zero, interpolated linearly between the last
        step with a positive margin and the first without one, in
        `((level) h, (level + 1) h]` with `h = eps_max / steps`; where it
        never flips within `eps_max`, a score in `(eps_max, 2 eps_max)` that
        grows with the share of the clean margin left after the last step,
        so that these examples sort too. `level`, int32 `[batch]` in
        `0..steps-1`: the step grid (flip at the attack's step `level + 1`),
        `steps` meaning never flipped.

    Raises:
        ValueError: eps_max <= 0, steps < 1, inputs outside
            [clip_min, clip_max], or a model whose output is not rank-2
            logits.

    Example:

    >>> radius, level = adversarial_robustness(model, images, eps_max=0.3)
    """
    settings = _attack_settings(eps_max, steps, norm, clip_min, clip_max, loss, candidates)
    if not tf.executing_eagerly():
        radius, level, _ = growing_radius_attack(model, x, labels, **dict(settings))
        return radius, level
    _check_range(x, clip_min, clip_max)
    _check_outputs_logits(model, x)
    x = tf.convert_to_tensor(x, tf.float32)
    attack, attack_own_prediction = _compiled_attack(model, settings)
    if labels is None:
        radius, level, _ = attack_own_prediction(x)
    else:
        radius, level, _ = attack(x, tf.convert_to_tensor(labels, tf.int32))
    return radius, level


def score_dataset(
    model,
    dataset,
    *,
    eps_max,
    steps=10,
    norm="inf",
    batch_size=250,
    clip_min=0.0,
    clip_max=1.0,
    loss="margin",
    candidates=None,
    verbose=1,
):
    """Scores every example of a dataset; returns numpy arrays.

    Args:
        model: a Keras model producing logits.
        dataset: an unbatched `tf.data.Dataset` of `(image, label)`.
        eps_max: largest radius.
        steps: attack steps T.
        norm: `"inf"` or 2.
        batch_size: examples attacked together.
        clip_min: smallest valid input value.
        clip_max: largest valid input value.
        loss: `"cross_entropy"` or `"margin"` (see `adversarial_robustness`).
        candidates: the margin's target choice (see `adversarial_robustness`).
        verbose: 0 silent, 1 progress bar, 2 one line at the end.

    Returns:
        A dict of numpy arrays over the examples: `radius` (float32; above
        `eps_max` where it never flipped, see `adversarial_robustness`),
        `level` (int32, `steps` = never flipped), `confidence` (top-label
        probability of the clean input), `prediction`, `label`, `logits`.
    """
    settings = _attack_settings(eps_max, steps, norm, clip_min, clip_max, loss, candidates)
    _, attack_own_prediction = _compiled_attack(model, settings)
    batches = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    count = int(batches.cardinality())
    progress = (
        keras.utils.Progbar(count if count >= 0 else None, verbose=verbose, unit_name="batch")
        if verbose
        else None
    )
    parts = {"radius": [], "level": [], "logits": [], "label": []}
    for index, (images, labels) in enumerate(batches):
        _check_range(images, clip_min, clip_max)
        if index == 0:
            _check_outputs_logits(model, images)
        radius, level, logits = attack_own_prediction(images)
        parts["radius"].append(radius.numpy())
        parts["level"].append(level.numpy())
        parts["logits"].append(np.asarray(logits, np.float32))
        parts["label"].append(labels.numpy())
        if progress:
            progress.update(index + 1)
    result = {key: np.concatenate(values) for key, values in parts.items()}
    probs = tf.nn.softmax(result["logits"]).numpy()
    result["confidence"] = probs.max(axis=1)
    result["prediction"] = probs.argmax(axis=1).astype(np.int32)
    result["label"] = result["label"].astype(np.int32)
    return result
