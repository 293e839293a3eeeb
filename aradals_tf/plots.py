"""PNG plots: reliability diagrams (and, later, robustness and eps plots).

matplotlib runs with the non-interactive Agg backend, so plots work on
machines without a display; files are written atomically.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
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
    figure, axes = plt.subplots(
        1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False
    )
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
