"""A per-example cache of training robustness scores, refreshed on a rotation.

Scoring (the attack above all) is the costly part of an AR-AdaLS step. With
`rescore_every=k` each training example is scored once every k epochs
(example `i` in the epochs `e` with `(i + e) % k == 0`, and whenever it has
no score yet); in between, its stratum comes from its cached score. Since
batches are shuffled, about 1/k of every batch is scored. The cache also
keeps the histogram of the scores it holds: the stratum thresholds are its
quantiles, so they are cut from the very scores the examples are bucketed
with.

Examples are named by an integer index that travels with them in the
inputs: `index_examples` turns a dataset of `(x, y[, sample_weight])` into
one of `({"inputs": x, "example_index": i}, y[, sample_weight])`, and
`ARAdaLSModel.fit` does the same for arrays. The cache is state in
variables, so it is saved with the model, restored by `BackupAndRestore`
and mirrored under `tf.distribute`: each step all-gathers its batch's
indices and bins (12 bytes per example, whatever the training set's size)
and every replica writes the same rows.
"""

import keras
import numpy as np
import tensorflow as tf

from aradals_tf.scores import SCORE_BINS

# Cache value of an example that has not been scored yet.
UNSCORED = -1
# The keys of an indexed batch's inputs.
INPUTS = "inputs"
INDEX = "example_index"


def add_across_replicas(variable, delta):
    """Adds the sum over replicas of `delta` to `variable`, on every replica.

    Keras's `assign_add` is `assign(variable + delta)`, which a variable with
    `aggregation="sum"` would sum across replicas, old value included (twice
    the old value with two replicas). Here the deltas are all-reduced first;
    the variable (`aggregation="only_first_replica"`) then takes the one
    identical new value. Outside a strategy the all-reduce is the identity.

    Args:
        variable: a Keras variable with `aggregation="only_first_replica"`.
        delta: a tensor of its shape: this replica's contribution.
    """
    context = tf.distribute.get_replica_context()
    if context is not None:  # None in a cross-replica context: one update
        delta = context.all_reduce(tf.distribute.ReduceOp.SUM, delta)
    variable.assign(variable + delta)


def _gather_across_replicas(value):
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_gather(value, axis=0)


def with_index(x, index):
    """Inputs that carry each example's index: `{"inputs": x, "example_index": index}`
    (a dict of inputs gains the `"example_index"` key)."""
    if isinstance(x, dict):
        return {**x, INDEX: index}
    return {INPUTS: x, INDEX: index}


def split_index(x):
    """`(inputs, index)` of possibly indexed inputs; index None where there is none."""
    if not isinstance(x, dict) or INDEX not in x:
        return x, None
    rest = {key: value for key, value in x.items() if key != INDEX}
    return (rest[INPUTS] if set(rest) == {INPUTS} else rest), x[INDEX]


