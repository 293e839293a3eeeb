"""Distribution-shift corruptions (CIFAR-10-C / ImageNet-C) as TensorFlow ops.

This package re-implements the common corruptions of Hendrycks & Dietterich
(2019), "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", as pure TensorFlow ops (no NumPy), so that they run inside
`tf.function`, `tf.data` pipelines and on an accelerator.

Images are float32 in `[0, 1]`, NHWC (`[N, H, W, C]`, or a single image
`[H, W, C]`), with `C = 1` (grayscale) or `C = 3` (RGB). Every corruption has
five severities, 1 (mild) to 5 (strong).

Protocol. `CORRUPTIONS`, the test suite, is the benchmark's 15 types in its
order: gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur,
motion_blur, zoom_blur, snow, synthetic_frost, fog, brightness, contrast,
elastic_transform, pixelate, jpeg_compression. `synthetic_frost` replaces
the benchmark's frost, whose photographs cannot be shipped (see
`weather`). `HELD_OUT_CORRUPTIONS` are the benchmark's four extra types,
speckle_noise, gaussian_blur, spatter and saturate, reserved for
validation. `saturate` is defined on RGB images only (a ValueError on
grayscale ones, which `held_out_copy` skips it for).

Constants. Two severity tables are offered through the `table` argument:

- `"cifar10c"` (default): the constants of Hendrycks' CIFAR-10-C generator,
  `ImageNet-C/create_c/make_cifar_c.py` in github.com/hendrycks/robustness.
  It is the default because the images this package works with are small
  (8x8 digits, 28x28 MNIST, 32x32 CIFAR) and this table was tuned for 32x32
  images; the ImageNet-C table was tuned for 224x224 images and is far too
  strong for small images (e.g. Gaussian noise sigma up to 0.38, JPEG
  quality down to 7).
- `"imagenet_c"`: the constants of `ImageNet-C/create_c/make_imagenet_c.py`
  in the same repository.

Image size. Pixel constants of the ops on the image itself (blur sigmas and
radii, glass blur's shuffle distance, the affine part of elastic_transform)
are rescaled by `H / R`, `R` = 32 (CIFAR-10-C table) or 224 (ImageNet-C
table), `H` the image height (images are assumed roughly square); pixelate
and zoom blur are relative anyway. The random layers (snow, frost, spatter,
the elastic displacement field) are drawn on an `R x R` grid with the
reference's pixel constants and resized to the image. Exceptions, kept from
the first version: defocus blur's radius is not rescaled, and fog's plasma
is drawn on the image's own grid.

The definitions, and every deviation from the reference, are in the family
modules' docstrings: `noise` (gaussian, shot, impulse, speckle), `blur`
(defocus, glass, motion, zoom, gaussian), `weather` (snow, synthetic frost,
fog, spatter) and `digital` (brightness, contrast, elastic, pixelate, JPEG,
saturate). In short: the reference's uint8 round trips between steps (PIL,
PNG, `np.uint8`) are not reproduced except where noted; ImageMagick's motion
blur (Wand, also used by snow) is reimplemented with the same kernel; glass
blur's sequential pixel swaps are parallel swaps of disjoint pairs; frost's
photographs are replaced by a procedural texture; spatter's `cv2.Canny`
edges are the liquid mask's boundary.

Randomness is stateless: the draws are a function of `seed`, the index of
the corruption name in `ALL_CORRUPTIONS` and (in `corrupt_dataset`) the
element index, so results are reproducible. The noise types and fog also
fold in the severity; the others (`_constants.SHARED_DRAWS`) give an image
the same draws (angle, shuffle, layer, field) at every severity, so that
severities differ by their constants only.
"""

import numbers

import tensorflow as tf

