"""The names that the library's string-valued settings accept.

Plain Python with no TensorFlow import, so that the command line can list the
choices in `--help` at once. Each tuple is the single source of its names: the
module that implements a setting validates against the tuple here, and the
CLI and `experiments.config` take their choices from it.
"""

# `smoothing.update_eps(rule=...)`, `ARAdaLSModel(eps_update=...)`.
EPS_UPDATES = ("additive", "relative", "shrunk")
# `ARAdaLSModel(strata_by=...)`: the per-example score that sorts examples
# into strata: the every-batch attack's radius, the first-order radius, the
# top-2 logit margin or the confidence (the last three from the training
# forward pass).
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
