"""Running an exported SavedModel the way TF Serving would (the CLI's `predict`).

Loads a version, checks and feeds input files to a signature, and writes
TF Serving's REST request and response bodies.
"""

import json

import numpy as np
import tensorflow as tf

from aradals_tf.export import inputs as inputs_lib
from aradals_tf.export import layout


def load_saved_model(path):
    """Loads a SavedModel for `predict`; returns `(loaded object, version dir)`."""
    version_dir = layout.resolve_saved_model(path)
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


def signature_for(inputs, signature=layout.SERVING_SIGNATURE, available=layout.SIGNATURES):
    """Signature to run and the inputs to feed it.

    uint8 inputs go to `serving_uint8` (when `signature` is
    `serving_default` and the model has it), otherwise they are divided by 255.
    """
    if inputs.dtype == np.uint8:
        if signature == layout.SERVING_SIGNATURE and layout.UINT8_SIGNATURE in available:
            return layout.UINT8_SIGNATURE, inputs
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
    outputs = loaded.signatures[signature](**{layout.INPUT_NAME: tf.constant(inputs)})
    return {key: value.numpy() for key, value in sorted(outputs.items())}


def prepare_inputs(path, files, signature=layout.SERVING_SIGNATURE, resize=False):
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
    version_dir = layout.resolve_saved_model(path)
    metadata = layout.read_metadata(version_dir)
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
    batch = inputs_lib.read_inputs(files, image_shape, resize=resize)
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


def format_predictions(outputs):
    """Signature outputs as a text table, one row per input."""
    columns = [
        c
        for c in ("predicted_class", "predicted_label", "confidence", "radius", "flipped")
        if c in outputs
    ]
    lines = ["  ".join(["input"] + [f"{c:>15}" for c in columns])]
    for row in range(len(next(iter(outputs.values())))):
        cells = []
        for column in columns:
            value = outputs[column][row]
            if isinstance(value, bytes):
                value = value.decode("utf-8", errors="replace")
            elif column == "radius" and value < 0:
                value = "never"
            elif column in ("confidence", "radius"):
                value = f"{float(value):.4f}"
            cells.append(f"{str(value):>15}")
        lines.append("  ".join([f"{row:>5}"] + cells))
    return "\n".join(lines)
