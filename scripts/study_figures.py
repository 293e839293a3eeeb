#!/usr/bin/env python
"""The figures and claim (a) of a cross-fitted comparison (`aradals-tf compare --folds K`).

From the runs of a comparison directory it writes, next to `--prefix`:
  <prefix>-severity.png     ECE per corruption severity: for each method, a box
                            over the 15 corruption types (mean over folds) at
                            each severity, clean at 0 (the plots of Ovadia et
                            al. 2019);
  <prefix>-reliability.png  reliability diagrams of the pooled clean test
                            predictions (every example once): vanilla, vanilla
                            with its temperature, AR-AdaLS and the ensembles;
  <prefix>-eps.png          eps per stratum over the epochs of AR-AdaLS (the fold
                            where eps moved most);
  <prefix>-robustness-<method>.png
                            calibration per robustness decile of the pooled
                            test examples, vanilla (before) and AR-AdaLS (after),
                            each example attacked by its own fold's model;
and prints claim (a): the ECE of the least robust decile minus that of the
most robust decile, with a 95 % bootstrap interval (examples resampled within
each decile, 1000 resamples, seeded), for vanilla and for AR-AdaLS.

Usage: python scripts/study_figures.py --study runs/study15_mnist5k \\
           --prefix docs/studies/mnist5k-evidence
"""

import argparse
import glob
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aradals_tf import atomic  # noqa: E402
from aradals_tf import data  # noqa: E402
from aradals_tf import diagnostics  # noqa: E402
from aradals_tf import metrics  # noqa: E402
from aradals_tf import plots  # noqa: E402
from aradals_tf import robustness  # noqa: E402
from aradals_tf.corruptions import CORRUPTIONS  # noqa: E402
from aradals_tf.experiments import build  # noqa: E402
from aradals_tf.experiments import evaluate  # noqa: E402
from aradals_tf.experiments import train  # noqa: E402

RESAMPLES = 1000


def _runs(study, method):
    """The run directories of `method`, one per fold (seed 0), in fold order.

    With a grid, a fold holds one directory per candidate: the ones the
    comparison chose are listed in its comparison.json.
    """
    chosen = atomic.read_json(os.path.join(study, "comparison.json"))["methods"]
    if method in chosen and "run_dirs" in chosen[method]:
        runs = [
            os.path.join(study, run)
            for run in chosen[method]["run_dirs"]
            if os.path.basename(run) == "seed0"
        ]
    else:  # a comparison.json written before run_dirs: one candidate per fold
        runs = sorted(glob.glob(os.path.join(study, method, "fold*", "*", "seed0")))
    if not runs:
        raise SystemExit(f"no runs of {method!r} under {study}")
    return runs


def severity_boxes(study, methods, path):
    severities = range(6)
    figure, axis = plt.subplots(figsize=(max(8, 1.4 * len(methods) * 1.2), 4.6))
    width = 0.8 / len(methods)
    for m, method in enumerate(methods):
        per_fold = [
            atomic.read_json(os.path.join(run, "metrics.json")) for run in _runs(study, method)
        ]
        boxes = []
        for severity in severities:
            if severity == 0:
                values = [100 * f["results"]["clean"]["raw"]["ece"] for f in per_fold]
                boxes.append([float(np.mean(values))])
                continue
            boxes.append(
                [
                    100
                    * float(
                        np.mean(
                            [f["results"][f"{name}:{severity}"]["raw"]["ece"] for f in per_fold]
                        )
                    )
                    for name in CORRUPTIONS
                ]
            )
        positions = [s + (m - (len(methods) - 1) / 2) * width for s in severities]
        parts = axis.boxplot(
            boxes, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=False
        )
        color = plt.cm.tab10(m % 10)
        for box in parts["boxes"]:
            box.set_facecolor(color)
        axis.plot([], [], color=color, linewidth=8, label=method)
    axis.set_xticks(list(severities), ["clean", "1", "2", "3", "4", "5"])
    axis.set_xlabel("corruption severity (box: the 15 corruption types, mean over folds)")
    axis.set_ylabel("ECE % (raw)")
    axis.legend(fontsize=8, ncol=min(len(methods), 5))
    axis.set_title("ECE under shift, per severity")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _pooled(study, method, scaled=False):
    labels, logits = [], []
    for run in _runs(study, method):
        fold_labels, fold_logits, temperature = evaluate.read_predictions(run)
        labels.append(fold_labels)
        logits.append(fold_logits["clean"] / (temperature if scaled else 1.0))
    return np.concatenate(labels), np.concatenate(logits)


