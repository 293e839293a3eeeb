#!/usr/bin/env python
"""Benchmark: what each AR-AdaLS training mode costs, part by part, and what it gives.

Every mode trains a small CNN on mnist5k (batch 128, Adam 1e-3) and is timed
per epoch (median of the epochs after the first two, which include tracing
and the warm-up). The reference is plain Keras: the backbone compiled with
its cross-entropy and `keras.Model.fit` on the arrays, with the validation
split as `validation_data` (the pass a Keras user makes each epoch, and the
one AR-AdaLS's update replaces: it writes `val_*` from its own).
Modes:
  keras                 the reference;
  vanilla               the package's vanilla run (`aradals-tf train` code path);
  python attack         `ARAdaLSModel(backbone, 10, eps_max=0.3)` and
                        `AdaptiveSmoothing(validation)` through `model.fit` on
                        arrays, every setting at the library's default;
  attack                the CLI's defaults (`aradals-tf train --method ar-adals`);
  attack every epoch    the same with every example scored every epoch (k = 1);
  no scoring            the CLI's AR-AdaLS with scoring never started: what the
                        soft targets, the cache bookkeeping and the epoch-end
                        pass cost without the attack;
  first_order, margin, confidence
                        the CLI's defaults with strata from those scores.
Each epoch is split into: training steps (the batches); the scoring of the
epoch's due examples ("attack": the pass before the epoch, `EpochScoring`,
plus any time the steps take beyond those of "no scoring"); the validation
scoring pass; the eps update; and the rest (callbacks, logging, the input
pipeline). Test ECE, clean and over the 15-type shift
suite, says what each mode gives.

Usage: python scripts/bench_training.py [--epochs 20] [--seeds 0,1,2] [--modes ...]
       [--out runs/bench_training]
Only ratios measured in one run mean anything on a shared machine.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import aradals_tf as at  # noqa: E402
from aradals_tf import adaptive_smoothing  # noqa: E402
from aradals_tf import data  # noqa: E402
from aradals_tf import experiments  # noqa: E402
from aradals_tf import fitting  # noqa: E402
from aradals_tf import metrics  # noqa: E402

CLI_MODES = {
    "vanilla": {"method": "vanilla"},
    "attack": {"method": "ar-adals"},
    "attack every epoch": {"method": "ar-adals", "rescore_every": 1},
    "no scoring": {"method": "ar-adals", "warmup_epochs": 10_000},
    "first_order": {"method": "ar-adals", "strata_by": "first_order"},
    "margin": {"method": "ar-adals", "strata_by": "margin"},
    "confidence": {"method": "ar-adals", "strata_by": "confidence"},
}
MODES = ("keras", "vanilla", "python attack", *[m for m in CLI_MODES if m != "vanilla"])
PARTS = ("steps", "attack", "validation pass", "eps update", "rest")


class Clock(keras.callbacks.Callback):
    """Per epoch: wall time, the training batches' time, and the eps callback's."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        # After the pass that scores the epoch's due examples (_SCORING holds its time).
        self.start, self.steps = time.perf_counter(), 0.0
        _PASS[0] = _UPDATE[0] = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self.batch = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += time.perf_counter() - self.batch

    def on_epoch_end(self, epoch, logs=None):
        # Called last (after the eps update): the whole epoch is in.
        scoring, _SCORING[0] = _SCORING[0], 0.0
        total = time.perf_counter() - self.start + scoring
        update = _UPDATE[0] - _PASS[0]
        self.epochs.append(
            {
                "total": total,
                "steps": self.steps,
                "scoring pass": scoring,
                "validation pass": _PASS[0],
                "eps update": update,
                "rest": total - scoring - self.steps - _UPDATE[0],
            }
        )


# Seconds of this epoch's validation pass, of the whole eps callback, and of
# the pass that scores the epoch's due training examples before it.
_PASS, _UPDATE, _SCORING = [0.0], [0.0], [0.0]


def _timed(function, box):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            box[0] += time.perf_counter() - start

    return wrapper


adaptive_smoothing.validation_pass = _timed(adaptive_smoothing.validation_pass, _PASS)
adaptive_smoothing.AdaptiveSmoothing.on_epoch_end = _timed(
    adaptive_smoothing.AdaptiveSmoothing.on_epoch_end, _UPDATE
)
fitting.EpochScoring.on_epoch_begin = _timed(fitting.EpochScoring.on_epoch_begin, _SCORING)


def _evaluate(model, images, labels, shifted):
    logits = model.predict(images, batch_size=500, verbose=0)
    ece = float(metrics.expected_calibration_error(labels, logits, from_logits=True))
    shift = np.mean(
        [
            float(
                metrics.expected_calibration_error(
                    labels, model.predict(x, batch_size=500, verbose=0), from_logits=True
                )
            )
            for x in shifted
        ]
    )
    return ece, float(shift), float(np.mean(np.argmax(logits, 1) == labels))


