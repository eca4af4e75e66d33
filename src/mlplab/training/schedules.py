"""Learning-rate schedules and the batch-size ramp.

A learning-rate schedule is a pure function of training progress measured in epochs, as a float:
``schedule.lr_at(2.5)`` is the learning rate halfway through the third epoch. Two choices follow
from that signature:

* Progress is in epochs rather than steps because the batch size may change from one epoch to the
  next (:class:`BatchSizeRamp`), so "step 1200" does not say how far through training a run is.
  The trainer passes ``epoch + batch_index / steps_in_this_epoch``.
* There is no hidden state (no ``step()`` method that counts calls), so a run resumed from a
  checkpoint gets bit-identical learning rates from the same epoch number.

Every schedule also supports ``schedule(epoch)`` as shorthand for ``schedule.lr_at(epoch)``.
Use :func:`make_schedule` to build one from a name and options, as the CLI and config files do.

Extending a finished run. Some schedules are planned for a length of training (``Cosine`` and
``OneCycle`` anneal towards ``total_epochs``); the others (``Constant``, ``Step``, ``Warmup`` of
either) give the same rate at epoch ``e`` whatever the length. :attr:`Schedule.depends_on_total`
says which. A checkpoint records :meth:`Schedule.settings`, so the trainer can continue a run
with more epochs exactly as a longer run would have gone when the schedule does not depend on the
total, and refuses, saying why, when it does: a 20-epoch cosine has decayed to about zero, while
a 30-epoch cosine differs from its first step.

Every rate a schedule is built with must be finite and positive (``ConfigError`` otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from numbers import Integral, Real

from mlplab.errors import ConfigError


def _check(name: str, value, low: float = 0.0, high: float = math.inf, *, strict: bool = False):
    """Raise ConfigError unless ``value`` is a number with ``low <= value <= high``.

    With ``strict``, ``value`` must be greater than ``low``.
    """
    is_number = isinstance(value, Real) and not isinstance(value, bool)
    # Written as `not (...)` so that NaN, which fails every comparison, is rejected too; an
    # infinite value is rejected even where ``high`` is infinite.
    in_range = is_number and (value > low if strict else value >= low) and value <= high
    if not in_range or not math.isfinite(value):
        bound = "greater than" if strict else "at least"
        limit = "" if high == math.inf else f" and at most {high:g}"
        raise ConfigError(
            f"schedule option {name}={value!r} is invalid; use a number {bound} {low:g}{limit}"
        )


class Schedule:
    """Base class: subclasses define ``lr_at(epoch)``; calling the schedule is the same thing.

    Subclasses are frozen dataclasses whose fields are the schedule's options; ``depends_on_total``
    says whether the rate at a given epoch depends on the planned length of training.
    """

    depends_on_total: bool = False

    def lr_at(self, epoch: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, epoch: float) -> float:
        return self.lr_at(epoch)

    def settings(self) -> dict:
        """The schedule's class and options as plain JSON values, as a checkpoint records them."""
        options = {}
        for item in fields(self):
            value = getattr(self, item.name)
            options[item.name] = value.settings() if isinstance(value, Schedule) else value
        return {"type": type(self).__name__, **options}


@dataclass(frozen=True)
class Constant(Schedule):
    """The same learning rate throughout."""

    learning_rate: float

    def __post_init__(self) -> None:
        _check("learning_rate", self.learning_rate, strict=True)

    def lr_at(self, epoch: float) -> float:
        return float(self.learning_rate)


@dataclass(frozen=True)
class Step(Schedule):
    """Multiply the learning rate by ``gamma`` every ``every_epochs`` epochs.

    ``lr_at(e) = learning_rate * gamma ** floor(e / every_epochs)``, so with ``every_epochs=2``
    epochs 0 and 1 use ``learning_rate`` and epoch 2 starts at ``learning_rate * gamma``.
    """

    learning_rate: float
    every_epochs: float = 10
    gamma: float = 0.5

    def __post_init__(self) -> None:
        _check("learning_rate", self.learning_rate, strict=True)
        _check("every_epochs", self.every_epochs, strict=True)
        _check("gamma", self.gamma, strict=True)

    def lr_at(self, epoch: float) -> float:
        # The tiny allowance makes epoch = 3 * (1/3) count as a completed epoch despite rounding.
        drops = math.floor(epoch / self.every_epochs + 1e-9)
        try:
            return float(self.learning_rate * self.gamma ** max(drops, 0))
        except OverflowError:  # gamma > 1 for long enough; the trainer refuses the rate
            return math.inf


