"""Runs: train a method into a run directory, evaluate it, compare runs.

A run directory holds `config.json` (everything needed to rebuild the
experiment), `model.keras` (the trained model; calling it gives logits) and
`history.json` (Keras's per-epoch logs); `aradals-tf evaluate` adds
`metrics.json` and reliability diagrams. Directories and files are written
atomically (see `atomic`), so an interrupted run leaves nothing half-written.
"""

import dataclasses
import os
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import atomic
from aradals_tf import backbones
from aradals_tf import corruptions
from aradals_tf import data
from aradals_tf import ensemble
from aradals_tf import metrics
from aradals_tf import plots
from aradals_tf import robustness
from aradals_tf import smoothing
from aradals_tf import temperature
from aradals_tf import training
from aradals_tf.version import __version__

METHODS = ("vanilla", "label-smoothing", "focal", "mixup", "ar-adals")
STRATEGIES = ("default", "mirrored", "multiworker")
ENSEMBLE_MODES = ("joint", "independent")
SMOOTHING_DATA = ("clean", "clean+held-out")
SELECTION_CRITERIA = ("validation", "validation+held-out")
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
        batch_size: training batch size (global, across replicas).
        learning_rate: Adam learning rate.
        seed: seed of weights, shuffling and the embedded sets' split.
        data_dir: tfds data directory for tfds datasets.
        label_smoothing: eps of the uniform label-smoothing baseline.
        focal_gamma: gamma of the focal-loss baseline.
        mixup_alpha: Beta parameter of the mixup baseline.
        num_strata: AR-AdaLS robustness strata.
        eps_max: AR-AdaLS attack radius (None: the dataset's default).
        attack_steps: AR-AdaLS attack steps (robustness levels).
        alpha: AR-AdaLS eps update step.
        eps_init: AR-AdaLS initial eps.
        eps_cap: AR-AdaLS largest eps.
        eps_update: AR-AdaLS eps update rule, `"additive"` or `"relative"`
            (`smoothing.update_eps`).
        robustness_estimate: `"attack"` (every batch) or `"first_order"`
            (the cheaper mode).
        first_order_scale: factor on the first-order radius before it is
            mapped onto the attack's levels (`robustness.fit_first_order_scale`).
        attack_loss: `"margin"` or `"cross_entropy"`.
        strategy: `"default"`, `"mirrored"` or `"multiworker"`.
        ensemble_size: M > 1 trains an ensemble of M members averaged by
            `LogitEnsemble` (member m initialised and shuffled with seed
            `1000 * seed + m`; all members share the data split of `seed`).
        ensemble_mode: for ar-adals ensembles, `"joint"` (ensemble-aware:
            members side by side on the ensemble's strata and eps) or
            `"independent"` (each member adapts on its own, in sequence).
        smoothing_data: what AR-AdaLS's eps update measures calibration on:
            `"clean"` (the validation split) or `"clean+held-out"` (the
            validation split plus a copy of it in which each example carries
            one of the held-out corruptions, `HELD_OUT_CORRUPTIONS` x
            severities 1-5 in turn: types never used for testing).
    """

    dataset: str = "mnist5k"
    method: str = "vanilla"
    backbone: str | None = None
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    data_dir: str | None = None
    label_smoothing: float = 0.1
    focal_gamma: float = 3.0
    mixup_alpha: float = 0.2
    num_strata: int = 10
    eps_max: float | None = None
    attack_steps: int = 10
    alpha: float = 1.0
    eps_init: float = 0.0
    eps_cap: float = 0.5
    eps_update: str = "additive"
    robustness_estimate: str = "attack"
    first_order_scale: float = 1.0
    attack_loss: str = "margin"
    strategy: str = "default"
    ensemble_size: int = 1
    ensemble_mode: str = "joint"
    smoothing_data: str = "clean"

    def validate(self):
        """Raises ValueError on a setting that cannot work; fills defaults."""
        info = data.dataset_info(self.dataset)
        if "train" not in info.splits:
            raise ValueError(
                f"{self.dataset!r} has no train split; train on cifar10 and "
                "evaluate on cifar10_corrupted."
            )
        for name, valid in (
            ("method", METHODS),
            ("strategy", STRATEGIES),
            ("ensemble_mode", ENSEMBLE_MODES),
            ("smoothing_data", SMOOTHING_DATA),
            ("eps_update", smoothing.EPS_UPDATES),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"Unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}."
                )
        if self.backbone is None:
            self.backbone = backbones.default_backbone_name(info.image_shape)
        if self.backbone not in backbones.BACKBONES:
            raise ValueError(
                f"Unknown backbone {self.backbone!r}; valid names: "
                f"{', '.join(backbones.BACKBONES)}."
            )
        if self.eps_max is None:
            self.eps_max = info.eps_max
        for name in ("epochs", "batch_size", "num_strata", "attack_steps", "ensemble_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}.")
        for name in ("learning_rate", "mixup_alpha", "eps_max", "first_order_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}.")
        if not 0 <= self.label_smoothing <= 1:
            raise ValueError(
                f"label_smoothing must be in [0, 1]; got {self.label_smoothing}."
            )
        if not 0 <= self.eps_init <= self.eps_cap <= 1:
            raise ValueError(
                f"Need 0 <= eps_init <= eps_cap <= 1; got {self.eps_init}, {self.eps_cap}."
            )
        if self.robustness_estimate not in training.ROBUSTNESS_ESTIMATES:
            raise ValueError(
                f"robustness_estimate must be one of "
                f"{', '.join(training.ROBUSTNESS_ESTIMATES)}; got {self.robustness_estimate!r}."
            )
        return self

    @classmethod
    def from_dict(cls, values):
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def method_settings(self):
        """The settings that matter for this config's method (for tables)."""
        keys = {
            "label-smoothing": ("label_smoothing",),
            "focal": ("focal_gamma",),
            "mixup": ("mixup_alpha",),
            "ar-adals": (
                "alpha",
                "eps_cap",
                "eps_update",
                "num_strata",
                "eps_max",
                "attack_steps",
                "robustness_estimate",
                "smoothing_data",
            ),
        }.get(self.method, ())
        if self.method == "ar-adals" and self.robustness_estimate == "first_order":
            keys += ("first_order_scale",)
        if self.ensemble_size > 1:
            keys += ("ensemble_size",) + (("ensemble_mode",) if self.method == "ar-adals" else ())
        return {key: getattr(self, key) for key in keys}


def _datasets(config, shuffle_seed=None):
    train = data.load_dataset(config.dataset, "train", config.seed, data_dir=config.data_dir)
    validation = data.load_dataset(
        config.dataset, "validation", config.seed, data_dir=config.data_dir
    )
    train = (
        train.cache()
        .shuffle(10_000, seed=config.seed if shuffle_seed is None else shuffle_seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = validation.cache().batch(EVAL_BATCH_SIZE).prefetch(tf.data.AUTOTUNE)
    return train, validation


def _smoothing_data(config, validation):
    """The batched data AR-AdaLS's eps update is measured on: `validation`
    (batched, from `_datasets`) or it plus its held-out-corrupted copy."""
    if config.smoothing_data == "clean":
        return validation
    clean = data.load_dataset(config.dataset, "validation", config.seed, data_dir=config.data_dir)
    # A seed apart from the evaluation's, so that selection on held-out
    # validation shifts does not score the very draws the update saw.
    shifted = corruptions.held_out_copy(clean, seed=CORRUPTION_SEED + 1)
    return clean.concatenate(shifted).cache().batch(EVAL_BATCH_SIZE).prefetch(tf.data.AUTOTUNE)


def make_strategy(name):
    """The `tf.distribute` strategy for `--strategy`."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        # Reads the cluster from TF_CONFIG; a single worker without it.
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _member_seed(config, member):
    return 1000 * config.seed + member


def build_model(config, init_seed=None):
    """Builds and compiles the model a config describes (not yet trained).

    Args:
        config: a validated `TrainConfig`.
        init_seed: seed of the weights (default: `config.seed`).

    Returns:
        A compiled `keras.Model`; for an ar-adals joint ensemble an
        `EnsembleARAdaLSModel` of `ensemble_size` backbones. Call inside the
        strategy's scope for distributed training.
    """
    info = data.dataset_info(config.dataset)
    init_seed = config.seed if init_seed is None else init_seed
    joint = config.method == "ar-adals" and config.ensemble_size > 1 and config.ensemble_mode == "joint"
    members = []
    for member in range(config.ensemble_size if joint else 1):
        keras.utils.set_random_seed(_member_seed(config, member) if joint else init_seed)
        members.append(backbones.build_backbone(config.backbone, info.image_shape, info.num_classes))
    backbone = members[0]
    compile_metrics = [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        metrics.ExpectedCalibrationError(from_logits=True),
    ]
    optimizer = keras.optimizers.Adam(config.learning_rate)
    if config.method == "ar-adals":
        settings = dict(
            num_strata=config.num_strata,
            eps_max=config.eps_max,
            attack_steps=config.attack_steps,
            alpha=config.alpha,
            eps_init=config.eps_init,
            eps_cap=config.eps_cap,
            eps_update=config.eps_update,
            robustness_estimate=config.robustness_estimate,
            first_order_scale=config.first_order_scale,
            attack_loss=config.attack_loss,
        )
        if joint:
            model = ensemble.EnsembleARAdaLSModel(members, info.num_classes, **settings)
        else:
            model = training.ARAdaLSModel(backbone, info.num_classes, **settings)
        model.compile(optimizer=optimizer, metrics=compile_metrics)
        return model
    if config.method == "mixup":
        model = training.MixupModel(
            backbone, info.num_classes, alpha=config.mixup_alpha, seed=init_seed
        )
        model.compile(optimizer=optimizer, metrics=compile_metrics)
        return model
    loss = {
        "vanilla": lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "label-smoothing": lambda: training.SparseLabelSmoothingCrossentropy(
            config.label_smoothing
        ),
        "focal": lambda: training.SparseFocalCrossentropy(config.focal_gamma),
    }[config.method]()
    backbone.compile(optimizer=optimizer, loss=loss, metrics=compile_metrics)
    return backbone


def _hidden_sibling(out, suffix):
    out = os.path.abspath(out)
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.{suffix}")


def _fit(config, model, train, validation, backup, verbose, extra_callbacks):
    """One Keras fit with resume support; returns `(history, eps records)`."""
    callbacks = [keras.callbacks.BackupAndRestore(backup), *extra_callbacks]
    adaptive = None
    if config.method == "ar-adals":
        adaptive = training.AdaptiveSmoothing(_smoothing_data(config, validation))
        callbacks.insert(0, adaptive)
    history = model.fit(
        train,
        validation_data=validation,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=verbose,
    )
    history = {key: [float(v) for v in values] for key, values in history.history.items()}
    return history, (adaptive.records if adaptive else [])


def _eps_plot(config, records, path, label=""):
    if records:
        plots.eps_per_stratum(
            records, path, title=f"AR-AdaLS on {config.dataset}{label}: eps per robustness stratum"
        )


def train_run(config, out, overwrite=False, verbose="auto", extra_callbacks=()):
    """Trains `config` and writes the run directory `out` atomically.

    An interrupted run resumes when run again: Keras's `BackupAndRestore`
    keeps the last finished epoch (weights, optimizer and AR-AdaLS state) in
    a hidden `.<out>.backup` sibling, and the finished members of an
    ensemble trained in sequence wait in `.<out>.members`; both are removed
    once the run directory is complete.

    Args:
        config: a `TrainConfig`.
        out: run directory to create.
        overwrite: replace an existing run directory.
        verbose: Keras `fit` verbosity.
        extra_callbacks: more Keras callbacks for `fit`.

    Returns:
        The per-epoch logs: a dict (one model), or `{"member<i>": dict}` for
        an ensemble trained member by member.
    """
    config.validate()
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
    strategy = make_strategy(config.strategy)
    sequential = config.ensemble_size > 1 and not (
        config.method == "ar-adals" and config.ensemble_mode == "joint"
    )
    with atomic.atomic_directory(out, overwrite=overwrite) as partial:
        if not sequential:
            # Seed everything before the data pipeline too: a run must not
            # depend on what ran before it in this process.
            keras.utils.set_random_seed(config.seed)
            train, validation = _datasets(config)
            with strategy.scope():
                model = build_model(config)
            history, records = _fit(
                config, model, train, validation, _hidden_sibling(out, "backup"), verbose, extra_callbacks
            )
            _eps_plot(config, records, os.path.join(partial, "eps_per_stratum.png"))
            if isinstance(model, ensemble.EnsembleARAdaLSModel):
                model = model.backbone  # the LogitEnsemble of the trained members
        else:
            work = _hidden_sibling(out, "members")
            members, history = [], {}
            for member in range(config.ensemble_size):
                member_dir = os.path.join(work, f"member{member}")
                member_path = os.path.join(member_dir, "model.keras")
                if os.path.isfile(member_path):
                    print(f"Member {member + 1}/{config.ensemble_size}: already trained, loaded from {member_dir}")
                    members.append(keras.models.load_model(member_path, compile=False))
                    history[f"member{member}"] = atomic.read_json(os.path.join(member_dir, "history.json"))
                    continue
                seed = _member_seed(config, member)
                print(f"Member {member + 1}/{config.ensemble_size} (seed {seed}):")
                keras.utils.set_random_seed(seed)
                train, validation = _datasets(config, shuffle_seed=seed)
                with strategy.scope():
                    model = build_model(config, init_seed=seed)
                member_history, records = _fit(
                    config, model, train, validation, member_dir + ".backup", verbose, extra_callbacks
                )
                with atomic.atomic_directory(member_dir, overwrite=True) as member_partial:
                    model.save(os.path.join(member_partial, "model.keras"))
                    atomic.write_json(os.path.join(member_partial, "history.json"), member_history)
                shutil.rmtree(member_dir + ".backup", ignore_errors=True)
                _eps_plot(
                    config, records, os.path.join(partial, f"eps_per_stratum_member{member}.png"), f", member {member}"
                )
                members.append(model)
                history[f"member{member}"] = member_history
            model = ensemble.LogitEnsemble(members)
        model.save(os.path.join(partial, "model.keras"))
        atomic.write_json(
            os.path.join(partial, "config.json"),
            {"aradals_tf_version": __version__, **dataclasses.asdict(config)},
        )
        atomic.write_json(os.path.join(partial, "history.json"), history)
    # Only now that the run directory is complete: drop the resume state.
    shutil.rmtree(_hidden_sibling(out, "members" if sequential else "backup"), ignore_errors=True)
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


def _shifted(dataset, shift):
    if not shift:
        return dataset
    name, severity = corruptions.parse_shift(shift)
    return corruptions.corrupt_dataset(dataset, name, severity, seed=CORRUPTION_SEED)


def shift_names(specs):
    """Expands `--shift` values into a list of `"name:severity"`.

    `"all"` is the test suite (`CORRUPTIONS` x severities 1-5); `"held-out"`
    is `HELD_OUT_CORRUPTIONS` x severities 1-5, meant for the validation
    split only.
    """
    names = []
    for spec in specs:
        if spec in ("all", "held-out"):
            types = corruptions.CORRUPTIONS if spec == "all" else corruptions.HELD_OUT_CORRUPTIONS
            names += [f"{name}:{severity}" for name in types for severity in range(1, 6)]
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
    validation_metrics = _metrics_pair(val_labels, val_logits, fitted, num_bins)
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
            logits, labels = predict_logits(model, _shifted(evaluated, spec))
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


def parse_methods(text):
    """`"vanilla,ar-adals,independent=ar-adals"` -> `[(label, method), ...]`.

    A `LABEL=METHOD` entry adds a variant of a method with its own settings
    (`--set independent.ensemble_mode=independent`) and its own table row.
    """
    entries = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        label, _, method = item.rpartition("=")
        label = label or method
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; valid: {', '.join(METHODS)}.")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", label):
            raise ValueError(f"Method label {label!r} may hold only letters, digits, '_' and '-'.")
        entries.append((label, method))
    labels = [label for label, _ in entries]
    if not entries or len(set(labels)) != len(labels):
        raise ValueError(f"--methods needs distinct labels; got {text!r}.")
    return entries


def parse_override(text, labels=METHODS):
    """`"ar-adals.alpha=0.5,1"` -> `("ar-adals", "alpha", [0.5, 1.0])`.

    The method (or method label) part is optional (`"epochs=10"` applies to
    every method); values are cast to the `TrainConfig` field's type.
    """
    if "=" not in text:
        raise ValueError(f"Expected [METHOD.]PARAM=VALUE[,VALUE...]; got {text!r}.")
    key, _, values = text.partition("=")
    method, _, param = key.rpartition(".")
    method = method or None
    if method is not None and method not in labels:
        raise ValueError(f"Unknown method {method!r} in {text!r}; valid: {', '.join(labels)}.")
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    param = param.replace("-", "_")
    if param not in fields or param in ("method", "seed", "dataset"):
        valid = sorted(set(fields) - {"method", "seed", "dataset"})
        raise ValueError(f"Unknown setting {param!r} in {text!r}; valid: {', '.join(valid)}.")
    default = getattr(TrainConfig(), param)
    cast = type(default) if default is not None else float
    if param in ("backbone", "data_dir"):
        cast = str
    try:
        parsed = [cast(value) for value in values.split(",") if value != ""]
    except ValueError:
        raise ValueError(f"Cannot read the values of {text!r} as {cast.__name__}.") from None
    if not parsed:
        raise ValueError(f"No value given in {text!r}.")
    return method, param, parsed


def _tag(settings):
    if not settings:
        return "default"
    return "_".join(f"{key}{value}" for key, value in sorted(settings.items()))


def _same_config(run_dir, config):
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        return False
    saved = TrainConfig.from_dict(atomic.read_json(path))
    return dataclasses.asdict(saved) == dataclasses.asdict(config)


def _ensure_run(config, run_dir, shifts, verbose):
    """Trains and evaluates `run_dir` unless a matching result exists."""
    if not _same_config(run_dir, config):
        if verbose:
            print(f"--- training {run_dir}")
        train_run(config, run_dir, overwrite=os.path.exists(run_dir), verbose=2 if verbose else 0)
    metrics_path = os.path.join(run_dir, "metrics.json")
    wanted = shift_names(shifts)
    if os.path.isfile(metrics_path):
        summary = atomic.read_json(metrics_path)
        if set(wanted) <= set(summary["results"]) - {"clean"}:
            return summary
    if verbose:
        print(f"--- evaluating {run_dir}")
    return evaluate_run(run_dir, shifts=shifts, verbose=0)


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
    config, model = load_run(run_dir)
    validation = _split(config, "validation")
    results = {}
    for spec in shift_names(["held-out"]):
        logits, labels = predict_logits(model, _shifted(validation, spec), verbose)
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


def _mean_std(summaries, path):
    values = []
    for summary in summaries:
        node = summary
        for key in path:
            node = node[key]
        values.append(node)
    return float(np.mean(values)), float(np.std(values))


def _by_corruption(summaries):
    """Raw ECE and accuracy per corruption type: mean over severities, then
    mean and std over the runs."""
    names = sorted(
        {key.partition(":")[0] for key in summaries[0]["results"] if key != "clean"},
        key=lambda name: corruptions.ALL_CORRUPTIONS.index(name),
    )
    table = {}
    for name in names:
        table[name] = {}
        for metric in ("ece", "accuracy"):
            per_run = [
                np.mean(
                    [
                        summary["results"][key]["raw"][metric]
                        for key in summary["results"]
                        if key.partition(":")[0] == name
                    ]
                )
                for summary in summaries
            ]
            table[name][metric] = (float(np.mean(per_run)), float(np.std(per_run)))
    return table


def run_comparison(
    out,
    base,
    methods,
    seeds,
    grids=None,
    overrides=None,
    select_seeds=None,
    shifts=("all",),
    select_on="validation",
    verbose=1,
):
    """The method comparison: select hyper-parameters on validation, then test.

    For each method, every combination in its grid is trained on
    `select_seeds` and evaluated on the validation split; the combination
    with the lowest selection score is then trained with every seed and
    evaluated on the test split, clean and shifted. The score is the mean
    validation ECE (raw, 15 bins) with `select_on="validation"`; with
    `"validation+held-out"` it is the mean of that and of the validation
    split's ECE under the held-out corruptions (types that no test suite
    contains, averaged over severities 1-5). Runs live
    in `out/<method>/<settings>/seed<s>` and are reused when their config
    matches, so an interrupted comparison resumes where it stopped.

    Args:
        out: root directory of the comparison.
        base: the `TrainConfig` shared by all runs (dataset, epochs, ...).
        methods: method names, or `(label, method)` pairs for variants.
        seeds: seeds of the final runs.
        grids: `{method: {param: [values]}}` searched on validation.
        overrides: `{method or None: {param: value}}` fixed settings.
        select_seeds: seeds used for selection (default: the first seed).
        shifts: `--shift` values for the final evaluation.
        select_on: `"validation"` or `"validation+held-out"`.
        verbose: print progress.

    Returns:
        The summary written to `out/comparison.json`.
    """
    import itertools

    if select_on not in SELECTION_CRITERIA:
        raise ValueError(
            f"Unknown selection criterion {select_on!r}; use one of: {', '.join(SELECTION_CRITERIA)}."
        )
    if "held-out" in shifts:
        raise ValueError("The held-out corruptions are for validation only; evaluate the test split on 'all' or named shifts.")

    grids = grids or {}
    overrides = overrides or {}
    select_seeds = list(select_seeds or seeds[:1])
    shift_names(shifts)  # fail early on bad names
    rows = {}
    entries = [(m, m) if isinstance(m, str) else tuple(m) for m in methods]
    for label, method in entries:
        fixed = {**overrides.get(None, {}), **overrides.get(label, {})}
        grid = grids.get(label, {})
        keys = sorted(grid)
        candidates = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]

        def config_for(settings, seed, method=method, fixed=fixed):
            values = {**dataclasses.asdict(base), **fixed, **settings, "method": method, "seed": seed}
            return TrainConfig.from_dict(values).validate()

        selection = []
        if len(candidates) > 1:
            for settings in candidates:
                clean, held_out = [], []
                for seed in select_seeds:
                    run_dir = os.path.join(out, label, _tag(settings), f"seed{seed}")
                    summary = _ensure_run(config_for(settings, seed), run_dir, (), verbose)
                    clean.append(summary["validation"]["raw"]["ece"])
                    if select_on == "validation+held-out":
                        held_out.append(held_out_validation(run_dir)["shift_mean"]["ece"])
                entry = {"settings": settings, "validation_ece": float(np.mean(clean))}
                entry["score"] = entry["validation_ece"]
                if held_out:
                    entry["held_out_validation_ece"] = float(np.mean(held_out))
                    entry["score"] = (entry["validation_ece"] + entry["held_out_validation_ece"]) / 2
                selection.append(entry)
                if verbose:
                    extra = f", held-out shifts {100 * entry['held_out_validation_ece']:.2f} %" if held_out else ""
                    print(f"{label} {_tag(settings)}: validation ECE {100 * entry['validation_ece']:.2f} %{extra}")
            chosen = min(selection, key=lambda item: item["score"])["settings"]
        else:
            chosen = candidates[0]
        summaries = []
        for seed in seeds:
            run_dir = os.path.join(out, label, _tag(chosen), f"seed{seed}")
            summaries.append(_ensure_run(config_for(chosen, seed), run_dir, shifts, verbose))
        row = {"method": method, "settings": {**fixed, **chosen}, "selection": selection, "seeds": list(seeds), "runs": []}
        for summary in summaries:
            row["runs"].append(summary["run"])
        for kind in ("raw", "temperature"):
            for condition, path in (("clean", ("results", "clean")), ("shift_mean", ("shift_mean",))):
                if condition == "shift_mean" and "shift_mean" not in summaries[0]:
                    continue
                row[f"{condition}_{kind}"] = {
                    key: _mean_std(summaries, (*path, kind, key))
                    for key in summaries[0]["results"]["clean"][kind]
                }
        row["temperature"] = _mean_std(summaries, ("temperature",))
        row["by_corruption"] = _by_corruption(summaries)
        rows[label] = row
    summary = {
        "dataset": base.dataset,
        "epochs": base.epochs,
        "seeds": list(seeds),
        "select_seeds": select_seeds,
        "select_on": select_on,
        "shifts": list(shifts),
        "methods": rows,
    }
    atomic.write_json(os.path.join(out, "comparison.json"), summary)
    summary["plot"] = plots.comparison(summary, os.path.join(out, "comparison.png"))
    return summary


def format_comparison(summary):
    """The comparison as a text table: mean +- std over seeds, in percent."""
    columns = (("accuracy", "acc %"), ("ece", "ECE %"), ("adaptive_ece", "aECE %"), ("nll", "NLL"), ("brier", "Brier"))
    header = ["method", "data", "calibration"] + [title for _, title in columns]
    body = []
    for method, row in summary["methods"].items():
        for condition in ("clean", "shift_mean"):
            for kind in ("raw", "temperature"):
                key = f"{condition}_{kind}"
                if key not in row:
                    continue
                cells = []
                for name, _ in columns:
                    mean, std = row[key][name]
                    scale = 1 if name in ("nll", "brier") else 100
                    digits = 3 if scale == 1 else 2
                    cells.append(f"{scale * mean:.{digits}f}±{scale * std:.{digits}f}")
                label = "none" if kind == "raw" else f"TS (T={row['temperature'][0]:.2f})"
                body.append([method, condition.replace("_", " "), label] + cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines = [line(header), line(["-" * w for w in widths])] + [line(r) for r in body]
    settings = [f"{m}: {', '.join(f'{k}={v}' for k, v in row['settings'].items()) or 'defaults'}" for m, row in summary["methods"].items()]
    criterion = {
        "validation": "validation ECE",
        "validation+held-out": "mean of clean and held-out-shift validation ECE",
    }[summary.get("select_on", "validation")]
    lines += ["", f"Chosen settings ({criterion}):"] + ["  " + s for s in settings]
    methods = list(summary["methods"])
    names = list(summary["methods"][methods[0]].get("by_corruption", {}))
    if names:
        lines += ["", "Raw ECE % by corruption (mean over severities 1-5, then over seeds):"]
        width = max(len(n) for n in names)
        columns = {m: max(len(m), 6) for m in methods}
        lines.append(" " * width + "  " + "  ".join(m.rjust(columns[m]) for m in methods))
        for name in names:
            cells = [
                f"{100 * summary['methods'][m]['by_corruption'][name]['ece'][0]:.2f}".rjust(columns[m])
                for m in methods
            ]
            lines.append(name.ljust(width) + "  " + "  ".join(cells))
    return "\n".join(lines)
