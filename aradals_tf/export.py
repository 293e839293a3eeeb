"""Calibrated SavedModel export for TF Serving, and running exported models.

`export_saved_model` writes any Keras classifier that outputs logits (a
functional backbone, an `ARAdaLSModel`, a `LogitEnsemble`) as a SavedModel
in TF Serving's layout `base_dir/<name>/<version>/`, whose signatures return
calibrated probabilities:

- `serving_default`: input `images`, float32 `[batch, H, W, C]` in [0, 1]
  (the package's pixel convention); outputs `probabilities`
  (`softmax(logits / T)`, float32 `[batch, K]`), `confidence` (the largest
  probability, float32 `[batch]`), `predicted_class` (its index, int64
  `[batch]`, ties to the lowest index), `logits` (the calibrated logits
  `logits / T`, float32 `[batch, K]`) and, when class names are given,
  `predicted_label` (string `[batch]`).
- `serving_uint8`: the same outputs for input `images` as uint8 `[batch, H,
  W, C]` with values 0-255 (divided by 255 inside the graph). A separate
  signature rather than a guess from the value range: a float image in
  [0, 1] and a dark 0-255 image cannot be told apart.
- `robustness`: input `images` as for `serving_default`; outputs `radius`
  (float32: the smallest L-inf (or L2) perturbation radius, on the attack's
  grid `t * eps_max / steps`, at which the model's prediction flips; -1.0
  when it never flips within `eps_max`, because TF Serving's JSON cannot
  carry infinity), `flipped` (bool: whether it flips within eps_max),
  `level` (int32 in 0..steps; steps = never), `confidence`,
  `predicted_class` and `predicted_label` (as in `serving_default`). It runs
  the package's growing-radius attack (`robustness.growing_radius_attack`):
  about `steps` forward and backward passes per request, so it is much
  slower than `serving_default`.

The temperature `T` is a variable of the SavedModel (a `TemperatureScaling`
layer, tracked by `keras.export.ExportArchive`); `T = 1` for
`calibration="none"`. A version is written into a hidden temporary sibling
`base_dir/<name>/.<version>.partial-*` and renamed into place when complete:
TF Serving polls `base_dir/<name>/` for integer directory names, so it never
sees a half-written version. Metadata (temperature, validation ECE before and
after, class names, input spec, robustness settings, versions) is written to
`<version>/assets.extra/aradals_tf.json`, a directory TF Serving ignores.
"""

import datetime
import json
import os
import re

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import atomic
from aradals_tf import metrics
from aradals_tf import robustness
from aradals_tf import temperature as temperature_lib
from aradals_tf.version import __version__

CALIBRATIONS = ("none", "temperature")
INPUT_NAME = "images"
SERVING_SIGNATURE = "serving_default"
UINT8_SIGNATURE = "serving_uint8"
ROBUSTNESS_SIGNATURE = "robustness"
SIGNATURES = (SERVING_SIGNATURE, UINT8_SIGNATURE, ROBUSTNESS_SIGNATURE)
METADATA_PATH = os.path.join("assets.extra", "aradals_tf.json")
# What the `robustness` signature reports as `radius` for "never flipped".
NEVER_FLIPPED_RADIUS = -1.0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
EVAL_BATCH_SIZE = 500
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

OUTPUT_DESCRIPTIONS = {
    "probabilities": "float32 [batch, K]: calibrated class probabilities softmax(logits / T); rows sum to 1",
    "confidence": "float32 [batch]: the largest calibrated probability (the model's confidence)",
    "predicted_class": "int64 [batch]: index of the largest probability (ties: lowest index)",
    "logits": "float32 [batch, K]: calibrated logits, the model's logits divided by T",
    "predicted_label": "string [batch]: class name of predicted_class (only with class names)",
    "radius": "float32 [batch]: smallest attack radius that flips the prediction "
    "(on the grid t * eps_max / steps); -1.0 = not flipped within eps_max",
    "flipped": "bool [batch]: whether the prediction flips within eps_max",
    "level": "int32 [batch]: robustness level 0..steps (flip at radius (level + 1) * eps_max / steps; steps = never)",
}

# Class name -> training method, without importing the higher modules.
_TRAINING_METHODS = {
    "ARAdaLSModel": "ar-adals",
    "MixupModel": "mixup",
    "LogitEnsemble": "ensemble",
    "EnsembleARAdaLSModel": "ar-adals (ensemble)",
}


# --------------------------------------------------------------------------
# Layout: versions, resolving paths, metadata.


