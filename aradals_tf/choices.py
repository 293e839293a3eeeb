"""The names that the library's string-valued settings accept, and the
AR-AdaLS defaults that Python and the command line share.

Plain Python with no TensorFlow import, so that the command line can list the
choices in `--help` at once. Each tuple is the single source of its names: the
module that implements a setting validates against the tuple here, and the
CLI and `experiments.config` take their choices from it. The defaults below
are read by `eps_rules`, `training`, `adaptive_smoothing` and the CLI alike
(chosen on validation data: docs/studies/defaults.md).
"""

# `ARAdaLSModel(eps_update=...)`: the eps update rules of `eps_rules`.
EPS_UPDATES = ("shrunk", "pooled", "additive", "relative")
# `ARAdaLSModel(strata_by=...)`: the per-example score that sorts examples
# into strata: the every-batch attack's radius, the first-order radius, the
# top-2 logit margin or the confidence (all in inference mode).
STRATA_SOURCES = ("attack", "first_order", "margin", "confidence")
# The loss each step of the growing-radius attack ascends.
ATTACK_LOSSES = ("margin", "cross_entropy")
# Norms of the attack's perturbation ball.
NORMS = ("inf", "2")
# `export_saved_model(calibration=...)`.
CALIBRATIONS = ("none", "temperature")
# `LogitEnsemble(average=...)`.
ENSEMBLE_AVERAGES = ("logits", "probabilities")
# Dataset splits, in order.
SPLITS = ("train", "validation", "test")

# AR-AdaLS defaults (`ARAdaLSModel`, `AdaptiveSmoothing`, `aradals-tf train`).
DEFAULT_EPS_UPDATE = "shrunk"
DEFAULT_ALPHA = 1.0
DEFAULT_EPS_CAP = 0.5
DEFAULT_MAX_STEP = 1.0
DEFAULT_MIN_TRUST = 0.5
DEFAULT_NUM_STRATA = "auto"
DEFAULT_RESCORE_EVERY = 8
DEFAULT_WARMUP_EPOCHS = 1
