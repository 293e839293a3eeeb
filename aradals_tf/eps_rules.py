"""How AR-AdaLS moves each stratum's label smoothing: the eps update rules.

After an epoch, `AdaptiveSmoothing` measures the model on validation data:
for every validation example `i` its stratum, its robustness quantile `u_i`
(where its score falls in the training examples' distribution: 0 = least
robust) and its gap `d_i = confidence_i - correct_i`. A rule turns these
`ValidationStatistics` into one step per stratum, positive where the stratum
is over-confident; `EpsRule.update` then applies it the same way for every
rule:

    eps_r <- clip(eps_r + clip(alpha * trust * step_r, -max_step, max_step), 0, eps_cap)

`trust` in [0, 1] says how far the validation pass can be believed (see
`adaptive_smoothing`), and a pass trusted less than `min_trust` moves nothing;
`max_step` bounds what one epoch can do.

The rules, by name (`get`):

- `"shrunk"` (the default, chosen on validation: docs/studies/defaults.md):
  the per-stratum gap less two of its standard errors.
- `"pooled"`: every validation example informs every stratum:
  a least-squares line of `d_i` on `u_i`, and each stratum shrunk toward it
  by its own evidence (empirical Bayes).
- `"additive"`: the paper's, `step_r = conf_r - acc_r` per stratum.
- `"relative"`: the per-stratum gap over the stratum's error rate.

Every rule is a small serializable object holding its own settings, so a
model saves the rule it trains with.
"""

import dataclasses

import keras
import numpy as np

from aradals_tf import choices
from aradals_tf.choices import EPS_UPDATES


