"""Shared pieces of the corruption ops: argument checks, stateless keys,
border handling, and the linear filters several families use.

Every op has the signature `op(x, c, key, table)`: `x` a float32 batch
`[N, H, W, C]`, `c` the severity's constants from the table, `key` an int64
seed pair for the stateless random ops, `table` the table's name.
"""

import math
import numbers

import tensorflow as tf

from aradals_tf.corruptions._constants import ALL_CORRUPTIONS
from aradals_tf.corruptions._constants import CONSTANTS
from aradals_tf.corruptions._constants import RGB_ONLY_CORRUPTIONS
from aradals_tf.corruptions._constants import SHARED_DRAWS
from aradals_tf.corruptions._constants import TABLES

# OpenCV's RGB -> grey weights (ITU-R BT.601), as `cv2.COLOR_RGB2GRAY`.
LUMA = (0.299, 0.587, 0.114)

# ----------------------------------------------------------------- checking


def check_name(name):
    if not isinstance(name, str) or name not in ALL_CORRUPTIONS:
        raise ValueError(f"Unknown corruption {name!r}; use one of: {', '.join(ALL_CORRUPTIONS)}.")


def check_severity(severity):
    if (
        isinstance(severity, bool)
        or not isinstance(severity, numbers.Integral)
        or not 1 <= severity <= 5
    ):
        raise ValueError(f"Invalid severity {severity!r}; use an integer from 1 to 5.")


def check_table(table):
    if not isinstance(table, str) or table not in CONSTANTS:
        raise ValueError(f"Unknown constants table {table!r}; use one of: {', '.join(TABLES)}.")


def check_seed(seed):
    if isinstance(seed, bool):
        raise ValueError(f"Invalid seed {seed!r}; use an integer.")
    if isinstance(seed, numbers.Integral):
        return
    if isinstance(seed, (tf.Tensor, tf.Variable)) and seed.dtype.is_integer:
        if seed.shape.rank in (None, 0):
            return
    raise ValueError(f"Invalid seed {seed!r}; use an integer (or a scalar integer tensor).")


def check_channels(name, channels):
    """Rejects RGB-only corruptions on grayscale images (channels None: unknown)."""
    if name in RGB_ONLY_CORRUPTIONS and channels == 1:
        raise ValueError(
            f"Corruption {name!r} needs RGB images (3 channels): HSV saturation is zero for "
            "grayscale pixels; leave it out for 1-channel images."
        )


def to_images(images):
    """Converts to a float32 tensor and checks rank and channels."""
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        raise ValueError(
            f"Images must be floats in [0, 1], got dtype {images.dtype.name}; "
            "convert with tf.image.convert_image_dtype(images, tf.float32)."
        )
    rank = images.shape.rank
    if rank not in (3, 4):
        raise ValueError(
            f"Images must have rank 3 [H, W, C] or 4 [N, H, W, C], got shape "
            f"{images.shape}; reshape them first."
        )
    channels = images.shape[-1]
    if channels is not None and channels not in (1, 3):
        raise ValueError(
            f"Images must have 1 or 3 channels (NHWC), got shape {images.shape}; "
            "pass grayscale or RGB images, channels last."
        )
    return tf.cast(images, tf.float32)


def static_shape(x, name):
    """`(H, W, C)` as Python ints; ops that build resampling matrices or
    colour layers need them known when the graph is built."""
    h, w, c = x.shape[1:]
    if h is None or w is None or c is None:
        raise ValueError(
            f"Corruption {name!r} needs images of static height, width and channels, got "
            f"shape {x.shape}; set them (e.g. tf.ensure_shape) before corrupting."
        )
    return int(h), int(w), int(c)


# ------------------------------------------------------------------- seeds


