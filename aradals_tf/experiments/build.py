"""Building a run from its config: data pipelines, strategy and the model."""

import functools

import keras
import numpy as np
import tensorflow as tf

from aradals_tf import backbones
from aradals_tf import corruptions
from aradals_tf import data
from aradals_tf import distribution
from aradals_tf import ensemble
from aradals_tf import losses
from aradals_tf import metrics
from aradals_tf import mixup
from aradals_tf import score_cache
from aradals_tf import training
from aradals_tf.experiments.config import CORRUPTION_SEED
from aradals_tf.experiments.config import EVAL_BATCH_SIZE


def dataset_info(config):
    """The `data.DatasetInfo` of a config's data (its image size and tfds directory)."""
    return data.dataset_info(config.dataset, image_size=config.image_size, data_dir=config.data_dir)


def split_dataset(config, split):
    """The unbatched `(image, label)` dataset of one split of a config's data."""
    return data.load_dataset(
        config.dataset,
        split,
        config.seed,
        data_dir=config.data_dir,
        fold=config.fold,
        folds=config.folds,
        image_size=config.image_size,
    )


def caches_scores(config):
    """Whether a config's model keeps a score per example (batches then carry an index)."""
    return config.method == "ar-adals"


def train_size(config):
    """The number of training examples of a config's data."""
    train = split_dataset(config, "train")
    size = int(train.cardinality())
    return size if size >= 0 else int(train.reduce(0, lambda count, _: count + 1))


