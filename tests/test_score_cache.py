"""The per-example score cache: its rotation against a hand-written schedule,
its stores and histogram against numpy, and training with it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aradals_tf import adaptive_smoothing
from aradals_tf import backbones
from aradals_tf import data
from aradals_tf import score_cache
from aradals_tf import scores
from aradals_tf import training


def _histogram_of(cache):
    bins = cache.bins.numpy()
    return np.bincount(bins[bins >= 0], minlength=scores.SCORE_BINS)


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


def test_merge_takes_fresh_bins_where_due_and_keeps_the_histogram_of_the_cache():
    cache = score_cache.ScoreCache(size=6, rescore_every=2)
    cache.bins.assign([10, 11, 12, 13, score_cache.UNSCORED, 15])
    cache.histogram.assign(_histogram_of(cache))
    index = tf.constant([4, 1, 3, 0], tf.int64)
    due = tf.constant([True, False, True, False])
    bins = cache.merge(index, due, tf.constant([40, 30]))
    np.testing.assert_array_equal(bins, [40, 11, 30, 10])
    # Only the due examples' entries changed; the others (2, 5 not in the batch) kept.
    np.testing.assert_array_equal(cache.bins.numpy(), [10, 11, 12, 30, 40, 15])
    np.testing.assert_array_equal(cache.histogram.numpy(), _histogram_of(cache))


def test_an_example_twice_in_a_batch_is_stored_once():
    """A repeated index used to make the store sum its two deltas (bin 80
    for a fresh 40) and the histogram count it twice."""
    cache = score_cache.ScoreCache(size=6, rescore_every=2)
    index = tf.constant([4, 4, 2], tf.int64)
    cache.merge(index, tf.constant([True, True, True]), tf.constant([40, 40, 7]))
    np.testing.assert_array_equal(cache.bins.numpy(), [-1, -1, 7, -1, 40, -1])
    assert cache.histogram.numpy().sum() == 2
    np.testing.assert_array_equal(cache.histogram.numpy(), _histogram_of(cache))
    cache.advance_epoch()  # rescored: the example moves bins, counted once still
    cache.merge(index, tf.constant([True, True, False]), tf.constant([9, 9]))
    np.testing.assert_array_equal(cache.bins.numpy()[[2, 4]], [7, 9])
    np.testing.assert_array_equal(cache.histogram.numpy(), _histogram_of(cache))


def test_due_indices_and_store_agree_with_the_step_rotation_and_its_histogram():
    cache = score_cache.ScoreCache(size=10, rescore_every=3)
    index = tf.range(10, dtype=tf.int64)
    np.testing.assert_array_equal(cache.due_indices(), np.arange(10))  # nothing scored
    cache.store([2, 5, 9], [7, 7, 100])
    np.testing.assert_array_equal(cache.histogram.numpy(), _histogram_of(cache))
    assert cache.histogram.numpy()[7] == 2 and cache.histogram.numpy().sum() == 3
    cache.store(np.arange(10), np.arange(10) * 3)
    for _ in range(5):
        cache.advance_epoch()
        np.testing.assert_array_equal(cache.due_indices(), np.flatnonzero(cache.due(index).numpy()))
    cache.store([0, 0], [1, 1])
    np.testing.assert_array_equal(cache.histogram.numpy(), _histogram_of(cache))


def test_bad_settings_and_indices():
    with pytest.raises(ValueError, match="size"):
        score_cache.ScoreCache(size=0, rescore_every=2)
    with pytest.raises(ValueError, match="rescore_every"):
        score_cache.ScoreCache(size=5, rescore_every=0)
    cache = score_cache.ScoreCache(size=5, rescore_every=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="train_size"):
        cache.due(tf.constant([1, 5]))


def test_index_examples_names_each_example_once_and_keeps_sample_weights():
    dataset = tf.data.Dataset.from_tensor_slices((np.arange(5.0), np.arange(5) * 2))
    rows = list(score_cache.index_examples(dataset).as_numpy_iterator())
    assert [(float(x["inputs"]), int(y), int(x["example_index"])) for x, y in rows] == [
        (i, 2 * i, i) for i in range(5)
    ]
    weighted = tf.data.Dataset.from_tensor_slices((np.arange(3.0), np.arange(3), np.ones(3) / 2))
    rows = list(score_cache.index_examples(weighted).as_numpy_iterator())
    assert [len(row) for row in rows] == [3, 3, 3] and rows[2][2] == 0.5
    assert score_cache.split_index(rows[1][0])[1] == 1


class _CountingSource:
    """Wraps a score source, counting the examples it scores."""

    def __init__(self, source):
        self.source = source
        self.scored = tf.Variable(0, dtype=tf.int32)

    def __getattr__(self, name):
        return getattr(self.source, name)

    def __call__(self, backbone, x):
        self.scored.assign_add(tf.shape(x)[0])
        return self.source(backbone, x)


def _fit(
    rescore_every, epochs, learning_rate, backbone=backbones.mlp, size=300, scoring_data="auto"
):
    x, y = data.load_arrays("digits", "train")
    x, y = x[:size], y[:size]
    keras.utils.set_random_seed(0)
    model = training.ARAdaLSModel(
        backbone((8, 8, 1), 10),
        10,
        eps_max=0.3,
        attack_steps=5,
        num_strata=3,
        rescore_every=rescore_every,
        eps_init=0.1,
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), metrics=["accuracy"])
    model.build_strata(3, size)
    counting = _CountingSource(model.strata.source)
    model.strata.source = counting
    counts = []

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            counts.append(int(counting.scored.numpy()))
            counting.scored.assign(0)

    validation = data.load_arrays("digits", "validation")
    history = model.fit(
        x,
        y,
        batch_size=64,
        epochs=epochs,
        verbose=0,
        callbacks=[adaptive_smoothing.AdaptiveSmoothing(validation), Count()],
        scoring_data=scoring_data,
    )
    return model, counts, history


def test_training_scores_from_the_first_update_then_every_k_epochs():
    """Warm-up epoch 0 scores nothing, epoch 1 every example (none has a
    score), then each example once every k epochs."""
    model, counts, _ = _fit(rescore_every=3, epochs=5, learning_rate=0.05)
    schedule = [sum((i + epoch) % 3 == 0 for i in range(300)) for epoch in range(2, 5)]
    assert counts == [0, 300, *schedule]
    assert int(tf.reduce_min(model.score_cache.bins)) >= 0  # every example scored
    np.testing.assert_array_equal(
        model.score_cache.histogram.numpy(), _histogram_of(model.score_cache)
    )


def test_batches_with_nothing_due_train_a_convolutional_backbone():
    """k = 300: in the third epoch one example of 300 is due, so most batches
    score nothing (TF's Conv2D fails on an empty batch)."""
    _, counts, _ = _fit(300, epochs=3, learning_rate=0.05, backbone=backbones.small_cnn)
    assert counts == [0, 300, 1]


def test_with_a_fixed_model_cached_scores_give_the_strata_of_fresh_ones():
    """Learning rate 0: the scores cannot go stale, so the cached run's
    strata (counted as assigned) and loss equal those of a run that scores
    every example every epoch; with the cache full, strata hold equal shares."""
    cached, _, cached_history = _fit(3, epochs=4, learning_rate=0.0)
    fresh, _, fresh_history = _fit(1, epochs=4, learning_rate=0.0)
    for r in range(3):
        key = f"stratum{r}_train_count"
        np.testing.assert_array_equal(
            cached_history.history[key][2:], fresh_history.history[key][2:]
        )
        assert cached_history.history[key][3] == pytest.approx(100, abs=2)
    np.testing.assert_allclose(
        cached_history.history["loss"], fresh_history.history["loss"], rtol=1e-5
    )


def test_scoring_before_each_epoch_stores_what_the_steps_would_score():
    """Learning rate 0: the pass before each epoch (the default with arrays)
    and the steps' own scoring (`scoring_data=None`) store the same bins,
    histogram and losses; with the cache full, strata hold equal shares."""
    before, counts, before_history = _fit(3, epochs=4, learning_rate=0.0)
    in_steps, _, steps_history = _fit(3, epochs=4, learning_rate=0.0, scoring_data=None)
    assert not before.strata.score_in_steps and in_steps.strata.score_in_steps
    schedule = [sum((i + epoch) % 3 == 0 for i in range(300)) for epoch in range(2, 4)]
    assert counts == [0, 300, *schedule]
    np.testing.assert_array_equal(
        before.score_cache.bins.numpy(), in_steps.score_cache.bins.numpy()
    )
    np.testing.assert_array_equal(
        before.score_cache.histogram.numpy(), _histogram_of(before.score_cache)
    )
    np.testing.assert_allclose(
        before_history.history["loss"], steps_history.history["loss"], rtol=1e-5
    )
    for r in range(3):
        # Before the epoch the thresholds are cut from every fresh score at once.
        assert before_history.history[f"stratum{r}_train_count"][1] == pytest.approx(100, abs=2)


def test_a_finite_dataset_is_scored_before_each_epoch_like_its_arrays():
    x, y = data.load_arrays("digits", "train")
    x, y = x[:300], y[:300]
    validation = data.load_arrays("digits", "validation")
    cached = []
    for how in ("arrays", "dataset", "repeating"):
        keras.utils.set_random_seed(0)
        model = training.ARAdaLSModel(
            backbones.mlp((8, 8, 1), 10), 10, eps_max=0.3, attack_steps=5, num_strata=3,
            rescore_every=2, train_size=300,
        )  # fmt: skip
        model.compile(optimizer=keras.optimizers.SGD(0.0))
        callbacks = [adaptive_smoothing.AdaptiveSmoothing(validation)]
        indexed = score_cache.index_examples(tf.data.Dataset.from_tensor_slices((x, y)))
        if how == "arrays":
            model.fit(x, y, batch_size=64, epochs=3, verbose=0, callbacks=callbacks)
        elif how == "dataset":
            model.fit(
                indexed.shuffle(300, seed=1).batch(64), epochs=3, verbose=0, callbacks=callbacks
            )
        else:  # repeats: the steps score, unless the examples are given
            batches = indexed.shuffle(300, seed=1).batch(60).repeat()
            model.fit(batches, epochs=3, steps_per_epoch=5, verbose=0, callbacks=callbacks)
            assert model.strata.score_in_steps
            model.fit(
                batches, epochs=3, steps_per_epoch=5, verbose=0, callbacks=callbacks,
                scoring_data=indexed,
            )  # fmt: skip
            assert not model.strata.score_in_steps
            with pytest.raises(ValueError, match="finite dataset"):
                model.fit(batches, epochs=1, steps_per_epoch=5, scoring_data=indexed.repeat())
        cached.append(model.score_cache.bins.numpy())
    assert cached[0].min() >= 0
    np.testing.assert_array_equal(cached[0], cached[1])
    np.testing.assert_array_equal(cached[0], cached[2])
