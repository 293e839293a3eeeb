"""Logit ensembles and AR-AdaLS for ensembles."""

import os

import keras
import numpy as np
import pytest
import reference
import tensorflow as tf

from aradals_tf import backbones
from aradals_tf import data
from aradals_tf import ensemble
from aradals_tf import experiments
from aradals_tf import first_order
from aradals_tf import robustness
from aradals_tf import score_cache
from aradals_tf import smoothing
from aradals_tf import temperature


def _members(count=3, shape=(8, 8, 1)):
    members = []
    for seed in range(count):
        keras.utils.set_random_seed(seed)
        members.append(backbones.mlp(shape, 10))
    return members


@pytest.fixture(scope="module")
def digits():
    return {split: data.load_arrays("digits", split) for split in data.SPLITS}


def test_logits_are_the_mean_of_member_logits(digits):
    members = _members()
    x = digits["test"][0][:50]
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.LogitEnsemble(members)(x), expected, atol=1e-6)
    probabilities = ensemble.LogitEnsemble(members, average="probabilities")(x)
    expected_probs = np.mean(
        [reference.softmax(m.predict(x, verbose=0).astype(np.float64)) for m in members], axis=0
    )
    np.testing.assert_allclose(tf.nn.softmax(probabilities), expected_probs, atol=1e-6)


def test_round_trip_and_use_as_a_single_model(digits, tmp_path):
    members = _members()
    model = ensemble.LogitEnsemble(members)
    path = tmp_path / "ensemble.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x, y = digits["test"]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert loaded.get_config()["average"] == "logits" and len(loaded.members) == 3
    # evaluate, robustness and temperature scaling take it like any model.
    loaded.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logits = loaded.predict(x, verbose=0).astype(np.float64)
    expected_nll = reference.nll(y, reference.softmax(logits))
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(expected_nll, rel=1e-4)
    # The attack sees the ensemble: its levels are those of a plain model with the same logits.
    _, level = robustness.adversarial_robustness(loaded, x[:20], eps_max=0.3, steps=4)
    plain = keras.Model(loaded.members[0].inputs, loaded(loaded.members[0].inputs))
    _, plain_level = robustness.adversarial_robustness(plain, x[:20], eps_max=0.3, steps=4)
    np.testing.assert_array_equal(level, plain_level)
    # Temperature scaling: the NLL-minimising T of a fine grid.
    grid = np.geomspace(0.05, 20, 4000)
    nll = [reference.nll(y, reference.softmax(logits / t)) for t in grid]
    fitted = temperature.fit_temperature(logits.astype(np.float32), y)
    assert fitted == pytest.approx(grid[int(np.argmin(nll))], rel=5e-3)


def test_bad_members_are_refused():
    with pytest.raises(ValueError, match="input shape"):
        ensemble.LogitEnsemble([backbones.mlp((8, 8, 1), 10), backbones.mlp((28, 28, 1), 10)])
    with pytest.raises(ValueError, match="number of classes"):
        ensemble.LogitEnsemble([backbones.mlp((8, 8, 1), 10), backbones.mlp((8, 8, 1), 5)])
    with pytest.raises(ValueError, match="average"):
        ensemble.LogitEnsemble(_members(1), average="median")
    with pytest.raises(ValueError, match="non-empty"):
        ensemble.LogitEnsemble([])


@pytest.mark.parametrize("source", ["attack", "first_order", "confidence"])
def test_ensemble_aware_step_uses_ensemble_strata_and_member_losses(digits, source):
    x, y = digits["train"][0][:64], digits["train"][1][:64]
    attack = {"eps_max": 0.3, "attack_steps": 5} if source == "attack" else {}
    model = ensemble.EnsembleARAdaLSModel(
        _members(), 10, num_strata=3, strata_by=source, rescore_every=1, train_size=64, **attack
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    # Scores come from the ensemble's averaged logits.
    logits = np.asarray(model.backbone(x), np.float64)
    radius = None
    if source == "attack":
        radius, _ = robustness.adversarial_robustness(model.backbone, x, eps_max=0.3, steps=5)
    elif source == "first_order":
        radius, _ = first_order.first_order_radius(model.backbone, x)
    bins = reference.score_bins(source, logits, None if radius is None else radius.numpy())
    # A cache holding these very scores: its tertiles are the thresholds.
    model.score_cache.bins.assign(bins.astype(np.int32))
    model.score_cache.histogram.assign(np.bincount(bins, minlength=2048))
    model.strata.scoring_from_epoch.assign(0)
    thresholds = np.sort(bins)[[21, 42]]
    strata = smoothing.assign_strata(bins, thresholds).numpy()
    assert len(set(strata)) > 1
    model.stratum_eps.assign([0.3, 0.1, 0.0])
    eps = np.array([0.3, 0.1, 0.0])[strata]
    targets = (1 - eps[:, None]) * np.eye(10)[y] + eps[:, None] / 10
    member_losses = [
        np.mean(
            -np.sum(
                targets * np.log(reference.softmax(m.predict(x, verbose=0).astype(np.float64))),
                axis=1,
            )
        )
        for m in model.backbone.members
    ]
    logs = model.train_on_batch(score_cache.with_index(x, np.arange(64)), y, return_dict=True)
    assert logs["loss"] == pytest.approx(np.mean(member_losses), rel=1e-4)
    # The step assigned (and counted) the ensemble's strata.
    np.testing.assert_array_equal(
        model.strata.train_count.numpy(), np.bincount(strata, minlength=3)
    )


def test_independent_ensemble_resumes_without_retraining_finished_members(tmp_path, monkeypatch):
    from aradals_tf.experiments import train as train_module

    config = experiments.TrainConfig(dataset="digits", method="vanilla", epochs=2, ensemble_size=3)
    out = str(tmp_path / "ensemble")
    fits = []
    original_fit = train_module._fit

    def failing_fit(config, model, *args, **kwargs):
        fits.append(model.name)
        if len(fits) == 2:
            raise KeyboardInterrupt("killed during member 2")
        return original_fit(config, model, *args, **kwargs)

    monkeypatch.setattr(train_module, "_fit", failing_fit)
    with pytest.raises(KeyboardInterrupt):
        experiments.train_run(config, out, verbose=0)
    assert not os.path.exists(out)  # no half-written run directory
    member0 = keras.models.load_model(tmp_path / ".ensemble.members" / "member0" / "model.keras")
    fits.clear()
    monkeypatch.setattr(
        train_module, "_fit", lambda *a, **k: (fits.append(1), original_fit(*a, **k))[1]
    )
    history = experiments.train_run(config, out, verbose=0)
    assert len(fits) == 2  # members 1 and 2 only
    assert sorted(history) == ["member0", "member1", "member2"]
    _, model = experiments.load_run(out)
    assert isinstance(model, ensemble.LogitEnsemble) and len(model.members) == 3
    for saved, reloaded in zip(member0.get_weights(), model.members[0].get_weights()):
        np.testing.assert_array_equal(saved, reloaded)
    assert not os.path.exists(tmp_path / ".ensemble.members")
