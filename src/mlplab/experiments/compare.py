"""Is B better than A? Paired comparisons of trained networks on one test set.

A side of a comparison is one run, or one configuration with its runs over several seeds.
Which test decides (differences are always B minus A, in accuracy points):

- both sides have at least two matching seeds: the paired t-test over seeds (seed *i* of A and B
  share the split and data order), with the t interval of the mean difference;
- otherwise: McNemar's exact test on the two runs' test predictions (the same seed on both
  sides when they share one, else the smallest), with Newcombe's paired interval.

``mlplab compare``, ``mlplab report`` and ``mlplab reproduce`` all use :func:`compare_sides` and
say the result in one plain :func:`sentence`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlplab.errors import ConfigError, DataError, MlplabError

ALPHA = 0.05


@dataclass
class Run:
    """One trained network's test-set results: what a comparison needs of it."""

    seed: object
    accuracy: float
    predictions: np.ndarray | None
    labels: np.ndarray | None
    labels_sha256: str


@dataclass
class Side:
    """One operand of ``compare``: a run folder, or a store configuration with its seeds."""

    operand: str
    name: str
    runs: list[Run] = field(default_factory=list)
    config: dict | None = None

    def accuracies(self) -> dict:
        return {run.seed: run.accuracy for run in self.runs}


def test_set(sides: list[Side]) -> tuple[str, np.ndarray | None]:
    """The one test set all runs were scored on: its digest and, when known, its labels.

    Predictions of different test sets cannot be paired, so a mismatch is refused.
    """
    from mlplab.experiments.store import labels_sha256

    digests = {}
    for side in sides:
        for run in side.runs:
            if run.labels_sha256:
                digests.setdefault(run.labels_sha256, side.operand)
    if len(digests) > 1:
        (digest_a, side_a), (digest_b, side_b) = list(digests.items())[:2]
        raise DataError(
            f"{side_a} and {side_b} were scored on different test sets (test labels differ: "
            f"sha256 {digest_a[:12]} vs {digest_b[:12]}); compare runs on the same dataset"
        )
    lengths = {
        len(run.predictions) for side in sides for run in side.runs if run.predictions is not None
    }
    if len(lengths) > 1:
        raise DataError(
            f"{sides[0].operand} and {sides[1].operand} hold predictions of test sets of "
            f"different sizes ({', '.join(map(str, sorted(lengths)))}); compare runs on the same "
            "dataset"
        )
    digest = next(iter(digests), "")
    labels = next(
        (run.labels for side in sides for run in side.runs if run.labels is not None), None
    )
    if labels is None:
        labels = _labels_from_dataset(sides, digest)
    if labels is not None and digest and labels_sha256(labels) != digest:
        raise DataError(f"{sides[0].operand}: stored test labels do not match their sha256")
    return digest, labels


def _labels_from_dataset(sides: list[Side], digest: str) -> np.ndarray | None:
    """Test labels read from the dataset a stored trial names, if it is at hand and matches."""
    from mlplab.data import load_dataset
    from mlplab.experiments.store import labels_sha256

    for side in sides:
        data = (side.config or {}).get("data", {})
        if not data.get("dataset") or not digest:
            continue
        try:
            dataset = load_dataset(
                data["dataset"],
                data.get("data_dir") or None,
                download=False,  # a comparison never downloads; without the data, no McNemar
                progress=False,
                parts=("test",),
            )
        except (MlplabError, OSError, TypeError):
            continue
        if labels_sha256(dataset.test_labels) == digest:
            return np.asarray(dataset.test_labels)
    return None


def _pick_runs(a: Side, b: Side, seed) -> tuple[Run, Run] | None:
    """The pair of runs McNemar's test compares: ``seed`` on both, else the smallest shared."""
    usable_a = [run for run in a.runs if run.predictions is not None]
    usable_b = [run for run in b.runs if run.predictions is not None]
    if not usable_a or not usable_b:
        return None
    if seed is not None:
        chosen = []
        for side, usable in ((a, usable_a), (b, usable_b)):
            found = [run for run in usable if str(run.seed) == str(seed)]
            if not found:
                if len(side.runs) == 1:  # a single run is compared whatever its seed
                    found = usable
                else:
                    have = ", ".join(str(run.seed) for run in usable)
                    raise ConfigError(f"--seed {seed}: {side.operand} has seeds {have}")
            chosen.append(found[0])
        return chosen[0], chosen[1]
    seeds_b = {str(run.seed): run for run in usable_b}
    for run in usable_a:  # sorted by seed
        if str(run.seed) in seeds_b:
            return run, seeds_b[str(run.seed)]
    return usable_a[0], usable_b[0]


def _accuracy_summary(side: Side) -> dict:
    from mlplab.experiments.stats import ACCURACY_BOUNDS, seed_summary
    from mlplab.training.metrics import wilson_interval

    if len(side.runs) >= 2:
        summary = seed_summary([run.accuracy for run in side.runs], bounds=ACCURACY_BOUNDS)
        return {
            "name": side.name,
            "accuracy": summary.mean,
            "low": summary.low,
            "high": summary.high,
            "std": summary.std,
            "seeds": [run.seed for run in side.runs],
            "interval": "t interval over seeds",
        }
    (run,) = side.runs
    result = {"name": side.name, "accuracy": run.accuracy, "seeds": [run.seed]}
    if run.predictions is not None:
        n = len(run.predictions)
        result["low"], result["high"] = wilson_interval(round(run.accuracy * n), n)
        result["interval"] = "Wilson interval over test images"
    else:
        result.update(low=None, high=None, interval="none (no predictions stored)")
    return result


