"""Every Keras object the package registers round-trips.

`get_config` -> `from_config` gives the same config, and a save/load (a
`.keras` archive for models and layers, Keras's serialisation for losses and
metrics) gives the same outputs and the same state. The list of registered
classes is read from Keras's registry, so a new class without a case here
fails `test_every_registered_class_has_a_case`.
"""

import importlib
import pkgutil

import keras
import numpy as np
import pytest

import aradals_tf
from aradals_tf import backbones
from aradals_tf import ensemble
from aradals_tf import losses
from aradals_tf import metrics
from aradals_tf import mixup
from aradals_tf import scores
from aradals_tf import temperature
from aradals_tf import training

SHAPE = (8, 8, 1)
rng = np.random.default_rng(0)
IMAGES = rng.uniform(size=(16, *SHAPE)).astype("float32")
LABELS = rng.integers(0, 10, size=16).astype("int32")
LOGITS = rng.normal(size=(16, 10)).astype("float32") * 3


def _registered():
    for module in pkgutil.walk_packages(aradals_tf.__path__, "aradals_tf."):
        importlib.import_module(module.name)
    prefix = "aradals_tf>"
    return {
        name[len(prefix) :]: cls
        for name, cls in keras.saving.get_custom_objects().items()
        if name.startswith(prefix)
    }


def _mlp(seed):
    keras.utils.set_random_seed(seed)
    return backbones.mlp(SHAPE, 10)


def _ar_adals():
    model = training.ARAdaLSModel(
        _mlp(0), 10, eps_max=0.3, num_strata=3, attack_steps=4, alpha=0.5, eps_cap=0.2
    )
    model(IMAGES[:1])
    # State that must survive a save: not the initial values.
    model.stratum_eps.assign([0.2, 0.05, 0.0])
    return model


def _ar_adals_with_score_cache():
    model = training.ARAdaLSModel(
        _mlp(4), 10, strata_by="confidence", num_strata=2, rescore_every=3, train_size=16,
        eps_update="shrunk",
    )  # fmt: skip
    model(IMAGES[:1])
    model.score_cache.bins.assign(np.arange(16, dtype="int32") * 5)
    model.score_cache.histogram.assign(np.bincount(np.arange(16) * 5, minlength=2048))
    model.score_cache.epoch.assign(7)
    model.strata.scoring_from_epoch.assign(2)
    model.strata.train_count.assign([3.0, 4.0])
    return model


def _joint_ensemble():
    model = ensemble.EnsembleARAdaLSModel([_mlp(1), _mlp(2)], 10, eps_max=0.3, num_strata=2)
    model(IMAGES[:1])
    model.stratum_eps.assign([0.1, 0.03])
    return model


def _statistics():
    from aradals_tf import eps_rules

    strata = np.repeat(np.arange(4), 4)
    confidence = np.linspace(0.5, 1.0, 16)
    return eps_rules.ValidationStatistics(
        strata, (strata + 0.5) / 4, confidence, (np.arange(16) % 3 > 0).astype(float), 4
    )


def _rule_outputs(rule):
    return rule.update([0.05, 0.1, 0.0, 0.2], _statistics())


def _score_outputs(source):
    return np.asarray(source(_mlp(7), IMAGES)[0])


def _temperature_model():
    inputs = keras.Input((10,))
    return keras.Model(inputs, temperature.TemperatureScaling(1.7)(inputs))


def _rule(name, **settings):
    from aradals_tf import eps_rules

    return getattr(eps_rules, name)(**settings)