def base_key(seed, index):
    """Seed pair [seed, index] for the stateless random ops."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])


def corruption_key(key, name, severity):
    """Mixes the corruption name's index (in `ALL_CORRUPTIONS`) and, unless
    the corruption shares its draws across severities, the severity."""
    key = tf.random.experimental.stateless_fold_in(key, ALL_CORRUPTIONS.index(name))
    if name in SHARED_DRAWS:
        return key
    return tf.random.experimental.stateless_fold_in(key, severity)


def split(key, count):
    return tf.random.experimental.stateless_split(key, count)


# ---------------------------------------------------------------- helpers


def clip(x):
    return tf.clip_by_value(x, 0.0, 1.0)


def grey(x):
    """`[N, H, W, 1]` luma of RGB images (`cv2.COLOR_RGB2GRAY`); grey images as they are."""
    if x.shape[-1] == 1:
        return x
    return tf.reduce_sum(x * tf.constant(LUMA, x.dtype), axis=-1, keepdims=True)


def colour(rgb, channels):
    """An RGB colour in [0, 1] as a `[channels]` constant: itself for RGB
    images, its luma for grayscale ones."""
    if channels == 3:
        return tf.constant(rgb, tf.float32)
    return tf.constant([sum(w * v for w, v in zip(LUMA, rgb))], tf.float32)


def border_index(index, size, mode):
    """Maps integer indices of any range into `[0, size)`.

    `mode`: `"nearest"` (aaa|abcd|ddd, skimage's default), `"reflect"`
    (scipy's half-sample reflection, dcba|abcd|dcba, repeated) or
    `"reflect101"` (OpenCV's default border and tf.pad's REFLECT,
    dcb|abcd|cba, repeated).
    """
    if mode == "nearest":
        return tf.clip_by_value(index, 0, size - 1)
    if mode == "reflect":
        period = 2 * size
        index = tf.math.floormod(index, period)
        return tf.where(index < size, index, period - 1 - index)
    if mode == "reflect101":
        if size == 1:
            return tf.zeros_like(index)
        period = 2 * size - 2
        index = tf.math.floormod(index, period)
        return tf.where(index < size, index, period - index)
    raise ValueError(f"Unknown border mode {mode!r}.")


def gaussian_matrix(size, sigma, truncate=4.0, mode="nearest"):
    """`[size, size]` matrix of a 1-D Gaussian filter with a border mode, as
    scipy.ndimage.gaussian_filter1d (radius `int(truncate * sigma + 0.5)`).

    The border is folded into the matrix, so a radius larger than the image
    (ImageNet-C's elastic field) costs no more than a small one.
    """
    sigma = float(sigma)
    if sigma == 0.0:
        return tf.eye(size)
    radius = int(truncate * sigma + 0.5)
    taps = tf.range(-radius, radius + 1)
    weights = tf.exp(-0.5 * tf.square(tf.cast(taps, tf.float64) / sigma))
    weights = weights / tf.reduce_sum(weights)
    rows = tf.repeat(tf.range(size), 2 * radius + 1)
    cols = border_index(tf.reshape(tf.range(size)[:, None] + taps[None, :], [-1]), size, mode)
    matrix = tf.scatter_nd(
        tf.stack([rows, cols], axis=1), tf.tile(weights, [size]), [size, size]
    )  # duplicates (folded borders) add up
    return tf.cast(matrix, tf.float32)


def separable(x, rows, cols):
    """Applies `[H, H]` and `[W, W]` matrices to `[N, H, W, C]` (or `[N, H, W]`)."""
    if x.shape.rank == 3:
        return tf.einsum("ij,njk,lk->nil", rows, x, cols)
    return tf.einsum("ij,njkc,lk->nilc", rows, x, cols)


def blur_1d(x, kernel, radius, axis):
    """1-D convolution along `axis` (1 or 2) of [M, H, W, 1], 'nearest' edges."""
    size = tf.shape(x)[axis]
    index = tf.clip_by_value(tf.range(-radius, size + radius), 0, size - 1)
    padded = tf.gather(x, index, axis=axis)
    if axis == 1:
        filters = tf.reshape(kernel, [-1, 1, 1, 1])
    else:
        filters = tf.reshape(kernel, [1, -1, 1, 1])
    return tf.nn.conv2d(padded, filters, strides=1, padding="VALID")


def filter_planes(x, filter_fn):
    """Applies `filter_fn` to every channel of every image as its own plane:
    [N, H, W, C] -> [N * C, H, W, 1] -> `filter_fn` -> back to [N, H, W, C]."""
    shape = tf.shape(x)
    n, h, w, ch = shape[0], shape[1], shape[2], shape[3]
    planes = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [n * ch, h, w, 1])
    planes = filter_fn(planes)
    return tf.transpose(tf.reshape(planes, [n, ch, h, w]), [0, 2, 3, 1])


def gaussian_nearest(x, sigma):
    """skimage.filters.gaussian (truncate 4, mode 'nearest') of every plane;
    `sigma` in pixels (a float or a float64 scalar tensor)."""
    sigma = tf.cast(sigma, tf.float64)
    radius = tf.cast(tf.floor(4.0 * sigma + 0.5), tf.int32)
    t = tf.cast(tf.range(-radius, radius + 1), tf.float64)
    kernel = tf.exp(-0.5 * tf.square(t / sigma))
    kernel = tf.cast(kernel / tf.reduce_sum(kernel), tf.float32)

    def blur(planes):
        planes = blur_1d(planes, kernel, radius, axis=1)
        return blur_1d(planes, kernel, radius, axis=2)

    return filter_planes(x, blur)


def motion_kernel(radius, sigma):
    """ImageMagick's `MotionBlurImage` weights: a one-sided Gaussian,
    `exp(-i^2 / (2 sigma^2))` for `i = 0 .. 2 * ceil(radius)`, normalised.

    Taps below 1e-6 of the first are dropped: they cannot move an 8-bit
    output, and keeping them would only order nearly equal severities by
    rounding noise.
    """
    width = 2 * math.ceil(radius) + 1 if radius > 0 else 1
    weights = [math.exp(-(i * i) / (2.0 * sigma * sigma)) for i in range(width)]
    weights = [w for w in weights if w >= 1e-6]
    total = sum(weights)
    return [w / total for w in weights]


def line_blur(x, angles, weights):
    """Weighted sum of `x` along a line, per image: ImageMagick's motion blur.

    Output pixel `(r, c)` is `sum_i w_i x[r + dy_i, c + dx_i]` with the
    integer offsets `dx_i = round(i cos(angle))`, `dy_i = round(i sin(angle))`
    (ImageMagick's `ceil(v - 0.5)`), rows pointing down, and edge pixels
    repeated outside the image (ImageMagick's default virtual pixels).

    Args:
        x: `[N, H, W, C]`.
        angles: `[N]` angles in degrees.
        weights: Python list of tap weights, tap `i` at distance `i`.
    """
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    radians = tf.cast(angles, tf.float64) * (math.pi / 180.0)
    steps = tf.range(len(weights), dtype=tf.float64)[None, :]
    dx = tf.cast(tf.math.ceil(steps * tf.cos(radians)[:, None] - 0.5), tf.int32)  # [N, T]
    dy = tf.cast(tf.math.ceil(steps * tf.sin(radians)[:, None] - 0.5), tf.int32)
    rows = tf.clip_by_value(tf.range(h)[None, None, :] + dy[:, :, None], 0, h - 1)  # [N, T, H]
    cols = tf.clip_by_value(tf.range(w)[None, None, :] + dx[:, :, None], 0, w - 1)  # [N, T, W]
    taps = tf.gather(x, rows, axis=1, batch_dims=1)  # [N, T, H, W, C]
    taps = tf.gather(taps, cols, axis=3, batch_dims=2)
    kernel = tf.constant(weights, tf.float32)[None, :, None, None, None]
    return tf.reduce_sum(taps * kernel, axis=1)


def resize_layer(layer, h, w):
    """A `[N, R, R, 1]` layer drawn on the reference grid, resized to `h x w`
    (bilinear, antialiased when shrinking)."""
    if layer.shape[1] == h and layer.shape[2] == w:
        return layer
    return tf.image.resize(layer, [h, w], method="bilinear", antialias=True)
