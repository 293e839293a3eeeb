#!/usr/bin/env python
"""Chooses AR-AdaLS's library defaults on validation data of both embedded datasets.

For mnist5k and digits it runs the method comparison (`aradals-tf compare`'s
code) of vanilla and AR-AdaLS candidates, every candidate on every seed
(selection seeds = final seeds), and then picks ONE setting for both
datasets from the validation split alone: among the candidates whose mean
clean validation ECE is not above vanilla's on either dataset, the one with
the lowest mean of the two datasets' validation ECEs. Only then does it
print the test split's figures (clean and the corruption suite) for vanilla
and the chosen setting, mean ± std over seeds. Resumable: runs are reused.

Usage: python scripts/choose_defaults.py [--out runs/defaults] [--seeds 0,1,2] [--epochs 20]
"""

import argparse
import json
import os

from aradals_tf import atomic
from aradals_tf import experiments

# (label, settings); R = 10 and T = 10 throughout, strata by the attack.
CANDIDATES = (
    ("paper", {"eps_update": "additive", "alpha": 1.0, "eps_cap": 0.5}),
    ("shrunk", {"eps_update": "shrunk", "alpha": 1.0, "eps_cap": 0.5}),
    ("paper-small", {"eps_update": "additive", "alpha": 0.25, "eps_cap": 0.1}),
    ("shrunk-small", {"eps_update": "shrunk", "alpha": 0.25, "eps_cap": 0.1}),
)
DATASETS = ("mnist5k", "digits")


def _compare(out, dataset, seeds, epochs):
    methods = [("vanilla", "vanilla")] + [(label, "ar-adals") for label, _ in CANDIDATES]
    overrides = {label: settings for label, settings in CANDIDATES}
    base = experiments.TrainConfig(dataset=dataset, epochs=epochs).validate()
    return experiments.run_comparison(
        os.path.join(out, dataset), base, methods, seeds, overrides=overrides, select_seeds=seeds
    )


def _validation_ece(summary, label):
    """Mean over seeds of a method's raw clean validation ECE (from its runs)."""
    values = [
        atomic.read_json(os.path.join(run, "metrics.json"))["validation"]["raw"]["ece"]
        for run in summary["methods"][label]["runs"]
    ]
    return sum(values) / len(values)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/defaults")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    seeds = experiments.parse_seeds(args.seeds)
    summaries = {dataset: _compare(args.out, dataset, seeds, args.epochs) for dataset in DATASETS}
    validation = {
        dataset: {
            label: _validation_ece(summaries[dataset], label)
            for label in ["vanilla"] + [label for label, _ in CANDIDATES]
        }
        for dataset in DATASETS
    }
    print("\nClean validation ECE %, mean over seeds (the only numbers the choice uses):")
    print(f"{'setting':<14}" + "".join(f"{d:>10}" for d in DATASETS) + "   not above vanilla")
    safe = []
    for label in ["vanilla"] + [label for label, _ in CANDIDATES]:
        ok = all(validation[d][label] <= validation[d]["vanilla"] for d in DATASETS)
        if label != "vanilla" and ok:
            safe.append(label)
        row = "".join(f"{100 * validation[d][label]:10.2f}" for d in DATASETS)
        print(f"{label:<14}{row}   {'' if label == 'vanilla' else ('yes' if ok else 'no')}")
    pool = safe or [label for label, _ in CANDIDATES]
    chosen = min(pool, key=lambda label: sum(validation[d][label] for d in DATASETS))
    print(f"\nChosen: {chosen} {dict(CANDIDATES)[chosen]}" + ("" if safe else " (none was safe)"))
    print("\nTest split, mean ± std over seeds (looked at after the choice):")
    print(f"{'dataset':<9} {'method':<14} {'acc %':>12} {'ECE %':>12} {'shift ECE %':>12}")
    report = {
        "validation_ece": validation,
        "chosen": chosen,
        "settings": dict(CANDIDATES),
        "test": {},
    }
    for dataset in DATASETS:
        report["test"][dataset] = {}
        for label in ("vanilla", chosen):
            row = summaries[dataset]["methods"][label]
            cells = [
                row["clean_raw"]["accuracy"],
                row["clean_raw"]["ece"],
                row["shift_mean_raw"]["ece"],
            ]
            report["test"][dataset][label] = cells
            print(
                f"{dataset:<9} {label:<14} "
                + " ".join(f"{100 * m:6.2f}±{100 * s:4.2f}" for m, s in cells)
            )
    path = os.path.join(args.out, "defaults.json")
    atomic.write_json(path, report)
    print(f"\nWrote {path}; per-dataset tables in {args.out}/<dataset>/comparison.json")
    print(json.dumps({"chosen": chosen, **dict(CANDIDATES)[chosen]}))


if __name__ == "__main__":
    main()
