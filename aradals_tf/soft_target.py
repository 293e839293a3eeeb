"""The base of models that train on per-example soft targets.

`SoftTargetModel` wraps a logits backbone; subclasses say what each batch's
targets are (`ARAdaLSModel`: label smoothing per robustness stratum;
`MixupModel`: mixed pairs) and the base's `train_step` does the rest.
"""

import copy

import keras
import tensorflow as tf

from aradals_tf import losses
from aradals_tf import score_cache


class SoftTargetModel(keras.Model):
    """Base of models that wrap a logits backbone and train on soft targets.

    Subclasses implement `soft_targets(x, labels, index)`; `train_step` does
    the rest (the keras-io custom `train_step` pattern for Keras 3): forward
    pass, the model's own `SoftTargetCrossentropy` through `compute_loss` (so
    sample weights, regularisation losses and distribution scaling are
    Keras's), optimizer step, compiled metrics updated on the labels as the
    data gives them (integer or one-hot). `call`, `evaluate` and `predict`
    behave like the backbone's (logits; evaluation loss is the hard-label
    cross-entropy), also on inputs that carry an example index.

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
        inputs, _ = score_cache.split_index(inputs)  # indexed inputs predict as plain ones
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

    def soft_targets(self, x, labels, index=None):
        """Returns `(training inputs, [n, K] targets, labels for metrics, state)`.

        Subclasses define their method here; the base trains on hard labels.
        `labels` are integer class labels (one-hot ones are converted);
        `index` names the batch's examples where the inputs carry one
        (`score_cache.index_examples`). Labels for metrics None means the
        labels as the data gave them; `state` goes to `observe`.
        """
        return x, tf.one_hot(labels, self.num_classes), None, None

    def observe(self, state, labels, logits):
        """Called after each step's update with its `soft_targets` state and
        training logits (for bookkeeping); the base does nothing."""

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, index = score_cache.split_index(x)
        labels = losses.class_labels(y, self.num_classes)
        inputs, targets, metric_labels, state = self.soft_targets(x, labels, index)
        with tf.GradientTape() as tape:
            member_logits, logits = self.training_logits(inputs)
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
        self.observe(state, labels, logits)
        # compute_loss divided the loss by the replica count; undo for logs.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if metric_labels is None:
            metric_labels = y
        elif y.shape.rank == 2 and y.shape[-1] == self.num_classes:  # one-hot data
            metric_labels = tf.one_hot(metric_labels, self.num_classes, dtype=y.dtype)
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
