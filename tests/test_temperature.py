"""Temperature scaling: recovers a known temperature, lowers NLL, matches a grid search."""

import keras
import numpy as np
import pytest
import reference

from aradals_tf import metrics
from aradals_tf import temperature


@pytest.fixture(scope="module")
def overconfident():
    # Calibrated logits scaled up by 2.5: the right temperature is about 2.5.
    rng = np.random.default_rng(1)
    logits, labels = reference.calibrated_logits(rng, 4000, 10, scale=1.5)
    return 2.5 * logits, labels


def _grid_search(logits, labels):
    def nll_at(t):
        return reference.nll(labels, reference.softmax(logits.astype(np.float64) / t))

    grid = np.arange(0.5, 6.0, 0.01)
    best = grid[np.argmin([nll_at(t) for t in grid])]
    fine = np.arange(best - 0.01, best + 0.01, 1e-5)
    return fine[np.argmin([nll_at(t) for t in fine])]


def test_fit_matches_grid_search_and_lowers_nll(overconfident):
    logits, labels = overconfident
    fitted = temperature.fit_temperature(logits, labels)
    assert fitted == pytest.approx(_grid_search(logits, labels), abs=1e-3)
    assert fitted == pytest.approx(2.5, rel=0.1)
    before = float(metrics.negative_log_likelihood(labels, logits, from_logits=True))
    after = float(metrics.negative_log_likelihood(labels, logits / fitted, from_logits=True))
    assert after < before - 0.05
    ece_after = float(metrics.expected_calibration_error(labels, logits / fitted, from_logits=True))
    assert ece_after < float(metrics.expected_calibration_error(labels, logits, from_logits=True))


def test_underconfident_model_gets_temperature_below_one():
    rng = np.random.default_rng(2)
    logits, labels = reference.calibrated_logits(rng, 3000, 5, scale=3.0)
    fitted = temperature.fit_temperature(logits / 2.0, labels)
    assert fitted == pytest.approx(0.5, rel=0.1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_refused(bad):
    logits = np.zeros((4, 3), np.float32)
    logits[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        temperature.fit_temperature(logits, [0, 1, 2, 0])


def test_labels_out_of_range_are_refused():
    with pytest.raises(ValueError, match="out of range"):
        temperature.fit_temperature(np.zeros((2, 3)), [0, 3])


def test_layer_divides_and_round_trips(tmp_path, overconfident):
    logits, labels = overconfident
    layer = temperature.TemperatureScaling()
    fitted = layer.fit(logits[:1000], labels[:1000])
    np.testing.assert_allclose(layer(logits[:5]), logits[:5] / fitted, rtol=1e-6)
    inputs = keras.Input((10,))
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "ts.keras")
    reloaded = keras.models.load_model(tmp_path / "ts.keras")
    np.testing.assert_allclose(
        reloaded.predict(logits[:5], verbose=0), logits[:5] / fitted, rtol=1e-6
    )
    assert reloaded.layers[-1].get_config()["temperature"] == pytest.approx(fitted)
    with pytest.raises(ValueError, match="> 0"):
        temperature.TemperatureScaling(0.0)
