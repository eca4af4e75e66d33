"""The learner notebooks in ``notebooks/``: they run without error on the small fixture, say what
their text says they show, and the committed files are the ones ``notebooks/build.py`` writes,
with the outputs of a run."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT = 300  # seconds a single cell may take in small mode before the run fails


def _build_module():
    spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _build_module()
NAMES = list(BUILD.NOTEBOOKS)


def _stream_text(notebook) -> str:
    """Everything the notebook's code cells printed, in order."""
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def _images(notebook) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[str, tuple]:
    """Each notebook run in small mode from a temporary copy: ``{name: (notebook, printed)}``."""
    folder = tmp_path_factory.mktemp("notebooks")
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLPLAB_NOTEBOOK_SMALL", "1")  # the kernel inherits this environment
        for name in NAMES:
            copy = folder / name
            shutil.copyfile(NOTEBOOKS / name, copy)
            notebook = nbformat.read(copy, as_version=4)
            for cell in notebook.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None  # nothing left from the commit
            client = NotebookClient(
                notebook,
                timeout=CELL_TIMEOUT,
                kernel_name="python3",
                resources={"metadata": {"path": str(folder)}},
            )
            client.execute()  # raises CellExecutionError, with the traceback, on a failing cell
            results[name] = (notebook, _stream_text(notebook))
    return results


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_what_build_writes_with_outputs(name):
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    built = BUILD.make_notebook(BUILD.NOTEBOOKS[name])
    assert [c.source for c in committed.cells] == [c.source for c in built.cells], (
        f"{name} differs from notebooks/build.py: run `python notebooks/build.py --execute`"
    )
    code_cells = [c for c in committed.cells if c.cell_type == "code"]
    unexecuted = [i for i, c in enumerate(code_cells) if c.execution_count is None]
    assert not unexecuted, f"{name}: code cells {unexecuted} were committed without being run"
    assert sum(bool(c.outputs) for c in code_cells) > len(code_cells) / 2, (
        f"{name}: most code cells were committed without output"
    )
    errors = [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name} was committed with an error output: {errors[0].get('evalue')}"
    assert "small run on the test fixture" not in _stream_text(committed), (
        f"{name}: the committed outputs come from a small run; run build.py on full MNIST"
    )


def test_first_network_trains_checks_and_draws(executed):
    notebook, printed = executed["01_first_network.ipynb"]
    assert "small run on the test fixture" in printed
    assert "network: PASS" in printed
    accuracy = float(re.search(r"test accuracy: (\d\.\d+)", printed).group(1))
    assert 0.5 < accuracy <= 1.0, f"accuracy {accuracy} after training on the fixture"
    assert re.search(r"\d+ of 500 test images misclassified", printed)
    assert _images(notebook) == 4  # digits, curves, confusion matrix, mistakes


def test_inside_a_layer_checker_passes_new_layers_and_catches_the_shortcut(executed):
    notebook, printed = executed["02_inside_a_layer.ipynb"]
    assert "network: PASS" in printed
    assert "network: FAIL" in printed
    assert re.search(r"rmsnorm-shortcut2\.gain\s+\S+ .*wrong gradient", printed)
    assert "largest difference between the logits: 0.0" in printed
    accuracies = re.findall(r"test accuracy (\d\.\d+)", printed)
    assert len(accuracies) == 3
    assert _images(notebook) == 1


def test_numerical_traps_fail_then_are_fixed(executed):
    notebook, printed = executed["03_numerical_traps.ipynb"]
    # Scale 50: the batch-wide maximum gives NaN rows, the row-wise maximum none.
    nan_rows = re.search(r"^\s+50\s+(\d+)\s+(\d+)$", printed, re.MULTILINE)
    assert int(nan_rows.group(1)) > 0 and int(nan_rows.group(2)) == 0
    assert "NaN rows in mlplab's softmax at scale 50: 0" in printed
    # log(0): an infinite naive loss where mlplab's equals the float64 exact one.
    row = re.search(r"^\s+50\s+(\d+)\s+(\S+)\s+\S+\s+\S+\s+(\S+)\s+(\S+)$", printed, re.MULTILINE)
    assert int(row.group(1)) > 0 and row.group(2) == "inf"
    assert row.group(3) == row.group(4)
    # The 2x He ReLU stack grows at least 16x over eight layers; He and layernorm stay level.
    for name, grows in (
        ("8x100:relu, 2 x He", True),
        ("8x100:relu, He", False),
        ("8x100:layernorm:relu, 2 x He", False),
    ):
        sizes = re.search(re.escape(name) + r"((?:\s+\d+\.\d+){8})\n", printed).group(1)
        first, last = (float(v) for v in sizes.split()[::7])
        assert (last / first > 16) == grows, f"{name}: {sizes}"
    assert re.search(r"5x32:sigmoid, SGD 0\.01\s+validation accuracy by epoch", printed)
    assert _images(notebook) == 2


def test_node_budget_sweep_reports_and_tests_significance(executed):
    notebook, printed = executed["04_node_budget.ipynb"]
    assert "6 trials run" in printed and ", 0 failed" in printed
    assert "report.md" in printed
    assert len(re.findall(r"significant: (True|False)", printed)) == 2
    assert _images(notebook) >= 1