# name -> (object to round-trip, how its outputs are computed)
CASES = {
    "TemperatureScaling": (lambda: temperature.TemperatureScaling(1.7), None),
    "LogitEnsemble": (lambda: ensemble.LogitEnsemble([_mlp(1), _mlp(2)]), None),
    "EnsembleARAdaLSModel": (_joint_ensemble, None),
    "ARAdaLSModel": (_ar_adals, None),
    # The cache and the strata are parts of the model that owns them.
    "ScoreCache": (_ar_adals_with_score_cache, None),
    "RobustnessStrata": (_ar_adals_with_score_cache, None),
    "ScoreSource": (
        lambda: scores.ScoreSource("attack", eps_max=0.2, attack_steps=3),
        _score_outputs,
    ),
    "PooledRule": (lambda: _rule("PooledRule", alpha=0.7, max_step=0.3), _rule_outputs),
    "LogProbabilities": (
        lambda: __import__("aradals_tf.export.models").export.models.LogProbabilities(),
        lambda layer: np.asarray(layer(np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True))),
    ),
    "AdditiveRule": (lambda: _rule("AdditiveRule", eps_cap=0.15), _rule_outputs),
    "ShrunkRule": (lambda: _rule("ShrunkRule", standard_errors=0.5), _rule_outputs),
    "RelativeRule": (lambda: _rule("RelativeRule", alpha=0.3), _rule_outputs),
    "MixupModel": (lambda: mixup.MixupModel(_mlp(3), 10, alpha=0.4, seed=5), None),
    "SoftTargetCrossentropy": (losses.SoftTargetCrossentropy, lambda loss: loss(LABELS, LOGITS)),
    "SparseLabelSmoothingCrossentropy": (
        lambda: losses.SparseLabelSmoothingCrossentropy(0.07),
        lambda loss: loss(LABELS, LOGITS),
    ),
    "SparseFocalCrossentropy": (
        lambda: losses.SparseFocalCrossentropy(2.5),
        lambda loss: loss(LABELS, LOGITS),
    ),
    "ExpectedCalibrationError": (
        lambda: metrics.ExpectedCalibrationError(num_bins=7, from_logits=True),
        lambda metric: (metric.update_state(LABELS, LOGITS), metric.result())[1],
    ),
}


def test_every_registered_class_has_a_case():
    assert set(_registered()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trip(name):
    original = CASES[name][0]()
    config = original.get_config()
    clone = type(original).from_config(config)
    assert clone.get_config() == config


def _state(model):
    state = {}
    if getattr(model, "stratum_eps", None) is not None:
        state["stratum_eps"] = np.asarray(model.stratum_eps)
    if getattr(model, "strata", None) is not None:
        for variable in model.strata.variables:
            state[variable.path.split("/", 1)[-1]] = np.asarray(variable)
    return state


@pytest.mark.parametrize("name", sorted(CASES))
def test_save_and_load_give_the_same_outputs(name, tmp_path):
    make, outputs_of = CASES[name]
    original = make()
    if outputs_of is not None:  # losses and metrics
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(original)
        )
        assert type(restored) is type(original)
        np.testing.assert_allclose(outputs_of(restored), outputs_of(make()), rtol=1e-6)
        return
    model = _temperature_model() if name == "TemperatureScaling" else original
    expected = np.asarray(model(IMAGES if name != "TemperatureScaling" else LOGITS))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(
        np.asarray(loaded(IMAGES if name != "TemperatureScaling" else LOGITS)), expected, rtol=1e-6
    )
    for key, value in _state(model).items():
        np.testing.assert_array_equal(_state(loaded)[key], value)
    if name == "TemperatureScaling":
        # The layer divides by T: the outputs are not the inputs.
        np.testing.assert_allclose(expected, LOGITS / 1.7, rtol=1e-6)


def test_a_model_saved_by_the_method_issue_version_still_loads():
    """tests/data/ar_adals_v3_9eeeb91.keras was trained and saved by commit
    9eeeb91 (the AR-AdaLS v3 method, before the core's split was finished):
    today's code loads it with its eps, score cache and outputs."""
    import json
    import os

    from aradals_tf import data

    folder = os.path.join(os.path.dirname(__file__), "data")
    model = keras.models.load_model(os.path.join(folder, "ar_adals_v3_9eeeb91.keras"))
    with open(os.path.join(folder, "ar_adals_v3_9eeeb91.json")) as stream:
        saved = json.load(stream)
    assert isinstance(model, training.ARAdaLSModel) and model.eps_update == "additive"
    np.testing.assert_allclose(model.stratum_eps.numpy(), saved["eps"])
    np.testing.assert_array_equal(model.score_cache.bins.numpy(), saved["cache_bins"])
    assert int(model.score_cache.histogram.numpy().sum()) == saved["histogram_sum"]
    assert int(model.score_cache.epoch.numpy()) == saved["epoch"]
    images = data.load_arrays("digits", "test")[0][:8]
    np.testing.assert_allclose(model.predict(images, verbose=0), saved["logits"], atol=1e-5)
