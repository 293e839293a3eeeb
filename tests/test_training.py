"""ARAdaLSModel and its fit: the loss against hand-computed values, the strata
counted where examples are assigned, the eps update as Keras runs it, and the
Keras habits a user brings (sample weights, one-hot labels, callbacks)."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import reference
import tensorflow as tf

from aradals_tf import adaptive_smoothing
from aradals_tf import backbones
from aradals_tf import data
from aradals_tf import eps_rules
from aradals_tf import first_order
from aradals_tf import fitting
from aradals_tf import robustness
from aradals_tf import score_cache
from aradals_tf import scores
from aradals_tf import smoothing
from aradals_tf import training


@pytest.fixture(scope="module")
def digits():
    return {split: data.load_arrays("digits", split) for split in data.SPLITS}


def _model(backbone=None, **kwargs):
    keras.utils.set_random_seed(0)
    settings = {"num_strata": 3, **kwargs}
    if settings.get("strata_by", "attack") == "attack":
        settings = {"eps_max": 0.3, "attack_steps": 5, **settings}
    model = training.ARAdaLSModel(backbone or backbones.mlp((8, 8, 1), 10), 10, **settings)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    return model


def _reference_bins(backbone, x, source):
    """Score bins from functions independent of the model's training step."""
    logits = np.asarray(backbone(x, training=False), np.float64)
    radius = None
    if source == "attack":
        radius, _ = robustness.adversarial_robustness(
            backbone, x, eps_max=0.3, steps=5, candidates=1
        )
    elif source == "first_order":
        radius, _ = first_order.first_order_radius(backbone, x)
    return reference.score_bins(source, logits, None if radius is None else radius.numpy()), logits


def _scoring(model, train_size, histogram_bins):
    """A model whose cache holds `histogram_bins` (so thresholds are known) and
    whose scoring has started."""
    model.build_strata(model.num_strata, train_size)
    cache = model.score_cache
    cache.bins.assign(np.asarray(histogram_bins, np.int32))
    cache.histogram.assign(np.bincount(histogram_bins, minlength=scores.SCORE_BINS))
    cache.epoch.assign(5)
    model.strata.scoring_from_epoch.assign(1)


@pytest.mark.parametrize("source", ["attack", "first_order", "margin", "confidence"])
def test_train_step_loss_is_per_example_soft_label_crossentropy(digits, source):
    """64 examples, each due (rotation 1): scored by the reference functions,
    bucketed by thresholds cut from the cached scores, trained on
    `(1 - eps_r) onehot + eps_r / K`."""
    x, y = digits["train"][0][:64], digits["train"][1][:64]
    model = _model(strata_by=source, rescore_every=1)
    bins, logits = _reference_bins(model.backbone, x, source)
    _scoring(model, 64, bins)
    thresholds = np.sort(bins)[[21, 42]]  # the cache's tertiles (cumulative count >= n r / 3)
    np.testing.assert_array_equal(model.strata.thresholds(), thresholds)
    strata = smoothing.assign_strata(bins, thresholds).numpy()
    assert len(set(strata)) == 3  # the check below has work to do
    model.stratum_eps.assign([0.3, 0.1, 0.0])
    eps = np.array([0.3, 0.1, 0.0])[strata]
    targets = (1 - eps[:, None]) * np.eye(10)[y] + eps[:, None] / 10
    expected = np.mean(-np.sum(targets * np.log(reference.softmax(logits)), axis=1))
    # The loss the step reports is computed on the weights before its update.
    inputs = score_cache.with_index(x, np.arange(64))
    logs = model.train_on_batch(inputs, y, return_dict=True)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    # The step counted each stratum's examples as it assigned them.
    np.testing.assert_array_equal(
        model.strata.train_count.numpy(), np.bincount(strata, minlength=3)
    )


