"""The growing-radius attack as graph ops: one run, T radii, a continuous flip radius.

At step `t = 1..T` the perturbation is projected onto the ball of radius
`t * eps_max / T` (and onto the valid pixel range). The first step whose
prediction differs from the reference class gives the example's level
(`t - 1`); its radius is where the attack's margin (reference logit minus the
logit it attacks with) crosses zero between that step and the one before, so
radii are continuous and sort the examples. Each step is cleverhans's
fast-gradient step (`cleverhans.tf2.utils.optimize_linear`) followed by its
`clip_eta` projection; the forward pass that checks for a flip also gives the
next step's gradient, so one measurement costs at most T forward+backward
passes, and only the examples not yet flipped are stepped.

The margin loss either follows the runner-up logit (`candidates=1`) or heads
for one target class chosen at the clean input, as DeepFool chooses it: of
the `candidates` largest other logits, the one with the smallest first-order
distance `margin_j / ||grad margin_j||_dual`. On a linear model that is the
nearest decision boundary whenever it is among the candidates, and the
interpolated radius is then the exact distance.

`aradals_tf.robustness` wraps this for eager use (checks, compilation,
datasets); the training step and the exported signature call it directly.
"""

import math

import numpy as np
import tensorflow as tf
from cleverhans.tf2.utils import clip_eta
from cleverhans.tf2.utils import optimize_linear

from aradals_tf.choices import ATTACK_LOSSES
from aradals_tf.choices import NORMS

_NORM_ORDERS = {"inf": np.inf, "2": 2}

# `candidates=None` means this many with the margin loss (a cross-entropy step
# has no target class, so 1 there).
DEFAULT_CANDIDATES = 3


def margin_loss(reference, logits):
    """Best other logit minus the reference logit (Carlini-Wagner's margin)."""
    reference_logit = tf.gather(logits, reference[:, None], batch_dims=1)[:, 0]
    others = tf.where(tf.one_hot(reference, tf.shape(logits)[-1]) > 0, -np.inf, logits)
    return tf.reduce_max(others, axis=-1) - reference_logit


def norm_order(norm):
    key = "inf" if norm in (np.inf, "inf", "linf", "Linf") else str(norm)
    if key not in NORMS:
        raise ValueError(f"norm must be 'inf' or 2; got {norm!r}.")
    return _NORM_ORDERS[key]


def check_attack_settings(eps_max, steps, norm="inf", clip_min=0.0, clip_max=1.0):
    """Validates attack settings; returns `(eps_max, steps, norm order)`.

    Raises:
        ValueError: eps_max not a finite number > 0, steps not an int >= 1,
            an unknown norm or clip_min >= clip_max.
    """
    try:
        eps_max = float(eps_max)
    except (TypeError, ValueError):
        raise ValueError(f"eps_max must be a number > 0; got {eps_max!r}.") from None
    if not (eps_max > 0 and math.isfinite(eps_max)):
        raise ValueError(f"eps_max must be a finite number > 0; got {eps_max}.")
    if isinstance(steps, bool) or int(steps) != steps or int(steps) < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}.")
    if clip_min is not None and clip_max is not None and not clip_min < clip_max:
        raise ValueError(f"clip_min must be < clip_max; got {clip_min}, {clip_max}.")
    return eps_max, int(steps), norm_order(norm)


def check_candidates(candidates, loss):
    """The number of target candidates `candidates` stands for with `loss`.

    Raises:
        ValueError: an unknown loss, candidates not an int >= 1, or > 1 with
            the cross-entropy loss (which has no target class).
    """
    if loss not in ATTACK_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(ATTACK_LOSSES)}; got {loss!r}.")
    if candidates is None:
        return DEFAULT_CANDIDATES if loss == "margin" else 1
    if isinstance(candidates, bool) or int(candidates) != candidates or int(candidates) < 1:
        raise ValueError(f"candidates must be an integer >= 1; got {candidates!r}.")
    if int(candidates) > 1 and loss != "margin":
        raise ValueError(
            "candidates > 1 chooses a target class for the margin loss; with "
            "loss='cross_entropy' pass candidates=1."
        )
    return int(candidates)