@dataclass(frozen=True)
class Cosine(Schedule):
    """Half a cosine wave from ``learning_rate`` at epoch 0 to ``min_learning_rate`` at the end.

    After ``total_epochs`` the rate stays at ``min_learning_rate``.
    """

    depends_on_total = True
    learning_rate: float
    total_epochs: float
    min_learning_rate: float = 0.0

    def __post_init__(self) -> None:
        _check("learning_rate", self.learning_rate, strict=True)
        _check("total_epochs", self.total_epochs, strict=True)
        _check("min_learning_rate", self.min_learning_rate, 0.0, self.learning_rate)

    def lr_at(self, epoch: float) -> float:
        progress = min(max(epoch / self.total_epochs, 0.0), 1.0)
        return _cosine_between(self.learning_rate, self.min_learning_rate, progress)


def _cosine_between(start: float, end: float, progress: float) -> float:
    """Go from ``start`` (progress 0) to ``end`` (progress 1) along half a cosine wave."""
    return float(end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0)


@dataclass(frozen=True)
class OneCycle(Schedule):
    """Leslie Smith's one-cycle policy, as a function of progress through training.

    The rate rises from ``max_learning_rate / div_factor`` to ``max_learning_rate`` over the first
    ``pct_start`` of training, then falls to ``max_learning_rate / (div_factor * final_div_factor)``
    at the end. Both phases follow half a cosine wave (``anneal="cos"``) or a line
    (``anneal="linear"``).

    It has the shape and the three rates of PyTorch's ``OneCycleLR`` (two phases) but is not that
    schedule step for step: ours is a continuous function of ``epoch / total_epochs``, sampled at
    the start of each step, so over ``T`` steps the peak falls at step ``pct_start * T`` (PyTorch:
    one step earlier) and the last step uses the rate a step short of the end, slightly above
    the final rate (PyTorch stretches its phases so that its last step uses the final rate).
    """

    depends_on_total = True

    max_learning_rate: float
    total_epochs: float
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal: str = "cos"

    def __post_init__(self) -> None:
        _check("max_learning_rate", self.max_learning_rate, strict=True)
        _check("total_epochs", self.total_epochs, strict=True)
        _check("pct_start", self.pct_start, 0.0, 1.0, strict=True)
        _check("div_factor", self.div_factor, strict=True)
        _check("final_div_factor", self.final_div_factor, strict=True)
        if self.anneal not in ("cos", "linear"):
            raise ConfigError(
                f"schedule option anneal={self.anneal!r} is invalid; use 'cos' or 'linear'"
            )

    def lr_at(self, epoch: float) -> float:
        start = self.max_learning_rate / self.div_factor
        end = start / self.final_div_factor
        progress = min(max(epoch / self.total_epochs, 0.0), 1.0)
        peak = self.pct_start
        if progress <= peak:
            a, b, phase = start, self.max_learning_rate, progress / peak
        else:
            a, b, phase = self.max_learning_rate, end, (progress - peak) / (1.0 - peak)
        if self.anneal == "linear":
            return float(a + (b - a) * phase)
        return _cosine_between(a, b, phase)


@dataclass(frozen=True)
class Warmup(Schedule):
    """Scale any schedule by a factor that rises linearly from ``start_factor`` to 1.

    Over the first ``warmup_epochs`` the rate is ``factor * schedule.lr_at(epoch)``; afterwards it
    is the wrapped schedule unchanged. Warm-up protects the first updates, taken while the weights
    are still random and gradients large, from a learning rate that suits later training.
    """

    schedule: Schedule
    warmup_epochs: float
    start_factor: float = 0.1

    @property
    def depends_on_total(self) -> bool:  # type: ignore[override]
        return self.schedule.depends_on_total

    def __post_init__(self) -> None:
        _check("warmup_epochs", self.warmup_epochs)
        _check("warmup_start_factor", self.start_factor, 0.0, 1.0)

    def lr_at(self, epoch: float) -> float:
        base = self.schedule.lr_at(epoch)
        epoch = max(epoch, 0.0)
        if epoch >= self.warmup_epochs:
            return base
        done = epoch / self.warmup_epochs
        return float((self.start_factor + (1.0 - self.start_factor) * done) * base)


# Options of each schedule name, besides warmup_epochs and warmup_start_factor that all accept.
_OPTIONS = {
    "constant": (),
    "step": ("every_epochs", "gamma"),
    "cosine": ("min_learning_rate",),
    "one-cycle": ("pct_start", "div_factor", "final_div_factor", "anneal"),
    "warmup": (),  # a constant rate after a warm-up: the same as "constant" with warmup_epochs
}
SCHEDULE_NAMES = tuple(_OPTIONS)


