"""AR-AdaLS as a Keras model: `ARAdaLSModel`.

The model composes three parts and stays a thin Keras `Model`:

- a backbone that maps inputs to logits;
- `strata.RobustnessStrata`: the robustness score (`scores.ScoreSource`),
  the per-example score cache and the strata cut from it;
- an eps rule (`eps_rules`): how each stratum's smoothing moves.

Each training step takes every example's stratum from its current score and
trains on soft labels `(1 - eps_r) onehot + eps_r / K`; the
`adaptive_smoothing.AdaptiveSmoothing` callback moves eps after each epoch.
How `fit` prepares its inputs and callbacks is in `fitting`.
"""

import keras
import tensorflow as tf

from aradals_tf import choices
from aradals_tf import eps_rules
from aradals_tf import fitting
from aradals_tf import scores
from aradals_tf import smoothing
from aradals_tf import strata as strata_lib
from aradals_tf.soft_target import SoftTargetModel


@keras.saving.register_keras_serializable(package="aradals_tf")
class ARAdaLSModel(SoftTargetModel):
    """Adversarial-robustness-based adaptive label smoothing (Qin et al. 2021).

    Every example is scored by `strata_by` on the current weights, in
    inference mode: `"attack"` (the growing-radius cleverhans attack's
    continuous flip radius), `"first_order"` (margin over its input
    gradient's dual norm), `"margin"` (top-2 logits) or `"confidence"`. A
    score is kept per example and refreshed every `rescore_every` epochs;
    strata are the R-quantiles of the kept scores; stratum `r` trains on
    label smoothing `eps_r` (stratum 0 least robust). Training inputs carry
    each example's index: `fit` adds it to arrays itself, datasets get it from
    `score_cache.index_examples`. State lives in variables (`stratum_eps`,
    the score cache and its histogram), so it is saved, checkpointed and
    mirrored.

    Args:
        backbone: a `keras.Model` mapping inputs in [clip_min, clip_max] to logits.
        num_classes: K.
        num_strata: R, or `"auto"` (the default): about 25 validation examples
            per stratum, at most 10, set when `fit` starts.
        strata_by: the score that sorts examples (above).
        eps_max: the attack's largest radius in input units (0.3 for
            MNIST-like data, 8/255 for CIFAR-like data); `"attack"` only.
        attack_steps: T, the attack's steps.
        eps_update: the eps rule: a name (`"shrunk"`, the default;
            `"pooled"`; `"additive"`, the paper's; `"relative"`) or an
            `eps_rules.EpsRule`.
        alpha: the rule's step size (None: the rule's default).
        eps_cap: the largest eps (None: the rule's default).
        max_step: the most eps moves per update (None: the rule's default).
        eps_init: every stratum's eps until the first update.
        rescore_every: k, score each example once every k epochs (8).
        train_size: the number of training examples; `fit` counts it when None.
        norm: `"inf"` or `"2"`.
        attack_loss: `"margin"` or `"cross_entropy"`.
        attack_candidates: the margin attack's target: 1 (the runner-up
            logit) or k > 1 (the nearest of the k largest other logits).
        clip_min: smallest valid input value.
        clip_max: largest valid input value.
        **kwargs: base `Model` arguments.

    Example:

    ```python
    model = ARAdaLSModel(backbone, num_classes=10, eps_max=0.3)
    model.compile(optimizer="adam", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=20, callbacks=[AdaptiveSmoothing((x_val, y_val))])
    ```
    """

    def __init__(
        self,
        backbone,
        num_classes,
        *,
        num_strata=choices.DEFAULT_NUM_STRATA,
        strata_by="attack",
        eps_max=None,
        attack_steps=10,
        eps_update=choices.DEFAULT_EPS_UPDATE,
        alpha=None,
        eps_cap=None,
        max_step=None,
        eps_init=0.0,
        rescore_every=choices.DEFAULT_RESCORE_EVERY,
        train_size=None,
        norm="inf",
        attack_loss="margin",
        attack_candidates=1,
        clip_min=0.0,
        clip_max=1.0,
        **kwargs,
    ):
        super().__init__(backbone, num_classes, **kwargs)
        self.eps_rule = eps_rules.get(eps_update, alpha=alpha, eps_cap=eps_cap, max_step=max_step)
        if not 0.0 <= float(eps_init) <= self.eps_rule.eps_cap:
            raise ValueError(
                f"Need 0 <= eps_init <= eps_cap = {self.eps_rule.eps_cap}; got eps_init={eps_init}."
            )
        self.eps_init = float(eps_init)
        self.source = scores.ScoreSource(
            strata_by,
            eps_max,
            attack_steps,
            norm,
            attack_loss,
            attack_candidates,
            clip_min,
            clip_max,
        )
        self.rescore_every = strata_lib.check_rescore_every(rescore_every)
        self.strata, self.stratum_eps = None, None
        self._train_size = train_size
        num_strata = strata_lib.check_num_strata(num_strata)
        if num_strata != "auto":
            self.build_strata(num_strata)

    def build_strata(self, num_strata, train_size=None):
        """Creates the strata and eps variables (at `fit`'s start for `"auto"`)."""
        if self.strata is not None:
            if num_strata != self.strata.num_strata:
                raise ValueError(
                    f"This model has {self.strata.num_strata} strata, not {num_strata}."
                )
        else:
            self.strata = strata_lib.RobustnessStrata(
                num_strata, self.source, self.rescore_every, name="strata"
            )
            self.stratum_eps = self.add_weight(
                shape=(num_strata,),
                initializer=keras.initializers.Constant(self.eps_init),
                trainable=False,
                name="stratum_eps",
            )
        train_size = train_size if train_size is not None else self._train_size
        if train_size is not None:
            self.strata.build_cache(train_size)

    @property
    def num_strata(self):
        return self.strata.num_strata if self.strata is not None else "auto"

    def soft_targets(self, x, labels, index=None):
        if index is None:
            raise ValueError(
                "ARAdaLSModel keeps a score per training example, so its training inputs must "
                "carry each example's index: fit() adds it to arrays; index a dataset with "
                "aradals_tf.index_examples(dataset) before shuffling and batching."
            )
        strata = self.strata.batch_strata(self.backbone, x, index)
        # Until scoring starts every stratum has eps_init (see strata).
        eps = tf.where(self.strata.scoring(), tf.gather(self.stratum_eps, strata), self.eps_init)
        return x, smoothing.soft_labels(labels, self.num_classes, eps), None, strata

    def observe(self, state, labels, logits):
        correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
        self.strata.count(state, correct)

    def compile(self, optimizer="rmsprop", loss="auto", metrics=None, jit_compile="auto", **kwargs):
        """`SoftTargetModel.compile`; with the attack, never XLA.

        The compacted attack's live batch shrinks at every step, a shape that
        XLA cannot compile, and so does the set of examples due for scoring:
        Keras's `jit_compile="auto"` (XLA on GPU) becomes False, and True is
        refused.
        """
        if jit_compile is True:
            raise ValueError(
                "ARAdaLSModel cannot run under XLA (the examples it scores in a step change "
                "in number from step to step): leave jit_compile at 'auto' or False."
            )
        super().compile(optimizer, loss, metrics, jit_compile=False, **kwargs)

    def fit(self, *args, scoring_data="auto", **kwargs):
        """`keras.Model.fit`, taking what Keras's takes.

        Arrays get each example's index (datasets must carry one), the score
        cache is sized, `num_strata="auto"` is resolved from the
        `AdaptiveSmoothing` callback's data, and the callbacks run in this
        order: `AdaptiveSmoothing` (its logs reach `History`, `CSVLogger`,
        `TensorBoard`), the strata's epoch bookkeeping, then the others. The
        progress bar leaves out the per-stratum logs.

        Args:
            *args: Keras's `fit` arguments.
            scoring_data: where the examples due in an epoch are scored before
                it, in large batches: `"auto"` (the training data when it is
                arrays or a finite dataset), the indexed training inputs
                (arrays, or a finite dataset such as the unshuffled
                `index_examples` one, where `x` repeats), or None (the training
                steps score their due examples). With several replicas the
                steps always score.
            **kwargs: Keras's `fit` arguments.
        """
        return super().fit(**fitting.prepare_fit(self, args, kwargs, scoring_data))

    # The score's settings, read by the export and the CLI.
    strata_by = property(lambda self: self.source.strata_by)
    eps_max = property(lambda self: self.source.eps_max)
    attack_steps = property(lambda self: self.source.attack_steps)
    norm = property(lambda self: self.source.norm)
    attack_loss = property(lambda self: self.source.attack_loss)
    attack_candidates = property(lambda self: self.source.attack_candidates)
    clip_min = property(lambda self: self.source.clip_min)
    clip_max = property(lambda self: self.source.clip_max)
    eps_update = property(lambda self: self.eps_rule.name)

    @property
    def score_cache(self):
        return None if self.strata is None else self.strata.cache

    def get_config(self):
        config = super().get_config()
        source = self.source.get_config()
        config.update(
            {
                "num_strata": self.num_strata,
                "eps_update": keras.saving.serialize_keras_object(self.eps_rule),
                "eps_init": self.eps_init,
                "rescore_every": self.rescore_every,
                "train_size": self.strata.train_size if self.strata else self._train_size,
                **source,
            }
        )
        return config
