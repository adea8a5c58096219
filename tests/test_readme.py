"""Every code block of README.md runs, so the docs cannot rot.

- ``python`` blocks run as scripts in a fresh interpreter, with ``SONICSSE_DEMO_URL`` pointing at an
  embedded demo server (the examples default to ``sonicsse serve``'s address).
- ``console`` blocks are shell sessions: each ``$ command`` runs (the demo server's address swapped in)
  and its output must match the lines that follow; ``...`` matches any text within a line, and a line
  that is only ``...`` matches any number of lines.
- ``sh`` blocks are the install and test commands: the quick start must be exactly the two commands
  that ``.ci/run`` executes (installing is CI's job; the commands they run are exercised here).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonicsse._demo import serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_URL = "http://127.0.0.1:8765"
QUICK_START = ["pip install . && sonicsse demo", "pip install '.[test]' && pytest"]
TIMEOUT = 60


def code_blocks(lang: str) -> list[tuple[int, str]]:
    """(line number, text) of every fenced block of ``lang`` in the README."""
    blocks: list[tuple[int, str]] = []
    lines = README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == f"```{lang}":
            start = i + 1
            j = start
            while lines[j].strip() != "```":
                j += 1
            blocks.append((start + 1, "\n".join(lines[start:j]) + "\n"))
            i = j
        i += 1
    return blocks


def all_fences() -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```(\S*)\s*$", README.read_text(encoding="utf-8"), re.M)]


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    with serve_in_thread(token_delay=0) as server:
        yield server.url


def _env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SONICSSE_DEMO_URL"] = url
    env["NO_COLOR"] = "1"
    env.pop("OPENAI_API_KEY", None)
    return env


def test_every_block_is_checked() -> None:
    """Only languages this file knows how to run may appear, and each kind is present."""
    fences = all_fences()
    openings = fences[0::2]
    assert all(f == "" for f in fences[1::2]), "unbalanced fences"
    assert set(openings) <= {"python", "console", "sh"}, openings
    assert {"python", "console", "sh"} <= set(openings)


def test_quick_start_is_the_two_ci_commands() -> None:
    blocks = code_blocks("sh")
    assert blocks[0][1].strip().splitlines() == QUICK_START
    for _, text in blocks[1:]:
        assert text.strip() == QUICK_START[1]
    ci = ROOT / ".ci" / "run"
    if ci.exists():  # the CI gate installs and tests with the README's own commands
        script = ci.read_text()
        assert "pip install '.[test]'" in script
        assert re.search(r"^pytest\s*$", script, re.M)


PYTHON_BLOCKS = code_blocks("python")


@pytest.mark.parametrize("lineno,code", PYTHON_BLOCKS, ids=[f"line{n}" for n, _ in PYTHON_BLOCKS])
def test_python_block(lineno: int, code: str, demo_url: str, tmp_path: Path) -> None:
    script = tmp_path / f"readme_line{lineno}.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(demo_url),
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"README block at line {lineno} failed:\n{result.stdout}\n{result.stderr}"
    if "SONICSSE_DEMO_URL" in code:
        assert result.stdout.strip(), f"README block at line {lineno} printed nothing"


def _matches(expected: list[str], actual: list[str]) -> bool:
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*".join(re.escape(p) for p in line.split("...")) + r"\n")
    pattern = "".join(parts)
    return re.fullmatch(pattern, "".join(a + "\n" for a in actual), re.S) is not None


def _console_sessions() -> list[tuple[int, str, list[str]]]:
    sessions = []
    for lineno, text in code_blocks("console"):
        command: str | None = None
        output: list[str] = []
        start = lineno
        for offset, line in enumerate(text.splitlines()):
            if line.startswith("$ "):
                if command is not None:
                    sessions.append((start, command, output))
                command, output, start = line[2:], [], lineno + offset
            else:
                output.append(line.rstrip())
        if command is not None:
            sessions.append((start, command, output))
    return sessions


CONSOLE = _console_sessions()


@pytest.mark.parametrize("lineno,command,expected", CONSOLE, ids=[f"line{n}" for n, _, _ in CONSOLE])
def test_console_block(lineno: int, command: str, expected: list[str], demo_url: str) -> None:
    argv = shlex.split(command.replace(DOC_URL, demo_url))
    assert argv[0] == "sonicsse", "README shell sessions run the sonicsse command only"
    result = subprocess.run(
        [sys.executable, "-m", "sonicsse", *argv[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
        env=_env(demo_url),
    )
    actual = [line.rstrip() for line in result.stdout.replace(demo_url, DOC_URL).splitlines()]
    while actual and not actual[-1]:
        actual.pop()
    while expected and not expected[-1]:
        expected = expected[:-1]
    assert _matches(expected, actual), (
        f"README line {lineno}: `{command}` printed:\n"
        + "\n".join(actual)
        + "\n\nexpected:\n"
        + "\n".join(expected)
    )
    wants_error = any(line.startswith("sonicsse: error:") for line in expected)
    assert (result.returncode != 0) == wants_error, f"exit code {result.returncode}"
