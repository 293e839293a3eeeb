"""Weather corruptions: random layers laid over the image.

The random layers of `snow`, `synthetic_frost` and `spatter` are drawn on an
`R x R` grid, `R` the table's reference size (32 for `"cifar10c"`, 224 for
`"imagenet_c"`), with the reference's pixel constants unchanged, and then
resized to the image (bilinear, antialiased when shrinking): their
statistics (how much of the image is covered, streak lengths) are those of
the reference whatever the image size. `fog`'s plasma layer is drawn on the
image's own grid, as the reference's.

Definitions (per image, after Hendrycks' code; `c` the severity's constants):

- `snow`: a layer `N(c[0], c[1]^2)` on the grid, `clipped_zoom` by `c[2]`
  (as `zoom_blur`), values below `c[3]` set to 0, clipped to [0, 1],
  motion-blurred (as `motion_blur`: radius `c[4]`, sigma `c[5]`, angle
  uniform in [-135, -45] degrees, i.e. falling); the image becomes
  `clip(x' + L + rot180(L))` with `x' = c[6] x + (1 - c[6]) max(x, 1.5 g +
  0.5)`, `g` the grey level (OpenCV's RGB -> grey weights; the pixel itself
  for grayscale images). Deviations: the Wand (ImageMagick) motion blur is
  the same kernel in TF, and the layer is not rounded to uint8 (PIL and PNG)
  before and after it.
- `synthetic_frost`: `clip(c[0] x + c[1] F)` as the reference's `frost`, but
  `F` is NOT a crop of Hendrycks' frost photographs (which this package
  cannot ship): it is a procedural ice texture, hence the name. Three
  layers of needles (sparse random seeds, each drawn out into a straight
  stroke of `0.15 R` pixels along a random direction, one direction per
  layer and image) are combined by their maximum and added to half a
  diamond-square plasma (wibble decay 2) for large-scale unevenness; the
  sum is standardised per image and mapped to the per-channel pooled mean
  and the mean within-crop standard deviation measured on the photographs
  the reference draws from (`frost1.png` ... `frost5.jpg`, after the CIFAR
  generator's 0.2 resize; `FROST_MEAN`, `FROST_STD`), clipped to [0, 1]. The
  per-photograph brightness differences are not modelled. Grayscale images
  get the texture's luma. Results are not comparable with the published
  frost numbers.
- `fog`: `clip((x + c[0] * P) * m / (m + c[0]))`, `m` the image's maximum and
  `P` a diamond-square plasma fractal in [0, 1] (wibble decay `c[1]`) on the
  next power-of-two grid, cropped to the image, one per image.
- `spatter` (held out): a liquid layer `N(c[0], c[1]^2)` on the grid,
  Gaussian-blurred (sigma `c[2]`, skimage's defaults), values below `c[3]`
  set to 0. Severities with `c[5] = 0` (water): the layer is textured as the
  reference's OpenCV chain (edges, distance to them truncated at 20 pixels,
  3x3 box blur, histogram equalisation, the emboss kernel
  `[[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]`, 3x3 box blur, with uint8 rounding
  and reflect-101 borders), multiplied by the 8-bit layer, scaled to a
  maximum of `c[4]` and added in pale turquoise (175, 238, 238) / 255:
  `clip(x + m * colour)`. Deviations: the edges are the liquid mask's inner
  boundary (mask pixels with a dry 8-neighbour) instead of `cv2.Canny`'s,
  and the distance is the 5x5 chamfer distance of `cv2.distanceTransform
  (DIST_L2, 5)` (weights 1, 1.4, 2.1969) computed by 20 rounds of min-plus
  propagation, exact below the truncation. Severities with `c[5] = 1` (mud):
  the mask `layer > c[3]` is Gaussian-blurred with sigma `c[4]`, values below
  0.8 set to 0, giving `m`, and `clip(x (1 - m) + m * brown)`, brown (63, 42,
  20) / 255. Grayscale images get the colours' luma.
"""

import tensorflow as tf

from aradals_tf.corruptions._common import clip
from aradals_tf.corruptions._common import colour
from aradals_tf.corruptions._common import gaussian_nearest
from aradals_tf.corruptions._common import grey
from aradals_tf.corruptions._common import line_blur
from aradals_tf.corruptions._common import motion_kernel
from aradals_tf.corruptions._common import resize_layer
from aradals_tf.corruptions._common import separable
from aradals_tf.corruptions._common import split
from aradals_tf.corruptions._common import static_shape
from aradals_tf.corruptions._constants import REFERENCE_SIZE
from aradals_tf.corruptions.blur import clipped_zoom_matrix

