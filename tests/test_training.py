"""AR-AdaLS training model, callbacks and baselines, against hand-computed values."""

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
from aradals_tf import first_order
from aradals_tf import losses
from aradals_tf import mixup
from aradals_tf import smoothing
from aradals_tf import training


@pytest.fixture(scope="module")
def digits():
    return {split: data.load_arrays("digits", split) for split in data.SPLITS}


def _model(**kwargs):
    keras.utils.set_random_seed(0)
    settings = {"eps_max": 0.3, "attack_steps": 5, "num_strata": 3, **kwargs}
    model = training.ARAdaLSModel(backbones.mlp((8, 8, 1), 10), 10, **settings)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    return model


def _reference_bins(model, x, source):
    """Score bins from functions independent of the model's training step."""
    from aradals_tf import first_order
    from aradals_tf import robustness

    logits = np.asarray(model.backbone(x, training=False), np.float64)
    radius = None
    if source == "attack":
        radius, _ = robustness.adversarial_robustness(
            model.backbone, x, eps_max=0.3, steps=5, candidates=model.attack_candidates
        )
    elif source == "first_order":
        radius, _ = first_order.first_order_radius(model.backbone, x)
    return reference.score_bins(source, logits, None if radius is None else radius.numpy()), logits


@pytest.mark.parametrize("source", ["attack", "first_order", "margin", "confidence"])
def test_train_step_loss_is_per_example_soft_label_crossentropy(digits, source):
    x, y = digits["train"][0][:64], digits["train"][1][:64]
    model = _model(eps_init=0.0, eps_cap=0.5, strata_by=source)
    model.stratum_eps.assign([0.3, 0.1, 0.0])
    bins, logits = _reference_bins(model, x, source)
    thresholds = np.quantile(bins, [1 / 3, 2 / 3]).astype(int)  # three strata of this batch
    model.stratum_thresholds.assign(thresholds)
    strata = smoothing.assign_strata(bins, thresholds).numpy()
    assert len(set(strata)) > 1  # the check below has work to do
    eps = np.array([0.3, 0.1, 0.0])[strata]
    targets = (1 - eps[:, None]) * np.eye(10)[y] + eps[:, None] / 10
    log_probs = np.log(reference.softmax(logits))
    expected = np.mean(-np.sum(targets * log_probs, axis=1))
    # The loss the step reports is computed on the weights before its update.
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    histogram = model.score_histogram.numpy()
    assert histogram.sum() == 64
    np.testing.assert_array_equal(
        smoothing.stratum_counts(histogram, thresholds).numpy(), np.bincount(strata, minlength=3)
    )


def test_sample_weight_and_integer_labels(digits):
    x, y = digits["train"][0][:32], digits["train"][1][:32]
    model = _model()
    weights = np.zeros(32, np.float32)
    weights[:16] = 1.0
    logits = model.backbone(x, training=False)
    log_probs = np.log(reference.softmax(np.asarray(logits, np.float64)))
    per_example = -log_probs[np.arange(32), y]  # eps_init 0: hard labels
    logs = model.train_on_batch(x, y, sample_weight=weights, return_dict=True)
    # Keras's default reduction: sum of weighted losses over the batch size.
    assert logs["loss"] == pytest.approx(np.sum(weights * per_example) / 32, rel=1e-4)
    model.train_on_batch(x, y[:, None])  # [n, 1] labels work too