def _check_name(name):
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"Model name must be letters, digits, '_', '-' or '.' and not start "
            f"with '.' or '-' (it becomes a directory and a TF Serving model "
            f"name); got {name!r}."
        )
    return name


def list_versions(model_dir):
    """Sorted integer versions in a TF Serving model directory (`base/<name>`).

    Hidden partial directories of exports in progress (or killed) are not
    versions; neither is anything else whose name is not an integer.
    """
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(entry)
        for entry in os.listdir(model_dir)
        if entry.isdigit() and os.path.isdir(os.path.join(model_dir, entry))
    )


def next_version(base_dir, name):
    """The version `export_saved_model` picks by default: 1 + the largest one."""
    versions = list_versions(os.path.join(base_dir, _check_name(name)))
    return (versions[-1] + 1) if versions else 1


def resolve_saved_model(path):
    """Returns the SavedModel directory that `path` names.

    Args:
        path: a version directory (`saved_models/<name>/<version>`) or a
            model directory (`saved_models/<name>`), which resolves to its
            highest version, as TF Serving's default version policy does.

    Raises:
        FileNotFoundError: no such directory, or no SavedModel in it.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"SavedModel directory {path} not found; create one with "
            "`aradals-tf export --run RUN`."
        )
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [
        v for v in list_versions(path) if os.path.isfile(os.path.join(path, str(v), "saved_model.pb"))
    ]
    if versions:
        return os.path.join(path, str(versions[-1]))
    raise FileNotFoundError(
        f"{path} holds no SavedModel (no saved_model.pb, nor version "
        "subdirectories with one)."
    )


def read_metadata(path):
    """Reads the export metadata of a SavedModel written by this module.

    Args:
        path: a version or model directory (see `resolve_saved_model`).

    Returns:
        The metadata dict, or `None` for a SavedModel without it.
    """
    metadata_path = os.path.join(resolve_saved_model(path), METADATA_PATH)
    if not os.path.isfile(metadata_path):
        return None
    return atomic.read_json(metadata_path)


# --------------------------------------------------------------------------
# Export.


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
    eps_max, attack_steps, order = robustness.check_attack_settings(
        eps_max, attack_steps, norm, clip_min, clip_max
    )
    return {
        "eps_max": eps_max,
        "steps": attack_steps,
        "norm": "inf" if order == np.inf else "2",
        "loss": getattr(model, "attack_loss", "margin"),
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
            `clip_min`, `clip_max`).

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
        radius, level, clean_logits = robustness.growing_radius_attack(
            model,
            images,
            eps_max=attack["eps_max"],
            steps=attack["steps"],
            norm=attack["norm"],
            clip_min=attack["clip_min"],
            clip_max=attack["clip_max"],
            loss=attack["loss"],
        )
        flipped = level < attack["steps"]
        outputs = calibrated(clean_logits)
        del outputs["probabilities"], outputs["logits"]
        outputs.update(
            radius=tf.where(flipped, radius, tf.constant(NEVER_FLIPPED_RADIUS, tf.float32)),
            flipped=flipped,
            level=level,
        )
        return outputs

    float_spec = [tf.TensorSpec([None, *input_shape], tf.float32, name=INPUT_NAME)]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(temperature_layer)
    archive.add_endpoint(SERVING_SIGNATURE, serve, input_signature=float_spec)
    archive.add_endpoint(
        UINT8_SIGNATURE,
        serve_uint8,
        input_signature=[tf.TensorSpec([None, *input_shape], tf.uint8, name=INPUT_NAME)],
    )
    archive.add_endpoint(ROBUSTNESS_SIGNATURE, robustness_fn, input_signature=float_spec)
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
    `assets.extra/aradals_tf.json` metadata; see the module docstring for the
    inputs and outputs.

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
    name = _check_name(name if name is not None else model.name)
    if version is None:
        version = next_version(base_dir, name)
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
            "name": INPUT_NAME,
            "shape": [None, *input_shape],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "uint8_signature": UINT8_SIGNATURE,
            "note": "serving_default and robustness take float32 in [0, 1]; "
            "serving_uint8 takes uint8 0-255. Values outside the range are not "
            "checked by the server.",
        },
        "signatures": {
            SERVING_SIGNATURE: _signature_outputs(names, robustness_outputs=False),
            UINT8_SIGNATURE: _signature_outputs(names, robustness_outputs=False),
            ROBUSTNESS_SIGNATURE: _signature_outputs(names, robustness_outputs=True),
        },
        "robustness": {**attack, "never_flipped_radius": NEVER_FLIPPED_RADIUS},
        "source": metadata or {},
    }
    with atomic.atomic_directory(version_dir) as partial:
        archive.write_out(partial, verbose=False)
        atomic.write_json(os.path.join(partial, METADATA_PATH), record)
    return version_dir


def _signature_outputs(class_names, robustness_outputs):
    keys = (
        ["radius", "flipped", "level", "confidence", "predicted_class"]
        if robustness_outputs
        else ["probabilities", "confidence", "predicted_class", "logits"]
    )
    if class_names:
        keys.append("predicted_label")
    return {key: OUTPUT_DESCRIPTIONS[key] for key in keys}


# --------------------------------------------------------------------------
# Running an exported model (the CLI's `predict`).


def load_saved_model(path):
    """Loads a SavedModel for `predict`; returns `(loaded object, version dir)`."""
    version_dir = resolve_saved_model(path)
    try:
        loaded = tf.saved_model.load(version_dir)
    except Exception as error:  # TF raises several types for a bad directory
        raise ValueError(
            f"Cannot load the SavedModel in {version_dir}: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    return loaded, version_dir


def signature_input_spec(loaded, signature):
    """The `tf.TensorSpec` of a signature's single `images` input."""
    if signature not in loaded.signatures:
        raise ValueError(
            f"The SavedModel has no signature {signature!r}; it has "
            f"{', '.join(sorted(loaded.signatures))}."
        )
    specs = loaded.signatures[signature].structured_input_signature[1]
    if len(specs) != 1:
        raise ValueError(
            f"Signature {signature!r} takes {len(specs)} inputs ({', '.join(specs)}); "
            "predict feeds exactly one image tensor."
        )
    return next(iter(specs.values()))


