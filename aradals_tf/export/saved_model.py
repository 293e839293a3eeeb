"""Writing a calibrated SavedModel for TF Serving.

`export_saved_model` writes any Keras classifier that outputs logits (a
functional backbone, an `ARAdaLSModel`, a `LogitEnsemble`) in TF Serving's
layout with three signatures (`layout.SIGNATURES`): `serving_default` and
`serving_uint8` return calibrated probabilities `softmax(logits / T)` and
the confidence, `robustness` each input's adversarial robustness radius.

The temperature `T` is a variable of the SavedModel (a `TemperatureScaling`
layer, tracked by `keras.export.ExportArchive`); `T = 1` for
`calibration="none"`. A version is written into a hidden temporary sibling
`base_dir/<name>/.<version>.partial-*` and renamed into place when complete:
TF Serving polls `base_dir/<name>/` for integer directory names, so it never
sees a half-written version.
"""

import datetime
import os

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import atomic
from aradals_tf import attack as attack_lib
from aradals_tf import metrics
from aradals_tf import temperature as temperature_lib
from aradals_tf.choices import CALIBRATIONS
from aradals_tf.export import layout
from aradals_tf.version import __version__

# Batch size of the passes over validation images (no gradients).
EVAL_BATCH_SIZE = 500
# Class name -> training method, without importing the higher modules.
_TRAINING_METHODS = {
    "ARAdaLSModel": "ar-adals",
    "MixupModel": "mixup",
    "LogitEnsemble": "ensemble",
    "EnsembleARAdaLSModel": "ar-adals (ensemble)",
}


def _find_input_shape(model, depth=0):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs and len(inputs) == 1:
        shape = tuple(inputs[0].shape[1:])
        if shape and all(isinstance(d, int) for d in shape):
            return shape
    # Wrappers: ARAdaLSModel (backbone), LogitEnsemble (members), and both.
    children = [getattr(model, "backbone", None)]
    members = getattr(model, "members", None)
    if isinstance(members, (list, tuple)) and members:
        children.append(members[0])
    for child in children:
        if child is not None and depth < 4:
            shape = _find_input_shape(child, depth + 1)
            if shape:
                return shape
    return None


def _model_input_shape(model):
    """`(H, W, C)` of a model's input, from the model or its backbone/members."""
    shape = _find_input_shape(model)
    if shape is None:
        raise ValueError(
            f"Cannot infer the input shape of {type(model).__name__}; pass "
            "input_shape=(height, width, channels)."
        )
    return shape


def _probe_num_classes(model, input_shape):
    """Calls the model once; checks it outputs rank-2 logits; returns K."""
    try:
        outputs = model(tf.zeros([2, *input_shape], tf.float32), training=False)
    except Exception as error:  # any failure here is a shape/model mismatch
        raise ValueError(
            f"The model cannot be called on inputs of shape (batch, "
            f"{', '.join(map(str, input_shape))}): {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    if isinstance(outputs, (list, tuple, dict)) or len(outputs.shape) != 2:
        raise ValueError(
            "The model must output logits of shape [batch, num_classes]; got "
            f"{getattr(outputs, 'shape', type(outputs).__name__)}."
        )
    probe = np.asarray(outputs, np.float64)
    if np.all(probe >= 0) and np.allclose(probe.sum(axis=-1), 1.0, atol=1e-4):
        raise ValueError(
            "The model seems to output probabilities (rows sum to 1); export "
            "needs the logits: remove the final softmax."
        )
    if int(probe.shape[1]) < 2:
        raise ValueError(f"The model must have >= 2 classes; got {probe.shape[1]}.")
    return int(probe.shape[1])


def _batched_logits(model, images):
    logits = []
    for start in range(0, len(images), EVAL_BATCH_SIZE):
        batch = tf.convert_to_tensor(images[start : start + EVAL_BATCH_SIZE], tf.float32)
        logits.append(np.asarray(model(batch, training=False), np.float32))
    return np.concatenate(logits) if logits else np.zeros([0, 0], np.float32)


def _validation_logits(model, validation_data, input_shape):
    """`(logits, labels)` numpy from the forms `export_saved_model` accepts."""
    if isinstance(validation_data, dict):
        missing = {"logits", "labels"} - set(validation_data)
        if missing:
            raise ValueError(
                "validation_data as a dict needs the keys 'logits' and 'labels'; "
                f"missing {', '.join(sorted(missing))}."
            )
        logits = np.asarray(validation_data["logits"], np.float32)
        labels = np.asarray(validation_data["labels"]).reshape(-1)
    elif isinstance(validation_data, tf.data.Dataset):
        spec = validation_data.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(
                "validation_data as a tf.data.Dataset must yield (image, label) pairs."
            )
        dataset = validation_data
        if spec[0].shape.rank == len(input_shape):
            dataset = dataset.batch(EVAL_BATCH_SIZE)
        parts, label_parts = [], []
        for images, labels in dataset:
            parts.append(np.asarray(model(images, training=False), np.float32))
            label_parts.append(np.asarray(labels).reshape(-1))
        if not parts:
            raise ValueError("validation_data is empty.")
        logits, labels = np.concatenate(parts), np.concatenate(label_parts)
    elif isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
        images = np.asarray(validation_data[0])
        if images.shape[1:] != tuple(input_shape):
            raise ValueError(
                f"validation_data images have shape {images.shape}; the model "
                f"takes (n, {', '.join(map(str, input_shape))}). For precomputed "
                "logits pass validation_data={'logits': ..., 'labels': ...}."
            )
        logits = _batched_logits(model, images)
        labels = np.asarray(validation_data[1]).reshape(-1)
    else:
        raise ValueError(
            "validation_data must be (images, labels), a tf.data.Dataset of "
            "(image, label) or {'logits': ..., 'labels': ...}; got "
            f"{type(validation_data).__name__}."
        )
    if len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"validation_data has {len(logits)} logits/images and {len(labels)} "
            "labels; need the same number, at least one."
        )
    return logits, labels.astype(np.int32)


