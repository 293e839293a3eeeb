"""Bootstrap intervals: the weighted metrics against the metrics module on the
sample and on explicitly resampled arrays, the NLL interval against the
normal approximation of a mean, and the paired difference's verdicts."""

import numpy as np
import pytest

from aradals_tf import intervals
from aradals_tf import metrics

rng = np.random.default_rng(0)
N, K = 600, 10


def _calibrated(temperature=1.0, seed=0):
    """Logits whose softmax draws the labels (a calibrated model), optionally
    sharpened by `temperature` < 1 (over-confident)."""
    generator = np.random.default_rng(seed)
    logits = generator.normal(size=(N, K)) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([generator.choice(K, p=p) for p in probs])
    return labels, (logits / temperature).astype(np.float32)


@pytest.mark.parametrize(
    "metric, reference",
    [
        ("ece", metrics.expected_calibration_error),
        ("adaptive_ece", metrics.adaptive_calibration_error),
        ("nll", metrics.negative_log_likelihood),
    ],
)
def test_weights_of_one_give_the_metrics_module(metric, reference):
    labels, logits = _calibrated(0.7)
    stats = intervals.example_statistics(labels, logits)
    value = intervals.metric_replicates([[stats]], np.ones((1, N)), metric)[0]
    assert value == pytest.approx(float(reference(labels, logits, from_logits=True)), abs=2e-6)


def _accuracy(labels, logits, from_logits=True):
    return np.mean(np.argmax(logits, axis=-1) == labels)


@pytest.mark.parametrize("metric", ["ece", "nll", "adaptive_ece", "accuracy"])
def test_a_resample_is_the_metric_of_the_resampled_arrays(metric):
    """The slow obvious way: repeat each example as often as it was drawn."""
    labels, logits = _calibrated(0.7, seed=1)
    stats = intervals.example_statistics(labels, logits)
    weights = intervals.resample_weights(N, resamples=5, seed=3)
    fast = intervals.metric_replicates([[stats]], weights, metric)
    function = {
        "ece": metrics.expected_calibration_error,
        "nll": metrics.negative_log_likelihood,
        "adaptive_ece": metrics.adaptive_calibration_error,
        "accuracy": _accuracy,
    }[metric]
    for row, value in zip(weights, fast):
        drawn = np.repeat(np.arange(N), row.astype(int))
        slow = float(function(labels[drawn], logits[drawn], from_logits=True))
        # Adaptive bins keep all copies of an example in the bin of its first
        # copy: each of the 14 inner boundaries moves at most max(w) - 1 copies.
        tolerance = 2e-6 if metric != "adaptive_ece" else 14 * row.max() / N
        assert value == pytest.approx(slow, abs=tolerance)


def test_nll_interval_matches_the_normal_approximation_of_a_mean():
    labels, logits = _calibrated(0.8, seed=2)
    stats = intervals.example_statistics(labels, logits)
    result = intervals.bootstrap_interval([(np.arange(N), [stats])], "nll", resamples=4000, seed=0)
    half_width = 1.96 * stats["nll"].std(ddof=1) / np.sqrt(N)
    assert (result["high"] - result["low"]) / 2 == pytest.approx(half_width, rel=0.1)
    assert result["low"] < result["value"] < result["high"]
    assert result["value"] == pytest.approx(stats["nll"].mean())


def test_paired_differences_and_verdicts():
    labels, calibrated = _calibrated(1.0, seed=4)
    over_confident = calibrated / 0.4
    ids = np.arange(N)
    good = [(ids, [intervals.example_statistics(labels, calibrated)])]
    bad = [(ids, [intervals.example_statistics(labels, over_confident)])]
    same = intervals.bootstrap_interval(good, "debiased_ece", resamples=500, other=good)
    assert same["value"] == 0 and same["low"] == 0 and same["high"] == 0
    assert same["verdict"] == "no difference"
    better = intervals.bootstrap_interval(good, "ece", resamples=500, other=bad)
    assert better["high"] < 0 and better["verdict"] == "better"
    assert intervals.bootstrap_interval(bad, "nll", resamples=500, other=good)["verdict"] == "worse"
    # Shifted copies and runs are averaged inside every resample.
    two_conditions = [(ids, [good[0][1][0], bad[0][1][0]])]
    mean = intervals.bootstrap_interval(two_conditions, "ece", resamples=10)["value"]
    halves = [intervals.bootstrap_interval(r, "ece", resamples=10)["value"] for r in (good, bad)]
    assert mean == pytest.approx(np.mean(halves))
    assert intervals.verdict(-0.02, 0.01) == "no difference"


