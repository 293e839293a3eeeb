"""What `ARAdaLSModel.fit` does before Keras's `fit`: inputs, strata and callbacks.

- Arrays get each example's index as an input (`score_cache.with_index`),
  so sample weights keep their own slot; a dataset must carry the index
  already (`score_cache.index_examples`). Arrays then reach Keras as one
  repeating `tf.data` pipeline (`array_pipeline`), which does not stop
  between epochs as Keras's array adapter does.
- The score cache is sized from the data when `train_size` was not given,
  and `num_strata="auto"` is resolved from the eps callback's data.
- The examples due for scoring in an epoch are scored before it, in large
  batches (`EpochScoring`), where the training examples can be passed over:
  arrays, a finite dataset, or `scoring_data`. The attack costs far less per
  example in batches of a few hundred than on the eighth of a training batch
  that is due; the scores of an epoch then all come from one set of weights.
  Elsewhere (a generator, a dataset that repeats, several replicas) the
  training steps score their due examples.
- Callbacks are taken as Keras takes them (a list, a `CallbackList`, given by
  keyword or by position) and run in this order: the eps update, the
  strata's epoch bookkeeping (`StrataEpochs`, `EpochScoring`), then the others. A progress
  bar that leaves out the per-stratum logs (`ShortProgbar`) stands in for
  Keras's; `History` and `CSVLogger` still record them.
"""

import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import score_cache
from aradals_tf import strata as strata_lib

_FIT_PARAMETERS = tuple(inspect.signature(keras.Model.fit).parameters)[1:]
# Scoring never starts: a fit without an eps update has no use for strata.
NEVER = 2**62
# Examples per batch of the pass before an epoch.
SCORING_BATCH_SIZE = 250
# Largest arrays (all of x, y and sample weights) that `fit` feeds through
# its own repeating pipeline; larger ones go to Keras's array adapter.
ARRAY_PIPELINE_BYTES = 2**30


class EpsUpdateCallback(keras.callbacks.Callback):
    """Base of the callbacks that update eps at an epoch end (`AdaptiveSmoothing`).

    `ARAdaLSModel.fit` runs them first, so their logs reach `History`,
    `CSVLogger` and `TensorBoard`.
    """

    def validation_size(self, model):
        """The number of examples the update measures (for `num_strata="auto"`)."""
        raise NotImplementedError(f"{type(self).__name__} must define validation_size().")


class StrataEpochs(keras.callbacks.Callback):
    """Closes each epoch of an `ARAdaLSModel`'s strata: logs how many training
    examples each stratum was assigned (`stratum{r}_train_count`, counted in
    the training steps) and starts the next epoch's score rotation.
    `ARAdaLSModel.fit` adds it."""

    def on_epoch_end(self, epoch, logs=None):
        count, _ = self.model.strata.end_epoch()
        if count.sum() == 0:  # nothing scored yet: the same keys every epoch, for CSVLogger
            count = np.full(len(count), np.nan)
        if logs is not None:
            logs.update({f"stratum{r}_train_count": float(c) for r, c in enumerate(count)})


def _structure_rows(structure, rows):
    return tf.nest.map_structure(lambda array: np.asarray(array)[rows], structure)


class EpochScoring(keras.callbacks.Callback):
    """Scores an epoch's due training examples before the epoch, in batches.

    At each epoch's start (once scoring has started) every example that
    `score_cache.ScoreCache.due_indices` names is scored on the current
    weights, in inference mode, `batch_size` at a time, and stored in the
    cache; the training steps then read their strata from the cache.
    `ARAdaLSModel.fit` adds it (see the module).

    Args:
        data: indexed training inputs: a dict of arrays with the
            `"example_index"` key, or a finite `tf.data.Dataset` whose inputs
            carry it (batched or not).
        batch_size: examples per scoring batch.
    """

    def __init__(self, data, batch_size=SCORING_BATCH_SIZE):
        super().__init__()
        self.data = data
        self.batch_size = int(batch_size)
        self._function, self._for = None, None

    def _due_batches(self, due):
        """The due examples' `(inputs, index)` as numpy, `batch_size` at a time."""
        if isinstance(self.data, tf.data.Dataset):
            yield from self._due_dataset_batches(tf.constant(due))
            return
        inputs, index = score_cache.split_index(self.data)
        index = np.asarray(index)
        rows = np.flatnonzero(due[index.astype(np.int64)])
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            yield _structure_rows(inputs, chunk), index[chunk]

    def _due_dataset_batches(self, due):
        # The inputs alone (they carry the index), one example at a time.
        data = self.data.map(lambda *element: element[0])
        if data.element_spec[score_cache.INDEX].shape.rank > 0:
            data = data.unbatch()
        data = data.filter(
            lambda inputs: tf.gather(due, tf.cast(inputs[score_cache.INDEX], tf.int64))
        )
        for element in data.batch(self.batch_size):
            inputs, index = score_cache.split_index(element)
            yield tf.nest.map_structure(np.asarray, inputs), np.asarray(index)

    def on_epoch_begin(self, epoch, logs=None):
        strata = self.model.strata
        if not bool(strata.scoring()):
            return
        cache = strata.cache
        due = np.zeros(cache.size, bool)
        due[cache.due_indices()] = True
        if not due.any():
            return
        index, bins = [], []
        for inputs, batch_index in self._due_batches(due):
            if self._for is not self.model:
                self._function = strata.score_function(self.model.backbone, inputs)
                self._for = self.model
            index.append(batch_index)
            bins.append(self._function(inputs).numpy())
        if index:
            cache.store(np.concatenate(index), np.concatenate(bins))


class ShortProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar without the `stratum*` logs (loss, metrics, eps summary)."""

    @staticmethod
    def _short(logs):
        return {k: v for k, v in (logs or {}).items() if not k.startswith("stratum")}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._short(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._short(logs))


def _arguments(args, kwargs):
    if len(args) > len(_FIT_PARAMETERS):
        raise TypeError(f"fit() takes at most {len(_FIT_PARAMETERS)} positional arguments.")
    arguments = dict(zip(_FIT_PARAMETERS, args))
    for name, value in kwargs.items():
        if name in arguments:
            raise TypeError(f"fit() got multiple values for argument {name!r}.")
        arguments[name] = value
    return arguments


def _callbacks(callbacks):
    if callbacks is None:
        return []
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return list(callbacks.callbacks)
    return list(callbacks)


def _is_arrays(x):
    if isinstance(x, dict):
        return bool(x) and all(_is_arrays(value) for value in x.values())
    return isinstance(x, (np.ndarray, tf.Tensor)) or hasattr(x, "__array__")


def _count_indexed(dataset):
    """The number of examples of an indexed dataset: its largest index + 1."""
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "The training dataset repeats forever, so its examples cannot be counted: "
            "pass train_size= (the number of training examples) to ARAdaLSModel."
        )
    largest = dataset.map(lambda x, *rest: tf.reduce_max(x[score_cache.INDEX])).reduce(
        tf.constant(-1, tf.int64), lambda a, b: tf.maximum(a, tf.cast(b, tf.int64))
    )
    return int(largest) + 1


def _indexed_inputs(model, x):
    """`(x with index, train_size)` for Keras's `fit`."""
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        inputs = spec[0] if isinstance(spec, tuple) else spec
        if not (isinstance(inputs, dict) and score_cache.INDEX in inputs):
            raise ValueError(
                "ARAdaLSModel keeps a score per training example: index the training dataset "
                "with aradals_tf.index_examples(dataset) before shuffling and batching."
            )
        return x, model._train_size or _count_indexed(x)
    if _is_arrays(x):
        if isinstance(x, dict) and score_cache.INDEX in x:  # indexed by the caller
            return x, model._train_size or int(np.max(x[score_cache.INDEX])) + 1
        size = len(next(iter(x.values())) if isinstance(x, dict) else x)
        if model._train_size is not None and model._train_size < size:
            raise ValueError(
                f"train_size={model._train_size} but fit() got {size} training examples."
            )
        return score_cache.with_index(x, np.arange(size)), model._train_size or size
    if model._train_size is None and model.score_cache is None:
        raise ValueError(
            "Pass train_size= (the number of training examples) to ARAdaLSModel when "
            "fit() gets a generator or a PyDataset."
        )
    return x, model._train_size


def _scoring_data(model, arguments, scoring_data):
    """The indexed training inputs of the pass before each epoch, or None
    where the steps score their due examples (see the module)."""
    if scoring_data is None or model.distribute_strategy.num_replicas_in_sync > 1:
        return None
    if isinstance(scoring_data, str):
        if scoring_data != "auto":
            raise ValueError(
                f"scoring_data must be 'auto', None, arrays or a dataset; got {scoring_data!r}."
            )
        x = arguments["x"]
        if arguments.get("validation_split"):  # Keras holds out rows of x after this
            return None
        if isinstance(x, tf.data.Dataset):
            return x if x.cardinality() >= 0 else None
        return x if _is_arrays(x) else None
    if isinstance(scoring_data, tf.data.Dataset) and scoring_data.cardinality() < 0:
        raise ValueError(
            "scoring_data must be a finite dataset (one pass over the training examples)."
        )
    return _indexed_inputs(model, scoring_data)[0]


def _floatx(array):
    array = np.asarray(array)
    # As Keras's array adapter: floating inputs in the backend's float type.
    return array.astype(keras.config.floatx()) if np.issubdtype(array.dtype, np.floating) else array


