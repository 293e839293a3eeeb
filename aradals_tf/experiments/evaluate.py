"""Evaluating runs: logits of a split, clean and shifted metrics with and
without temperature scaling, and held-out-shift validation scores."""

import os

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import atomic
from aradals_tf import corruptions
from aradals_tf import metrics
from aradals_tf import plots
from aradals_tf import temperature
from aradals_tf.experiments import build
from aradals_tf.experiments import train
from aradals_tf.experiments.config import CORRUPTION_SEED
from aradals_tf.experiments.config import EVAL_BATCH_SIZE


def predict_logits(model, dataset, verbose=0):
    """Logits and labels of an unbatched `(image, label)` dataset, as numpy.

    One pass over the data (corruptions are computed once), with a Keras
    progress bar when `verbose`.
    """
    dataset = dataset.batch(EVAL_BATCH_SIZE).prefetch(tf.data.AUTOTUNE)
    batches = int(dataset.cardinality())
    progress = (
        keras.utils.Progbar(batches if batches >= 0 else None, verbose=verbose) if verbose else None
    )
    all_logits, all_labels = [], []
    for step, (images, labels) in enumerate(dataset):
        all_logits.append(np.asarray(model.predict_on_batch(images), np.float32))
        all_labels.append(labels.numpy())
        if progress:
            progress.update(step + 1)
    return np.concatenate(all_logits), np.concatenate(all_labels).astype(np.int32)


def shifted(dataset, shift):
    """`dataset` under the corruption `"name:severity"` (unchanged for None)."""
    if not shift:
        return dataset
    name, severity = corruptions.parse_shift(shift)
    return corruptions.corrupt_dataset(dataset, name, severity, seed=CORRUPTION_SEED)


def shift_names(specs, channels=3):
    """Expands `--shift` values into a list of `"name:severity"`.

    `"all"` is the test suite (`CORRUPTIONS` x severities 1-5); `"held-out"`
    is `HELD_OUT_CORRUPTIONS` x severities 1-5, meant for the validation
    split only. With `channels` 1 the RGB-only types are left out of both.
    """
    names = []
    for spec in specs:
        if spec in ("all", "held-out"):
            types = corruptions.CORRUPTIONS if spec == "all" else corruptions.HELD_OUT_CORRUPTIONS
            if channels != 3:
                types = [t for t in types if t not in corruptions.RGB_ONLY_CORRUPTIONS]
            names += [f"{name}:{severity}" for name in types for severity in range(1, 6)]
        else:
            name, severity = corruptions.parse_shift(spec)
            names.append(f"{name}:{severity}")
    return list(dict.fromkeys(names))


def _metrics_pair(labels, logits, fitted_temperature, num_bins):
    return {
        "raw": metrics.calibration_summary(labels, logits, num_bins),
        "temperature": metrics.calibration_summary(labels, logits / fitted_temperature, num_bins),
    }


