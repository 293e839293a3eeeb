"""Runs: train a method into a run directory, evaluate it, compare runs.

A run directory holds `config.json` (everything needed to rebuild the
experiment), `model.keras` (the trained model; calling it gives logits) and
`history.json` (Keras's per-epoch logs); `aradals-tf evaluate` adds
`metrics.json` and reliability diagrams. Directories and files are written
atomically (see `atomic`), so an interrupted run leaves nothing half-written.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import atomic
from aradals_tf import backbones
from aradals_tf import corruptions
from aradals_tf import data
from aradals_tf import metrics
from aradals_tf import robustness
from aradals_tf import temperature
from aradals_tf import training
from aradals_tf.version import __version__

METHODS = ("vanilla", "label-smoothing")
EVAL_BATCH_SIZE = 500
# Seed of the corruption noise at evaluation time: fixed, so every run and
# method is evaluated on the same corrupted images.
CORRUPTION_SEED = 1234


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines one training run.

    Attributes:
        dataset: a name from `data.dataset_names()`.
        method: one of `METHODS`.
        backbone: a name from `backbones.BACKBONES`; None picks the default for
            the dataset's image size.
        epochs: training epochs.
        batch_size: training batch size.
        learning_rate: Adam learning rate.
        seed: seed of weights, shuffling and the embedded sets' split.
        label_smoothing: eps of the uniform label-smoothing baseline.
        data_dir: tfds data directory for tfds datasets.
    """

    dataset: str = "mnist5k"
    method: str = "vanilla"
    backbone: str | None = None
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    label_smoothing: float = 0.1
    data_dir: str | None = None

    def validate(self):
        """Raises ValueError on a setting that cannot work; fills defaults."""
        info = data.dataset_info(self.dataset)
        if "train" not in info.splits:
            raise ValueError(
                f"{self.dataset!r} has no train split; train on cifar10 and "
                "evaluate on cifar10_corrupted."
            )
        if self.method not in METHODS:
            raise ValueError(
                f"Unknown method {self.method!r}; valid methods: {', '.join(METHODS)}."
            )
        if self.backbone is None:
            self.backbone = backbones.default_backbone_name(info.image_shape)
        if self.backbone not in backbones.BACKBONES:
            raise ValueError(
                f"Unknown backbone {self.backbone!r}; valid names: "
                f"{', '.join(backbones.BACKBONES)}."
            )
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")
        if not 0 <= self.label_smoothing <= 1:
            raise ValueError(
                f"label_smoothing must be in [0, 1]; got {self.label_smoothing}."
            )
        return self

    @classmethod
    def from_dict(cls, values):
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _datasets(config):
    train = data.load_dataset(config.dataset, "train", config.seed, data_dir=config.data_dir)
    validation = data.load_dataset(
        config.dataset, "validation", config.seed, data_dir=config.data_dir
    )
    train = (
        train.cache()
        .shuffle(10_000, seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = validation.cache().batch(EVAL_BATCH_SIZE).prefetch(tf.data.AUTOTUNE)
    return train, validation


def _loss(config):
    if config.method == "label-smoothing":
        return training.SparseLabelSmoothingCrossentropy(config.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build_model(config):
    """Builds and compiles the model a config describes (not yet trained)."""
    info = data.dataset_info(config.dataset)
    keras.utils.set_random_seed(config.seed)
    model = backbones.build_backbone(config.backbone, info.image_shape, info.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=_loss(config),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            metrics.ExpectedCalibrationError(from_logits=True),
        ],
    )
    return model


def train_run(config, out, overwrite=False, verbose="auto"):
    """Trains `config` and writes the run directory `out` atomically.

    Args:
        config: a `TrainConfig`.
        out: run directory to create.
        overwrite: replace an existing run directory.
        verbose: Keras `fit` verbosity.

    Returns:
        The `keras.callbacks.History` of the fit.
    """
    config.validate()
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
    train, validation = _datasets(config)
    with atomic.atomic_directory(out, overwrite=overwrite) as partial:
        model = build_model(config)
        history = model.fit(
            train,
            validation_data=validation,
            epochs=config.epochs,
            shuffle=False,  # the dataset shuffles itself, seeded
            verbose=verbose,
        )
        model.save(os.path.join(partial, "model.keras"))
        atomic.write_json(
            os.path.join(partial, "config.json"),
            {"aradals_tf_version": __version__, **dataclasses.asdict(config)},
        )
        atomic.write_json(
            os.path.join(partial, "history.json"),
            {key: [float(v) for v in values] for key, values in history.history.items()},
        )
    return history


def load_run(run_dir):
    """Loads a run directory: returns `(TrainConfig, keras.Model)`.

    Raises:
        FileNotFoundError: no such directory, or it is not a run directory.
        ValueError: a corrupt config or model file.
    """
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(
            f"Run directory {run_dir} not found; create one with "
            f"`aradals-tf train --out {run_dir}`."
        )
    config_path = os.path.join(run_dir, "config.json")
    model_path = os.path.join(run_dir, "model.keras")
    for path in (config_path, model_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{run_dir} is not a run directory: {os.path.basename(path)} is "
                "missing (written by `aradals-tf train`)."
            )
    config = TrainConfig.from_dict(atomic.read_json(config_path))
    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as error:  # Keras raises many types for a bad archive.
        raise ValueError(
            f"Cannot load {model_path}: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'corrupt file'}"
        ) from None
    return config, model


def predict_logits(model, dataset, verbose=0):
    """Logits and labels of an unbatched `(image, label)` dataset, as numpy.

    One pass over the data (corruptions are computed once), with a Keras
    progress bar when `verbose`.
    """
    dataset = dataset.batch(EVAL_BATCH_SIZE).prefetch(tf.data.AUTOTUNE)
    batches = int(dataset.cardinality())
    progress = (
        keras.utils.Progbar(batches if batches >= 0 else None, verbose=verbose)
        if verbose
        else None
    )
    all_logits, all_labels = [], []
    for step, (images, labels) in enumerate(dataset):
        all_logits.append(np.asarray(model.predict_on_batch(images), np.float32))
        all_labels.append(labels.numpy())
        if progress:
            progress.update(step + 1)
    return np.concatenate(all_logits), np.concatenate(all_labels).astype(np.int32)


def _split(config, split):
    return data.load_dataset(config.dataset, split, config.seed, data_dir=config.data_dir)


def shift_names(specs):
    """Expands `--shift` values ("all" or "name:severity") into a list."""
    names = []
    for spec in specs:
        if spec == "all":
            names += [
                f"{name}:{severity}"
                for name in corruptions.CORRUPTIONS
                for severity in range(1, 6)
            ]
        else:
            name, severity = corruptions.parse_shift(spec)
            names.append(f"{name}:{severity}")
    return list(dict.fromkeys(names))


def _metrics_pair(labels, logits, fitted_temperature, num_bins):
    return {
        "raw": metrics.calibration_summary(labels, logits, num_bins),
        "temperature": metrics.calibration_summary(
            labels, logits / fitted_temperature, num_bins
        ),
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
    shift_list = shift_names(shifts)  # bad names fail before any work
    config, model = load_run(run_dir)
    if verbose:
        print("Validation split (fits the temperature):")
    val_logits, val_labels = predict_logits(model, _split(config, "validation"), verbose)
    fitted = temperature.fit_temperature(val_logits, val_labels)
    if verbose:
        print(f"Clean {split} split:")
    evaluated = _split(config, split)
    logits, labels = predict_logits(model, evaluated, verbose)
    results = {"clean": _metrics_pair(labels, logits, fitted, num_bins)}
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
            name, severity = corruptions.parse_shift(spec)
            shifted = corruptions.corrupt_dataset(
                evaluated, name, severity, seed=CORRUPTION_SEED
            )
            logits, labels = predict_logits(model, shifted)
            results[spec] = _metrics_pair(labels, logits, fitted, num_bins)
            if progress:
                progress.update(index + 1)
    summary = {
        "run": os.path.abspath(run_dir),
        "dataset": config.dataset,
        "method": config.method,
        "split": split,
        "num_bins": num_bins,
        "temperature": fitted,
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
    atomic.write_json(os.path.join(run_dir, "metrics.json"), summary)
    if plots_dir:
        from aradals_tf import plots

        name = os.path.basename(os.path.normpath(run_dir))
        summary["plots"] = [
            plots.reliability_diagrams(
                panels,
                os.path.join(plots_dir, f"{name}_reliability.png"),
                suptitle=f"run {name}: {config.method} on {config.dataset} ({split} split)",
            )
        ]
    return summary


TABLE_COLUMNS = (
    ("accuracy", "acc %"),
    ("ece", "ECE %"),
    ("adaptive_ece", "aECE %"),
    ("mce", "MCE %"),
    ("nll", "NLL"),
    ("brier", "Brier"),
)


def _format_cells(values):
    cells = []
    for key, _ in TABLE_COLUMNS:
        value = values[key]
        cells.append(f"{value:.4f}" if key in ("nll", "brier") else f"{100 * value:.2f}")
    return cells


def format_table(rows, first_header="condition"):
    """Formats `[(label, calibration, metric dict)]` as an aligned text table."""
    header = [first_header, "calibration"] + [title for _, title in TABLE_COLUMNS]
    body = [[label, kind] + _format_cells(values) for label, kind, values in rows]
    widths = [max(len(str(row[i])) for row in [header] + body) for i in range(len(header))]
    line = lambda row: "  ".join(  # noqa: E731
        str(cell).ljust(w) if i < 2 else str(cell).rjust(w)
        for i, (cell, w) in enumerate(zip(row, widths))
    )
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def summary_rows(summary, include_each_shift=True):
    """Table rows of one `evaluate_run` summary."""
    rows = []
    conditions = ["clean"] + ([k for k in summary["results"] if k != "clean"] if include_each_shift else [])
    for condition in conditions:
        for kind in ("raw", "temperature"):
            rows.append((condition, _kind_label(kind, summary), summary["results"][condition][kind]))
    if "shift_mean" in summary:
        for kind in ("raw", "temperature"):
            rows.append(("shift mean", _kind_label(kind, summary), summary["shift_mean"][kind]))
    return rows


def _kind_label(kind, summary):
    return "none" if kind == "raw" else f"TS (T={summary['temperature']:.2f})"


def _shifted(dataset, shift):
    if not shift:
        return dataset
    name, severity = corruptions.parse_shift(shift)
    return corruptions.corrupt_dataset(dataset, name, severity, seed=CORRUPTION_SEED)


def robustness_run(
    run_dir,
    split="test",
    shift=None,
    eps_max=None,
    steps=10,
    num_bins=10,
    norm="inf",
    loss="margin",
    plot=None,
    verbose=1,
):
    """Scores a run's split by adversarial robustness; tabulates calibration per bin.

    Args:
        run_dir: a run directory.
        split: `"test"` or `"validation"`.
        shift: optional `"name:severity"` corruption of the split.
        eps_max: largest attack radius (None: the dataset's default).
        steps: attack steps T.
        num_bins: equal-size robustness (and confidence) bins.
        norm: `"inf"` or `"2"`.
        loss: attack loss, `"margin"` or `"cross_entropy"`.
        plot: optional PNG path for the accuracy/confidence-per-bin plot.
        verbose: Keras progress-bar verbosity.

    Returns:
        The summary written to `robustness_<split>[_<shift>].json` in the run.
    """
    if shift:
        corruptions.parse_shift(shift)
    config, model = load_run(run_dir)
    info = data.dataset_info(config.dataset)
    eps_max = info.eps_max if eps_max is None else eps_max
    robustness.check_attack_settings(eps_max, steps, norm)
    dataset = _shifted(_split(config, split), shift)
    if verbose:
        print(f"Attacking the {split} split{f' ({shift})' if shift else ''}: eps_max {eps_max:g}, {steps} steps")
    scores = robustness.score_dataset(
        model, dataset, eps_max=eps_max, steps=steps, norm=norm, loss=loss, verbose=verbose
    )
    table = metrics.calibration_by_robustness(
        scores["label"], scores["logits"], scores["radius"], num_bins, from_logits=True
    )
    summary = {
        "run": os.path.abspath(run_dir),
        "dataset": config.dataset,
        "method": config.method,
        "split": split,
        "shift": shift,
        "attack": {"eps_max": eps_max, "steps": steps, "norm": str(norm), "loss": loss},
        "count": int(len(scores["label"])),
        "never_flipped": float(np.mean(np.isinf(scores["radius"]))),
        "accuracy": float(np.mean(scores["prediction"] == scores["label"])),
        "ece": float(
            metrics.expected_calibration_error(scores["label"], scores["logits"], from_logits=True)
        ),
        **table,
    }
    suffix = f"_{shift.replace(':', '-')}" if shift else ""
    summary["json"] = os.path.join(run_dir, f"robustness_{split}{suffix}.json")
    atomic.write_json(summary["json"], summary)
    if plot:
        from aradals_tf import plots

        name = os.path.basename(os.path.normpath(run_dir))
        summary["plot"] = plots.calibration_by_robustness(
            table,
            plot,
            title=f"run {name}: {config.method} on {config.dataset} {split}"
            f"{f' ({shift})' if shift else ''}; L-{norm} attack, eps_max {eps_max:g}",
        )
    return summary


def format_bin_table(rows, key):
    """Formats `calibration_by_robustness` rows as an aligned text table."""
    header = ["bin", "count", f"{key} range", "acc %", "conf %", "conf-acc", "ECE %"]
    body = []
    for row in rows:
        low, high = (
            f"{row[f'{key}_{end}']:{'.4f' if key == 'confidence' else '.3g'}}"
            for end in ("min", "max")
        )
        body.append(
            [
                str(row["bin"]),
                str(row["count"]),
                low if low == high else f"{low} - {high}",
                f"{100 * row['accuracy']:.2f}",
                f"{100 * row['confidence']:.2f}",
                f"{100 * row['gap']:+.2f}",
                f"{100 * row['ece']:.2f}",
            ]
        )
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