# Measured on Hendrycks' frost photographs frost1.png-frost5.jpg (frost6.jpg
# is never drawn: `np.random.randint(5)`), each resized by 0.2 as
# make_cifar_c.py does (cv2's INTER_LINEAR at 0.2 keeps pixels 5i + 2), in
# [0, 1], RGB: the per-channel mean of all pixels, equal weight per
# photograph, and the mean standard deviation within a 32x32 crop (200
# random crops per photograph). The crops' brightness differs between the
# photographs (mean 0.30-0.79 in red); the texture keeps the pooled mean.
FROST_MEAN = (0.572, 0.656, 0.702)
FROST_STD = (0.092, 0.086, 0.087)

WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise
MUD = (63 / 255, 42 / 255, 20 / 255)  # mud brown


# --------------------------------------------------------------------- fog


def plasma_fractal(key, count, mapsize, wibble_decay):
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
        keys = split(tf.random.experimental.stateless_fold_in(key, level), 3)

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


def _next_power_of_two(size):
    return 1 << (size - 1).bit_length()  # 32 for 32, 256 for 224


def fog(x, c, key, table):
    strength, wibble_decay = c
    size = max(int(x.shape[1]), int(x.shape[2]))
    n = tf.shape(x)[0]
    maps = plasma_fractal(key, n, _next_power_of_two(size), wibble_decay)
    fog = tf.cast(maps[:, : x.shape[1], : x.shape[2], None], tf.float32)
    max_value = tf.reduce_max(x, axis=[1, 2, 3], keepdims=True)
    return clip((x + strength * fog) * max_value / (max_value + strength))


# -------------------------------------------------------------------- snow


def snow(x, c, key, table):
    loc, scale, zoom, threshold, radius, sigma, blend = c
    h, w, _ = static_shape(x, "snow")
    size = REFERENCE_SIZE[table]
    n = tf.shape(x)[0]
    keys = split(key, 2)
    layer = loc + scale * tf.random.stateless_normal([n, size, size], seed=keys[0])
    zoom_matrix = clipped_zoom_matrix(size, zoom)
    layer = separable(layer, zoom_matrix, zoom_matrix)
    layer = clip(tf.where(layer < threshold, 0.0, layer))[..., None]
    angles = tf.random.stateless_uniform([n], seed=keys[1], minval=-135.0, maxval=-45.0)
    layer = resize_layer(line_blur(layer, angles, motion_kernel(radius, sigma)), h, w)
    x = blend * x + (1.0 - blend) * tf.maximum(x, grey(x) * 1.5 + 0.5)
    return clip(x + layer + tf.reverse(layer, axis=[1, 2]))


# ------------------------------------------------------------------- frost


def frost_texture(key, count, size):
    """`[count, size, size, 1]` procedural ice texture, standardised per image
    (mean 0, standard deviation 1); see `synthetic_frost`."""
    keys = split(key, 7)
    length = max(2, round(0.15 * size))
    needles = tf.zeros([count, size, size, 1])
    for layer in range(3):
        seeds = tf.random.stateless_uniform([count, size, size, 1], seed=keys[2 * layer])
        # About one seed in 25 pixels, of random brightness.
        seeds = tf.where(seeds > 0.96, (seeds - 0.96) / 0.04, 0.0)
        angles = tf.random.stateless_uniform([count], seed=keys[2 * layer + 1], maxval=180.0)
        needles = tf.maximum(needles, line_blur(seeds, angles, [1.0] * length))
    plasma = plasma_fractal(keys[6], count, _next_power_of_two(size), 2.0)
    texture = needles + 0.5 * tf.cast(plasma[:, :size, :size, None], tf.float32)
    mean, variance = tf.nn.moments(texture, axes=[1, 2, 3], keepdims=True)
    return (texture - mean) * tf.math.rsqrt(variance + 1e-12)


def synthetic_frost(x, c, key, table):
    image_weight, frost_weight = c
    h, w, channels = static_shape(x, "synthetic_frost")
    texture = frost_texture(key, tf.shape(x)[0], REFERENCE_SIZE[table])
    frost = clip(tf.constant(FROST_MEAN, tf.float32) + tf.constant(FROST_STD, tf.float32) * texture)
    frost = resize_layer(grey(frost) if channels == 1 else frost, h, w)
    return clip(image_weight * x + frost_weight * frost)


# ----------------------------------------------------------------- spatter


def _pad_reflect101(x, half):
    return tf.pad(x, [[0, 0], [half, half], [half, half], [0, 0]], mode="REFLECT")


def _box3(x):
    """cv2.blur(x, (3, 3)): 3x3 mean, reflect-101 borders."""
    return tf.nn.avg_pool2d(_pad_reflect101(x, 1), 3, 1, "VALID")