@dataclasses.dataclass(frozen=True)
class ValidationStatistics:
    """Per-example validation measurements that an eps rule reads.

    Args:
        strata: int `[n]`, each example's stratum (0 = least robust).
        quantile: float `[n]`, each example's robustness quantile `u` in
            [0, 1] within the training examples' scores.
        confidence: float `[n]`, top-label confidence.
        correct: float or bool `[n]`.
        num_strata: R.
    """

    strata: np.ndarray
    quantile: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray
    num_strata: int

    @classmethod
    def from_logits(cls, strata, quantile, logits, labels, num_strata):
        """Statistics from a validation pass's logits and integer labels."""
        logits = np.asarray(logits, np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        correct = probs.argmax(axis=1) == np.asarray(labels).reshape(-1)
        return cls(
            np.asarray(strata, np.int64).reshape(-1),
            np.asarray(quantile, np.float64).reshape(-1),
            probs.max(axis=1),
            correct.astype(np.float64),
            int(num_strata),
        )

    @property
    def gap(self):
        """`d_i = confidence_i - correct_i`: positive where over-confident."""
        return np.asarray(self.confidence, np.float64) - np.asarray(self.correct, np.float64)

    def _per_stratum_sum(self, values):
        return np.bincount(self.strata, weights=values, minlength=self.num_strata)

    def count(self):
        """Validation examples per stratum, float `[R]`."""
        return self._per_stratum_sum(np.ones(len(self.strata)))

    def _mean(self, values):
        count = self.count()
        return np.where(count > 0, self._per_stratum_sum(values) / np.maximum(count, 1), np.nan)

    def mean_confidence(self):
        """`conf_r`, NaN for a stratum without validation examples."""
        return self._mean(np.asarray(self.confidence, np.float64))

    def accuracy(self):
        """`acc_r`, NaN for a stratum without validation examples."""
        return self._mean(np.asarray(self.correct, np.float64))

    def stratum_gap(self):
        """`conf_r - acc_r`, the mean of `d_i` over each stratum."""
        return self._mean(self.gap)

    def gap_standard_error(self):
        """Standard error of each `conf_r - acc_r`: `std(d) / sqrt(n_r)`
        (sample standard deviation); inf below two examples."""
        count = self.count()
        mean = np.nan_to_num(self.stratum_gap())
        squares = self._per_stratum_sum(self.gap**2)
        variance = np.maximum(squares - count * mean**2, 0.0) / np.maximum(count - 1, 1)
        return np.where(count >= 2, np.sqrt(variance / np.maximum(count, 1)), np.inf)

    def centers(self):
        """The robustness quantile at each stratum's middle, `(r + 1/2) / R`."""
        return (np.arange(self.num_strata) + 0.5) / self.num_strata


class EpsRule:
    """Base of the eps update rules: the shared update around a rule's step.

    Args:
        alpha: step size.
        eps_cap: largest eps.
        max_step: the most any stratum's eps moves in one update.
        min_trust: a validation pass trusted less than this moves no eps.
            Above it the step is scaled by the trust; below it the pass has
            lost more than that share of the training accuracy above chance
            (BatchNorm's moving statistics early in training, say), and its
            gaps describe another network: scaled steps from such passes,
            repeated over epochs, would add up to the cap.
    """

    name = None

    def __init__(
        self,
        alpha=choices.DEFAULT_ALPHA,
        eps_cap=choices.DEFAULT_EPS_CAP,
        max_step=choices.DEFAULT_MAX_STEP,
        min_trust=choices.DEFAULT_MIN_TRUST,
    ):
        if not float(alpha) >= 0:
            raise ValueError(f"alpha must be >= 0; got {alpha}.")
        if not 0 <= float(eps_cap) <= 1:
            raise ValueError(f"eps_cap must be in [0, 1]; got {eps_cap}.")
        if not float(max_step) > 0:
            raise ValueError(f"max_step must be > 0; got {max_step}.")
        if not 0 <= float(min_trust) <= 1:
            raise ValueError(f"min_trust must be in [0, 1]; got {min_trust}.")
        self.alpha = float(alpha)
        self.eps_cap = float(eps_cap)
        self.max_step = float(max_step)
        self.min_trust = float(min_trust)

    def step(self, statistics):
        """The rule's step per stratum (before `alpha`), float `[R]`; NaN
        where it has nothing to say (that stratum keeps its eps)."""
        raise NotImplementedError(f"{type(self).__name__} must define step().")

    def update(self, eps, statistics, trust=1.0):
        """The new eps per stratum, float32 `[R]`.

        Args:
            eps: float `[R]`, the current eps.
            statistics: `ValidationStatistics` of this epoch.
            trust: in [0, 1], how far this validation pass can be believed;
                below `min_trust` eps stays where it is.
        """
        eps = np.asarray(eps, np.float64)
        if float(trust) < self.min_trust:
            return eps.astype(np.float32)
        step = self.step(statistics)
        move = np.clip(
            self.alpha * float(trust) * np.nan_to_num(step), -self.max_step, self.max_step
        )
        updated = np.clip(eps + move, 0.0, self.eps_cap)
        return np.where(np.isfinite(step), updated, eps).astype(np.float32)

    def get_config(self):
        return {
            "alpha": self.alpha,
            "eps_cap": self.eps_cap,
            "max_step": self.max_step,
            "min_trust": self.min_trust,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="aradals_tf")
class AdditiveRule(EpsRule):
    """The paper's rule: `step_r = conf_r - acc_r` of each stratum alone.

    Example:

    >>> rule = AdditiveRule(alpha=1.0, eps_cap=0.5, max_step=1.0)
    """

    name = "additive"

    def step(self, statistics):
        return statistics.stratum_gap()


@keras.saving.register_keras_serializable(package="aradals_tf")
class RelativeRule(EpsRule):
    """`step_r = (conf_r - acc_r) / max(1 - conf_r, 1 - acc_r, 1 / n_r)`.

    The gap relative to the larger error rate, floored at the resolution of
    the stratum's `n_r` examples (`|step_r| <= 1`): a stratum of nearly
    always right examples moves back to hard labels as fast as one with many
    errors moves, where the additive gap would be of the order of
    `1 - conf_r`.
    """

    name = "relative"

    def step(self, statistics):
        confidence, accuracy = statistics.mean_confidence(), statistics.accuracy()
        resolution = 1.0 / np.maximum(statistics.count(), 1.0)
        scale = np.maximum(np.maximum(1.0 - confidence, 1.0 - accuracy), resolution)
        return (confidence - accuracy) / scale


@keras.saving.register_keras_serializable(package="aradals_tf")
class ShrunkRule(EpsRule):
    """The gap less `standard_errors` of its standard error `s_r`:
    `step_r = sign(g_r) max(|g_r| - z s_r, 0)`; a gap within noise of zero
    does not move eps.

    Args:
        standard_errors: z (2.0).
        **kwargs: `EpsRule` settings.
    """

    name = "shrunk"

    def __init__(self, standard_errors=2.0, **kwargs):
        super().__init__(**kwargs)
        self.standard_errors = float(standard_errors)

    def step(self, statistics):
        gap = statistics.stratum_gap()
        noise = self.standard_errors * statistics.gap_standard_error()
        return np.where(np.isfinite(noise), np.sign(gap) * np.maximum(np.abs(gap) - noise, 0), 0.0)

    def get_config(self):
        return {**super().get_config(), "standard_errors": self.standard_errors}


@keras.saving.register_keras_serializable(package="aradals_tf")
class PooledRule(EpsRule):
    """Every validation example informs every stratum.

    With 20-50 validation examples a stratum's own gap has a standard error
    of 0.04-0.07, as large as the gaps to correct. The gap varies smoothly
    with robustness, so this rule fits it over all examples at once:

    1. a least-squares line `d_i ~ a + b u_i` over every validation example,
       its slope held at `b <= 0` (the finding AR-AdaLS rests on: the less
       robust, the more over-confident; a rising gap, as in networks whose
       least robust examples are still under-confident, is fitted by its
       mean instead, which keeps a straight line from carrying the low end's
       under-confidence to the robust end as over-confidence), and its value
       `m_r` at each stratum's middle quantile;
    2. each stratum's own mean gap `g_r` shrunk toward the line by its
       evidence (empirical Bayes): `step_r = m_r + B_r (g_r - m_r)` with
       `B_r = tau^2 / (tau^2 + s^2 / n_r)`, where `s^2` is the residual
       variance and `tau^2` the strata's spread around the line beyond what
       noise explains (a moment estimate, 0 when noise explains it all);
       a stratum without examples takes the line's value.

    In the feedback loop (a stratum's confidence falls as its eps rises) eps
    settles where the fitted gaps are zero; on a calibrated model that is
    near eps0, since a line over all examples has a fraction of one
    stratum's noise (docs: the defaults study). Its settings are
    `EpsRule`'s.

    Example:

    >>> rule = PooledRule(alpha=1.0, eps_cap=0.2)
    >>> new_eps = rule.update(eps, statistics)
    """

    name = "pooled"

    def step(self, statistics):
        u, d = np.asarray(statistics.quantile, np.float64), statistics.gap
        if len(d) < 3 or np.ptp(u) == 0:  # no line to fit
            return np.full(statistics.num_strata, np.nan)
        centred = u - u.mean()
        slope = min(float(np.sum(centred * d) / np.sum(centred * centred)), 0.0)
        residual_variance = np.sum((d - d.mean() - slope * centred) ** 2) / (len(d) - 2)
        line = d.mean() + slope * (statistics.centers() - u.mean())
        count, gap = statistics.count(), statistics.stratum_gap()
        seen = count > 0
        noise = residual_variance / np.maximum(count, 1)
        spread = max(float(np.mean((gap[seen] - line[seen]) ** 2 - noise[seen])), 0.0)
        weight = np.where(seen, spread / (spread + noise), 0.0)
        return line + weight * np.nan_to_num(gap - line)


RULES = {rule.name: rule for rule in (PooledRule, AdditiveRule, ShrunkRule, RelativeRule)}
assert tuple(sorted(RULES)) == tuple(sorted(EPS_UPDATES))


def get(identifier, **settings):
    """An `EpsRule` from a name (with its settings), a rule, or a serialized rule.

    Args:
        identifier: a name in `choices.EPS_UPDATES`, an `EpsRule`, or the
            dict `keras.saving.serialize_keras_object` made of one.
        **settings: `alpha`, `eps_cap`, `max_step` and the rule's own
            settings, for a name; settings left as None take the rule's
            defaults.

    Example:

    >>> get("additive", alpha=0.5).alpha
    0.5
    """
    settings = {key: value for key, value in settings.items() if value is not None}
    if isinstance(identifier, dict):
        identifier = keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, EpsRule):
        if settings:
            raise ValueError(
                "Give the rule's settings to the rule itself, not beside it; "
                f"got {sorted(settings)}."
            )
        return identifier
    if identifier not in RULES:
        raise ValueError(
            f"eps_update must be one of {', '.join(EPS_UPDATES)} or an EpsRule; got {identifier!r}."
        )
    return RULES[identifier](**settings)
