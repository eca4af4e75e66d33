"""Are the top configurations of a store really different, or is it noise?

Every pair of the top N configurations is tested twice, as ``mlplab compare`` does:

- McNemar's exact test on the test predictions of one seed both have (the first shared seed,
  so that both networks saw the same split and data order), which measures test-set noise;
- the paired t-test over all shared seeds of the ranking metric, when they share at least two,
  which measures seed noise.

Testing N(N-1)/2 pairs at once makes some look significant by chance, so each test's p-values
are adjusted together with Holm's method. As in ``compare``, the paired t-test decides when it
could be run, McNemar's test otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mlplab.experiments.stats import McNemar, PairedSeeds, holm, mcnemar_exact, paired_seed_test

ALPHA = 0.05


@dataclass
class PairTest:
    """Configuration ``a`` (the better-ranked) against ``b``; differences are ``a`` minus ``b``."""

    a: int  # index into Significance.names
    b: int
    mean_difference: float | None  # of the ranking metric's means over seeds
    mcnemar: McNemar | None = None
    mcnemar_seeds: tuple = ()  # (seed of a, seed of b) whose predictions were compared
    mcnemar_holm: float | None = None
    paired: PairedSeeds | None = None
    paired_holm: float | None = None
    notes: list[str] = field(default_factory=list)  # why a test could not be run

    @property
    def decided_by(self) -> str | None:
        if self.paired is not None:
            return "paired"
        return "mcnemar" if self.mcnemar is not None else None

    @property
    def p_value(self) -> float | None:
        """The deciding Holm-adjusted p-value (paired t-test if run, else McNemar)."""
        return self.paired_holm if self.decided_by == "paired" else self.mcnemar_holm

    @property
    def difference(self) -> float | None:
        """``a`` minus ``b`` as the deciding test measured it (a fraction, 0.0021 = 0.21 pt)."""
        if self.decided_by == "paired":
            return -self.paired.mean_difference  # stats gives B - A
        if self.decided_by == "mcnemar":
            return self.mcnemar.accuracy_a - self.mcnemar.accuracy_b
        return None

    def test_name(self, n_pairs: int, test: str | None = None) -> str:
        """``test`` ("paired", "mcnemar"; the deciding one by default) as the report names it."""
        test = test or self.decided_by
        correction = f"Holm-adjusted over {n_pairs} pairs" if n_pairs > 1 else "one pair"
        if test == "paired":
            return f"paired t-test over {self.paired.n} seeds, {correction}"
        seed_a, seed_b = self.mcnemar_seeds
        on = f"seed {seed_a}" if seed_a == seed_b else f"seeds {seed_a} and {seed_b}"
        return f"McNemar's exact test on {on}, {correction}"


@dataclass
class Significance:
    """The pairwise tests of the top configurations (``names`` best first)."""

    names: list[str]
    metric: str
    pairs: list[PairTest]

    def matrix(self, test: str) -> np.ndarray:
        """Symmetric N x N Holm-adjusted p-values of ``test`` ("mcnemar", "paired" or "decided");
        NaN on the diagonal and where the test could not be run."""
        n = len(self.names)
        matrix = np.full((n, n), np.nan)
        for pair in self.pairs:
            value = {
                "mcnemar": pair.mcnemar_holm,
                "paired": pair.paired_holm,
                "decided": pair.p_value,
            }[test]
            if value is not None:
                matrix[pair.a, pair.b] = matrix[pair.b, pair.a] = value
        return matrix

    def pair(self, a: int, b: int) -> PairTest | None:
        for pair in self.pairs:
            if {pair.a, pair.b} == {a, b}:
                return pair
        return None


def _seed_order(seed):
    return (0, seed, "") if isinstance(seed, int | float) else (1, 0, str(seed))


def _mcnemar_runs(records_a: dict, records_b: dict):
    """The two trials McNemar compares: the first seed both have; else each one's first seed
    (only meaningful when each configuration was run once). None when none can be compared."""
    usable_a = {s: r for s, r in records_a.items() if r.predictions is not None}
    usable_b = {s: r for s, r in records_b.items() if r.predictions is not None}
    if not usable_a or not usable_b:
        return None, "no stored test predictions"
    shared = sorted(set(usable_a) & set(usable_b), key=_seed_order)
    if shared:
        seed_a = seed_b = shared[0]
    else:
        seed_a = sorted(usable_a, key=_seed_order)[0]
        seed_b = sorted(usable_b, key=_seed_order)[0]
    run_a, run_b = usable_a[seed_a], usable_b[seed_b]
    if run_a.labels_sha256 != run_b.labels_sha256:
        return None, "predictions of different test sets"
    if run_a.labels is None:
        return None, "the store has no test labels for the predictions"
    if len(run_a.predictions) != len(run_a.labels) or len(run_b.predictions) != len(run_a.labels):
        return None, "predictions and test labels differ in length"
    return (seed_a, seed_b, run_a, run_b), ""


def pairwise_tests(summaries: list, metric: str = "test_accuracy", top: int = 5) -> Significance:
    """Test every pair of the first ``top`` of ``summaries`` (sorted best first).

    Only configurations with a value of ``metric`` take part.
    """
    chosen = [s for s in summaries if s.mean(metric) is not None][:top]
    pairs = []
    for i in range(len(chosen)):
        for j in range(i + 1, len(chosen)):
            a, b = chosen[i], chosen[j]
            pair = PairTest(i, j, a.mean(metric) - b.mean(metric))
            records_a = dict(zip(a.seeds, a.records))
            records_b = dict(zip(b.seeds, b.records))
            picked, why = _mcnemar_runs(records_a, records_b)
            if picked is None:
                pair.notes.append(f"McNemar: {why}")
            else:
                seed_a, seed_b, run_a, run_b = picked
                pair.mcnemar = mcnemar_exact(run_a.predictions, run_b.predictions, run_a.labels)
                pair.mcnemar_seeds = (seed_a, seed_b)
            values_a, values_b = a.values[metric], b.values[metric]
            shared = set(values_a) & set(values_b)
            if len(shared) >= 2:
                pair.paired = paired_seed_test(values_a, values_b)
            else:
                pair.notes.append(f"paired t-test: {len(shared)} shared seed(s), needs 2")
            pairs.append(pair)
    for test in ("mcnemar", "paired"):
        tested = [pair for pair in pairs if getattr(pair, test) is not None]
        adjusted = holm([getattr(pair, test).p_value for pair in tested])
        for pair, value in zip(tested, adjusted):
            setattr(pair, f"{test}_holm", value)
    return Significance([s.name for s in chosen], metric, pairs)


def format_p(p: float) -> str:
    """``= 0.03``, ``= 0.0012``, ``< 0.001``: two significant digits, never a misleading 0.05."""
    if p < 0.001:
        return "< 0.001"
    text = f"{p:.2f}" if p >= 0.1 else f"{p:.2g}"
    if float(text) == ALPHA:
        text = f"{p:.3g}"
    return f"= {text}"


def mark(p: float | None) -> str:
    """A table cell: the p-value, with ``*`` when below 5%; ``n/a`` when untested."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    text = format_p(p).removeprefix("= ")
    return f"{text} *" if p < ALPHA else text