def _describe_shape(shape):
    return "x".join(str(d) for d in shape)


def _read_npy(path, image_shape):
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"Cannot read {path} as a .npy array: {error}") from None
    if array.dtype == np.uint8:
        pass
    elif array.dtype in (np.float16, np.float32, np.float64):
        array = array.astype(np.float32)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{path} contains NaN or inf.")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(
                f"{path} has values in [{array.min():.4g}, {array.max():.4g}]; the "
                "model takes float images in [0, 1] (or uint8 0-255): divide by 255."
            )
    else:
        raise ValueError(
            f"{path} has dtype {array.dtype}; the model takes float32 images in "
            "[0, 1] or uint8 images 0-255."
        )
    if array.shape == tuple(image_shape):
        array = array[None]
    if array.ndim != len(image_shape) + 1 or array.shape[1:] != tuple(image_shape):
        raise ValueError(
            f"{path} has shape {array.shape}; the model takes one image "
            f"{tuple(image_shape)} or a batch (n, {', '.join(map(str, image_shape))})."
        )
    return array


def _read_image(path, image_shape, resize):
    try:
        contents = tf.io.read_file(path)
        image = tf.io.decode_image(contents, expand_animations=False)
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", str(error)).splitlines()
        raise ValueError(
            f"Cannot decode {path} as an image (PNG, JPEG, GIF or BMP; arrays as "
            f".npy): {message[0] if message else type(error).__name__}"
        ) from None
    height, width, channels = image_shape
    if image.dtype != tf.uint8:
        image = tf.image.convert_image_dtype(image, tf.uint8)
    have = int(image.shape[-1])
    if have in (2, 4):  # drop the alpha channel
        image = image[..., : have - 1]
        have -= 1
    if have == 3 and channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    elif have == 1 and channels == 3:
        image = tf.image.grayscale_to_rgb(image)
    elif have != channels:
        raise ValueError(f"{path} has {have} channels; the model takes {channels}.")
    if tuple(image.shape[:2]) != (height, width):
        if not resize:
            raise ValueError(
                f"{path} is {_describe_shape(image.shape)} (HxWxC after channel "
                f"conversion); the model takes {_describe_shape(image_shape)}: "
                "pass --resize to resize it (bilinear)."
            )
        resized = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (height, width))
        return np.clip(resized.numpy(), 0.0, 1.0).astype(np.float32)[None]
    return image.numpy().astype(np.uint8)[None]


