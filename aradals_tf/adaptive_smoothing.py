"""The `AdaptiveSmoothing` callback: AR-AdaLS's per-epoch eps update.

After every epoch it scores validation data as the model scores its training
data (attack, first-order, margin or confidence), buckets it with the model's
stratum thresholds and moves each stratum's eps by `alpha (conf_r - acc_r)`
(or by the relative or shrunk step of `smoothing.update_eps`).
"""

import weakref

import numpy as np
import tensorflow as tf

from aradals_tf import distribution
from aradals_tf import losses
from aradals_tf import smoothing
from aradals_tf import training


def _batched(validation_data, batch_size):
    """A batched dataset from `(x, y)` arrays or a (batched or not) tf.data.Dataset."""
    if isinstance(validation_data, tf.data.Dataset):
        image_spec = validation_data.element_spec[0]
        if (
            image_spec.shape.rank is not None
            and image_spec.shape.rank >= 2
            and image_spec.shape[0] is None
        ):
            return validation_data  # already batched
        return validation_data.batch(batch_size)
    if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
        return tf.data.Dataset.from_tensor_slices(
            (np.asarray(validation_data[0], np.float32), np.asarray(validation_data[1]))
        ).batch(batch_size)
    raise ValueError(
        "validation_data must be a tf.data.Dataset of (x, y) or a tuple (x, y) of arrays."
    )


# model -> its compiled scoring pass: a new tf.function per epoch would
# retrace every time, which cost most of the scoring pass.
_SCORING_FUNCTIONS = weakref.WeakKeyDictionary()


def _scoring_function(model):
    if model not in _SCORING_FUNCTIONS:
        model_ref = weakref.ref(model)  # the cache must not keep the model alive
        training_mode = model.scores_in_training_mode

        @tf.function(reduce_retracing=True)
        def score(x):
            bins, logits = model_ref().strata_scores(x, training=training_mode)
            if training_mode:  # calibration is measured in inference mode
                logits = model_ref().backbone(x, training=False)
            return bins, logits

        @tf.function(reduce_retracing=True)
        def inference_logits(x):
            return model_ref().backbone(x, training=False)

        _SCORING_FUNCTIONS[model] = score, inference_logits
    return _SCORING_FUNCTIONS[model]


class ValidationScores:
    """Cached score bins of validation examples, named by their position in
    the (fixed-order) validation data, re-scored every `rescore_every` epochs:
    example `i` in the epochs `e` with `(i + e) % k == 0` and whenever it has
    no score yet, as `score_cache.ScoreCache` does for training examples."""

    def __init__(self, rescore_every):
        self.rescore_every = int(rescore_every)
        self.bins = np.zeros(0, np.int32)
        self.scored = np.zeros(0, bool)
        self.epoch = 0

    def due(self, positions):
        if positions[-1] >= len(self.bins):  # first sight of these examples
            grow = positions[-1] + 1 - len(self.bins)
            self.bins = np.concatenate([self.bins, np.zeros(grow, np.int32)])
            self.scored = np.concatenate([self.scored, np.zeros(grow, bool)])
        return ((positions + self.epoch) % self.rescore_every == 0) | ~self.scored[positions]

    def merge(self, positions, due, fresh):
        self.bins[positions[due]] = fresh
        self.scored[positions[due]] = True
        return self.bins[positions]

    def replace(self, bins):
        """Takes the whole split's bins (every worker's shard): all workers then
        hold the same cache, so any worker's backup restores every worker."""
        self.bins = np.array(bins, np.int32)
        self.scored = np.ones(len(self.bins), bool)

    def get_state(self):
        return {"bins": self.bins.tolist(), "scored": self.scored.tolist(), "epoch": self.epoch}

    def set_state(self, state):
        self.bins = np.asarray(state["bins"], np.int32)
        self.scored = np.asarray(state["scored"], bool)
        self.epoch = int(state["epoch"])


def _local_pass(model, batches, cache):
    """Scores `(positions, x, y)` batches: `(positions, bins, logits, labels)`."""
    score, inference_logits = _scoring_function(model)
    positions_seen, all_bins, all_logits, labels = [], [], [], []
    for positions, x, y in batches:
        positions = np.asarray(positions)
        if cache is None:
            bins, logits = score(x)
            bins = np.asarray(bins)
        else:
            due = cache.due(positions)
            fresh = score(tf.boolean_mask(x, due))[0].numpy() if due.any() else []
            bins = cache.merge(positions, due, fresh)
            logits = inference_logits(x)
        positions_seen.append(positions)
        all_bins.append(bins)
        all_logits.append(np.asarray(tf.cast(logits, tf.float32)))
        labels.append(np.asarray(losses.flat_labels(y)))
    return [np.concatenate(parts) for parts in (positions_seen, all_bins, all_logits, labels)]


