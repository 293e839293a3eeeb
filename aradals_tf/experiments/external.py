"""A classifier trained outside the package, as a run directory.

`model_run(model_path, data, out)` loads the user's model
(`export.models.load_classifier`: safely, logits taken before a final
softmax), checks it against the data, and writes a run directory (`out`)
like one `train_run` writes: `model.keras` (the logits model),
`config.json` (the data it is evaluated on, method "external") and
`source.json` (where the model and data came from, and how the logits were
taken). `evaluate_run`, `robustness_run` and `export_run` then work on it as
on any run: the temperature is fitted on the data's validation split.
"""

import dataclasses
import os

from aradals_tf import atomic
from aradals_tf.experiments import build
from aradals_tf.experiments.config import TrainConfig
from aradals_tf.export import models
from aradals_tf.version import __version__

METHOD = "external"
SOURCE_FILE = "source.json"


def default_run_dir(model_path, data):
    """`runs/<model name>-on-<data name>` for `--model` without `--out`."""

    def stem(path):
        base = os.path.basename(os.path.normpath(str(path).removeprefix("tfds:")))
        return os.path.splitext(base)[0] or "data"

    return os.path.join("runs", f"{stem(model_path)}-on-{stem(data)}")


def model_run(model_path, data, out, *, image_size=None, data_dir=None, seed=0, unsafe=False):
    """Writes a run directory for a user's classifier evaluated on `data`.

    Args:
        model_path: a `.keras` file or a SavedModel directory.
        data: the data, as `--data` takes it (see `data.dataset_info`).
        out: the run directory (replaced when it exists).
        image_size: `"HxW"` to resize the data's images to.
        data_dir: tfds data directory.
        seed: seed of the data's stratified split (where it has one).
        unsafe: trust the file's code (`safe_mode=False`).

    Returns:
        `(config, note)`: the run's `TrainConfig` and how its logits were taken.

    Example:

    >>> config, note = model_run("classifier.keras", "my_images/", "runs/mine")
    """
    config = TrainConfig(
        dataset=data, method="vanilla", seed=seed, image_size=image_size, data_dir=data_dir
    ).validate()
    info = build.dataset_info(config)
    model, note = models.load_classifier(model_path, info.image_shape, info.num_classes, unsafe)
    config = dataclasses.replace(config, method=METHOD, backbone=None)
    with atomic.atomic_directory(out, overwrite=True) as partial:
        model.save(os.path.join(partial, "model.keras"))
        atomic.write_json(
            os.path.join(partial, "config.json"),
            {"aradals_tf_version": __version__, **dataclasses.asdict(config)},
        )
        atomic.write_json(os.path.join(partial, "history.json"), {})
        atomic.write_json(
            os.path.join(partial, SOURCE_FILE),
            {
                "model": os.path.abspath(model_path),
                "data": data
                if data.startswith("tfds:")
                else os.path.abspath(data)
                if os.path.exists(data)
                else data,
                "logits": note,
                "unsafe_load": bool(unsafe),
            },
        )
    return config, note


def read_source(run_dir):
    """A run's `source.json` (None for a run the package trained)."""
    path = os.path.join(run_dir, SOURCE_FILE)
    return atomic.read_json(path) if os.path.isfile(path) else None