def evaluate_run(run_dir, shifts=(), split="test", num_bins=15, plots_dir=None, verbose=1):
    """Evaluates a run on clean and shifted data; writes `metrics.json`.

    Temperature scaling is fitted on the validation split's logits (never on
    the evaluated split) and reported beside the raw model.

    Args:
        run_dir: a run directory from `train_run`.
        shifts: `--shift` values: `"all"` or `"name:severity"` strings.
        split: the split to evaluate (`"test"` by default).
        num_bins: bins of ECE / MCE / adaptive ECE.
        plots_dir: where to write reliability diagrams (None: no plots).
        verbose: 1 shows a progress bar per pass over data.

    Returns:
        The dict written to `metrics.json`.
    """
    config, model = train.load_run(run_dir)
    shift_list = shift_names(shifts, build.dataset_info(config).image_shape[-1])
    if verbose:
        print("Validation split (fits the temperature):")
    val_logits, val_labels = predict_logits(
        model, build.split_dataset(config, "validation"), verbose
    )
    fitted = temperature.fit_temperature(val_logits, val_labels)
    validation_metrics = _metrics_pair(val_labels, val_logits, fitted, num_bins)
    if verbose:
        print(f"Clean {split} split:")
    evaluated = build.split_dataset(config, split)
    logits, labels = predict_logits(model, evaluated, verbose)
    results = {"clean": _metrics_pair(labels, logits, fitted, num_bins)}
    # Per-example logits, for pooling folds and paired intervals (`read_predictions`).
    predictions = {"labels": labels, "clean": logits}
    panels = {
        "raw": metrics.reliability_diagram_data(labels, logits, num_bins, True),
        f"temperature-scaled (T={fitted:.2f})": metrics.reliability_diagram_data(
            labels, logits / fitted, num_bins, True
        ),
    }
    if shift_list:
        progress = (
            keras.utils.Progbar(len(shift_list), verbose=verbose, unit_name="shift")
            if verbose
            else None
        )
        if verbose:
            print(f"{len(shift_list)} shifted copies of the {split} split:")
        for index, spec in enumerate(shift_list):
            logits, labels = predict_logits(model, shifted(evaluated, spec))
            results[spec] = _metrics_pair(labels, logits, fitted, num_bins)
            predictions[spec] = logits
            if progress:
                progress.update(index + 1)
    summary = {
        "run": os.path.abspath(run_dir),
        "dataset": config.dataset,
        "method": config.method,
        "split": split,
        "num_bins": num_bins,
        "temperature": fitted,
        "settings": config.method_settings(),
        # Validation metrics are for model selection; the temperature was
        # fitted on this split, so its "temperature" row is optimistic.
        "validation": validation_metrics,
        "results": results,
    }
    if shift_list:
        summary["shift_mean"] = {
            kind: {
                key: float(np.mean([results[s][kind][key] for s in shift_list]))
                for key in results["clean"][kind]
            }
            for kind in ("raw", "temperature")
        }
    _write_predictions(os.path.join(run_dir, f"predictions_{split}.npz"), predictions, fitted)
    atomic.write_json(os.path.join(run_dir, "metrics.json"), summary)
    if plots_dir:
        name = os.path.basename(os.path.normpath(run_dir))
        summary["plots"] = [
            plots.reliability_diagrams(
                panels,
                os.path.join(plots_dir, f"{name}_reliability.png"),
                suptitle=f"run {name}: {config.method} on {config.dataset} ({split} split)",
            )
        ]
    return summary


def _write_predictions(path, predictions, fitted_temperature):
    with atomic.atomic_file(path, "wb") as stream:
        np.savez_compressed(
            stream,
            temperature=np.float32(fitted_temperature),
            **{key.replace(":", "@"): value for key, value in predictions.items()},
        )


def read_predictions(run_dir, split="test"):
    """The per-example test logits that `evaluate_run` kept.

    Returns:
        `(labels, logits, temperature)`: int32 `[n]`, a dict from `"clean"`
        and each evaluated `"name:severity"` shift to float32 `[n, K]`, and
        the temperature fitted on the validation split.

    Raises:
        FileNotFoundError: the run has not been evaluated on `split`.
    """
    path = os.path.join(run_dir, f"predictions_{split}.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found; run `aradals-tf evaluate --run {run_dir}` first."
        )
    with np.load(path) as stored:
        labels = stored["labels"]
        temperature_value = float(stored["temperature"])
        logits = {
            key.replace("@", ":"): stored[key]
            for key in stored.files
            if key not in ("labels", "temperature")
        }
    return labels, logits, temperature_value


def held_out_validation(run_dir, num_bins=15, verbose=0):
    """A run's raw calibration on the validation split under the held-out
    corruptions (`shift_names(["held-out"])`), for model selection.

    Cached in `run_dir/held_out_validation.json` (a retrained run directory
    is replaced whole, so the cache cannot outlive its model).

    Returns:
        `{"results": {shift: metrics}, "shift_mean": metrics}`, raw metrics
        as `metrics.calibration_summary`.
    """
    path = os.path.join(run_dir, "held_out_validation.json")
    if os.path.isfile(path):
        return atomic.read_json(path)
    config, model = train.load_run(run_dir)
    validation = build.split_dataset(config, "validation")
    channels = build.dataset_info(config).image_shape[-1]
    results = {}
    for spec in shift_names(["held-out"], channels):
        logits, labels = predict_logits(model, shifted(validation, spec), verbose)
        results[spec] = metrics.calibration_summary(labels, logits, num_bins)
    summary = {
        "results": results,
        "shift_mean": {
            key: float(np.mean([result[key] for result in results.values()]))
            for key in next(iter(results.values()))
        },
    }
    atomic.write_json(path, summary)
    return summary
