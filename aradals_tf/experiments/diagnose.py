"""The robustness diagnostic of a run: calibration per robustness bin."""

import os

import numpy as np

from aradals_tf import atomic
from aradals_tf import corruptions
from aradals_tf import diagnostics
from aradals_tf import metrics
from aradals_tf import plots
from aradals_tf import robustness
from aradals_tf.experiments import build
from aradals_tf.experiments import evaluate
from aradals_tf.experiments import train


def robustness_run(
    run_dir,
    split="test",
    shift=None,
    eps_max=None,
    steps=10,
    num_bins=10,
    norm="inf",
    loss="margin",
    candidates=None,
    plot=None,
    verbose=1,
):
    """Scores a run's split by adversarial robustness; tabulates calibration per bin.

    Args:
        run_dir: a run directory.
        split: `"test"` or `"validation"`.
        shift: optional `"name:severity"` corruption of the split.
        eps_max: largest attack radius (None: the dataset's default).
        steps: attack steps T.
        num_bins: equal-size robustness (and confidence) bins.
        norm: `"inf"` or `"2"`.
        loss: attack loss, `"margin"` or `"cross_entropy"`.
        candidates: the margin's target choice (None: the scorer's default;
            see `robustness.adversarial_robustness`).
        plot: optional PNG path for the accuracy/confidence-per-bin plot.
        verbose: Keras progress-bar verbosity.

    Returns:
        The summary written to `robustness_<split>[_<shift>].json` in the run.
    """
    if shift:
        corruptions.parse_shift(shift)
    config, model = train.load_run(run_dir)
    info = build.dataset_info(config)
    eps_max = info.eps_max if eps_max is None else eps_max
    robustness.check_attack_settings(eps_max, steps, norm)
    candidates = robustness.check_candidates(candidates, loss)
    dataset = evaluate.shifted(build.split_dataset(config, split), shift)
    if verbose:
        print(
            f"Attacking the {split} split{f' ({shift})' if shift else ''}: "
            f"eps_max {eps_max:g}, {steps} steps"
        )
    scores = robustness.score_dataset(
        model,
        dataset,
        eps_max=eps_max,
        steps=steps,
        norm=norm,
        loss=loss,
        candidates=candidates,
        verbose=verbose,
    )
    table = diagnostics.calibration_by_robustness(
        scores["label"], scores["logits"], scores["radius"], num_bins, from_logits=True
    )
    summary = {
        "run": os.path.abspath(run_dir),
        "dataset": config.dataset,
        "method": config.method,
        "split": split,
        "shift": shift,
        "attack": {
            "eps_max": eps_max,
            "steps": steps,
            "norm": str(norm),
            "loss": loss,
            "candidates": candidates,
        },
        "count": int(len(scores["label"])),
        "never_flipped": float(np.mean(scores["level"] == steps)),
        "accuracy": float(np.mean(scores["prediction"] == scores["label"])),
        "ece": float(
            metrics.expected_calibration_error(scores["label"], scores["logits"], from_logits=True)
        ),
        **table,
    }
    suffix = f"_{shift.replace(':', '-')}" if shift else ""
    summary["json"] = os.path.join(run_dir, f"robustness_{split}{suffix}.json")
    atomic.write_json(summary["json"], summary)
    if plot:
        name = os.path.basename(os.path.normpath(run_dir))
        summary["plot"] = plots.calibration_by_robustness(
            table,
            plot,
            title=f"run {name}: {config.method} on {config.dataset} {split}"
            f"{f' ({shift})' if shift else ''}; L-{norm} attack, eps_max {eps_max:g}",
        )
    return summary
