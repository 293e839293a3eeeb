"""Per-example adversarial robustness: the radius at which a prediction flips.

The robustness of an input is the smallest perturbation radius at which an
untargeted attack changes the model's predicted class. It is measured with
ONE projected-gradient run whose radius grows with the step: at step
`t = 1..T` the perturbation is projected onto the ball of radius
`radius_t = t * eps_max / T` (and onto the valid pixel range). The first
step whose prediction differs from the reference class gives the example's
level (`t - 1`); its radius is where the margin (reference logit minus the
best other, known at every step) crosses zero between that step and the one
before, so radii are continuous and sort the examples. An example that never
flips gets level `T` and a radius above `eps_max` that sorts by the margin it
has left. Each step is cleverhans's fast-gradient step
(`cleverhans.tf2.utils.optimize_linear`, the core of `fast_gradient_method`)
on the margin loss of the reference class (or its cross-entropy), followed by
cleverhans's `clip_eta` projection; the forward pass that checks for a flip also gives the
next step's gradient, so the whole measurement costs T forward+backward
passes (plus one forward pass), against T x T for a naive sweep of PGD runs
at each of the T radii.

Everything is TensorFlow ops: `adversarial_robustness` runs eagerly (it then
compiles itself with `tf.function`), inside a `tf.function` and inside a Keras
`train_step`, batched, with no per-example Python loop.
"""

import math
import weakref

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.utils import clip_eta
from cleverhans.tf2.utils import optimize_linear

from aradals_tf.choices import ATTACK_LOSSES
from aradals_tf.choices import NORMS

_NORM_ORDERS = {"inf": np.inf, "2": 2}


def _cross_entropy(reference, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=reference, logits=logits)


def margin_loss(reference, logits):
    """Best other logit minus the reference logit (Carlini-Wagner's margin)."""
    reference_logit = tf.gather(logits, reference[:, None], batch_dims=1)[:, 0]
    others = tf.where(tf.one_hot(reference, tf.shape(logits)[-1]) > 0, -np.inf, logits)
    return tf.reduce_max(others, axis=-1) - reference_logit


_LOSS_FUNCTIONS = {"cross_entropy": _cross_entropy, "margin": margin_loss}


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


def model_logits(model, x):
    logits = model(x, training=False)
    if isinstance(logits, (list, tuple, dict)) or logits.shape.rank != 2:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise ValueError(
            f"The model must output logits of shape [batch, num_classes]; got {shape}."
        )
    return logits


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
    compact=True,
):
    """The attack as graph-friendly ops; returns `(radius, level, clean_logits)`.

    Meant for use inside `tf.function` / `train_step` (no input checks
    beyond static ones). See `adversarial_robustness` for the arguments.
    With `compact=True` (the default) each step runs only on the examples
    that have not flipped yet (gathered, and their results scattered back)
    in a `tf.while_loop` that stops when none is left: the same steps on the
    same examples as `compact=False`, which steps the whole batch T times.
    """
    eps_max, steps, order = check_attack_settings(eps_max, steps, norm, clip_min, clip_max)
    if loss not in ATTACK_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(ATTACK_LOSSES)}; got {loss!r}.")
    x = tf.stop_gradient(tf.cast(x, tf.float32))
    step_size = eps_max / steps
    batch = tf.shape(x)[0]

    loss_fn = _LOSS_FUNCTIONS[loss]

    def logits_and_gradient(inputs, reference):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            logits = model_logits(model, inputs)
            if reference is None:
                reference = tf.argmax(logits, axis=-1, output_type=tf.int32)
            # Summed, so that each example's gradient is its own loss's.
            value = tf.reduce_sum(loss_fn(reference, tf.cast(logits, tf.float32)))
        return logits, reference, tape.gradient(value, inputs)

    reference = None if labels is None else tf.cast(tf.reshape(labels, [-1]), tf.int32)
    clean_logits, reference, gradient = logits_and_gradient(x, reference)
    prediction = tf.argmax(clean_logits, axis=-1, output_type=tf.int32)
    # With given labels, an example misclassified from the start has radius 0.
    already_wrong = tf.not_equal(prediction, reference)

    def reference_margin(logits):
        return -margin_loss(reference, tf.cast(logits, tf.float32))

    clean_margin = reference_margin(clean_logits)
    if compact:
        radius, level, final_margin = _compacted_steps(
            logits_and_gradient,
            x,
            reference,
            gradient,
            clean_margin,
            already_wrong,
            steps=steps,
            step_size=step_size,
            order=order,
            clip_min=clip_min,
            clip_max=clip_max,
        )
        radius, level = _finish(
            radius, level, final_margin, clean_margin, already_wrong, eps_max, steps
        )
        return radius, level, clean_logits
    previous_margin = clean_margin
    level = tf.fill([batch], tf.constant(steps, tf.int32))
    radius = tf.fill([batch], tf.constant(np.inf, tf.float32))
    adversarial = x
    for t in range(1, steps + 1):
        adversarial = adversarial + optimize_linear(gradient, step_size, order)
        eta = clip_eta(adversarial - x, order, t * step_size)
        adversarial = x + eta
        if clip_min is not None and clip_max is not None:
            adversarial = tf.clip_by_value(adversarial, clip_min, clip_max)
        adversarial = tf.stop_gradient(adversarial)
        if t < steps:
            logits, _, gradient = logits_and_gradient(adversarial, reference)
        else:
            logits = model_logits(model, adversarial)
        flipped = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), reference)
        first_flip = flipped & (level == steps)
        margin = reference_margin(logits)
        radius = tf.where(
            first_flip, _crossing_radius(previous_margin, margin, t, step_size), radius
        )
        level = tf.where(first_flip, t - 1, level)
        previous_margin = margin
    radius, level = _finish(
        radius, level, previous_margin, clean_margin, already_wrong, eps_max, steps
    )
    return radius, level, clean_logits


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


