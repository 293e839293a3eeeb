"""aradals-tf: calibrated Keras classifiers through AR-AdaLS.

Public API (imported lazily, so `import aradals_tf` and the CLI's `--help`
do not pay for importing TensorFlow until a name is used):

>>> from aradals_tf import expected_calibration_error, load_dataset

Every serializable class is registered with Keras as soon as Keras and
TensorFlow are imported (before or after this package), so
`import aradals_tf` then `keras.models.load_model("model.keras")` works in a
fresh process.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

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
    "EpsRule": "eps_rules",
    "PooledRule": "eps_rules",
    "AdditiveRule": "eps_rules",
    "ShrunkRule": "eps_rules",
    "RelativeRule": "eps_rules",
    "adversarial_robustness": "robustness",
    "score_dataset": "robustness",
    "first_order_radius": "first_order",
    "fit_first_order_scale": "first_order",
    "calibration_by_robustness": "diagnostics",
    "bootstrap_interval": "intervals",
    "ARAdaLSModel": "training",
    "index_examples": "score_cache",
    "ScoreSource": "scores",
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


# The modules whose classes Keras must find by name when it loads a model.
_SERIALIZABLE_MODULES = (
    "losses",
    "metrics",
    "temperature",
    "scores",
    "score_cache",
    "strata",
    "eps_rules",
    "training",
    "mixup",
    "ensemble",
)
_FRAMEWORKS = ("keras", "tensorflow")


def _register_serializables():
    try:
        for name in _SERIALIZABLE_MODULES:
            importlib.import_module(f"aradals_tf.{name}")
    except Exception as error:  # a broken install must not break the user's import of Keras
        warnings.warn(f"aradals_tf could not register its Keras classes: {error}", stacklevel=2)


class _RegisterAfterFrameworks(importlib.abc.MetaPathFinder):
    """Registers the serializable classes when the outermost import of Keras or
    TensorFlow finishes (each imports the other, so only then are both whole);
    importing them here at once would cost the CLI's `--help` seconds and
    print TensorFlow's start-up lines before the CLI can hide them."""

    depth = 0

    def find_spec(self, name, path=None, target=None):
        if name not in _FRAMEWORKS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _CountingLoader(spec.loader, self)
        return spec


class _CountingLoader(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.finder.depth += 1
        try:
            self.loader.exec_module(module)
        finally:
            self.finder.depth -= 1
        if self.finder.depth == 0 and all(name in sys.modules for name in _FRAMEWORKS):
            if self.finder in sys.meta_path:
                sys.meta_path.remove(self.finder)
            _register_serializables()


if all(name in sys.modules for name in _FRAMEWORKS):
    _register_serializables()
else:
    sys.meta_path.insert(0, _RegisterAfterFrameworks())