def _calibration_summary(logits, labels, temperature):
    scaled = logits / np.float32(temperature)
    return {
        "examples": int(len(labels)),
        "accuracy": float(np.mean(np.argmax(logits, axis=1) == labels)),
        "ece_before": float(metrics.expected_calibration_error(labels, logits, from_logits=True)),
        "ece_after": float(metrics.expected_calibration_error(labels, scaled, from_logits=True)),
        "nll_before": temperature_lib.temperature_nll(logits, labels, 1.0),
        "nll_after": temperature_lib.temperature_nll(logits, labels, temperature),
    }


def _resolve_temperature(calibration, temperature, validation):
    if calibration not in CALIBRATIONS:
        raise ValueError(
            f"calibration must be one of {', '.join(CALIBRATIONS)}; got {calibration!r}."
        )
    if calibration == "none":
        if temperature is not None and float(temperature) != 1.0:
            raise ValueError(
                f"calibration='none' exports T = 1; got temperature={temperature}. "
                "Use calibration='temperature' to export a given temperature."
            )
        return 1.0, "none"
    if temperature is not None:
        value = float(temperature)
        if not (value > 0 and np.isfinite(value)):
            raise ValueError(f"temperature must be a finite number > 0; got {temperature}.")
        return value, "given"
    if validation is None:
        raise ValueError(
            "calibration='temperature' needs validation_data (held-out images "
            "and labels, never the test split) to fit T, or an explicit temperature=."
        )
    return temperature_lib.fit_temperature(*validation), "fitted on validation_data"


def _robustness_settings(model, eps_max, attack_steps, norm):
    eps_max = eps_max if eps_max is not None else getattr(model, "eps_max", None)
    if eps_max is None:
        raise ValueError(
            "The robustness signature needs the attack budget: pass eps_max= in "
            "input units (0.3 for MNIST-like data, 8/255 for CIFAR-like data; "
            "`aradals_tf.dataset_info(name).eps_max`)."
        )
    attack_steps = attack_steps if attack_steps is not None else getattr(model, "attack_steps", 10)
    norm = norm if norm is not None else getattr(model, "norm", "inf")
    # The valid input range the attack projects onto: the model's own (an
    # ARAdaLSModel has one), else the package's pixel range [0, 1].
    clip_min = getattr(model, "clip_min", 0.0)
    clip_max = getattr(model, "clip_max", 1.0)
    loss = getattr(model, "attack_loss", "margin")
    eps_max, attack_steps, order = attack_lib.check_attack_settings(
        eps_max, attack_steps, norm, clip_min, clip_max
    )
    return {
        "eps_max": eps_max,
        "steps": attack_steps,
        "norm": "inf" if order == np.inf else "2",
        "loss": loss,
        # The model's own target choice (an ARAdaLSModel has one), else the scorer's.
        "candidates": attack_lib.check_candidates(getattr(model, "attack_candidates", None), loss),
        "clip_min": None if clip_min is None else float(clip_min),
        "clip_max": None if clip_max is None else float(clip_max),
    }


