"""Training models: AR-AdaLS as a Keras model, and the mixup baseline.

- `ARAdaLSModel(backbone, ...)`: a `keras.Model` whose `train_step` measures
  the robustness of each batch with the growing-radius cleverhans attack (or a
  cheaper estimate), puts every example into its robustness stratum and trains
  on per-example soft labels `(1 - eps_r) onehot + eps_r / K`.
- `MixupModel`: the mixup baseline in the same framework.
- `StrataThresholds`: the callback that `ARAdaLSModel.fit` adds to turn each
  epoch's histogram of training robustness into stratum thresholds.

Their eps adapts with the `adaptive_smoothing.AdaptiveSmoothing` callback;
the losses live in `losses`.
"""

import copy

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import losses
from aradals_tf import robustness
from aradals_tf import smoothing
from aradals_tf.choices import ATTACK_LOSSES
from aradals_tf.choices import EPS_UPDATES
from aradals_tf.choices import ROBUSTNESS_ESTIMATES


class SoftTargetModel(keras.Model):
    """Base of models that wrap a logits backbone and train on soft targets.

    Subclasses implement `soft_targets(x, labels)`; `train_step` does the rest
    (the keras-io custom `train_step` pattern for Keras 3): forward pass,
    the model's own `SoftTargetCrossentropy` through `compute_loss` (so
    regularisation losses and distribution scaling are Keras's), optimizer
    step, compiled metrics updated on the hard labels. `call`, `evaluate` and
    `predict` behave like the backbone's (logits; evaluation loss is the hard
    label cross-entropy).

    `compile()` takes no `loss`: the model owns its loss, so integer labels
    work and Keras's symbolic build with raw labels does not fail.
    """

    def __init__(self, backbone, num_classes, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.Model):
            raise ValueError(
                f"backbone must be a keras.Model producing logits; got {type(backbone).__name__}."
            )
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2; got {num_classes}.")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        # All variables exist once the backbone does (subclasses add theirs
        # in __init__): mark the model built so that BackupAndRestore and
        # weight loading work before the first batch.
        self.built = backbone.built

    def call(self, inputs, training=None):
        return self.backbone(inputs, training=training)

    def compile(self, optimizer="rmsprop", loss="auto", metrics=None, **kwargs):
        if loss not in ("auto", None) and not isinstance(loss, losses.SoftTargetCrossentropy):
            raise ValueError(
                f"{type(self).__name__} trains with its own per-example soft-label "
                f"cross-entropy; call compile() without `loss=` (got loss={loss!r})."
            )
        super().compile(
            optimizer=optimizer, loss=losses.SoftTargetCrossentropy(), metrics=metrics, **kwargs
        )

    def compile_from_config(self, config):
        # Keras skips compile() on load when it is overridden; ours accepts
        # the saved config (its loss is SoftTargetCrossentropy), so call it.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def training_logits(self, inputs):
        """Forward pass of a training step: `([logits the loss fits], logits for metrics)`."""
        logits = self(inputs, training=True)
        return [logits], logits

    def soft_targets(self, x, labels):
        """Returns `(training inputs, [n, K] targets, labels for metrics)`.

        Subclasses define their method here; the base trains on hard labels.
        Targets may be None when `forward_with_targets` makes them.
        """
        return x, tf.one_hot(labels, self.num_classes), labels

    def forward_with_targets(self, inputs, targets, labels):
        """The training step's forward pass, inside its gradient tape.

        Returns `(member logits, logits, targets)`. The base passes on the
        targets of `soft_targets`; a model whose targets depend on this very
        forward pass makes them here.
        """
        member_logits, logits = self.training_logits(inputs)
        return member_logits, logits, targets

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels = losses.flat_labels(y)
        inputs, targets, metric_labels = self.soft_targets(x, labels)
        with tf.GradientTape() as tape:
            member_logits, logits, targets = self.forward_with_targets(inputs, targets, labels)
            # Each set of logits fits the targets; their losses are averaged
            # (one set for a single model, one per member for an ensemble).
            loss = tf.add_n(
                [
                    self.compute_loss(
                        x=inputs, y=targets, y_pred=z, sample_weight=sample_weight, training=True
                    )
                    for z in member_logits
                ]
            ) / len(member_logits)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        # compute_loss divided the loss by the replica count; undo for logs.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss * replicas, sample_weight=tf.shape(logits)[0])
            else:
                metric.update_state(metric_labels, logits, sample_weight=sample_weight)
        return self.get_metrics_result()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "num_classes": self.num_classes,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Keras's deserialisation consumes the dict it is given: copy it, so
        # that the caller's config stays intact.
        config = copy.deepcopy(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="aradals_tf")
