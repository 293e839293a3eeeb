"""The per-example score cache: its rotation against a hand-written schedule,
its stores, and AR-AdaLS training with it against training without it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aradals_tf import backbones
from aradals_tf import data
from aradals_tf import score_cache
from aradals_tf import training


def test_due_follows_the_rotation_and_scores_every_unscored_example():
    cache = score_cache.ScoreCache(size=10, rescore_every=3)
    index = tf.constant([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    # Nothing scored yet: everything is due.
    assert np.all(cache.due(index).numpy())
    bins = cache.merge(index, cache.due(index), tf.range(10) * 7)
    np.testing.assert_array_equal(bins, np.arange(10) * 7)
    np.testing.assert_array_equal(cache.bins.numpy(), np.arange(10) * 7)
    for epoch in range(1, 7):
        cache.advance_epoch()
        expected = [(i + epoch) % 3 == 0 for i in range(10)]
        np.testing.assert_array_equal(cache.due(index).numpy(), expected)


def test_merge_takes_fresh_bins_where_due_and_cached_ones_elsewhere():
    cache = score_cache.ScoreCache(size=6, rescore_every=2)
    cache.bins.assign([10.0, 11.0, 12.0, 13.0, score_cache.UNSCORED, 15.0])
    index = tf.constant([4, 1, 3, 0], tf.int64)
    due = tf.constant([True, False, True, False])
    bins = cache.merge(index, due, tf.constant([40, 30]))
    np.testing.assert_array_equal(bins, [40, 11, 30, 10])
    # Only the due examples' entries changed; the others (2, 5 not in the batch) kept.
    np.testing.assert_array_equal(cache.bins.numpy(), [10, 11, 12, 30, 40, 15])


def test_bad_settings_and_indices():
    with pytest.raises(ValueError, match="size"):
        score_cache.ScoreCache(size=0, rescore_every=2)
    with pytest.raises(ValueError, match="rescore_every"):
        score_cache.ScoreCache(size=5, rescore_every=0)
    cache = score_cache.ScoreCache(size=5, rescore_every=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="train_size"):
        cache.due(tf.constant([1, 5]))
    backbone = backbones.mlp((8, 8, 1), 10)
    with pytest.raises(ValueError, match="train_size"):
        training.ARAdaLSModel(backbone, 10, eps_max=0.3, rescore_every=2)
    with pytest.raises(ValueError, match="strata_by"):
        training.ARAdaLSModel(
            backbone, 10, eps_max=0.3, rescore_every=2, train_size=10, strata_by="margin"
        )


def test_index_examples_names_each_example_once():
    dataset = tf.data.Dataset.from_tensor_slices((np.arange(5.0), np.arange(5) * 2))
    rows = list(score_cache.index_examples(dataset).as_numpy_iterator())
    assert [(float(x), int(y), int(i)) for x, y, i in rows] == [(i, 2 * i, i) for i in range(5)]


def _fit(rescore_every, train_size, epochs, learning_rate, indexed=True, backbone=backbones.mlp):
    x, y = data.load_arrays("digits", "train")
    x, y = x[:300], y[:300]
    keras.utils.set_random_seed(0)
    model = training.ARAdaLSModel(
        backbone((8, 8, 1), 10),
        10,
        eps_max=0.3,
        attack_steps=5,
        num_strata=3,
        rescore_every=rescore_every,
        train_size=train_size,
    )
    model.stratum_eps.assign([0.3, 0.1, 0.0])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), metrics=["accuracy"])
    attacked = tf.Variable(0, dtype=tf.int32)
    scores = model.strata_scores

    def counting(inputs, training=False):  # how many examples the attack ran on
        attacked.assign_add(tf.shape(inputs)[0])
        return scores(inputs, training=training)

    model.strata_scores = counting
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if indexed:
        dataset = score_cache.index_examples(dataset)
    counts = []

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            counts.append(int(attacked.numpy()))
            attacked.assign(0)

    with pytest.warns(UserWarning, match="AdaptiveSmoothing"):
        history = model.fit(
            dataset.shuffle(300, seed=1).batch(64), epochs=epochs, verbose=0, callbacks=[Count()]
        )
    return model, counts, history


def test_training_attacks_each_example_once_every_k_epochs():
    model, counts, _ = _fit(rescore_every=3, train_size=300, epochs=4, learning_rate=0.05)
    schedule = [sum((i + epoch) % 3 == 0 for i in range(300)) for epoch in range(1, 4)]
    assert counts == [300, *schedule]
    assert float(tf.reduce_min(model.score_cache.bins)) >= 0  # every example scored


def test_batches_with_nothing_due_train_a_convolutional_backbone():
    """k = 300: in the second epoch one example of 300 is due, so most
    batches attack nothing (TF's Conv2D fails on an empty batch)."""
    _, counts, _ = _fit(300, 300, epochs=2, learning_rate=0.05, backbone=backbones.small_cnn)
    assert counts == [300, 1]


def test_with_a_fixed_model_cached_scores_give_the_uncached_training():
    """Learning rate 0: the scores cannot go stale, so the cached run's
    strata (counted per stratum) and loss equal the uncached run's."""
    cached, _, cached_history = _fit(3, 300, epochs=3, learning_rate=0.0)
    plain, _, plain_history = _fit(1, None, epochs=3, learning_rate=0.0, indexed=False)
    for r in range(3):
        assert cached_history.history[f"stratum{r}_train_count"] == pytest.approx(
            plain_history.history[f"stratum{r}_train_count"]
        )
    np.testing.assert_allclose(
        cached_history.history["loss"], plain_history.history["loss"], rtol=1e-5
    )


def test_rescore_every_one_with_a_cache_trains_exactly_as_without():
    with_cache, _, _ = _fit(1, 300, epochs=2, learning_rate=0.05)
    without, _, _ = _fit(1, None, epochs=2, learning_rate=0.05, indexed=False)
    for a, b in zip(with_cache.backbone.get_weights(), without.backbone.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unindexed_batches_give_a_clear_error():
    with pytest.raises(ValueError, match="index_examples"):
        _fit(rescore_every=2, train_size=300, epochs=1, learning_rate=0.05, indexed=False)