def reliability(study, panels, path):
    data = {}
    for title, method, scaled in panels:
        labels, logits = _pooled(study, method, scaled)
        data[title] = metrics.reliability_diagram_data(labels, logits, from_logits=True)
    return plots.reliability_diagrams(data, path, suptitle="Pooled clean test predictions")


def eps_plot(study, method, path):
    """eps per stratum over the epochs of the fold where eps moved most."""
    histories = [
        atomic.read_json(os.path.join(run, "history.json")) for run in _runs(study, method)
    ]
    strata = sorted(k for k in histories[0] if k.startswith("stratum") and k.endswith("_eps"))
    fold = int(np.argmax([max(max(h[key]) for key in strata) for h in histories]))
    history = histories[fold]
    records = [
        {"epoch": epoch, **{key: history[key][epoch] for key in strata}}
        for epoch in range(len(history[strata[0]]))
    ]
    title = f"{method}, fold {fold} (the largest eps of the folds): eps per stratum"
    return plots.eps_per_stratum(records, path, title=title)


def _attacked(study, method):
    """Pooled test labels, logits and radii, each fold's examples attacked by its own model."""
    labels, logits, radii = [], [], []
    for run in _runs(study, method):
        config, model = train.load_run(run)
        info = data.dataset_info(config.dataset)
        scores = robustness.score_dataset(
            model, build.split_dataset(config, "test"), eps_max=info.eps_max, steps=10, verbose=0
        )
        labels.append(scores["label"])
        logits.append(scores["logits"])
        radii.append(scores["radius"])
    return np.concatenate(labels), np.concatenate(logits), np.concatenate(radii)


def _bin_ece(labels, logits):
    return float(metrics.expected_calibration_error(labels, logits, from_logits=True))


def claim_a(labels, logits, radii, seed=0):
    """ECE of the least robust decile minus the most robust one, with a 95 % interval."""
    order = np.argsort(radii, kind="stable")
    deciles = np.array_split(order, 10)
    low, high = deciles[0], deciles[-1]
    value = _bin_ece(labels[low], logits[low]) - _bin_ece(labels[high], logits[high])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(RESAMPLES):
        a = rng.choice(low, len(low))
        b = rng.choice(high, len(high))
        draws.append(_bin_ece(labels[a], logits[a]) - _bin_ece(labels[b], logits[b]))
    # The resamples' spread placed on the sample's value (as `intervals.summarize`).
    centre = float(np.mean(draws))
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return value, value + (lo - centre), value + (hi - centre)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument(
        "--methods", default="vanilla,ar-adals,ar-confidence,label-smoothing,ens-vanilla,ens-ar"
    )
    args = parser.parse_args()
    methods = args.methods.split(",")
    print(severity_boxes(args.study, methods, f"{args.prefix}-severity.png"))
    panels = [
        ("vanilla", "vanilla", False),
        ("vanilla + TS", "vanilla", True),
        ("AR-AdaLS", "ar-adals", False),
        ("ensemble, vanilla", "ens-vanilla", False),
        ("ensemble, AR-AdaLS", "ens-ar", False),
    ]
    print(reliability(args.study, panels, f"{args.prefix}-reliability.png"))
    print(eps_plot(args.study, "ar-adals", f"{args.prefix}-eps.png"))
    summary = {}
    for method in ("vanilla", "ar-adals"):
        labels, logits, radii = _attacked(args.study, method)
        table = diagnostics.calibration_by_robustness(labels, logits, radii, 10, from_logits=True)
        path = f"{args.prefix}-robustness-{method}.png"
        plots.calibration_by_robustness(table, path, title=f"{method}: pooled test examples")
        value, lo, hi = claim_a(labels, logits, radii)
        verdict = "holds" if lo > 0 else ("fails" if hi < 0 else "no difference")
        summary[method] = {"difference": value, "interval": [lo, hi], "verdict": verdict}
        print(path)
        print(
            f"claim (a), {method}: ECE(least robust decile) - ECE(most robust decile) = "
            f"{100 * value:.2f} [{100 * lo:.2f}, {100 * hi:.2f}] points: {verdict}"
        )
    atomic.write_json(f"{args.prefix}-claim-a.json", summary)


if __name__ == "__main__":
    main()