class MixupModel(SoftTargetModel):
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

    def soft_targets(self, x, labels):
        lam = keras.random.beta((), self.alpha, self.alpha, seed=self.seed_generator)
        permutation = keras.random.shuffle(tf.range(tf.shape(labels)[0]), seed=self.seed_generator)
        onehot = tf.one_hot(labels, self.num_classes)
        mixed_x = lam * x + (1.0 - lam) * tf.gather(x, permutation)
        mixed_targets = lam * onehot + (1.0 - lam) * tf.gather(onehot, permutation)
        dominant = tf.where(lam >= 0.5, labels, tf.gather(labels, permutation))
        return mixed_x, mixed_targets, dominant

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="aradals_tf")
class ARAdaLSModel(SoftTargetModel):
    """Adversarial-robustness-based adaptive label smoothing (Qin et al. 2021).

    `train_step` measures each example's robustness level on the current
    weights (`robustness_estimate="attack"`: the growing-radius cleverhans
    attack, T forward+backward passes; `"first_order"`: margin / dual norm of
    its input gradient, taken from the training forward pass with one extra
    backward pass), assigns the example to a stratum with the
    current thresholds, and trains on soft labels `(1 - eps_r) onehot +
    eps_r / K` of its stratum `r`. The state, all in non-trainable variables
    (saved with the model, restored by checkpoints, mirrored under a
    strategy):

    - `stratum_eps` `[R]`: smoothing per stratum (stratum 0 least robust);
    - `stratum_thresholds` `[R - 1]`: level thresholds between strata,
      recomputed at each epoch end as equal-mass quantiles of
    - `level_histogram` `[T + 1]`: the epoch's counts of training levels.

    `fit` adds the callback that recomputes the thresholds; add
    `AdaptiveSmoothing(validation_data)` to adapt eps (without it eps stays
    at `eps_init`).

    Args:
        backbone: a `keras.Model` mapping inputs in [clip_min, clip_max] to
            logits.
        num_classes: K.
        num_strata: R, robustness strata (10).
        eps_max: the attack's largest radius (0.3 for MNIST-like data, 8/255
            for CIFAR-like data).
        attack_steps: T, attack steps = robustness levels (10).
        alpha: step size of the eps update (1.0).
        eps_init: initial eps of every stratum (0.0: hard labels).
        eps_cap: largest eps (0.5).
        eps_update: the eps update's step, `"additive"` (the method's
            `conf_r - acc_r`) or `"relative"` (that gap over the stratum's
            error rate; see `smoothing.update_eps`).
        norm: attack norm, `"inf"` or `"2"`.
        robustness_estimate: `"attack"` or `"first_order"` (cheaper).
        first_order_scale: factor on the first-order radius before it is
            mapped onto the attack's level grid (1.0: unscaled; see
            `robustness.fit_first_order_scale`, which measures it).
        attack_loss: `"margin"` or `"cross_entropy"` (see
            `robustness.adversarial_robustness`).
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
        eps_update="additive",
        norm="inf",
        robustness_estimate="attack",
        first_order_scale=1.0,
        attack_loss="margin",
        clip_min=0.0,
        clip_max=1.0,
        **kwargs,
    ):
        super().__init__(backbone, num_classes, **kwargs)
        eps_max, attack_steps, _ = robustness.check_attack_settings(
            eps_max, attack_steps, norm, clip_min, clip_max
        )
        if int(num_strata) < 1:
            raise ValueError(f"num_strata must be >= 1; got {num_strata}.")
        if not 0.0 <= float(eps_init) <= float(eps_cap) <= 1.0:
            raise ValueError(
                f"Need 0 <= eps_init <= eps_cap <= 1; got eps_init={eps_init}, eps_cap={eps_cap}."
            )
        if not float(alpha) >= 0:
            raise ValueError(f"alpha must be >= 0; got {alpha}.")
        if eps_update not in EPS_UPDATES:
            raise ValueError(
                f"eps_update must be one of {', '.join(EPS_UPDATES)}; got {eps_update!r}."
            )
        if robustness_estimate not in ROBUSTNESS_ESTIMATES:
            raise ValueError(
                f"robustness_estimate must be one of {', '.join(ROBUSTNESS_ESTIMATES)}; "
                f"got {robustness_estimate!r}."
            )
        if not float(first_order_scale) > 0:
            raise ValueError(f"first_order_scale must be > 0; got {first_order_scale}.")
        if attack_loss not in ATTACK_LOSSES:
            raise ValueError(
                f"attack_loss must be one of {', '.join(ATTACK_LOSSES)}; got {attack_loss!r}."
            )
        self.num_strata = int(num_strata)
        self.eps_max = eps_max
        self.attack_steps = attack_steps
        self.alpha = float(alpha)
        self.eps_init = float(eps_init)
        self.eps_cap = float(eps_cap)
        self.eps_update = eps_update
        self.norm = str(norm)
        self.robustness_estimate = robustness_estimate
        self.first_order_scale = float(first_order_scale)
        self.attack_loss = attack_loss
        self.clip_min = clip_min
        self.clip_max = clip_max
        levels = attack_steps + 1
        # Before the first histogram: thresholds spread evenly over the levels.
        initial = [
            min(levels - 1, (r * levels) // self.num_strata) for r in range(1, self.num_strata)
        ]
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
        # Summed across replicas on update, so each replica's batch counts.
        self.level_histogram = self.add_weight(
            shape=(levels,),
            initializer="zeros",
            trainable=False,
            aggregation="sum",
            name="level_histogram",
        )

    def robustness_levels(self, x):
        """Robustness levels of a batch and its clean logits (no gradient).

        Returns:
            `(level, logits)`: int32 `[n]` in `0..T` (T: not flipped within
            eps_max) and the backbone's logits at `x` (`training=False`).
        """
        if self.robustness_estimate == "attack":
            _, level, logits = robustness.growing_radius_attack(
                self.backbone,
                x,
                eps_max=self.eps_max,
                steps=self.attack_steps,
                norm=self.norm,
                clip_min=self.clip_min,
                clip_max=self.clip_max,
                loss=self.attack_loss,
            )
        else:
            radius, logits = robustness.first_order_radius(self.backbone, x, norm=self.norm)
            level = self.levels_from_first_order_radius(radius)
        return tf.stop_gradient(level), tf.stop_gradient(logits)

    def strata_of(self, level):
        """Stratum of each level with the current thresholds."""
        return smoothing.assign_strata(level, self.stratum_thresholds)

    def levels_from_first_order_radius(self, radius):
        """First-order radii (scaled by `first_order_scale`) as attack levels."""
        return robustness.levels_from_radius(
            self.first_order_scale * radius, self.eps_max, self.attack_steps
        )

    def targets_of_levels(self, level, labels):
        """Counts the batch's levels and returns its per-example soft labels."""
        self.level_histogram.assign_add(
            tf.math.bincount(
                level,
                minlength=self.attack_steps + 1,
                maxlength=self.attack_steps + 1,
                dtype=tf.float32,
            )
        )
        eps = tf.gather(self.stratum_eps, self.strata_of(level))
        return smoothing.soft_labels(labels, self.num_classes, eps)

    def soft_targets(self, x, labels):
        if self.robustness_estimate == "first_order":
            return x, None, labels  # made from the training forward pass
        level, _ = self.robustness_levels(x)
        return x, self.targets_of_levels(level, labels), labels

    def forward_with_targets(self, inputs, targets, labels):
        if self.robustness_estimate != "first_order":
            return super().forward_with_targets(inputs, targets, labels)
        # The first-order estimate reuses the training forward pass: one
        # extra backward pass (to the inputs) per batch instead of a forward
        # and a backward pass of its own.
        inputs = tf.cast(inputs, tf.float32)
        with tf.GradientTape() as input_tape:
            input_tape.watch(inputs)
            member_logits, logits = self.training_logits(inputs)
            margin = robustness.prediction_margin(logits)
            total = tf.reduce_sum(margin)
        radius = robustness.radius_from_margin(
            margin, input_tape.gradient(total, inputs), self.norm
        )
        level = self.levels_from_first_order_radius(radius)  # int: no gradient
        return member_logits, logits, self.targets_of_levels(level, labels)

    def update_strata_thresholds(self):
        """Sets thresholds from the epoch's histogram, then clears it.

        Returns:
            The new thresholds as a numpy array.
        """
        if float(tf.reduce_sum(self.level_histogram)) > 0:
            self.stratum_thresholds.assign(
                smoothing.thresholds_from_histogram(self.level_histogram, self.num_strata)
            )
        self.level_histogram.assign(tf.zeros_like(self.level_histogram))
        return np.asarray(self.stratum_thresholds)

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, with the strata bookkeeping callback added first.

        The callbacks run in this order: threshold update, `AdaptiveSmoothing`
        (so it buckets validation data with the new thresholds and its logs
        reach `History`, `CSVLogger` and `TensorBoard`), then the others.
        """
        callbacks = list(callbacks or [])
        strata = [c for c in callbacks if isinstance(c, StrataThresholds)] or [StrataThresholds()]
        adaptive = [c for c in callbacks if isinstance(c, EpsUpdateCallback)]
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
                "robustness_estimate": self.robustness_estimate,
                "first_order_scale": self.first_order_scale,
                "attack_loss": self.attack_loss,
                "clip_min": self.clip_min,
                "clip_max": self.clip_max,
            }
        )
        return config


class StrataThresholds(keras.callbacks.Callback):
    """Recomputes an `ARAdaLSModel`'s stratum thresholds at each epoch end.

    The thresholds become the equal-mass quantiles of the epoch's histogram of
    training robustness levels; the histogram is then cleared (and also at
    each epoch start, so a resumed fit starts clean). `ARAdaLSModel.fit` adds
    this callback itself.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model.level_histogram.assign(tf.zeros_like(self.model.level_histogram))

    def on_epoch_end(self, epoch, logs=None):
        self.model.update_strata_thresholds()


class EpsUpdateCallback(keras.callbacks.Callback):
    """Base of the callbacks that update eps at an epoch end.

    `ARAdaLSModel.fit` runs them right after `StrataThresholds`, so they
    bucket validation data with the epoch's new thresholds, and before the
    user's other callbacks, so their logs reach `History`, `CSVLogger` and
    `TensorBoard`. `adaptive_smoothing.AdaptiveSmoothing` is one.
    """
