"""Training: AR-AdaLS as a Keras model, its callbacks, and the baselines.

- `ARAdaLSModel(backbone, ...)`: a `keras.Model` whose `train_step` measures
  the robustness of each batch with the growing-radius cleverhans attack (or a
  cheaper estimate), puts every example into its robustness stratum and trains
  on per-example soft labels `(1 - eps_r) onehot + eps_r / K`.
- `AdaptiveSmoothing(validation_data)`: the callback that, after every epoch,
  moves each stratum's eps by `alpha (conf_r - acc_r)` measured on validation
  data (or by the relative step of `smoothing.update_eps`).
- Baselines in the same framework: `MixupModel`, and the losses
  `SparseLabelSmoothingCrossentropy` and `SparseFocalCrossentropy` for a plain
  backbone.

Every loss here takes integer class labels, so one dataset of
`(image, label)` serves every method.
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import robustness
from aradals_tf import smoothing

ROBUSTNESS_ESTIMATES = ("attack", "first_order")


def _flat_labels(y_true):
    return tf.reshape(tf.cast(y_true, tf.int32), [-1])


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
            targets = tf.one_hot(_flat_labels(y_true), tf.shape(y_pred)[-1], dtype=y_pred.dtype)
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
        onehot = tf.one_hot(_flat_labels(y_true), tf.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_focal_crossentropy(
            onehot, y_pred, alpha=1.0, gamma=self.gamma, from_logits=True
        )

    def get_config(self):
        config = super().get_config()
        config["gamma"] = self.gamma
        return config


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
        if loss not in ("auto", None) and not isinstance(loss, SoftTargetCrossentropy):
            raise ValueError(
                f"{type(self).__name__} trains with its own per-example soft-label "
                f"cross-entropy; call compile() without `loss=` (got loss={loss!r})."
            )
        super().compile(optimizer=optimizer, loss=SoftTargetCrossentropy(), metrics=metrics, **kwargs)

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
        labels = _flat_labels(y)
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
        config = dict(config)
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
        permutation = keras.random.shuffle(
            tf.range(tf.shape(labels)[0]), seed=self.seed_generator
        )
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
        if eps_update not in smoothing.EPS_UPDATES:
            raise ValueError(
                f"eps_update must be one of {', '.join(smoothing.EPS_UPDATES)}; got {eps_update!r}."
            )
        if robustness_estimate not in ROBUSTNESS_ESTIMATES:
            raise ValueError(
                f"robustness_estimate must be one of {', '.join(ROBUSTNESS_ESTIMATES)}; "
                f"got {robustness_estimate!r}."
            )
        if not float(first_order_scale) > 0:
            raise ValueError(f"first_order_scale must be > 0; got {first_order_scale}.")
        if attack_loss not in robustness.ATTACK_LOSSES:
            raise ValueError(
                f"attack_loss must be one of {', '.join(robustness.ATTACK_LOSSES)}; got {attack_loss!r}."
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
        initial = [min(levels - 1, (r * levels) // self.num_strata) for r in range(1, self.num_strata)]
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
        radius = robustness.radius_from_margin(margin, input_tape.gradient(total, inputs), self.norm)
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
        adaptive = [c for c in callbacks if isinstance(c, AdaptiveSmoothing)]
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


def _batched(validation_data, batch_size):
    """A batched dataset from `(x, y)` arrays or a (batched or not) tf.data.Dataset."""
    if isinstance(validation_data, tf.data.Dataset):
        image_spec = validation_data.element_spec[0]
        if image_spec.shape.rank is not None and image_spec.shape.rank >= 2 and image_spec.shape[0] is None:
            return validation_data  # already batched
        return validation_data.batch(batch_size)
    if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
        return tf.data.Dataset.from_tensor_slices(
            (np.asarray(validation_data[0], np.float32), np.asarray(validation_data[1]))
        ).batch(batch_size)
    raise ValueError(
        "validation_data must be a tf.data.Dataset of (x, y) or a tuple (x, y) of arrays."
    )


# model -> its compiled `robustness_levels`: a new tf.function per epoch would
# retrace every time (0.14 s of a 0.20 s scoring pass on mnist5k, measured).
_SCORING_FUNCTIONS = weakref.WeakKeyDictionary()


def _scoring_function(model):
    if model not in _SCORING_FUNCTIONS:
        model_ref = weakref.ref(model)  # the cache must not keep the model alive

        @tf.function(reduce_retracing=True)
        def score(x):
            return model_ref().robustness_levels(x)

        _SCORING_FUNCTIONS[model] = score
    return _SCORING_FUNCTIONS[model]


def stratum_statistics(model, validation_data, batch_size=500):
    """Per-stratum validation count, mean confidence and accuracy of a model.

    Robustness is measured with the model's own estimator and current
    weights, and bucketed with its current thresholds.

    Args:
        model: an `ARAdaLSModel`.
        validation_data: `(x, y)` arrays or a dataset of `(x, y)`.
        batch_size: batch size when `validation_data` is unbatched.

    Returns:
        `(count, confidence, accuracy)`, float32 numpy `[R]` each.
    """
    score = _scoring_function(model)
    strata, confidence, correct = [], [], []
    for x, y in _batched(validation_data, batch_size):
        level, logits = score(x)
        probs = tf.nn.softmax(tf.cast(logits, tf.float32))
        strata.append(model.strata_of(level))
        confidence.append(tf.reduce_max(probs, axis=-1))
        correct.append(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), _flat_labels(y)))
    count, mean_confidence, accuracy = smoothing.stratum_calibration(
        tf.concat(strata, 0), tf.concat(confidence, 0), tf.concat(correct, 0), model.num_strata
    )
    return count.numpy(), mean_confidence.numpy(), accuracy.numpy()


class AdaptiveSmoothing(keras.callbacks.Callback):
    """Adapts an `ARAdaLSModel`'s per-stratum smoothing after every epoch.

    At each epoch end: score `validation_data`'s robustness with the current
    weights, bucket it with the training thresholds, compute each stratum's
    mean confidence and accuracy, and update
    `eps_r <- clip(eps_r + alpha (conf_r - acc_r), 0, eps_cap)` (`alpha`,
    `eps_cap` and the rule, `eps_update`, are the model's). Writes
    `stratum{r}_eps`, `stratum{r}_conf` and `stratum{r}_acc` into `logs`, so
    `History`, `CSVLogger` and `TensorBoard` record them, and keeps them with
    each stratum's validation count and the thresholds in `self.records` (one
    dict per epoch) for `plots.eps_per_stratum`.

    Args:
        validation_data: `(x, y)` arrays or a `tf.data.Dataset` of `(x, y)`
            (batched or not); held out from training.
        batch_size: batch size for unbatched validation data.

    Example:

    ```python
    adaptive = AdaptiveSmoothing((x_val, y_val))
    model.fit(train, epochs=20, callbacks=[adaptive])
    plots.eps_per_stratum(adaptive.records, "eps.png")
    ```
    """

    def __init__(self, validation_data, batch_size=500):
        super().__init__()
        self.validation_data = _batched(validation_data, batch_size)
        self.records = []

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        if not isinstance(model, ARAdaLSModel):
            raise ValueError("AdaptiveSmoothing needs an ARAdaLSModel.")
        count, confidence, accuracy = stratum_statistics(model, self.validation_data)
        eps = smoothing.update_eps(
            model.stratum_eps,
            confidence,
            accuracy,
            count,
            model.alpha,
            model.eps_cap,
            rule=model.eps_update,
        )
        model.stratum_eps.assign(eps)
        record = {"epoch": epoch}
        for r in range(model.num_strata):
            record[f"stratum{r}_eps"] = float(eps[r])
            record[f"stratum{r}_conf"] = float(confidence[r])
            record[f"stratum{r}_acc"] = float(accuracy[r])
            record[f"stratum{r}_count"] = float(count[r])
        self.records.append(record)
        record["thresholds"] = [int(t) for t in np.asarray(model.stratum_thresholds)]
        if logs is not None:
            logs.update(
                {k: v for k, v in record.items() if k.endswith(("_eps", "_conf", "_acc"))}
            )