from aradals_tf.corruptions import blur
from aradals_tf.corruptions import digital
from aradals_tf.corruptions import noise
from aradals_tf.corruptions import weather
from aradals_tf.corruptions._common import base_key
from aradals_tf.corruptions._common import check_channels
from aradals_tf.corruptions._common import check_name
from aradals_tf.corruptions._common import check_seed
from aradals_tf.corruptions._common import check_severity
from aradals_tf.corruptions._common import check_table
from aradals_tf.corruptions._common import corruption_key
from aradals_tf.corruptions._common import to_images
from aradals_tf.corruptions._constants import ALL_CORRUPTIONS
from aradals_tf.corruptions._constants import CONSTANTS
from aradals_tf.corruptions._constants import CORRUPTIONS
from aradals_tf.corruptions._constants import HELD_OUT_CORRUPTIONS
from aradals_tf.corruptions._constants import REFERENCE_SIZE
from aradals_tf.corruptions._constants import RGB_ONLY_CORRUPTIONS
from aradals_tf.corruptions._constants import TABLES

__all__ = [
    "ALL_CORRUPTIONS",
    "CORRUPTIONS",
    "HELD_OUT_CORRUPTIONS",
    "RGB_ONLY_CORRUPTIONS",
    "TABLES",
    "corrupt",
    "corrupt_dataset",
    "held_out_copy",
    "parse_shift",
]

# Kept under their former private names.
_CONSTANTS = CONSTANTS
_REFERENCE_SIZE = REFERENCE_SIZE

_OPS = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "synthetic_frost": weather.synthetic_frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    "speckle_noise": noise.speckle_noise,
    "gaussian_blur": blur.gaussian_blur,
    "spatter": weather.spatter,
    "saturate": digital.saturate,
}
assert tuple(_OPS) == ALL_CORRUPTIONS


def _corrupt(images, name, severity, key, table):
    """Unchecked core of `corrupt`; `key` is an int64 seed pair."""
    single = images.shape.rank == 3
    x = images[tf.newaxis] if single else images
    c = CONSTANTS[table][name][severity - 1]
    out = _OPS[name](x, c, corruption_key(key, name, severity), table)
    out = tf.ensure_shape(out, x.shape)
    return out[0] if single else out


# -------------------------------------------------------------- public API


def corrupt(images, name, severity, *, seed=0, table="cifar10c"):
    """Applies a common corruption (CIFAR-10-C / ImageNet-C) to images.

    Args:
        images: float images in `[0, 1]`, shape `[N, H, W, C]` or a single
            image `[H, W, C]`, with `C` = 1 or 3 (`saturate`: 3 only).
        name: corruption name, one of `ALL_CORRUPTIONS` (the test suite
            `CORRUPTIONS` and the validation types `HELD_OUT_CORRUPTIONS`).
        severity: integer from 1 (mild) to 5 (strong).
        seed: integer (or scalar integer tensor) seeding the stateless random
            ops; the same seed gives the same output.
        table: constants table, `"cifar10c"` (default, for small images) or
            `"imagenet_c"`.

    Returns:
        A float32 tensor of the same shape as `images`, values in `[0, 1]`.

    Raises:
        ValueError: for an unknown name, table or bad severity or seed, for
            images that are not float NHWC with 1 or 3 channels, and for
            `saturate` on grayscale images.

    Example:

    >>> x = tf.random.uniform([4, 28, 28, 1])
    >>> y = corrupt(x, "gaussian_noise", 3, seed=1)
    >>> y.shape
    TensorShape([4, 28, 28, 1])
    """
    check_name(name)
    check_severity(severity)
    check_table(table)
    check_seed(seed)
    images = to_images(images)
    check_channels(name, images.shape[-1])
    return _corrupt(images, name, int(severity), base_key(seed, 0), table)


