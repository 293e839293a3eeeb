"""Soft labels, thresholds and strata against hand-computed values (the eps
rules have their own module, test_eps_rules)."""

import numpy as np

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


def test_stratum_counts_hand_computed():
    np.testing.assert_array_equal(smoothing.stratum_counts([1, 2, 3, 4, 5], [0, 3]), [1, 9, 5])
