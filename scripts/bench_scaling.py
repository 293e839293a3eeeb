#!/usr/bin/env python
"""Benchmark: AR-AdaLS training throughput across processes and devices, and the reduction's share.

Trains AR-AdaLS (the library's defaults: strata by the attack, scores reused
on a rotation) with `aradals-tf train`'s code path under four set-ups, each in
fresh processes:
  multiworker x1   MultiWorkerMirroredStrategy, a one-worker TF_CONFIG cluster;
  multiworker x2   two worker processes on 127.0.0.1 (one CPU device each);
  mirrored x1      MirroredStrategy on one logical CPU device;
  mirrored x2      MirroredStrategy on two logical CPU devices of one process.
It prints training examples/s (median epoch after the first, which traces)
and the share of each epoch spent in the cross-worker state reduction: the
sums that give every worker the whole validation split's scores for the eps
update (`distribution.sum_across_workers`), and the part of it spent waiting
for the slowest worker's shard (the first, few-byte sum of each epoch is also
a barrier). Global batch and data are the
same in all four, so each set-up's figures are comparable with the others'.

On one machine the workers share its cores, so expect no speed-up: the
figures show the overhead of running the job distributed; the script is
ready for a real cluster (give each worker its own TF_CONFIG and run the
`--worker` form there).

Then the score cache's exchange: with MirroredStrategy on two logical
devices, the bytes each replica puts into the step's collectives (the
all-gather of its batch's example indices and score bins, the all-reduce
of the per-stratum counts), counted as the steps run, and the cache's
memory, for the real training set and for a cache sized for ImageNet's
1.28 M examples (the same batches: the exchange does not grow with it).
`--cache-only` measures just that.

Usage: python scripts/bench_scaling.py [--dataset mnist5k] [--epochs 4] [--out runs/bench_scaling]
       [--cache-only]
Only ratios measured in one run mean anything on a shared machine.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SETUPS = (("multiworker", 1), ("multiworker", 2), ("mirrored", 1), ("mirrored", 2))


def _worker(spec):
    """One training process: writes its epoch times and reduction time as JSON."""
    import tensorflow as tf

    if spec["strategy"] == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * spec["devices"]
        )
    import keras

    from aradals_tf import distribution
    from aradals_tf import experiments
    from aradals_tf.experiments import build

    calls = []
    summed = distribution.sum_across_workers

    def timed_sum(value, strategy=None):
        started = time.perf_counter()
        try:
            return summed(value, strategy)
        finally:
            calls.append(time.perf_counter() - started)

    distribution.sum_across_workers = timed_sum
    epochs = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()
            calls.clear()

        def on_epoch_end(self, epoch, logs=None):
            # Runs after the eps update (the library's callbacks come first).
            # The epoch's first sum (the example count, a few bytes) also waits
            # for the slowest worker to finish its shard: its time is waiting.
            waiting = calls[0] if calls else 0.0
            epochs.append((time.perf_counter() - self.started, sum(calls), waiting))

    config = experiments.TrainConfig(
        dataset=spec["dataset"],
        method="ar-adals",
        epochs=spec["epochs"],
        seed=0,
        strategy=spec["strategy"],
    ).validate()
    devices = spec["devices"] if spec["strategy"] == "mirrored" else None
    if devices is not None:
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(devices)])
        # MirroredStrategy() alone takes one CPU device; these are logical ones.
        build._mirrored_strategy = lambda: strategy
    with tempfile.TemporaryDirectory() as scratch:
        experiments.train_run(
            config, os.path.join(scratch, "run"), verbose=0, extra_callbacks=[Clock()]
        )
    with open(spec["result"], "w") as stream:
        json.dump({"train_size": build.train_size(config), "epochs": epochs}, stream)


def _cache_worker(spec):
    """Bytes per step into the cache's collectives, for two cache sizes (one process)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    import aradals_tf as at
    from aradals_tf import data
    from aradals_tf import score_cache

    sent = tf.Variable(0, dtype=tf.int64, trainable=False)
    gather, reduce = score_cache._gather_across_replicas, score_cache.add_across_replicas

    def counted(value):
        return tf.size(value, tf.int64) * value.dtype.size

    def counting_gather(value):
        sent.assign_add(counted(value))
        return gather(value)

    def counting_reduce(variable, delta):
        sent.assign_add(counted(delta))
        return reduce(variable, delta)

    score_cache._gather_across_replicas = counting_gather
    score_cache.add_across_replicas = counting_reduce
    import aradals_tf.strata as strata_module

    strata_module.add_across_replicas = counting_reduce
    x, y = data.load_arrays(spec["dataset"], "train")
    validation = data.load_arrays(spec["dataset"], "validation")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = []
    for size in (len(y), 1_280_000):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            backbone = at.build_backbone("small_cnn", x.shape[1:], num_classes=10)
            model = at.ARAdaLSModel(backbone, 10, eps_max=0.3, train_size=size, num_strata=10)
            model.compile(optimizer="adam")

        class Count(keras.callbacks.Callback):
            steps = []

            def on_train_batch_begin(self, batch, logs=None):
                self.before = int(sent.numpy())

            def on_train_batch_end(self, batch, logs=None):
                self.steps.append(int(sent.numpy()) - self.before)

        model.fit(
            x,
            y,
            batch_size=128,
            epochs=2,
            verbose=0,
            callbacks=[at.AdaptiveSmoothing(validation), counter := Count()],
        )
        cache = model.score_cache
        memory = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in cache.variables)
        # Each replica counts its own contribution once per collective call;
        # both replicas go through the counter, so halve for one replica.
        per_replica = np.median(counter.steps[-20:]) / 2
        results.append(
            {
                "train_size": size,
                "bytes_per_step_per_replica": float(per_replica),
                "cache_memory_bytes": memory,
                "dense_delta_bytes_per_step": 4 * size,
            }
        )
    with open(spec["result"], "w") as stream:
        json.dump(results, stream)


