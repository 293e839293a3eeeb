"""TensorFlow Datasets as the package serves them: `(image, label)` in [0, 1].

The registry's tfds names (`mnist`, `cifar10`, ..., `cifar10_corrupted/...`)
and any TFDS image classification dataset as `tfds:NAME[/CONFIG]`: its
image shape and classes from the builder's info, its validation split the
dataset's own or the last 10 % of train. Nothing is downloaded unless asked;
missing data is an error that says how to prepare it.
"""

import difflib

import tensorflow as tf

from aradals_tf.choices import SPLITS
from aradals_tf.sources import DatasetInfo

TFDS_PREFIX = "tfds:"


def split_base_name(name):
    """`"cifar10_corrupted/fog_3"` -> `("cifar10_corrupted", "fog_3")`."""
    base, _, config = name.partition("/")
    return base, config or None


def _tfds_builder(name, data_dir):
    import tensorflow_datasets as tfds

    base = name.split("/")[0]
    known = tfds.list_builders()
    if base not in known:
        close = difflib.get_close_matches(base, known, n=5, cutoff=0.6)
        hint = f"; close ones: {', '.join(close)}" if close else ""
        raise ValueError(f"tfds has no dataset {base!r}{hint}.")
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises its own kinds for bad configs
        raise ValueError(f"tfds cannot build {name!r}: {str(error).splitlines()[0]}") from None


def tfds_info(name, data_dir, image_size):
    builder = _tfds_builder(name, data_dir)
    features = builder.info.features
    keys = builder.info.supervised_keys
    if not keys or keys[0] not in features or keys[1] not in features:
        raise ValueError(f"tfds:{name} has no (image, label) supervised keys to classify.")
    image, label = features[keys[0]], features[keys[1]]
    shape = tuple(image.shape)
    if len(shape) != 3 or shape[-1] not in (1, 3) or not hasattr(label, "num_classes"):
        raise ValueError(f"tfds:{name} is not an image classification dataset (image {shape}).")
    if image_size is not None:
        shape = (*image_size, shape[-1])
    if None in shape:
        raise ValueError(f"tfds:{name} has images of varying size: pass --image-size HxW.")
    available = builder.info.splits
    splits = tuple(
        split
        for split in SPLITS
        if split in available or (split == "validation" and "train" in available)
    )
    names = getattr(label, "names", None)
    return DatasetInfo(
        name=TFDS_PREFIX + name,
        image_shape=shape,
        num_classes=int(label.num_classes),
        source="tfds",
        eps_max=0.3 if shape[-1] == 1 else 8 / 255,
        class_names=tuple(names) if names else None,
        description=f"tfds:{name} (needs prepared tfds data)",
        splits=splits,
    )


def cifar10_corrupted_configs():
    """Returns the `<corruption>_<severity>` configurations tfds knows."""
    import tensorflow_datasets as tfds

    builder_cls = tfds.builder_cls("cifar10_corrupted")
    return tuple(config.name for config in builder_cls.BUILDER_CONFIGS)


def _tfds_split(split, validation_fraction):
    """Maps our split names onto tfds's slicing syntax."""
    percent = round(100 * (1 - validation_fraction))
    return {
        "train": f"train[:{percent}%]",
        "validation": f"train[{percent}%:]",
        "test": "test",
    }[split]


def load_tfds(name, split, data_dir, download, validation_fraction, image_size=None):
    import tensorflow_datasets as tfds

    generic = name.startswith(TFDS_PREFIX)
    name = name.removeprefix(TFDS_PREFIX)
    base, config = split_base_name(name)
    if base == "cifar10_corrupted":
        valid = cifar10_corrupted_configs()
        if config not in valid:
            raise ValueError(
                "cifar10_corrupted needs a configuration "
                "cifar10_corrupted/<corruption>_<severity>; valid ones: "
                f"{', '.join(valid)}."
            )
    tfds_split = _tfds_split(split, validation_fraction)
    if generic and split == "validation":
        if "validation" in _tfds_builder(name, data_dir).info.splits:
            tfds_split = "validation"  # the dataset's own; else the end of train
    try:
        dataset = tfds.load(
            name,
            split=tfds_split,
            data_dir=data_dir,
            download=download,
            as_supervised=True,
            shuffle_files=False,
        )
    except (AssertionError, FileNotFoundError) as error:
        where = data_dir or "the default tfds data dir (~/tensorflow_datasets)"
        raise FileNotFoundError(
            f"tfds has no prepared data for {name!r} in {where}: prepare it "
            f"with `tfds build {base}` on a machine with internet, then pass "
            "--data-dir DIR (data_dir=DIR in Python) pointing to that "
            f"directory. ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})"
        ) from None

    def to_float(image, label):
        image = tf.cast(image, tf.float32) / 255.0
        if image_size is not None:
            image = tf.image.resize(image, image_size)
        return image, tf.cast(label, tf.int32)

    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