def _class_names(class_names, num_classes):
    if class_names is None:
        return None
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(
            f"class_names has {len(names)} names; the model has {num_classes} classes."
        )
    return names


def build_export_archive(model, input_shape, temperature_layer, class_names, attack):
    """The `keras.export.ExportArchive` with the three signatures (not written).

    Args:
        model: a built Keras model mapping float32 images to logits.
        input_shape: `(H, W, C)`.
        temperature_layer: a built `TemperatureScaling` layer.
        class_names: list of K names, or None.
        attack: the robustness settings (`eps_max`, `steps`, `norm`, `loss`,
            `candidates`, `clip_min`, `clip_max`).

    Returns:
        The archive; `archive.write_out(path)` writes the SavedModel.
    """
    labels_table = tf.constant(class_names) if class_names else None

    def calibrated(logits):
        scaled = temperature_layer(tf.cast(logits, tf.float32))
        probabilities = tf.nn.softmax(scaled, axis=-1)
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        outputs = {
            "probabilities": probabilities,
            "confidence": tf.reduce_max(probabilities, axis=-1),
            "predicted_class": predicted,
            "logits": scaled,
        }
        if labels_table is not None:
            outputs["predicted_label"] = tf.gather(labels_table, predicted)
        return outputs

    def serve(images):
        return calibrated(model(images, training=False))

    def serve_uint8(images):
        return serve(tf.cast(images, tf.float32) / 255.0)

    def robustness_fn(images):
        radius, level, clean_logits = attack_lib.growing_radius_attack(
            model,
            images,
            eps_max=attack["eps_max"],
            steps=attack["steps"],
            norm=attack["norm"],
            clip_min=attack["clip_min"],
            clip_max=attack["clip_max"],
            loss=attack["loss"],
            candidates=attack["candidates"],
            # False only to measure the whole-batch loop (scripts/bench_robustness.py).
            compact=attack.get("compact", True),
        )
        flipped = level < attack["steps"]
        outputs = calibrated(clean_logits)
        del outputs["probabilities"], outputs["logits"]
        outputs.update(
            radius=tf.where(flipped, radius, tf.constant(layout.NEVER_FLIPPED_RADIUS, tf.float32)),
            flipped=flipped,
            level=level,
        )
        return outputs

    float_spec = [tf.TensorSpec([None, *input_shape], tf.float32, name=layout.INPUT_NAME)]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(temperature_layer)
    archive.add_endpoint(layout.SERVING_SIGNATURE, serve, input_signature=float_spec)
    archive.add_endpoint(
        layout.UINT8_SIGNATURE,
        serve_uint8,
        input_signature=[tf.TensorSpec([None, *input_shape], tf.uint8, name=layout.INPUT_NAME)],
    )
    archive.add_endpoint(layout.ROBUSTNESS_SIGNATURE, robustness_fn, input_signature=float_spec)
    return archive


