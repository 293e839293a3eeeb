"""What an export looks like: TF Serving's version layout, the signatures and
their outputs, and the metadata file.

`base_dir/<name>/<version>/` holds the SavedModel and
`assets.extra/aradals_tf.json`, the metadata (a directory TF Serving
ignores). The signatures, their inputs and their outputs are described here
once (`SIGNATURE_INPUTS`, `SIGNATURE_OUTPUTS`, `OUTPUT_DESCRIPTIONS`); the
serving guide's table is generated from them (`signatures_markdown`).
No TensorFlow import.
"""

import os
import re

from aradals_tf import atomic

INPUT_NAME = "images"
SERVING_SIGNATURE = "serving_default"
UINT8_SIGNATURE = "serving_uint8"
ROBUSTNESS_SIGNATURE = "robustness"
SIGNATURES = (SERVING_SIGNATURE, UINT8_SIGNATURE, ROBUSTNESS_SIGNATURE)
METADATA_PATH = os.path.join("assets.extra", "aradals_tf.json")
# What the `robustness` signature reports as `radius` for "never flipped":
# TF Serving's JSON cannot carry infinity.
NEVER_FLIPPED_RADIUS = -1.0
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

SIGNATURE_INPUTS = {
    SERVING_SIGNATURE: "float32 [batch, H, W, C] in [0, 1] (the training pixel range)",
    UINT8_SIGNATURE: "uint8 [batch, H, W, C] 0-255 (divided by 255 in the graph)",
    ROBUSTNESS_SIGNATURE: "float32 [batch, H, W, C] in [0, 1]",
}
_CALIBRATED_OUTPUTS = ("probabilities", "confidence", "predicted_class", "logits")
# Every signature also returns `predicted_label` when the export has class names.
SIGNATURE_OUTPUTS = {
    SERVING_SIGNATURE: _CALIBRATED_OUTPUTS,
    UINT8_SIGNATURE: _CALIBRATED_OUTPUTS,
    ROBUSTNESS_SIGNATURE: ("radius", "flipped", "level", "confidence", "predicted_class"),
}

OUTPUT_DESCRIPTIONS = {
    "probabilities": "float32 [batch, K]: calibrated class probabilities softmax(logits / T); "
    "rows sum to 1",
    "confidence": "float32 [batch]: the largest calibrated probability (the model's confidence)",
    "predicted_class": "int64 [batch]: index of the largest probability (ties: lowest index)",
    "logits": "float32 [batch, K]: calibrated logits, the model's logits divided by T",
    "predicted_label": "string [batch]: class name of predicted_class (only with class names)",
    "radius": "float32 [batch]: attack radius at which the prediction flips, interpolated "
    "between the attack's steps; -1.0 = not flipped within eps_max",
    "flipped": "bool [batch]: whether the prediction flips within eps_max",
    "level": "int32 [batch]: robustness level 0..steps (the flip happens at attack step "
    "level + 1, radius at most (level + 1) * eps_max / steps; steps = never)",
}


def check_name(name):
    """Returns `name` if it can be a model directory and TF Serving model name."""
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
    versions = list_versions(os.path.join(base_dir, check_name(name)))
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
            f"SavedModel directory {path} not found; create one with `aradals-tf export --run RUN`."
        )
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [
        v
        for v in list_versions(path)
        if os.path.isfile(os.path.join(path, str(v), "saved_model.pb"))
    ]
    if versions:
        return os.path.join(path, str(versions[-1]))
    raise FileNotFoundError(
        f"{path} holds no SavedModel (no saved_model.pb, nor version subdirectories with one)."
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


def signature_outputs(signature, class_names):
    """`{output: description}` of one signature, as the metadata records it."""
    keys = list(SIGNATURE_OUTPUTS[signature])
    if class_names:
        keys.append("predicted_label")
    return {key: OUTPUT_DESCRIPTIONS[key] for key in keys}


def signatures_markdown():
    """The signatures and their outputs as Markdown tables (the serving guide's)."""
    lines = ["| signature | input `images` | outputs |", "| --- | --- | --- |"]
    for signature in SIGNATURES:
        outputs = ", ".join(f"`{key}`" for key in SIGNATURE_OUTPUTS[signature])
        lines.append(
            f"| `{signature}` | {SIGNATURE_INPUTS[signature]} | {outputs}, `predicted_label` |"
        )
    lines += ["", "| output | type and meaning |", "| --- | --- |"]
    lines += [f"| `{key}` | {text} |" for key, text in OUTPUT_DESCRIPTIONS.items()]
    return "\n".join(lines)
