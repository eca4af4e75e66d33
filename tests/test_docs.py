"""The documentation builds, and every code example in it runs as written.

Conventions of the pages in ``docs/`` (also stated in ``docs/index.md``):

- a ```` ```python ```` block is executed; the blocks of one page share a namespace and run in
  order, in one working folder per page;
- a ```` ```bash ```` block is run with ``bash -e`` in that same folder, with the virtualenv's
  ``mlplab`` first on ``PATH``; it must exit with status 0;
- a block whose title is a file name (```` ```toml title="my_sweep.toml" ````) is written to that
  file in the working folder, so that the commands after it can use it;
- a block titled ``not run: <reason>`` (a full-size command, an install) is shown, not run;
- any other ```` ```toml ```` block must at least be valid TOML.

The working folder looks like the root of a clone: it holds copies of ``examples/`` and
``experiments/`` and the fixture datasets under ``tests/fixtures/``, so the examples train on
the small MNIST subset ``tests/fixtures/mnist-small`` and finish in seconds. Data lookups see
nothing of the machine (no ``$MLPLAB_DATA``, an empty cache, no mirrors), so an example that
would need the full dataset fails here instead of downloading it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Pages written from measured results by hand; their commands are full-size runs, not examples.
NOT_EXAMPLES = {"EXPERIMENTS.md", "RESULTS.md"}
SKIP_TITLE = "not run:"
FILE_TITLE = re.compile(r"^[\w./-]+\.\w+$")
FENCE_OPEN = re.compile(r"^```(?P<language>[\w-]*)(?P<attributes>.*)$")
TITLE = re.compile(r'title="(?P<title>[^"]*)"')
RUN_LANGUAGES = {"python", "bash"}
BLOCK_TIMEOUT = 300  # seconds; the slowest example (a small sweep) takes about 20


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    title: str
    code: str

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.language})"


def code_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, in order; fences must start at column 0."""
    blocks, lines = [], page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE_OPEN.match(lines[index])
        if opening is None or lines[index].strip() == "```":
            index += 1
            continue
        start = index
        body = []
        index += 1
        while index < len(lines) and lines[index].rstrip() != "```":
            body.append(lines[index])
            index += 1
        if index == len(lines):
            raise AssertionError(f"{page.relative_to(ROOT)}:{start + 1}: unclosed code block")
        title = TITLE.search(opening["attributes"])
        blocks.append(
            Block(
                page,
                start + 1,
                opening["language"],
                title["title"] if title else "",
                "\n".join(body) + "\n",
            )
        )
        index += 1
    return blocks


def example_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if p.name not in NOT_EXAMPLES)


def _working_folder(tmp_path: Path) -> Path:
    """A folder laid out like a clone's root, with the small data and the example files."""
    work = tmp_path / "clone"
    work.mkdir()
    for folder in ("examples", "experiments"):
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, work / folder)
    shutil.copytree(ROOT / "tests" / "fixtures", work / "tests" / "fixtures")
    return work


def _environment(tmp_path: Path) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLPLAB_DATA", "MLPLAB_MIRRORS") and not key.lower().endswith("_proxy")
    }
    environment.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}",
        MLPLAB_MIRRORS="",  # no downloads: an example needing real data fails loudly
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        MPLBACKEND="Agg",
        MPLCONFIGDIR=str(tmp_path / "matplotlib"),
        PYTHONHASHSEED="0",
    )
    return environment


def _run_bash(block: Block, work: Path, environment: dict[str, str]) -> None:
    try:
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block.code],
            cwd=work,
            env=environment,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.where()} ran longer than {BLOCK_TIMEOUT} s:\n{block.code}")
    if result.returncode != 0:
        pytest.fail(
            f"{block.where()} exited with status {result.returncode}:\n{block.code}\n"
            f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
        )


