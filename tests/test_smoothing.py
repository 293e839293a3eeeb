"""Soft labels against hand-computed values."""

import numpy as np
import pytest

from aradals_tf import smoothing


def test_scalar_eps_hand_computed():
    targets = smoothing.soft_labels([1, 0], 4, 0.2).numpy()
    np.testing.assert_allclose(
        targets, [[0.05, 0.85, 0.05, 0.05], [0.85, 0.05, 0.05, 0.05]], atol=1e-7
    )


def test_per_example_eps_hand_computed():
    targets = smoothing.soft_labels([2, 0, 1], 3, [0.0, 0.3, 1.0]).numpy()
    np.testing.assert_allclose(
        targets, [[0, 0, 1], [0.8, 0.1, 0.1], [1 / 3, 1 / 3, 1 / 3]], atol=1e-7
    )
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-7)


def test_thresholds_from_histogram_hand_computed():
    # Levels 0..3 with counts 4, 0, 4, 2 (N = 10): cumulative 4, 4, 8, 10.
    # Median (5): first level with C >= 5 is 2.
    np.testing.assert_array_equal(smoothing.thresholds_from_histogram([4, 0, 4, 2], 2), [2])
    # Quartiles 2.5, 5, 7.5: levels 0, 2, 2 (the middle stratum stays empty).
    np.testing.assert_array_equal(smoothing.thresholds_from_histogram([4, 0, 4, 2], 4), [0, 2, 2])
    # Uniform 10 per level over 11 levels, 10 strata: targets 11 r.
    np.testing.assert_array_equal(
        smoothing.thresholds_from_histogram([10] * 11, 10), [1, 2, 3, 4, 5, 6, 7, 8, 9]
    )
    # Exact multiples stay exact: 4 levels x 5, 4 strata -> 0, 1, 2.
    np.testing.assert_array_equal(smoothing.thresholds_from_histogram([5, 5, 5, 5], 4), [0, 1, 2])
    # Empty histogram: every example in stratum 0.
    np.testing.assert_array_equal(smoothing.thresholds_from_histogram([0, 0, 0], 3), [2, 2])


def test_assign_strata_hand_computed_and_equal_mass():
    np.testing.assert_array_equal(smoothing.assign_strata([0, 1, 2, 3], [0, 2]), [0, 1, 1, 2])
    np.testing.assert_array_equal(smoothing.assign_strata([3, 0], []), [0, 0])
    # Equal mass on data without ties: 1,000 distinct levels into 4 strata.
    levels = np.random.default_rng(0).permutation(1000)
    histogram = np.bincount(levels, minlength=1000)
    strata = smoothing.assign_strata(
        levels, smoothing.thresholds_from_histogram(histogram, 4)
    ).numpy()
    np.testing.assert_array_equal(np.bincount(strata), [250, 250, 250, 250])
    assert np.all(np.diff(strata[np.argsort(levels)]) >= 0)  # monotone in level


def test_eps_update_signs_clipping_and_empty_strata():
    eps = smoothing.update_eps(
        eps=[0.1, 0.1, 0.45, 0.05, 0.2],
        confidence=[0.9, 0.8, 0.9, 0.7, 0.5],
        accuracy=[0.8, 0.9, 0.6, 0.9, 0.9],
        count=[10, 10, 10, 10, 0],
        alpha=0.5,
        eps_cap=0.5,
    ).numpy()
    # over-confident: up by 0.5 * 0.1; under-confident: down by 0.05; capped
    # at 0.5; floored at 0; a stratum without validation data keeps its eps.
    np.testing.assert_allclose(eps, [0.15, 0.05, 0.5, 0.0, 0.2], atol=1e-6)


def test_relative_eps_update_hand_computed():
    eps = smoothing.update_eps(
        eps=[0.004, 0.05, 0.08, 0.05, 0.2, 0.01],
        confidence=[0.9998, 0.95, 0.80, 0.99, 0.5, 0.999],
        accuracy=[1.0, 0.90, 0.85, 0.98, 0.9, 0.99],
        count=[100, 100, 50, 20, 0, 100],
        alpha=0.25,
        eps_cap=0.1,
        rule="relative",
    ).numpy()
    # Scales max(1 - conf, 1 - acc, 1 / n): 0.01 (resolution), 0.10, 0.20,
    # 0.05 (resolution 1/20), -, 0.01. Steps 0.25 * gap / scale: -0.005,
    # +0.125, -0.0625, +0.05, (empty stratum keeps eps), +0.225.
    np.testing.assert_allclose(eps, [0.0, 0.1, 0.0175, 0.1, 0.2, 0.1], atol=1e-5)