def parse_shift(spec):
    """Parses a shift specification such as `"gaussian_noise:3"`.

    Args:
        spec: string `"<name>:<severity>"`, with `name` in `ALL_CORRUPTIONS`
            and `severity` an integer from 1 to 5.

    Returns:
        A tuple `(name, severity)`.

    Raises:
        ValueError: if the spec is malformed, the name unknown or the
            severity outside 1..5.

    Example:

    >>> parse_shift("contrast:2")
    ('contrast', 2)
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(
            f"Malformed shift {spec!r}; use '<name>:<severity>' with severity 1-5, "
            "e.g. 'gaussian_noise:3'."
        )
    name, _, level = (part.strip() for part in spec.partition(":"))
    check_name(name)
    try:
        severity = int(level)
    except ValueError:
        raise ValueError(
            f"Invalid severity {level!r} in shift {spec!r}; use an integer from 1 to 5."
        ) from None
    check_severity(severity)
    return name, severity


def _image_spec(dataset):
    spec = dataset.element_spec
    paired = isinstance(spec, tuple)
    if paired and len(spec) != 2:
        raise ValueError(
            f"Dataset elements must be (image, label) pairs or images; got a tuple of {len(spec)}."
        )
    image_spec = spec[0] if paired else spec
    if not isinstance(image_spec, tf.TensorSpec) or image_spec.shape.rank != 3:
        raise ValueError(
            f"Dataset images must be single [H, W, C] images, got {image_spec}; "
            "apply corrupt_dataset before .batch() (or call .unbatch() first)."
        )
    return paired, image_spec


def corrupt_dataset(dataset, name, severity, *, seed=0, table="cifar10c"):
    """Corrupts every image of an unbatched `tf.data.Dataset`, reproducibly.

    Element `i` is corrupted with a seed derived from `(seed, i)` (via
    `dataset.enumerate()`), so the result does not depend on any batching
    or shuffling done afterwards.

    Args:
        dataset: unbatched dataset of `(image, label)` pairs (or of images
            alone), each image float `[H, W, C]` in `[0, 1]`.
        name: corruption name, one of `ALL_CORRUPTIONS`.
        severity: integer from 1 to 5.
        seed: integer seed.
        table: constants table, `"cifar10c"` (default) or `"imagenet_c"`.

    Returns:
        A `tf.data.Dataset` with the same structure, images corrupted
        (float32) and labels unchanged.

    Example:

    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     (tf.random.uniform([8, 28, 28, 1]), tf.range(8)))
    >>> ds = corrupt_dataset(ds, "contrast", 2, seed=0).batch(4)
    """
    check_name(name)
    check_severity(severity)
    check_table(table)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"Invalid seed {seed!r}; use an integer.")
    paired, image_spec = _image_spec(dataset)
    check_channels(name, image_spec.shape[-1])
    severity = int(severity)

    def apply(index, element):
        image = to_images(element[0] if paired else element)
        out = _corrupt(image, name, severity, base_key(seed, index + 1), table)
        return (out, element[1]) if paired else out

    return dataset.enumerate().map(apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def held_out_copy(dataset, *, seed=0, table="cifar10c"):
    """One corrupted copy of a dataset, cycling through the held-out corruptions.

    The examples take `HELD_OUT_CORRUPTIONS` x severities 1-5 in turn (the
    RGB-only `saturate` left out unless the images have 3 channels): with
    `k` combinations, shard `i` (examples `i, i + k, ...`) gets combination
    `i`, and the shards follow each other. Every example appears once, so the
    copy is as large as the dataset. Meant for validation data only, e.g. the
    data `AdaptiveSmoothing` measures calibration on.

    Args:
        dataset: unbatched dataset of `(image, label)` pairs (or of images).
        seed: integer seed of the random corruptions.
        table: constants table, `"cifar10c"` (default) or `"imagenet_c"`.

    Returns:
        A `tf.data.Dataset` with the same structure.

    Example:

    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     (tf.random.uniform([20, 28, 28, 1]), tf.range(20)))
    >>> shift_aware = ds.concatenate(held_out_copy(ds, seed=1)).batch(10)
    """
    channels = _image_spec(dataset)[1].shape[-1]
    names = [
        name for name in HELD_OUT_CORRUPTIONS if channels == 3 or name not in RGB_ONLY_CORRUPTIONS
    ]
    combinations = [(name, severity) for name in names for severity in range(1, 6)]
    parts = [
        corrupt_dataset(dataset.shard(len(combinations), k), name, severity, seed=seed, table=table)
        for k, (name, severity) in enumerate(combinations)
    ]
    copy = parts[0]
    for part in parts[1:]:
        copy = copy.concatenate(part)
    return copy