def compare_sides(a: Side, b: Side, seed=None, labels: np.ndarray | None = None) -> dict:
    """Everything ``compare`` reports about B against A, as a JSON-ready dict.

    ``labels`` are the test labels both were scored on, if already known (else looked up).
    """
    from mlplab.experiments.stats import (
        mcnemar_exact,
        newcombe_paired_interval,
        paired_seed_test,
    )

    if labels is None:
        _, labels = test_set([a, b])
    result = {"a": _accuracy_summary(a), "b": _accuracy_summary(b)}
    result["mcnemar"] = None
    pair = _pick_runs(a, b, seed)
    if pair is not None and labels is not None:
        run_a, run_b = pair
        test = mcnemar_exact(run_a.predictions, run_b.predictions, labels)
        difference, low, high = newcombe_paired_interval(
            test.both_right, test.a_only, test.b_only, test.both_wrong
        )
        result["mcnemar"] = {
            **test.to_dict(),
            "seed_a": run_a.seed,
            "seed_b": run_b.seed,
            "accuracy_a": test.accuracy_a,
            "accuracy_b": test.accuracy_b,
            "difference": difference,
            "low": low,
            "high": high,
            "interval": "Newcombe paired (method 10)",
        }
    result["paired_seeds"] = None
    shared = set(map(str, a.accuracies())) & set(map(str, b.accuracies()))
    if len(shared) >= 2:
        paired = paired_seed_test(
            {str(k): v for k, v in a.accuracies().items()},
            {str(k): v for k, v in b.accuracies().items()},
        )
        result["paired_seeds"] = {
            **paired.to_dict(),
            "difference": paired.mean_difference,
            "interval": "t interval of the mean paired difference",
        }
    if result["paired_seeds"] is not None:
        deciding = result["paired_seeds"]
        deciding_name = f"paired t-test over {deciding['n']} seeds"
    elif result["mcnemar"] is not None:
        deciding = result["mcnemar"]
        deciding_name = "McNemar's exact test" + _seed_note(a, b, deciding)
    else:
        raise DataError(
            f"{a.operand} vs {b.operand}: no test is possible: McNemar's test needs the test "
            "predictions and labels of both, the paired test at least 2 shared seeds"
        )
    result["decided_by"] = deciding_name
    result["difference"] = deciding["difference"]
    result["difference_low"] = deciding["low"]
    result["difference_high"] = deciding["high"]
    result["p_value"] = deciding["p_value"]
    return result


def _seed_note(a: Side, b: Side, mcnemar: dict) -> str:
    if len(a.runs) == 1 and len(b.runs) == 1:
        return ""
    if mcnemar["seed_a"] == mcnemar["seed_b"]:
        return f" on seed {mcnemar['seed_a']}"
    return f" on seeds {mcnemar['seed_a']} (A) and {mcnemar['seed_b']} (B)"


def format_p(p: float) -> str:
    """A p-value as people write it: two significant digits, never a misleading 0.05."""
    if p < 0.001:
        return "< 0.001"
    text = f"{p:.2f}" if p >= 0.1 else f"{p:.2g}"
    if float(text) == ALPHA:  # 0.0496 and 0.0504 both print as 0.05 otherwise
        text = f"{p:.3g}"
    return f"= {text}"


def sentence(result: dict, correction: str = "", letters=("A", "B")) -> str:
    """The one plain sentence ``compare`` ends with.

    Significant at 5% (p < 0.05): "B is better by 0.21 points, p = 0.03 (McNemar's exact test),
    significant at 5%." Otherwise: "The difference is within noise: B - A = +0.05 points,
    p = 0.41 (paired t-test over 5 seeds), not significant at 5%."
    """
    points = 100 * result["difference"]
    p = result["p_value"]
    test = result["decided_by"] + correction
    first, second = letters
    if p < ALPHA and points != 0:
        better = second if points > 0 else first
        return (
            f"{better} is better by {abs(points):.2f} points, p {format_p(p)} ({test}), "
            "significant at 5%."
        )
    return (
        f"The difference is within noise: {second} - {first} = {points:+.2f} points, "
        f"p {format_p(p)} ({test}), not significant at 5%."
    )


def side_from_records(name: str, records, operand: str | None = None) -> Side:
    """A configuration's trials (:class:`~mlplab.experiments.records.TrialRecord`) as a side,
    its runs sorted by seed."""
    from mlplab.experiments.store import seed_of

    runs = []
    for record in sorted(records, key=lambda r: str(seed_of(r))):
        accuracy = record.metrics.get("test_accuracy")
        if record.predictions is not None and record.labels is not None:
            accuracy = float(np.mean(record.predictions == record.labels))
        if accuracy is None:
            raise DataError(f"{operand or name}: trial {record.trial_key} has no test_accuracy")
        runs.append(
            Run(
                seed_of(record),
                float(accuracy),
                record.predictions,
                record.labels,
                record.labels_sha256,
            )
        )
    return Side(operand or name, name, runs, records[0].config if records else None)


def compare_records(records_a, records_b, name_a: str = "A", name_b: str = "B") -> dict:
    """:func:`compare_sides` of two configurations' trials, with its ``sentence`` (naming them)."""
    a, b = side_from_records(name_a, records_a), side_from_records(name_b, records_b)
    result = compare_sides(a, b)
    result["significant"] = bool(result["p_value"] < ALPHA and result["difference"] != 0)
    result["sentence"] = sentence(result, letters=(name_a, name_b))
    return result