def test_compile_refuses_a_foreign_loss():
    model = training.ARAdaLSModel(backbones.mlp((8, 8, 1), 10), 10, eps_max=0.3)
    with pytest.raises(ValueError, match="without `loss=`"):
        model.compile(optimizer="adam", loss="categorical_crossentropy")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps_max": 0.0}, "eps_max"),
        ({"eps_max": 0.3, "attack_steps": 0}, "steps"),
        ({"eps_max": 0.3, "eps_init": 0.6, "eps_cap": 0.5}, "eps_init"),
        ({"eps_max": 0.3, "strata_by": "oracle"}, "strata_by"),
        ({"eps_max": 0.3, "eps_update": "log"}, "eps_update"),
        ({"eps_max": 0.3, "num_strata": 0}, "num_strata"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        training.ARAdaLSModel(backbones.mlp((8, 8, 1), 10), 10, **kwargs)


@pytest.mark.parametrize("rule", ["additive", "relative", "shrunk"])
def test_fit_updates_thresholds_and_eps_and_logs_them(digits, tmp_path, rule):
    model = _model(alpha=1.0, eps_cap=0.5, eps_update=rule)
    adaptive = adaptive_smoothing.AdaptiveSmoothing(digits["validation"])
    csv = tmp_path / "log.csv"
    history = model.fit(
        *digits["train"],
        batch_size=64,
        epochs=2,
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(csv)), adaptive],
    )
    for r in range(3):
        for key in ("eps", "conf", "acc"):
            assert len(history.history[f"stratum{r}_{key}"]) == 2
    assert "stratum0_eps" in csv.read_text().splitlines()[0]
    # Reproduce the last update from the recorded statistics.
    first, last = adaptive.records
    for r in range(3):
        if last[f"stratum{r}_count"] > 0:
            conf, acc = last[f"stratum{r}_conf"], last[f"stratum{r}_acc"]
            gap = conf - acc
            if rule == "relative":
                gap /= max(1 - conf, 1 - acc, 1 / last[f"stratum{r}_count"])
            elif rule == "shrunk":
                gap = np.sign(gap) * max(abs(gap) - 2 * last[f"stratum{r}_gap_se"], 0.0)
            expected = np.clip(first[f"stratum{r}_eps"] + gap, 0, 0.5)
            assert last[f"stratum{r}_eps"] == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(
        model.stratum_eps.numpy(), [last[f"stratum{r}_eps"] for r in range(3)], atol=1e-7
    )
    # The epoch's training examples, split into strata by the new thresholds.
    for epoch in range(2):
        counts = [history.history[f"stratum{r}_train_count"][epoch] for r in range(3)]
        assert sum(counts) == len(digits["train"][1])
    thresholds = model.stratum_thresholds.numpy()
    assert np.all(np.diff(thresholds) >= 0) and thresholds.min() >= 0 and thresholds.max() < 2048
    assert float(tf.reduce_sum(model.score_histogram)) == 0  # cleared at epoch end


def test_stratum_statistics_hand_checked(digits):
    model = _model()
    thresholds = [100, 300]
    model.stratum_thresholds.assign(thresholds)
    x, y = digits["validation"]
    count, confidence, accuracy, error = adaptive_smoothing.stratum_statistics(
        model, (x, y), batch_size=50
    )
    bins, logits = _reference_bins(model, x, "attack")
    strata = smoothing.assign_strata(bins, thresholds).numpy()
    probs = reference.softmax(logits)
    assert len(set(strata)) == 3
    for r in range(3):
        members = strata == r
        assert count[r] == members.sum()
        if members.any():
            assert confidence[r] == pytest.approx(probs[members].max(1).mean(), abs=1e-5)
            assert accuracy[r] == pytest.approx(
                np.mean(probs[members].argmax(1) == y[members]), abs=1e-6
            )
        if members.sum() >= 2:
            d = probs[members].max(1) - (probs[members].argmax(1) == y[members])
            assert error[r] == pytest.approx(d.std(ddof=1) / np.sqrt(members.sum()), rel=1e-4)


def test_save_load_round_trip(digits, tmp_path):
    model = _model(strata_by="first_order", alpha=0.5, eps_update="shrunk")
    model.fit(
        *digits["train"],
        batch_size=128,
        epochs=1,
        verbose=0,
        callbacks=[adaptive_smoothing.AdaptiveSmoothing(digits["validation"])],
    )
    model.stratum_eps.assign([0.05, 0.1, 0.2])
    path = tmp_path / "ar.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, training.ARAdaLSModel)
    assert loaded.get_config()["alpha"] == 0.5 and loaded.strata_by == "first_order"
    assert loaded.eps_update == "shrunk"
    np.testing.assert_allclose(loaded.stratum_eps.numpy(), [0.05, 0.1, 0.2])
    np.testing.assert_array_equal(
        loaded.stratum_thresholds.numpy(), model.stratum_thresholds.numpy()
    )
    x, y = digits["test"]
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.backbone.predict(x, verbose=0), atol=1e-5
    )
    # evaluate works after loading and reports the hard-label loss.
    result = loaded.evaluate(x, y, verbose=0, return_dict=True)
    logits = model.backbone.predict(x, verbose=0)
    assert result["loss"] == pytest.approx(
        reference.nll(y, reference.softmax(logits.astype(np.float64))), rel=1e-4
    )