def array_pipeline(model, arguments):
    """Keras's `fit` arguments with arrays `x, y[, sample_weight]` fed through
    one repeating `tf.data` pipeline, where Keras's array adapter would do
    the same work.

    Keras's adapter starts a new iterator at every epoch, and the epoch's
    first batches wait for it; this pipeline (a fresh shuffle each epoch
    unless `shuffle=False`, then batches of `batch_size`, the last one
    partial, prefetched across epoch ends) runs on, as the command line's
    does. Anything else (`validation_split`, `steps_per_epoch`,
    `shuffle="batch"`, several replicas, arrays over `ARRAY_PIPELINE_BYTES`)
    is left to Keras.

    Args:
        model: the model being fitted.
        arguments: Keras's `fit` keyword arguments, `x` already indexed.

    Returns:
        The arguments to pass on: `x` a dataset and `steps_per_epoch` set, or
        `arguments` unchanged.
    """
    x, y, weights = (arguments.get(k) for k in ("x", "y", "sample_weight"))
    shuffle = arguments.get("shuffle", True)
    if (
        model.distribute_strategy.num_replicas_in_sync > 1
        or not (_is_arrays(x) and y is not None and _is_arrays(y))
        or not (weights is None or _is_arrays(weights))
        or arguments.get("validation_split")
        or arguments.get("steps_per_epoch") is not None
        or shuffle not in (True, False)
    ):
        return arguments
    given = (x, y) if weights is None else (x, y, weights)
    leaves = [np.asarray(leaf) for leaf in tf.nest.flatten(given)]
    # Checked before the cast copies anything. Arrays of unequal lengths get
    # Keras's own error message.
    if (
        len({len(leaf) for leaf in leaves}) > 1
        or sum(leaf.nbytes for leaf in leaves) > ARRAY_PIPELINE_BYTES
    ):
        return arguments
    size, batch_size = len(leaves[0]), arguments.get("batch_size") or 32
    dataset = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(_floatx, given))
    if shuffle:  # a new order every pass over the data (reshuffle_each_iteration)
        dataset = dataset.shuffle(size)
    dataset = dataset.batch(batch_size).repeat().prefetch(tf.data.AUTOTUNE)
    kept = {k: v for k, v in arguments.items() if k not in ("y", "sample_weight", "batch_size")}
    # shuffle=False: the pipeline shuffles itself (Keras warns of True with a dataset).
    return {**kept, "x": dataset, "steps_per_epoch": -(-size // batch_size), "shuffle": False}


def prepare_fit(model, args, kwargs, scoring_data="auto"):
    """The keyword arguments of Keras's `fit` for an `ARAdaLSModel`'s `fit(*args, **kwargs)`."""
    arguments = _arguments(args, kwargs)
    callbacks = _callbacks(arguments.get("callbacks"))
    updates = [c for c in callbacks if isinstance(c, EpsUpdateCallback)]
    if len(updates) > 1:
        raise ValueError("Pass one AdaptiveSmoothing callback, not several.")
    arguments["x"], train_size = _indexed_inputs(model, arguments.get("x"))
    num_strata = model.num_strata
    if num_strata == "auto":
        if not updates:
            raise ValueError(
                "num_strata='auto' takes R from the AdaptiveSmoothing callback's data: pass "
                "the callback, or a number of strata."
            )
        num_strata = strata_lib.auto_num_strata(updates[0].validation_size(model))
    with model.distribute_strategy.scope():
        model.build_strata(num_strata, train_size)
    if not updates:
        warnings.warn(
            f"{type(model).__name__}.fit without an AdaptiveSmoothing callback: eps stays "
            f"at eps_init = {model.eps_init} in every stratum and no example is scored. Pass "
            "callbacks=[aradals_tf.AdaptiveSmoothing(validation_data)].",
            stacklevel=3,
        )
        model.strata.scoring_from_epoch.assign(NEVER)
    scoring_data = _scoring_data(model, arguments, scoring_data)
    if model.strata.score_in_steps != (scoring_data is None):
        model.strata.score_in_steps = scoring_data is None
        model.train_function = None  # traced with the other setting
    ours = (StrataEpochs, EpochScoring)
    others = [c for c in callbacks if c not in updates and not isinstance(c, ours)]
    ordered = updates + [StrataEpochs()] + others
    if scoring_data is not None:
        ordered.insert(len(updates) + 1, EpochScoring(scoring_data))
    verbose = arguments.get("verbose", "auto")
    if verbose != 0 and not any(isinstance(c, keras.callbacks.ProgbarLogger) for c in ordered):
        ordered.append(ShortProgbar())
    arguments["callbacks"] = ordered
    return array_pipeline(model, arguments)
