"""A user's own classifier: loaded safely, and turned into a logits model.

`load_classifier(path)` reads a `.keras` file (Keras's `safe_mode=True`
unless the caller trusts the file) or a TensorFlow SavedModel directory
(through `keras.layers.TFSMLayer`) and returns a Keras model whose outputs
are logits, with a note of what was done:

- a model whose last layer is a softmax (a `Softmax` or `Activation` layer,
  or a `Dense` layer with a softmax activation) is cut before it: the logits
  are that layer's input (the `Dense` applied without its activation);
- a model whose outputs are probabilities some other way (rows summing to
  1) gets their logarithm, whose softmax gives the same probabilities;
- otherwise the outputs are taken as logits.

Every failure is a `ValueError` of one line (a file that needs unsafe
deserialization names `--unsafe-load`).
"""

import os

import keras
import numpy as np

SAVED_MODEL_FILE = "saved_model.pb"


@keras.saving.register_keras_serializable(package="aradals_tf")
class LogProbabilities(keras.layers.Layer):
    """`log(max(p, 1e-12))`: logits of a model that outputs probabilities."""

    def call(self, probabilities):
        return keras.ops.log(keras.ops.maximum(probabilities, 1e-12))


def _load(path, unsafe):
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
            raise ValueError(f"{path} is a directory but not a SavedModel (no {SAVED_MODEL_FILE}).")
        try:
            layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
        except Exception as error:  # TF raises many kinds for a bad SavedModel
            raise ValueError(f"Cannot load the SavedModel {path}: {_first_line(error)}") from None
        return layer
    if not path.endswith(".keras"):
        raise ValueError(f"--model takes a .keras file or a SavedModel directory; got {path}.")
    if not os.path.isfile(path):
        raise ValueError(f"No such model file: {path}.")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as error:  # Keras raises many kinds for a bad archive
        text = _first_line(error)
        if "safe_mode" in str(error) or "unsafe" in str(error).lower():
            raise ValueError(
                f"{path} needs unsafe deserialization (it holds code, such as a Lambda "
                "layer); pass --unsafe-load only if you trust the file."
            ) from None
        raise ValueError(f"Cannot load {path}: {text}") from None


def _first_line(error):
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"


def _is_softmax(activation):
    name = getattr(activation, "__name__", str(activation))
    return "softmax" in name


def _before_softmax(model):
    """`(logits model, note)` cut before a final softmax layer, or None."""
    layers = getattr(model, "layers", None)
    if not layers or not getattr(model, "inputs", None):
        return None
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
    ):
        return keras.Model(model.inputs, last.input), f"logits taken before {last.name}"
    if isinstance(last, keras.layers.Dense) and _is_softmax(last.activation):
        config = {**last.get_config(), "activation": "linear", "name": last.name + "_logits"}
        linear = keras.layers.Dense.from_config(config)
        outputs = linear(last.input)
        linear.set_weights(last.get_weights())
        return keras.Model(model.inputs, outputs), f"logits taken before {last.name}'s softmax"
    return None


def load_classifier(path, image_shape, num_classes, unsafe=False):
    """A logits model of a user's classifier, checked against the data.

    Args:
        path: a `.keras` file or a SavedModel directory.
        image_shape: `(h, w, c)` of the data's images.
        num_classes: K of the data.
        unsafe: load a `.keras` file with `safe_mode=False` (trusts its code).

    Returns:
        `(model, note)`: a `keras.Model` from images to logits `[n, K]`, and
        a sentence saying how the logits were taken.

    Example:

    >>> model, note = load_classifier("classifier.keras", (28, 28, 1), 10)
    """
    loaded = _load(path, unsafe)
    if isinstance(loaded, keras.layers.TFSMLayer):
        inputs = keras.Input(image_shape)
        outputs = loaded(inputs)
        if isinstance(outputs, dict):
            if len(outputs) != 1:
                raise ValueError(
                    f"The SavedModel {path} returns {sorted(outputs)}; one output of "
                    "per-class scores is needed."
                )
            outputs = next(iter(outputs.values()))
        loaded = keras.Model(inputs, outputs)
    probe = np.full((2, *image_shape), 0.5, np.float32)
    try:
        scores = loaded(probe)
    except Exception as error:  # shape mismatches come in many kinds
        expected = getattr(loaded, "input_shape", None)
        raise ValueError(
            f"{path} does not take the data's images of shape {tuple(image_shape)} "
            f"(the model expects {expected}): {_first_line(error)}"
        ) from None
    if isinstance(scores, (list, tuple, dict)) or len(scores.shape) != 2:
        shape = getattr(scores, "shape", type(scores).__name__)
        raise ValueError(f"{path} must output per-class scores [batch, K]; it outputs {shape}.")
    if scores.shape[-1] != num_classes:
        raise ValueError(f"{path} outputs {scores.shape[-1]} classes; the data has {num_classes}.")
    cut = _before_softmax(loaded)
    if cut is not None:
        return cut
    values = np.asarray(scores, np.float64)
    if np.all(values >= 0) and np.allclose(values.sum(axis=1), 1.0, atol=1e-4):
        inputs = keras.Input(image_shape)
        model = keras.Model(inputs, LogProbabilities()(loaded(inputs)))
        return model, "the model outputs probabilities: logits are their logarithm"
    return loaded, "the model's outputs are taken as logits"
