"""Robustness strata: which examples are alike in robustness, from current scores.

`RobustnessStrata` composes a `scores.ScoreSource` and a
`score_cache.ScoreCache`. In each training step it scores the batch's due
examples, stores their bins, and assigns every example the stratum of its
current bin under thresholds that are the R-quantiles of the cached scores
themselves, so strata hold equal shares of the training set at every step.
Where examples are assigned it also counts them (and the correct ones) per
stratum, for the epoch's logs.

Scoring starts at `scoring_from_epoch`, the epoch whose end brings the first
eps update (`AdaptiveSmoothing` sets it): before, every stratum has the same
eps, so strata change nothing and no example is scored. From that epoch on
every example is scored, then the rotation refreshes 1/k of them each epoch:
no stratum rests on scores taken while the network trained up from random
weights.
"""

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import scores
from aradals_tf import smoothing
from aradals_tf.score_cache import ScoreCache
from aradals_tf.score_cache import add_across_replicas
from aradals_tf.score_cache import check_rescore_every

# Strata when `num_strata="auto"`: about this many validation examples each, at most MAX_STRATA.
EXAMPLES_PER_STRATUM = 25
MAX_STRATA = 10


def auto_num_strata(validation_size):
    """R for `num_strata="auto"`: `validation_size // 25`, within [2, 10]."""
    return int(np.clip(int(validation_size) // EXAMPLES_PER_STRATUM, 2, MAX_STRATA))


def check_num_strata(num_strata):
    """`num_strata` as an int in [1, SCORE_BINS] or the string "auto"."""
    if num_strata == "auto":
        return num_strata
    try:
        integer = not isinstance(num_strata, bool) and int(num_strata) == num_strata
    except (TypeError, ValueError):
        integer = False
    if not integer:
        raise ValueError(f"num_strata must be an integer or 'auto'; got {num_strata!r}.")
    if not 1 <= int(num_strata) <= scores.SCORE_BINS:
        raise ValueError(f"num_strata must be in [1, {scores.SCORE_BINS}]; got {num_strata}.")
    return int(num_strata)


@keras.saving.register_keras_serializable(package="aradals_tf")
class RobustnessStrata(keras.layers.Layer):
    """R strata of equal size by a robustness score (stratum 0 = least robust).

    Args:
        num_strata: R.
        source: a `scores.ScoreSource` (or its config dict).
        rescore_every: k, score each training example once every k epochs.
        train_size: the number of training examples (the cache's size); None
            until known (`build_cache`).
        **kwargs: base `Layer` arguments.

    Example:

    ```python
    strata = RobustnessStrata(10, ScoreSource("attack", eps_max=0.3), train_size=4000)
    r = strata.batch_strata(backbone, x, index)   # in a training step
    ```
    """

    def __init__(self, num_strata, source, rescore_every=8, train_size=None, **kwargs):
        super().__init__(**kwargs)
        self.num_strata = check_num_strata(num_strata)
        if self.num_strata == "auto":
            raise ValueError("RobustnessStrata needs a number of strata; resolve 'auto' first.")
        if isinstance(source, dict):
            source = keras.saving.deserialize_keras_object(source)
        self.source = source
        self.rescore_every = check_rescore_every(rescore_every)
        self.cache = None
        # False while a pass before each epoch scores the due examples
        # (`fitting.EpochScoring`): the steps then read the cache only. A
        # setting of the traced step, not state: `fit` sets it before tracing.
        self.score_in_steps = True
        self.scoring_from_epoch = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", trainable=False, name="scoring_from"
        )
        # This epoch's assignments: examples and correct predictions per stratum.
        for name in ("train_count", "train_correct"):
            setattr(
                self,
                name,
                self.add_weight(
                    shape=(self.num_strata,),
                    initializer="zeros",
                    trainable=False,
                    aggregation="only_first_replica",
                    name=name,
                ),
            )
        if train_size is not None:
            self.build_cache(train_size)
        self.built = True

    @property
    def train_size(self):
        return None if self.cache is None else self.cache.size

    def build_cache(self, train_size):
        """Creates the score cache of `train_size` examples (once)."""
        if self.cache is not None:
            if self.cache.size != int(train_size):
                raise ValueError(
                    f"This model's score cache holds {self.cache.size} examples; the "
                    f"training data has {train_size}."
                )
            return
        self.cache = ScoreCache(train_size, self.rescore_every, name="score_cache")

    def _require_cache(self):
        if self.cache is None:
            raise ValueError(
                "The score cache is not built: pass train_size, or let fit() count the examples."
            )
        return self.cache

    def scoring(self):
        """Bool scalar: whether this epoch scores examples (see the module)."""
        return self._require_cache().epoch >= self.scoring_from_epoch

    def thresholds(self):
        """int32 `[R - 1]`: the R-quantile bins of the cached training scores."""
        return smoothing.thresholds_from_histogram(self._require_cache().histogram, self.num_strata)

    def assign(self, bins):
        """Stratum of each score bin under the current thresholds."""
        return smoothing.assign_strata(bins, self.thresholds())

    def quantile(self, bins):
        """Each bin's mid-rank among the cached training scores, in [0, 1]."""
        histogram = tf.cast(self._require_cache().histogram, tf.float64)
        below = tf.cumsum(histogram, exclusive=True)
        total = tf.maximum(tf.reduce_sum(histogram), 1.0)
        bins = tf.cast(tf.reshape(bins, [-1]), tf.int32)
        return (tf.gather(below, bins) + 0.5 * tf.gather(histogram, bins)) / total

    def batch_strata(self, backbone, x, index):
        """Scores a training batch's due examples and returns every example's stratum.

        Returns int32 `[n]` (meaningless while `scoring()` is False: nothing
        is due then, and the model trains every example on `eps_init`).
        """
        cache = self._require_cache()
        if not self.score_in_steps:  # scored before the epoch
            return self.assign(tf.gather(cache.bins, cache.check_index(index)))
        due = cache.due(index) & self.scoring()
        due_inputs = tf.boolean_mask(x, due)
        # A batch may have none due; TF's Conv2D fails on an empty batch.
        fresh = tf.cond(
            tf.shape(due_inputs)[0] > 0,
            lambda: scores.score_bins(self.source(backbone, due_inputs)[0]),
            lambda: tf.zeros([0], tf.int32),
        )
        # Outside the condition: storing gathers across replicas.
        return self.assign(cache.merge(index, due, fresh))

    def score_function(self, backbone, inputs):
        """A compiled `inputs -> int32 bins` of this source on `backbone`, in
        inference mode as in the steps; for the pass before an epoch. Traced
        once for any batch size of inputs like `inputs` (a batch)."""
        signature = tf.nest.map_structure(
            lambda x: tf.TensorSpec([None, *np.shape(x)[1:]], tf.as_dtype(np.asarray(x).dtype)),
            inputs,
        )
        return tf.function(
            lambda inputs: scores.score_bins(self.source(backbone, inputs)[0]),
            input_signature=[signature],
        )

    def count(self, strata, correct):
        """Adds a scored batch's examples and correct predictions to their strata."""
        strata = tf.reshape(strata, [-1])
        scoring = tf.cast(self.scoring(), tf.float32)
        for variable, values in (
            (self.train_count, tf.ones_like(strata)),
            (self.train_correct, correct),
        ):
            per_stratum = tf.math.unsorted_segment_sum(
                tf.cast(values, tf.float32), strata, self.num_strata
            )
            add_across_replicas(variable, scoring * per_stratum)

    def end_epoch(self):
        """Closes the epoch: returns `(count, correct)` per stratum (numpy) and clears them."""
        counts = self.train_count.numpy(), self.train_correct.numpy()
        for variable in (self.train_count, self.train_correct):
            variable.assign(tf.zeros_like(variable))
        self._require_cache().advance_epoch()
        return counts

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_strata": self.num_strata,
                "source": keras.saving.serialize_keras_object(self.source),
                "rescore_every": self.rescore_every,
                "train_size": self.train_size,
            }
        )
        return config