def test_sample_weights_and_one_hot_labels_with_the_score_cache(digits):
    x, y = digits["train"][0][:32], digits["train"][1][:32]
    weights = np.zeros(32, np.float32)
    weights[:16] = 1.0
    model = _model(rescore_every=4)
    log_probs = np.log(reference.softmax(np.asarray(model.backbone(x), np.float64)))
    per_example = -log_probs[np.arange(32), y]  # eps_init 0: hard labels
    history = model.fit(
        x,
        np.eye(10)[y],
        sample_weight=weights,
        batch_size=32,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[adaptive_smoothing.AdaptiveSmoothing(digits["validation"])],
    )
    # Keras's default reduction: sum of weighted losses over the batch size.
    assert history.history["loss"][0] == pytest.approx(np.sum(weights * per_example) / 32, rel=1e-4)
    # One-hot labels gave integer ones to the targets and one-hot ones to
    # "accuracy" (which Keras leaves unweighted: `metrics`, not `weighted_metrics`).
    assert history.history["accuracy"][0] == pytest.approx(np.mean(log_probs.argmax(1) == y))


def _epochs_of(arguments, epochs):
    """The pipeline's batches, cut into `epochs` passes of `steps_per_epoch`."""
    batches = list(arguments["x"].take(epochs * arguments["steps_per_epoch"]).as_numpy_iterator())
    steps = arguments["steps_per_epoch"]
    return [batches[e * steps : (e + 1) * steps] for e in range(epochs)]


def test_arrays_reach_keras_as_one_repeating_pipeline_of_every_example_once_per_epoch():
    x = np.arange(30, dtype=np.float64).reshape(10, 3)  # row i holds 3i, 3i+1, 3i+2
    y = np.arange(10) % 4
    weights = np.linspace(0.5, 2.0, 10)
    model = keras.Sequential([keras.layers.Dense(2)])
    given = {"x": x, "y": y, "sample_weight": weights, "batch_size": 4, "epochs": 3}
    arguments = fitting.array_pipeline(model, given)
    assert arguments["steps_per_epoch"] == 3 and arguments["shuffle"] is False
    assert "y" not in arguments and "sample_weight" not in arguments
    orders = []
    for epoch in _epochs_of(arguments, 3):
        # Batches of 4, 4, then the partial 2, as Keras's array adapter gives.
        assert [len(batch[0]) for batch in epoch] == [4, 4, 2]
        rows = np.concatenate([batch[0] for batch in epoch])
        assert rows.dtype == np.float32  # floatx, as Keras casts arrays
        order = (rows[:, 0] / 3).astype(int)
        np.testing.assert_array_equal(np.sort(order), np.arange(10))  # each example once
        # Labels and weights travel with their example.
        np.testing.assert_array_equal(np.concatenate([b[1] for b in epoch]), y[order])
        np.testing.assert_allclose(np.concatenate([b[2] for b in epoch]), weights[order], 1e-6)
        orders.append(tuple(order))
    assert len(set(orders)) == 3  # a new order every epoch (10! orders: a tie is ~1e-6)
    unshuffled = fitting.array_pipeline(model, {**given, "shuffle": False})
    for epoch in _epochs_of(unshuffled, 2):
        rows = np.concatenate([batch[0] for batch in epoch])
        np.testing.assert_array_equal(rows, x.astype(np.float32))
    # What the pipeline does not do is left to Keras, untouched.
    for extra in (
        {"validation_split": 0.2},
        {"steps_per_epoch": 2},
        {"shuffle": "batch"},
        {"y": y[:9]},  # Keras's adapter names the mismatch
    ):
        left = {**given, **extra}
        assert fitting.array_pipeline(model, left) is left
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    assert fitting.array_pipeline(model, {"x": dataset})["x"] is dataset


def test_an_unindexed_dataset_is_a_clear_error(digits):
    model = _model()
    dataset = tf.data.Dataset.from_tensor_slices(digits["train"]).batch(64)
    with pytest.raises(ValueError, match="index_examples"):
        model.fit(
            dataset,
            epochs=1,
            verbose=0,
            callbacks=[adaptive_smoothing.AdaptiveSmoothing(digits["validation"])],
        )
    with pytest.raises(ValueError, match="index"):
        model.train_on_batch(digits["train"][0][:8], digits["train"][1][:8])