def _positioned(validation_data, batch_size, shard=(0, 1)):
    """`(positions, x, y)` batches of this worker's shard: every `count`-th example."""
    index, count = shard
    if count == 1:
        start = 0
        for x, y in validation_data:
            size = int(tf.shape(x)[0])
            yield np.arange(start, start + size), x, y
            start += size
        return
    examples = validation_data.unbatch().enumerate().shard(count, index)
    for positions, (x, y) in examples.batch(batch_size):
        yield positions.numpy(), x, y


def _assemble(strategy, positions, bins, logits, labels):
    """The whole split's arrays from every worker's shard, identical on all workers.

    Each worker writes its examples' rows into zeros and the rows are summed
    across workers: adding zeros is exact, so every worker gets the very
    arrays a single process would have computed, in the split's order.
    """
    total = int(distribution.sum_across_workers(np.array([len(positions)], np.int64), strategy)[0])
    rows = np.zeros((total, logits.shape[1] + 2), np.float64)
    rows[positions, 0] = bins
    rows[positions, 1] = labels
    rows[positions, 2:] = logits
    rows = distribution.sum_across_workers(rows, strategy)
    return rows[:, 0].astype(np.int32), rows[:, 2:].astype(np.float32), rows[:, 1].astype(np.int32)


def validation_pass(model, validation_data, batch_size=500, cache=None):
    """Scores and buckets validation data as the model does its training data.

    Each example is scored as the model scores its training examples (its
    `strata_by`, current weights, the same `training` flag: BatchNorm
    statistics that a training-mode pass moves are restored afterwards) and
    bucketed with the current thresholds; its logits are the model's in
    inference mode. With a `ValidationScores` cache only the examples due
    this epoch are scored; the others keep their cached scores (their logits
    are always this epoch's). Under a multi-worker strategy each worker
    scores every `n`-th example only and the results are summed across
    workers, so every worker returns the same arrays for the whole split.

    Args:
        model: an `ARAdaLSModel`.
        validation_data: `(x, y)` arrays or a dataset of `(x, y)`.
        batch_size: batch size when `validation_data` is unbatched.
        cache: optional `ValidationScores`; the data must then come in the
            same order every epoch.

    Returns:
        `(strata, logits, labels)`: int32 `[n]`, float32 `[n, K]`, int32 `[n]`.
    """
    strategy = model.distribute_strategy
    role = distribution.worker_role(strategy)
    # A training-mode pass moves BatchNorm statistics: keep them to put back.
    moved = model.backbone.non_trainable_variables if model.scores_in_training_mode else []
    state = [v.numpy() for v in moved]
    try:
        batches = _positioned(
            _batched(validation_data, batch_size), batch_size, (role.index, role.count)
        )
        positions, bins, logits, labels = _local_pass(model, batches, cache)
    finally:
        for variable, value in zip(moved, state):
            variable.assign(value)
    if role.count > 1:
        bins, logits, labels = _assemble(strategy, positions, bins, logits, labels)
        if cache is not None:
            cache.replace(bins)
    return model.strata_of(bins), tf.constant(logits), tf.constant(labels)


def stratum_statistics(model, validation_data, batch_size=500, passed=None):
    """Per-stratum validation count, mean confidence, accuracy and the
    standard error of `conf - acc`, of a model (see `validation_pass`).

    Args:
        model: an `ARAdaLSModel`.
        validation_data: `(x, y)` arrays or a dataset of `(x, y)`.
        batch_size: batch size when `validation_data` is unbatched.
        passed: the `validation_pass` output, if already computed.

    Returns:
        `(count, confidence, accuracy, gap_standard_error)`, float32 numpy
        `[R]` each.
    """
    strata, logits, labels = passed or validation_pass(model, validation_data, batch_size)
    probs = tf.nn.softmax(logits)
    confidence = tf.reduce_max(probs, axis=-1)
    correct = tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), labels)
    count, mean_confidence, accuracy = smoothing.stratum_calibration(
        strata, confidence, correct, model.num_strata
    )
    error = smoothing.stratum_gap_standard_error(strata, confidence, correct, model.num_strata)
    return count.numpy(), mean_confidence.numpy(), accuracy.numpy(), error.numpy()


