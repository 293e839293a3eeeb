"""The base of models that train on per-example soft targets.

`SoftTargetModel` wraps a logits backbone; subclasses say what each batch's
targets are (`ARAdaLSModel`: label smoothing per robustness stratum;
`MixupModel`: mixed pairs) and the base's `train_step` does the rest.
"""

import copy

import keras
import tensorflow as tf

from aradals_tf import losses


class SoftTargetModel(keras.Model):
    """Base of models that wrap a logits backbone and train on soft targets.

    Subclasses implement `soft_targets(x, labels, index)`; `train_step` does the rest
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

    @property
    def uses_example_index(self):
        """Whether batches are `(x, y, index)`, index naming each example."""
        return False

    def soft_targets(self, x, labels, index=None):
        """Returns `(training inputs, [n, K] targets, labels for metrics)`.

        Subclasses define their method here; the base trains on hard labels.
        Targets may be None when `forward_with_targets` makes them. `index`
        is the batch's example indices where `uses_example_index`.
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
        index = None
        if self.uses_example_index:  # the third element names the examples
            if sample_weight is None:
                raise ValueError(
                    f"This {type(self).__name__} caches scores per example: its training "
                    "batches must be (x, y, index); see aradals_tf.score_cache.index_examples."
                )
            index, sample_weight = sample_weight, None
        labels = losses.flat_labels(y)
        inputs, targets, metric_labels = self.soft_targets(x, labels, index)
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