def test_train_size_is_counted_from_an_indexed_dataset_and_from_arrays(digits):
    x, y = digits["train"]
    dataset = score_cache.index_examples(tf.data.Dataset.from_tensor_slices((x, y)))
    for inputs in (dataset.shuffle(2000, seed=0).batch(100), x):
        model = _model()
        labels = None if isinstance(inputs, tf.data.Dataset) else y
        model.fit(
            inputs,
            labels,
            epochs=1,
            verbose=0,
            callbacks=[adaptive_smoothing.AdaptiveSmoothing(digits["validation"])],
        )
        assert model.score_cache.size == len(y)
    # A dataset that repeats forever cannot be counted: the error says what to pass.
    with pytest.raises(ValueError, match="train_size"):
        _model().fit(
            dataset.repeat().batch(64),
            steps_per_epoch=2,
            epochs=1,
            verbose=0,
            callbacks=[adaptive_smoothing.AdaptiveSmoothing(digits["validation"])],
        )


def test_compile_refuses_a_foreign_loss_and_xla():
    model = training.ARAdaLSModel(backbones.mlp((8, 8, 1), 10), 10, eps_max=0.3)
    with pytest.raises(ValueError, match="without `loss=`"):
        model.compile(optimizer="adam", loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="XLA"):
        model.compile(optimizer="adam", jit_compile=True)
    model.compile(optimizer="adam")
    assert model.jit_compile is False  # Keras's "auto" would pick XLA on a GPU


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps_max": 0.0}, "eps_max"),
        ({"eps_max": 2.0}, r"eps_max must be in \(0, 1\]"),
        ({}, "needs eps_max"),
        ({"eps_max": 0.3, "strata_by": "confidence"}, "runs no attack"),
        ({"eps_max": 0.3, "attack_steps": 0}, "steps"),
        ({"eps_max": 0.3, "eps_init": 0.6, "eps_cap": 0.5}, "eps_init"),
        ({"eps_max": 0.3, "strata_by": "oracle"}, "strata_by"),
        ({"eps_max": 0.3, "eps_update": "log"}, "eps_update"),
        ({"eps_max": 0.3, "num_strata": 0}, "num_strata"),
        ({"eps_max": 0.3, "num_strata": "some"}, "num_strata"),
        ({"eps_max": 0.3, "rescore_every": 0}, "rescore_every"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        training.ARAdaLSModel(backbones.mlp((8, 8, 1), 10), 10, **kwargs)


def test_confidence_strata_need_no_eps_max():
    model = training.ARAdaLSModel(backbones.mlp((8, 8, 1), 10), 10, strata_by="confidence")
    assert model.eps_max is None and model.rescore_every == 8 and model.num_strata == "auto"


class _Capture(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))


def test_fit_takes_callbacks_by_position_and_as_a_callback_list(digits):
    x, y = digits["train"]
    for wrap in (list, keras.callbacks.CallbackList):
        capture = _Capture()
        adaptive = adaptive_smoothing.AdaptiveSmoothing(digits["validation"])
        model = _model()
        # Keras's positional order: x, y, batch_size, epochs, verbose, callbacks.
        model.fit(x, y, 128, 2, 0, wrap([capture, adaptive]))
        assert len(capture.logs) == 2 and "stratum0_eps" in capture.logs[0]
        assert len(adaptive.records) == 2


