#!/usr/bin/env python
"""Benchmark: the growing-radius robustness scorer against a naive cleverhans sweep.

Measures, in one run on the same model and batch (examples per second):
  (a) the package's scorer: one growing-radius attack whose steps run only on the
      examples that have not flipped yet (at most T forward+backward passes);
  (a0) the same attack stepping the whole batch T times (`compact=False`), the
      scorer before compaction;
  (b) the naive sweep a user would write with cleverhans alone:
      `projected_gradient_descent` at each of the T radii, T steps each, plus a
      forward pass per radius to see whether the prediction flipped
      (each radius's attack wrapped in one tf.function, as cleverhans advises);
  (c) the floor: T forward+backward passes of the same batch.
Prints the ratios a/b, a/c and a0/a, and how often (a) and (b) agree on the level.

Usage: python scripts/bench_robustness.py [--epochs 5] [--examples 1000] [--steps 10] [--repeats 5]
Only ratios measured in one run mean anything on a shared machine.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent  # noqa: E402

from aradals_tf import backbones  # noqa: E402
from aradals_tf import data  # noqa: E402
from aradals_tf import robustness  # noqa: E402


def naive_sweep_levels(model, images, eps_max, steps, batch_size, loss_fn):
    """Level of first flip over T separate PGD runs (cleverhans alone)."""
    model_fn = lambda z: model(z, training=False)  # noqa: E731
    attacks = []
    for k in range(1, steps + 1):
        radius = k * eps_max / steps

        @tf.function(reduce_retracing=True)
        def attack(x, y, radius=radius):
            adversarial = projected_gradient_descent(
                model_fn,
                x,
                radius,
                radius / steps,
                steps,
                np.inf,
                loss_fn=loss_fn,
                clip_min=0.0,
                clip_max=1.0,
                y=y,
                sanity_checks=False,
            )
            return tf.argmax(model_fn(adversarial), axis=-1)

        attacks.append(attack)
    levels = []
    for start in range(0, len(images), batch_size):
        x = tf.constant(images[start : start + batch_size])
        y = tf.argmax(model_fn(x), axis=-1)
        level = np.full(len(x), steps)
        for k, attack in enumerate(attacks):
            flipped = attack(x, y).numpy() != y.numpy()
            level = np.where(flipped & (level == steps), k, level)
        levels.append(level)
    return np.concatenate(levels)


def floor_passes(model, images, steps, batch_size):
    """T forward+backward passes of each batch: what any T-step attack costs."""

    @tf.function(reduce_retracing=True)
    def one_pass(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(model(x, training=False))
        return tape.gradient(loss, x)

    for start in range(0, len(images), batch_size):
        x = tf.constant(images[start : start + batch_size])
        for _ in range(steps):
            one_pass(x)


def timed_once(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def timed(function, repeats):
    function()  # warm-up: tracing
    runs = [timed_once(function) for _ in range(repeats)]
    return min(seconds for seconds, _ in runs), runs[-1][1]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eps-max", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    train_x, train_y = data.load_arrays("mnist5k", "train")
    test_x, _ = data.load_arrays("mnist5k", "test")
    images = test_x[: args.examples]
    model = backbones.small_cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train_x, train_y, batch_size=128, epochs=args.epochs, verbose=0)
    print(
        f"mnist5k small_cnn ({args.epochs} epochs), {len(images)} test images, "
        f"T = {args.steps}, eps_max = {args.eps_max}, batch {args.batch_size}, "
        f"best of {args.repeats}; {os.cpu_count()} CPU cores"
    )

    def scorer():
        levels = []
        for start in range(0, len(images), args.batch_size):
            _, level = robustness.adversarial_robustness(
                model,
                images[start : start + args.batch_size],
                eps_max=args.eps_max,
                steps=args.steps,
            )
            levels.append(level.numpy())
        return np.concatenate(levels)

    @tf.function(reduce_retracing=True)
    def whole_batch_attack(x):
        return robustness.growing_radius_attack(
            model, x, eps_max=args.eps_max, steps=args.steps, compact=False
        )[1]

    def uncompacted_scorer():
        return np.concatenate(
            [
                whole_batch_attack(tf.constant(images[start : start + args.batch_size])).numpy()
                for start in range(0, len(images), args.batch_size)
            ]
        )

    margin = lambda labels, logits: robustness.margin_loss(tf.cast(labels, tf.int32), logits)  # noqa: E731
    # (a), (a0) and (c) alternate, so a load change on a shared machine hits all.
    scorer()
    uncompacted_scorer()
    floor_passes(model, images, args.steps, args.batch_size)
    scorer_times, whole_times, floor_times = [], [], []
    for _ in range(args.repeats):
        t_a, levels = timed_once(scorer)
        t_a0, whole_levels = timed_once(uncompacted_scorer)
        t_c, _ = timed_once(lambda: floor_passes(model, images, args.steps, args.batch_size))
        scorer_times.append(t_a)
        whole_times.append(t_a0)
        floor_times.append(t_c)
    t_scorer, t_whole, t_floor = min(scorer_times), min(whole_times), min(floor_times)
    t_naive, naive = timed(
        lambda: naive_sweep_levels(
            model, images, args.eps_max, args.steps, args.batch_size, margin
        ),
        max(1, args.repeats // 3),
    )
    n = len(images)
    rate = lambda seconds: n / seconds  # noqa: E731
    print(f"(a) growing-radius scorer : {rate(t_scorer):8.1f} examples/s")
    print(f"(a0) whole-batch steps    : {rate(t_whole):8.1f} examples/s")
    print(f"(b) naive cleverhans sweep: {rate(t_naive):8.1f} examples/s")
    print(f"(c) floor, T fwd+bwd      : {rate(t_floor):8.1f} examples/s")
    print(
        f"speed-up a/b = {t_naive / t_scorer:.2f}x   "
        f"cost a/c = {t_scorer / t_floor:.2f}x of the floor"
    )
    print(
        f"compaction: a0/a = {t_whole / t_scorer:.2f}x the throughput; levels identical: "
        f"{bool(np.all(levels == whole_levels))}; mean level {np.mean(levels):.2f} of {args.steps}"
    )
    within = np.mean(np.abs(levels - naive) <= 1)
    print(
        f"levels: (a) == (b) for {100 * np.mean(levels == naive):.1f} %, within one level for "
        f"{100 * within:.1f} %; never flipped: (a) {np.sum(levels == args.steps)}, "
        f"(b) {np.sum(naive == args.steps)}"
    )


if __name__ == "__main__":
    main()
