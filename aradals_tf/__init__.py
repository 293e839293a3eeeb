"""aradals-tf: calibrated Keras classifiers through AR-AdaLS.

Public API (imported lazily, so `import aradals_tf` and the CLI's `--help`
do not pay for importing TensorFlow until a name is used):

>>> from aradals_tf import expected_calibration_error, load_dataset
"""

import importlib

from aradals_tf.version import __version__

# public name -> module that defines it
_PUBLIC = {
    "load_dataset": "data",
    "load_arrays": "data",
    "dataset_names": "data",
    "dataset_info": "data",
    "split_indices": "data",
    "corrupt": "corruptions",
    "corrupt_dataset": "corruptions",
    "held_out_copy": "corruptions",
    "CORRUPTIONS": "corruptions",
    "HELD_OUT_CORRUPTIONS": "corruptions",
    "build_backbone": "backbones",
    "expected_calibration_error": "metrics",
    "adaptive_calibration_error": "metrics",
    "maximum_calibration_error": "metrics",
    "negative_log_likelihood": "metrics",
    "brier_score": "metrics",
    "accuracy": "metrics",
    "reliability_diagram_data": "metrics",
    "ExpectedCalibrationError": "metrics",
    "fit_temperature": "temperature",
    "TemperatureScaling": "temperature",
    "soft_labels": "smoothing",
    "adversarial_robustness": "robustness",
    "score_dataset": "robustness",
    "first_order_radius": "first_order",
    "fit_first_order_scale": "first_order",
    "calibration_by_robustness": "diagnostics",
    "bootstrap_interval": "intervals",
    "ARAdaLSModel": "training",
    "index_examples": "score_cache",
    "AdaptiveSmoothing": "adaptive_smoothing",
    "MixupModel": "mixup",
    "SparseLabelSmoothingCrossentropy": "losses",
    "SparseFocalCrossentropy": "losses",
    "LogitEnsemble": "ensemble",
    "EnsembleARAdaLSModel": "ensemble",
    "export_saved_model": "export",
    "read_metadata": "export",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        module = importlib.import_module(f"aradals_tf.{_PUBLIC[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'aradals_tf' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
