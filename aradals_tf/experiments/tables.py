"""Text tables of evaluations, robustness bins and comparisons, and the
export summary the CLI prints."""

import os

TABLE_COLUMNS = (
    ("accuracy", "acc %"),
    ("ece", "ECE %"),
    ("adaptive_ece", "aECE %"),
    ("mce", "MCE %"),
    ("nll", "NLL"),
    ("brier", "Brier"),
)


def _aligned(header, body, left_columns):
    """Lines of an aligned table: the first `left_columns` cells left-justified,
    the others right-justified, a rule of dashes under the header."""
    widths = [max(len(str(row[i])) for row in [header] + body) for i in range(len(header))]

    def line(row):
        return "  ".join(
            str(cell).ljust(width) if i < left_columns else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        )

    return [line(header), line(["-" * width for width in widths])] + [line(row) for row in body]


def _format_cells(values):
    cells = []
    for key, _ in TABLE_COLUMNS:
        value = values[key]
        cells.append(f"{value:.4f}" if key in ("nll", "brier") else f"{100 * value:.2f}")
    return cells


def table_cells(rows, first_header="condition"):
    """`(header, body)` of `[(label, calibration, metric dict)]`: the cells as
    `format_table` prints them (the report's tables use the same strings)."""
    header = [first_header, "calibration"] + [title for _, title in TABLE_COLUMNS]
    return header, [[label, kind] + _format_cells(values) for label, kind, values in rows]


def format_table(rows, first_header="condition"):
    """Formats `[(label, calibration, metric dict)]` as an aligned text table."""
    header, body = table_cells(rows, first_header)
    return "\n".join(_aligned(header, body, left_columns=2))


def summary_rows(summary, include_each_shift=True):
    """Table rows of one `evaluate_run` summary."""
    rows = []
    conditions = ["clean"] + (
        [k for k in summary["results"] if k != "clean"] if include_each_shift else []
    )
    for condition in conditions:
        for kind in ("raw", "temperature"):
            rows.append(
                (condition, _kind_label(kind, summary), summary["results"][condition][kind])
            )
    if "shift_mean" in summary:
        for kind in ("raw", "temperature"):
            rows.append(("shift mean", _kind_label(kind, summary), summary["shift_mean"][kind]))
    return rows


def _kind_label(kind, summary):
    return "none" if kind == "raw" else f"TS (T={summary['temperature']:.2f})"


def format_bin_table(rows, key):
    """Formats `calibration_by_robustness` rows as an aligned text table."""
    return "\n".join(_aligned(*bin_table_cells(rows, key), left_columns=0))


def bin_table_cells(rows, key):
    """`(header, body)` of `calibration_by_robustness` rows, as `format_bin_table` prints them."""
    header = ["bin", "count", f"{key} range", "acc %", "conf %", "conf-acc", "ECE %"]
    body = []
    for row in rows:
        low, high = (
            f"{row[f'{key}_{end}']:{'.4f' if key == 'confidence' else '.3g'}}"
            for end in ("min", "max")
        )
        body.append(
            [
                str(row["bin"]),
                str(row["count"]),
                low if low == high else f"{low} - {high}",
                f"{100 * row['accuracy']:.2f}",
                f"{100 * row['confidence']:.2f}",
                f"{100 * row['gap']:+.2f}",
                f"{100 * row['ece']:.2f}",
            ]
        )
    return header, body


def format_comparison(summary):
    """The comparison as a text table: mean +- std over seeds, in percent."""
    columns = (
        ("accuracy", "acc %"),
        ("ece", "ECE %"),
        ("adaptive_ece", "aECE %"),
        ("nll", "NLL"),
        ("brier", "Brier"),
    )
    header = ["method", "data", "calibration"] + [title for _, title in columns]
    body = []
    for method, row in summary["methods"].items():
        for condition in ("clean", "shift_mean"):
            for kind in ("raw", "temperature"):
                key = f"{condition}_{kind}"
                if key not in row:
                    continue
                cells = []
                for name, _ in columns:
                    mean, std = row[key][name]
                    scale = 1 if name in ("nll", "brier") else 100
                    digits = 3 if scale == 1 else 2
                    cells.append(f"{scale * mean:.{digits}f}±{scale * std:.{digits}f}")
                label = "none" if kind == "raw" else f"TS (T={row['temperature'][0]:.2f})"
                body.append([method, condition.replace("_", " "), label] + cells)
    lines = _aligned(header, body, left_columns=3)
    settings = [
        f"{m}: {', '.join(f'{k}={v}' for k, v in row['settings'].items()) or 'defaults'}"
        for m, row in summary["methods"].items()
    ]
    criterion = {
        "validation": "validation ECE",
        "validation+held-out": "mean of clean and held-out-shift validation ECE",
    }[summary.get("select_on", "validation")]
    lines += ["", f"Chosen settings ({criterion}):"] + ["  " + s for s in settings]
    methods = list(summary["methods"])
    names = list(summary["methods"][methods[0]].get("by_corruption", {}))
    if names:
        lines += ["", "Raw ECE % by corruption (mean over severities 1-5, then over seeds):"]
        width = max(len(n) for n in names)
        columns = {m: max(len(m), 6) for m in methods}
        lines.append(" " * width + "  " + "  ".join(m.rjust(columns[m]) for m in methods))
        for name in names:
            cells = [
                f"{100 * summary['methods'][m]['by_corruption'][name]['ece'][0]:.2f}".rjust(
                    columns[m]
                )
                for m in methods
            ]
            lines.append(name.ljust(width) + "  " + "  ".join(cells))
    if summary.get("evidence"):
        lines += ["", format_evidence(summary["evidence"])]
    return "\n".join(lines)


