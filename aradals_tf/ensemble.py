"""Ensembles as Keras models, and AR-AdaLS for ensembles.

- `LogitEnsemble(members)`: a `keras.Model` whose logits are the mean of its
  members' logits (the design's choice). `average="probabilities"` instead
  returns `log(mean_m softmax(z_m))`, whose softmax is the mean of the
  members' probabilities (what uncertainty-baselines and torch-uncertainty
  report); the two differ (docs: the ensembles guide).
- `EnsembleARAdaLSModel(members, ...)`: the ensemble-aware AR-AdaLS mode.
  Robustness is measured by attacking the ensemble's averaged logits, strata
  and the per-stratum eps are shared, every member fits the soft labels of
  the ensemble's strata, and `AdaptiveSmoothing` updates eps from the
  ensemble's averaged prediction and robustness on validation data, so the
  ensemble as a whole (not each member) is what gets calibrated. The simple
  mode is M independent `ARAdaLSModel`s averaged by a `LogitEnsemble`.
"""

import copy

import keras
import tensorflow as tf

from aradals_tf import soft_target
from aradals_tf import training
from aradals_tf.choices import ENSEMBLE_AVERAGES

AVERAGES = ENSEMBLE_AVERAGES


@keras.saving.register_keras_serializable(package="aradals_tf")
class LogitEnsemble(keras.Model):
    """Averages its members' logits (or probabilities).

    Args:
        members: list of `keras.Model`s mapping the same inputs to logits of
            the same number of classes.
        average: `"logits"` (default) or `"probabilities"`.
        **kwargs: base `Model` arguments.

    Example:

    >>> ensemble = LogitEnsemble([model_a, model_b, model_c])
    >>> logits = ensemble(images)   # mean of the three models' logits
    """

    def __init__(self, members, average="logits", **kwargs):
        super().__init__(**kwargs)
        members = list(members)
        if not members or not all(isinstance(m, keras.Model) for m in members):
            raise ValueError("members must be a non-empty list of keras.Model.")
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {', '.join(AVERAGES)}; got {average!r}.")
        shapes = {tuple(_input_shape(m)) for m in members}
        if len(shapes) > 1:
            raise ValueError(f"Ensemble members must share an input shape; got {sorted(shapes)}.")
        outputs = {m.output_shape[-1] if _has_output_shape(m) else None for m in members}
        outputs.discard(None)
        if len(outputs) > 1:
            raise ValueError(
                f"Ensemble members must have the same number of classes; got {sorted(outputs)}."
            )
        self.members = members
        self.average = average
        self.built = all(m.built for m in members)

    def call(self, inputs, training=None):
        logits = tf.stack([m(inputs, training=training) for m in self.members], axis=0)
        if self.average == "logits":
            return tf.reduce_mean(logits, axis=0)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        count = tf.math.log(tf.cast(len(self.members), tf.float32))
        return tf.reduce_logsumexp(log_probs, axis=0) - count

    def member_logits(self, inputs, training=None):
        """Each member's logits, a list."""
        return [m(inputs, training=training) for m in self.members]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "members": [keras.saving.serialize_keras_object(m) for m in self.members],
                "average": self.average,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # deserialisation consumes the dicts it is given
        config["members"] = [keras.saving.deserialize_keras_object(m) for m in config["members"]]
        return cls(**config)


def _has_output_shape(model):
    try:
        model.output_shape  # noqa: B018 - raises for unbuilt subclassed models
    except (AttributeError, ValueError):
        return False
    return True


def _input_shape(model):
    if isinstance(model, soft_target.SoftTargetModel):
        model = model.backbone
    if isinstance(model, LogitEnsemble):
        return _input_shape(model.members[0])
    return model.input_shape[1:]


@keras.saving.register_keras_serializable(package="aradals_tf")
class EnsembleARAdaLSModel(training.ARAdaLSModel):
    """Ensemble-aware AR-AdaLS: members trained side by side on shared strata.

    The model's `backbone` is a `LogitEnsemble` of the member backbones, so
    robustness levels, validation statistics and `predict` are the
    ensemble's; the loss is the mean over members of each member's
    soft-label cross-entropy (members stay separate networks, not one model
    trained through the average). All `ARAdaLSModel` arguments apply; works
    with `AdaptiveSmoothing` unchanged.

    Args:
        members: list of logit backbones (different initialisations).
        num_classes: K.
        **kwargs: `ARAdaLSModel` keyword arguments (eps_max, alpha, ...).

    Example:

    ```python
    model = EnsembleARAdaLSModel([small_cnn() for _ in range(3)], 10, eps_max=0.3)
    model.compile(optimizer="adam", metrics=["accuracy"])
    model.fit(train, epochs=20, callbacks=[AdaptiveSmoothing(validation)])
    ensemble = model.backbone   # a LogitEnsemble, ready to evaluate or export
    ```
    """

    def __init__(self, members, num_classes, **kwargs):
        backbone = members if isinstance(members, LogitEnsemble) else LogitEnsemble(members)
        super().__init__(backbone, num_classes, **kwargs)

    def training_logits(self, inputs):
        member_logits = self.backbone.member_logits(inputs, training=True)
        return member_logits, tf.reduce_mean(tf.stack(member_logits, axis=0), axis=0)

    def get_config(self):
        config = super().get_config()
        config["members"] = config.pop("backbone")
        return config

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # deserialisation consumes the dicts it is given
        config["members"] = keras.saving.deserialize_keras_object(config["members"])
        return cls(**config)
