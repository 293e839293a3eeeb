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
                            where eps moved most), and per run of each method
                            with eps: its largest, the least robust stratum's
                            final one, and the longest stretch at the cap;
  <prefix>-robustness-<method>.png
                            calibration per robustness decile of the pooled
                            test examples, vanilla (before) and AR-AdaLS (after),
                            each example attacked by its own fold's model;
and prints claim (a) for vanilla and AR-AdaLS: the debiased ECE of the least
robust tenth of the pooled test examples minus that of the most robust tenth,
and minus that of the least confident tenth, with paired 95 % intervals over
examples and seeds; then every verdict of the page (the comparison's and
these) Holm-adjusted as one family. Writes <prefix>-claim-a.json.

Each run's attacked test examples are kept in the run directory
(robustness_test.npz), so a second invocation does not attack again.

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
from aradals_tf import intervals  # noqa: E402
from aradals_tf import metrics  # noqa: E402
from aradals_tf import plots  # noqa: E402
from aradals_tf import robustness  # noqa: E402
from aradals_tf.corruptions import CORRUPTIONS  # noqa: E402
from aradals_tf.experiments import build  # noqa: E402
from aradals_tf.experiments import evaluate  # noqa: E402
from aradals_tf.experiments import train  # noqa: E402


def _runs(study, method, seed=0):
    """The run directories of `method`, one per fold (of `seed`), in fold order.

    With a grid, a fold holds one directory per candidate: the ones the
    comparison chose are listed in its comparison.json.
    """
    chosen = atomic.read_json(os.path.join(study, "comparison.json"))["methods"]
    if method in chosen and "run_dirs" in chosen[method]:
        runs = [
            os.path.join(study, run)
            for run in chosen[method]["run_dirs"]
            if os.path.basename(run) == f"seed{seed}"
        ]
    else:  # a comparison.json written before run_dirs: one candidate per fold
        runs = sorted(glob.glob(os.path.join(study, method, "fold*", "*", f"seed{seed}")))
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


def _longest_at_cap(eps, cap):
    """`(length, start)` of the longest stretch of epochs a row of eps sits at `cap`."""
    best, length = (0, 0), 0
    for epoch, value in enumerate(eps):
        length = length + 1 if value >= cap - 1e-6 else 0
        if length > best[0]:
            best = (length, epoch - length + 1)
    return best


def eps_summary(study, method, seeds):
    """One line per run of an AR-AdaLS method: its largest eps (and epoch), the
    least robust stratum's final eps, and the longest stretch any stratum was
    held at the cap, with the smallest validation gap over that stretch (issue
    22: no stratum at the cap for more than two epochs unless its gap stays
    above the cap's level). `[]` for a method without eps."""
    lines = []
    for seed in seeds:
        for fold, run in enumerate(_runs(study, method, seed)):
            history = atomic.read_json(os.path.join(run, "history.json"))
            strata = sorted(
                (k for k in history if k.startswith("stratum") and k.endswith("_eps")),
                key=lambda key: int(key[len("stratum") : -len("_eps")]),
            )
            if not strata:
                return []
            cap = atomic.read_json(os.path.join(run, "config.json"))["eps_cap"]
            eps = np.array([history[key] for key in strata])  # [strata, epochs]
            (length, start), stratum = max(
                (_longest_at_cap(row, cap), r) for r, row in enumerate(eps)
            )
            held = ""
            if length:
                gap = np.subtract(
                    history[f"stratum{stratum}_conf"], history[f"stratum{stratum}_acc"]
                )
                held = (
                    f", stratum {stratum} from epoch {start + 1}, smallest gap meanwhile "
                    f"{gap[start : start + length].min():+.3f}"
                )
            lines.append(
                f"eps, {method} fold {fold} seed {seed}: largest {eps.max():.3f} (epoch "
                f"{int(np.argmax(eps.max(0))) + 1}), least robust stratum's final "
                f"{eps[0, -1]:.4f}, longest at the cap ({cap}) {length} epochs{held}"
            )
    return lines


ATTACK_STEPS = 10
ATTACK_CACHE = "robustness_test.npz"


def _attack_run(run):
    """`(labels, logits, radii)` of a run's test examples under the attack,
    kept in the run directory beside its predictions: the attack is the
    costly part of this script, and a second call (or a second invocation)
    reads it back. The cache is used only when `eps_max` and the steps match."""
    path = os.path.join(run, ATTACK_CACHE)
    config = atomic.read_json(os.path.join(run, "config.json"))
    eps_max = data.dataset_info(config["dataset"]).eps_max
    if os.path.isfile(path):
        with np.load(path) as stored:
            if float(stored["eps_max"]) == eps_max and int(stored["steps"]) == ATTACK_STEPS:
                return stored["label"], stored["logits"], stored["radius"]
    config, model = train.load_run(run)
    scores = robustness.score_dataset(
        model,
        build.split_dataset(config, "test"),
        eps_max=eps_max,
        steps=ATTACK_STEPS,
        verbose=0,
    )
    with atomic.atomic_file(path, "wb") as stream:
        np.savez_compressed(
            stream,
            eps_max=np.float64(eps_max),
            steps=np.int32(ATTACK_STEPS),
            label=scores["label"],
            logits=scores["logits"],
            radius=scores["radius"],
        )
    return scores["label"], scores["logits"], scores["radius"]


