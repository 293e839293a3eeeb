"""Temperature scaling (Guo et al. 2017): the post-hoc calibration baseline.

One scalar `T > 0` divides the logits; it is fitted by minimising the
negative log-likelihood of held-out (validation) logits. Accuracy is
unchanged because dividing by `T` keeps the argmax.
"""

import warnings

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from aradals_tf import metrics

# A temperature outside this range means the held-out logits carry almost no
# signal (or are separable); we clip and warn rather than return 1e-9 or 1e9.
MIN_TEMPERATURE = 1e-2
MAX_TEMPERATURE = 1e2


def _scaled_nll(log_temperature, logits, labels):
    log_probs = tf.nn.log_softmax(logits / tf.exp(log_temperature), axis=-1)
    return -tf.reduce_mean(tf.gather(log_probs, labels[:, None], batch_dims=1))


def temperature_nll(logits, labels, temperature):
    """NLL of `softmax(logits / temperature)`, in float64 (nats)."""
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float64)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    log_t = tf.math.log(tf.constant(float(temperature), tf.float64))
    return float(_scaled_nll(log_t, logits, labels))


def fit_temperature(logits, labels, max_iterations=200, tolerance=1e-10):
    """Fits the temperature that minimises NLL on held-out logits.

    Optimises `log T` (so `T > 0` without constraints) with
    `tfp.optimizer.lbfgs_minimize` in float64.

    Args:
        logits: `[n, k]` logits of held-out data (not probabilities).
        labels: int class indices, `[n]`.
        max_iterations: L-BFGS iteration limit.
        tolerance: L-BFGS gradient tolerance.

    Returns:
        The temperature, a Python float in [0.01, 100]; never one that raises
        the NLL above that of `T = 1`.

    Raises:
        ValueError: on non-finite logits, labels out of range or shapes that
            do not match.

    Example:

    >>> logits = 4.0 * tf.constant([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    >>> t = fit_temperature(logits, [0, 1, 1])
    """
    # Same checks, messages and conventions as the metrics.
    metrics.negative_log_likelihood(labels, logits, from_logits=True)
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float64)
    labels = tf.cast(tf.reshape(tf.convert_to_tensor(labels), [-1]), tf.int32)

    def value_and_gradients(position):
        return tfp.math.value_and_gradient(lambda p: _scaled_nll(p[0], logits, labels), position)

    result = tfp.optimizer.lbfgs_minimize(
        value_and_gradients,
        initial_position=tf.zeros([1], tf.float64),
        max_iterations=max_iterations,
        tolerance=tolerance,
    )
    temperature = float(tf.exp(result.position[0]))
    if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        warnings.warn(
            f"Fitted temperature {temperature:.3g} is outside "
            f"[{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]; clipping. The held-out "
            "logits may be separable or uninformative.",
            stacklevel=2,
        )
        temperature = min(max(temperature, MIN_TEMPERATURE), MAX_TEMPERATURE)
    if temperature_nll(logits, labels, temperature) > temperature_nll(logits, labels, 1.0):
        temperature = 1.0
    return temperature


@keras.saving.register_keras_serializable(package="aradals_tf")
class TemperatureScaling(keras.layers.Layer):
    """Divides logits by a fitted temperature.

    The temperature lives in a non-trainable variable, so it is saved with the
    model and exported into SavedModels.

    Args:
        temperature: initial temperature, > 0.
        **kwargs: base `Layer` arguments.

    Example:

    ```python
    t = fit_temperature(model.predict(x_val), y_val)
    calibrated = keras.Sequential([model, TemperatureScaling(t)])
    ```
    """

    def __init__(self, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        temperature = float(temperature)
        if not temperature > 0 or temperature == float("inf"):
            raise ValueError(f"temperature must be a finite number > 0; got {temperature}.")
        self._initial_temperature = temperature
        self.temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(temperature),
            trainable=False,
            name="temperature",
        )

    def call(self, logits):
        return logits / keras.ops.cast(self.temperature, logits.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def fit(self, logits, labels):
        """Fits the temperature on held-out logits; returns it."""
        temperature = fit_temperature(logits, labels)
        self.temperature.assign(temperature)
        return temperature

    def get_config(self):
        config = super().get_config()
        config["temperature"] = float(keras.ops.convert_to_numpy(self.temperature))
        return config
