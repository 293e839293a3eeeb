"""The method comparison: selection on validation only, aggregation, resume."""

import json
import os

import numpy as np
import pytest

from aradals_tf import experiments
from aradals_tf import metrics


def test_comparison_selects_on_validation_aggregates_and_resumes(tmp_path, monkeypatch):
    out = str(tmp_path / "study")
    base = experiments.TrainConfig(dataset="digits", epochs=2).validate()
    methods = experiments.parse_methods("vanilla,ls=label-smoothing")
    summary = experiments.run_comparison(
        out,
        base,
        methods,
        seeds=[0, 1],
        grids={"ls": {"label_smoothing": [0.0, 0.4]}},
        shifts=("contrast:2",),
        verbose=0,
    )
    ls = summary["methods"]["ls"]
    # The chosen candidate is the one with the lowest validation ECE...
    best = min(ls["selection"], key=lambda item: item["validation_ece"])
    assert ls["settings"]["label_smoothing"] == best["settings"]["label_smoothing"]
    for item in ls["selection"]:
        tag = f"label_smoothing{item['settings']['label_smoothing']}"
        saved = json.load(open(os.path.join(out, "ls", tag, "seed0", "metrics.json")))
        assert item["validation_ece"] == pytest.approx(saved["validation"]["raw"]["ece"])
    # ...and the table is the mean over the seeds' test metrics.
    runs = [
        json.load(open(os.path.join(run, "metrics.json")))
        for run in summary["methods"]["vanilla"]["runs"]
    ]
    assert len(runs) == 2
    mean, std = summary["methods"]["vanilla"]["clean_raw"]["ece"]
    values = [r["results"]["clean"]["raw"]["ece"] for r in runs]
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values))
    assert "shift_mean_temperature" in summary["methods"]["vanilla"]
    assert os.path.getsize(os.path.join(out, "comparison.png")) > 5_000
    assert "Chosen settings" in experiments.format_comparison(summary)
    # Run again: everything is reused, nothing is trained or evaluated.
    monkeypatch.setattr(experiments, "train_run", lambda *a, **k: pytest.fail("retrained"))
    monkeypatch.setattr(experiments, "evaluate_run", lambda *a, **k: pytest.fail("re-evaluated"))
    again = experiments.run_comparison(
        out,
        base,
        methods,
        seeds=[0, 1],
        grids={"ls": {"label_smoothing": [0.0, 0.4]}},
        shifts=("contrast:2",),
        verbose=0,
    )
    assert again["methods"]["vanilla"]["clean_raw"] == summary["methods"]["vanilla"]["clean_raw"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("vanilla,dropout", "Unknown method"),
        ("a=vanilla,a=ar-adals", "distinct"),
        ("a b=vanilla", "letters"),
    ],
)
def test_parse_methods_errors(text, message):
    with pytest.raises(ValueError, match=message):
        experiments.parse_methods(text)


def test_parse_override():
    assert experiments.parse_override("ar-adals.alpha=0.25,1") == ("ar-adals", "alpha", [0.25, 1.0])
    assert experiments.parse_override("epochs=5") == (None, "epochs", [5])
    assert experiments.parse_override("x.ensemble-mode=independent", labels=("x",)) == (
        "x",
        "ensemble_mode",
        ["independent"],
    )
    with pytest.raises(ValueError, match="Unknown setting"):
        experiments.parse_override("ar-adals.alpah=1")
    with pytest.raises(ValueError, match="as int"):
        experiments.parse_override("epochs=ten")


def test_a_run_does_not_depend_on_what_ran_before(tmp_path):
    """Same config -> same model, whatever ran earlier in the process (the
    data pipeline's shuffle must be seeded by the run, not by history)."""
    config = experiments.TrainConfig(dataset="digits", method="vanilla", epochs=2, seed=0)
    first = experiments.train_run(config, str(tmp_path / "a"), verbose=0)
    experiments.train_run(
        experiments.TrainConfig(dataset="digits", epochs=1, seed=7), str(tmp_path / "b"), verbose=0
    )
    again = experiments.train_run(config, str(tmp_path / "c"), verbose=0)
    assert first["loss"] == again["loss"]


def test_held_out_shifts_are_disjoint_from_the_test_suite():
    from aradals_tf import corruptions

    held_out = experiments.shift_names(["held-out"])
    assert held_out == [f"{n}:{s}" for n in corruptions.HELD_OUT_CORRUPTIONS for s in range(1, 6)]
    test_types = {spec.partition(":")[0] for spec in experiments.shift_names(["all"])}
    assert test_types == set(corruptions.CORRUPTIONS)
    assert not test_types & {spec.partition(":")[0] for spec in held_out}


def test_eps_update_rule_reaches_the_model():
    config = experiments.TrainConfig(
        dataset="digits", method="ar-adals", eps_update="relative"
    ).validate()
    assert experiments.build_model(config).eps_update == "relative"
    assert config.method_settings()["eps_update"] == "relative"
    assert experiments.parse_override("ar-adals.eps_update=additive,relative") == (
        "ar-adals",
        "eps_update",
        ["additive", "relative"],
    )
    with pytest.raises(ValueError, match="eps_update"):
        experiments.TrainConfig(dataset="digits", eps_update="log").validate()


