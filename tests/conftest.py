"""Shared test setup: quiet TensorFlow, fixed seeds, a scratch directory."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def mnist5k_cnn():
    """A vanilla small CNN trained 5 epochs on mnist5k (seed 0), and the data."""
    import keras

    from aradals_tf import backbones
    from aradals_tf import data

    keras.utils.set_random_seed(0)
    train_x, train_y = data.load_arrays("mnist5k", "train")
    model = backbones.small_cnn()
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(train_x, train_y, batch_size=128, epochs=5, verbose=0)
    return model