def test_validation_is_scored_in_the_training_mode_without_moving_batchnorm(digits):
    """Forward-pass scores are taken with training=True during fit, so
    validation is scored the same way; the BatchNorm statistics that such a
    pass moves are put back."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(32)(keras.layers.Flatten()(inputs))
    hidden = keras.layers.BatchNormalization()(hidden)
    backbone = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.ReLU()(hidden)))
    model = training.ARAdaLSModel(backbone, 10, eps_max=0.3, num_strata=3, strata_by="margin")
    model.compile(optimizer="adam")
    model.fit(
        *digits["train"],
        batch_size=128,
        epochs=1,
        verbose=0,
        callbacks=[adaptive_smoothing.AdaptiveSmoothing(digits["validation"])],
    )
    x, y = digits["validation"]
    before = [v.numpy().copy() for v in backbone.non_trainable_variables]
    count, _, _, _ = adaptive_smoothing.stratum_statistics(model, (x, y), batch_size=500)
    for variable, value in zip(backbone.non_trainable_variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)
    train_mode = reference.score_bins("margin", backbone(x, training=True))
    for variable, value in zip(backbone.non_trainable_variables, before):
        variable.assign(value)
    inference_mode = reference.score_bins("margin", backbone(x, training=False))
    thresholds = model.stratum_thresholds.numpy()
    expected = np.bincount(smoothing.assign_strata(train_mode, thresholds).numpy(), minlength=3)
    np.testing.assert_array_equal(count, expected)
    # The two modes really differ here, so the check above could fail.
    assert np.mean(train_mode != inference_mode) > 0.5


def test_fit_without_adaptive_smoothing_warns(digits):
    model = _model()
    with pytest.warns(UserWarning, match="eps stays at eps_init"):
        model.fit(*digits["train"], batch_size=256, epochs=1, verbose=0)


def test_first_order_radius_exact_on_linear_model():
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(6, 2)).astype("float32")
    inputs = keras.Input((6,))
    dense = keras.layers.Dense(2, use_bias=False)
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([weights])
    x = rng.uniform(0.4, 0.6, size=(20, 6)).astype("float32")

    radius, _ = first_order.first_order_radius(model, x)
    logits = x @ weights
    exact = np.abs(logits[:, 0] - logits[:, 1]) / np.abs(weights[:, 0] - weights[:, 1]).sum()
    np.testing.assert_allclose(radius, exact, rtol=1e-4)
    levels = first_order.levels_from_radius([0.0, 0.05, 0.06, 0.3, 0.31, np.inf], 0.3, 5)
    np.testing.assert_array_equal(levels, [0, 0, 0, 4, 5, 5])


def test_backup_and_restore_resumes_after_a_killed_fit(digits, tmp_path):
    backup = str(tmp_path / "backup")

    class Killer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.eps_at_kill = self.model.stratum_eps.numpy().copy()
                self.weights_at_kill = [w.copy() for w in self.model.backbone.get_weights()]
                raise KeyboardInterrupt("killed")

    model = _model(alpha=2.0)
    killer = Killer()
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            *digits["train"],
            batch_size=128,
            epochs=4,
            verbose=0,
            callbacks=[
                adaptive_smoothing.AdaptiveSmoothing(digits["validation"]),
                keras.callbacks.BackupAndRestore(backup),
                killer,
            ],
        )
    resumed = _model(alpha=2.0)
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if not seen:
                seen["epoch"] = epoch
                seen["eps"] = self.model.stratum_eps.numpy().copy()
                seen["weights"] = [w.copy() for w in self.model.backbone.get_weights()]

    history = resumed.fit(
        *digits["train"],
        batch_size=128,
        epochs=4,
        verbose=0,
        callbacks=[
            adaptive_smoothing.AdaptiveSmoothing(digits["validation"]),
            keras.callbacks.BackupAndRestore(backup),
            Probe(),
        ],
    )
    # BackupAndRestore saves at the end of each epoch before the callback
    # list reaches the killer; the kill happened at the end of epoch 1, so the
    # resumed fit restarts at epoch 2 with that epoch's state.
    assert seen["epoch"] == 2 and len(history.history["loss"]) == 2
    np.testing.assert_allclose(seen["eps"], killer.eps_at_kill)
    for restored, original in zip(seen["weights"], killer.weights_at_kill):
        np.testing.assert_allclose(restored, original)


def test_baseline_losses_hand_computed():
    logits = tf.constant([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    labels = np.array([0, 2])
    probs = reference.softmax(logits.numpy().astype(np.float64))
    eps = 0.3
    targets = (1 - eps) * np.eye(3)[labels] + eps / 3
    expected_ls = np.mean(-np.sum(targets * np.log(probs), axis=1))
    ls = losses.SparseLabelSmoothingCrossentropy(eps)(labels, logits)
    assert float(ls) == pytest.approx(expected_ls, rel=1e-5)
    keras_ls = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=eps)(
        np.eye(3)[labels], logits
    )
    assert float(ls) == pytest.approx(float(keras_ls), rel=1e-5)
    p_true = probs[np.arange(2), labels]
    expected_focal = np.mean(-((1 - p_true) ** 2) * np.log(p_true))
    assert float(losses.SparseFocalCrossentropy(2.0)(labels, logits)) == pytest.approx(
        expected_focal, rel=1e-5
    )
    assert float(losses.SparseFocalCrossentropy(0.0)(labels, logits)) == pytest.approx(
        reference.nll(labels, probs), rel=1e-5
    )


def test_mixup_targets_are_convex_combinations(digits):
    keras.utils.set_random_seed(0)
    model = mixup.MixupModel(backbones.mlp((8, 8, 1), 10), 10, alpha=0.4, seed=1)
    x, y = digits["train"][0][:16], digits["train"][1][:16]
    mixed_x, targets, dominant = model.soft_targets(tf.constant(x), tf.constant(y))
    targets, mixed_x = targets.numpy(), mixed_x.numpy()
    np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)
    # Each row is lam * (x_i, onehot y_i) + (1 - lam) * (x_j, onehot y_j) for
    # one lam per batch and a partner j: recover both, then rebuild the row.
    onehot = np.eye(10)[y]
    lam = None
    for i in range(16):
        if np.allclose(mixed_x[i], x[i], atol=1e-6):  # mixed with itself
            np.testing.assert_allclose(targets[i], onehot[i], atol=1e-6)
            continue
        fits = []
        for j in range(16):
            direction = x[i] - x[j]
            if not np.any(direction):
                continue
            weight = float(np.sum((mixed_x[i] - x[j]) * direction) / np.sum(direction * direction))
            rebuilt = weight * x[i] + (1 - weight) * x[j]
            if np.allclose(rebuilt, mixed_x[i], atol=1e-5):
                fits.append((weight, j))
        assert fits, i
        weight, j = fits[0]
        lam = weight if lam is None else lam
        assert weight == pytest.approx(lam, abs=1e-4)
        np.testing.assert_allclose(targets[i], lam * onehot[i] + (1 - lam) * onehot[j], atol=1e-5)
    assert 0 < lam < 1
    model.compile(optimizer="adam", metrics=["accuracy"])
    model.fit(*digits["train"], batch_size=128, epochs=1, verbose=0)


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
    xv, yv = data.load_arrays("digits", "validation")
    x, y = x[:512], y[:512]
    cache = {"rescore_every": 2, "train_size": 512} if sys.argv[2] == "cache" else {}
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = training.ARAdaLSModel(backbones.mlp((8, 8, 1), 10), 10, eps_max=0.3,
                                      attack_steps=5, num_strata=3, alpha=2.0, **cache)
        model.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    # Two steps on two batches (fit splits each over the replicas): the same
    # updates with 1 or 2 replicas, no doubled gradient, every example counted
    # once (the second step adds to the first's counts).
    seen = {}

    class Capture(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen["histogram"] = self.model.score_histogram.numpy().tolist()
            seen["loss"] = float(logs["loss"])

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if cache:
        dataset = score_cache.index_examples(dataset)
    model.fit(dataset.batch(128).take(2), epochs=1, verbose=0, callbacks=[Capture()])
    histogram = seen["histogram"]
    weights = model.backbone.get_weights()[0]
    model.stratum_eps.assign([0.1, 0.1, 0.1])
    adaptive = adaptive_smoothing.AdaptiveSmoothing((xv, yv))
    adaptive.set_model(model)
    model.update_strata_thresholds()
    adaptive.on_epoch_end(0, {})
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "loss": seen["loss"],
                      "histogram": histogram,
                      "weights_sum": float(np.sum(weights)),
                      "weights_abs": float(np.sum(np.abs(weights))),
                      "eps": model.stratum_eps.numpy().tolist(),
                      "cache": (model.score_cache.bins.numpy().tolist() if cache else None),
                      "thresholds": model.stratum_thresholds.numpy().tolist()}))
    """
)