def test_shift_aware_smoothing_updates_on_clean_plus_held_out_data(tmp_path, monkeypatch):
    from aradals_tf import adaptive_smoothing

    seen = []
    real = adaptive_smoothing.validation_pass

    def spy(model, dataset, *args, **kwargs):
        seen.append(sum(int(batch[1].shape[0]) for batch in dataset))
        return real(model, dataset, *args, **kwargs)

    monkeypatch.setattr(adaptive_smoothing, "validation_pass", spy)
    config = experiments.TrainConfig(
        dataset="digits",
        method="ar-adals",
        epochs=2,
        strata_by="first_order",
        smoothing_data="clean+held-out",
    ).validate()
    experiments.train_run(config, str(tmp_path / "run"), verbose=0)
    validation = experiments.split_dataset(config, "validation")
    # One pass at the end of epoch 1 (epoch 0 is the warm-up).
    assert seen == [2 * int(validation.cardinality())]
    with pytest.raises(ValueError, match="smoothing_data"):
        experiments.TrainConfig(dataset="digits", smoothing_data="test").validate()


def test_selection_on_validation_plus_held_out_shifts(tmp_path):
    from aradals_tf import corruptions
    from aradals_tf import metrics

    out = str(tmp_path / "study")
    base = experiments.TrainConfig(dataset="digits", epochs=2).validate()
    methods = experiments.parse_methods("ls=label-smoothing")
    with pytest.raises(ValueError, match="validation only"):
        experiments.run_comparison(out, base, methods, seeds=[0], shifts=("held-out",), verbose=0)
    with pytest.raises(ValueError, match="selection criterion"):
        experiments.run_comparison(out, base, methods, seeds=[0], select_on="test", verbose=0)
    summary = experiments.run_comparison(
        out,
        base,
        methods,
        seeds=[0],
        grids={"ls": {"label_smoothing": [0.0, 0.4]}},
        shifts=(),
        select_on="validation+held-out",
        verbose=0,
    )
    row = summary["methods"]["ls"]
    for item in row["selection"]:
        run_dir = os.path.join(
            out, "ls", f"label_smoothing{item['settings']['label_smoothing']}", "seed0"
        )
        config, model = experiments.load_run(run_dir)
        validation = experiments.split_dataset(config, "validation")
        eces = []
        for name in corruptions.HELD_OUT_CORRUPTIONS:
            if name in corruptions.RGB_ONLY_CORRUPTIONS:  # digits is grayscale
                continue
            for severity in range(1, 6):
                shifted = corruptions.corrupt_dataset(
                    validation, name, severity, seed=experiments.CORRUPTION_SEED
                )
                logits, labels = experiments.predict_logits(model, shifted)
                eces.append(
                    metrics.expected_calibration_error(labels, logits, 15, from_logits=True)
                )
        assert item["held_out_validation_ece"] == pytest.approx(np.mean(eces), abs=1e-6)
        assert item["score"] == pytest.approx(
            (item["validation_ece"] + np.mean(eces)) / 2, abs=1e-6
        )
    best = min(row["selection"], key=lambda item: item["score"])
    assert row["settings"]["label_smoothing"] == best["settings"]["label_smoothing"]
    assert "held-out-shift validation ECE" in experiments.format_comparison(summary)


def test_folds_partition_every_embedded_set_and_keep_validation_out_of_the_test_fold():
    from aradals_tf import data

    for name, total in (("digits", 1797), ("mnist5k", 5000)):
        tests = [data.split_indices(name, "test", 3, fold=f, folds=5) for f in range(5)]
        pooled = np.concatenate(tests)
        assert len(pooled) == total and len(np.unique(pooled)) == total  # each exactly once
        for fold in range(5):
            train = data.split_indices(name, "train", 3, fold=fold, folds=5)
            validation = data.split_indices(name, "validation", 3, fold=fold, folds=5)
            assert not set(validation) & set(tests[fold]) and not set(train) & set(tests[fold])
            assert not set(train) & set(validation)
            assert len(train) + len(validation) + len(tests[fold]) == total
            assert abs(len(validation) - 0.1 * total) <= 1
        _, labels = data.load_arrays(name, "test", 3, fold=0, folds=5)
        # Stratified: each class's share of the fold within 1.5 points of the whole set's.
        shares = np.bincount(labels, minlength=10) / len(labels)
        overall = np.bincount(data._embedded_arrays(name)[1], minlength=10) / total
        assert np.abs(shares - overall).max() < 0.015
    with pytest.raises(ValueError, match="fold"):
        data.split_indices("digits", "test", 0, fold=5, folds=5)
    with pytest.raises(ValueError, match="folds"):
        data.split_indices("digits", "test", 0, fold=0, folds=1)


