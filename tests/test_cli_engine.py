"""`mlplab summary` and `mlplab gradcheck` from the command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlplab.cli import build_parser, main
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


def test_summary_of_a_repeated_layer(capsys):
    assert main(["summary", "5x32:sigmoid"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 29,674" in out  # 784*32+32 + 4*(32*32+32) + 32*10+10
    assert "dense5 (dense)" in out and "sigmoid5 (sigmoid)" in out and "dense6" in out


def test_summary_of_an_impossible_size_exits_2_at_once_with_one_line(capsys):
    started = time.perf_counter()
    assert main(["summary", "99999999999:relu"]) == 2
    assert time.perf_counter() - started < 1.0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "'99999999999:relu' needs" in err and "available" in err


def subcommand_parser(name):
    subparsers = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return subparsers.choices[name]


@pytest.mark.parametrize("command", ["summary", "gradcheck"])
def test_help_describes_the_command_and_every_argument_without_referring_to_itself(command):
    parser = subcommand_parser(command)
    text = parser.format_help()
    assert f"mlplab {command} --help" not in text
    assert parser.description and len(parser.description) > 80
    for action in parser._actions:
        assert action.help, f"{command}: {action.option_strings or action.dest} has no help"
    # the architecture grammar is spelled out where ARCH is asked for
    assert "COUNTxUNITS" in text and "5x32:sigmoid" in text and "dropout(rate)" in text


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


def test_gradcheck_without_an_architecture_runs_the_built_in_suite(capsys, monkeypatch):
    """That the whole suite passes is test_gradcheck's job; here, that the CLI runs it and
    reports it (on its first two entries, to keep the test fast)."""
    from mlplab.engine import gradcheck

    monkeypatch.setattr(gradcheck, "SUITE", gradcheck.SUITE[:2])
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 gradient checks passed" in out
    assert "dense + sigmoid: PASS" in out and "FAIL" not in out


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
