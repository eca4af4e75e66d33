"""Is configuration B really better than A, or is the difference noise?

Two sources of noise blur a comparison of two trained networks:

- the test set: 10,000 images measure an accuracy near 99% to about 0.1 point (one standard
  error). Both networks see the *same* images, so the fair test looks only at the images on which
  they disagree: McNemar's exact test (:func:`mcnemar_exact`), with Newcombe's interval for the
  paired difference of accuracies (:func:`difference_interval`);
- the seed: another initialization and data order moves MNIST accuracies by 0.03-0.2 points. With
  several seeds per configuration, seed *i* of A and seed *i* of B share the split and the data
  order, so the paired t-test over seeds (:func:`paired_seed_test`) measures whether B beats A
  consistently; :func:`seed_summary` gives a configuration's mean with a t interval.

Testing many pairs at once makes some look significant by chance; :func:`holm` adjusts the
p-values (Holm's step-down method controls the family-wise error rate). Distributions come from
``scipy.stats``; only the interval formulas are written out here.

Differences are always **B minus A**: positive means the second model is better.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from mlplab.training.metrics import wilson_interval

# What an accuracy can be: its intervals are clipped to this.
ACCURACY_BOUNDS = (0.0, 1.0)


@dataclass
class Summary:
    """Mean of a metric over seeds with its t interval; ``std``/``low``/``high`` None for n=1."""

    mean: float
    std: float | None
    low: float | None
    high: float | None
    n: int
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return asdict(self)


def seed_summary(values, confidence: float = 0.95, bounds: tuple[float, float] | None = None):
    """Mean, standard deviation (n-1) and Student-t interval of one metric over seeds.

    One value has no spread to measure: ``std``, ``low`` and ``high`` are None then (not 0, which
    would claim a certainty one seed cannot give). ``bounds`` clips the interval to the values
    the metric can take, e.g. ``(0, 1)`` for an accuracy: with two seeds a t interval is wide
    enough to leave them.
    """
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        raise ValueError("seed_summary needs at least one value")
    mean = float(values.mean())
    if values.size == 1:
        return Summary(mean, None, None, None, 1, confidence)
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1)) * std / math.sqrt(values.size)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Summary(mean, std, low, high, int(values.size), confidence)


@dataclass
class McNemar:
    """McNemar's exact test on two models' predictions of the same test images.

    ``a_only`` (often called b) counts images only A gets right, ``b_only`` (c) those only B gets
    right; only these discordant images carry information about which model is better.
    """

    both_right: int
    a_only: int
    b_only: int
    both_wrong: int
    p_value: float

    @property
    def n(self) -> int:
        return self.both_right + self.a_only + self.b_only + self.both_wrong

    @property
    def accuracy_a(self) -> float:
        return (self.both_right + self.a_only) / self.n

    @property
    def accuracy_b(self) -> float:
        return (self.both_right + self.b_only) / self.n

    def to_dict(self) -> dict:
        return {**asdict(self), "n": self.n, "test": "McNemar exact (two-sided binomial)"}


def _check_predictions(pred_a, pred_b, labels):
    pred_a, pred_b, labels = (np.asarray(x).ravel() for x in (pred_a, pred_b, labels))
    if not pred_a.shape == pred_b.shape == labels.shape or labels.size == 0:
        raise ValueError(
            f"need equal, non-empty shapes: predictions {pred_a.shape} and {pred_b.shape}, "
            f"labels {labels.shape}"
        )
    return pred_a == labels, pred_b == labels


def mcnemar_exact(pred_a, pred_b, labels) -> McNemar:
    """Exact two-sided McNemar test: is A right-and-B-wrong as common as the reverse?

    Under the null hypothesis each discordant image is a fair coin, so ``a_only`` follows
    Binomial(a_only + b_only, 1/2); the p-value is scipy's exact two-sided binomial test.
    Identical correctness on every image (no discordant pair) gives p = 1.
    """
    right_a, right_b = _check_predictions(pred_a, pred_b, labels)
    a_only = int(np.sum(right_a & ~right_b))
    b_only = int(np.sum(~right_a & right_b))
    both_right = int(np.sum(right_a & right_b))
    both_wrong = int(right_a.size) - a_only - b_only - both_right
    discordant = a_only + b_only
    p_value = 1.0 if discordant == 0 else float(stats.binomtest(a_only, discordant, 0.5).pvalue)
    return McNemar(both_right, a_only, b_only, both_wrong, min(p_value, 1.0))


def newcombe_paired_interval(
    both_right: int, a_only: int, b_only: int, both_wrong: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Newcombe's (1998, method 10) interval for accuracy B minus accuracy A on paired data.

    Each accuracy gets a Wilson interval; the two half-widths are combined like independent
    errors ("square and add"), less the part the correlation ``phi`` of the two models'
    correctness explains. Unlike the Wald interval it stays sensible near 100% accuracy.

    Returns
    -------
    (difference, low, high)
    """
    n = both_right + a_only + b_only + both_wrong
    if n == 0:
        raise ValueError("no paired observations")
    accuracy_b, accuracy_a = (both_right + b_only) / n, (both_right + a_only) / n
    low_b, high_b = wilson_interval(both_right + b_only, n, confidence)
    low_a, high_a = wilson_interval(both_right + a_only, n, confidence)
    margins = (
        (both_right + a_only)
        * (b_only + both_wrong)
        * (both_right + b_only)
        * (a_only + both_wrong)
    )
    # phi with Newcombe's continuity correction: a positive association is shrunk by n/2.
    association = both_right * both_wrong - a_only * b_only
    if margins == 0 or 0 <= association <= n / 2:
        phi = 0.0
    elif association > n / 2:
        phi = (association - n / 2) / math.sqrt(margins)
    else:
        phi = association / math.sqrt(margins)
    difference = accuracy_b - accuracy_a
    below = math.sqrt(
        max(
            (accuracy_b - low_b) ** 2
            - 2 * phi * (accuracy_b - low_b) * (high_a - accuracy_a)
            + (high_a - accuracy_a) ** 2,
            0.0,
        )
    )
    above = math.sqrt(
        max(
            (high_b - accuracy_b) ** 2
            - 2 * phi * (high_b - accuracy_b) * (accuracy_a - low_a)
            + (accuracy_a - low_a) ** 2,
            0.0,
        )
    )
    return difference, max(difference - below, -1.0), min(difference + above, 1.0)


