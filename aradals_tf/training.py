"""Training models: AR-AdaLS as a Keras model on its soft-target base.

- `ARAdaLSModel(backbone, ...)`: a `keras.Model` whose `train_step` measures
  the robustness of each batch with the growing-radius cleverhans attack (or a
  cheaper estimate), puts every example into its robustness stratum and trains
  on per-example soft labels `(1 - eps_r) onehot + eps_r / K`.
- `StrataThresholds`: the callback that `ARAdaLSModel.fit` adds to turn each
  epoch's histogram of training robustness into stratum thresholds.

Their eps adapts with the `adaptive_smoothing.AdaptiveSmoothing` callback;
the losses live in `losses`.
"""

import warnings

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import attack
from aradals_tf import first_order
from aradals_tf import score_cache as score_cache_lib
from aradals_tf import smoothing
from aradals_tf.choices import ATTACK_LOSSES
from aradals_tf.choices import EPS_UPDATES
from aradals_tf.choices import STRATA_SOURCES
from aradals_tf.soft_target import SoftTargetModel

# Bins of the fixed histogram of normalised scores in [0, 1) whose quantiles
# are the stratum thresholds: fine enough that strata are of equal size to a
# fraction of a percent of an epoch of a few thousand examples.
SCORE_BINS = 2048

# The scores that cost passes of their own, which a score cache saves.
CACHED_SOURCES = ("attack", "first_order")