def test_examples_are_matched_by_id_not_position():
    """The same predictions in another order (pooled folds) give the same
    interval, and a paired difference with the reordered copy is exactly 0."""
    labels, logits = _calibrated(0.7, seed=5)
    order = np.random.default_rng(1).permutation(N)
    stats = intervals.example_statistics(labels, logits)
    shuffled = intervals.example_statistics(labels[order], logits[order])
    straight = intervals.bootstrap_interval([(np.arange(N), [stats])], "ece", resamples=200)
    reordered = intervals.bootstrap_interval([(order, [shuffled])], "ece", resamples=200)
    assert reordered == pytest.approx(straight)
    difference = intervals.bootstrap_interval(
        [(order, [shuffled])], "ece", resamples=200, other=[(np.arange(N), [stats])]
    )
    assert difference["low"] == pytest.approx(0, abs=1e-12)
    assert difference["high"] == pytest.approx(0, abs=1e-12)


def test_the_interval_holds_the_sample_value_where_resampled_eces_are_biased_up():
    """A calibrated model: the resampled ECEs lie mostly above the sample's
    ECE, yet its interval (their spread placed on it) contains it."""
    labels, logits = _calibrated(1.0, seed=6)
    stats = intervals.example_statistics(labels, logits)
    value, draws = intervals.run_replicates(
        [(np.arange(N), [stats])], np.arange(N), 1000, seed=0, metric="ece"
    )
    assert np.mean(draws > value) > 0.75  # the bias the interval must not inherit
    result = intervals.summarize(value, draws)
    assert result["low"] < value < result["high"]
    spread = np.ptp(np.percentile(draws, [2.5, 97.5]))
    assert result["high"] - result["low"] == pytest.approx(spread)


def _synthetic(delta, rng, n):
    """A model with a known calibration curve: confidence c, right with
    probability c - delta(c) (most confidences near 1, as a trained network's)."""
    confidence = 1 - 0.5 * rng.beta(1, 4, n)
    u = rng.uniform(size=n)
    return confidence, u


def _stats(confidence, correct, num_bins=15):
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    zeros = np.zeros(len(confidence))
    return {
        "confidence": confidence,
        "correct": correct.astype(float),
        "bin": bins,
        "nll": zeros,
        "brier": zeros,
    }


CURVES = {
    "perfect": lambda c: 0 * c,
    "about 1.5 %": lambda c: 0.018 * (c < 0.97),
    "about 5 %": lambda c: 0.05 * (c < 0.97) + 0.012,
}


def _population_ece(delta, n=2_000_000):
    rng = np.random.default_rng(123)
    confidence, u = _synthetic(delta, rng, n)
    stats = _stats(confidence, u < confidence - delta(confidence))
    return intervals.metric_replicates([[stats]], np.ones((1, n)), "ece")[0]


def test_the_debiased_ece_interval_covers_the_population_value():
    """Acceptance: synthetic models of known population ECE (from 2 million
    draws), 1,000 test examples, 200 samples each: the default interval
    covers the population value in >= 90 % of samples around 1.5 % and 5 %;
    the perfectly calibrated case is reported. The plug-in ECE's interval
    beside it, for the record."""
    report = {}
    for name, delta in CURVES.items():
        population = _population_ece(delta)
        covered = {"debiased_ece": 0, "ece": 0}
        for draw in range(200):
            rng = np.random.default_rng(draw)
            confidence, u = _synthetic(delta, rng, 1000)
            run = [(np.arange(1000), [_stats(confidence, u < confidence - delta(confidence))])]
            for metric in covered:
                result = intervals.bootstrap_interval(run, metric, resamples=500, seed=draw)
                covered[metric] += result["low"] <= population <= result["high"]
        report[name] = (round(100 * population, 3), {k: v / 200 for k, v in covered.items()})
    print(report)
    assert report["about 1.5 %"][1]["debiased_ece"] >= 0.90, report
    assert report["about 5 %"][1]["debiased_ece"] >= 0.90, report
    assert 1.0 < report["about 1.5 %"][0] < 2.0 and 4.5 < report["about 5 %"][0] < 5.5