def read_inputs(paths, image_shape, resize=False):
    """Reads input files into one batch for an exported model.

    Args:
        paths: files: `.npy` arrays (one image `(H, W, C)` or a batch
            `(n, H, W, C)`; float in [0, 1] or uint8 0-255) or images (PNG,
            JPEG, GIF, BMP; converted to the model's channels).
        image_shape: the model's `(H, W, C)`.
        resize: resize images of another size (bilinear) instead of failing.

    Returns:
        A numpy batch: uint8 (0-255) when every input is uint8, else float32
        in [0, 1].

    Raises:
        FileNotFoundError: a missing file.
        ValueError: a wrong shape, dtype or range, or an undecodable image.
    """
    if not paths:
        raise ValueError("No input files given.")
    batches = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Input file {path} not found.")
        if path.lower().endswith(".npy"):
            batches.append(_read_npy(path, image_shape))
        else:
            batches.append(_read_image(path, image_shape, resize))
    if all(batch.dtype == np.uint8 for batch in batches):
        return np.concatenate(batches)
    return np.concatenate(
        [b.astype(np.float32) / 255.0 if b.dtype == np.uint8 else b for b in batches]
    )


def signature_for(inputs, signature=SERVING_SIGNATURE, available=SIGNATURES):
    """Signature to run and the inputs to feed it.

    uint8 inputs go to `serving_uint8` (when `signature` is
    `serving_default` and the model has it), otherwise they are divided by 255.
    """
    if inputs.dtype == np.uint8:
        if signature == SERVING_SIGNATURE and UINT8_SIGNATURE in available:
            return UINT8_SIGNATURE, inputs
        return signature, inputs.astype(np.float32) / 255.0
    return signature, inputs.astype(np.float32)


def run_signature(loaded, signature, inputs):
    """Runs a loaded SavedModel's signature; returns a dict of numpy outputs."""
    spec = signature_input_spec(loaded, signature)
    if inputs.dtype != spec.dtype.as_numpy_dtype or not spec.shape.is_compatible_with(inputs.shape):
        raise ValueError(
            f"Signature {signature!r} takes {spec.dtype.name} {spec.shape}; got "
            f"{inputs.dtype} {inputs.shape}."
        )
    outputs = loaded.signatures[signature](**{INPUT_NAME: tf.constant(inputs)})
    return {key: value.numpy() for key, value in sorted(outputs.items())}


def prepare_inputs(path, files, signature=SERVING_SIGNATURE, resize=False):
    """Reads and checks input files for a SavedModel, before loading it.

    The input shape and signatures come from the export metadata when there
    is one (so bad input fails fast), else from the loaded SavedModel.

    Args:
        path: a version or model directory (see `resolve_saved_model`).
        files: input files (see `read_inputs`).
        signature: `serving_default` or `robustness`.
        resize: resize images of another size.

    Returns:
        `(version_dir, signature to run, batch to feed it, loaded SavedModel
        or None when not loaded yet)`.
    """
    version_dir = resolve_saved_model(path)
    metadata = read_metadata(version_dir)
    loaded = None
    if metadata is not None:
        image_shape = tuple(metadata["input"]["shape"][1:])
        available = tuple(metadata["signatures"])
        if signature not in available:
            raise ValueError(
                f"The SavedModel has no signature {signature!r}; it has {', '.join(available)}."
            )
    else:
        loaded, _ = load_saved_model(version_dir)
        spec = signature_input_spec(loaded, signature)
        image_shape = tuple(spec.shape[1:])
        available = tuple(loaded.signatures)
        if None in image_shape:
            raise ValueError(f"Signature {signature!r} has an input of unknown shape {spec.shape}.")
    batch = read_inputs(files, image_shape, resize=resize)
    name, batch = signature_for(batch, signature, available)
    return version_dir, name, batch, loaded


def _jsonable(value):
    """Python values for JSON; float32 as its shortest decimal (0.12, not
    0.11999999731779099), which parses back to the same float32."""
    value = np.asarray(value)
    if value.dtype.kind in "SOU":
        if value.ndim:
            return [_jsonable(v) for v in value]
        item = value.item()
        return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)
    if value.dtype in (np.float16, np.float32):
        return value.astype(str).astype(np.float64).tolist()
    return value.tolist()


def rest_response(outputs):
    """TF Serving's REST `predict` response (row format) for named outputs.

    `{"predictions": [{"probabilities": [...], "confidence": 0.98, ...}, ...]}`
    """
    count = len(next(iter(outputs.values())))
    return {
        "predictions": [
            {key: _jsonable(value[row]) for key, value in outputs.items()} for row in range(count)
        ]
    }


def rest_request(inputs, signature):
    """The TF Serving REST `predict` request body (row format) for a batch."""
    return {"signature_name": signature, "instances": _jsonable(inputs)}


def dumps(payload):
    """Compact one-line JSON, ready for `curl -d @file`."""
    return json.dumps(payload, separators=(",", ":"))