def make_schedule(name: str, learning_rate: float, total_epochs: float, **options) -> Schedule:
    """Build a learning-rate schedule from its name, as written in a config file or on the CLI.

    Parameters
    ----------
    name : str
        One of ``"constant"``, ``"step"``, ``"cosine"``, ``"one-cycle"``, ``"warmup"``.
    learning_rate : float
        The base rate (for ``"one-cycle"``, the peak rate).
    total_epochs : float
        Length of training, used by the schedules that anneal towards its end.
    **options
        Options of the named schedule (``every_epochs``, ``gamma``; ``min_learning_rate``;
        ``pct_start``, ``div_factor``, ``final_div_factor``, ``anneal``), plus ``warmup_epochs``
        and ``warmup_start_factor``, accepted by every name, which wrap the result in
        :class:`Warmup`. ``"warmup"`` is a constant rate and defaults to ``warmup_epochs=1``.

    Returns
    -------
    Schedule

    Raises
    ------
    ConfigError
        For an unknown name or option, or an out-of-range value.
    """
    if name not in _OPTIONS:
        raise ConfigError(
            f"unknown learning-rate schedule {name!r}; use one of {', '.join(SCHEDULE_NAMES)}"
        )
    allowed = _OPTIONS[name] + ("warmup_epochs", "warmup_start_factor")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"schedule {name!r} has no option {', '.join(unknown)}; "
            f"its options are {', '.join(allowed)}"
        )
    warmup_epochs = options.pop("warmup_epochs", 1 if name == "warmup" else 0)
    start_factor = options.pop("warmup_start_factor", 0.1)
    _check("total_epochs", total_epochs, strict=True)

    if name == "step":
        schedule: Schedule = Step(learning_rate, **options)
    elif name == "cosine":
        schedule = Cosine(learning_rate, total_epochs, **options)
    elif name == "one-cycle":
        schedule = OneCycle(learning_rate, total_epochs, **options)
    else:
        schedule = Constant(learning_rate)

    _check("warmup_epochs", warmup_epochs)
    # Always validate the start factor, even when unused, so a typo'd value is not silently ignored.
    _check("warmup_start_factor", start_factor, 0.0, 1.0)
    if warmup_epochs > 0:
        schedule = Warmup(schedule, warmup_epochs, start_factor)
    return schedule


@dataclass(frozen=True)
class BatchSizeRamp:
    """Batch size as a function of the epoch: ``min(final, round(start * growth ** epoch))``.

    Growing the batch size is an alternative to decaying the learning rate (Smith et al., "Don't
    Decay the Learning Rate, Increase the Batch Size", 2018): small noisy batches early, large
    cheap ones late. ``growth=1`` (or ``final=start``) gives a fixed batch size; see
    :func:`fixed_batch_size`. ``final=None`` leaves the size uncapped. Halves round up.
    """

    start: int = 20
    growth: float = 2.0
    final: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("start", self.start), ("final", self.final)):
            if name == "final" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ConfigError(
                    f"batch size {name}={value!r} is invalid; use a positive whole number"
                )
        growth = self.growth
        if isinstance(growth, bool) or not isinstance(growth, Real) or not growth >= 1:
            raise ConfigError(f"batch size growth={growth!r} is invalid; use a number at least 1")
        if self.final is not None and self.final < self.start:
            raise ConfigError(
                f"batch size final={self.final} is below start={self.start}; "
                "raise final or lower start"
            )

    def batch_size(self, epoch: int) -> int:
        """The batch size for 0-based ``epoch``."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        # Compare in log space first so that a long run at the cap never overflows growth ** epoch.
        final = self.final
        if final is not None and epoch * math.log(self.growth) >= math.log(final / self.start):
            return int(final)
        try:
            size = math.floor(self.start * self.growth**epoch + 0.5)
        except OverflowError:
            raise ConfigError("batch size ramp overflows; set a final batch size") from None
        return size if self.final is None else min(int(self.final), size)

    def __call__(self, epoch: int) -> int:
        return self.batch_size(epoch)


def fixed_batch_size(size: int) -> BatchSizeRamp:
    """A ramp that stays at ``size`` for every epoch."""
    return BatchSizeRamp(start=size, growth=1.0, final=size)


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    """Number of batches in an epoch.

    The last, partial batch is kept, except that a remainder of a single example joins the batch
    before it (which then has ``batch_size + 1`` examples): a batch of one has no batch statistics
    for batch normalization, and 55,000 images at batch size 27, 63, 81 or 189 would end every
    epoch with one. See :func:`batch_bounds`.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} is invalid; use a positive whole number")
    if n_examples < 0:
        raise ValueError(f"n_examples must be non-negative, got {n_examples}")
    full, remainder = divmod(n_examples, batch_size)
    if remainder == 1 and full > 0:
        return full
    return full + (remainder > 0)


def batch_bounds(batch_index: int, n_examples: int, batch_size: int) -> tuple[int, int]:
    """``(start, stop)`` of batch ``batch_index`` within an epoch's order of ``n_examples``.

    Every batch has ``batch_size`` examples except the last, which runs to the end of the epoch:
    a partial batch, or ``batch_size + 1`` examples when one example would be left over.
    """
    start = batch_index * batch_size
    last = batch_index == steps_per_epoch(n_examples, batch_size) - 1
    return start, n_examples if last else start + batch_size
