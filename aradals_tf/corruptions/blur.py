"""Blur corruptions: linear filters and local pixel shuffles.

Pixel constants (sigmas, radii, shuffle distances) are rescaled by
`s = H / R`, `R` the table's reference size (32 for `"cifar10c"`, 224 for
`"imagenet_c"`), `H` the image height (images are assumed roughly square).

Definitions (per image, after Hendrycks' code; `c` the severity's constants):

- `defocus_blur`: correlation with Hendrycks' anti-aliased disk kernel
  (radius `c[0]` pixels, alias blur `c[1]`), reflect-101 borders as
  `cv2.filter2D`. The radius is not rescaled to the image size: rescaled
  sub-pixel radii make the disk degenerate and the severities non-monotone.
- `glass_blur`: Gaussian blur (sigma `c[0] * s`, skimage's `gaussian`:
  truncate 4, 'nearest' borders), `c[2]` rounds of local pixel swaps over
  at most `d = max(1, round(c[1] * s))` pixels, the same Gaussian blur again.
  Deviation: the reference swaps pixel `(h, w)` with `(h + dy, w + dx)`,
  `dx, dy` uniform in `[-d, d - 1]` (numpy's `randint`), one pixel after the
  other in reverse raster order, a Python loop over every pixel; a value
  picked up early can then be carried several steps up and left. Here each
  round makes the same kinds of swap in parallel: for each of the
  `(2d)^2 - 1` non-zero offsets `(dy, dx)` in `[-d, d - 1]^2` in turn, the
  pixels are paired with their neighbour at that offset in disjoint pairs
  (alternate pixels along the offset's direction, a random choice of which
  per image), and each pair swaps with probability `2 / (2d)^2`. A round
  makes as many swaps of each offset as the reference's, on average; each
  swap moves a value by one offset, so no value drifts far. The result is a
  permutation of the blurred pixels (whole pixels, all channels), and
  without the reference's uint8 rounding between the steps.
- `motion_blur`: ImageMagick's `MotionBlurImage(radius, sigma, angle)`
  (Wand's `motion_blur`) with radius `c[0] * s`, sigma `c[1] * s` and an
  angle uniform in [-45, 45] degrees per image: output pixel `p` is
  `sum_i k_i x[p + round(i (cos a, sin a))]`, `k_i` a one-sided Gaussian
  `exp(-i^2 / (2 sigma^2))` for `i = 0 .. 2 ceil(radius)`, normalised, with
  integer offsets and repeated edge pixels as ImageMagick. Deviations: taps
  below 1e-6 of the first are dropped, and there is no PNG (uint8) round
  trip.
- `zoom_blur`: `(x + sum_z clipped_zoom(x, z)) / (n + 1)` over the `n` zoom
  factors `np.arange(1, c[0], c[1])` (reference rounding included, e.g.
  seven factors 1.00-1.06 for `arange(1, 1.06, 0.01)`); `clipped_zoom`
  crops the centre `ceil(H / z)` pixels, zooms them with
  `scipy.ndimage.zoom(order=1)` to `round(ceil(H / z) * z)` pixels and
  crops the centre `H`, reproduced exactly as a linear resampling matrix
  per axis. Zoom factors are relative, so nothing is rescaled; on 8x8
  images the factors of severity 1 round back to 8 pixels (the identity).
- `gaussian_blur` (held out): Gaussian filter with sigma `c * s`, truncated
  at `radius = int(4 * sigma + 0.5)` (as scipy/skimage), separable, with
  skimage's default boundary mode `"nearest"` (edge replication). For 8x8
  images the rescaled blur at the lowest severities (sigma 0.1 and 0.15
  pixels) is numerically the identity in float32.
"""

import math

import tensorflow as tf

from aradals_tf.corruptions._common import clip
from aradals_tf.corruptions._common import filter_planes
from aradals_tf.corruptions._common import gaussian_nearest
from aradals_tf.corruptions._common import line_blur
from aradals_tf.corruptions._common import motion_kernel
from aradals_tf.corruptions._common import split
from aradals_tf.corruptions._common import static_shape
from aradals_tf.corruptions._constants import REFERENCE_SIZE


def gaussian_blur(x, c, key, table):
    sigma = c * tf.cast(tf.shape(x)[1], tf.float64) / REFERENCE_SIZE[table]
    return clip(gaussian_nearest(x, sigma))


# ------------------------------------------------------------------ defocus


def disk_kernel(radius, alias_blur):
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


def defocus_blur(x, c, key, table):
    kernel = disk_kernel(*c)
    half = kernel.shape[0] // 2

    def blur(planes):
        # cv2.filter2D's default border is reflect-101, which is tf.pad's REFLECT.
        planes = tf.pad(planes, [[0, 0], [half, half], [half, half], [0, 0]], mode="REFLECT")
        return tf.nn.conv2d(planes, kernel[:, :, None, None], 1, "VALID")

    return clip(filter_planes(x, blur))


# -------------------------------------------------------------------- glass