def model_logits(model, x):
    logits = model(x, training=False)
    if isinstance(logits, (list, tuple, dict)) or logits.shape.rank != 2:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise ValueError(
            f"The model must output logits of shape [batch, num_classes]; got {shape}."
        )
    return logits


def _logit(logits, index):
    return tf.gather(logits, index[:, None], batch_dims=1)[:, 0]


def _attack_margin(logits, reference, target):
    """Reference logit minus the attacked one: the runner-up, or `target`."""
    logits = tf.cast(logits, tf.float32)
    if target is None:
        return -margin_loss(reference, logits)
    return _logit(logits, reference) - _logit(logits, target)


def _dual_norm(gradient, order):
    flat = tf.reshape(gradient, [tf.shape(gradient)[0], -1])
    if order == np.inf:  # the L-inf ball's dual is L1
        return tf.reduce_sum(tf.abs(flat), axis=-1)
    return tf.norm(flat, axis=-1)


def _nearest_target(model, x, reference, candidates, order):
    """DeepFool's choice among the `candidates` largest other logits.

    Returns `(clean_logits, reference, target, gradient)`: `gradient` is that
    of the loss `z_target - z_reference` at `x`, the first step's direction.
    """
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        logits = model_logits(model, x)
        if reference is None:
            reference = tf.argmax(logits, axis=-1, output_type=tf.int32)
        float_logits = tf.cast(logits, tf.float32)
        num_classes = logits.shape[-1]
        if num_classes is not None:  # with two classes the runner-up is the only one
            candidates = min(candidates, num_classes - 1)
        others = tf.where(tf.one_hot(reference, tf.shape(logits)[-1]) > 0, -np.inf, float_logits)
        top = tf.math.top_k(others, k=candidates).indices
        margins = [
            _logit(float_logits, reference) - _logit(float_logits, top[:, i])
            for i in range(candidates)
        ]
        # Summed inside the tape, so that each example's gradient is its own.
        totals = [tf.reduce_sum(margin) for margin in margins]
    # One backward pass per candidate, through the one forward pass.
    gradients = [-tape.gradient(total, x) for total in totals]
    del tape
    distance = tf.stack(
        [m / tf.maximum(_dual_norm(g, order), 1e-12) for m, g in zip(margins, gradients)], axis=1
    )
    choice = tf.argmin(distance, axis=1, output_type=tf.int32)
    target = _logit(top, choice)
    gradient = tf.gather(tf.stack(gradients, axis=1), choice[:, None], batch_dims=1)[:, 0]
    return logits, reference, target, gradient