def index_examples(dataset):
    """Names each example by its position in the data, as an input.

    `(x, y[, w]) -> ({"inputs": x, "example_index": i}, y[, w])`.

    Call it on the unbatched, unshuffled training dataset, so that an index
    names the same example in every epoch; shuffle and batch afterwards.

    Args:
        dataset: a `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)`.

    Returns:
        The indexed dataset, index int64.

    Example:

    >>> train = index_examples(train).shuffle(4000).batch(128)
    """
    return dataset.enumerate().map(
        lambda index, example: (with_index(example[0], index), *example[1:]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


@keras.saving.register_keras_serializable(package="aradals_tf")
class ScoreCache(keras.layers.Layer):
    """Cached score bins of `size` training examples, and their histogram.

    Args:
        size: the number of training examples (indices `0..size-1`).
        rescore_every: k >= 1, the epochs between two scorings of an example.
        **kwargs: base `Layer` arguments.

    Example:

    ```python
    cache = ScoreCache(size=4000, rescore_every=8)
    due = cache.due(index)                  # which examples to score now
    bins = cache.merge(index, due, fresh)   # every example's bin; stores the fresh ones
    cache.advance_epoch()                   # at each epoch's end
    ```
    """

    def __init__(self, size, rescore_every, **kwargs):
        super().__init__(**kwargs)
        if isinstance(size, bool) or int(size) != size or int(size) < 1:
            raise ValueError(f"The score cache needs size >= 1 (training examples); got {size!r}.")
        self.size = int(size)
        self.rescore_every = check_rescore_every(rescore_every)
        # Written through scatter updates that every replica makes alike.
        self.bins = self.add_weight(
            shape=(self.size,),
            initializer=keras.initializers.Constant(UNSCORED),
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
            name="bins",
        )
        self.histogram = self.add_weight(
            shape=(SCORE_BINS,),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
            name="histogram",
        )
        self.epoch = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", trainable=False, name="epoch"
        )
        self.built = True

    def check_index(self, index):
        """int64 `[n]` indices, asserted within `[0, size)`."""
        index = tf.cast(tf.reshape(index, [-1]), tf.int64)
        tf.debugging.assert_less(
            index,
            tf.constant(self.size, tf.int64),
            message=f"An example index is >= the score cache's size ({self.size}): pass "
            "train_size = the number of training examples.",
        )
        tf.debugging.assert_non_negative(index, message="Example indices must be >= 0.")
        return index

    def due(self, index):
        """Bool `[n]`: the examples of a batch to score in this epoch."""
        index = self.check_index(index)
        rotation = tf.equal((index + self.epoch) % self.rescore_every, 0)
        return rotation | tf.equal(tf.gather(self.bins, index), UNSCORED)

    def merge(self, index, due, fresh_bins):
        """The batch's bins (fresh where `due`, cached elsewhere); stores the fresh ones.

        Every replica's batch rows are gathered (index and bin, the rows not
        due marked -1) and the due ones written on every replica (an index
        seen twice keeps its first row); the histogram moves each rewritten
        example from its old bin to its new one: a step exchanges 12 bytes per
        example of the batch, whatever the training set's size.

        Args:
            index: int `[n]`, the batch's example indices.
            due: bool `[n]` from `due`.
            fresh_bins: int `[m]`, the bins of the `m` due examples, in order.

        Returns:
            int32 `[n]`: every example's bin.
        """
        index = self.check_index(index)
        fresh_bins = tf.cast(fresh_bins, tf.int32)
        bins = tf.tensor_scatter_nd_update(tf.gather(self.bins, index), tf.where(due), fresh_bins)
        # Rows of the whole batch, those not due marked -1: the same shape on every
        # replica (MultiWorkerMirroredStrategy's all-gather fails on uneven ones).
        all_index = _gather_across_replicas(tf.where(due, index, -1))
        all_bins = _gather_across_replicas(bins)
        keep = all_index >= 0
        all_index, all_bins = tf.boolean_mask(all_index, keep), tf.boolean_mask(all_bins, keep)
        unique, position = tf.unique(all_index)
        first = tf.math.unsorted_segment_min(
            tf.range(tf.shape(all_index)[0]), position, tf.shape(unique)[0]
        )
        new = tf.gather(all_bins, first)
        old = tf.gather(self.bins, unique)
        self.histogram.assign(self.histogram + _counts(new) - _counts(old))
        self.bins.value.scatter_update(tf.IndexedSlices(new, unique))
        return bins

    def due_indices(self):
        """int64 `[m]`: the training examples due this epoch (`due` over all), on the host."""
        bins = self.bins.numpy()
        index = np.arange(self.size)
        rotation = (index + int(self.epoch.numpy())) % self.rescore_every == 0
        return np.flatnonzero(rotation | (bins == UNSCORED))

    def store(self, index, fresh_bins):
        """Writes the bins of the examples `index` from outside a training
        step (the pass before an epoch, `fitting.EpochScoring`) and recounts
        the histogram from the stored bins.

        Args:
            index: int `[m]`, example indices.
            fresh_bins: int `[m]`, their bins.
        """
        bins = self.bins.numpy()
        bins[np.asarray(index, np.int64)] = np.asarray(fresh_bins, np.int32)
        self.bins.assign(bins)
        self.histogram.assign(np.bincount(bins[bins >= 0], minlength=SCORE_BINS).astype(np.int32))

    def advance_epoch(self):
        self.epoch.assign_add(1)

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "rescore_every": self.rescore_every})
        return config


def _counts(bins):
    """Histogram of scored bins (UNSCORED ones left out), int32 `[SCORE_BINS]`."""
    scored = bins >= 0
    return tf.math.unsorted_segment_sum(
        tf.cast(scored, tf.int32), tf.where(scored, bins, 0), SCORE_BINS
    )


def check_rescore_every(rescore_every):
    """`rescore_every` as an int >= 1, or a ValueError that says so."""
    if isinstance(rescore_every, bool) or int(rescore_every) != rescore_every:
        raise ValueError(f"rescore_every must be an integer >= 1; got {rescore_every!r}.")
    if int(rescore_every) < 1:
        raise ValueError(f"rescore_every must be an integer >= 1; got {rescore_every!r}.")
    return int(rescore_every)
