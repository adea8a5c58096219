"""pytest hooks for the decoder micro-benchmarks: print ns/event and the issue-4 ratios at the end."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Append the decoder summary table (see ``test_decoder.summary_lines``)."""
    try:
        from benchmarks.test_decoder import summary_lines
    except ImportError:
        return
    lines = summary_lines()
    if lines:
        terminalreporter.section("sonicsse decoder summary")
        for line in lines:
            terminalreporter.write_line(line)
