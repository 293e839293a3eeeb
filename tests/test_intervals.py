"""Bootstrap intervals: the weighted metrics against the metrics module on the
sample and on explicitly resampled arrays, the NLL interval against the
normal approximation of a mean, and the paired difference's verdicts."""

import numpy as np
import pytest

from aradals_tf import intervals
from aradals_tf import metrics

rng = np.random.default_rng(0)
N, K = 600, 10


def _calibrated(temperature=1.0, seed=0):
    """Logits whose softmax draws the labels (a calibrated model), optionally
    sharpened by `temperature` < 1 (over-confident)."""
    generator = np.random.default_rng(seed)
    logits = generator.normal(size=(N, K)) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([generator.choice(K, p=p) for p in probs])
    return labels, (logits / temperature).astype(np.float32)


@pytest.mark.parametrize(
    "metric, reference",
    [
        ("ece", metrics.expected_calibration_error),
        ("adaptive_ece", metrics.adaptive_calibration_error),
        ("nll", metrics.negative_log_likelihood),
    ],
)
def test_weights_of_one_give_the_metrics_module(metric, reference):
    labels, logits = _calibrated(0.7)
    stats = intervals.example_statistics(labels, logits)
    value = intervals.metric_replicates([[stats]], np.ones((1, N)), metric)[0]
    assert value == pytest.approx(float(reference(labels, logits, from_logits=True)), abs=2e-6)


@pytest.mark.parametrize("metric", ["ece", "nll", "adaptive_ece"])
def test_a_resample_is_the_metric_of_the_resampled_arrays(metric):
    """The slow obvious way: repeat each example as often as it was drawn."""
    labels, logits = _calibrated(0.7, seed=1)
    stats = intervals.example_statistics(labels, logits)
    weights = intervals.resample_weights(N, resamples=5, seed=3)
    fast = intervals.metric_replicates([[stats]], weights, metric)
    function = {
        "ece": metrics.expected_calibration_error,
        "nll": metrics.negative_log_likelihood,
        "adaptive_ece": metrics.adaptive_calibration_error,
    }[metric]
    for row, value in zip(weights, fast):
        drawn = np.repeat(np.arange(N), row.astype(int))
        slow = float(function(labels[drawn], logits[drawn], from_logits=True))
        # Adaptive bins keep all copies of an example in the bin of its first
        # copy: each of the 14 inner boundaries moves at most max(w) - 1 copies.
        tolerance = 2e-6 if metric != "adaptive_ece" else 14 * row.max() / N
        assert value == pytest.approx(slow, abs=tolerance)


def test_nll_interval_matches_the_normal_approximation_of_a_mean():
    labels, logits = _calibrated(0.8, seed=2)
    stats = intervals.example_statistics(labels, logits)
    result = intervals.bootstrap_interval([(np.arange(N), [stats])], "nll", resamples=4000, seed=0)
    half_width = 1.96 * stats["nll"].std(ddof=1) / np.sqrt(N)
    assert (result["high"] - result["low"]) / 2 == pytest.approx(half_width, rel=0.1)
    assert result["low"] < result["value"] < result["high"]
    assert result["value"] == pytest.approx(stats["nll"].mean())


def test_paired_differences_and_verdicts():
    labels, calibrated = _calibrated(1.0, seed=4)
    over_confident = calibrated / 0.4
    ids = np.arange(N)
    good = [(ids, [intervals.example_statistics(labels, calibrated)])]
    bad = [(ids, [intervals.example_statistics(labels, over_confident)])]
    same = intervals.bootstrap_interval(good, "ece", resamples=500, other=good)
    assert same["value"] == 0 and same["low"] == 0 and same["high"] == 0
    assert same["verdict"] == "no difference"
    better = intervals.bootstrap_interval(good, "ece", resamples=500, other=bad)
    assert better["high"] < 0 and better["verdict"] == "better"
    assert intervals.bootstrap_interval(bad, "nll", resamples=500, other=good)["verdict"] == "worse"
    # Shifted copies and runs are averaged inside every resample.
    two_conditions = [(ids, [good[0][1][0], bad[0][1][0]])]
    mean = intervals.bootstrap_interval(two_conditions, "ece", resamples=10)["value"]
    halves = [intervals.bootstrap_interval(r, "ece", resamples=10)["value"] for r in (good, bad)]
    assert mean == pytest.approx(np.mean(halves))
    assert intervals.verdict(-0.02, 0.01) == "no difference"


def test_examples_are_matched_by_id_not_position():
    """The same predictions in another order (pooled folds) give the same
    interval, and a paired difference with the reordered copy is exactly 0."""
    labels, logits = _calibrated(0.7, seed=5)
    order = np.random.default_rng(1).permutation(N)
    stats = intervals.example_statistics(labels, logits)
    shuffled = intervals.example_statistics(labels[order], logits[order])
    straight = intervals.bootstrap_interval([(np.arange(N), [stats])], "ece", resamples=200)
    reordered = intervals.bootstrap_interval([(order, [shuffled])], "ece", resamples=200)
    assert reordered == pytest.approx(straight)
    difference = intervals.bootstrap_interval(
        [(order, [shuffled])], "ece", resamples=200, other=[(np.arange(N), [stats])]
    )
    assert difference["low"] == pytest.approx(0, abs=1e-12)
    assert difference["high"] == pytest.approx(0, abs=1e-12)


def test_the_interval_holds_the_sample_value_where_resampled_eces_are_biased_up():
    """A calibrated model: the resampled ECEs lie mostly above the sample's
    ECE, yet its interval (their spread placed on it) contains it."""
    labels, logits = _calibrated(1.0, seed=6)
    stats = intervals.example_statistics(labels, logits)
    weights = intervals.resample_weights(N, 1000, seed=0)
    value, draws = intervals.run_replicates([(np.arange(N), [stats])], np.arange(N), weights)
    assert np.mean(draws > value) > 0.75  # the bias the interval must not inherit
    result = intervals.summarize(value, draws)
    assert result["low"] < value < result["high"]
    spread = np.ptp(np.percentile(draws, [2.5, 97.5]))
    assert result["high"] - result["low"] == pytest.approx(spread)
