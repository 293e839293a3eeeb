"""Distribution-shift corruptions (CIFAR-10-C / ImageNet-C) as TensorFlow ops.

This module re-implements a subset of the common corruptions of Hendrycks &
Dietterich (2019), "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", as pure TensorFlow ops (no NumPy), so that
they run inside `tf.function`, `tf.data` pipelines and on an accelerator.

Images are float32 in `[0, 1]`, NHWC (`[N, H, W, C]`, or a single image
`[H, W, C]`), with `C = 1` (grayscale) or `C = 3` (RGB). Every corruption has
five severities, 1 (mild) to 5 (strong).

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

Geometry-dependent constants are rescaled to the image size:
`gaussian_blur` uses `sigma * H / 32` with the CIFAR-10-C table and
`sigma * H / 224` with the ImageNet-C table (H is the image height; images are
assumed roughly square), and `pixelate` is defined as a fraction of the size
anyway. Note that for 8x8 images the rescaled blur at the lowest severities
(sigma 0.1 and 0.15 pixels) is numerically the identity in float32.

Definitions (per image, after Hendrycks' code):

- `gaussian_noise`: `clip(x + N(0, c^2))`.
- `shot_noise`: `clip(Poisson(x * c) / c)`.
- `impulse_noise`: salt-and-pepper (skimage `random_noise(mode="s&p")`,
  `salt_vs_pepper=0.5`): each value is, with probability `c`, replaced by 0
  or 1 with equal probability.
- `speckle_noise`: `clip(x + x * N(0, c^2))`.
- `gaussian_blur`: Gaussian filter with the rescaled sigma, truncated at
  `radius = int(4 * sigma + 0.5)` (as scipy/skimage), separable, with
  skimage's default boundary mode `"nearest"` (edge replication, implemented
  by gathering clamped indices, not `tf.pad`).
- `brightness`: add `c` to V in HSV (`tf.image.rgb_to_hsv`); for 1 channel,
  V is the pixel itself: `clip(x + c)`.
- `contrast`: `clip((x - mean) * c + mean)`, mean over height and width per
  image and channel.
- `pixelate`: PIL `BOX` downsampling to `int(H * c) x int(W * c)` (at most
  `H - 1`, at least 1), then PIL `BOX` upsampling back to `H x W` (which is
  nearest neighbour), as Hendrycks' `x.resize(..., PIL.Image.BOX)` twice.
  The PIL filter is reproduced exactly as a resampling matrix; it is used
  instead of `tf.image.resize(method="area")`, whose pixel grid is shifted
  by half a pixel for non-integer ratios (a much stronger and, across
  severities, non-monotone change for mild downsampling).
- `jpeg_compression`: JPEG encode/decode at quality `c` of the image
  quantised to uint8 (`tf.image.adjust_jpeg_quality`).

Held-out types (`HELD_OUT_CORRUPTIONS`, never in a test suite; for the
validation split only):

- `defocus_blur`: correlation with Hendrycks' anti-aliased disk kernel
  (radius `c[0]` pixels, alias blur `c[1]`), reflect-101 borders as
  `cv2.filter2D`. The radius is not rescaled to the image size.
- `fog`: `clip((x + c[0] * P) * m / (m + c[0]))`, `m` the image's maximum and
  `P` a diamond-square plasma fractal in [0, 1] (wibble decay `c[1]`) on the
  next power-of-two grid, cropped to the image, one per image.

Randomness is stateless: the noise is a function of `seed`, the index of the
corruption name in `ALL_CORRUPTIONS` and the severity (and, in
`corrupt_dataset`, of the element index), so results are reproducible.
"""

import numbers

import tensorflow as tf

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "gaussian_blur",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
)

# Held out of every test suite: used only on the validation split (model
# selection, shift-aware smoothing updates), so that choices informed by
# shifted data never see a corruption type they are evaluated on. One per
# family that the test suite's types leave free, as CIFAR-10-C holds out
# speckle noise, gaussian blur, spatter and saturate (two of which are test
# types here, and saturate is the identity on grayscale images).
HELD_OUT_CORRUPTIONS = (
    "defocus_blur",
    "fog",
)

ALL_CORRUPTIONS = CORRUPTIONS + HELD_OUT_CORRUPTIONS

TABLES = ("cifar10c", "imagenet_c")