def best_sentence(significance: Significance) -> str:
    """The plain sentence about the best configuration against the runner-up.

    With one test: "`A` is better than `B` by 0.21 points, p = 0.03 (McNemar's exact test on
    seed 0, Holm-adjusted over 10 pairs), significant at 5%." or "... within noise". When both
    tests were run and disagree (a few seeds rarely show what 10,000 test images show), the
    sentence gives both verdicts rather than hiding one.
    """
    if len(significance.names) < 2:
        return "Only one configuration has results, so there is nothing to compare it with."
    pair = significance.pair(0, 1)
    first, second = significance.names[0], significance.names[1]
    n_pairs = len(significance.pairs)
    if pair.decided_by is None:
        return (
            f"`{first}` and `{second}` cannot be tested against each other "
            f"({'; '.join(pair.notes)})."
        )
    points = 100 * pair.difference
    if pair.paired is not None and pair.mcnemar is not None:
        verdicts = {test: getattr(pair, f"{test}_holm") < ALPHA for test in ("paired", "mcnemar")}
        if verdicts["paired"] != verdicts["mcnemar"]:
            mean = 100 * pair.mean_difference
            parts = []
            for test in ("mcnemar", "paired"):
                p = getattr(pair, f"{test}_holm")
                verdict = "significant at 5%" if verdicts[test] else "within noise"
                where = "on the test images" if test == "mcnemar" else "over seeds"
                parts.append(
                    f"{where} {verdict} (p {format_p(p)}, {pair.test_name(n_pairs, test)})"
                )
            return (
                f"`{first}` ranks above `{second}` by {mean:.2f} points (mean over seeds): "
                f"{parts[0]}; {parts[1]}."
            )
    p = pair.p_value
    test = pair.test_name(n_pairs)
    if p < ALPHA and points > 0:
        return (
            f"`{first}` is better than `{second}` by {points:.2f} points, p {format_p(p)} "
            f"({test}), significant at 5%."
        )
    if p < ALPHA and points < 0:
        return (
            f"`{second}` beats `{first}` by {-points:.2f} points in this test although it ranks "
            f"lower on the mean, p {format_p(p)} ({test}), significant at 5%."
        )
    return (
        f"`{first}` and `{second}` differ by {points:+.2f} points, p {format_p(p)} ({test}): "
        "within noise, not significant at 5%."
    )
