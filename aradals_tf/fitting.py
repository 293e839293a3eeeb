"""What `ARAdaLSModel.fit` does before Keras's `fit`: inputs, strata and callbacks.

- Arrays get each example's index as an input (`score_cache.with_index`),
  so sample weights keep their own slot; a dataset must carry the index
  already (`score_cache.index_examples`).
- The score cache is sized from the data when `train_size` was not given,
  and `num_strata="auto"` is resolved from the eps callback's data.
- Callbacks are taken as Keras takes them (a list, a `CallbackList`, given by
  keyword or by position) and run in this order: the eps update, the
  strata's epoch bookkeeping (`StrataEpochs`), then the others. A progress
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


def prepare_fit(model, args, kwargs):
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
    others = [c for c in callbacks if c not in updates and not isinstance(c, StrataEpochs)]
    ordered = updates + [StrataEpochs()] + others
    verbose = arguments.get("verbose", "auto")
    if verbose != 0 and not any(isinstance(c, keras.callbacks.ProgbarLogger) for c in ordered):
        ordered.append(ShortProgbar())
    arguments["callbacks"] = ordered
    return arguments
