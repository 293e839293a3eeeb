"""The `AdaptiveSmoothing` callback: the validation data and schedule of the eps update.

After every epoch it scores the validation data as the model scores its
training data (the model's score source, inference mode, the same cache
rotation for the costly scores), buckets it with the model's strata, and
lets the model's eps rule (`eps_rules`) move each stratum's eps. What the
update measures, how far it is trusted and when it starts are here; how eps
moves is the rule's.
"""

import warnings

import numpy as np
import tensorflow as tf

from aradals_tf import choices
from aradals_tf import distribution
from aradals_tf import eps_rules
from aradals_tf import losses
from aradals_tf import scores
from aradals_tf import training
from aradals_tf.fitting import EpsUpdateCallback


def _batched(validation_data, batch_size, input_rank):
    """A batched dataset from `(x, y)` arrays or a (batched or not) tf.data.Dataset.

    A dataset counts as batched when its inputs have the backbone's input
    rank (batch dimension included), whatever that dimension's static size
    (where the rank is not known: when their first dimension is unknown).
    """
    if isinstance(validation_data, tf.data.Dataset):
        shape = validation_data.element_spec[0].shape
        batched = shape.rank == input_rank if input_rank else shape[:1].as_list() == [None]
        return validation_data if batched else validation_data.batch(batch_size)
    if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
        return tf.data.Dataset.from_tensor_slices(
            (np.asarray(validation_data[0], np.float32), np.asarray(validation_data[1]))
        ).batch(batch_size)
    raise ValueError(
        "validation_data must be a tf.data.Dataset of (x, y) or a tuple (x, y) of arrays."
    )


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


def _input_rank(model):
    """The rank of the backbone's batched inputs (None where it is not known)."""
    backbone = model.backbone
    while not getattr(backbone, "inputs", None) and getattr(backbone, "members", None):
        backbone = backbone.members[0]  # a LogitEnsemble's members share its inputs
    inputs = getattr(backbone, "inputs", None)
    return len(inputs[0].shape) if inputs else None


def _compiled(model):
    """`(logits_fn, bins_fn)`: the inference-mode passes, compiled once per callback.

    Both take any batch size without retracing (the due examples of a
    validation batch vary in number, and a retrace of the attack costs seconds).
    """
    functions = {}

    def compiled(name, body, x):
        if name not in functions:
            spec = tf.TensorSpec([None, *x.shape[1:]], tf.float32)
            functions[name] = tf.function(body, input_signature=[spec])
        return functions[name](tf.cast(x, tf.float32))

    def logits_of(x):
        return compiled("logits", lambda v: model.backbone(v, training=False), x)

    def bins_of(x):
        return compiled("bins", lambda v: scores.score_bins(model.source(model.backbone, v)[0]), x)

    return logits_of, bins_of


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


def validation_pass(model, batches, functions, cache=None, with_scores=True):
    """Scores and classifies batched validation data as the model does its training data.

    Args:
        model: an `ARAdaLSModel`.
        batches: a batched dataset of `(x, y)`, in the same order every epoch.
        functions: `_compiled(model)`.
        cache: optional `ValidationScores`: only the examples due this epoch
            are scored, the others keep their scores (as training examples do).
        with_scores: False for the logits alone (bins are then zeros).

    Returns:
        `(bins, logits, labels)`: int32 `[n]`, float32 `[n, K]`, int32 `[n]`
        numpy, the whole split on every worker.
    """
    logits_of, bins_of = functions
    strategy = model.distribute_strategy
    role = distribution.worker_role(strategy)
    parts = []
    batch_size = 500
    for positions, x, y in _positioned(batches, batch_size, (role.index, role.count)):
        logits = np.asarray(tf.cast(logits_of(x), tf.float32))
        bins = np.zeros(len(positions), np.int32)
        if with_scores:
            due = cache.due(positions) if cache is not None else np.ones(len(positions), bool)
            if not due.any():
                fresh = np.zeros(0, np.int32)
            elif model.source.costly:
                fresh = bins_of(tf.boolean_mask(x, due)).numpy()
            else:  # the forward-pass scores come with the logits
                fresh = scores.score_bins(model.source.score_of_logits(logits[due])).numpy()
            bins = cache.merge(positions, due, fresh) if cache is not None else fresh
        labels = np.asarray(losses.class_labels(y, model.num_classes))
        parts.append((positions, bins, logits, labels))
    positions, bins, logits, labels = (np.concatenate(p) for p in zip(*parts))
    if role.count > 1:
        bins, logits, labels = _assemble(strategy, positions, bins, logits, labels)
        if cache is not None and with_scores:
            cache.replace(bins)
    return bins, logits, labels


