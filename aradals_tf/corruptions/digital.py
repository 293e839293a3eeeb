"""Digital corruptions: photometric changes, resampling, coding, warps.

Definitions (per image, after Hendrycks' code; `c` the severity's constants):

- `brightness`: add `c` to V in HSV (`tf.image.rgb_to_hsv`); for 1 channel,
  V is the pixel itself: `clip(x + c)`.
- `contrast`: `clip((x - mean) * c + mean)`, mean over height and width per
  image and channel.
- `elastic_transform`: a random affine warp, then a smooth random
  displacement, each resampled bilinearly. The affine map sends the three
  points `(cx + s, cy + s)`, `(cx + s, cy - s)`, `(cx - s, cy - s)` (`cx, cy`
  the centre pixel `W // 2, H // 2`, `s = min(H, W) // 3`) to themselves
  plus offsets uniform in `+-c[2] * B * H / R` pixels (`cv2.getAffineTransform`
  and `cv2.warpAffine`, reflect-101 borders); then
  `out[i, j] = warped(i + dy[i, j], j + dx[i, j])` (`map_coordinates`,
  order 1, scipy's half-sample `reflect` borders), `dx` and `dy` uniform
  noise in [-1, 1] Gaussian-filtered with sigma `c[1] * B` (`reflect`,
  truncate 3) times `c[0] * B`, where `B` is the reference's base length
  (32; 244 for ImageNet-C, the reference's own constant) and `R` the
  table's reference size (32 or 224). The fields are drawn on the `R x R`
  grid with these pixel constants, as the reference, then resized to the
  image (bilinear) and scaled by `H / R`, so the warp is the reference's
  whatever the image size. Deviations: OpenCV's fixed-point interpolation
  weights (1/32 pixel) are exact here, and at coordinates past the border
  the interpolation reflects its two neighbours (scipy maps the coordinate
  itself).
- `pixelate`: PIL `BOX` downsampling to `int(H * c) x int(W * c)` (at most
  `H - 1`, at least 1), then PIL `BOX` upsampling back to `H x W` (which is
  nearest neighbour), as Hendrycks' `x.resize(..., PIL.Image.BOX)` twice.
  The PIL filter is reproduced exactly as a resampling matrix; it is used
  instead of `tf.image.resize(method="area")`, whose pixel grid is shifted
  by half a pixel for non-integer ratios (a much stronger and, across
  severities, non-monotone change for mild downsampling).
- `jpeg_compression`: JPEG encode/decode at quality `c` of the image
  quantised to uint8 (`tf.image.adjust_jpeg_quality`).
- `saturate` (held out, RGB only): `S <- clip(S * c[0] + c[1])` in HSV. On
  grayscale images S is 0 and the op would be the identity (or, with an
  offset, invent a colour), so it raises a ValueError there. Its
  severities are not ordered by strength: 1 and 2 desaturate (by 70 % and
  90 %), 3-5 oversaturate.
"""

import tensorflow as tf

from aradals_tf.corruptions._common import border_index
from aradals_tf.corruptions._common import clip
from aradals_tf.corruptions._common import gaussian_matrix
from aradals_tf.corruptions._common import separable
from aradals_tf.corruptions._common import split
from aradals_tf.corruptions._common import static_shape
from aradals_tf.corruptions._constants import ELASTIC_BASE
from aradals_tf.corruptions._constants import REFERENCE_SIZE

# ---------------------------------------------------------------- colour


def _adjust_hsv(x, channel, fn):
    """Applies `fn` to one HSV channel (1: saturation, 2: value) of RGB images."""
    hsv = tf.unstack(tf.image.rgb_to_hsv(x), axis=-1)
    hsv[channel] = clip(fn(hsv[channel]))
    return clip(tf.image.hsv_to_rgb(tf.stack(hsv, axis=-1)))


def brightness(x, c, key, table):
    def gray():
        return clip(x + c)

    def rgb():
        return _adjust_hsv(x, 2, lambda v: v + c)

    channels = x.shape[-1]
    if channels is None:  # only known when run
        return tf.cond(tf.equal(tf.shape(x)[-1], 1), gray, rgb)
    return gray() if channels == 1 else rgb()


def saturate(x, c, key, table):
    factor, offset = c
    if x.shape[-1] is None:  # only known when run
        tf.debugging.assert_equal(
            tf.shape(x)[-1], 3, message="Corruption 'saturate' needs RGB images (3 channels)."
        )
    return _adjust_hsv(x, 1, lambda s: s * factor + offset)


def contrast(x, c, key, table):
    means = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    return clip((x - means) * c + means)


# -------------------------------------------------------------- pixelate


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


