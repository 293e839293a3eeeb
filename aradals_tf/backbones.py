"""Logit-producing Keras backbones.

Every builder returns a functional `keras.Model` mapping images in [0, 1]
(NHWC float32) to unnormalised logits `[batch, num_classes]`; the package's
training and calibration code expects logits, never probabilities.

- `small_cnn`: two conv blocks + dense, for 28x28 images (mnist5k, MNIST,
  Fashion-MNIST); 0.21 M parameters, kept narrow because the AR-AdaLS attack
  multiplies the cost of every training step.
- `mlp`: for the 8x8 digits.
- `resnet20` (He et al. 2016, CIFAR variant, 0.27 M parameters) and
  `wide_resnet` (Zagoruyko & Komodakis 2016; WRN-28-10 is 36 M parameters)
  for 32x32 images; meant for GPU users.
"""

import keras
from keras import layers


def small_cnn(input_shape=(28, 28, 1), num_classes=10, name="small_cnn"):
    """Two conv/pool blocks and a dense layer, returning logits.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        name: model name.

    Returns:
        A `keras.Model`.

    Example:

    >>> model = small_cnn((28, 28, 1), 10)
    >>> model.output_shape
    (None, 10)
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(16, 3, activation="relu", padding="same")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, activation="relu", padding="same")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def mlp(input_shape=(8, 8, 1), num_classes=10, hidden_units=(128, 128), name="mlp"):
    """A multi-layer perceptron over flattened pixels, returning logits.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        hidden_units: widths of the ReLU hidden layers.
        name: model name.

    Returns:
        A `keras.Model`.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Flatten()(inputs)
    for units in hidden_units:
        x = layers.Dense(units, activation="relu")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def _residual_block(x, filters, stride, pre_activation, weight_decay):
    """A basic 3x3-3x3 residual block (post- or pre-activation)."""
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    conv = lambda f, k, s: layers.Conv2D(  # noqa: E731
        f,
        k,
        strides=s,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
    )
    shortcut = x
    if pre_activation:
        x = layers.Activation("relu")(layers.BatchNormalization()(x))
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = conv(filters, 1, stride)(x)
        x = conv(filters, 3, stride)(x)
        x = layers.Activation("relu")(layers.BatchNormalization()(x))
        x = conv(filters, 3, 1)(x)
        return layers.Add()([x, shortcut])
    x = conv(filters, 3, stride)(x)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = conv(filters, 3, 1)(x)
    x = layers.BatchNormalization()(x)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.BatchNormalization()(conv(filters, 1, stride)(shortcut))
    return layers.Activation("relu")(layers.Add()([x, shortcut]))


def resnet20(input_shape=(32, 32, 3), num_classes=10, depth=20, name="resnet20"):
    """CIFAR ResNet (He et al. 2016): 3 stages of (depth - 2) / 6 blocks.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        depth: 6n + 2 (20, 32, 44, 56, 110).
        name: model name.

    Returns:
        A `keras.Model`.
    """
    if (depth - 2) % 6:
        raise ValueError(f"ResNet depth must be 6n + 2; got {depth}.")
    blocks = (depth - 2) // 6
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _residual_block(x, filters, stride, False, 1e-4)
    x = layers.GlobalAveragePooling2D()(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def wide_resnet(input_shape=(32, 32, 3), num_classes=10, depth=28, width=10, name=None):
    """Wide ResNet (Zagoruyko & Komodakis 2016), pre-activation blocks.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        depth: 6n + 4 (28 for WRN-28-10).
        width: widening factor (10 for WRN-28-10).
        name: model name (default `wide_resnet_<depth>_<width>`).

    Returns:
        A `keras.Model`.
    """
    if (depth - 4) % 6:
        raise ValueError(f"Wide ResNet depth must be 6n + 4; got {depth}.")
    blocks = (depth - 4) // 6
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    for stage, filters in enumerate((16 * width, 32 * width, 64 * width)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _residual_block(x, filters, stride, True, 5e-4)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling2D()(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name or f"wide_resnet_{depth}_{width}")


BACKBONES = {
    "small_cnn": small_cnn,
    "mlp": mlp,
    "resnet20": resnet20,
    "wide_resnet_28_10": wide_resnet,
}


def default_backbone_name(input_shape):
    """The backbone the CLI uses for an image shape when none is named."""
    height = input_shape[0]
    if height <= 16:
        return "mlp"
    if height <= 28:
        return "small_cnn"
    return "resnet20"


def build_backbone(name, input_shape, num_classes):
    """Builds a registered backbone by name.

    Args:
        name: one of `BACKBONES`.
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.

    Returns:
        A `keras.Model` producing logits.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}.")
    return BACKBONES[name](input_shape=tuple(input_shape), num_classes=num_classes)
