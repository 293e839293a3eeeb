"""Reading input files for an exported model: `.npy` arrays and images."""

import os

import numpy as np
import tensorflow as tf


def _describe_shape(shape):
    return "x".join(str(d) for d in shape)


def _read_npy(path, image_shape):
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"Cannot read {path} as a .npy array: {error}") from None
    if array.dtype == np.uint8:
        pass
    elif array.dtype in (np.float16, np.float32, np.float64):
        array = array.astype(np.float32)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{path} contains NaN or inf.")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(
                f"{path} has values in [{array.min():.4g}, {array.max():.4g}]; the "
                "model takes float images in [0, 1] (or uint8 0-255): divide by 255."
            )
    else:
        raise ValueError(
            f"{path} has dtype {array.dtype}; the model takes float32 images in "
            "[0, 1] or uint8 images 0-255."
        )
    if array.shape == tuple(image_shape):
        array = array[None]
    if array.ndim != len(image_shape) + 1 or array.shape[1:] != tuple(image_shape):
        raise ValueError(
            f"{path} has shape {array.shape}; the model takes one image "
            f"{tuple(image_shape)} or a batch (n, {', '.join(map(str, image_shape))})."
        )
    return array


def _read_image(path, image_shape, resize):
    try:
        contents = tf.io.read_file(path)
        image = tf.io.decode_image(contents, expand_animations=False)
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", str(error)).splitlines()
        raise ValueError(
            f"Cannot decode {path} as an image (PNG, JPEG, GIF or BMP; arrays as "
            f".npy): {message[0] if message else type(error).__name__}"
        ) from None
    height, width, channels = image_shape
    if image.dtype != tf.uint8:
        image = tf.image.convert_image_dtype(image, tf.uint8)
    have = int(image.shape[-1])
    if have in (2, 4):  # drop the alpha channel
        image = image[..., : have - 1]
        have -= 1
    if have == 3 and channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    elif have == 1 and channels == 3:
        image = tf.image.grayscale_to_rgb(image)
    elif have != channels:
        raise ValueError(f"{path} has {have} channels; the model takes {channels}.")
    if tuple(image.shape[:2]) != (height, width):
        if not resize:
            raise ValueError(
                f"{path} is {_describe_shape(image.shape)} (HxWxC after channel "
                f"conversion); the model takes {_describe_shape(image_shape)}: "
                "pass --resize to resize it (bilinear)."
            )
        resized = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (height, width))
        return np.clip(resized.numpy(), 0.0, 1.0).astype(np.float32)[None]
    return image.numpy().astype(np.uint8)[None]


def read_inputs(paths, image_shape, resize=False):
    """Reads input files into one batch for an exported model.

    Args:
        paths: files: `.npy` arrays (one image `(H, W, C)` or a batch
            `(n, H, W, C)`; float in [0, 1] or uint8 0-255) or images (PNG,
            JPEG, GIF, BMP; converted to the model's channels).
        image_shape: the model's `(H, W, C)`.
        resize: resize images of another size (bilinear) instead of failing.

    Returns:
        A numpy batch: uint8 (0-255) when every input is uint8, else float32
        in [0, 1].

    Raises:
        FileNotFoundError: a missing file.
        ValueError: a wrong shape, dtype or range, or an undecodable image.
    """
    if not paths:
        raise ValueError("No input files given.")
    batches = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Input file {path} not found.")
        if path.lower().endswith(".npy"):
            batches.append(_read_npy(path, image_shape))
        else:
            batches.append(_read_image(path, image_shape, resize))
    if all(batch.dtype == np.uint8 for batch in batches):
        return np.concatenate(batches)
    return np.concatenate(
        [b.astype(np.float32) / 255.0 if b.dtype == np.uint8 else b for b in batches]
    )