def _validation_logs(model, logits, labels):
    """Keras's `val_*` logs from one pass's logits: the hard-label
    cross-entropy as `val_loss` and every compiled metric, as `fit`'s own
    validation pass would write them (the metrics are reset at each epoch's
    start, so reusing them here leaves training's logs as they were)."""
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
    logs = {"val_loss": float(loss)}
    for metric in model.metrics:
        if metric.name == "loss":
            continue
        metric.reset_state()
        metric.update_state(labels, logits)
        result = metric.result()
        for name, value in result.items() if isinstance(result, dict) else [(metric.name, result)]:
            logs[f"val_{name}"] = float(value)
    return logs


class AdaptiveSmoothing(training.EpsUpdateCallback):
    """Adapts an `ARAdaLSModel`'s per-stratum smoothing after every epoch.

    At each epoch end: score `validation_data`'s robustness with the current
    weights, bucket it with the training thresholds, compute each stratum's
    mean confidence and accuracy, and update
    `eps_r <- clip(eps_r + alpha (conf_r - acc_r), 0, eps_cap)` (`alpha`,
    `eps_cap` and the rule, `eps_update`, are the model's). Writes
    `stratum{r}_eps`, `stratum{r}_conf` and `stratum{r}_acc` into `logs`, so
    `History`, `CSVLogger` and `TensorBoard` record them, and keeps them with
    each stratum's validation count and the thresholds in `self.records` (one
    dict per epoch) for `plots.eps_per_stratum`.

    Args:
        validation_data: `(x, y)` arrays or a `tf.data.Dataset` of `(x, y)`
            (batched or not); held out from training.
        batch_size: batch size for unbatched validation data.
        rescore_every: k: re-score each validation example's robustness once
            every k epochs (cached in between; confidence and accuracy are
            always this epoch's), as `ARAdaLSModel(rescore_every=k)` does for
            training examples. k > 1 needs validation data in the same order
            every epoch (arrays, or a dataset without reshuffling).
        validation_metrics: also write `val_loss` (hard-label cross-entropy)
            and `val_<metric>` for every compiled metric from the same pass,
            so that `fit` needs no `validation_data` of its own: one pass
            over the validation split per epoch instead of two.

    Example:

    ```python
    adaptive = AdaptiveSmoothing((x_val, y_val))
    model.fit(train, epochs=20, callbacks=[adaptive])
    plots.eps_per_stratum(adaptive.records, "eps.png")
    ```
    """

    def __init__(self, validation_data, batch_size=500, rescore_every=1, validation_metrics=False):
        super().__init__()
        self.validation_data = _batched(validation_data, batch_size)
        if isinstance(rescore_every, bool) or int(rescore_every) != rescore_every:
            raise ValueError(f"rescore_every must be an integer >= 1; got {rescore_every!r}.")
        if int(rescore_every) < 1:
            raise ValueError(f"rescore_every must be an integer >= 1; got {rescore_every!r}.")
        self.cache = ValidationScores(rescore_every) if int(rescore_every) > 1 else None
        self.validation_metrics = validation_metrics
        self.records = []

    def get_state(self):
        """The callback's state for a backup: the cached validation scores and the records."""
        return {
            "cache": self.cache.get_state() if self.cache is not None else None,
            "records": self.records,
        }

    def set_state(self, state):
        """Restores a `get_state()` (see `backup.WorkerBackupAndRestore`)."""
        if self.cache is not None and state["cache"] is not None:
            self.cache.set_state(state["cache"])
        self.records = list(state["records"])

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        if not isinstance(model, training.ARAdaLSModel):
            raise ValueError("AdaptiveSmoothing needs an ARAdaLSModel.")
        if self.cache is not None:
            self.cache.epoch = epoch
        passed = validation_pass(model, self.validation_data, cache=self.cache)
        count, confidence, accuracy, error = stratum_statistics(model, None, passed=passed)
        eps = smoothing.update_eps(
            model.stratum_eps,
            confidence,
            accuracy,
            count,
            model.alpha,
            model.eps_cap,
            rule=model.eps_update,
            gap_standard_error=error,
        )
        model.stratum_eps.assign(eps)
        record = {"epoch": epoch}
        for r in range(model.num_strata):
            record[f"stratum{r}_eps"] = float(eps[r])
            record[f"stratum{r}_conf"] = float(confidence[r])
            record[f"stratum{r}_acc"] = float(accuracy[r])
            record[f"stratum{r}_count"] = float(count[r])
            record[f"stratum{r}_gap_se"] = float(error[r])
        self.records.append(record)
        record["thresholds"] = [int(t) for t in np.asarray(model.stratum_thresholds)]
        if logs is not None:
            logs.update({k: v for k, v in record.items() if k.endswith(("_eps", "_conf", "_acc"))})
            if self.validation_metrics:
                logs.update(_validation_logs(model, passed[1], passed[2]))