def _attacked(study, method, seed):
    """`(ids, labels, logits, radii)` of one seed's pooled test examples, each
    fold's examples attacked by its own model."""
    parts = []
    for run in _runs(study, method, seed):
        config = atomic.read_json(os.path.join(run, "config.json"))
        ids = data.split_indices(
            config["dataset"], "test", config["seed"], fold=config["fold"], folds=config["folds"]
        )
        parts.append((ids, *_attack_run(run)))
    return tuple(np.concatenate(part) for part in zip(*parts))


def claim_a(study, method, seeds, resamples):
    """Claim (a) on the pooled test examples of each seed, two contrasts of the
    debiased ECE: the least robust tenth against the most robust tenth, and
    against the least confident tenth (which finds nearly the same examples).
    Examples and seeds resampled, the same draws for both sides (an example in
    both tenths carries the same weight); `{contrast: interval with p}`."""
    subsets = {"least robust": [], "most robust": [], "least confident": []}
    for seed in seeds:
        ids, labels, logits, radii = _attacked(study, method, seed)
        stats = intervals.example_statistics(labels, logits)
        confidence = stats["confidence"]
        tenth = len(ids) // 10
        picks = {
            "least robust": np.argsort(radii, kind="stable")[:tenth],
            "most robust": np.argsort(radii, kind="stable")[-tenth:],
            "least confident": np.argsort(confidence, kind="stable")[:tenth],
        }
        for name, pick in picks.items():
            subsets[name].append((ids[pick], [{k: v[pick] for k, v in stats.items()}]))
    return {
        f"least robust - {other}": intervals.bootstrap_interval(
            subsets["least robust"], "debiased_ece", resamples, other=subsets[other]
        )
        for other in ("most robust", "least confident")
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--methods", default="vanilla,ar-adals,confidence,focal")
    parser.add_argument(
        "--ensembles", default="", help="Ensemble methods for the reliability plot."
    )
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--resamples", type=int, default=intervals.DEFAULT_RESAMPLES)
    args = parser.parse_args()
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(severity_boxes(args.study, methods, f"{args.prefix}-severity.png"))
    panels = [
        ("vanilla", "vanilla", False),
        ("vanilla + TS", "vanilla", True),
        ("AR-AdaLS", "ar-adals", False),
        ("AR-AdaLS + TS", "ar-adals", True),
    ]
    panels += [(f"ensemble {m}", m, False) for m in args.ensembles.split(",") if m]
    print(reliability(args.study, panels, f"{args.prefix}-reliability.png"))
    print(eps_plot(args.study, "ar-adals", f"{args.prefix}-eps.png"))
    for method in methods:
        for line in eps_summary(args.study, method, seeds):
            print(line)
    summary = {}
    for method in ("vanilla", "ar-adals"):
        labels, logits, radii = _attacked(args.study, method, seeds[0])[1:]
        table = diagnostics.calibration_by_robustness(labels, logits, radii, 10, from_logits=True)
        path = f"{args.prefix}-robustness-{method}.png"
        plots.calibration_by_robustness(
            table, path, title=f"{method}: pooled test examples, seed {seeds[0]}"
        )
        print(path)
        summary[method] = claim_a(args.study, method, seeds, args.resamples)
    # Holm over the page's whole family: the comparison's verdicts and these.
    evidence = atomic.read_json(os.path.join(args.study, "comparison.json"))["evidence"]
    family = [
        pair[condition][metric]
        for pair in evidence["pairs"]
        for condition in ("clean", "shift")
        if condition in pair
        for metric in intervals.VERDICT_METRICS
    ]
    claims = [result for contrasts in summary.values() for result in contrasts.values()]
    adjusted = intervals.holm([r["p"] for r in family + claims])
    for result, p_holm in zip(family + claims, adjusted):
        result["p_page"] = p_holm
        result["verdict_page"] = intervals.holm_verdict(result, p_holm)
    for method, contrasts in summary.items():
        for name, r in contrasts.items():
            print(
                f"claim (a), {method}, debiased ECE({name}): {100 * r['value']:.2f} "
                f"[{100 * r['low']:.2f}, {100 * r['high']:.2f}] points, p {r['p']:.4f}, "
                f"Holm over the page's {len(adjusted)} {r['p_page']:.4f}: {r['verdict_page']}"
            )
    print(f"The comparison's verdicts under the page's Holm family of {len(adjusted)}:")
    for pair in evidence["pairs"]:
        for condition in ("clean", "shift"):
            cells = [f"{m} {pair[condition][m]['verdict_page']}" for m in intervals.VERDICT_METRICS]
            print(f"  {pair['pair']} {condition}: " + ", ".join(cells))
    atomic.write_json(
        f"{args.prefix}-claim-a.json", {"claim_a": summary, "pairs": evidence["pairs"]}
    )


if __name__ == "__main__":
    main()
