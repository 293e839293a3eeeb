#!/usr/bin/env python
"""Benchmark: the cost of AR-AdaLS training modes against vanilla, and what they give.

For each mode it trains with `aradals-tf train`'s code path (same backbone,
optimizer, data, epochs, validation pass), records seconds per epoch (median
of the epochs after the first, which includes tracing), and evaluates test
ECE clean and averaged over the test corruption suite (the 15 benchmark types x
severities 1-5). Modes:
  vanilla               hard labels, no attack;
  attack every epoch    AR-AdaLS, strata by the growing-radius attack (T=10) of
                        every example in every epoch (`rescore_every=1`);
  attack                AR-AdaLS with the library's defaults: the attack, each
                        example re-attacked once every `rescore_every` epochs;
  first_order every epoch
                        AR-AdaLS, strata by margin / ||grad margin||_1 from the
                        training forward pass plus one backward pass;
  first_order           the same score with the library's defaults: each
                        example re-scored once every `rescore_every` epochs;
  margin, confidence    AR-AdaLS, strata by the training pass's top-2 logit
                        margin or confidence (no extra pass).
(`--modes` picks some; `--set alpha=0.5 --set eps_cap=0.1` sets AR-AdaLS
hyper-parameters, e.g. the ones the comparison chose on validation.)
Then, on a vanilla model's test split, the Spearman rank correlation of each
cheap robustness estimate with the full attack's level (only the ranking
matters for equal-size strata): first-order, attack with T=5, top-2 logit
margin, confidence.

Usage: python scripts/bench_training.py [--epochs 20] [--seeds 0,1,2] [--set alpha=0.5]
       [--out runs/bench_training]
Only ratios measured in one run mean anything on a shared machine.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from aradals_tf import data  # noqa: E402
from aradals_tf import experiments  # noqa: E402
from aradals_tf import first_order  # noqa: E402
from aradals_tf import robustness  # noqa: E402

MODES = {
    "vanilla": {"method": "vanilla"},
    "attack every epoch": {"method": "ar-adals", "rescore_every": 1},
    "attack": {"method": "ar-adals"},
    "first_order every epoch": {
        "method": "ar-adals",
        "strata_by": "first_order",
        "rescore_every": 1,
    },
    "first_order": {"method": "ar-adals", "strata_by": "first_order"},
    "margin": {"method": "ar-adals", "strata_by": "margin"},
    "confidence": {"method": "ar-adals", "strata_by": "confidence"},
}


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def rank_correlations(run_dir, eps_max, steps):
    _, model = experiments.load_run(run_dir)
    images, _ = data.load_arrays("mnist5k", "test")
    full = np.concatenate(
        [
            robustness.adversarial_robustness(
                model, images[i : i + 250], eps_max=eps_max, steps=steps
            )[1].numpy()
            for i in range(0, len(images), 250)
        ]
    )
    coarse = np.concatenate(
        [
            robustness.adversarial_robustness(model, images[i : i + 250], eps_max=eps_max, steps=5)[
                1
            ].numpy()
            for i in range(0, len(images), 250)
        ]
    )
    estimate, logits = first_order.first_order_radius(model, images)
    logits = np.asarray(logits)
    top2 = np.sort(logits, axis=1)[:, -2:]
    probs = tf.nn.softmax(logits).numpy()
    return {
        "first-order estimate": spearmanr(estimate.numpy(), full)[0],
        "attack with T=5": spearmanr(coarse, full)[0],
        "top-2 logit margin": spearmanr(top2[:, 1] - top2[:, 0], full)[0],
        "confidence": spearmanr(probs.max(1), full)[0],
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/bench_training")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES)
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PARAM=VALUE",
        help="AR-AdaLS setting for both AR-AdaLS modes (repeatable)",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    ar_settings = {}
    for text in args.sets:
        _, param, values = experiments.parse_override(text)
        ar_settings[param] = values[0]
    modes = [m.strip() for m in args.modes.split(",")]
    if "vanilla" not in modes:
        modes.insert(0, "vanilla")  # the reference of the ratios
    results = {}
    for mode in modes:
        settings = dict(MODES[mode])
        if settings["method"] == "ar-adals":
            settings.update(ar_settings)
        per_seed = []
        for seed in seeds:
            config = experiments.TrainConfig(
                dataset="mnist5k", epochs=args.epochs, seed=seed, **settings
            )
            run_dir = os.path.join(
                args.out,
                mode.replace(" ", "_").replace("(", "").replace(")", "").replace("=", ""),
                f"seed{seed}",
            )
            timer = EpochTimer()
            experiments.train_run(
                config, run_dir, overwrite=True, verbose=0, extra_callbacks=[timer]
            )
            summary = experiments.evaluate_run(run_dir, shifts=("all",), verbose=0)
            per_seed.append(
                {
                    "seconds_per_epoch": float(np.median(timer.times[1:])),
                    "accuracy": summary["results"]["clean"]["raw"]["accuracy"],
                    "ece": summary["results"]["clean"]["raw"]["ece"],
                    "shift_ece": summary["shift_mean"]["raw"]["ece"],
                    "run": run_dir,
                }
            )
            print(
                f"{mode} seed {seed}: {per_seed[-1]['seconds_per_epoch']:.2f} s/epoch, "
                f"ECE {100 * per_seed[-1]['ece']:.2f} %, "
                f"shift ECE {100 * per_seed[-1]['shift_ece']:.2f} %",
                flush=True,
            )
        results[mode] = per_seed
    vanilla_time = np.mean([r["seconds_per_epoch"] for r in results["vanilla"]])
    default_k = experiments.TrainConfig(dataset="mnist5k").rescore_every
    print(
        f"\nmnist5k small_cnn, {args.epochs} epochs, seeds {seeds}, {os.cpu_count()} CPU cores; "
        f"AR-AdaLS settings {ar_settings or 'defaults'} (rescore_every {default_k} in 'attack'); "
        "ECE = 15-bin, test split, mean ± std over seeds"
    )
    print(
        f"{'mode':<23} {'s/epoch':>8} {'x vanilla':>10} "
        f"{'acc %':>7} {'ECE %':>13} {'shift ECE %':>13}"
    )

    def mean_std(per_seed, key):
        values = 100 * np.array([r[key] for r in per_seed])
        return values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0

    for mode, per_seed in results.items():
        seconds = np.mean([r["seconds_per_epoch"] for r in per_seed])
        ece, shift = mean_std(per_seed, "ece"), mean_std(per_seed, "shift_ece")
        print(
            f"{mode:<23} {seconds:8.2f} {seconds / vanilla_time:10.2f} "
            f"{mean_std(per_seed, 'accuracy')[0]:7.2f} "
            f"{ece[0]:6.2f} ± {ece[1]:4.2f} {shift[0]:6.2f} ± {shift[1]:4.2f}"
        )
    if "attack" in results and "attack every epoch" in results:
        cached, every = results["attack"], results["attack every epoch"]
        for key, label in (("ece", "clean ECE"), ("shift_ece", "shift ECE")):
            difference = mean_std(cached, key)[0] - mean_std(every, key)[0]
            noise = mean_std(every, key)[1]
            print(
                f"attack - attack every epoch, {label}: {difference:+.2f} points "
                f"({'within' if abs(difference) <= noise else 'outside'} one seed std, {noise:.2f})"
            )
    correlations = rank_correlations(results["vanilla"][0]["run"], 0.3, 10)
    print(
        "\nSpearman rank correlation with the full attack's level "
        "(vanilla model, 1,000 test images):"
    )
    for name, value in correlations.items():
        print(f"  {name:<22} {value:.3f}")


if __name__ == "__main__":
    main()