# The Python blocks of a page run in a child process of their own, one namespace for the page,
# so that an example that registers a layer or an optimizer changes nothing in this process.
PYTHON_RUNNER = r"""
import contextlib, io, json, sys, traceback
MARKER = sys.argv[1]
namespace = {"__name__": "__main__"}
for line in sys.stdin:
    request = json.loads(line)
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            exec(compile(request["code"], request["where"], "exec"), namespace)
        reply = {"ok": True}
    except BaseException:
        reply = {"ok": False, "error": traceback.format_exc()}
    reply["output"] = output.getvalue()[-3000:]
    print(MARKER + json.dumps(reply), flush=True)
"""
REPLY_MARKER = "@@mlplab-docs-reply@@"


class PythonSession:
    """A Python process that executes a page's blocks in order, in one namespace."""

    def __init__(self, work: Path, environment: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, "-c", PYTHON_RUNNER, REPLY_MARKER],
            cwd=work,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def run(self, block: Block) -> None:
        request = {"code": block.code, "where": block.where()}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        watchdog = threading.Timer(BLOCK_TIMEOUT, self.process.kill)  # a hung block ends here
        watchdog.start()
        try:
            for line in self.process.stdout:
                if line.startswith(REPLY_MARKER):
                    reply = json.loads(line[len(REPLY_MARKER) :])
                    break
            else:
                pytest.fail(
                    f"{block.where()}: the Python process ended (or ran longer than "
                    f"{BLOCK_TIMEOUT} s):\n{block.code}"
                )
        finally:
            watchdog.cancel()
        if not reply["ok"]:
            pytest.fail(
                f"{block.where()} raised:\n{block.code}\n--- output ---\n{reply['output']}"
                f"\n--- traceback ---\n{reply['error']}"
            )

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", example_pages(), ids=lambda page: str(page.relative_to(DOCS)).removesuffix(".md")
)
def test_every_example_of_the_page_runs_as_written(page, tmp_path):
    work = _working_folder(tmp_path)
    environment = _environment(tmp_path)
    python = PythonSession(work, environment)
    try:
        _run_page(page, work, environment, python)
    finally:
        python.close()


def _run_page(page: Path, work: Path, environment: dict[str, str], python: PythonSession):
    for block in code_blocks(page):
        if block.title.lower().startswith(SKIP_TITLE):
            continue
        if FILE_TITLE.match(block.title):
            target = work / block.title
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
        elif block.language == "python":
            python.run(block)
        elif block.language == "bash":
            _run_bash(block, work, environment)
        elif block.language == "toml":
            try:
                tomllib.loads(block.code)
            except tomllib.TOMLDecodeError as error:
                pytest.fail(f"{block.where()} is not valid TOML: {error}")


def test_pages_mark_only_a_few_blocks_as_not_run():
    """Not-run blocks are for full-size commands and installs; everything else must run."""
    blocks = [block for page in example_pages() for block in code_blocks(page)]
    not_run = [b for b in blocks if b.title.lower().startswith(SKIP_TITLE)]
    run = [b for b in blocks if b.language in RUN_LANGUAGES and b not in not_run]
    assert run, "no runnable examples found in docs/"
    assert len(not_run) <= len(run) // 3, (
        f"{len(not_run)} blocks are marked not run against {len(run)} that run: "
        + ", ".join(b.where() for b in not_run)
    )


def test_every_not_run_block_says_why():
    for page in example_pages():
        for block in code_blocks(page):
            if block.title.lower().startswith(SKIP_TITLE):
                reason = block.title[len(SKIP_TITLE) :].strip()
                assert reason, f'{block.where()}: write the reason, title="not run: <why>"'


def test_the_documentation_builds_with_no_warning(tmp_path):
    """``mkdocs build --strict``: broken links, unknown pages and docstrings that mkdocstrings
    cannot read all fail the build."""
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mkdocs is not installed: pip install -e '.[test]' installs it")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-5000:]}"
    for page in ("index.html", "guide/train/index.html", "reference/api/index.html"):
        assert (tmp_path / "site" / page).is_file(), f"the site has no {page}"
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "check_gradients" in api, "the API reference does not show the engine's docstrings"