def test_cross_fitted_comparison_tests_every_example_once_with_paired_verdicts(
    tmp_path, monkeypatch
):
    from aradals_tf import intervals
    from aradals_tf.experiments import evaluate

    out = str(tmp_path / "folds")
    base = experiments.TrainConfig(dataset="digits", epochs=1).validate()
    methods = experiments.parse_methods("vanilla,ls=label-smoothing")
    kwargs = dict(
        seeds=[0],
        folds=3,
        grids={"ls": {"label_smoothing": [0.05, 0.3]}},
        shifts=("contrast:2",),
        pairs=["ls:vanilla", "ls:vanilla+ts"],
        resamples=200,
        verbose=0,
    )
    summary = experiments.run_comparison(out, base, methods, **kwargs)
    evidence = summary["evidence"]
    assert evidence["examples"] == 1797  # every example of digits, once
    # Settings chosen per fold on that fold's validation split.
    assert len(summary["methods"]["ls"]["settings_by_fold"]) == 3
    # The runs behind each row: the chosen candidate's directory in each fold.
    for fold, (settings, run) in enumerate(
        zip(summary["methods"]["ls"]["settings_by_fold"], summary["methods"]["ls"]["run_dirs"])
    ):
        assert run == os.path.join(
            "ls", f"fold{fold}", f"label_smoothing{settings['label_smoothing']}", "seed0"
        )
        assert os.path.isfile(os.path.join(out, run, "predictions_test.npz"))
    # The pooled clean ECE is the ECE of the three folds' test predictions together.
    labels, logits = [], []
    for run in summary["methods"]["vanilla"]["runs"]:
        fold_labels, fold_logits, _ = evaluate.read_predictions(run)
        labels.append(fold_labels)
        logits.append(fold_logits["clean"])
    pooled = float(
        metrics.expected_calibration_error(
            np.concatenate(labels), np.concatenate(logits), from_logits=True
        )
    )
    vanilla = evidence["methods"]["vanilla"]["raw"]["clean"]["ece"]
    assert vanilla["value"] == pytest.approx(pooled, abs=1e-5)
    assert vanilla["low"] <= vanilla["value"] <= vanilla["high"]
    # Accuracy is reported (the share of the pooled predictions' top class that is the label)
    # but judged by no verdict.
    labels, logits = np.concatenate(labels), np.concatenate(logits)
    accuracy = evidence["methods"]["vanilla"]["raw"]["clean"]["accuracy"]
    assert accuracy["value"] == pytest.approx(np.mean(logits.argmax(-1) == labels), abs=1e-9)
    assert "verdict" not in evidence["pairs"][0]["clean"]["accuracy"]
    assert "accuracy %" in experiments.format_comparison(summary)
    pair = evidence["pairs"][0]
    ls = evidence["methods"]["ls"]["raw"]["clean"]["ece"]["value"]
    assert pair["clean"]["ece"]["value"] == pytest.approx(ls - vanilla["value"])
    # Verdicts on the debiased ECE, NLL and Brier: Holm-adjusted over the family.
    judged = pair["clean"]["debiased_ece"]
    assert judged["p_holm"] >= judged["p"]
    assert judged["verdict"] == intervals.holm_verdict(judged, judged["p_holm"])
    assert evidence["family"] == 2 * 2 * 3  # pairs x conditions x metrics
    assert "shift" in pair and "Paired differences" in experiments.format_comparison(summary)
    # Resumes: nothing retrained or re-evaluated, the same numbers.
    from aradals_tf.experiments import train

    monkeypatch.setattr(train, "train_run", lambda *a, **k: pytest.fail("retrained"))
    monkeypatch.setattr(evaluate, "evaluate_run", lambda *a, **k: pytest.fail("re-evaluated"))
    again = experiments.run_comparison(out, base, methods, **kwargs)
    assert again["evidence"] == evidence
    with pytest.raises(ValueError, match="Unknown method"):
        experiments.run_comparison(out, base, methods, **{**kwargs, "pairs": ["ar:vanilla"]})


def test_scoring_examples_are_the_indexed_training_split(monkeypatch):
    """The examples the pass before each epoch scores: the training split in
    order with its indices, as arrays when small, as the dataset otherwise."""
    from aradals_tf import data
    from aradals_tf.experiments import build

    config = experiments.TrainConfig(dataset="digits", method="ar-adals", epochs=1).validate()
    images, _ = data.load_arrays("digits", "train", seed=config.seed)
    arrays = build.scoring_examples(config)
    np.testing.assert_array_equal(arrays["example_index"], np.arange(len(images)))
    np.testing.assert_array_equal(arrays["inputs"], images)
    monkeypatch.setattr(build, "SCORING_ARRAYS_BYTES", 1000)
    dataset = build.scoring_examples(config)
    first = next(iter(dataset))[0]
    assert int(first["example_index"]) == 0
    np.testing.assert_array_equal(first["inputs"].numpy(), images[0])
