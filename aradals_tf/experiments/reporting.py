"""The report of an evaluated run: its figures and tables gathered into one file.

`evaluation_report(run_dir, summary)` writes `report.html` (self-contained)
and `report.md` into the run directory (`report.write_report`): the metric
tables raw and temperature-scaled, clean and per corruption, with the very
numbers `aradals-tf evaluate` prints; the reliability diagram before and
after temperature scaling; ECE by severity; calibration by robustness
where `aradals-tf robustness` has run; for AR-AdaLS runs, eps per stratum
over epochs; and what was evaluated, how, when and with which version.
"""

import datetime
import glob
import os
import tempfile

from aradals_tf import atomic
from aradals_tf import metrics
from aradals_tf import plots
from aradals_tf import report
from aradals_tf.experiments import evaluate
from aradals_tf.experiments import external
from aradals_tf.experiments import tables
from aradals_tf.version import __version__


def _eps_records(history):
    strata = sorted(
        int(key[len("stratum") : -len("_eps")])
        for key in history
        if key.startswith("stratum") and key.endswith("_eps")
    )
    epochs = len(history.get(f"stratum{strata[0]}_eps", [])) if strata else 0
    return [
        {"epoch": e, **{f"stratum{r}_eps": history[f"stratum{r}_eps"][e] for r in strata}}
        for e in range(epochs)
    ]


def evaluation_report(run_dir, summary, num_bins=15):
    """Writes the run's `report.html` and `report.md`; returns their paths.

    Args:
        run_dir: an evaluated run directory.
        summary: its `evaluate_run` summary.
        num_bins: bins of the reliability diagrams.
    """
    source = external.read_source(run_dir)
    about = [
        ("run", os.path.abspath(run_dir)),
        ("model", source["model"] if source else f"trained by aradals-tf ({summary['method']})"),
        ("data", summary["dataset"]),
        ("split", summary["split"]),
        (
            "how",
            f"{summary['num_bins']}-bin ECE; temperature T = {summary['temperature']:.3f} fitted "
            "by NLL on the validation split; "
            f"{len(summary['results']) - 1} corrupted copies of the split",
        ),
        ("when", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("aradals-tf", __version__),
    ]
    if source:
        about.insert(2, ("logits", source["logits"]))
    header, body = tables.table_cells(tables.summary_rows(summary, include_each_shift=True))
    sections = [
        {
            "title": "Metrics",
            "text": "Raw and temperature-scaled, clean and per corruption (name:severity).",
            "table": {"header": header, "body": body},
        }
    ]
    with tempfile.TemporaryDirectory() as scratch:
        labels, logits, fitted = evaluate.read_predictions(run_dir, summary["split"])
        clean = logits["clean"]
        panels = {
            "raw": metrics.reliability_diagram_data(labels, clean, num_bins, True),
            f"temperature-scaled (T={fitted:.2f})": metrics.reliability_diagram_data(
                labels, clean / fitted, num_bins, True
            ),
        }
        path = plots.reliability_diagrams(panels, os.path.join(scratch, "reliability.png"))
        sections.append(
            {
                "title": "Reliability before and after temperature scaling",
                "figures": [report.figure(path, "Reliability diagram, clean split")],
            }
        )
        if len(summary["results"]) > 1:
            path = plots.ece_by_severity(summary, os.path.join(scratch, "severity.png"))
            sections.append(
                {
                    "title": "ECE by severity",
                    "figures": [report.figure(path, "Mean ECE over corruption types")],
                }
            )
        for table_path in sorted(glob.glob(os.path.join(run_dir, "robustness_*.json"))):
            table = atomic.read_json(table_path)
            header, body = tables.bin_table_cells(table["by_robustness"], "radius")
            path = plots.calibration_by_robustness(table, os.path.join(scratch, "robustness.png"))
            sections.append(
                {
                    "title": f"Calibration by robustness ({os.path.basename(table_path)})",
                    "table": {"header": header, "body": body},
                    "figures": [report.figure(path, "Accuracy and confidence per bin")],
                }
            )
        history_path = os.path.join(run_dir, "history.json")
        records = (
            _eps_records(atomic.read_json(history_path)) if os.path.isfile(history_path) else []
        )
        if records:
            path = plots.eps_per_stratum(records, os.path.join(scratch, "eps.png"))
            sections.append(
                {
                    "title": "AR-AdaLS: eps per robustness stratum",
                    "figures": [report.figure(path, "eps of each stratum after each epoch")],
                }
            )
        return report.write_report(
            os.path.join(run_dir, "report.html"),
            {
                "title": f"Evaluation of {os.path.basename(os.path.normpath(run_dir))}",
                "about": about,
                "sections": sections,
            },
        )