# Severity constants, severities 1..5, copied from Hendrycks' generators in
# github.com/hendrycks/robustness:
#   "cifar10c":   ImageNet-C/create_c/make_cifar_c.py
#   "imagenet_c": ImageNet-C/create_c/make_imagenet_c.py
_CONSTANTS = {
    "cifar10c": {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
        "jpeg_compression": (80, 65, 58, 50, 40),
        "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    },
    "imagenet_c": {
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
        "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (25, 18, 15, 10, 7),
        "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    },
}

# Image side length each table was designed for (used to rescale blur sigma).
_REFERENCE_SIZE = {"cifar10c": 32, "imagenet_c": 224}


# ----------------------------------------------------------------- checking


def _check_name(name):
    if not isinstance(name, str) or name not in ALL_CORRUPTIONS:
        raise ValueError(f"Unknown corruption {name!r}; use one of: {', '.join(ALL_CORRUPTIONS)}.")


def _check_severity(severity):
    if (
        isinstance(severity, bool)
        or not isinstance(severity, numbers.Integral)
        or not 1 <= severity <= 5
    ):
        raise ValueError(f"Invalid severity {severity!r}; use an integer from 1 to 5.")


def _check_table(table):
    if not isinstance(table, str) or table not in _CONSTANTS:
        raise ValueError(f"Unknown constants table {table!r}; use one of: {', '.join(TABLES)}.")


def _check_seed(seed):
    if isinstance(seed, bool):
        raise ValueError(f"Invalid seed {seed!r}; use an integer.")
    if isinstance(seed, numbers.Integral):
        return
    if isinstance(seed, (tf.Tensor, tf.Variable)) and seed.dtype.is_integer:
        if seed.shape.rank in (None, 0):
            return
    raise ValueError(f"Invalid seed {seed!r}; use an integer (or a scalar integer tensor).")


def _to_images(images):
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


# ------------------------------------------------------------------- seeds


def _base_key(seed, index):
    """Seed pair [seed, index] for the stateless random ops."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])


def _corruption_key(base_key, name, severity):
    """Mixes the corruption name index and the severity into `base_key`."""
    key = tf.random.experimental.stateless_fold_in(base_key, ALL_CORRUPTIONS.index(name))
    return tf.random.experimental.stateless_fold_in(key, severity)


# ---------------------------------------------------------- corruption ops


def _clip(x):
    return tf.clip_by_value(x, 0.0, 1.0)


def _gaussian_noise(x, c, key, table):
    return _clip(x + c * tf.random.stateless_normal(tf.shape(x), seed=key))


def _shot_noise(x, c, key, table):
    counts = tf.random.stateless_poisson(tf.shape(x), seed=key, lam=x * c, dtype=tf.float32)
    return _clip(counts / c)


def _impulse_noise(x, c, key, table):
    keys = tf.random.experimental.stateless_split(key, 2)
    flipped = tf.random.stateless_uniform(tf.shape(x), seed=keys[0]) < c
    salted = tf.random.stateless_uniform(tf.shape(x), seed=keys[1]) < 0.5
    noisy = tf.where(flipped, tf.where(salted, 1.0, 0.0), x)
    return _clip(noisy)


def _speckle_noise(x, c, key, table):
    return _clip(x + x * c * tf.random.stateless_normal(tf.shape(x), seed=key))


def _blur_1d(x, kernel, radius, axis):
    """1-D convolution along `axis` (1 or 2) of [M, H, W, 1], 'nearest' edges."""
    size = tf.shape(x)[axis]
    index = tf.clip_by_value(tf.range(-radius, size + radius), 0, size - 1)
    padded = tf.gather(x, index, axis=axis)
    if axis == 1:
        filters = tf.reshape(kernel, [-1, 1, 1, 1])
    else:
        filters = tf.reshape(kernel, [1, -1, 1, 1])
    return tf.nn.conv2d(padded, filters, strides=1, padding="VALID")


def _filter_planes(x, filter_fn):
    """Applies `filter_fn` to every channel of every image as its own plane:
    [N, H, W, C] -> [N * C, H, W, 1] -> `filter_fn` -> back to [N, H, W, C]."""
    shape = tf.shape(x)
    n, h, w, ch = shape[0], shape[1], shape[2], shape[3]
    planes = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [n * ch, h, w, 1])
    planes = filter_fn(planes)
    return tf.transpose(tf.reshape(planes, [n, ch, h, w]), [0, 2, 3, 1])


def _gaussian_blur(x, c, key, table):
    sigma = c * tf.cast(tf.shape(x)[1], tf.float64) / _REFERENCE_SIZE[table]
    # Same truncation as scipy.ndimage.gaussian_filter / skimage (truncate=4).
    radius = tf.cast(tf.floor(4.0 * sigma + 0.5), tf.int32)
    t = tf.cast(tf.range(-radius, radius + 1), tf.float64)
    kernel = tf.exp(-0.5 * tf.square(t / sigma))
    kernel = tf.cast(kernel / tf.reduce_sum(kernel), tf.float32)

    def blur(planes):
        planes = _blur_1d(planes, kernel, radius, axis=1)
        return _blur_1d(planes, kernel, radius, axis=2)

    return _clip(_filter_planes(x, blur))


def _brightness(x, c, key, table):
    def gray():
        return _clip(x + c)

    def rgb():
        hsv = tf.image.rgb_to_hsv(x)
        hue, sat, val = tf.unstack(hsv, axis=-1)
        hsv = tf.stack([hue, sat, _clip(val + c)], axis=-1)
        return _clip(tf.image.hsv_to_rgb(hsv))

    channels = x.shape[-1]
    if channels is None:  # only known when run
        return tf.cond(tf.equal(tf.shape(x)[-1], 1), gray, rgb)
    return gray() if channels == 1 else rgb()


def _contrast(x, c, key, table):
    means = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    return _clip((x - means) * c + means)


def _box_weights(in_size, out_size):
    """[out, in] resampling matrix of PIL's BOX filter (`Image.resize`).

    As Pillow's Resample.c: output pixel `i` averages, with equal weights, the
    input pixels `x` whose offset `(x - center + 0.5) / filterscale` lies in
    (-0.5, 0.5], where `center = (i + 0.5) * in / out` and
    `filterscale = max(in / out, 1)`. Upsampling is thus nearest neighbour.
    """
    in_f = tf.cast(in_size, tf.float64)
    scale = in_f / tf.cast(out_size, tf.float64)
    inv_filterscale = 1.0 / tf.maximum(scale, 1.0)
    center = (tf.cast(tf.range(out_size), tf.float64) + 0.5) * scale
    t = tf.cast(tf.range(in_size), tf.float64)[tf.newaxis, :] - center[:, tf.newaxis] + 0.5
    t = t * inv_filterscale
    weights = tf.cast((t > -0.5) & (t <= 0.5), tf.float64)
    weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
    return weights


def _pixelate_matrix(size, c):
    """[size, size] matrix: BOX down to int(size * c) pixels, BOX back up."""
    small = tf.cast(tf.floor(tf.cast(size, tf.float64) * c), tf.int32)
    small = tf.maximum(tf.minimum(small, size - 1), 1)  # always change, never empty
    down = _box_weights(size, small)  # [small, size]
    up = _box_weights(small, size)  # [size, small]
    return tf.cast(tf.matmul(up, down), tf.float32)


def _pixelate(x, c, key, table):
    shape = tf.shape(x)
    rows = _pixelate_matrix(shape[1], c)
    cols = _pixelate_matrix(shape[2], c)
    out = tf.einsum("ij,njkc,lk->nilc", rows, x, cols)
    return _clip(tf.ensure_shape(out, x.shape))


def _jpeg_compression(x, c, key, table):
    quantised = tf.cast(tf.round(_clip(x) * 255.0), tf.uint8)

    def one(image):
        out = tf.image.adjust_jpeg_quality(image, int(c))
        return tf.reshape(out, tf.shape(image))

    out = tf.map_fn(one, quantised, fn_output_signature=tf.uint8)
    out = tf.ensure_shape(out, x.shape)
    return tf.cast(out, tf.float32) / 255.0


def _disk_kernel(radius, alias_blur):
    """Hendrycks' `disk`: an aliased disk of `radius` pixels, normalised, then
    smoothed by OpenCV's Gaussian (3x3, or 5x5 for radii above 8) of sigma
    `alias_blur`; cropped to its support, where the rest of Hendrycks'
    17x17 (or larger) grid is zero."""
    blur_half = 1 if radius <= 8 else 2
    half = int(radius) + blur_half
    t = tf.range(-half - blur_half, half + blur_half + 1, dtype=tf.float64)
    disk = tf.cast(t[:, None] ** 2 + t[None, :] ** 2 <= radius**2, tf.float64)
    disk = disk / tf.reduce_sum(disk)
    offsets = tf.range(-blur_half, blur_half + 1, dtype=tf.float64)
    g = tf.exp(-tf.square(offsets) / (2.0 * alias_blur**2))
    g = g / tf.reduce_sum(g)
    # The disk sits `blur_half` pixels inside the padded grid, so OpenCV's
    # border (reflect-101) never meets a non-zero value: a VALID pass is exact.
    smoothed = tf.nn.conv2d(
        disk[None, :, :, None], (g[:, None] * g[None, :])[:, :, None, None], 1, "VALID"
    )
    return tf.cast(smoothed[0, :, :, 0], tf.float32)


def _defocus_blur(x, c, key, table):
    # The kernel keeps the table's pixel radius (not rescaled to the image
    # size): rescaled sub-pixel radii make the disk degenerate and the
    # severities non-monotone.
    kernel = _disk_kernel(*c)
    half = kernel.shape[0] // 2

    def blur(planes):
        # cv2.filter2D's default border is reflect-101, which is tf.pad's REFLECT.
        planes = tf.pad(planes, [[0, 0], [half, half], [half, half], [0, 0]], mode="REFLECT")
        return tf.nn.conv2d(planes, kernel[:, :, None, None], 1, "VALID")

    return _clip(_filter_planes(x, blur))


def _plasma_fractal(key, count, mapsize, wibble_decay):
    """`count` diamond-square height maps, `[count, mapsize, mapsize]` in [0, 1].

    Hendrycks' `plasma_fractal` (periodic diamond-square, initial wibble 100,
    divided by `wibble_decay` at each level), built level by level: at each
    level the corner grid `C` gets its square centres `S` and its diamond
    points (`T` between horizontal neighbours, `L` between vertical ones),
    and the four are interleaved into a grid twice as fine.
    """
    grid = tf.zeros([count, 1, 1], tf.float64)
    wibble = 100.0
    level = 0
    while grid.shape[1] < mapsize:
        keys = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(key, level), 3
        )

        def wibbled_mean(total, k, wibble=wibble):
            noise = tf.random.stateless_uniform(
                tf.shape(total), seed=k, minval=-1.0, maxval=1.0, dtype=tf.float64
            )
            return total / 4.0 + wibble * wibble * noise

        right = tf.roll(grid, -1, axis=2)
        down = tf.roll(grid, -1, axis=1)
        centres = wibbled_mean(grid + right + down + tf.roll(down, -1, axis=2), keys[0])
        top = wibbled_mean(centres + tf.roll(centres, 1, axis=1) + grid + right, keys[1])
        left = wibbled_mean(centres + tf.roll(centres, 1, axis=2) + grid + down, keys[2])
        size = grid.shape[1]
        even_rows = tf.reshape(tf.stack([grid, top], axis=-1), [count, size, 2 * size])
        odd_rows = tf.reshape(tf.stack([left, centres], axis=-1), [count, size, 2 * size])
        grid = tf.reshape(tf.stack([even_rows, odd_rows], axis=2), [count, 2 * size, 2 * size])
        wibble /= wibble_decay
        level += 1
    grid = grid - tf.reduce_min(grid, axis=[1, 2], keepdims=True)
    return grid / tf.reduce_max(grid, axis=[1, 2], keepdims=True)


def _fog(x, c, key, table):
    strength, wibble_decay = c
    size = max(int(x.shape[1]), int(x.shape[2]))
    mapsize = 1 << (size - 1).bit_length()  # next power of two, as 32 for 32 and 256 for 224
    n = tf.shape(x)[0]
    maps = _plasma_fractal(key, n, mapsize, wibble_decay)
    fog = tf.cast(maps[:, : x.shape[1], : x.shape[2], None], tf.float32)
    max_value = tf.reduce_max(x, axis=[1, 2, 3], keepdims=True)
    return _clip((x + strength * fog) * max_value / (max_value + strength))


_OPS = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "brightness": _brightness,
    "contrast": _contrast,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
    "defocus_blur": _defocus_blur,
    "fog": _fog,
}


def _corrupt(images, name, severity, base_key, table):
    """Unchecked core of `corrupt`; `base_key` is an int64 seed pair."""
    single = images.shape.rank == 3
    x = images[tf.newaxis] if single else images
    c = _CONSTANTS[table][name][severity - 1]
    key = _corruption_key(base_key, name, severity)
    out = _OPS[name](x, c, key, table)
    out = tf.ensure_shape(out, x.shape)
    return out[0] if single else out


# -------------------------------------------------------------- public API


def corrupt(images, name, severity, *, seed=0, table="cifar10c"):
    """Applies a common corruption (CIFAR-10-C / ImageNet-C) to images.

    Args:
        images: float images in `[0, 1]`, shape `[N, H, W, C]` or a single
            image `[H, W, C]`, with `C` = 1 or 3.
        name: corruption name, one of `CORRUPTIONS`.
        severity: integer from 1 (mild) to 5 (strong).
        seed: integer (or scalar integer tensor) seeding the stateless random
            ops; the same seed gives the same output. Only the noise
            corruptions are random.
        table: constants table, `"cifar10c"` (default, for small images) or
            `"imagenet_c"`.

    Returns:
        A float32 tensor of the same shape as `images`, values in `[0, 1]`.

    Example:

    >>> x = tf.random.uniform([4, 28, 28, 1])
    >>> y = corrupt(x, "gaussian_noise", 3, seed=1)
    >>> y.shape
    TensorShape([4, 28, 28, 1])
    """
    _check_name(name)
    _check_severity(severity)
    _check_table(table)
    _check_seed(seed)
    images = _to_images(images)
    return _corrupt(images, name, int(severity), _base_key(seed, 0), table)


def parse_shift(spec):
    """Parses a shift specification such as `"gaussian_noise:3"`.

    Args:
        spec: string `"<name>:<severity>"`, with `name` in `CORRUPTIONS` and
            `severity` an integer from 1 to 5.

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
    _check_name(name)
    try:
        severity = int(level)
    except ValueError:
        raise ValueError(
            f"Invalid severity {level!r} in shift {spec!r}; use an integer from 1 to 5."
        ) from None
    _check_severity(severity)
    return name, severity


def corrupt_dataset(dataset, name, severity, *, seed=0, table="cifar10c"):
    """Corrupts every image of an unbatched `tf.data.Dataset`, reproducibly.

    Element `i` is corrupted with a seed derived from `(seed, i)` (via
    `dataset.enumerate()`), so the result does not depend on any batching
    or shuffling done afterwards.

    Args:
        dataset: unbatched dataset of `(image, label)` pairs (or of images
            alone), each image float `[H, W, C]` in `[0, 1]`.
        name: corruption name, one of `CORRUPTIONS`.
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
    _check_name(name)
    _check_severity(severity)
    _check_table(table)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"Invalid seed {seed!r}; use an integer.")
    spec = dataset.element_spec
    paired = isinstance(spec, tuple)
    if paired:
        if len(spec) != 2:
            raise ValueError(
                "Dataset elements must be (image, label) pairs or images; "
                f"got a tuple of {len(spec)}."
            )
        image_spec = spec[0]
    else:
        image_spec = spec
    if not isinstance(image_spec, tf.TensorSpec) or image_spec.shape.rank != 3:
        raise ValueError(
            f"Dataset images must be single [H, W, C] images, got {image_spec}; "
            "apply corrupt_dataset before .batch() (or call .unbatch() first)."
        )
    severity = int(severity)

    def apply(index, element):
        image = element[0] if paired else element
        image = _to_images(image)
        out = _corrupt(image, name, severity, _base_key(seed, index + 1), table)
        return (out, element[1]) if paired else out

    return dataset.enumerate().map(apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def held_out_copy(dataset, *, seed=0, table="cifar10c"):
    """One corrupted copy of a dataset, cycling through the held-out corruptions.

    The examples take `HELD_OUT_CORRUPTIONS` x severities 1-5 in turn: with
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
    combinations = [(name, severity) for name in HELD_OUT_CORRUPTIONS for severity in range(1, 6)]
    parts = [
        corrupt_dataset(dataset.shard(len(combinations), k), name, severity, seed=seed, table=table)
        for k, (name, severity) in enumerate(combinations)
    ]
    copy = parts[0]
    for part in parts[1:]:
        copy = copy.concatenate(part)
    return copy
