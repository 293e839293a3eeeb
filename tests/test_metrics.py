"""Calibration metrics against numpy references, tfp and hand-computed cases."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import reference
import tensorflow as tf
import tensorflow_probability as tfp

from aradals_tf import metrics


def _random_case(seed, n=500, num_classes=10):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, num_classes)) * rng.uniform(0.5, 5)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=n).astype(np.int32)
    return labels, logits, tf.nn.softmax(logits).numpy()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_bins", [1, 10, 15])
def test_ece_matches_numpy_and_tfp(seed, num_bins):
    labels, logits, probs = _random_case(seed)
    ours = float(metrics.expected_calibration_error(labels, probs, num_bins))
    ours_logits = float(
        metrics.expected_calibration_error(labels, logits, num_bins, from_logits=True)
    )
    theirs = float(
        tfp.stats.expected_calibration_error(num_bins, logits=logits, labels_true=labels)
    )
    assert ours == pytest.approx(reference.ece(labels, probs, num_bins), abs=1e-6)
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert ours_logits == pytest.approx(ours, abs=1e-6)


def test_ece_worked_example():
    # Two bins used out of 15: conf 0.9 (bin 13) correct, conf 0.8 (bin 12)
    # wrong. ECE = 1/2 |1 - 0.9| + 1/2 |0 - 0.8| = 0.45.
    ece = metrics.expected_calibration_error([0, 1], [[0.9, 0.1], [0.8, 0.2]])
    assert float(ece) == pytest.approx(0.45, abs=1e-7)


def test_confidence_one_goes_to_last_bin_and_ties_to_lowest_class():
    # Confidence exactly 1.0 must land in the last bin, not an extra one.
    count, correct, conf = metrics.bin_statistics([0], [[1.0, 0.0]], num_bins=15)
    assert count.numpy()[-1] == 1 and count.numpy().sum() == 1
    # Tie between classes 1 and 2: prediction is class 1.
    _, prediction = metrics.top_label(tf.constant([[0.2, 0.4, 0.4]]))
    assert int(prediction[0]) == 1
    assert float(metrics.accuracy([1], [[0.2, 0.4, 0.4]])) == 1.0
    assert float(metrics.accuracy([2], [[0.2, 0.4, 0.4]])) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_other_metrics_match_numpy(seed):
    labels, logits, probs = _random_case(seed, n=333, num_classes=7)
    assert float(metrics.maximum_calibration_error(labels, probs)) == pytest.approx(
        reference.mce(labels, probs), abs=1e-6
    )
    assert float(metrics.adaptive_calibration_error(labels, probs)) == pytest.approx(
        reference.adaptive_ece(labels, probs), abs=1e-6
    )
    assert float(metrics.negative_log_likelihood(labels, probs)) == pytest.approx(
        reference.nll(labels, probs), rel=1e-5
    )
    assert float(
        metrics.negative_log_likelihood(labels, logits, from_logits=True)
    ) == pytest.approx(
        reference.nll(labels, reference.softmax(logits.astype(np.float64))), rel=1e-5
    )
    assert float(metrics.brier_score(labels, probs)) == pytest.approx(
        reference.brier(labels, probs), abs=1e-6
    )
    assert float(metrics.accuracy(labels, probs)) == pytest.approx(
        np.mean(probs.argmax(1) == labels), abs=1e-7
    )


def test_brier_range_and_calibration_statistics():
    # A confident wrong one-hot prediction scores the maximum 2, a right one 0.
    assert float(metrics.brier_score([1], [[1.0, 0.0]])) == pytest.approx(2.0)
    assert float(metrics.brier_score([0], [[1.0, 0.0]])) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    logits, labels = reference.calibrated_logits(rng, 20_000, 5)
    calibrated = float(metrics.expected_calibration_error(labels, logits, from_logits=True))
    overconfident = float(metrics.expected_calibration_error(labels, 3 * logits, from_logits=True))
    shuffled = float(
        metrics.expected_calibration_error(rng.permutation(labels), logits, from_logits=True)
    )
    assert calibrated < 0.02
    assert overconfident > 0.1 and shuffled > 0.3


def test_reliability_diagram_data_consistent_with_ece():
    labels, _, probs = _random_case(7)
    data = metrics.reliability_diagram_data(labels, probs, 10)
    assert data["edges"].shape == (11,) and data["count"].sum() == len(labels)
    used = data["count"] > 0
    recomputed = np.sum(
        data["count"][used]
        / len(labels)
        * np.abs(data["accuracy"][used] - data["confidence"][used])
    )
    assert recomputed == pytest.approx(data["ece"], abs=1e-6)
    assert np.all(np.isnan(data["accuracy"][~used]))


def test_functions_work_inside_tf_function():
    labels, _, probs = _random_case(3)
    graph_ece = tf.function(metrics.expected_calibration_error)(labels, probs)
    assert float(graph_ece) == pytest.approx(reference.ece(labels, probs), abs=1e-6)


@pytest.mark.parametrize(
    "labels, probs, message",
    [
        ([0, 3], [[0.5, 0.5], [0.5, 0.5]], "labels out of range"),
        ([0, -1], [[0.5, 0.5], [0.5, 0.5]], "labels out of range"),
        ([0, 1], [[0.5, np.nan], [0.5, 0.5]], "NaN or inf"),
        ([0, 1], [[0.5, np.inf], [0.5, 0.5]], "NaN or inf"),
        ([0], [[0.5, 0.5], [0.5, 0.5]], "same number of examples"),
        ([0], [0.5, 0.5], "shape"),
    ],
)
def test_bad_input_is_a_clear_value_error(labels, probs, message):
    for function in (
        metrics.expected_calibration_error,
        metrics.negative_log_likelihood,
        metrics.brier_score,
    ):
        with pytest.raises(ValueError, match=message):
            function(labels, probs)


def test_keras_metric_over_batches_equals_one_shot():
    labels, logits, probs = _random_case(11, n=1000)
    metric = metrics.ExpectedCalibrationError(num_bins=15, from_logits=True)
    for start in range(0, 1000, 128):
        metric.update_state(labels[start : start + 128], logits[start : start + 128])
    one_shot = reference.ece(labels, probs)
    assert float(metric.result()) == pytest.approx(one_shot, abs=1e-6)
    # The mean of per-batch ECEs is a different (wrong) number: make sure the
    # test data tells them apart.
    per_batch = np.mean(
        [reference.ece(labels[s : s + 128], probs[s : s + 128]) for s in range(0, 1000, 128)]
    )
    assert abs(per_batch - one_shot) > 1e-3
    metric.reset_state()
    metric.update_state(labels[:10, None], logits[:10])  # [n, 1] labels
    assert float(metric.result()) == pytest.approx(reference.ece(labels[:10], probs[:10]), abs=1e-6)
    metric.reset_state()
    metric.update_state(np.eye(10)[labels[:50]], logits[:50])  # one-hot labels
    assert float(metric.result()) == pytest.approx(reference.ece(labels[:50], probs[:50]), abs=1e-6)


def test_keras_metric_sample_weight_equals_repetition():
    labels, _, probs = _random_case(5, n=200)
    weights = np.random.default_rng(0).integers(0, 3, size=200)
    metric = metrics.ExpectedCalibrationError()
    metric.update_state(labels, probs, sample_weight=weights)
    repeated = np.repeat(np.arange(200), weights)
    assert float(metric.result()) == pytest.approx(
        reference.ece(labels[repeated], probs[repeated]), abs=1e-6
    )


def test_keras_metric_in_compile_fit_and_serialisation(tmp_path):
    labels, logits, probs = _random_case(2, n=256)
    inputs = keras.Input((10,))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[metrics.ExpectedCalibrationError(from_logits=True, num_bins=10)],
    )
    result = model.evaluate(logits, labels, batch_size=50, return_dict=True, verbose=0)
    assert result["ece"] == pytest.approx(reference.ece(labels, probs, 10), abs=1e-6)
    metric = metrics.ExpectedCalibrationError(num_bins=7, from_logits=True, name="x")
    clone = metrics.ExpectedCalibrationError.from_config(metric.get_config())
    assert clone.get_config() == metric.get_config()
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    result = reloaded.evaluate(logits, labels, batch_size=64, return_dict=True, verbose=0)
    assert result["ece"] == pytest.approx(reference.ece(labels, probs, 10), abs=1e-6)


_DISTRIBUTED_CHECK = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from aradals_tf import metrics
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(0)
    logits = (3 * rng.normal(size=(512, 10))).astype("float32")
    labels = rng.integers(0, 10, 512).astype("int32")
    with strategy.scope():
        metric = metrics.ExpectedCalibrationError(from_logits=True)
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((labels, logits)).batch(64))
    @tf.function
    def step(y, z):
        strategy.run(metric.update_state, args=(y, z))
    for y, z in dataset:
        step(y, z)
    one_shot = float(metrics.expected_calibration_error(labels, logits, from_logits=True))
    print(repr(float(metric.result())), repr(one_shot))
    """
)


def test_keras_metric_under_mirrored_strategy():
    completed = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED_CHECK],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    distributed, one_shot = map(float, completed.stdout.split()[-2:])
    assert distributed == pytest.approx(one_shot, abs=1e-6)
