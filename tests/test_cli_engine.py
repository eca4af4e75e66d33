"""`mlplab summary` and `mlplab gradcheck` from the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlplab.cli import main
from mlplab.engine.architecture import network_from_string
from mlplab.saving import save_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "skip_concat.toml"


def test_summary_of_the_books_network_prints_25450_parameters(capsys):
    assert main(["summary", "32:sigmoid"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 25,450" in out
    assert "(None, 32)" in out and "(None, 10)" in out


def test_summary_of_the_forums_network_prints_793810_parameters(capsys):
    assert main(["summary", "950:relu,50:sigmoid"]) == 0
    assert "Total params: 793,810" in capsys.readouterr().out


def test_summary_honours_input_size_and_classes(capsys):
    assert main(["summary", "", "--input-size", "4", "--classes", "3"]) == 0
    assert "Total params: 15" in capsys.readouterr().out  # 4 * 3 + 3


def test_summary_reads_a_graph_from_a_toml_file(capsys):
    assert main(["summary", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "branches (concat)" in out and "skip (add)" in out and "(None, 128)" in out


def test_summary_of_a_saved_model_file(tmp_path, capsys):
    path = save_model(tmp_path / "m.npz", network_from_string("7:tanh", 5, 3))
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"Total params: {5 * 7 + 7 + 7 * 3 + 3}" in out


def test_gradcheck_suite_exits_zero_and_says_passed(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "11 of 11 gradient checks passed" in out
    assert "FAIL" not in out


def test_gradcheck_of_the_example_graph_exits_zero(capsys):
    assert main(["gradcheck", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 gradient checks passed" in out
    assert "hidden.weight" in out and "input" in out


def test_gradcheck_of_an_architecture_string_exits_zero(capsys):
    code = main(["gradcheck", "8:layernorm:relu", "--input-size", "5", "--classes", "3"])
    assert code == 0
    assert "PASS" in capsys.readouterr().out


def test_gradcheck_exits_one_when_a_gradient_is_wrong(capsys, monkeypatch):
    from mlplab.engine.activations import Tanh

    monkeypatch.setattr(Tanh, "backward", lambda self, grad_out: grad_out)
    assert main(["gradcheck", "6:tanh", "--input-size", "5", "--classes", "3"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED: 6:tanh" in out


def test_unknown_activation_exits_2_with_one_line_and_no_traceback(capsys):
    assert main(["summary", "100:sigmod"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("mlplab: error: ") and "'sigmod'" in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_broken_model_file_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 not really")
    assert main(["summary", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "broken.npz" in err


def test_python_dash_m_mlplab_reports_errors_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "mlplab", "summary", "100:sigmod"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unknown step 'sigmod'" in result.stderr
