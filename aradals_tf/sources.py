"""A user's own data: a folder of images in class subfolders, or `.npz` arrays.

`data.load_dataset` and `data.dataset_info` take, beside the registry's
names, a path:

- a directory of images in one subfolder per class (the layout
  `keras.utils.image_dataset_from_directory` reads); with `train/`,
  `validation/` and `test/` subfolders, each laid out so, those are the
  splits; otherwise the splits are stratified and seeded, as for the
  embedded sets;
- a `.npz` file with arrays `x` (images `[n, h, w]` or `[n, h, w, c]`) and
  `y` (integer labels `[n]`), split the same way.

Pixels are served in [0, 1]: 8-bit images are divided by 255, float arrays
must already lie in [0, 1]. Every image must have the same size, or
`image_size` resizes them. Bad input raises a `ValueError` that names the
problem (an empty folder, one class, mixed sizes, an unreadable file,
labels out of range); the command line prints it as one line.
"""

import dataclasses
import functools
import os

import numpy as np

from aradals_tf.choices import SPLITS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
DEFAULT_VALIDATION_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the package knows about one dataset.

    Attributes:
        name: registry name, or the path of a user's data.
        image_shape: `(height, width, channels)` of one image.
        num_classes: number of classes.
        source: `"embedded"`, `"tfds"`, `"folder"` or `"arrays"`.
        eps_max: default L-inf attack budget in [0, 1] pixel units for the
            robustness measurement (0.3 for MNIST-like data, 8/255 for
            natural images).
        class_names: class names, index = label, or `None` when unknown.
        description: one line for `--help` and error messages.
        splits: the splits the source provides.
    """

    name: str
    image_shape: tuple
    num_classes: int
    source: str
    eps_max: float
    class_names: tuple | None
    description: str
    splits: tuple = SPLITS


def is_user_data(name):
    """Whether `name` names a user's data (an existing folder or a `.npz` file)."""
    return isinstance(name, str) and (os.path.isdir(name) or name.endswith(".npz"))


def parse_image_size(text):
    """`"32"` or `"32x32"` -> `(32, 32)`; None stays None."""
    if text is None or isinstance(text, tuple):
        return text
    parts = str(text).lower().split("x")
    try:
        size = tuple(int(part) for part in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"--image-size must be H or HxW in pixels, e.g. 32x32; got {text!r}.")
    return size


def _class_folders(folder):
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a directory of class subfolders.")
    classes = sorted(
        name
        for name in os.listdir(folder)
        if os.path.isdir(os.path.join(folder, name)) and not name.startswith(".")
    )
    files = []
    for label, name in enumerate(classes):
        for file in sorted(os.listdir(os.path.join(folder, name))):
            if file.lower().endswith(IMAGE_EXTENSIONS):
                files.append((os.path.join(folder, name, file), label))
    if not files:
        raise ValueError(
            f"{folder} holds no images in class subfolders ({', '.join(IMAGE_EXTENSIONS)})."
        )
    if len(classes) < 2:
        raise ValueError(f"{folder} has a single class ({classes[0]}); a classifier needs two.")
    return classes, files


def _read_images(files, image_size, folder):
    """`[n, h, w, c]` uint8 or float pixels in [0, 1] of image files."""
    from PIL import Image

    shapes, images = set(), []
    for path, _ in files:
        try:
            with Image.open(path) as image:
                image.load()
                mode = "L" if image.mode in ("1", "L", "I;16", "I", "F") else "RGB"
                image = image.convert(mode)
                if image_size is not None:
                    image = image.resize((image_size[1], image_size[0]), Image.BILINEAR)
                array = np.asarray(image, np.float32) / 255.0
        except Exception as error:  # PIL raises many kinds for a bad file
            raise ValueError(f"Cannot read image {path}: {type(error).__name__}: {error}") from None
        if array.ndim == 2:
            array = array[..., None]
        shapes.add(array.shape[:2])
        images.append(array)
    if len(shapes) > 1:
        sizes = ", ".join(f"{h}x{w}" for h, w in sorted(shapes)[:4])
        raise ValueError(
            f"The images of {folder} differ in size ({sizes}); pass --image-size HxW "
            "(image_size=(h, w)) to resize them."
        )
    channels = max(image.shape[-1] for image in images)
    if channels == 3:  # a grayscale image among colour ones
        images = [np.repeat(i, 3, axis=-1) if i.shape[-1] == 1 else i for i in images]
    return np.stack(images)


def _stratified_splits(labels, seed, validation_fraction, test_fraction):
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    try:
        rest, test = train_test_split(
            indices, test_size=test_fraction, stratify=labels, random_state=seed
        )
        train, validation = train_test_split(
            rest,
            test_size=validation_fraction * len(labels) / len(rest),
            stratify=labels[rest],
            random_state=seed,
        )
    except ValueError as error:
        raise ValueError(
            f"Too few examples per class to split into train, validation and test ({error})."
        ) from None
    return {"train": train, "validation": validation, "test": test}