def pixelate(x, c, key, table):
    shape = tf.shape(x)
    out = separable(x, _pixelate_matrix(shape[1], c), _pixelate_matrix(shape[2], c))
    return clip(tf.ensure_shape(out, x.shape))


def jpeg_compression(x, c, key, table):
    quantised = tf.cast(tf.round(clip(x) * 255.0), tf.uint8)

    def one(image):
        out = tf.image.adjust_jpeg_quality(image, int(c))
        return tf.reshape(out, tf.shape(image))

    out = tf.map_fn(one, quantised, fn_output_signature=tf.uint8)
    out = tf.ensure_shape(out, x.shape)
    return tf.cast(out, tf.float32) / 255.0


# --------------------------------------------------------------- elastic


def bilinear_sample(x, rows, cols, mode):
    """`x[n, rows, cols]` by bilinear interpolation, `[N, H, W]` float
    coordinates (pixel centres at integers), neighbours outside the image
    mapped by `border_index(mode)`."""
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    top, left = tf.floor(rows), tf.floor(cols)
    fy, fx = (rows - top)[..., None], (cols - left)[..., None]
    top, left = tf.cast(top, tf.int32), tf.cast(left, tf.int32)

    def at(r, c):
        index = tf.stack([border_index(r, h, mode), border_index(c, w, mode)], axis=-1)
        return tf.gather_nd(x, index, batch_dims=1)

    upper = at(top, left) * (1.0 - fx) + at(top, left + 1) * fx
    lower = at(top + 1, left) * (1.0 - fx) + at(top + 1, left + 1) * fx
    return upper * (1.0 - fy) + lower * fy


def elastic_warp(x, affine, dy, dx):
    """The two resamplings of `elastic_transform`.

    Args:
        x: `[N, H, W, C]`.
        affine: `[N, 2, 3]` map from output `(col, row, 1)` to source
            `(col, row)` (the inverse of cv2's `M`, as warpAffine applies).
        dy, dx: `[N, H, W]` displacements in pixels.
    """
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    rows = tf.cast(tf.broadcast_to(tf.range(h)[:, None], [h, w]), tf.float32)
    cols = tf.cast(tf.broadcast_to(tf.range(w)[None, :], [h, w]), tf.float32)
    grid = tf.stack([cols, rows, tf.ones_like(rows)], axis=-1)  # [H, W, 3]
    source = tf.einsum("nij,hwj->nhwi", affine, grid)
    warped = bilinear_sample(x, source[..., 1], source[..., 0], "reflect101")
    return bilinear_sample(warped, rows[None] + dy, cols[None] + dx, "reflect")


def _random_affine(key, n, h, w, magnitude):
    """`[N, 2, 3]` source maps of the reference's random affine warp."""
    cx, cy, s = float(w // 2), float(h // 2), float(min(h, w) // 3)
    before = tf.constant([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], tf.float64)
    moved = before + tf.random.stateless_uniform(
        [n, 3, 2], seed=key, minval=-magnitude, maxval=magnitude, dtype=tf.float64
    )
    # Solve [moved, 1] @ A^T = before: A maps output points back to their sources.
    lhs = tf.concat([moved, tf.ones([n, 3, 1], tf.float64)], axis=-1)
    rhs = tf.broadcast_to(before, [n, 3, 2])
    return tf.cast(tf.linalg.matrix_transpose(tf.linalg.solve(lhs, rhs)), tf.float32)


def _displacement(key, n, size, alpha, sigma):
    """`[N, size, size]` field: uniform noise, Gaussian filter (reflect,
    truncate 3), times `alpha` (the reference's `dx` or `dy`)."""
    noise = tf.random.stateless_uniform([n, size, size], seed=key, minval=-1.0, maxval=1.0)
    blur = gaussian_matrix(size, sigma, truncate=3.0, mode="reflect")
    return alpha * separable(noise, blur, blur)


def elastic_transform(x, c, key, table):
    alpha, sigma, affine = (value * ELASTIC_BASE[table] for value in c)
    h, w, _ = static_shape(x, "elastic_transform")
    size = REFERENCE_SIZE[table]
    n = tf.shape(x)[0]
    keys = split(key, 3)
    matrices = _random_affine(keys[0], n, h, w, affine * h / size)
    fields = tf.stack(
        [
            _displacement(keys[1], n, size, alpha, sigma),
            _displacement(keys[2], n, size, alpha, sigma),
        ],
        axis=-1,
    )
    if size != h or size != w:
        fields = tf.image.resize(fields, [h, w], method="bilinear", antialias=True)
        fields = fields * tf.constant([h / size, w / size], tf.float32)
    return clip(elastic_warp(x, matrices, fields[..., 0], fields[..., 1]))
