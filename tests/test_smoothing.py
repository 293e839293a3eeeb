"""Soft labels against hand-computed values."""

import numpy as np

from aradals_tf import smoothing


def test_scalar_eps_hand_computed():
    targets = smoothing.soft_labels([1, 0], 4, 0.2).numpy()
    np.testing.assert_allclose(targets, [[0.05, 0.85, 0.05, 0.05], [0.85, 0.05, 0.05, 0.05]], atol=1e-7)


def test_per_example_eps_hand_computed():
    targets = smoothing.soft_labels([2, 0, 1], 3, [0.0, 0.3, 1.0]).numpy()
    np.testing.assert_allclose(
        targets, [[0, 0, 1], [0.8, 0.1, 0.1], [1 / 3, 1 / 3, 1 / 3]], atol=1e-7
    )
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-7)
