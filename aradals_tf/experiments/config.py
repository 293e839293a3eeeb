"""The run configuration: `TrainConfig` and the choices of its settings.

Plain Python with no TensorFlow import: the command line builds its `train`
options from these fields (their help texts and choices) and lists them in
`--help` at once. `TrainConfig.validate` imports the dataset and backbone
registries only when it runs.
"""

import dataclasses

from aradals_tf import choices

METHODS = ("vanilla", "label-smoothing", "focal", "mixup", "ar-adals")
STRATEGIES = ("default", "mirrored", "multiworker")
ENSEMBLE_MODES = ("joint", "independent")
SMOOTHING_DATA = ("clean", "clean+held-out")
SELECTION_CRITERIA = ("validation", "validation+held-out")
# Batch size of every pass over evaluation data (scoring, no gradients).
EVAL_BATCH_SIZE = 500
# Seed of the corruption noise at evaluation time: fixed, so every run and
# method is evaluated on the same corrupted images.
CORRUPTION_SEED = 1234


def _setting(default, help, choices=None, aliases=()):
    """A `TrainConfig` field whose metadata the CLI turns into an option."""
    return dataclasses.field(
        default=default, metadata={"help": help, "choices": choices, "aliases": aliases}
    )


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines one training run.

    Each field's help text is in its metadata (`dataclasses.fields`), which
    is also what `aradals-tf train --help` shows. AR-AdaLS settings apply to
    `method="ar-adals"` only.

    Example:

    >>> config = TrainConfig(dataset="digits", method="ar-adals", epochs=5)
    >>> config.validate().backbone
    'mlp'
    """

    dataset: str = _setting(
        "mnist5k",
        "The data (also --data): mnist5k or digits (they ship with the package's "
        "dependencies), a registry tfds name or tfds:NAME[/CONFIG] (prepared data, "
        "--data-dir), a folder of images in class subfolders (or with train/, "
        "validation/, test/ subfolders), or a .npz file of arrays x and y.",
        aliases=("--data",),
    )
    method: str = _setting("vanilla", "Training method.", METHODS)
    backbone: str | None = _setting(
        None, "Backbone name (default: chosen by image size; an unknown name lists the valid ones)."
    )
    epochs: int = _setting(20, "Training epochs.")
    batch_size: int = _setting(128, "Training batch size (global, across replicas).")
    learning_rate: float = _setting(1e-3, "Adam learning rate.")
    seed: int = _setting(0, "Seed of weights, shuffling and the embedded sets' split.")
    data_dir: str | None = _setting(None, "tfds data directory.")
    image_size: str | None = _setting(
        None, "Resize the images to HxW pixels (a folder's or tfds's; e.g. 32x32)."
    )
    fold: int | None = _setting(
        None,
        "Cross-fitting: test on this fold (0..folds-1) of a stratified partition of an "
        "embedded dataset instead of the fixed test split.",
    )
    folds: int = _setting(5, "Cross-fitting: the number of folds, with --fold.")
    label_smoothing: float = _setting(
        0.1, "eps of uniform label smoothing (--method label-smoothing)."
    )
    focal_gamma: float = _setting(3.0, "gamma of --method focal.")
    mixup_alpha: float = _setting(0.2, "Beta(alpha, alpha) of --method mixup.")
    num_strata: int | str = _setting(
        choices.DEFAULT_NUM_STRATA,
        "AR-AdaLS: robustness strata, or 'auto' (about 25 validation examples each, at most 10).",
    )
    eps_max: float | None = _setting(
        None,
        "AR-AdaLS with --strata-by attack: the attack's largest radius, in (0, 1] pixel "
        "units (default: the dataset's).",
    )
    attack_steps: int = _setting(10, "AR-AdaLS: attack steps, which are the robustness levels.")
    eps_update: str = _setting(
        choices.DEFAULT_EPS_UPDATE,
        "AR-AdaLS: the eps update rule: 'shrunk' is each stratum's conf - acc less two "
        "standard errors; 'pooled' fits the validation gap conf - correct over the "
        "robustness quantile with every validation example and shrinks each stratum "
        "toward that fit; 'additive' is each stratum's conf - acc, the paper's; "
        "'relative' divides it by the stratum's error rate.",
        choices.EPS_UPDATES,
    )
    alpha: float = _setting(choices.DEFAULT_ALPHA, "AR-AdaLS: step size of the eps update.")
    eps_init: float = _setting(0.0, "AR-AdaLS: every stratum's eps until the first update.")
    eps_cap: float = _setting(choices.DEFAULT_EPS_CAP, "AR-AdaLS: largest eps.")
    max_step: float = _setting(
        choices.DEFAULT_MAX_STEP, "AR-AdaLS: the most a stratum's eps moves in one update."
    )
    warmup_epochs: int = _setting(
        choices.DEFAULT_WARMUP_EPOCHS,
        "AR-AdaLS: epochs before the first eps update (and before examples are scored).",
    )
    strata_by: str = _setting(
        "attack",
        "AR-AdaLS: the score that sorts examples into strata: 'attack' is the "
        "growing-radius attack (the paper's); 'first_order' (margin / input-gradient "
        "norm), 'margin' (top-2 logits) and 'confidence' are cheaper (docs: "
        "training-cost study).",
        choices.STRATA_SOURCES,
    )
    attack_loss: str = _setting(
        "margin", "AR-AdaLS: loss each attack step ascends.", choices.ATTACK_LOSSES
    )
    attack_candidates: int = _setting(
        1,
        "AR-AdaLS: the margin attack's target: 1 follows the runner-up logit "
        "(cheapest); k > 1 heads for the nearest of the k largest other logits "
        "(k - 1 extra backward passes per batch).",
    )
    rescore_every: int = _setting(
        choices.DEFAULT_RESCORE_EVERY,
        "AR-AdaLS: score each training and validation example once every k epochs "
        "and stratify it by its kept score in between; 1 scores every example in "
        "every epoch (docs: training-cost study).",
    )
    strategy: str = _setting("default", "tf.distribute strategy.", STRATEGIES)
    ensemble_size: int = _setting(
        1,
        "Train M members averaged by a LogitEnsemble (member m initialised and "
        "shuffled with seed 1000 * seed + m; all share the data split of seed).",
    )
    ensemble_mode: str = _setting(
        "joint",
        "AR-AdaLS ensembles: 'joint' adapts eps from the ensemble's averaged "
        "prediction and robustness (members side by side); 'independent' trains "
        "members one by one, each adapting on its own.",
        ENSEMBLE_MODES,
    )
    smoothing_data: str = _setting(
        "clean",
        "AR-AdaLS: data the eps update measures calibration on: the validation "
        "split, or it plus a copy carrying the held-out corruptions (types "
        "never in the test suite).",
        SMOOTHING_DATA,
    )

    def validate(self):
        """Raises ValueError on a setting that cannot work; fills defaults.

        Returns:
            This config, with `backbone` and `eps_max` filled in.
        """
        from aradals_tf import backbones
        from aradals_tf import data

        info = data.dataset_info(self.dataset, image_size=self.image_size, data_dir=self.data_dir)
        if "train" not in info.splits:
            raise ValueError(
                f"{self.dataset!r} has no train split; train on cifar10 and "
                "evaluate on cifar10_corrupted."
            )
        for field in dataclasses.fields(self):
            valid = field.metadata.get("choices")
            if valid and getattr(self, field.name) not in valid:
                raise ValueError(
                    f"Unknown {field.name} {getattr(self, field.name)!r}; "
                    f"valid: {', '.join(valid)}."
                )
        if self.backbone is None:
            self.backbone = backbones.default_backbone_name(info.image_shape)
        if self.backbone not in backbones.BACKBONES:
            raise ValueError(
                f"Unknown backbone {self.backbone!r}; valid names: "
                f"{', '.join(backbones.BACKBONES)}."
            )
        if self.num_strata != "auto":
            try:
                self.num_strata = int(self.num_strata)
            except (TypeError, ValueError):
                raise ValueError(
                    f"num_strata must be an integer or 'auto'; got {self.num_strata!r}."
                ) from None
        if self.strata_by != "attack" and self.eps_max == info.eps_max:
            self.eps_max = None  # the dataset's default, filled in before strata_by was set
        if self.method == "ar-adals" and self.strata_by != "attack" and self.eps_max is not None:
            raise ValueError(
                f"eps_max is the attack's radius; --strata-by {self.strata_by} runs no attack."
            )
        if self.eps_max is None and self.strata_by == "attack":
            self.eps_max = info.eps_max
        if self.eps_max is not None and not 0 < self.eps_max <= 1:
            raise ValueError(f"eps_max must be in (0, 1] (pixel units); got {self.eps_max}.")
        data.check_fold(self.fold, self.folds)
        if self.fold is not None and info.source != "embedded":
            raise ValueError(
                f"fold needs an embedded dataset (mnist5k, digits); got {self.dataset}."
            )
        for name in (
            "epochs",
            "batch_size",
            "attack_steps",
            "attack_candidates",
            "rescore_every",
            "ensemble_size",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if self.num_strata != "auto" and self.num_strata < 1:
            raise ValueError(f"num_strata must be >= 1; got {self.num_strata}.")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0; got {self.warmup_epochs}.")
        for name in ("learning_rate", "mixup_alpha", "max_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}.")
        for name in ("focal_gamma", "alpha"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}.")
        if not 0 <= self.label_smoothing <= 1:
            raise ValueError(f"label_smoothing must be in [0, 1]; got {self.label_smoothing}.")
        if not 0 <= self.eps_init <= self.eps_cap <= 1:
            raise ValueError(
                f"Need 0 <= eps_init <= eps_cap <= 1; got {self.eps_init}, {self.eps_cap}."
            )
        if self.attack_candidates > 1 and self.attack_loss != "margin":
            raise ValueError("attack_candidates > 1 needs attack_loss 'margin'.")
        return self

    @classmethod
    def from_dict(cls, values):
        """A config from a dict such as `config.json`'s; unknown keys are ignored."""
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def method_settings(self):
        """The settings that matter for this config's method (for tables)."""
        keys = {
            "label-smoothing": ("label_smoothing",),
            "focal": ("focal_gamma",),
            "mixup": ("mixup_alpha",),
            "ar-adals": (
                "alpha",
                "eps_cap",
                "max_step",
                "warmup_epochs",
                "eps_update",
                "num_strata",
                "eps_max",
                "attack_steps",
                "attack_candidates",
                "rescore_every",
                "strata_by",
                "smoothing_data",
            ),
        }.get(self.method, ())
        if self.ensemble_size > 1:
            keys += ("ensemble_size",) + (("ensemble_mode",) if self.method == "ar-adals" else ())
        return {key: getattr(self, key) for key in keys}
