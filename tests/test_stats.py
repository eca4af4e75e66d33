"""Significance statistics against values worked out by hand or published in textbooks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlplab.experiments.stats import (
    difference_interval,
    holm,
    mcnemar_exact,
    newcombe_paired_interval,
    paired_seed_test,
    seed_summary,
)


def paired_predictions(both_right, a_only, b_only, both_wrong):
    """Predictions of A and B and labels with exactly these four counts (class 0 is right)."""
    n = both_right + a_only + b_only + both_wrong
    labels = np.zeros(n, dtype=np.uint8)
    right_a = np.array([1] * both_right + [1] * a_only + [0] * b_only + [0] * both_wrong, bool)
    right_b = np.array([1] * both_right + [0] * a_only + [1] * b_only + [0] * both_wrong, bool)
    return np.where(right_a, 0, 3), np.where(right_b, 0, 7), labels


def test_seed_summary_gives_the_textbook_t_interval():
    # mean 3, s = sqrt(2.5), t(0.975, 4) = 2.776445 from the t table: 3 +- 1.963243
    summary = seed_summary([1, 2, 3, 4, 5])
    assert summary.mean == 3.0 and summary.n == 5
    assert summary.std == pytest.approx(math.sqrt(2.5))
    assert summary.low == pytest.approx(3 - 2.776445 * math.sqrt(2.5 / 5), abs=1e-6)
    assert summary.high == pytest.approx(3 + 2.776445 * math.sqrt(2.5 / 5), abs=1e-6)


def test_one_seed_has_a_mean_but_no_interval():
    summary = seed_summary([0.987])
    assert summary.mean == 0.987 and summary.n == 1
    assert summary.std is None and summary.low is None and summary.high is None


def test_seed_summary_of_nothing_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        seed_summary([])


@pytest.mark.parametrize(
    ("a_only", "b_only", "p_value"),
    [
        (9, 1, 22 / 1024),  # P(X <= 1 | n=10) = (1 + 10) / 2^10, doubled
        (1, 9, 22 / 1024),
        (0, 6, 2 / 64),  # (1/2)^6, doubled
        (5, 5, 1.0),
        (0, 0, 1.0),  # identical correctness: nothing to test
    ],
)
def test_mcnemar_exact_matches_the_binomial_worked_by_hand(a_only, b_only, p_value):
    result = mcnemar_exact(*paired_predictions(40, a_only, b_only, 7))
    assert (result.both_right, result.a_only, result.b_only, result.both_wrong) == (
        40,
        a_only,
        b_only,
        7,
    )
    assert result.p_value == pytest.approx(p_value, rel=1e-12)
    assert result.n == 47 + a_only + b_only


def test_mcnemar_counts_a_different_wrong_class_as_agreement_on_being_wrong():
    labels = np.array([0, 0, 1, 1])
    result = mcnemar_exact([5, 0, 2, 1], [6, 0, 3, 1], labels)
    assert (result.both_right, result.a_only, result.b_only, result.both_wrong) == (2, 0, 0, 2)
    assert result.p_value == 1.0


def test_mcnemar_on_identical_predictions_gives_p_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1000)
    predictions = rng.integers(0, 10, 1000)
    assert mcnemar_exact(predictions, predictions, labels).p_value == 1.0


def test_mcnemar_refuses_predictions_of_different_lengths():
    with pytest.raises(ValueError, match="equal, non-empty"):
        mcnemar_exact([1, 2], [1, 2, 3], [1, 2])


def test_newcombe_paired_interval_matches_the_published_example():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables", ch. 8: Cavo et
    # al. (2012), table [[59, 6], [16, 80]]; Newcombe square-and-add: 0.0621 (0.0046 to 0.1186)
    # for the column margin minus the row margin, i.e. B minus A here.
    difference, low, high = newcombe_paired_interval(59, 6, 16, 80)
    assert difference == pytest.approx(10 / 161)
    assert low == pytest.approx(0.0046, abs=5e-5)
    assert high == pytest.approx(0.1186, abs=5e-5)


def test_difference_interval_is_b_minus_a_and_flips_with_the_order():
    a, b, labels = paired_predictions(9900, 12, 33, 55)
    difference, low, high = difference_interval(a, b, labels)
    assert difference == pytest.approx(21 / 10000)
    assert low < difference < high
    back, back_low, back_high = difference_interval(b, a, labels)
    assert back == pytest.approx(-difference)
    assert (back_low, back_high) == pytest.approx((-high, -low))


def test_difference_interval_of_identical_models_contains_zero():
    a, b, labels = paired_predictions(980, 0, 0, 20)
    difference, low, high = difference_interval(a, b, labels)
    assert difference == 0.0 and low < 0.0 < high


def test_paired_seed_test_matches_the_closed_form_t_distribution():
    # differences 0.1, 0.05, 0.2: t = sqrt(7); with 2 degrees of freedom the two-sided p-value
    # is exactly 1 - t / sqrt(t^2 + 2) = 1 - sqrt(7) / 3.
    result = paired_seed_test({0: 0.1, 1: 0.2, 2: 0.3}, {0: 0.2, 1: 0.25, 2: 0.5})
    assert result.mean_difference == pytest.approx(0.35 / 3)
    assert result.p_value == pytest.approx(1 - math.sqrt(7) / 3, rel=1e-9)
    assert result.n == 3 and result.seeds == [0, 1, 2]
    half = 4.302653 * math.sqrt(0.0175 / 3) / math.sqrt(3)  # t(0.975, 2) = 4.302653
    assert result.low == pytest.approx(0.35 / 3 - half, abs=1e-6)
    assert result.high == pytest.approx(0.35 / 3 + half, abs=1e-6)


def test_paired_seed_test_uses_only_the_matching_seeds():
    result = paired_seed_test({0: 0.9, 1: 0.8, 5: 0.1}, {0: 0.91, 1: 0.83, 7: 1.0})
    assert result.seeds == [0, 1] and result.n == 2
    assert result.mean_difference == pytest.approx(0.02)


def test_paired_seed_test_needs_two_matching_seeds():
    with pytest.raises(ValueError, match="at least 2 matching seeds, found 1"):
        paired_seed_test({0: 0.9, 1: 0.8}, {0: 0.91, 2: 0.83})


def test_paired_seed_test_with_no_spread_in_the_differences_is_not_nan():
    same = paired_seed_test({0: 0.9, 1: 0.8}, {0: 0.9, 1: 0.8})
    assert same.p_value == 1.0 and same.mean_difference == 0.0
    shifted = paired_seed_test({0: 0.5, 1: 0.25}, {0: 0.75, 1: 0.5})
    assert shifted.p_value == 0.0 and shifted.low == shifted.high == 0.25


def test_holm_adjusts_the_worked_example():
    # Four hypotheses at alpha = 0.05: only H4 (p = 0.005) and H1 (p = 0.01) are rejected.
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_a_single_p_value():
    assert holm([0.5, 0.6, 0.9]) == pytest.approx([1.0, 1.0, 1.0])
    assert holm([0.02]) == [0.02]
    assert holm([]) == []


def test_holm_refuses_values_that_are_not_p_values():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


def test_an_accuracy_interval_from_two_distant_seeds_stays_between_0_and_1():
    from mlplab.experiments.stats import ACCURACY_BOUNDS

    unbounded = seed_summary([0.30, 0.99])
    bounded = seed_summary([0.30, 0.99], bounds=ACCURACY_BOUNDS)
    assert unbounded.low < 0 and unbounded.high > 1  # t(1) = 12.7: two seeds say little
    assert (bounded.low, bounded.high) == (0.0, 1.0)
    assert bounded.mean == unbounded.mean and bounded.std == unbounded.std
