"""Resumable training runs: train a config into a run directory, load it back.

A run directory holds `config.json` (everything needed to rebuild the
experiment), `model.keras` (the trained model; calling it gives logits) and
`history.json` (Keras's per-epoch logs); `evaluate_run` adds `metrics.json`
and reliability diagrams. Directories and files are written atomically (see
`atomic`), so an interrupted run leaves nothing half-written.
"""

import csv
import dataclasses
import os
import shutil
import tempfile

import keras

from aradals_tf import adaptive_smoothing
from aradals_tf import atomic
from aradals_tf import backup
from aradals_tf import distribution
from aradals_tf import ensemble
from aradals_tf import plots
from aradals_tf.experiments import build
from aradals_tf.experiments.config import TrainConfig
from aradals_tf.version import __version__


def hidden_sibling(out, suffix):
    """`.<name>.<suffix>` beside `out`: where a run keeps its resume state."""
    out = os.path.abspath(out)
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.{suffix}")


def _fit(config, model, backup_dir, verbose, extra_callbacks, shuffle_seed=None):
    """One Keras fit with resume support; returns `(history, eps records)`."""
    callbacks = list(extra_callbacks)
    resume = backup.WorkerBackupAndRestore(backup_dir)
    # The data of the epochs left: the resumed epochs see the batches they
    # would have seen without the interruption.
    train, validation = build.training_datasets(
        config, shuffle_seed=shuffle_seed, initial_epoch=resume.restored_epoch()
    )
    adaptive = None
    validation_data = validation
    if config.method == "ar-adals":
        # Smoothing on the validation split itself: its pass also gives fit's
        # val_* logs, so the split is passed over once per epoch, not twice.
        one_pass = config.smoothing_data == "clean"
        adaptive = adaptive_smoothing.AdaptiveSmoothing(
            build.smoothing_dataset(config, validation),
            warmup_epochs=config.warmup_epochs,
            validation_metrics=one_pass,
        )
        callbacks.insert(0, adaptive)
        validation_data = None if one_pass else validation
    # After the eps update in the callback order, so a backup holds the epoch's
    # eps, and the epochs' logs, so a resumed run's history is whole.
    recorder = EpochLogs()
    resume.stateful_callbacks = [recorder] + ([adaptive] if adaptive else [])
    callbacks[1 if adaptive else 0 : 1 if adaptive else 0] = [recorder, resume]
    # The epochs' batches repeat, so the pass that scores an epoch's due
    # examples before it reads the examples themselves. On several replicas
    # the steps score their own (fit would ignore the examples).
    one_replica = model.distribute_strategy.num_replicas_in_sync == 1
    scoring = {"scoring_data": build.scoring_examples(config)} if adaptive and one_replica else {}
    model.fit(
        train,
        validation_data=validation_data,
        epochs=config.epochs,
        steps_per_epoch=build.steps_per_epoch(config),
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=verbose,
        **scoring,
    )
    return recorder.history, (adaptive.records if adaptive else [])


class EpochLogs(keras.callbacks.Callback):
    """Keras's per-epoch logs, kept in the backup so that a resumed run's
    history holds every epoch, not only those after the resume."""

    def __init__(self):
        super().__init__()
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))

    def get_state(self):
        return {"history": self.history}

    def set_state(self, state):
        self.history = {key: list(values) for key, values in state["history"].items()}


def _eps_plot(config, records, path, label=""):
    if records:
        plots.eps_per_stratum(
            records, path, title=f"AR-AdaLS on {config.dataset}{label}: eps per robustness stratum"
        )


def _train_one(config, out, partial, verbose, extra_callbacks):
    """Trains one model (or a joint ensemble); returns `(model, history)`."""
    strategy = build.make_strategy(config.strategy)
    # Seed everything before the data pipeline too: a run must not depend on
    # what ran before it in this process.
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build.build_model(config)
    history, records = _fit(config, model, hidden_sibling(out, "backup"), verbose, extra_callbacks)
    _eps_plot(config, records, os.path.join(partial, "eps_per_stratum.png"))
    if isinstance(model, ensemble.EnsembleARAdaLSModel):
        model = model.backbone  # the LogitEnsemble of the trained members
    return model, history