def trust(validation_accuracy, training_accuracy, num_classes):
    """How far a validation pass can be believed, in [0, 1].

    The inference-mode validation accuracy above chance, over the training
    steps' accuracy above chance (clipped to [0, 1]). Near 1 once the
    validation pass sees the network that trains; near 0 when its inference
    mode is not that network yet, as with BatchNorm moving statistics early
    in training (validation near chance while training batches are right).

    Example:

    >>> trust(0.10, 0.92, 10)
    0.0
    """
    chance = 1.0 / num_classes
    if not training_accuracy > chance:
        return 0.0
    return float(np.clip((validation_accuracy - chance) / (training_accuracy - chance), 0.0, 1.0))


def _validation_logs(model, logits, labels):
    """Keras's `val_*` logs from one pass's logits: the hard-label
    cross-entropy as `val_loss` and every compiled metric, as `fit`'s own
    validation pass would write them (the metrics are reset at each epoch's
    start, so reusing them here leaves training's logs as they were)."""
    logits, labels = tf.constant(logits), tf.constant(labels)
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


class AdaptiveSmoothing(EpsUpdateCallback):
    """Adapts an `ARAdaLSModel`'s per-stratum smoothing after every epoch.

    At each epoch end from `warmup_epochs` on: score `validation_data`'s
    robustness with the current weights (the model's score source and
    `rescore_every`), bucket it with the model's strata, and update eps with
    the model's rule (`model.eps_rule`), scaled by `trust` (how far the
    inference-mode validation pass agrees with the training steps'
    accuracy); a pass trusted less than the rule's `min_trust` moves no eps.
    The training examples are scored from that same epoch on.

    Writes into `logs` (so `History`, `CSVLogger` and `TensorBoard` record
    them) `eps_min`, `eps_mean`, `eps_max` and `eps_trust`, and per stratum
    `stratum{r}_eps`, `_conf`, `_acc` and `_val_count` (the progress bar shows
    only the first four); keeps every epoch's figures in `self.records` for
    `plots.eps_per_stratum`.

    Args:
        validation_data: `(x, y)` arrays or a `tf.data.Dataset` of `(x, y)`
            (batched or not), held out from training, in the same order
            every epoch.
        batch_size: batch size for unbatched validation data.
        warmup_epochs: the epochs before the first update (1: a network in
            its first epoch is no guide to its calibration).
        validation_metrics: also write `val_loss` and `val_<metric>` for every
            compiled metric from the same pass, so that `fit` needs no
            `validation_data` of its own; where `fit` has its own, its
            `val_*` logs stay and these are not written.

    Example:

    ```python
    adaptive = AdaptiveSmoothing((x_val, y_val))
    model.fit(x_train, y_train, epochs=20, callbacks=[adaptive])
    plots.eps_per_stratum(adaptive.records, "eps.png")
    ```
    """

    def __init__(
        self,
        validation_data,
        batch_size=500,
        warmup_epochs=choices.DEFAULT_WARMUP_EPOCHS,
        validation_metrics=False,
    ):
        super().__init__()
        if isinstance(warmup_epochs, bool) or int(warmup_epochs) != warmup_epochs:
            raise ValueError(f"warmup_epochs must be an integer >= 0; got {warmup_epochs!r}.")
        if int(warmup_epochs) < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0; got {warmup_epochs!r}.")
        self.validation_data = validation_data
        self.batch_size = int(batch_size)
        self.warmup_epochs = int(warmup_epochs)
        self.validation_metrics = validation_metrics
        self.cache = None
        self.records = []
        self._batches = None
        self._functions = None

    def validation_size(self, model):
        """The number of validation examples (one pass to count a dataset)."""
        batches = _batched(self.validation_data, self.batch_size, _input_rank(model))
        return int(batches.reduce(np.int64(0), lambda n, e: n + tf.shape(e[0], tf.int64)[0]))

    def set_model(self, model):
        if not isinstance(model, training.ARAdaLSModel):
            raise ValueError(
                f"AdaptiveSmoothing adapts an ARAdaLSModel's smoothing; got {type(model).__name__}."
            )
        if model is not getattr(self, "model", None):
            self._functions = _compiled(model)
            self._batches = _batched(self.validation_data, self.batch_size, _input_rank(model))
        super().set_model(model)

    def get_state(self):
        """The callback's state for a backup: the cached validation scores and the records."""
        return {
            "cache": self.cache.get_state() if self.cache is not None else None,
            "records": self.records,
        }

    def set_state(self, state):
        """Restores a `get_state()` (see `backup.WorkerBackupAndRestore`)."""
        if state["cache"] is not None:
            self.cache = ValidationScores(self.model.rescore_every)
            self.cache.set_state(state["cache"])
        self.records = list(state["records"])

    def on_train_begin(self, logs=None):
        self.model.strata.scoring_from_epoch.assign(self.warmup_epochs)
        if self.cache is None and self.model.rescore_every > 1:
            self.cache = ValidationScores(self.model.rescore_every)

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        scoring = bool(model.strata.scoring())
        passed = None
        if scoring or self.validation_metrics:
            if self.cache is not None:
                self.cache.epoch = int(model.score_cache.epoch.numpy())
            passed = validation_pass(
                model, self._batches, self._functions, self.cache, with_scores=scoring
            )
        record = {"epoch": epoch, **self._update(passed if scoring else None)}
        self.records.append(record)
        if logs is None:
            return
        logs.update({k: v for k, v in record.items() if k.startswith(("eps_", "stratum"))})
        if self.validation_metrics:
            if any(key.startswith("val_") for key in logs):
                if not getattr(self, "_warned", False):
                    self._warned = True
                    warnings.warn(
                        "fit has validation_data of its own: its val_* logs are kept and "
                        "AdaptiveSmoothing(validation_metrics=True) writes none.",
                        stacklevel=2,
                    )
            else:
                logs.update(_validation_logs(model, passed[1], passed[2]))

    def _update(self, passed):
        """Moves eps (given this epoch's scored pass) and returns the epoch's figures."""
        model, strata = self.model, self.model.strata
        eps = model.stratum_eps.numpy()
        unknown = np.full(strata.num_strata, np.nan)
        per_stratum = dict(conf=unknown, acc=unknown, val_count=unknown, gap_se=unknown)
        figures = {"eps_trust": float("nan"), "thresholds": []}
        if passed is not None:
            bins, logits, labels = passed
            statistics = eps_rules.ValidationStatistics.from_logits(
                strata.assign(bins).numpy(),
                strata.quantile(bins).numpy(),
                logits,
                labels,
                strata.num_strata,
            )
            count, correct = strata.train_count.numpy(), strata.train_correct.numpy()
            figures["eps_trust"] = trust(
                statistics.correct.mean(), correct.sum() / max(count.sum(), 1.0), model.num_classes
            )
            eps = model.eps_rule.update(eps, statistics, figures["eps_trust"])
            model.stratum_eps.assign(eps)
            per_stratum = dict(
                conf=statistics.mean_confidence(),
                acc=statistics.accuracy(),
                val_count=statistics.count(),
                gap_se=statistics.gap_standard_error(),
            )
            figures["thresholds"] = [int(t) for t in strata.thresholds().numpy()]
        figures.update(
            eps_min=float(eps.min()), eps_mean=float(eps.mean()), eps_max=float(eps.max())
        )
        for name, values in {"eps": eps, **per_stratum}.items():
            for r, value in enumerate(values):
                figures[f"stratum{r}_{name}"] = float(value)
        return figures