def difference_interval(pred_a, pred_b, labels, confidence: float = 0.95):
    """Accuracy of B minus accuracy of A on the same test images, with Newcombe's interval.

    Returns ``(difference, low, high)`` as fractions (0.0021 is 0.21 points).
    """
    result = mcnemar_exact(pred_a, pred_b, labels)
    return newcombe_paired_interval(
        result.both_right, result.a_only, result.b_only, result.both_wrong, confidence
    )


@dataclass
class PairedSeeds:
    """B minus A over matched seeds: mean difference, its t interval, and the paired t-test."""

    mean_difference: float
    low: float
    high: float
    p_value: float
    n: int
    seeds: list

    def to_dict(self) -> dict:
        return {**asdict(self), "test": "paired t-test over seeds"}


def paired_seed_test(acc_a: dict, acc_b: dict, confidence: float = 0.95) -> PairedSeeds:
    """Paired t-test of B against A over the seeds both have (``{seed: accuracy}`` each).

    Seed *i* of both configurations shares the data split and order, so pairing removes that
    part of the seed-to-seed spread. Needs at least two matching seeds.
    """
    seeds = sorted(set(acc_a) & set(acc_b), key=str)
    if len(seeds) < 2:
        raise ValueError(
            f"a paired test over seeds needs at least 2 matching seeds, found {len(seeds)}"
        )
    a = np.array([acc_a[seed] for seed in seeds], dtype=np.float64)
    b = np.array([acc_b[seed] for seed in seeds], dtype=np.float64)
    differences = b - a
    mean = float(differences.mean())
    std = float(differences.std(ddof=1))
    if std == 0.0:
        # Every seed moved by exactly the same amount: no spread to scale by (t is 0/0 or
        # infinite); report the degenerate result rather than scipy's NaN.
        return PairedSeeds(mean, mean, mean, 1.0 if mean == 0.0 else 0.0, len(seeds), seeds)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(seeds) - 1)) * std / math.sqrt(len(seeds))
    p_value = float(stats.ttest_rel(b, a).pvalue)
    return PairedSeeds(mean, mean - half, mean + half, p_value, len(seeds), seeds)


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment of p-values for testing several hypotheses at once.

    Sorted ascending, the k-th smallest of m p-values is multiplied by (m - k + 1); a running
    maximum keeps the adjusted values in the same order, and they are capped at 1. Rejecting
    where the adjusted value is below alpha keeps the chance of any false rejection below alpha.
    """
    p = np.asarray(list(p_values), dtype=np.float64)
    if p.size and (np.any(np.isnan(p)) or p.min() < 0 or p.max() > 1):
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (p.size - np.arange(p.size))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted.tolist()
