"""Exporting a run directory as a calibrated SavedModel for TF Serving."""

import os
import re

from aradals_tf import export
from aradals_tf.experiments import build
from aradals_tf.experiments import evaluate
from aradals_tf.experiments import external
from aradals_tf.experiments import train


def default_model_name(run_dir):
    """The run directory's name, made a valid TF Serving model name."""
    base = os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base).lstrip(".-") or "model"


def export_run(
    run_dir,
    base_dir="saved_models",
    name=None,
    version=None,
    calibration="temperature",
    eps_max=None,
    attack_steps=None,
):
    """Exports a run with `export.export_saved_model`, T fitted on its validation split.

    Args:
        run_dir: a run directory from `train_run`.
        base_dir: the TF Serving base directory.
        name: the model name (default: `default_model_name(run_dir)`).
        version: integer version (default: the next free one).
        calibration: `"temperature"` or `"none"`.
        eps_max: attack budget of the robustness signature (default: the run's).
        attack_steps: radii the robustness signature tries (default: the run's).

    Returns:
        `(config, path of the version directory, its metadata)`.
    """
    config, model = train.load_run(run_dir)
    info = build.dataset_info(config)
    logits, labels = evaluate.predict_logits(model, build.split_dataset(config, "validation"))
    path = export.export_saved_model(
        model,
        base_dir,
        name=name or default_model_name(run_dir),
        version=version,
        calibration=calibration,
        validation_data={"logits": logits, "labels": labels},
        class_names=info.class_names,
        training_method=config.method,
        input_shape=info.image_shape,
        eps_max=eps_max or config.eps_max or info.eps_max,
        attack_steps=attack_steps or config.attack_steps,
        metadata={
            "run": os.path.abspath(run_dir),
            "dataset": config.dataset,
            "seed": config.seed,
            # A user's own model: where it and the data came from, how its logits were taken.
            **(external.read_source(run_dir) or {}),
        },
    )
    return config, path, export.read_metadata(path)
