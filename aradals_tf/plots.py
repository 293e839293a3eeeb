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
