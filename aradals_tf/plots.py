"""PNG plots: reliability diagrams (and, later, robustness and eps plots).

matplotlib runs with the non-interactive Agg backend, so plots work on
machines without a display; files are written atomically.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from aradals_tf import atomic  # noqa: E402


def _save(figure, path):
    with atomic.atomic_file(path, "wb") as stream:
        figure.savefig(stream, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def _reliability_panel(axis, data, title):
    edges = data["edges"]
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    used = data["count"] > 0  # empty bins get no bar
    accuracy = data["accuracy"][used]
    confidence = data["confidence"][used]
    axis.bar(
        centers[used],
        accuracy,
        width=width,
        edgecolor="black",
        color="tab:blue",
        label="accuracy",
    )
    axis.bar(
        centers[used],
        confidence - accuracy,
        bottom=accuracy,
        width=width,
        edgecolor="tab:red",
        color="tab:red",
        alpha=0.3,
        hatch="//",
        label="gap to mean confidence",
    )
    axis.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(f"{title}\nECE {100 * data['ece']:.2f} %")
    axis.legend(loc="upper left", fontsize=8)
    share = axis.twinx()
    share.plot(centers, data["count"] / max(data["count"].sum(), 1), "o:", color="gray")
    share.set_ylim(0, 1)
    share.set_ylabel("share of examples", color="gray")


def reliability_diagrams(panels, path, suptitle=None):
    """Writes reliability diagrams side by side to a PNG.

    Args:
        panels: dict `{title: reliability data}`, data from
            `metrics.reliability_diagram_data`.
        path: output `.png` path.
        suptitle: optional figure title.

    Returns:
        `path`.
    """
    figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for axis, (title, data) in zip(axes[0], panels.items()):
        _reliability_panel(axis, data, title)
    if suptitle:
        figure.suptitle(suptitle)
    figure.tight_layout()
    _save(figure, path)
    return path


def _bin_bars(axis, rows, key, xlabel, title):
    positions = np.arange(len(rows))
    accuracy = [row["accuracy"] for row in rows]
    confidence = [row["confidence"] for row in rows]
    axis.bar(positions - 0.2, accuracy, width=0.4, color="tab:blue", label="accuracy")
    axis.bar(positions + 0.2, confidence, width=0.4, color="tab:orange", label="mean confidence")
    labels = []
    for row in rows:
        spec = ".3f" if key == "confidence" else ".2g"
        low, high = (f"{row[f'{key}_{end}']:{spec}}" for end in ("min", "max"))
        labels.append(low if low == high else f"{low}-{high}")
    axis.set_xticks(positions, labels, rotation=45, ha="right", fontsize=8)
    lowest = min(min(accuracy), min(confidence))
    axis.set_ylim(max(0.0, lowest - 0.1), 1.02)
    axis.set_xlabel(xlabel)
    axis.set_title(title)
    axis.legend(loc="lower right", fontsize=8)
    for position, row in zip(positions, rows):
        axis.annotate(
            f"{100 * row['gap']:+.1f}",
            (position, max(row["accuracy"], row["confidence"]) + 0.005),
            ha="center",
            fontsize=7,
        )


def calibration_by_robustness(table, path, title=None):
    """Accuracy and confidence per robustness bin (and per confidence bin).

    Args:
        table: the dict from `metrics.calibration_by_robustness`.
        path: output `.png` path.
        title: optional figure title.

    Returns:
        `path`. Numbers above the bars are confidence minus accuracy in
        points (positive: over-confident).
    """
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    _bin_bars(
        axes[0],
        table["by_robustness"],
        "radius",
        "adversarial robustness radius (equal-size bins, least robust left)",
        "by robustness",
    )
    _bin_bars(
        axes[1],
        table["by_confidence"],
        "confidence",
        "confidence (equal-size bins)",
        "by confidence, for contrast",
    )
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    _save(figure, path)
    return path


def eps_per_stratum(records, path, title=None):
    """Label smoothing eps of each robustness stratum over epochs.

    Args:
        records: `AdaptiveSmoothing.records`, one dict per epoch with
            `stratum{r}_eps` keys.
        path: output `.png` path.
        title: optional title.

    Returns:
        `path`.
    """
    strata = sorted(
        int(key[len("stratum") : -len("_eps")]) for key in records[0] if key.endswith("_eps")
    )
    epochs = [record["epoch"] + 1 for record in records]
    figure, axis = plt.subplots(figsize=(7, 4.4))
    colors = plt.cm.viridis(np.linspace(0, 1, len(strata)))
    for stratum, color in zip(strata, colors):
        label = f"stratum {stratum}" + (
            " (least robust)"
            if stratum == strata[0]
            else " (most robust)"
            if stratum == strata[-1]
            else ""
        )
        axis.plot(
            epochs,
            [record[f"stratum{stratum}_eps"] for record in records],
            marker="o",
            markersize=3,
            color=color,
            label=label,
        )
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("label smoothing eps")
    axis.set_title(title or "AR-AdaLS: smoothing per robustness stratum")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    _save(figure, path)
    return path


def comparison(summary, path):
    """ECE per method, clean and under shift, raw and temperature-scaled.

    Args:
        summary: the dict from `experiments.run_comparison`.
        path: output `.png` path.

    Returns:
        `path`. Bars are means over seeds, whiskers one standard deviation.
    """
    methods = list(summary["methods"])
    series = [
        ("clean_raw", "clean", "tab:blue"),
        ("clean_temperature", "clean + TS", "lightsteelblue"),
        ("shift_mean_raw", "shift mean", "tab:red"),
        ("shift_mean_temperature", "shift mean + TS", "lightcoral"),
    ]
    series = [s for s in series if s[0] in summary["methods"][methods[0]]]
    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(methods), 4.4))
    width = 0.8 / len(series)
    positions = np.arange(len(methods))
    for index, (key, label, color) in enumerate(series):
        means = [100 * summary["methods"][m][key]["ece"][0] for m in methods]
        stds = [100 * summary["methods"][m][key]["ece"][1] for m in methods]
        axis.bar(
            positions + (index - (len(series) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=3,
            color=color,
            label=label,
        )
    axis.set_xticks(positions, methods)
    axis.set_ylabel("ECE % (15 bins)")
    axis.set_title(f"{summary['dataset']}: test ECE, mean of {len(summary['seeds'])} seeds")
    axis.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, path)
    return path


def ece_by_severity(summary, path, title=None):
    """Mean ECE over the corruption types at each severity, raw and temperature-scaled.

    Args:
        summary: an `evaluate_run` summary whose results hold `"name:severity"` shifts.
        path: output `.png` path.
        title: optional title.

    Returns:
        `path`.
    """
    severities = sorted({int(k.rpartition(":")[2]) for k in summary["results"] if ":" in k})
    figure, axis = plt.subplots(figsize=(6, 4))
    for kind, label in (("raw", "raw"), ("temperature", "temperature-scaled")):
        clean = summary["results"]["clean"][kind]["ece"]
        values = [
            np.mean([v[kind]["ece"] for k, v in summary["results"].items() if k.endswith(f":{s}")])
            for s in severities
        ]
        axis.plot(
            [0, *severities], [100 * clean, *(100 * v for v in values)], marker="o", label=label
        )
    axis.set_xticks([0, *severities])
    axis.set_xticklabels(["clean", *(str(s) for s in severities)])
    axis.set_xlabel("corruption severity")
    axis.set_ylabel("ECE % (mean over corruption types)")
    axis.set_title(title or "Calibration under distribution shift")
    axis.legend()
    figure.tight_layout()
    _save(figure, path)
    return path