@keras.saving.register_keras_serializable(package="aradals_tf")
class ARAdaLSModel(SoftTargetModel):
    """Adversarial-robustness-based adaptive label smoothing (Qin et al. 2021).

    `train_step` scores each example of the batch on the current weights,
    puts it into a stratum with the current thresholds and trains on the
    soft labels `(1 - eps_r) onehot + eps_r / K` of its stratum `r`. The
    score that sorts examples is `strata_by`:

    - `"attack"`: the growing-radius cleverhans attack's continuous radius
      (T forward+backward passes per batch; `training=False`);
    - `"first_order"`: margin / dual norm of its input gradient, from the
      training forward pass plus one backward pass to the inputs;
    - `"margin"`: the top-2 logit margin, and `"confidence"`: the top-label
      probability, both from the training forward pass at no extra cost.

    The three forward-pass scores use the training pass (`training=True`), so
    validation examples are scored in training mode too (BatchNorm statistics
    restored afterwards) and bucketed with the same thresholds. Strata have
    equal size: each score is mapped monotonically onto [0, 1) and counted in
    a fine fixed-bin histogram over the epoch; at the epoch end the
    thresholds become its R-quantiles. The state, all in non-trainable
    variables (saved with the model, restored by checkpoints, mirrored under
    a strategy):

    - `stratum_eps` `[R]`: smoothing per stratum (stratum 0 least robust);
    - `stratum_thresholds` `[R - 1]`: histogram bins between strata;
    - `score_histogram` `[SCORE_BINS]`: the epoch's training scores, summed
      across replicas.

    `fit` adds the callback that recomputes the thresholds; add
    `AdaptiveSmoothing(validation_data)` to adapt eps (without it eps stays
    at `eps_init`, and `fit` warns).

    Args:
        backbone: a `keras.Model` mapping inputs in [clip_min, clip_max] to
            logits.
        num_classes: K.
        num_strata: R, strata of equal size (10).
        eps_max: the attack's largest radius (0.3 for MNIST-like data, 8/255
            for CIFAR-like data); also the scale of the first-order score.
        attack_steps: T, attack steps (10).
        alpha: step size of the eps update (1.0).
        eps_init: initial eps of every stratum (0.0: hard labels).
        eps_cap: largest eps (0.5).
        eps_update: the eps update's rule: `"shrunk"` (the default: the
            gap `conf_r - acc_r` less two of its standard errors), `"additive"`
            (the paper's `conf_r - acc_r`) or `"relative"` (see
            `smoothing.update_eps`).
        norm: attack norm, `"inf"` or `"2"`.
        strata_by: the score that sorts examples into strata (above).
        attack_loss: `"margin"` or `"cross_entropy"` (see
            `robustness.adversarial_robustness`).
        attack_candidates: the margin attack's target choice: 1 (default,
            the runner-up logit, the cheapest) or k > 1 (the nearest of the
            k largest other logits; see `robustness.adversarial_robustness`).
        rescore_every: k, for the scores that cost passes of their own
            (`strata_by="attack"` or `"first_order"`): score each training
            example once every k epochs, in a pass over the due examples only,
            and take its stratum from its cached score in between (1, the
            default: score every example in every epoch). k > 1 needs
            `train_size` and batches of `(x, y, index)`
            (`aradals_tf.score_cache.index_examples`).
        train_size: the number of training examples, with `rescore_every > 1`.
        clip_min: smallest valid input value.
        clip_max: largest valid input value.
        **kwargs: base `Model` arguments.

    Example:

    ```python
    model = ARAdaLSModel(backbone, num_classes=10, eps_max=0.3)
    model.compile(optimizer="adam", metrics=["accuracy"])
    model.fit(train, epochs=20, callbacks=[AdaptiveSmoothing(validation)])
    ```
    """

    def __init__(
        self,
        backbone,
        num_classes,
        *,
        num_strata=10,
        eps_max,
        attack_steps=10,
        alpha=1.0,
        eps_init=0.0,
        eps_cap=0.5,
        eps_update="shrunk",
        norm="inf",
        strata_by="attack",
        attack_loss="margin",
        attack_candidates=1,
        rescore_every=1,
        train_size=None,
        clip_min=0.0,
        clip_max=1.0,
        **kwargs,
    ):
        super().__init__(backbone, num_classes, **kwargs)
        eps_max, attack_steps, _ = attack.check_attack_settings(
            eps_max, attack_steps, norm, clip_min, clip_max
        )
        if not 1 <= int(num_strata) <= SCORE_BINS:
            raise ValueError(f"num_strata must be in [1, {SCORE_BINS}]; got {num_strata}.")
        if not 0.0 <= float(eps_init) <= float(eps_cap) <= 1.0:
            raise ValueError(
                f"Need 0 <= eps_init <= eps_cap <= 1; got eps_init={eps_init}, eps_cap={eps_cap}."
            )
        if not float(alpha) >= 0:
            raise ValueError(f"alpha must be >= 0; got {alpha}.")
        for name, value, valid in (
            ("eps_update", eps_update, EPS_UPDATES),
            ("strata_by", strata_by, STRATA_SOURCES),
            ("attack_loss", attack_loss, ATTACK_LOSSES),
        ):
            if value not in valid:
                raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}.")
        self.num_strata = int(num_strata)
        self.eps_max = eps_max
        self.attack_steps = attack_steps
        self.alpha = float(alpha)
        self.eps_init = float(eps_init)
        self.eps_cap = float(eps_cap)
        self.eps_update = eps_update
        self.norm = str(norm)
        self.strata_by = strata_by
        self.attack_loss = attack_loss
        self.attack_candidates = attack.check_candidates(attack_candidates, attack_loss)
        self.rescore_every, self.train_size = int(rescore_every), train_size
        self.score_cache = None
        if self.rescore_every != 1 or train_size is not None:
            if strata_by not in CACHED_SOURCES:
                raise ValueError(
                    "rescore_every and train_size apply to strata_by 'attack' and "
                    f"'first_order'; the '{strata_by}' score comes free with each training step."
                )
            if train_size is None:
                raise ValueError(
                    "rescore_every > 1 caches a score per training example: pass "
                    "train_size = the number of training examples."
                )
            self.score_cache = score_cache_lib.ScoreCache(train_size, self.rescore_every)
        self.clip_min = clip_min
        self.clip_max = clip_max
        # Before the first histogram: thresholds spread evenly over the bins.
        initial = [(r * SCORE_BINS) // self.num_strata - 1 for r in range(1, self.num_strata)]
        self.stratum_eps = self.add_weight(
            shape=(self.num_strata,),
            initializer=keras.initializers.Constant(self.eps_init),
            trainable=False,
            name="stratum_eps",
        )
        self.stratum_thresholds = self.add_weight(
            shape=(self.num_strata - 1,),
            initializer=keras.initializers.Constant(initial) if initial else "zeros",
            dtype="int32",
            trainable=False,
            name="stratum_thresholds",
        )
        # Each replica's counts are summed into it (`add_across_replicas`).
        self.score_histogram = self.add_weight(
            shape=(SCORE_BINS,),
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
            name="score_histogram",
        )

    @property
    def scores_in_training_mode(self):
        """Whether scores are measured with `training=True`, as the training pass runs."""
        return self.strata_by != "attack"

    @property
    def scores_from_training_pass(self):
        """Whether each batch's scores come from its training forward pass itself
        (margin, confidence; first-order without a score cache)."""
        return self.scores_in_training_mode and self.score_cache is None

    def _score_from_pass(self, logits, gradient=None, margin=None):
        """Normalised score in [0, 1) from a forward pass (and, for the first-order
        score, the margin's input gradient); monotone in the raw score."""
        if self.strata_by == "first_order":
            radius = first_order.radius_from_margin(margin, gradient, self.norm)
            return radius / (radius + self.eps_max)
        logits = tf.cast(logits, tf.float32)
        if self.strata_by == "margin":
            raw = first_order.prediction_margin(logits)
        else:  # -log(1 - confidence), computed without rounding 1 - p to 0
            others = tf.where(
                tf.one_hot(tf.argmax(logits, axis=-1), tf.shape(logits)[-1]) > 0, -np.inf, logits
            )
            raw = tf.reduce_logsumexp(logits, axis=-1) - tf.reduce_logsumexp(others, axis=-1)
        return raw / (raw + 1.0)

    def strata_scores(self, x, training=False):
        """Histogram bins of a batch's scores, and logits (no gradient).

        Args:
            x: a batch of inputs.
            training: the backbone's mode for the forward-pass scores
                (`scores_in_training_mode` is what training uses).

        Returns:
            `(bins, logits)`: int32 `[n]` in `0..SCORE_BINS-1` (low = least
            robust) and the logits of the scoring pass (`training=False` for
            the attack).
        """
        if self.strata_by == "attack":
            radius, _, logits = attack.growing_radius_attack(
                self.backbone,
                x,
                eps_max=self.eps_max,
                steps=self.attack_steps,
                norm=self.norm,
                clip_min=self.clip_min,
                clip_max=self.clip_max,
                loss=self.attack_loss,
                candidates=self.attack_candidates,
            )
            score = radius / (2.0 * self.eps_max)
        else:

            def forward(inputs):
                logits = self.backbone(inputs, training=training)
                return [logits], logits

            _, logits, score = self._forward_and_score(x, forward)
        return score_bins(tf.stop_gradient(score)), tf.stop_gradient(logits)

    def _forward_and_score(self, inputs, forward):
        """Runs `forward(inputs) -> (member logits, logits)` and scores the batch
        from that pass: free for margin and confidence, one backward pass to
        the inputs for the first-order score. Returns `(member logits, logits,
        normalised score)`."""
        inputs = tf.cast(inputs, tf.float32)
        if self.strata_by != "first_order":
            member_logits, logits = forward(inputs)
            return member_logits, logits, self._score_from_pass(tf.stop_gradient(logits))
        with tf.GradientTape() as input_tape:
            input_tape.watch(inputs)
            member_logits, logits = forward(inputs)
            margin = first_order.prediction_margin(logits)
            total = tf.reduce_sum(margin)
        gradient = input_tape.gradient(total, inputs)
        return member_logits, logits, self._score_from_pass(logits, gradient, margin)

    def strata_of(self, bins):
        """Stratum of each score bin with the current thresholds."""
        return smoothing.assign_strata(bins, self.stratum_thresholds)

    def targets_of_bins(self, bins, labels):
        """Counts the batch's score bins and returns its per-example soft labels."""
        score_cache_lib.add_across_replicas(
            self.score_histogram,
            # A segment sum rather than tf.math.bincount, which XLA does not compile.
            tf.math.unsorted_segment_sum(tf.ones_like(bins, tf.float32), bins, SCORE_BINS),
        )
        eps = tf.gather(self.stratum_eps, self.strata_of(bins))
        return smoothing.soft_labels(labels, self.num_classes, eps)

    @property
    def uses_example_index(self):
        return self.score_cache is not None

    def compile(self, optimizer="rmsprop", loss="auto", metrics=None, jit_compile="auto", **kwargs):
        """`SoftTargetModel.compile`; with the attack, never XLA.

        The compacted attack's live batch shrinks at every step, a shape
        that XLA cannot compile, so with `strata_by="attack"` Keras's
        `jit_compile="auto"` (XLA on GPU) becomes False, and True is refused.
        The forward-pass scores compile with XLA.
        """
        if self.strata_by == "attack":
            if jit_compile is True:
                raise ValueError(
                    "strata_by='attack' cannot run under XLA (the attack steps only the "
                    "examples not yet flipped, a shape that changes at every step): leave "
                    "jit_compile at 'auto' or False, or sort strata by a forward-pass score."
                )
            jit_compile = False
        super().compile(optimizer, loss, metrics, jit_compile=jit_compile, **kwargs)

    def soft_targets(self, x, labels, index=None):
        if self.scores_from_training_pass:
            return x, None, labels  # made from the training forward pass
        if self.score_cache is None:
            bins, _ = self.strata_scores(x, training=False)
        else:  # score only the examples due this epoch; the rest are cached
            due = self.score_cache.due(index)
            due_inputs = tf.boolean_mask(x, due)
            # A batch may have none due; TF's Conv2D fails on an empty batch.
            fresh = tf.cond(
                tf.shape(due_inputs)[0] > 0,
                lambda: self.strata_scores(due_inputs, self.scores_in_training_mode)[0],
                lambda: tf.zeros([0], tf.int32),
            )
            bins = self.score_cache.merge(index, due, fresh)
        return x, self.targets_of_bins(bins, labels), labels

    def forward_with_targets(self, inputs, targets, labels):
        if not self.scores_from_training_pass:
            return super().forward_with_targets(inputs, targets, labels)
        # The score comes from the training forward pass itself.
        member_logits, logits, score = self._forward_and_score(inputs, self.training_logits)
        bins = score_bins(tf.stop_gradient(score))
        return member_logits, logits, self.targets_of_bins(bins, labels)

    def update_strata_thresholds(self):
        """Sets thresholds from the epoch's histogram, then clears it.

        Returns:
            `(thresholds, counts)`: the new thresholds and the number of the
            epoch's training examples in each stratum under them, numpy.
        """
        counts = np.zeros(self.num_strata, np.float32)
        if float(tf.reduce_sum(self.score_histogram)) > 0:
            self.stratum_thresholds.assign(
                smoothing.thresholds_from_histogram(self.score_histogram, self.num_strata)
            )
            counts = smoothing.stratum_counts(self.score_histogram, self.stratum_thresholds).numpy()
        self.score_histogram.assign(tf.zeros_like(self.score_histogram))
        return np.asarray(self.stratum_thresholds), counts

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, with the strata bookkeeping callback added first.

        The callbacks run in this order: threshold update, `AdaptiveSmoothing`
        (so it buckets validation data with the new thresholds and its logs
        reach `History`, `CSVLogger` and `TensorBoard`), then the others.
        """
        callbacks = list(callbacks or [])
        strata = [c for c in callbacks if isinstance(c, StrataThresholds)] or [StrataThresholds()]
        adaptive = [c for c in callbacks if isinstance(c, EpsUpdateCallback)]
        if not adaptive:
            warnings.warn(
                f"{type(self).__name__}.fit without an AdaptiveSmoothing callback: eps stays "
                f"at eps_init = {self.eps_init} in every stratum. Pass "
                "callbacks=[aradals_tf.AdaptiveSmoothing(validation_data)].",
                stacklevel=2,
            )
        others = [c for c in callbacks if c not in strata and c not in adaptive]
        return super().fit(*args, callbacks=strata + adaptive + others, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_strata": self.num_strata,
                "eps_max": self.eps_max,
                "attack_steps": self.attack_steps,
                "alpha": self.alpha,
                "eps_init": self.eps_init,
                "eps_cap": self.eps_cap,
                "eps_update": self.eps_update,
                "norm": self.norm,
                "strata_by": self.strata_by,
                "attack_loss": self.attack_loss,
                "attack_candidates": self.attack_candidates,
                "rescore_every": self.rescore_every,
                "train_size": self.train_size,
                "clip_min": self.clip_min,
                "clip_max": self.clip_max,
            }
        )
        return config


def score_bins(score):
    """Histogram bin of each normalised score in [0, 1): `floor(score * SCORE_BINS)`."""
    bins = tf.floor(tf.cast(score, tf.float32) * SCORE_BINS)
    return tf.cast(tf.clip_by_value(bins, 0.0, SCORE_BINS - 1.0), tf.int32)


class StrataThresholds(keras.callbacks.Callback):
    """Recomputes an `ARAdaLSModel`'s stratum thresholds at each epoch end.

    The thresholds become the R-quantiles of the epoch's histogram of
    training scores; the histogram is then cleared (and also at each epoch
    start, so a resumed fit starts clean). Each stratum's share of the
    epoch's training examples goes into `logs` as `stratum{r}_train_count`.
    `ARAdaLSModel.fit` adds this callback itself.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model.score_histogram.assign(tf.zeros_like(self.model.score_histogram))

    def on_epoch_end(self, epoch, logs=None):
        _, counts = self.model.update_strata_thresholds()
        if self.model.score_cache is not None:
            self.model.score_cache.advance_epoch()
        if logs is not None:
            logs.update({f"stratum{r}_train_count": float(c) for r, c in enumerate(counts)})


class EpsUpdateCallback(keras.callbacks.Callback):
    """Base of the callbacks that update eps at an epoch end.

    `ARAdaLSModel.fit` runs them right after `StrataThresholds`, so they
    bucket validation data with the epoch's new thresholds, and before the
    user's other callbacks, so their logs reach `History`, `CSVLogger` and
    `TensorBoard`. `adaptive_smoothing.AdaptiveSmoothing` is one.
    """