def _python_run(mode, seed, epochs, arrays):
    (x, y), validation = arrays["train"], arrays["validation"]
    keras.utils.set_random_seed(seed)
    backbone = at.build_backbone("small_cnn", (28, 28, 1), num_classes=10)
    clock = Clock()
    if mode == "keras":
        backbone.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        backbone.fit(
            x,
            y,
            batch_size=128,
            epochs=epochs,
            verbose=0,
            callbacks=[clock],
            validation_data=validation,
            validation_batch_size=500,
        )
        return backbone, clock
    model = at.ARAdaLSModel(backbone, num_classes=10, eps_max=0.3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    callbacks = [at.AdaptiveSmoothing(validation, validation_metrics=True), clock]
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=callbacks)
    return model, clock


def _cli_run(mode, seed, epochs, out):
    config = experiments.TrainConfig(dataset="mnist5k", epochs=epochs, seed=seed, **CLI_MODES[mode])
    run_dir = os.path.join(out, mode.replace(" ", "_"), f"seed{seed}")
    clock = Clock()
    experiments.train_run(config, run_dir, overwrite=True, verbose=0, extra_callbacks=[clock])
    return experiments.load_run(run_dir)[1], clock


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/bench_training")
    parser.add_argument("--modes", default=",".join(MODES), help="subset of: " + ", ".join(MODES))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    for needed in ("keras", "vanilla"):
        if needed not in modes:
            modes.insert(0, needed)  # the references of the ratios
    arrays = {split: data.load_arrays("mnist5k", split, seed=0) for split in data.SPLITS}
    images, labels = arrays["test"]
    shifted = [
        at.corrupt(images, name, severity, seed=1234)
        for name in at.CORRUPTIONS
        for severity in range(1, 6)
    ]
    results = {}
    # Seeds outermost, modes interleaved: drifts of a shared machine hit every mode alike.
    for seed in seeds:
        for mode in modes:
            if mode in ("keras", "python attack"):
                model, clock = _python_run(mode, seed, args.epochs, arrays)
            else:
                model, clock = _cli_run(mode, seed, args.epochs, args.out)
            steady = clock.epochs[2:]
            parts = {key: float(np.median([e[key] for e in steady])) for key in steady[0]}
            ece, shift, accuracy = _evaluate(model, images, labels, shifted)
            results.setdefault(mode, []).append(
                {**parts, "ece": ece, "shift_ece": shift, "accuracy": accuracy}
            )
            print(
                f"{mode} seed {seed}: {parts['total']:.3f} s/epoch, ECE {100 * ece:.2f} %, "
                f"shift ECE {100 * shift:.2f} %",
                flush=True,
            )
    _report(results, seeds, args.epochs)


def _report(results, seeds, epochs):
    def mean(mode, key):
        return float(np.mean([r[key] for r in results[mode]]))

    keras_time, vanilla_time = mean("keras", "total"), mean("vanilla", "total")
    scoring_free = mean("no scoring", "steps") if "no scoring" in results else None
    print(
        f"\nmnist5k small_cnn, batch 128, {epochs} epochs, seeds {seeds}, {os.cpu_count()} CPU "
        "cores, one run; median s/epoch over epochs 3 and on, mean over seeds; ECE 15-bin, test."
    )
    header = ["mode", "s/epoch", "x keras", "x vanilla", *PARTS, "acc %", "ECE %", "shift %"]
    print("  ".join(f"{h:>10}" if i else f"{h:<18}" for i, h in enumerate(header)))
    for mode in results:
        total, steps = mean(mode, "total"), mean(mode, "steps")
        extra = steps - scoring_free if scoring_free is not None else 0.0
        if mode in ("keras", "vanilla", "no scoring"):
            extra = 0.0
        attack = max(extra, 0.0) + mean(mode, "scoring pass")
        steps = steps - max(extra, 0.0)
        cells = [
            total,
            total / keras_time,
            total / vanilla_time,
            steps,
            attack,
            mean(mode, "validation pass"),
            mean(mode, "eps update"),
            mean(mode, "rest"),
        ]
        ece = [100 * r["ece"] for r in results[mode]]
        shift = [100 * r["shift_ece"] for r in results[mode]]
        print(
            f"{mode:<18}  "
            + "  ".join(f"{c:10.3f}" for c in cells)
            + f"  {100 * mean(mode, 'accuracy'):10.2f}  {np.mean(ece):5.2f}±{np.std(ece):4.2f}"
            + f"  {np.mean(shift):5.2f}±{np.std(shift):4.2f}"
        )
    if "python attack" in results and "attack" in results:
        ratio = mean("python attack", "total") / mean("attack", "total")
        print(f"\npython attack / CLI attack s/epoch: {ratio:.2f}")


if __name__ == "__main__":
    main()
