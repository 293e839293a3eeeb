#!/usr/bin/env python
"""Chooses the default `rescore_every` (k) of AR-AdaLS's costly scores on validation data.

For each k it trains AR-AdaLS with strata by the attack (or, with
`--strata-by first_order`, the first-order score; every other setting the
library default) on mnist5k for each seed, and measures seconds per epoch
(median after the first) and, on the VALIDATION split, the clean ECE and the
mean ECE under the held-out corruptions (the validation corruptions, never
the test suite). The chosen k is the largest one whose mean clean and mean
shift validation ECE both lie within one seed standard deviation of k = 1's,
among the k <= epochs / 2 (so that every example is re-attacked at least
twice after the first epoch's scores, which come from an untrained model).
The test split is never looked at.

Usage: python scripts/choose_rescore_every.py [--ks 1,2,4,8] [--seeds 0,1,2]
       [--epochs 20] [--out runs/choose_rescore_every]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from bench_training import EpochTimer  # noqa: E402  (this folder is on sys.path)

from aradals_tf import experiments  # noqa: E402
from aradals_tf.experiments import evaluate  # noqa: E402


def measure(k, seed, epochs, out, strata_by):
    config = experiments.TrainConfig(
        dataset="mnist5k",
        method="ar-adals",
        epochs=epochs,
        seed=seed,
        rescore_every=k,
        strata_by=strata_by,
    )
    run_dir = os.path.join(out, strata_by, f"k{k}", f"seed{seed}")
    timer = EpochTimer()
    experiments.train_run(config, run_dir, overwrite=True, verbose=0, extra_callbacks=[timer])
    clean = experiments.evaluate_run(run_dir, split="validation", verbose=0)
    shifted = evaluate.held_out_validation(run_dir)
    return {
        "seconds_per_epoch": float(np.median(timer.times[1:])),
        "ece": clean["results"]["clean"]["raw"]["ece"],
        "shift_ece": shifted["shift_mean"]["ece"],
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/choose_rescore_every")
    parser.add_argument("--strata-by", default="attack", choices=("attack", "first_order"))
    args = parser.parse_args()
    ks = sorted(int(k) for k in args.ks.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    if ks[0] != 1:
        parser.error("--ks must include 1, the reference")
    results = {}
    for k in ks:
        results[k] = []
        for seed in seeds:
            results[k].append(measure(k, seed, args.epochs, args.out, args.strata_by))
            row = results[k][-1]
            print(
                f"k={k} seed {seed}: {row['seconds_per_epoch']:.2f} s/epoch, validation ECE "
                f"{100 * row['ece']:.2f} %, held-out shift ECE {100 * row['shift_ece']:.2f} %",
                flush=True,
            )

    def stats(k, key):
        values = np.array([row[key] for row in results[k]])
        return values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0

    print(
        f"\nmnist5k small_cnn, AR-AdaLS defaults, strata by {args.strata_by}, "
        f"{args.epochs} epochs, seeds {seeds}; validation split; mean ± std over seeds"
    )
    print(f"{'k':>3} {'s/epoch':>8} {'x k=1':>6} {'ECE %':>13} {'shift ECE %':>13}  within noise")
    reference_time = stats(1, "seconds_per_epoch")[0]
    ece_1, ece_std = stats(1, "ece")
    shift_1, shift_std = stats(1, "shift_ece")
    chosen = 1
    for k in ks:
        seconds = stats(k, "seconds_per_epoch")[0]
        ece, ece_k_std = stats(k, "ece")
        shift, shift_k_std = stats(k, "shift_ece")
        within = abs(ece - ece_1) <= ece_std and abs(shift - shift_1) <= shift_std
        if within and k <= args.epochs / 2:
            chosen = k
        print(
            f"{k:>3} {seconds:8.2f} {seconds / reference_time:6.2f} "
            f"{100 * ece:6.2f} ± {100 * ece_k_std:4.2f} "
            f"{100 * shift:6.2f} ± {100 * shift_k_std:4.2f}"
            f"  {'yes' if within else 'no'}"
        )
    print(
        f"\nchosen rescore_every: {chosen} (the largest k <= epochs / 2 within one k=1 seed "
        "std on both)"
    )


if __name__ == "__main__":
    main()