def _compacted_steps(
    logits_and_gradient,
    x,
    reference,
    gradient,
    clean_margin,
    already_wrong,
    *,
    steps,
    step_size,
    order,
    clip_min,
    clip_max,
):
    """The attack's steps on the examples not yet flipped only.

    Returns `(radius, level, final_margin)` over the whole batch: the radius
    and level of the examples that flip, `steps` for the others, and each
    example's margin at the last step it was attacked.
    """
    batch = tf.shape(x)[0]
    live = tf.where(~already_wrong)[:, 0]
    state = (
        tf.constant(1),
        live,
        tf.gather(x, live),  # adversarial inputs of the live examples
        tf.gather(gradient, live),
        tf.gather(clean_margin, live),  # their margins at the previous step
        tf.fill([batch], tf.constant(steps, tf.int32)),
        tf.fill([batch], tf.constant(np.inf, tf.float32)),
        clean_margin,
    )

    def body(t, live, adversarial, gradient, previous_margin, level, radius, final_margin):
        clean = tf.gather(x, live)
        live_reference = tf.gather(reference, live)
        adversarial = adversarial + optimize_linear(gradient, step_size, order)
        adversarial = clean + clip_eta(
            adversarial - clean, order, tf.cast(t, tf.float32) * step_size
        )
        if clip_min is not None and clip_max is not None:
            adversarial = tf.clip_by_value(adversarial, clip_min, clip_max)
        adversarial = tf.stop_gradient(adversarial)

        # Also at the last step: a tf.cond skipping that gradient measured slower
        # (few examples are still live by then).
        logits, _, gradient = logits_and_gradient(adversarial, live_reference)
        margin = -margin_loss(live_reference, tf.cast(logits, tf.float32))
        flipped = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), live_reference)
        where = live[:, None]
        radius = tf.tensor_scatter_nd_update(
            radius,
            where,
            tf.where(
                flipped,
                _crossing_radius(previous_margin, margin, t, step_size),
                tf.gather(radius, live),
            ),
        )
        level = tf.tensor_scatter_nd_update(
            level, where, tf.where(flipped, t - 1, tf.gather(level, live))
        )
        final_margin = tf.tensor_scatter_nd_update(final_margin, where, margin)
        keep = ~flipped
        return (
            t + 1,
            tf.boolean_mask(live, keep),
            tf.boolean_mask(adversarial, keep),
            tf.boolean_mask(gradient, keep),
            tf.boolean_mask(margin, keep),
            level,
            radius,
            final_margin,
        )

    def condition(t, live, *_):
        return (t <= steps) & (tf.size(live) > 0)

    # The live set shrinks: every per-example loop variable has a free batch size.
    inputs, vector = tf.TensorShape([None, *x.shape[1:]]), tf.TensorShape([None])
    shapes = (tf.TensorShape([]), vector, inputs, inputs, *[vector] * 4)
    _, _, _, _, _, level, radius, final_margin = tf.while_loop(
        condition, body, state, shape_invariants=shapes
    )
    return radius, level, final_margin


def _attack_settings(eps_max, steps, norm, clip_min, clip_max, loss):
    """Checked settings as a hashable tuple of `growing_radius_attack` kwargs."""
    eps_max, steps, order = check_attack_settings(eps_max, steps, norm, clip_min, clip_max)
    if loss not in ATTACK_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(ATTACK_LOSSES)}; got {loss!r}.")
    return (
        ("eps_max", eps_max),
        ("steps", steps),
        ("norm", "inf" if order == np.inf else 2),
        ("clip_min", clip_min),
        ("clip_max", clip_max),
        ("loss", loss),
    )


# One compiled attack per (model, settings); dropped with the model.
_COMPILED = weakref.WeakKeyDictionary()


def _compiled_attack(model, settings):
    per_model = _COMPILED.setdefault(model, {})
    if settings not in per_model:
        kwargs = dict(settings)

        @tf.function(reduce_retracing=True)
        def attack(x, labels):
            return growing_radius_attack(model, x, labels, **kwargs)

        @tf.function(reduce_retracing=True)
        def attack_own_prediction(x):
            return growing_radius_attack(model, x, None, **kwargs)

        per_model[settings] = (attack, attack_own_prediction)
    return per_model[settings]


def _check_range(x, clip_min, clip_max):
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must be a batch of inputs; got shape {x.shape}.")
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


def _check_outputs_logits(model, x):
    probe = np.asarray(model_logits(model, tf.convert_to_tensor(x[:2], tf.float32)))
    if np.all(probe >= 0) and np.allclose(probe.sum(axis=-1), 1.0, atol=1e-4):
        raise ValueError(
            "The model seems to output probabilities (rows sum to 1); the "
            "attack needs logits: remove the final softmax."
        )


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
    settings = _attack_settings(eps_max, steps, norm, clip_min, clip_max, loss)
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
        verbose: 0 silent, 1 progress bar, 2 one line at the end.

    Returns:
        A dict of numpy arrays over the examples: `radius` (float32; above
        `eps_max` where it never flipped, see `adversarial_robustness`),
        `level` (int32, `steps` = never flipped), `confidence` (top-label
        probability of the clean input), `prediction`, `label`, `logits`.
    """
    settings = _attack_settings(eps_max, steps, norm, clip_min, clip_max, loss)
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
