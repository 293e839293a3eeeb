"""Noise corruptions: random per-pixel perturbations.

Definitions (per image, after Hendrycks' code; `c` the severity's constant):

- `gaussian_noise`: `clip(x + N(0, c^2))`.
- `shot_noise`: `clip(Poisson(x * c) / c)`.
- `impulse_noise`: salt-and-pepper (skimage `random_noise(mode="s&p")`,
  `salt_vs_pepper=0.5`): each value is, with probability `c`, replaced by 0
  or 1 with equal probability.
- `speckle_noise` (held out): `clip(x + x * N(0, c^2))`.
"""

import tensorflow as tf

from aradals_tf.corruptions._common import clip
from aradals_tf.corruptions._common import split


def gaussian_noise(x, c, key, table):
    return clip(x + c * tf.random.stateless_normal(tf.shape(x), seed=key))


def shot_noise(x, c, key, table):
    counts = tf.random.stateless_poisson(tf.shape(x), seed=key, lam=x * c, dtype=tf.float32)
    return clip(counts / c)


def impulse_noise(x, c, key, table):
    keys = split(key, 2)
    flipped = tf.random.stateless_uniform(tf.shape(x), seed=keys[0]) < c
    salted = tf.random.stateless_uniform(tf.shape(x), seed=keys[1]) < 0.5
    noisy = tf.where(flipped, tf.where(salted, 1.0, 0.0), x)
    return clip(noisy)


def speckle_noise(x, c, key, table):
    return clip(x + x * c * tf.random.stateless_normal(tf.shape(x), seed=key))