def _cache_exchange(args):
    result = os.path.join(args.out, "cache_exchange.json")
    spec = {"dataset": args.dataset, "result": result}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    subprocess.run(
        [sys.executable, __file__, "--cache-worker", json.dumps(spec)],
        env=env,
        check=True,
        timeout=args.timeout,
    )
    rows = json.load(open(result))
    print("\nScore cache, MirroredStrategy on 2 logical devices, batch 128 (64 per replica):")
    header = ("cache size", "bytes/step/replica", "cache memory", "dense delta (old)")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (12, 19, 14, 18))))
    for row in rows:
        print(
            f"{row['train_size']:>12,} {row['bytes_per_step_per_replica']:>19,.0f} "
            f"{row['cache_memory_bytes'] / 1e6:>11.2f} MB "
            f"{row['dense_delta_bytes_per_step'] / 1e6:>15.2f} MB"
        )


def _run(strategy, count, args, out):
    """Starts the processes of one set-up; returns their results."""
    processes, results = [], []
    workers = count if strategy == "multiworker" else 1
    from aradals_tf import distribution

    tf_configs = distribution.loopback_tf_configs(workers)
    for index in range(workers):
        result = os.path.join(out, f"{strategy}{count}_worker{index}.json")
        spec = {
            "strategy": strategy,
            "devices": count,
            "dataset": args.dataset,
            "epochs": args.epochs,
            "result": result,
        }
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("TF_CONFIG", None)
        if strategy == "multiworker":
            env["TF_CONFIG"] = tf_configs[index]
        processes.append(
            subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env)
        )
        results.append(result)
    for process in processes:
        if process.wait(timeout=args.timeout) != 0:
            raise SystemExit(f"{strategy} x{count}: a process failed (exit {process.returncode})")
    return [json.load(open(path)) for path in results]


def _median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else 0.5 * (values[middle - 1] + values[middle])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default="runs/bench_scaling")
    parser.add_argument("--timeout", type=int, default=1200, help="Seconds per set-up.")
    parser.add_argument("--cache-only", action="store_true", help="Only the cache's exchange.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cache-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
        return
    if args.cache_worker:
        _cache_worker(json.loads(args.cache_worker))
        return
    os.makedirs(args.out, exist_ok=True)
    if args.cache_only:
        _cache_exchange(args)
        return
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2 (the first epoch traces).")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for strategy, count in SETUPS:
        results = _run(strategy, count, args, args.out)
        # Per epoch after the first: the slowest worker sets the pace.
        seconds = [max(r["epochs"][e][0] for r in results) for e in range(1, args.epochs)]
        reduced = [max(r["epochs"][e][1] for r in results) for e in range(1, args.epochs)]
        waited = [max(r["epochs"][e][2] for r in results) for e in range(1, args.epochs)]
        epoch_s = _median(seconds)
        rows.append(
            {
                "setup": f"{strategy} x{count}",
                "epoch_s": epoch_s,
                "examples_per_s": results[0]["train_size"] / epoch_s,
                "reduction_share": _median([r / s for r, s in zip(reduced, seconds)]),
                "waiting_share": _median([w / s for w, s in zip(waited, seconds)]),
            }
        )
    base = rows[0]["examples_per_s"]
    print(f"\nAR-AdaLS on {args.dataset}, {args.epochs} epochs, median epoch after the first:")
    widths = (16, 8, 11, 18, 10, 14)
    header = ("set-up", "s/epoch", "examples/s", "vs multiworker x1", "reduction", "of it waiting")
    print(
        " ".join(
            f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(header, widths))
        )
    )
    for row in rows:
        print(
            f"{row['setup']:<16} {row['epoch_s']:>8.2f} {row['examples_per_s']:>11.0f} "
            f"{row['examples_per_s'] / base:>17.2f}x {100 * row['reduction_share']:>9.2f}% "
            f"{100 * row['waiting_share']:>13.2f}%"
        )
    with open(os.path.join(args.out, "scaling.json"), "w") as stream:
        json.dump(rows, stream, indent=2)
    _cache_exchange(args)


if __name__ == "__main__":
    main()