@pytest.mark.parametrize("cache", ["plain", "cache"])
def test_mirrored_strategy_matches_single_device(cache):
    """With a score cache, too: each replica stores its own examples' scores."""
    import json

    results = {}
    for mode in ("single", "mirrored"):
        completed = subprocess.run(
            [sys.executable, "-c", _MIRRORED, mode, cache],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])
    single, mirrored = results["single"], results["mirrored"]
    assert mirrored["replicas"] == 2 and single["replicas"] == 1
    assert mirrored["histogram"] == single["histogram"] and sum(single["histogram"]) == 256
    assert mirrored["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert mirrored["weights_sum"] == pytest.approx(single["weights_sum"], rel=1e-4)
    assert mirrored["weights_abs"] == pytest.approx(single["weights_abs"], rel=1e-5)
    np.testing.assert_allclose(mirrored["eps"], single["eps"], atol=1e-6)
    assert mirrored["thresholds"] == single["thresholds"]
    if cache == "cache":
        scored = np.asarray(single["cache"]) >= 0
        assert scored.sum() == 256 and np.all(np.asarray(single["cache"])[~scored] == -1)
        assert mirrored["cache"] == single["cache"]


def test_trained_model_smooths_least_robust_strata_most():
    """After training on mnist5k with the paper's additive update, eps is
    larger in the least robust strata than in the most robust ones
    (first-order strata to keep the test short)."""
    from aradals_tf import experiments

    config = experiments.TrainConfig(
        dataset="mnist5k",
        method="ar-adals",
        epochs=15,
        seed=0,
        strata_by="first_order",
        eps_update="additive",
        alpha=1.0,
        eps_cap=0.5,
        num_strata=5,
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
    least, most = eps[:2].mean(), eps[-2:].mean()
    assert least > most, eps
    assert eps[0] > 0


def test_training_strata_hold_equal_shares_at_every_epoch_end():
    """Acceptance: on mnist5k with the attack, each epoch's training strata
    (the thresholds computed at its end, applied to its scores) hold between
    0.8 n / R and 1.2 n / R examples."""
    from aradals_tf import experiments

    config = experiments.TrainConfig(
        dataset="mnist5k", method="ar-adals", epochs=4, seed=0, num_strata=10
    ).validate()
    train, validation = experiments.training_datasets(config)
    model = experiments.build_model(config)
    history = model.fit(
        train,
        epochs=config.epochs,
        steps_per_epoch=experiments.steps_per_epoch(config),
        verbose=0,
        callbacks=[adaptive_smoothing.AdaptiveSmoothing(validation)],
    )
    n = len(data.load_arrays("mnist5k", "train")[1])
    for epoch in range(config.epochs):
        counts = np.array([history.history[f"stratum{r}_train_count"][epoch] for r in range(10)])
        assert counts.sum() == n
        assert np.all((counts >= 0.8 * n / 10) & (counts <= 1.2 * n / 10)), (epoch, counts)


def test_adaptive_smoothing_gives_fits_validation_logs_from_its_own_pass(digits):
    """One pass over the validation split: the callback's val_* logs equal
    the ones fit's own validation pass writes for the same weights."""
    from aradals_tf import metrics as metrics_lib

    x, y = digits["train"]
    validation = digits["validation"]
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(
        optimizer="adam",
        metrics=["accuracy", metrics_lib.ExpectedCalibrationError(from_logits=True)],
    )
    adaptive = adaptive_smoothing.AdaptiveSmoothing(validation, validation_metrics=True)
    seen = {}

    class Capture(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.update(logs)

    model.fit(x, y, batch_size=128, epochs=1, verbose=0, callbacks=[adaptive, Capture()])
    # The reference: Keras's own evaluation of the same weights.
    expected = model.evaluate(*validation, batch_size=500, verbose=0, return_dict=True)
    for name in ("loss", "accuracy", "ece"):
        assert seen[f"val_{name}"] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
    assert seen["accuracy"] != seen["val_accuracy"]  # training's logs kept their own values


@pytest.mark.parametrize("source", ["attack", "margin", "first_order"])
def test_xla(digits, source):
    """The compacted attack has data-dependent shapes: never under XLA (Keras's
    'auto' would pick XLA on a GPU); the forward-pass scores train with XLA
    and give the same step as without XLA."""
    x, y = digits["train"][0][:128], digits["train"][1][:128]
    model = _model(strata_by=source)
    if source == "attack":
        model.compile(optimizer="adam")
        assert model.jit_compile is False
        with pytest.raises(ValueError, match="XLA"):
            model.compile(optimizer="adam", jit_compile=True)
        return
    results = []
    for jit in (False, True):
        model = _model(strata_by=source)
        model.stratum_eps.assign([0.3, 0.1, 0.0])
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        with pytest.warns(UserWarning, match="AdaptiveSmoothing"):
            model.fit(x, y, batch_size=128, epochs=1, verbose=0)
        results.append(model.backbone.get_weights()[0])
    assert not np.allclose(results[0], _model(strata_by=source).backbone.get_weights()[0])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4, atol=1e-5)