def format_export(run_dir, config, path, meta):
    """What `aradals-tf export` prints: the export, its calibration, how to serve it."""
    calibration, attack = meta["calibration"], meta["robustness"]
    validation = calibration["validation"]
    fitted = calibration["method"] == "temperature"
    lines = [
        f"Exported {run_dir} ({config.method} on {config.dataset}) to {path}",
        f"  calibration: {calibration['method']}, T = {calibration['temperature']:.4f}"
        + (
            f" (fitted on the validation split, {validation['examples']} examples)"
            if fitted
            else ""
        ),
        f"  validation ECE {100 * validation['ece_before']:.2f} % -> "
        f"{100 * validation['ece_after']:.2f} %, "
        f"NLL {validation['nll_before']:.4f} -> {validation['nll_after']:.4f}",
        "  signatures: serving_default (float32 images in [0, 1]), serving_uint8 (uint8 0-255), "
        f"robustness (L-{attack['norm']} eps_max {attack['eps_max']:.4g}, {attack['steps']} steps)",
        "Serve: docker run -p 8501:8501 -p 8500:8500 "
        f"-v {os.path.abspath(os.path.dirname(path))}:/models/{meta['name']} "
        f"-e MODEL_NAME={meta['name']} tensorflow/serving",
    ]
    return "\n".join(lines)


def interval_cell(result, scale):
    """`value [low, high]` of an interval, times `scale` (2 decimals for %, else 3)."""
    digits = 2 if scale == 100 else 3
    return (
        f"{scale * result['value']:.{digits}f} "
        f"[{scale * result['low']:.{digits}f}, {scale * result['high']:.{digits}f}]"
    )


# (metric, column title, scale) of the evidence tables; accuracy has no verdict.
EVIDENCE_METRICS = (
    ("ece", "ECE %", 100),
    ("debiased_ece", "debiased ECE %", 100),
    ("nll", "NLL", 1),
    ("brier", "Brier", 1),
    ("accuracy", "accuracy %", 100),
)
VERDICT_METRICS = (("debiased_ece", "dECE"), ("nll", "NLL"), ("brier", "Brier"))


def format_evidence(evidence):
    """A comparison's intervals and verdicts (`experiments.evidence`) as text."""
    first = next(iter(evidence["methods"].values()))["raw"]
    conditions = [c for c in ("clean", "shift") if c in first]
    # A comparison.json written before accuracy was reported has no accuracy column.
    shown = [entry for entry in EVIDENCE_METRICS if entry[0] in first[conditions[0]]]
    header = ["method", "data", "calibration"] + [title for _, title, _ in shown]
    body = []
    for label, kinds in evidence["methods"].items():
        for condition in conditions:
            for kind, results in kinds.items():
                cells = [interval_cell(results[condition][m], s) for m, _, s in shown]
                body.append([label, condition, "none" if kind == "raw" else "TS"] + cells)
    seeds = sorted(set(evidence.get("seeds", {}).values())) or [1]
    lines = [
        f"95 % bootstrap intervals over {evidence['examples']} test examples and "
        f"{'/'.join(str(s) for s in seeds)} seeds per method ({evidence['resamples']} "
        "resamples of examples and seeds; folds of a seed pooled):"
    ]
    lines += _aligned(header, body, left_columns=3)
    if evidence["pairs"]:
        titles = [t for _, t, _ in shown] + [f"verdict ({t})" for _, t in VERDICT_METRICS]
        header = ["difference", "data"] + titles
        body = []
        for pair in evidence["pairs"]:
            a, b = pair["pair"].split(":")
            for condition in conditions:
                results = pair[condition]
                cells = [interval_cell(results[m], s) for m, _, s in shown]
                verdicts = [results[m]["verdict"] for m, _ in VERDICT_METRICS]
                body.append([f"{a} - {b}", condition] + cells + verdicts)
        lines += [
            "",
            "Paired differences (same resamples; negative = the first is better, except "
            "accuracy); verdicts "
            f"Holm-adjusted over the {evidence.get('family', 0)} differences judged:",
        ]
        lines += _aligned(header, body, left_columns=2)
    return "\n".join(lines)
