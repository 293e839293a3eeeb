"""The names that the library's string-valued settings accept.

Plain Python with no TensorFlow import, so that the command line can list the
choices in `--help` at once. Each tuple is the single source of its names: the
module that implements a setting validates against the tuple here, and the
CLI and `experiments.config` take their choices from it.
"""

# `smoothing.update_eps(rule=...)`, `ARAdaLSModel(eps_update=...)`.
EPS_UPDATES = ("additive", "relative")
# `ARAdaLSModel(robustness_estimate=...)`: the every-batch attack, or the
# first-order estimate from the training forward pass.
ROBUSTNESS_ESTIMATES = ("attack", "first_order")
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