def growing_radius_attack(
    model,
    x,
    labels=None,
    *,
    eps_max,
    steps=10,
    norm="inf",
    clip_min=0.0,
    clip_max=1.0,
    loss="margin",
    candidates=1,
    compact=True,
):
    """The attack as graph-friendly ops; returns `(radius, level, clean_logits)`.

    Meant for use inside `tf.function` / `train_step` (no input checks
    beyond static ones). See `aradals_tf.robustness.adversarial_robustness`
    for the arguments; `candidates` is an int here (1: follow the runner-up
    logit, today's cheapest; k > 1: head for the nearest of the k largest
    other logits, k - 1 extra backward passes at the clean input).
    With `compact=True` (the default) each step runs only on the examples
    that have not flipped yet (gathered, and their results scattered back)
    and each step is skipped once none is left: the same steps on the
    same examples as `compact=False`, which steps the whole batch T times.
    """
    eps_max, steps, order = check_attack_settings(eps_max, steps, norm, clip_min, clip_max)
    candidates = check_candidates(candidates, loss)
    x = tf.stop_gradient(tf.cast(x, tf.float32))
    step_size = eps_max / steps

    def logits_and_gradient(inputs, reference, target):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            logits = model_logits(model, inputs)
            if reference is None:
                reference = tf.argmax(logits, axis=-1, output_type=tf.int32)
            if loss == "margin":
                value = -_attack_margin(logits, reference, target)
            else:
                value = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=reference, logits=tf.cast(logits, tf.float32)
                )
            # Summed, so that each example's gradient is its own loss's.
            value = tf.reduce_sum(value)
        return logits, reference, tape.gradient(value, inputs)

    reference = None if labels is None else tf.cast(tf.reshape(labels, [-1]), tf.int32)
    if candidates > 1:
        clean_logits, reference, target, gradient = _nearest_target(
            model, x, reference, candidates, order
        )
    else:
        target = None
        clean_logits, reference, gradient = logits_and_gradient(x, reference, None)
    prediction = tf.argmax(clean_logits, axis=-1, output_type=tf.int32)
    # With given labels, an example misclassified from the start has radius 0.
    already_wrong = tf.not_equal(prediction, reference)
    clean_margin = _attack_margin(clean_logits, reference, target)
    settings = dict(steps=steps, step_size=step_size, order=order, clip=(clip_min, clip_max))
    if compact:
        radius, level, final_margin = _compacted_steps(
            model, logits_and_gradient, x, reference, target, gradient, clean_margin, already_wrong,
            **settings,
        )  # fmt: skip
    else:
        radius, level, final_margin = _whole_batch_steps(
            model, logits_and_gradient, x, reference, target, gradient, clean_margin, **settings
        )
    radius, level = _finish(
        radius, level, final_margin, clean_margin, already_wrong, eps_max, steps
    )
    return radius, level, clean_logits


def _step(adversarial, clean, gradient, t, step_size, order, clip):
    """One fast-gradient step, projected onto the radius-t ball and the box."""
    adversarial = adversarial + optimize_linear(gradient, step_size, order)
    adversarial = clean + clip_eta(adversarial - clean, order, tf.cast(t, tf.float32) * step_size)
    if clip[0] is not None and clip[1] is not None:
        adversarial = tf.clip_by_value(adversarial, clip[0], clip[1])
    return tf.stop_gradient(adversarial)


def _crossing_radius(previous_margin, margin, t, step_size):
    """The margin is >= 0 at step t - 1 and <= 0 at step t: the radius where
    the straight line between the two crosses zero (exact when the margin
    falls linearly along the steps, as on a linear model)."""
    crossing = previous_margin / tf.maximum(previous_margin - margin, 1e-12)
    return (tf.cast(t - 1, tf.float32) + tf.clip_by_value(crossing, 0.0, 1.0)) * step_size


def _finish(radius, level, final_margin, clean_margin, already_wrong, eps_max, steps):
    """`(radius, level)` with the never-flipped and already-wrong cases filled in."""
    # Never flipped: a score in (eps_max, 2 eps_max) that grows with the share
    # of the clean margin left after the last step, so that these sort too.
    remaining = tf.maximum(final_margin, 0.0) / tf.maximum(clean_margin, 1e-12)
    radius = tf.where(level < steps, radius, eps_max * (1.0 + remaining / (1.0 + remaining)))
    radius = tf.where(already_wrong, 0.0, radius)
    level = tf.where(already_wrong, 0, level)
    return tf.stop_gradient(radius), tf.stop_gradient(level)


