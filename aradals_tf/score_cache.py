"""A per-example cache of training robustness scores, refreshed on a rotation.

The attack is the costly part of an AR-AdaLS step. With `rescore_every=k`
each training example is re-attacked once every k epochs (example `i` in the
epochs `e` with `(i + e) % k == 0`, and in any epoch where it has no score
yet); in between, its stratum comes from its cached score. Since batches are
shuffled, about 1/k of every batch is attacked. Examples are identified by an
integer index that travels with them through the input pipeline
(`index_examples`).

The cache is state in variables, so it is saved with the model, restored by
`BackupAndRestore` and mirrored under `tf.distribute`: updates are deltas
summed across replicas (each replica writes the indices of its own examples)
with `add_across_replicas`.
"""

import keras
import tensorflow as tf

# Cache value of an example that has not been scored yet.
UNSCORED = -1.0


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


def index_examples(dataset):
    """Adds each example's position as a third element: `(x, y) -> (x, y, index)`.

    Call it on the unbatched, unshuffled training dataset, so that an index
    names the same example in every epoch; shuffle and batch afterwards.

    Args:
        dataset: a `tf.data.Dataset` of `(x, y)` examples.

    Returns:
        The dataset of `(x, y, index)`, index int64.

    Example:

    >>> train = index_examples(train).shuffle(4000).batch(128)
    """
    return dataset.enumerate().map(
        lambda index, example: (*example, index), num_parallel_calls=tf.data.AUTOTUNE
    )


@keras.saving.register_keras_serializable(package="aradals_tf")
class ScoreCache(keras.layers.Layer):
    """Cached score bins of `size` training examples, re-scored every `rescore_every` epochs.

    Args:
        size: the number of training examples (indices `0..size-1`).
        rescore_every: k >= 1, the epochs between two attacks of an example.
        **kwargs: base `Layer` arguments.

    Example:

    ```python
    cache = ScoreCache(size=4000, rescore_every=4)
    due = cache.due(index)              # which examples to attack now
    bins = cache.merge(index, due, fresh_bins)
    cache.advance_epoch()               # at each epoch's end
    ```
    """

    def __init__(self, size, rescore_every, **kwargs):
        super().__init__(**kwargs)
        if isinstance(size, bool) or int(size) != size or int(size) < 1:
            raise ValueError(f"The score cache needs size >= 1 (training examples); got {size!r}.")
        if isinstance(rescore_every, bool) or int(rescore_every) != rescore_every:
            raise ValueError(f"rescore_every must be an integer >= 1; got {rescore_every!r}.")
        if int(rescore_every) < 1:
            raise ValueError(f"rescore_every must be an integer >= 1; got {rescore_every!r}.")
        self.size = int(size)
        self.rescore_every = int(rescore_every)
        # float32: bins (< 2**24) are exact, and deltas can be summed across replicas.
        self.bins = self.add_weight(
            shape=(self.size,),
            initializer=keras.initializers.Constant(UNSCORED),
            trainable=False,
            aggregation="only_first_replica",  # updated by add_across_replicas
            name="bins",
        )
        self.epoch = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", trainable=False, name="epoch"
        )
        self.built = True

    def _checked(self, index):
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
        """Bool `[n]`: the examples of a batch to attack in this epoch."""
        index = self._checked(index)
        rotation = tf.equal((index + self.epoch) % self.rescore_every, 0)
        return rotation | tf.equal(tf.gather(self.bins, index), UNSCORED)

    def merge(self, index, due, fresh_bins):
        """The batch's bins (fresh where `due`, cached elsewhere); stores the fresh ones.

        Args:
            index: int `[n]`, the batch's example indices.
            due: bool `[n]` from `due`.
            fresh_bins: int `[m]`, the bins of the `m` due examples, in order.

        Returns:
            int32 `[n]`: every example's bin.
        """
        index = self._checked(index)
        cached = tf.gather(self.bins, index)
        positions = tf.where(due)
        fresh = tf.cast(fresh_bins, tf.float32)
        bins = tf.tensor_scatter_nd_update(cached, positions, fresh)
        # A delta over the whole cache: summed across replicas, each of which
        # changes only its own examples.
        delta = tf.scatter_nd(
            tf.gather(index, positions[:, 0])[:, None],
            fresh - tf.gather_nd(cached, positions),
            [self.size],
        )
        add_across_replicas(self.bins, delta)
        return tf.cast(bins, tf.int32)

    def advance_epoch(self):
        self.epoch.assign_add(1)

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "rescore_every": self.rescore_every})
        return config
