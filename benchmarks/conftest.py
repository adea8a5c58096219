"""pytest hooks for the micro-benchmarks: print ns/event and the ratios at the end."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Append the summary tables (``summary_lines()`` of test_decoder and test_options)."""
    import importlib

    for module in ("benchmarks.test_decoder", "benchmarks.test_options"):
        try:
            lines = importlib.import_module(module).summary_lines()
        except ImportError:
            continue
        if lines:
            terminalreporter.section(f"sonicsse {module.rsplit('_', 1)[1]} summary")
            for line in lines:
                terminalreporter.write_line(line)