def _checked_arrays(images, labels, where):
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{where}: images must be [n, h, w] or [n, h, w, 1 or 3]; got shape {images.shape}."
        )
    if len(images) != len(labels) or labels.ndim != 1:
        raise ValueError(
            f"{where}: y must be [n] labels for the n = {len(images)} images; got {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: labels must be integers 0..K-1; got {labels.dtype}.")
    if labels.min() < 0:
        raise ValueError(f"{where}: labels must be in 0..K-1; found {labels.min()}.")
    if len(np.unique(labels)) < 2:
        raise ValueError(f"{where}: a single class; a classifier needs two.")
    if np.issubdtype(images.dtype, np.integer):
        if images.min() < 0 or images.max() > 255:
            raise ValueError(f"{where}: integer pixels must be 0..255.")
        images = images.astype(np.float32) / 255.0
    elif images.min() < 0 or images.max() > 1:
        raise ValueError(
            f"{where}: float pixels must lie in [0, 1]; they span "
            f"[{images.min():.3g}, {images.max():.3g}] (divide by 255?)."
        )
    return images.astype(np.float32), labels.astype(np.int32)


@functools.lru_cache(maxsize=8)
def _load(path, image_size):
    """`(splits, class_names)`: `{split: (images, labels) or None}` of a path."""
    if os.path.isdir(path):
        names = {name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name))}
        if {"train", "test"} <= names:  # subfolders per split
            classes, splits = None, {}
            for split in SPLITS:
                folder = os.path.join(path, split)
                if not os.path.isdir(folder):
                    splits[split] = None
                    continue
                split_classes, files = _class_folders(folder)
                if classes is not None and split_classes != classes:
                    raise ValueError(
                        f"{folder} has classes {split_classes}; {path}/train has {classes}."
                    )
                classes = split_classes
                images = _read_images(files, image_size, folder)
                splits[split] = (images, np.array([label for _, label in files], np.int32))
            return splits, tuple(classes)
        classes, files = _class_folders(path)
        images = _read_images(files, image_size, path)
        labels = np.array([label for _, label in files], np.int32)
        return {"all": (images, labels)}, tuple(classes)
    if not os.path.isfile(path):
        raise ValueError(f"No such file: {path}.")
    try:
        with np.load(path) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise ValueError(f"{path} must hold arrays 'x' and 'y'; it has {list(arrays)}.")
            images, labels = arrays["x"], arrays["y"]
    except (OSError, EOFError) as error:
        raise ValueError(f"Cannot read {path} as .npz: {error}") from None
    images, labels = _checked_arrays(images, labels, path)
    if image_size is not None:
        import tensorflow as tf

        images = tf.image.resize(images, image_size).numpy()
    return {"all": (images, labels)}, None


def load_arrays(
    path,
    split,
    seed=0,
    *,
    image_size=None,
    validation_fraction=DEFAULT_VALIDATION_FRACTION,
    test_fraction=DEFAULT_TEST_FRACTION,
):
    """One split of a user's data: `(images float32 [n, h, w, c] in [0, 1], labels int32 [n])`.

    Example:

    >>> images, labels = load_arrays("my_images/", "validation", image_size=(32, 32))
    """
    splits, _ = _load(os.path.abspath(path), parse_image_size(image_size))
    if "all" not in splits:
        if split == "train":
            return _train_of(splits, seed)
        if splits.get(split) is not None:
            return splits[split]
        if split != "validation":
            raise ValueError(f"{path} has no {split}/ subfolder.")
        # train/ and test/ only: validation is a stratified tenth of train/.
        images, labels = splits["train"]
        parts = _stratified_splits(labels, seed, 0.1, 0.1)
        return images[parts["validation"]], labels[parts["validation"]]
    images, labels = splits["all"]
    indices = _stratified_splits(labels, seed, validation_fraction, test_fraction)[split]
    return images[indices], labels[indices]


def _train_of(splits, seed):
    """train/ less the tenth that serves as validation when there is no validation/."""
    images, labels = splits["train"]
    if splits.get("validation") is None:
        kept = np.setdiff1d(
            np.arange(len(labels)), _stratified_splits(labels, seed, 0.1, 0.1)["validation"]
        )
        return images[kept], labels[kept]
    return images, labels


def dataset_info(path, image_size=None):
    """The `DatasetInfo` of a user's data (loading it once)."""
    splits, classes = _load(os.path.abspath(path), parse_image_size(image_size))
    present = [value for value in splits.values() if value is not None]
    images = present[0][0]
    num_classes = len(classes) if classes else int(max(labels.max() for _, labels in present)) + 1
    for value in splits.values():
        if value is not None and value[1].max() >= num_classes:
            raise ValueError(f"{path}: labels must be in 0..{num_classes - 1}.")
    shape = tuple(int(d) for d in images.shape[1:])
    return DatasetInfo(
        name=path,
        image_shape=shape,
        num_classes=num_classes,
        source="folder" if os.path.isdir(path) else "arrays",
        eps_max=0.3 if shape[-1] == 1 else 8 / 255,
        class_names=classes,
        description=f"{len(images)} images from {path}",
    )
