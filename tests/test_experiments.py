"""The method comparison: selection on validation only, aggregation, resume."""

import json
import os

import numpy as np
import pytest

from aradals_tf import experiments


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

    def spy(model, dataset, batch_size=500):
        seen.append(sum(int(batch[1].shape[0]) for batch in dataset))
        return real(model, dataset, batch_size)

    monkeypatch.setattr(adaptive_smoothing, "validation_pass", spy)
    config = experiments.TrainConfig(
        dataset="digits",
        method="ar-adals",
        epochs=1,
        strata_by="first_order",
        smoothing_data="clean+held-out",
    ).validate()
    experiments.train_run(config, str(tmp_path / "run"), verbose=0)
    validation = experiments.split_dataset(config, "validation")
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
