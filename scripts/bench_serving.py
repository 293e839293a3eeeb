"""Serving latency of the calibrated SavedModel.

Exports one network three ways and loads each back with
`tf.saved_model.load` (the in-process equivalent of what TF Serving runs):

- `calibrated`: `export_saved_model(..., calibration="temperature")`;
- `uncalibrated`: the same network with `calibration="none"` (T = 1);
- `bare`: a plain `keras.export.ExportArchive` endpoint returning only
  `softmax(logits)`: no temperature, no confidence/argmax/logits outputs.
  It shows what the whole calibrated signature costs over the network.

and times `serving_default` (outputs fetched to numpy) against
`model.predict`, at batch 1 (p50/p99 latency) and batch 256 (p50/p99 latency
and throughput). The variants are interleaved, call by call, in a shuffled
order each round, so that load from other processes hits them alike.

    .venv/bin/python scripts/bench_serving.py                 # mnist5k small_cnn, untrained
    .venv/bin/python scripts/bench_serving.py --run runs/demo/vanilla --out bench.json

Exits with status 1 if the calibrated export is 5 % or more slower than the
uncalibrated one at batch 256 (p50).
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from aradals_tf import backbones  # noqa: E402
from aradals_tf import data  # noqa: E402
from aradals_tf import export  # noqa: E402


def bare_export(model, input_shape, path):
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        return {"probabilities": tf.nn.softmax(model(images, training=False), axis=-1)}

    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec([None, *input_shape], tf.float32, name="images")],
    )
    archive.write_out(path, verbose=False)
    return path


def signature_caller(path, x):
    function = tf.saved_model.load(path).signatures["serving_default"]
    inputs = tf.constant(x)

    def call():
        return {key: value.numpy() for key, value in function(images=inputs).items()}

    return call


def keras_callers(model, x):
    return {
        "model.predict": lambda: model.predict(x, batch_size=len(x), verbose=0),
        "predict_on_batch": lambda: model.predict_on_batch(x),
    }


def measure(callers, repeats, warmup, seed):
    """Interleaved timings: {name: seconds per call, [repeats]}."""
    for call in callers.values():
        for _ in range(warmup):
            call()
    order = list(callers)
    rng = random.Random(seed)
    times = {name: [] for name in callers}
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            callers[name]()
            times[name].append(time.perf_counter() - start)
    return {name: np.asarray(values) for name, values in times.items()}


def summary(times, batch):
    p50, p99 = np.percentile(times, 50), np.percentile(times, 99)
    return {
        "p50_ms": 1e3 * p50,
        "p99_ms": 1e3 * p99,
        "best_ms": 1e3 * times.min(),
        "images_per_s": batch / p50,
        "calls": int(len(times)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run", default=None, help="Run directory (default: an untrained backbone)."
    )
    parser.add_argument(
        "--dataset", default="mnist5k", help="Image shape and eps_max without --run."
    )
    parser.add_argument(
        "--backbone", default=None, help="Backbone without --run (default: by image size)."
    )
    parser.add_argument(
        "--temperature", type=float, default=1.5, help="T of the calibrated export."
    )
    parser.add_argument(
        "--repeats-1", type=int, default=400, help="Timed calls per variant at batch 1."
    )
    parser.add_argument(
        "--repeats-256", type=int, default=120, help="Timed calls per variant at batch 256."
    )
    parser.add_argument(
        "--repeats-keras",
        type=int,
        default=40,
        help="Timed calls of the Keras baselines per batch size.",
    )
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="Write the results as JSON here.")
    args = parser.parse_args(argv)

    if args.run:
        from aradals_tf import experiments

        config, model = experiments.load_run(args.run)
        dataset = config.dataset
        label = f"{args.run} ({config.method}, {config.backbone})"
    else:
        dataset = args.dataset
        info = data.dataset_info(dataset)
        name = args.backbone or backbones.default_backbone_name(info.image_shape)
        keras.utils.set_random_seed(args.seed)
        model = backbones.build_backbone(name, info.image_shape, info.num_classes)
        label = f"untrained {name}"
    info = data.dataset_info(dataset)
    shape = info.image_shape
    rng = np.random.default_rng(args.seed)
    batches = {b: rng.random((b, *shape), dtype=np.float32) for b in (1, 256)}

    with tempfile.TemporaryDirectory() as root:
        common = dict(base_dir=root, input_shape=shape, eps_max=info.eps_max)
        paths = {
            "calibrated": export.export_saved_model(
                model,
                name="calibrated",
                calibration="temperature",
                temperature=args.temperature,
                **common,
            ),
            "uncalibrated": export.export_saved_model(
                model, name="uncalibrated", calibration="none", **common
            ),
            "bare": bare_export(model, shape, os.path.join(root, "bare", "1")),
        }
        results = {}
        for batch, repeats in ((1, args.repeats_1), (256, args.repeats_256)):
            x = batches[batch]
            callers = {name: signature_caller(path, x) for name, path in paths.items()}
            times = measure(callers, repeats, args.warmup, args.seed + batch)
            # The (much slower) Keras baselines apart, with fewer calls.
            times.update(measure(keras_callers(model, x), args.repeats_keras, 3, args.seed))
            results[batch] = {name: summary(values, batch) for name, values in times.items()}

    devices = [d.device_type for d in tf.config.list_physical_devices() if d.device_type != "CPU"]
    print(
        f"Serving latency, {label} on {dataset} {'x'.join(map(str, shape))}; "
        f"TF {tf.__version__}, {os.cpu_count()} CPU cores"
        f"{', ' + '/'.join(devices) if devices else ''}"
    )
    header = (
        f"{'variant':<16} {'b1 p50 ms':>10} {'b1 p99 ms':>10} "
        f"{'b256 p50 ms':>12} {'b256 p99 ms':>12} {'b256 img/s':>11}"
    )
    print(header)
    for name in ("calibrated", "uncalibrated", "bare", "model.predict", "predict_on_batch"):
        one, big = results[1][name], results[256][name]
        print(
            f"{name:<16} {one['p50_ms']:>10.3f} {one['p99_ms']:>10.3f} {big['p50_ms']:>12.3f} "
            f"{big['p99_ms']:>12.3f} {big['images_per_s']:>11.0f}"
        )
    ratios = {
        f"{a}/{b} b{batch} p50": results[batch][a]["p50_ms"] / results[batch][b]["p50_ms"]
        for batch in (1, 256)
        for a, b in (
            ("calibrated", "uncalibrated"),
            ("calibrated", "bare"),
            ("calibrated", "model.predict"),
        )
    }
    for key, value in ratios.items():
        print(f"  {key}: {value:.3f}")
    check = ratios["calibrated/uncalibrated b256 p50"]
    verdict = "PASS" if check < 1.05 else "FAIL"
    print(f"{verdict}: calibrated / uncalibrated batch-256 latency = {check:.3f} (must be < 1.05)")
    if args.out:
        with open(args.out, "w") as stream:
            json.dump({"label": label, "results": results, "ratios": ratios}, stream, indent=2)
    return 0 if check < 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