def local_shuffle(x, key, max_delta, iterations):
    """Random local permutation of the pixels of each image (see `glass_blur`).

    Args:
        x: `[N, H, W, C]`.
        key: seed pair.
        max_delta: `d`; swap offsets lie in `[-d, d - 1]^2`.
        iterations: rounds of swaps.

    Returns:
        `x` with the pixels (all channels together) of each image permuted.
    """
    n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    offsets = [
        (dy, dx)
        for dy in range(-max_delta, max_delta)
        for dx in range(-max_delta, max_delta)
        if (dy, dx) != (0, 0)
    ]
    probability = 2.0 / (2 * max_delta) ** 2
    rows = tf.broadcast_to(tf.range(h)[:, None], [h, w])
    cols = tf.broadcast_to(tf.range(w)[None, :], [h, w])
    # perm[n, p]: which original pixel now sits at flat position p.
    perm = tf.tile(tf.range(h * w)[None, :], [n, 1])
    for step in range(iterations * len(offsets)):
        dy, dx = offsets[step % len(offsets)]
        keys = split(tf.random.experimental.stateless_fold_in(key, step), 2)
        parity = tf.random.stateless_uniform([n, 1, 1], seed=keys[0]) < 0.5
        coin = tf.random.stateless_uniform([n, h, w], seed=keys[1]) < probability
        # Alternate pixels along the offset's direction start a pair (p, p + offset):
        # the pairs are disjoint, so all of them can swap at once.
        along = tf.math.floordiv(rows, abs(dy)) if dy else tf.math.floordiv(cols, abs(dx))
        first = tf.equal(tf.math.floormod(along, 2)[None] == 1, parity)  # [N, H, W]
        partner_rows = tf.where(first, rows + dy, rows - dy)
        partner_cols = tf.where(first, cols + dx, cols - dx)
        inside = (partner_rows >= 0) & (partner_rows < h) & (partner_cols >= 0) & (partner_cols < w)
        # A pair swaps on the coin of its first pixel, `offset` before the
        # second (rolled values that wrap around only reach pairs not `inside`).
        coin_of_first = tf.roll(coin, shift=[dy, dx], axis=[1, 2])
        swap = inside & tf.where(first, coin, coin_of_first)
        source = tf.where(swap, partner_rows * w + partner_cols, rows * w + cols)
        perm = tf.gather(perm, tf.reshape(source, [n, h * w]), batch_dims=1)
    flat = tf.reshape(x, [n, h * w, -1])
    return tf.reshape(tf.gather(flat, perm, batch_dims=1), tf.shape(x))


def glass_blur(x, c, key, table):
    sigma, max_delta, iterations = c
    scale = static_shape(x, "glass_blur")[0] / REFERENCE_SIZE[table]
    x = gaussian_nearest(x, sigma * scale)
    x = local_shuffle(x, key, max(1, round(max_delta * scale)), iterations)
    return clip(gaussian_nearest(x, sigma * scale))


# ------------------------------------------------------------------- motion


def motion_blur(x, c, key, table):
    radius, sigma = c
    scale = static_shape(x, "motion_blur")[0] / REFERENCE_SIZE[table]
    angles = tf.random.stateless_uniform([tf.shape(x)[0]], seed=key, minval=-45.0, maxval=45.0)
    return clip(line_blur(x, angles, motion_kernel(radius * scale, sigma * scale)))


# --------------------------------------------------------------------- zoom


def zoom_factors(stop, step):
    """`np.arange(1, stop, step)` in plain Python, bit for bit: numpy's length
    `ceil((stop - 1) / step)` and values `1 + i * ((1 + step) - 1)`."""
    delta = (1.0 + step) - 1.0
    return [1.0 + i * delta for i in range(math.ceil((stop - 1.0) / step))]


def clipped_zoom_matrix(size, factor):
    """`[size, size]` matrix of Hendrycks' `clipped_zoom` along one axis:
    centre crop of `ceil(size / factor)`, `scipy.ndimage.zoom(order=1)` to
    `round(crop * factor)` pixels (output `o` samples the crop at
    `o * (crop - 1) / (zoomed - 1)`), centre crop of `size`."""
    crop = math.ceil(size / factor)
    top = (size - crop) // 2
    zoomed = int(round(crop * factor))
    trim = (zoomed - size) // 2
    ratio = (crop - 1) / (zoomed - 1) if zoomed > 1 else 0.0
    coords = top + (trim + tf.range(size, dtype=tf.float64)) * ratio
    weights = tf.nn.relu(1.0 - tf.abs(tf.range(size, dtype=tf.float64)[None, :] - coords[:, None]))
    return tf.cast(weights, tf.float32)


def zoom_blur(x, c, key, table):
    h, w, _ = static_shape(x, "zoom_blur")
    factors = zoom_factors(*c)
    rows = tf.stack([clipped_zoom_matrix(h, f) for f in factors])
    cols = tf.stack([clipped_zoom_matrix(w, f) for f in factors])
    zoomed = tf.einsum("zij,njkc,zlk->nilc", rows, x, cols)  # summed over the factors
    return clip((x + zoomed) / (len(factors) + 1))