def test_relative_eps_update_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    n = 200
    eps = rng.uniform(0, 0.3, n)
    confidence = rng.uniform(0.3, 1.0, n)
    accuracy = np.where(rng.uniform(size=n) < 0.3, 1.0, rng.uniform(0.3, 1.0, n))
    count = rng.integers(0, 120, n).astype(float)
    alpha, cap = 0.4, 0.25
    got = smoothing.update_eps(
        eps, confidence, accuracy, count, alpha, cap, rule="relative"
    ).numpy()
    additive = smoothing.update_eps(eps, confidence, accuracy, count, alpha, cap).numpy()
    for r in range(n):
        if count[r] == 0:
            want = eps[r]
        else:
            scale = max(1 - confidence[r], 1 - accuracy[r], 1 / count[r])
            want = min(max(eps[r] + alpha * (confidence[r] - accuracy[r]) / scale, 0.0), cap)
        np.testing.assert_allclose(got[r], want, atol=1e-5)
        # Same direction as the method's additive rule, never a longer way
        # than alpha, and the step is at least the additive one's.
        assert np.sign(got[r] - eps[r]) == np.sign(additive[r] - eps[r]) or got[r] == additive[r]
        assert abs(got[r] - eps[r]) <= alpha + 1e-6
        assert abs(got[r] - eps[r]) >= abs(additive[r] - eps[r]) - 1e-6


def test_eps_update_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match="rule must be one of additive, relative, shrunk"):
        smoothing.update_eps([0.1], [0.9], [0.8], [10], 0.5, 0.5, rule="log")


def test_stratum_calibration_hand_computed():
    count, confidence, accuracy = smoothing.stratum_calibration(
        [0, 0, 2], [0.9, 0.7, 0.6], [True, False, True], 3
    )
    np.testing.assert_allclose(count, [2, 0, 1])
    np.testing.assert_allclose(confidence, [0.8, 0, 0.6], atol=1e-6)
    np.testing.assert_allclose(accuracy, [0.5, 0, 1.0])


def test_stratum_counts_and_gap_standard_error_hand_computed():
    np.testing.assert_array_equal(smoothing.stratum_counts([1, 2, 3, 4, 5], [0, 3]), [1, 9, 5])
    error = smoothing.stratum_gap_standard_error(
        [0, 0, 0, 1], [0.9, 0.8, 0.6, 0.5], [1, 1, 0, 1], 2
    ).numpy()
    d = np.array([0.9 - 1, 0.8 - 1, 0.6 - 0])
    np.testing.assert_allclose(error[0], d.std(ddof=1) / np.sqrt(3), rtol=1e-5)
    assert np.isinf(error[1])  # one example: no estimate, so no move under "shrunk"


def test_shrunk_update_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    n = 100
    eps = rng.uniform(0, 0.3, n)
    confidence, accuracy = rng.uniform(0.3, 1.0, n), rng.uniform(0.3, 1.0, n)
    count = rng.integers(0, 60, n).astype(float)
    error = rng.uniform(0.0, 0.2, n)
    got = smoothing.update_eps(
        eps, confidence, accuracy, count, 0.5, 0.25, rule="shrunk", gap_standard_error=error
    ).numpy()
    for r in range(n):
        gap = confidence[r] - accuracy[r]
        step = np.sign(gap) * max(abs(gap) - 2 * error[r], 0.0)
        want = eps[r] if count[r] == 0 else min(max(eps[r] + 0.5 * step, 0.0), 0.25)
        np.testing.assert_allclose(got[r], want, atol=1e-6)
    with pytest.raises(ValueError, match="gap_standard_error"):
        smoothing.update_eps(eps, confidence, accuracy, count, 0.5, 0.25, rule="shrunk")


def _simulated_eps(rule, overconfidence, epochs=20, strata=5, per_stratum=50, seed=0):
    """eps per stratum after `epochs` updates from the validation statistics
    of a synthetic model: confidences c ~ U(0.5, 1), labels right with
    probability c - overconfidence (0: perfectly calibrated), new draws
    every epoch, as a fresh validation pass over a changing model sees."""
    rng = np.random.default_rng(seed)
    eps = np.full(strata, 0.05, np.float32)
    for _ in range(epochs):
        stratum = np.repeat(np.arange(strata), per_stratum)
        confidence = rng.uniform(0.5, 1.0, stratum.size)
        correct = rng.uniform(size=stratum.size) < confidence - overconfidence
        count, conf, acc = smoothing.stratum_calibration(stratum, confidence, correct, strata)
        error = smoothing.stratum_gap_standard_error(stratum, confidence, correct, strata)
        eps = smoothing.update_eps(
            eps, conf, acc, count, 1.0, 0.5, rule=rule, gap_standard_error=error
        ).numpy()
    return eps


def test_shrunk_update_holds_still_on_a_calibrated_model_and_rises_on_an_overconfident_one():
    drift = {
        rule: np.array([np.abs(_simulated_eps(rule, 0.0, seed=s) - 0.05) for s in range(10)])
        for rule in ("additive", "shrunk")
    }
    # Calibrated: the shrunk rule stays near 0.05 (a few moves past two
    # standard errors in 20 x 5 updates); the paper's rule chases the noise.
    assert drift["shrunk"].mean() <= 0.025 and drift["shrunk"].max() <= 0.08, drift["shrunk"]
    assert drift["additive"].mean() >= 5 * drift["shrunk"].mean()
    # Over-confident by 0.1 in every stratum: eps rises in every stratum.
    assert np.all(_simulated_eps("shrunk", 0.1) > 0.1)