def test_auto_strata_warmup_and_the_update_as_fit_runs_it(digits, tmp_path):
    """R from the validation size; no update and no scoring in the warm-up
    epoch; then the logged eps are the rule's update of the logged statistics;
    the CSV holds the per-stratum figures, the progress line does not."""
    model = _model(
        num_strata="auto", eps_update="additive", alpha=1.0, eps_cap=0.5, max_step=0.5, eps_init=0.1
    )
    adaptive = adaptive_smoothing.AdaptiveSmoothing(digits["validation"])
    csv = tmp_path / "log.csv"
    capture = _Capture()
    model.fit(
        *digits["train"],
        batch_size=64,
        epochs=3,
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(csv)), adaptive, capture],
    )
    validation_size = len(digits["validation"][1])
    assert model.num_strata == min(10, validation_size // 25)
    first, second, third = adaptive.records
    assert np.isnan(first["eps_trust"]) and np.isnan(capture.logs[0]["stratum0_train_count"])
    assert all(first[f"stratum{r}_eps"] == pytest.approx(0.1) for r in range(model.num_strata))
    assert sum(capture.logs[1][f"stratum{r}_train_count"] for r in range(model.num_strata)) == len(
        digits["train"][1]
    )
    # The third update from the recorded statistics (trust, its gate and the additive step).
    assert third["eps_trust"] >= model.eps_rule.min_trust  # else nothing moves: no test
    for r in range(model.num_strata):
        if third[f"stratum{r}_val_count"] > 0:
            step = third[f"stratum{r}_conf"] - third[f"stratum{r}_acc"]
            want = np.clip(second[f"stratum{r}_eps"] + third["eps_trust"] * step, 0, 0.5)
            assert third[f"stratum{r}_eps"] == pytest.approx(want, abs=1e-6)
    moved = [third[f"stratum{r}_eps"] for r in range(model.num_strata)]
    assert not np.allclose(moved, 0.1)  # the update did something
    np.testing.assert_allclose(model.stratum_eps.numpy(), moved, atol=1e-7)
    header = csv.read_text().splitlines()[0].split(",")
    assert "stratum0_eps" in header and "eps_mean" in header
    assert fitting.ShortProgbar._short({"stratum0_eps": 1.0, "eps_mean": 0.5}) == {"eps_mean": 0.5}


def test_validation_counts_are_those_of_the_reference_strata(digits):
    model = _model()
    x, y = digits["validation"]
    adaptive = adaptive_smoothing.AdaptiveSmoothing((x, y))
    model.fit(*digits["train"], batch_size=128, epochs=2, verbose=0, callbacks=[adaptive])
    bins, _ = _reference_bins(model.backbone, x, "attack")
    # The validation cache scored every example at epoch 1 (its first), with
    # the weights of that epoch's end: these are today's weights.
    strata = model.strata.assign(bins).numpy()
    counts = [adaptive.records[-1][f"stratum{r}_val_count"] for r in range(3)]
    np.testing.assert_array_equal(counts, np.bincount(strata, minlength=3))


def test_trust_hand_computed():
    assert adaptive_smoothing.trust(0.55, 1.0, 10) == pytest.approx((0.55 - 0.1) / 0.9)
    assert adaptive_smoothing.trust(0.10, 0.92, 10) == 0.0
    assert adaptive_smoothing.trust(0.97, 0.95, 10) == 1.0
    assert adaptive_smoothing.trust(0.9, 0.1, 10) == 0.0  # a network at chance teaches nothing


def test_batchnorm_whose_moving_statistics_lag_does_not_move_eps(digits):
    """Moving statistics that barely move (momentum 0.9999): inference-mode
    validation is near chance while training batches are right, so trust is
    near 0 and eps stays at 0 even under the paper's additive rule."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(64)(keras.layers.Flatten()(inputs))
    hidden = keras.layers.BatchNormalization(momentum=0.9999)(hidden)
    hidden = keras.layers.Dense(64)(keras.layers.ReLU()(hidden))
    hidden = keras.layers.BatchNormalization(momentum=0.9999)(hidden)
    backbone = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.ReLU()(hidden)))
    x, y = digits["train"]
    model = _model(backbone, strata_by="confidence", eps_update="additive", max_step=0.5)
    adaptive = adaptive_smoothing.AdaptiveSmoothing(digits["validation"], validation_metrics=True)
    capture = _Capture()
    model.fit(x, 2 * y % 10, batch_size=32, epochs=3, verbose=0, callbacks=[adaptive, capture])
    # Shifted labels (2y mod 10) make the shortfall plain: training learns them.
    assert capture.logs[-1]["accuracy"] > 0.8 and capture.logs[-1]["val_accuracy"] < 0.5
    assert max(record["eps_trust"] for record in adaptive.records[1:]) < 0.3
    assert model.stratum_eps.numpy().max() < 0.05


def test_fit_without_adaptive_smoothing_warns_and_scores_nothing(digits):
    model = _model()
    with pytest.warns(UserWarning, match="eps stays at eps_init"):
        model.fit(*digits["train"], batch_size=256, epochs=1, verbose=0)
    assert int(model.score_cache.histogram.numpy().sum()) == 0


def test_validation_logs_from_one_pass_and_never_over_fits_own(digits):
    """The callback's val_* logs equal Keras's evaluation of the same weights;
    with fit's own validation_data, Keras's val_* logs stay."""
    from aradals_tf import metrics as metrics_lib

    x, y = digits["train"]
    validation = digits["validation"]
    model = _model()
    model.compile(
        optimizer="adam",
        metrics=["accuracy", metrics_lib.ExpectedCalibrationError(from_logits=True)],
    )
    capture = _Capture()
    adaptive = adaptive_smoothing.AdaptiveSmoothing(validation, validation_metrics=True)
    model.fit(x, y, batch_size=128, epochs=1, verbose=0, callbacks=[adaptive, capture])
    expected = model.evaluate(*validation, batch_size=500, verbose=0, return_dict=True)
    for name in ("loss", "accuracy", "ece"):
        assert capture.logs[0][f"val_{name}"] == pytest.approx(expected[name], rel=1e-5, abs=1e-6)
    # fit's own validation split: the callback leaves Keras's logs alone.
    other = (x[:100], y[:100])
    model = _model()
    capture = _Capture()
    adaptive = adaptive_smoothing.AdaptiveSmoothing(validation, validation_metrics=True)
    with pytest.warns(UserWarning, match="val_\\* logs are kept"):
        model.fit(
            x,
            y,
            batch_size=128,
            epochs=1,
            verbose=0,
            validation_data=other,
            callbacks=[adaptive, capture],
        )
    expected = model.evaluate(*other, verbose=0, return_dict=True)
    assert capture.logs[0]["val_accuracy"] == pytest.approx(expected["accuracy"])


def test_already_batched_validation_data_is_not_batched_again(digits):
    """A dataset batched with drop_remainder has a static batch size; it is
    still batched and must be passed as it is."""
    x, y = digits["validation"]
    batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(60, drop_remainder=True)
    model = _model()
    adaptive = adaptive_smoothing.AdaptiveSmoothing(batched)
    assert adaptive.validation_size(model) == 60 * (len(y) // 60)
    model.fit(*digits["train"], batch_size=128, epochs=2, verbose=0, callbacks=[adaptive])
    counts = sum(adaptive.records[-1][f"stratum{r}_val_count"] for r in range(3))
    assert counts == 60 * (len(y) // 60)


def test_save_load_round_trip_keeps_the_trained_state(digits, tmp_path):
    """After training: eps, the score cache and its histogram, the rotation's
    epoch and the optimizer's state come back; outputs and evaluate agree."""
    model = _model(
        strata_by="first_order",
        eps_update="additive",
        alpha=2.0,
        max_step=0.5,
        eps_init=0.2,
        eps_cap=0.5,
    )
    adaptive = adaptive_smoothing.AdaptiveSmoothing(digits["validation"])
    model.fit(*digits["train"], batch_size=128, epochs=4, verbose=0, callbacks=[adaptive])
    assert np.all(model.stratum_eps.numpy() != 0.2)  # trained state, not the initial one
    path = tmp_path / "ar.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, training.ARAdaLSModel)
    skip = ("backbone", "name")
    assert {k: v for k, v in loaded.get_config().items() if k not in skip} == {
        k: v for k, v in model.get_config().items() if k not in skip
    }
    assert isinstance(loaded.eps_rule, eps_rules.AdditiveRule) and loaded.eps_rule.alpha == 2.0
    for name in ("stratum_eps",):
        np.testing.assert_array_equal(getattr(loaded, name).numpy(), getattr(model, name).numpy())
    for a, b in zip(loaded.strata.variables, model.strata.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(loaded.score_cache.histogram.numpy().sum()) == len(digits["train"][1])
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x, y = digits["test"]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    result = loaded.evaluate(x, y, verbose=0, return_dict=True)
    logits = model.backbone.predict(x, verbose=0)
    assert result["loss"] == pytest.approx(
        reference.nll(y, reference.softmax(logits.astype(np.float64))), rel=1e-4
    )


def test_backup_and_restore_resumes_after_a_killed_fit(digits, tmp_path):
    backup = str(tmp_path / "backup")

    class Killer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                self.eps_at_kill = self.model.stratum_eps.numpy().copy()
                self.cache_at_kill = self.model.score_cache.bins.numpy().copy()
                raise KeyboardInterrupt("killed")

    killer = Killer()
    settings = dict(eps_update="additive", alpha=2.0, max_step=0.5, eps_init=0.2, eps_cap=0.5)
    with pytest.raises(KeyboardInterrupt):
        _model(**settings).fit(
            *digits["train"],
            batch_size=128,
            epochs=5,
            verbose=0,
            callbacks=[
                adaptive_smoothing.AdaptiveSmoothing(digits["validation"]),
                keras.callbacks.BackupAndRestore(backup),
                killer,
            ],
        )
    seen = {}

    class Probe(keras.callbacks.Callback):
        # After BackupAndRestore's restore, before the first epoch's scoring pass.
        def on_train_begin(self, logs=None):
            seen.update(
                eps=self.model.stratum_eps.numpy().copy(),
                cache=self.model.score_cache.bins.numpy().copy(),
            )

        def on_epoch_begin(self, epoch, logs=None):
            seen.setdefault("epoch", epoch)

    history = _model(**settings).fit(
        *digits["train"],
        batch_size=128,
        epochs=5,
        verbose=0,
        callbacks=[
            adaptive_smoothing.AdaptiveSmoothing(digits["validation"]),
            keras.callbacks.BackupAndRestore(backup),
            Probe(),
        ],
    )
    assert seen["epoch"] == 3 and len(history.history["loss"]) == 2
    assert np.all(killer.eps_at_kill != 0.2)  # eps moved before the kill
    np.testing.assert_allclose(seen["eps"], killer.eps_at_kill)
    np.testing.assert_array_equal(seen["cache"], killer.cache_at_kill)


_LOAD_IN_A_FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import aradals_tf
    import keras
    import numpy as np
    model = keras.models.load_model(sys.argv[1] + "/model.keras")
    x = np.load(sys.argv[2])
    np.save(sys.argv[3], np.asarray(model.predict(x, verbose=0)))
    print(type(model).__name__, model.stratum_eps.numpy().tolist())
    """
)


def test_a_cli_model_loads_after_a_bare_import_in_a_fresh_process(tmp_path, digits):
    """`aradals-tf train` in a subprocess, then in another fresh process
    `import aradals_tf; keras.models.load_model(...)`; its logits equal the
    backbone's as loaded here."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = tmp_path / "run"
    script = os.path.join(os.path.dirname(sys.executable), "aradals-tf")
    train = [
        script,
        "train",
        "--dataset",
        "digits",
        "--method",
        "ar-adals",
        "--epochs",
        "2",
        "--out",
        str(run),
    ]
    completed = subprocess.run(train, capture_output=True, text=True, timeout=600, env=env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    x = digits["test"][0][:16]
    np.save(tmp_path / "x.npy", x)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _LOAD_IN_A_FRESH_PROCESS,
            str(run),
            str(tmp_path / "x.npy"),
            str(tmp_path / "out.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[0] == "ARAdaLSModel"
    from aradals_tf import experiments

    _, model = experiments.load_run(str(run))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model.backbone(x), atol=1e-5)


_MIRRORED = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf, keras
    if sys.argv[1] == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.get_strategy()
    from aradals_tf import adaptive_smoothing, backbones, data, score_cache, training
    x, y = data.load_arrays("digits", "train")
    x, y = x[:512], y[:512]
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = training.ARAdaLSModel(backbones.mlp((8, 8, 1), 10), 10, eps_max=0.3,
                                      attack_steps=5, num_strata=3, rescore_every=2,
                                      train_size=512)
        model.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
        model.build_strata(3)
    model.stratum_eps.assign([0.1, 0.05, 0.0])
    # Two steps on two batches (fit splits each over the replicas), the second
    # batch repeating examples of the first: the same updates with 1 or 2
    # replicas, no doubled gradient, each example stored once.
    seen = {}

    class Capture(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen["histogram"] = self.model.score_cache.histogram.numpy().tolist()
            seen["counts"] = self.model.strata.train_count.numpy().tolist()
            seen["loss"] = float(logs["loss"])

    index = np.concatenate([np.arange(128), np.arange(64, 192)])
    dataset = tf.data.Dataset.from_tensor_slices(
        (score_cache.with_index(x[index], index), y[index])
    ).batch(128)
    validation = data.load_arrays("digits", "validation")
    adaptive = adaptive_smoothing.AdaptiveSmoothing(validation, warmup_epochs=0)
    # The steps score on one device too (with several replicas they always do).
    model.fit(dataset, epochs=1, verbose=0, callbacks=[adaptive, Capture()], scoring_data=None)
    weights = model.backbone.get_weights()[0]
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "loss": seen["loss"],
                      "histogram": seen["histogram"],
                      "counts": seen["counts"],
                      "weights_sum": float(np.sum(weights)),
                      "weights_abs": float(np.sum(np.abs(weights))),
                      "cache": model.score_cache.bins.numpy().tolist()}))
    """
)


def test_mirrored_strategy_matches_single_device():
    """The score cache under MirroredStrategy: each step's rows are gathered
    from both replicas, stored once (an example seen twice counts once in the
    histogram), and training matches one device."""
    import json

    results = {}
    for mode in ("single", "mirrored"):
        completed = subprocess.run(
            [sys.executable, "-c", _MIRRORED, mode],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])
    single, mirrored = results["single"], results["mirrored"]
    assert mirrored["replicas"] == 2 and single["replicas"] == 1
    # 192 distinct examples of 256 rows: each stored once.
    assert sum(single["histogram"]) == 192 and mirrored["histogram"] == single["histogram"]
    assert sum(single["counts"]) == 256 and mirrored["counts"] == single["counts"]
    assert mirrored["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert mirrored["weights_sum"] == pytest.approx(single["weights_sum"], rel=1e-4)
    assert mirrored["weights_abs"] == pytest.approx(single["weights_abs"], rel=1e-5)
    cache = np.asarray(single["cache"])
    assert np.all(cache[:192] >= 0) and np.all(cache[192:] == score_cache.UNSCORED)
    assert mirrored["cache"] == single["cache"]


def test_trained_model_smooths_least_robust_strata_most():
    """On mnist5k with strata by the attack and the pooled rule, eps ends
    larger in the least robust strata than in the most robust ones, and one
    of the two least robust strata left 0 (which of the two varies with the
    thread scheduling of CPU reductions over 12 epochs)."""
    from aradals_tf import experiments

    config = experiments.TrainConfig(
        dataset="mnist5k", method="ar-adals", epochs=12, eps_update="pooled"
    ).validate()
    train, validation = experiments.training_datasets(config)
    model = experiments.build_model(config)
    adaptive = adaptive_smoothing.AdaptiveSmoothing(validation)
    model.fit(
        train,
        epochs=config.epochs,
        steps_per_epoch=experiments.steps_per_epoch(config),
        verbose=0,
        callbacks=[adaptive],
    )
    eps = model.stratum_eps.numpy()
    assert eps[:2].mean() > eps[-2:].mean(), eps
    assert eps[:2].max() > 0.01, eps
