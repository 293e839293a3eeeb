#!/usr/bin/env python
"""Markdown tables of a cross-fitted comparison's evidence, for a study page.

Reads `<study>/comparison.json` (its `evidence`, from `aradals-tf compare
--folds K`) and `<prefix>-claim-a.json` (from `scripts/study_figures.py`, whose
verdicts are Holm-adjusted over the page's whole family) and prints:
the intervals of every method (plug-in ECE, debiased ECE, NLL, Brier; raw
and temperature-scaled; clean and the shift suite's mean), the paired
differences with their page verdicts, and claim (a). Without a claim-a file
(a study of ensembles, say) the page's family is the comparison's own pairs
and their verdicts are the comparison's.

Usage: python scripts/evidence_tables.py --study runs/evidence/mnist5k-20 \\
           --prefix docs/studies/evidence-mnist5k-20
"""

import argparse
import json
import os

from aradals_tf.experiments.tables import EVIDENCE_METRICS
from aradals_tf.experiments.tables import VERDICT_METRICS
from aradals_tf.experiments.tables import interval_cell


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    evidence = json.load(open(os.path.join(args.study, "comparison.json")))["evidence"]
    claims_path = f"{args.prefix}-claim-a.json"
    claims = json.load(open(claims_path)) if os.path.exists(claims_path) else None
    print(
        f"Intervals over {evidence['examples']} test examples (every example once per seed) and "
        f"{sorted(set(evidence['seeds'].values()))} seeds per method, {evidence['resamples']} "
        "resamples of examples and seeds:\n"
    )
    first = next(iter(evidence["methods"].values()))["raw"]["clean"]
    # A comparison.json written before accuracy was reported has no accuracy column.
    shown = [entry for entry in EVIDENCE_METRICS if entry[0] in first]
    print("| method | data | calibration | " + " | ".join(t for _, t, _ in shown) + " |")
    print("| --- | --- | --- |" + " ---: |" * len(shown))
    for label, kinds in evidence["methods"].items():
        for condition in ("clean", "shift"):
            for kind, results in kinds.items():
                if condition not in results:
                    continue
                cells = [interval_cell(results[condition][m], s) for m, _, s in shown]
                calibration = "none" if kind == "raw" else "TS"
                print(f"| {label} | {condition} | {calibration} | " + " | ".join(cells) + " |")
    if claims is None:
        pairs, family, verdict_key = evidence["pairs"], evidence["family"], "verdict"
    else:
        pairs, verdict_key = claims["pairs"], "verdict_page"
        family = len(pairs) * 2 * len(VERDICT_METRICS) + sum(
            len(c) for c in claims["claim_a"].values()
        )
    print(
        "\nPaired differences (negative: the first is better; for accuracy, positive); verdicts at "
        f"95 %, Holm-adjusted over the page's {family} differences:\n"
    )
    # The claim-a file's copy of the pairs may predate the accuracy column.
    shown = [entry for entry in shown if not pairs or entry[0] in pairs[0]["clean"]]
    print(
        "| difference | data | "
        + " | ".join(t for _, t, _ in shown)
        + " | "
        + " | ".join(f"verdict ({t})" for _, t in VERDICT_METRICS)
        + " |"
    )
    print("| --- | --- |" + " ---: |" * len(shown) + " --- |" * len(VERDICT_METRICS))
    for pair in pairs:
        a, b = pair["pair"].split(":")
        for condition in ("clean", "shift"):
            if condition not in pair:
                continue
            cells = [interval_cell(pair[condition][m], s) for m, _, s in shown]
            verdicts = [pair[condition][m][verdict_key] for m, _ in VERDICT_METRICS]
            print(f"| {a} - {b} | {condition} | " + " | ".join(cells + verdicts) + " |")
    if claims is None:
        return
    print(
        "\nClaim (a), debiased ECE of the least robust tenth of the pooled test examples minus:\n"
    )
    print("| model | contrast | difference, points | p (Holm, page) | verdict |")
    print("| --- | --- | ---: | ---: | --- |")
    for method, contrasts in claims["claim_a"].items():
        for name, r in contrasts.items():
            holds = {"worse": "holds", "better": "reversed"}.get(r["verdict_page"], "no difference")
            print(f"| {method} | {name} | {interval_cell(r, 100)} | {r['p_page']:.4f} | {holds} |")


if __name__ == "__main__":
    main()