def _whole_batch_steps(
    model, logits_and_gradient, x, reference, target, gradient, clean_margin, *, steps, **settings
):
    """The reference loop: every step on the whole batch (`compact=False`)."""
    batch = tf.shape(x)[0]
    previous_margin = clean_margin
    level = tf.fill([batch], tf.constant(steps, tf.int32))
    radius = tf.fill([batch], tf.constant(np.inf, tf.float32))
    adversarial = x
    for t in range(1, steps + 1):
        adversarial = _step(adversarial, x, gradient, t, **settings)
        if t < steps:
            logits, _, gradient = logits_and_gradient(adversarial, reference, target)
        else:
            logits = model_logits(model, adversarial)
        flipped = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), reference)
        first_flip = flipped & (level == steps)
        margin = _attack_margin(logits, reference, target)
        radius = tf.where(
            first_flip, _crossing_radius(previous_margin, margin, t, settings["step_size"]), radius
        )
        level = tf.where(first_flip, t - 1, level)
        previous_margin = margin
    return radius, level, previous_margin


def _compacted_steps(
    model,
    logits_and_gradient,
    x,
    reference,
    target,
    gradient,
    clean_margin,
    already_wrong,
    *,
    steps,
    step_size,
    **settings,
):
    """The attack's steps on the examples not yet flipped only.

    Returns `(radius, level, final_margin)` over the whole batch: the radius
    and level of the examples that flip, `steps` for the others, and the
    margin after the last step of those that never flip (the clean margin
    elsewhere; `_finish` reads it only where the level is `steps`).
    """
    batch = tf.shape(x)[0]
    live = tf.where(~already_wrong)[:, 0]
    # The live examples' index, clean and adversarial inputs, gradient, and
    # margin at the previous step: gathered once per step by one index.
    state = (
        live,
        tf.gather(x, live),
        tf.gather(x, live),
        tf.gather(gradient, live),
        tf.gather(clean_margin, live),
    )
    no_flips = (tf.zeros([0], tf.int64), tf.zeros([0], tf.float32))

    def body(t, live, clean, adversarial, gradient, previous_margin):
        live_reference = tf.gather(reference, live)
        live_target = None if target is None else tf.gather(target, live)
        adversarial = _step(adversarial, clean, gradient, t, step_size, **settings)
        if t < steps:
            logits, _, gradient = logits_and_gradient(adversarial, live_reference, live_target)
        else:  # the last step needs no gradient (the loop is unrolled: no tf.cond)
            logits = model_logits(model, adversarial)
        margin = _attack_margin(logits, live_reference, live_target)
        flipped = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), live_reference)
        kept, gone = tf.where(~flipped)[:, 0], tf.where(flipped)[:, 0]
        crossing = _crossing_radius(previous_margin, margin, t, step_size)
        state = tuple(tf.gather(v, kept) for v in (live, clean, adversarial, gradient, margin))
        return state, (tf.gather(live, gone), tf.gather(crossing, gone))

    # Unrolled, each step in a tf.cond that skips it once no example is live
    # (the backbone's Conv2D fails on an empty batch). The same loop as a
    # tf.while_loop ran at one of two speeds from one process to the next on
    # this oneDNN CPU build, the slower barely faster than the whole batch
    # (docs: the scorer study); unrolled, it ran at the faster one every time.
    # Each step hands back the examples that flipped in it; they are written
    # into the batch's results once, after the loop.
    flips = []
    for t in range(1, steps + 1):
        state, flipped = tf.cond(
            tf.size(state[0]) > 0,
            lambda state=state, t=t: body(t, *state),
            lambda state=state: (state, no_flips),
        )
        flips.append(flipped)
    where = tf.concat([index for index, _ in flips], 0)[:, None]
    level = tf.tensor_scatter_nd_update(
        tf.fill([batch], tf.constant(steps, tf.int32)),
        where,
        tf.concat([tf.fill(tf.shape(index), t) for t, (index, _) in enumerate(flips)], 0),
    )
    radius = tf.tensor_scatter_nd_update(
        tf.fill([batch], tf.constant(np.inf, tf.float32)),
        where,
        tf.concat([crossing for _, crossing in flips], 0),
    )
    live, _, _, _, margin = state
    final_margin = tf.tensor_scatter_nd_update(clean_margin, live[:, None], margin)
    return radius, level, final_margin