def steps_per_epoch(config):
    """Training batches per epoch (the last one may be partial)."""
    return -(-train_size(config) // config.batch_size)


def training_examples(config):
    """The training split, unbatched and unshuffled, cached; indexed where the
    model caches scores (indices before any shuffle: one per example)."""
    examples = split_dataset(config, "train")
    if caches_scores(config):
        examples = score_cache.index_examples(examples)
    return examples.cache()


# Largest training split held in memory for the pass that scores an epoch's
# due examples (larger ones are read from the dataset each epoch).
SCORING_ARRAYS_BYTES = 256 * 2**20


def scoring_examples(config):
    """The indexed training examples for `fit(scoring_data=...)`: numpy arrays
    when the split fits in `SCORING_ARRAYS_BYTES` (a pass over the dataset
    every epoch costs more than the forward-pass scores themselves), the
    cached dataset otherwise."""
    examples = training_examples(config)
    spec = examples.element_spec[0][score_cache.INPUTS]
    size = train_size(config)
    if size * int(np.prod(spec.shape)) * spec.dtype.size > SCORING_ARRAYS_BYTES:
        return examples
    inputs = examples.map(lambda x, *_: x).batch(size).get_single_element()
    return {key: value.numpy() for key, value in inputs.items()}


def training_datasets(config, shuffle_seed=None, initial_epoch=0):
    """`(train, validation)`: the training batches of epochs `initial_epoch`
    to `config.epochs - 1`, one after the other, and the batched validation split.

    Each epoch's order is a shuffle seeded by the run's seed and the epoch
    number, so a run resumed at epoch e sees the very batches an
    uninterrupted run sees from e on. Pass `steps_per_epoch(config)` to `fit`.

    Args:
        config: a validated `TrainConfig`.
        shuffle_seed: seed of the shuffles (default: `config.seed`).
        initial_epoch: the first epoch to produce (a resumed run's).

    Returns:
        Batched datasets of `(image, label)`; training batches are
        `(image, label, index)` where the model caches scores.

    Example:

    >>> train, validation = training_datasets(config)
    >>> model.fit(train, epochs=config.epochs, steps_per_epoch=steps_per_epoch(config))
    """
    examples = training_examples(config)
    seed = config.seed if shuffle_seed is None else shuffle_seed
    # A backup of the last epoch leaves nothing to train; fit then reads no batch.
    epochs = range(min(initial_epoch, config.epochs - 1), config.epochs)
    batches = [
        examples.shuffle(10_000, seed=seed * 100_003 + epoch).batch(config.batch_size)
        for epoch in epochs
    ]
    # Epoch after epoch: every batch of the first, then of the second, ...
    steps = steps_per_epoch(config)
    order = tf.data.Dataset.range(len(batches)).flat_map(
        lambda i: tf.data.Dataset.from_tensors(i).repeat(steps)
    )
    train = tf.data.Dataset.choose_from_datasets(batches, order).prefetch(tf.data.AUTOTUNE)
    validation = (
        split_dataset(config, "validation")
        .cache()
        .batch(EVAL_BATCH_SIZE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return train, validation


def smoothing_dataset(config, validation):
    """The batched data AR-AdaLS's eps update is measured on: `validation`
    (batched, from `training_datasets`) or, for `smoothing_data="clean+held-out"`,
    the validation split plus its held-out-corrupted copy."""
    if config.smoothing_data == "clean":
        return validation
    clean = split_dataset(config, "validation")
    # A seed apart from the evaluation's, so that selection on held-out
    # validation shifts does not score the very draws the update saw.
    shifted = corruptions.held_out_copy(clean, seed=CORRUPTION_SEED + 1)
    return clean.concatenate(shifted).cache().batch(EVAL_BATCH_SIZE).prefetch(tf.data.AUTOTUNE)


def make_strategy(name):
    """The `tf.distribute` strategy for `--strategy`, one per process.

    Collectives are configured once per process, so every run of a process
    (a comparison trains many) shares one strategy. `multiworker` reads the
    cluster from `TF_CONFIG` (see `distribution.multi_worker_strategy`).
    """
    if name == "mirrored":
        return _mirrored_strategy()
    if name == "multiworker":
        return distribution.multi_worker_strategy()
    return tf.distribute.get_strategy()


@functools.cache
def _mirrored_strategy():
    return tf.distribute.MirroredStrategy()


def member_seed(config, member):
    """Seed of ensemble member `member` of a run with `config.seed`."""
    return 1000 * config.seed + member


def _ar_adals_settings(config):
    return dict(
        num_strata=config.num_strata,
        eps_max=config.eps_max if config.strata_by == "attack" else None,
        attack_steps=config.attack_steps,
        alpha=config.alpha,
        eps_init=config.eps_init,
        eps_cap=config.eps_cap,
        max_step=config.max_step,
        eps_update=config.eps_update,
        strata_by=config.strata_by,
        attack_loss=config.attack_loss,
        attack_candidates=config.attack_candidates,
        rescore_every=config.rescore_every,
        train_size=train_size(config),
    )


def build_model(config, init_seed=None):
    """Builds and compiles the model a config describes (not yet trained).

    Args:
        config: a validated `TrainConfig`.
        init_seed: seed of the weights (default: `config.seed`).

    Returns:
        A compiled `keras.Model`; for an ar-adals joint ensemble an
        `EnsembleARAdaLSModel` of `ensemble_size` backbones. Call inside the
        strategy's scope for distributed training.
    """
    info = dataset_info(config)
    init_seed = config.seed if init_seed is None else init_seed
    joint = (
        config.method == "ar-adals" and config.ensemble_size > 1 and config.ensemble_mode == "joint"
    )
    members = []
    for member in range(config.ensemble_size if joint else 1):
        keras.utils.set_random_seed(member_seed(config, member) if joint else init_seed)
        members.append(
            backbones.build_backbone(config.backbone, info.image_shape, info.num_classes)
        )
    backbone = members[0]
    compile_metrics = [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        metrics.ExpectedCalibrationError(from_logits=True),
    ]
    optimizer = keras.optimizers.Adam(config.learning_rate)
    if config.method == "ar-adals":
        if joint:
            model = ensemble.EnsembleARAdaLSModel(
                members, info.num_classes, **_ar_adals_settings(config)
            )
        else:
            model = training.ARAdaLSModel(backbone, info.num_classes, **_ar_adals_settings(config))
        model.compile(optimizer=optimizer, metrics=compile_metrics)
        return model
    if config.method == "mixup":
        model = mixup.MixupModel(
            backbone, info.num_classes, alpha=config.mixup_alpha, seed=init_seed
        )
        model.compile(optimizer=optimizer, metrics=compile_metrics)
        return model
    loss = {
        "vanilla": lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "label-smoothing": lambda: losses.SparseLabelSmoothingCrossentropy(config.label_smoothing),
        "focal": lambda: losses.SparseFocalCrossentropy(config.focal_gamma),
    }[config.method]()
    backbone.compile(optimizer=optimizer, loss=loss, metrics=compile_metrics)
    return backbone
