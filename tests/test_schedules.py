import math

import pytest

from mlplab.errors import ConfigError
from mlplab.training.schedules import (
    BatchSizeRamp,
    Constant,
    Cosine,
    OneCycle,
    Step,
    Warmup,
    fixed_batch_size,
    make_schedule,
    steps_per_epoch,
)


def test_constant_schedule_never_changes():
    schedule = Constant(0.1)
    assert [schedule.lr_at(e) for e in (0, 0.5, 3, 100)] == [0.1] * 4


def test_step_schedule_multiplies_by_gamma_exactly_at_the_boundary():
    schedule = Step(0.1, every_epochs=2, gamma=0.5)
    assert schedule.lr_at(0) == 0.1
    assert schedule.lr_at(1.999) == 0.1
    assert schedule.lr_at(2.0) == pytest.approx(0.05)
    assert schedule.lr_at(4.0) == pytest.approx(0.025)


def test_step_schedule_counts_an_epoch_reached_through_rounding_as_done():
    # 3 batches of 1/3 epoch each sum to 0.9999999999999999, not 1.
    epoch = sum([1 / 3] * 3)
    assert Step(0.1, every_epochs=1, gamma=0.5).lr_at(epoch) == pytest.approx(0.05)


def test_cosine_starts_at_the_rate_ends_at_min_and_is_halfway_at_the_middle():
    schedule = Cosine(0.1, total_epochs=10, min_learning_rate=0.01)
    assert schedule.lr_at(0) == pytest.approx(0.1)
    assert schedule.lr_at(5) == pytest.approx(0.055)
    assert schedule.lr_at(10) == pytest.approx(0.01)
    assert schedule.lr_at(12) == pytest.approx(0.01)


def test_cosine_never_increases():
    schedule = Cosine(0.1, total_epochs=7)
    rates = [schedule.lr_at(e / 10) for e in range(71)]
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:]))


@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_peaks_at_max_rate_at_pct_start(anneal):
    schedule = OneCycle(1.0, 10, pct_start=0.3, div_factor=25, final_div_factor=1e4, anneal=anneal)
    rates = [schedule.lr_at(e / 100) for e in range(1001)]
    assert schedule.lr_at(0) == pytest.approx(1.0 / 25)
    assert schedule.lr_at(3.0) == pytest.approx(1.0)
    assert max(rates) == pytest.approx(1.0)
    assert schedule.lr_at(10) == pytest.approx(1.0 / 25 / 1e4)


def test_one_cycle_matches_pytorch_cosine_formula_midway_through_each_phase():
    schedule = OneCycle(0.5, total_epochs=10, pct_start=0.25)
    start, end = 0.5 / 25, 0.5 / 25 / 1e4
    # Halfway through a cosine phase is the mean of its two ends.
    assert schedule.lr_at(1.25) == pytest.approx((start + 0.5) / 2)
    assert schedule.lr_at(6.25) == pytest.approx((0.5 + end) / 2)


def test_warmup_starts_at_start_factor_and_reaches_the_wrapped_rate():
    schedule = Warmup(Constant(0.2), warmup_epochs=2, start_factor=0.1)
    assert schedule.lr_at(0) == pytest.approx(0.02)
    assert schedule.lr_at(1) == pytest.approx(0.11)
    assert schedule.lr_at(2) == pytest.approx(0.2)
    assert schedule.lr_at(5) == pytest.approx(0.2)


def test_warmup_follows_the_wrapped_schedule_after_warming_up():
    cosine = Cosine(0.1, total_epochs=10)
    schedule = Warmup(cosine, warmup_epochs=1)
    assert schedule.lr_at(0.5) < cosine.lr_at(0.5)
    assert schedule.lr_at(6.5) == cosine.lr_at(6.5)


def test_schedules_are_pure_so_calling_order_does_not_matter():
    schedule = make_schedule("one-cycle", 0.3, 5, warmup_epochs=1)
    forward = [schedule(e / 4) for e in range(21)]
    backward = [schedule(e / 4) for e in reversed(range(21))][::-1]
    assert forward == backward