def _train_members(config, out, partial, verbose, extra_callbacks):
    """Trains an ensemble member by member; a finished member is kept in
    `.<out>.members` (written by the chief, read by every worker) and not
    retrained. Returns `(LogitEnsemble, history)`."""
    strategy = build.make_strategy(config.strategy)
    chief = distribution.worker_role(strategy).is_chief
    work = hidden_sibling(out, "members")
    members, history = [], {}
    for member in range(config.ensemble_size):
        member_dir = os.path.join(work, f"member{member}")
        member_path = os.path.join(member_dir, "model.keras")
        if os.path.isfile(member_path):
            print(
                f"Member {member + 1}/{config.ensemble_size}: already trained, "
                f"loaded from {member_dir}"
            )
            members.append(keras.models.load_model(member_path, compile=False))
            history[f"member{member}"] = atomic.read_json(os.path.join(member_dir, "history.json"))
            continue
        seed = build.member_seed(config, member)
        print(f"Member {member + 1}/{config.ensemble_size} (seed {seed}):")
        keras.utils.set_random_seed(seed)
        with strategy.scope():
            model = build.build_model(config, init_seed=seed)
        member_history, records = _fit(
            config, model, member_dir + ".backup", verbose, extra_callbacks, shuffle_seed=seed
        )
        if chief:
            with atomic.atomic_directory(member_dir, overwrite=True) as member_partial:
                model.save(os.path.join(member_partial, "model.keras"))
                atomic.write_json(os.path.join(member_partial, "history.json"), member_history)
            shutil.rmtree(member_dir + ".backup", ignore_errors=True)
        _eps_plot(
            config,
            records,
            os.path.join(partial, f"eps_per_stratum_member{member}.png"),
            f", member {member}",
        )
        members.append(model)
        history[f"member{member}"] = member_history
    return ensemble.LogitEnsemble(members), history


def train_run(config, out, overwrite=False, verbose="auto", extra_callbacks=()):
    """Trains `config` and writes the run directory `out` atomically.

    An interrupted run resumes when run again: `backup.WorkerBackupAndRestore`
    keeps the last finished epochs (weights, optimizer and AR-AdaLS state,
    the validation score cache) in a hidden `.<out>.backup` sibling, and the
    finished members of an ensemble trained in sequence wait in
    `.<out>.members`; both are removed once the run directory is complete.
    Under `--strategy multiworker` every worker runs this with the same
    arguments; only the chief writes `out` and the resume state (the others
    write their copy of the run into a temporary directory that is removed),
    and every worker resumes from the chief's state, so `out` must be on
    storage that all workers see.

    Args:
        config: a `TrainConfig`.
        out: run directory to create.
        overwrite: replace an existing run directory.
        verbose: Keras `fit` verbosity.
        extra_callbacks: more Keras callbacks for `fit`.

    Returns:
        The per-epoch logs: a dict (one model), or `{"member<i>": dict}` for
        an ensemble trained member by member.

    Raises:
        FileExistsError: `out` exists and `overwrite` is false.
        distribution.ClusterError: a worker did not come up or went down.
    """
    config.validate()
    chief = distribution.worker_role(build.make_strategy(config.strategy)).is_chief
    if chief and os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
    sequential = config.ensemble_size > 1 and not (
        config.method == "ar-adals" and config.ensemble_mode == "joint"
    )
    # Saving runs on every worker (as TensorFlow's multi-worker guide asks);
    # the others' copies go to a directory of their own, removed at the end.
    scratch = None if chief else tempfile.mkdtemp(prefix="aradals-tf-worker-")
    target = out if chief else os.path.join(scratch, "run")
    try:
        with (
            distribution.translate_cluster_errors(),
            atomic.atomic_directory(target, overwrite=overwrite) as partial,
        ):
            train_fn = _train_members if sequential else _train_one
            model, history = train_fn(config, out, partial, verbose, extra_callbacks)
            model.save(os.path.join(partial, "model.keras"))
            atomic.write_json(
                os.path.join(partial, "config.json"),
                {"aradals_tf_version": __version__, **dataclasses.asdict(config)},
            )
            atomic.write_json(os.path.join(partial, "history.json"), history)
            if not sequential:  # one model: Keras's per-epoch logs, as CSVLogger writes them
                _write_csv(os.path.join(partial, "history.csv"), history)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if chief:  # only now that the run directory is complete: drop the resume state
        resume_state = hidden_sibling(out, "members" if sequential else "backup")
        shutil.rmtree(resume_state, ignore_errors=True)
    return history


def _write_csv(path, history):
    keys = sorted(history)
    with atomic.atomic_file(path) as stream:
        writer = csv.writer(stream)
        writer.writerow(["epoch", *keys])
        for epoch in range(max((len(history[key]) for key in keys), default=0)):
            row = [history[key][epoch] if epoch < len(history[key]) else "" for key in keys]
            writer.writerow([epoch, *row])


def is_chief(config):
    """Whether this process writes the runs of `config` (its strategy's chief)."""
    return distribution.worker_role(build.make_strategy(config.strategy)).is_chief


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
    # A run made for a user's model that needed --unsafe-load keeps its code.
    source_path = os.path.join(run_dir, "source.json")
    unsafe = os.path.isfile(source_path) and atomic.read_json(source_path).get("unsafe_load")
    try:
        model = keras.models.load_model(model_path, compile=False, safe_mode=not unsafe)
    except Exception as error:  # Keras raises many types for a bad archive.
        raise ValueError(
            f"Cannot load {model_path}: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'corrupt file'}"
        ) from None
    return config, model
