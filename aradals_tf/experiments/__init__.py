"""Runs and studies: train a config into a run directory, evaluate it,
diagnose it, compare methods.

One module per concept, in import order: `config` (`TrainConfig` and the
choices, no TensorFlow), `parsing` (the comparison's CLI strings), `build`
(data pipelines, strategy, model), `train` (resumable runs), `evaluate`,
`diagnose` (calibration by robustness), `comparison` (the selection study),
`serving` (a run as a SavedModel) and `tables` (text tables). The public
names of each are re-exported here; those of the modules that import
TensorFlow are loaded when first used, so that the CLI's `--help` reads
`TrainConfig` at once.
"""

import importlib

from aradals_tf.experiments.config import CORRUPTION_SEED
from aradals_tf.experiments.config import ENSEMBLE_MODES
from aradals_tf.experiments.config import EVAL_BATCH_SIZE
from aradals_tf.experiments.config import METHODS
from aradals_tf.experiments.config import SELECTION_CRITERIA
from aradals_tf.experiments.config import SMOOTHING_DATA
from aradals_tf.experiments.config import STRATEGIES
from aradals_tf.experiments.config import TrainConfig
from aradals_tf.experiments.parsing import parse_grids_and_sets
from aradals_tf.experiments.parsing import parse_methods
from aradals_tf.experiments.parsing import parse_override
from aradals_tf.experiments.parsing import parse_seeds
from aradals_tf.experiments.tables import format_bin_table
from aradals_tf.experiments.tables import format_comparison
from aradals_tf.experiments.tables import format_export
from aradals_tf.experiments.tables import format_table
from aradals_tf.experiments.tables import summary_rows

_LAZY = {
    # name -> submodule; these import TensorFlow, so only when first used.
    "build_model": "build",
    "make_strategy": "build",
    "split_dataset": "build",
    "training_datasets": "build",
    "steps_per_epoch": "build",
    "train_run": "train",
    "is_chief": "train",
    "load_run": "train",
    "predict_logits": "evaluate",
    "evaluate_run": "evaluate",
    "shift_names": "evaluate",
    "held_out_validation": "evaluate",
    "robustness_run": "diagnose",
    "run_comparison": "comparison",
    "tabulate_runs": "comparison",
    "export_run": "serving",
}

__all__ = [
    "CORRUPTION_SEED",
    "ENSEMBLE_MODES",
    "EVAL_BATCH_SIZE",
    "METHODS",
    "SELECTION_CRITERIA",
    "SMOOTHING_DATA",
    "STRATEGIES",
    "TrainConfig",
    "format_bin_table",
    "format_comparison",
    "format_export",
    "format_table",
    "parse_grids_and_sets",
    "parse_methods",
    "parse_override",
    "parse_seeds",
    "summary_rows",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"aradals_tf.experiments.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'aradals_tf.experiments' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
