import json
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
    batch_bounds,
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


def test_steps_per_epoch_keeps_the_last_partial_batch_unless_it_is_a_single_example():
    assert steps_per_epoch(60000, 20) == 3000
    assert steps_per_epoch(60002, 20) == 3001
    assert steps_per_epoch(60001, 20) == 3000  # the lone example joins the last full batch
    assert steps_per_epoch(10, 100) == 1
    assert steps_per_epoch(1, 100) == 1  # a data set of one example is one batch of one
    assert steps_per_epoch(0, 100) == 0
    with pytest.raises(ConfigError):
        steps_per_epoch(100, 0)


@pytest.mark.parametrize("batch_size", [27, 63, 81, 189, 20, 1000, 54999, 55000, 60000])
def test_batches_cover_the_epoch_once_and_none_has_a_single_example(batch_size):
    n = 55_000  # the MNIST training set less a 5,000 holdout: a remainder of 1 at 27, 63, 81, 189
    n_steps = steps_per_epoch(n, batch_size)
    bounds = [batch_bounds(i, n, batch_size) for i in range(n_steps)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert min(sizes) >= 2 and max(sizes) <= batch_size + 1
    assert sizes[:-1] == [batch_size] * (n_steps - 1)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Constant(math.inf),
        lambda: Step(0.1, every_epochs=math.inf),
        lambda: Cosine(0.1, total_epochs=math.inf),
        lambda: OneCycle(math.inf, total_epochs=5),
        lambda: Warmup(Constant(0.1), warmup_epochs=math.inf),
        lambda: make_schedule("cosine", math.inf, 5),
        lambda: make_schedule("cosine", 0.1, math.inf),
        lambda: make_schedule("step", 0.1, 5, gamma=math.inf),
    ],
)
def test_infinite_rates_and_options_are_refused_when_the_schedule_is_built(build):
    with pytest.raises(ConfigError, match="inf"):
        build()


def test_a_step_schedule_that_overflows_gives_an_infinite_rate_not_an_exception():
    # The trainer refuses a non-finite rate with a ConfigError (tests/test_train.py).
    assert Step(0.1, every_epochs=1, gamma=1e30).lr_at(100) == math.inf


def test_schedules_say_whether_they_depend_on_the_length_of_training():
    assert not Constant(0.1).depends_on_total
    assert not Step(0.1).depends_on_total
    assert Cosine(0.1, 10).depends_on_total
    assert OneCycle(0.1, 10).depends_on_total
    assert not make_schedule("warmup", 0.1, 10).depends_on_total
    assert make_schedule("cosine", 0.1, 10, warmup_epochs=1).depends_on_total
    # What "does not depend" means: the same rates whatever total_epochs a name is built with.
    for name in ("constant", "step", "warmup"):
        short, long = make_schedule(name, 0.1, 20), make_schedule(name, 0.1, 30)
        assert [short(e / 4) for e in range(120)] == [long(e / 4) for e in range(120)], name
    assert make_schedule("cosine", 0.1, 20)(0.5) != make_schedule("cosine", 0.1, 30)(0.5)


def test_settings_name_the_schedule_and_every_option_as_json():
    schedule = make_schedule("cosine", 0.1, 10, min_learning_rate=0.01, warmup_epochs=2)
    settings = schedule.settings()
    assert json.loads(json.dumps(settings)) == settings
    assert settings == {
        "type": "Warmup",
        "schedule": {
            "type": "Cosine",
            "learning_rate": 0.1,
            "total_epochs": 10,
            "min_learning_rate": 0.01,
        },
        "warmup_epochs": 2,
        "start_factor": 0.1,
    }
    assert Step(0.1, 2, 0.5).settings() == {
        "type": "Step",
        "learning_rate": 0.1,
        "every_epochs": 2,
        "gamma": 0.5,
    }


def test_one_cycle_sampled_per_step_peaks_at_step_pct_start_and_ends_above_the_final_rate():
    # What the docstring says: sampled at the start of each of T steps (as the trainer does), the
    # peak falls at step pct_start * T and the last step's rate is above the final rate.
    total_steps, schedule = 100, OneCycle(1.0, total_epochs=10, pct_start=0.3)
    rates = [schedule.lr_at(10 * step / total_steps) for step in range(total_steps)]
    assert rates.index(max(rates)) == 30 and rates[30] == pytest.approx(1.0)
    final = 1.0 / 25 / 1e4
    assert rates[-1] > final and rates[-1] == pytest.approx(schedule.lr_at(9.9))