def test_paired_differences_cover_the_population_difference():
    """Two models on the same examples (their errors share the draws, as two
    networks' on one test set), with and without a true difference: the
    debiased paired interval covers the population difference in >= 90 %."""
    cases = {
        "no difference at 1.5 %": ("about 1.5 %", "about 1.5 %"),
        "5 % against 1.5 %": ("about 5 %", "about 1.5 %"),
    }
    for name, (a, b) in cases.items():
        delta_a, delta_b = CURVES[a], CURVES[b]

        def sample(rng, n, delta_a=delta_a, delta_b=delta_b):
            confidence = 1 - 0.5 * rng.beta(1, 4, n)
            other = np.clip(confidence + rng.normal(0, 0.03, n), 0.1, 1.0)
            u = rng.uniform(size=n)
            return (
                _stats(confidence, u < confidence - delta_a(confidence)),
                _stats(other, u < other - delta_b(other)),
            )

        big_a, big_b = sample(np.random.default_rng(7), 2_000_000)
        ones = np.ones((1, 2_000_000))
        population = (
            intervals.metric_replicates([[big_a]], ones, "ece")[0]
            - intervals.metric_replicates([[big_b]], ones, "ece")[0]
        )
        covered = 0
        for draw in range(200):
            stats_a, stats_b = sample(np.random.default_rng(draw), 1000)
            ids = np.arange(1000)
            result = intervals.bootstrap_interval(
                [(ids, [stats_a])],
                "debiased_ece",
                resamples=500,
                seed=draw,
                other=[(ids, [stats_b])],
            )
            covered += result["low"] <= population <= result["high"]
        print(name, round(100 * population, 3), covered / 200)
        assert covered / 200 >= 0.90, (name, covered / 200)


def test_pooled_folds_give_the_ece_of_their_concatenated_predictions():
    """Acceptance: the pooled ECE of 3 folds is the ECE of the three folds'
    predictions concatenated (not the mean of the folds' ECEs)."""
    folds = []
    for fold, temperature in enumerate((0.5, 0.8, 1.4)):
        labels, logits = _calibrated(temperature, seed=10 + fold)
        folds.append((labels, logits))
    parts = [
        (np.arange(f * N, (f + 1) * N), [intervals.example_statistics(labels, logits)])
        for f, (labels, logits) in enumerate(folds)
    ]
    pooled = intervals.pool(parts)
    value = intervals.bootstrap_interval([pooled], "ece", resamples=100)["value"]
    labels = np.concatenate([labels for labels, _ in folds])
    logits = np.concatenate([logits for _, logits in folds])
    want = float(metrics.expected_calibration_error(labels, logits, from_logits=True))
    assert value == pytest.approx(want, abs=2e-6)
    per_fold = np.mean(
        [float(metrics.expected_calibration_error(y, z, from_logits=True)) for y, z in folds]
    )
    assert abs(per_fold - want) > 1e-3  # the mean of folds would be another number


def test_two_level_resamples_carry_the_seeds_noise():
    """Two seeds whose models differ: drawing the seeds too widens the
    interval beyond the examples-only one, and one seed gives the latter."""
    labels, logits = _calibrated(1.0, seed=20)
    ids = np.arange(N)
    seeds = [(ids, [intervals.example_statistics(labels, logits / t)]) for t in (0.6, 1.0)]
    both = intervals.bootstrap_interval(seeds, "nll", resamples=2000)
    examples_only = [intervals.run_replicates([r], ids, 2000, 0, "nll")[1] for r in seeds]
    narrow = intervals.summarize(both["value"], np.mean(examples_only, axis=0))
    assert both["high"] - both["low"] > 1.2 * (narrow["high"] - narrow["low"])
    weights = intervals.seed_weights(2, 2000, 0)
    assert set(np.unique(weights.sum(1))) == {2.0}


def test_holm_hand_computed_and_p_values():
    assert intervals.holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert intervals.holm([0.5]) == [0.5]
    labels, calibrated = _calibrated(1.0, seed=4)
    ids = np.arange(N)
    good = [(ids, [intervals.example_statistics(labels, calibrated)])]
    bad = [(ids, [intervals.example_statistics(labels, calibrated / 0.4)])]
    result = intervals.bootstrap_interval(good, "nll", resamples=2000, other=bad)
    assert result["p"] < 0.001 and intervals.holm_verdict(result, 0.001) == "better"
    assert intervals.holm_verdict(result, 0.2) == "no difference"


def test_the_folded_normal_inverse_matches_scipy_and_stays_finite_far_out():
    from scipy import stats

    ratios = np.array([np.sqrt(2 / np.pi), 0.9, 1.5, 3.0, 12.0, 29.0, 31.0, 1e3, 1e200])
    with np.errstate(all="raise"):  # an overflow (t * t where the error is rounding noise) fails
        t = intervals._folded_mean_inverse(ratios.copy())
    np.testing.assert_allclose(stats.foldnorm(t[:-1]).mean(), ratios[:-1], rtol=1e-9, atol=1e-9)
    assert t[-1] == 1e200