def test_make_schedule_builds_each_named_schedule():
    assert isinstance(make_schedule("constant", 0.1, 5), Constant)
    assert isinstance(make_schedule("step", 0.1, 5, every_epochs=2, gamma=0.1), Step)
    assert isinstance(make_schedule("cosine", 0.1, 5, min_learning_rate=0.001), Cosine)
    assert isinstance(make_schedule("one-cycle", 0.1, 5, pct_start=0.2), OneCycle)
    warm = make_schedule("warmup", 0.1, 5)
    assert isinstance(warm, Warmup) and warm.lr_at(1) == pytest.approx(0.1)


def test_make_schedule_accepts_warmup_with_any_schedule():
    schedule = make_schedule("cosine", 0.1, 10, warmup_epochs=2, warmup_start_factor=0.0)
    assert schedule.lr_at(0) == 0.0
    assert schedule.lr_at(2) == pytest.approx(Cosine(0.1, 10).lr_at(2))


def test_unknown_schedule_name_lists_the_valid_names():
    with pytest.raises(ConfigError, match="constant, step, cosine, one-cycle, warmup"):
        make_schedule("exponential", 0.1, 5)


def test_option_of_another_schedule_is_rejected_not_ignored():
    with pytest.raises(ConfigError, match="gamma"):
        make_schedule("cosine", 0.1, 5, gamma=0.5)


@pytest.mark.parametrize(
    "name, options",
    [
        ("constant", {"warmup_epochs": -1}),
        ("step", {"every_epochs": 0}),
        ("step", {"gamma": -0.5}),
        ("cosine", {"min_learning_rate": -0.01}),
        ("cosine", {"min_learning_rate": 0.5}),
        ("one-cycle", {"pct_start": 1.5}),
        ("one-cycle", {"anneal": "exp"}),
        ("constant", {"warmup_start_factor": 2.0}),
        ("step", {"every_epochs": "2"}),
    ],
)
def test_out_of_range_options_raise_config_error(name, options):
    with pytest.raises(ConfigError):
        make_schedule(name, 0.1, 5, **options)


@pytest.mark.parametrize(
    "learning_rate, total_epochs", [(-0.1, 5), (0.0, 5), (math.nan, 5), (0.1, 0), (0.1, -3)]
)
def test_nonpositive_or_nan_rate_and_length_raise_config_error(learning_rate, total_epochs):
    with pytest.raises(ConfigError):
        make_schedule("constant", learning_rate, total_epochs)


def test_config_error_message_is_one_line():
    with pytest.raises(ConfigError) as caught:
        make_schedule("step", 0.1, 5, gamma=-1)
    assert "\n" not in str(caught.value) and "gamma" in str(caught.value)


def test_batch_size_ramp_doubles_from_20_until_the_cap():
    ramp = BatchSizeRamp(start=20, growth=2.0, final=500)
    assert [ramp.batch_size(e) for e in range(7)] == [20, 40, 80, 160, 320, 500, 500]


def test_batch_size_ramp_rounds_halves_up():
    ramp = BatchSizeRamp(start=20, growth=1.5)
    assert [ramp(e) for e in range(4)] == [20, 30, 45, 68]  # 67.5 -> 68


def test_batch_size_ramp_at_the_cap_survives_very_long_runs():
    assert BatchSizeRamp(start=20, growth=2.0, final=1000).batch_size(5000) == 1000


def test_growth_one_or_start_equal_final_is_a_fixed_batch_size():
    for ramp in (BatchSizeRamp(32, 1.0), BatchSizeRamp(32, 3.0, final=32), fixed_batch_size(32)):
        assert {ramp.batch_size(e) for e in range(20)} == {32}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": 0},
        {"start": 2.5},
        {"growth": 0.5},
        {"growth": math.nan},
        {"start": 64, "final": 32},
        {"final": 0},
    ],
)
def test_invalid_batch_size_ramp_raises_config_error(kwargs):
    with pytest.raises(ConfigError):
        BatchSizeRamp(**kwargs)


def test_steps_per_epoch_keeps_the_last_partial_batch():
    assert steps_per_epoch(60000, 20) == 3000
    assert steps_per_epoch(60001, 20) == 3001
    assert steps_per_epoch(10, 100) == 1
    assert steps_per_epoch(0, 100) == 0
    with pytest.raises(ConfigError):
        steps_per_epoch(100, 0)