def chamfer_distance(edges, rounds=20):
    """Distance of every pixel to the nearest `edges` pixel (`[N, H, W, 1]`
    bool), in the 5x5 chamfer metric of cv2.distanceTransform(DIST_L2, 5):
    steps of 1 (axial), 1.4 (diagonal) and 2.1969 (knight's move). Exact up
    to `rounds` (every step costs at least 1); farther pixels get more."""
    far = 1e4
    offsets = tf.range(-2, 3, dtype=tf.float32)
    dy, dx = offsets[:, None], offsets[None, :]
    # cv2's mask-5 weights; the rest of the 5x5 window is not a step.
    steps = tf.where(
        dy**2 + dx**2 == 1.0,
        1.0,
        tf.where(dy**2 + dx**2 == 2.0, 1.4, tf.where(dy**2 + dx**2 == 5.0, 2.1969, far)),
    )
    steps = tf.where((dy == 0.0) & (dx == 0.0), 0.0, steps)[:, :, None]
    distance = tf.where(edges, 0.0, far)
    for _ in range(rounds):
        padded = tf.pad(distance, [[0, 0], [2, 2], [2, 2], [0, 0]], constant_values=far)
        # erosion2d: min over the window of (value - filter) = min(distance + step).
        distance = tf.nn.erosion2d(padded, -steps, [1, 1, 1, 1], "VALID", "NHWC", [1, 1, 1, 1])
    return distance


def equalize_hist(values):
    """cv2.equalizeHist of `[N, H, W, 1]` integer-valued float32 in [0, 255]."""
    n = tf.shape(values)[0]
    flat = tf.cast(tf.reshape(values, [n, -1]), tf.int32)
    total = tf.cast(tf.shape(flat)[1], tf.float64)
    hist = tf.cast(tf.math.bincount(flat, minlength=256, maxlength=256, axis=-1), tf.float64)
    cdf = tf.cumsum(hist, axis=1)
    first = tf.reduce_min(tf.where(hist > 0, cdf, total), axis=1, keepdims=True)
    spread = total - first
    lut = tf.round(tf.nn.relu(cdf - first) * (255.0 / tf.maximum(spread, 1.0)))
    # A constant image keeps its value (cv2's `dst.setTo(i)`).
    lut = tf.where(spread > 0, lut, tf.range(256, dtype=tf.float64)[None, :])
    return tf.cast(tf.reshape(tf.gather(lut, flat, batch_dims=1), tf.shape(values)), tf.float32)


def water_layer(liquid):
    """The reference's water texture of a thresholded liquid layer
    `[N, R, R, 1]`, scaled to a maximum of 1 per image."""
    liquid = tf.floor(clip(liquid) * 255.0)  # .astype(np.uint8)
    wet = liquid > 0.0
    # Inner boundary: wet pixels with a dry 8-neighbour (-max_pool(-x) is a min filter).
    eroded = -tf.nn.max_pool2d(-tf.cast(wet, tf.float32), 3, 1, "SAME") > 0.5
    edges = wet & ~eroded
    dist = tf.minimum(chamfer_distance(edges), 20.0)  # cv2.threshold(THRESH_TRUNC, 20)
    dist = tf.floor(_box3(dist))  # .astype(np.uint8)
    dist = equalize_hist(dist)
    emboss = tf.constant([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
    dist = tf.nn.conv2d(_pad_reflect101(dist, 1), emboss[:, :, None, None], 1, "VALID")
    dist = tf.clip_by_value(tf.round(dist), 0.0, 255.0)  # filter2D to CV_8U
    dist = tf.round(_box3(dist))  # cv2.blur of uint8 rounds
    m = liquid * dist
    return m / tf.maximum(tf.reduce_max(m, axis=[1, 2, 3], keepdims=True), 1e-12)


def spatter(x, c, key, table):
    loc, scale, sigma, threshold, intensity, mud = c
    h, w, channels = static_shape(x, "spatter")
    size = REFERENCE_SIZE[table]
    liquid = loc + scale * tf.random.stateless_normal([tf.shape(x)[0], size, size, 1], seed=key)
    liquid = gaussian_nearest(liquid, sigma)
    liquid = tf.where(liquid < threshold, 0.0, liquid)
    if mud:
        m = gaussian_nearest(tf.cast(liquid > threshold, tf.float32), intensity)  # c[4]: sigma
        m = resize_layer(tf.where(m < 0.8, 0.0, m), h, w)
        return clip(x * (1.0 - m) + m * colour(MUD, channels))
    m = resize_layer(intensity * water_layer(liquid), h, w)
    return clip(x + m * colour(WATER, channels))