def export_saved_model(
    model,
    base_dir="saved_models",
    name=None,
    version=None,
    calibration="none",
    validation_data=None,
    temperature=None,
    class_names=None,
    *,
    training_method=None,
    input_shape=None,
    eps_max=None,
    attack_steps=None,
    norm=None,
    metadata=None,
):
    """Exports a classifier as a calibrated SavedModel for TF Serving.

    Writes `base_dir/<name>/<version>/` atomically (temporary sibling, then
    rename) with the signatures `serving_default` (float32 images in
    [0, 1]), `serving_uint8` (uint8 images 0-255) and `robustness`, and
    `assets.extra/aradals_tf.json` metadata; the signatures' inputs and outputs are
    `layout.SIGNATURE_INPUTS` / `layout.OUTPUT_DESCRIPTIONS` (the serving guide
    shows them).

    Args:
        model: a built Keras model mapping a batch of float32 images in
            [0, 1] to logits `[batch, K]` (functional, `ARAdaLSModel`,
            `LogitEnsemble`, ...).
        base_dir: the TF Serving base directory.
        name: the model name (a directory; TF Serving's `MODEL_NAME`);
            defaults to `model.name`.
        version: integer version >= 1; None takes 1 + the largest existing
            one. An existing version is never overwritten.
        calibration: `"none"` (T = 1) or `"temperature"` (T fitted with
            `fit_temperature` on `validation_data`, or `temperature` if given).
        validation_data: held-out data to fit T on and to report validation
            ECE before/after: `(images, labels)` arrays, a `tf.data.Dataset`
            of `(image, label)` (batched or not), or
            `{"logits": [n, K], "labels": [n]}` precomputed. Never the test
            split. The "after" ECE is measured on the data T was fitted on,
            so it is optimistic.
        temperature: an explicit T for `calibration="temperature"`.
        class_names: K class names; adds the `predicted_label` output.
        training_method: recorded in the metadata (default: from the model's
            class, e.g. `"ar-adals"` for an `ARAdaLSModel`).
        input_shape: `(H, W, C)`; default: the model's (or its backbone's).
        eps_max: the robustness signature's attack budget in input units;
            default: the model's `eps_max` (an `ARAdaLSModel` has one),
            otherwise required.
        attack_steps: radii tried by the robustness signature (default: the
            model's `attack_steps`, else 10).
        norm: `"inf"` or `"2"` (default: the model's `norm`, else `"inf"`).
        metadata: extra JSON-serialisable entries for the metadata file
            (stored under `"source"`, e.g. the run directory and dataset).

    Returns:
        The path of the written version directory.

    Raises:
        FileExistsError: the version exists.
        ValueError: an unknown calibration, no validation data to fit T,
            a model that outputs probabilities or cannot take `input_shape`,
            class names that do not match, no `eps_max`.

    Example:

    >>> path = export_saved_model(model, "saved_models", name="digits",
    ...                           calibration="temperature",
    ...                           validation_data=(x_val, y_val), eps_max=0.3)
    """
    name = layout.check_name(name if name is not None else model.name)
    if version is None:
        version = layout.next_version(base_dir, name)
    if isinstance(version, bool) or int(version) != version or int(version) < 1:
        raise ValueError(f"version must be an integer >= 1; got {version!r}.")
    version = int(version)
    version_dir = os.path.join(base_dir, name, str(version))
    if os.path.exists(version_dir):
        raise FileExistsError(
            f"{version_dir} already exists; exported versions are never "
            "overwritten (TF Serving may be serving it): choose another "
            "version, or omit it to take the next one."
        )
    if not getattr(model, "built", True):
        raise ValueError("The model is not built; call it on a batch of inputs first.")
    input_shape = tuple(int(d) for d in (input_shape or _model_input_shape(model)))
    num_classes = _probe_num_classes(model, input_shape)
    names = _class_names(class_names, num_classes)
    attack = _robustness_settings(model, eps_max, attack_steps, norm)
    validation = None
    if validation_data is not None:
        validation = _validation_logits(model, validation_data, input_shape)
        if validation[0].ndim != 2 or validation[0].shape[1] != num_classes:
            raise ValueError(
                f"validation logits have shape {validation[0].shape}; the model "
                f"has {num_classes} classes."
            )
    value, source = _resolve_temperature(calibration, temperature, validation)

    temperature_layer = temperature_lib.TemperatureScaling(value, name="temperature_scaling")
    temperature_layer(tf.zeros([1, num_classes], tf.float32))
    archive = build_export_archive(model, input_shape, temperature_layer, names, attack)
    record = {
        "format": "aradals_tf.export/1",
        "name": name,
        "version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "aradals_tf_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "model_class": type(model).__name__,
        "training_method": training_method or _TRAINING_METHODS.get(type(model).__name__),
        "calibration": {
            "method": calibration,
            "temperature": value,
            "temperature_source": source,
            "validation": None if validation is None else _calibration_summary(*validation, value),
        },
        "num_classes": num_classes,
        "class_names": names,
        "input": {
            "name": layout.INPUT_NAME,
            "shape": [None, *input_shape],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "uint8_signature": layout.UINT8_SIGNATURE,
            "note": "serving_default and robustness take float32 in [0, 1]; "
            "serving_uint8 takes uint8 0-255. Values outside the range are not "
            "checked by the server.",
        },
        "signatures": {
            signature: layout.signature_outputs(signature, names) for signature in layout.SIGNATURES
        },
        "robustness": {**attack, "never_flipped_radius": layout.NEVER_FLIPPED_RADIUS},
        "source": metadata or {},
    }
    with atomic.atomic_directory(version_dir) as partial:
        archive.write_out(partial, verbose=False)
        atomic.write_json(os.path.join(partial, layout.METADATA_PATH), record)
    return version_dir
