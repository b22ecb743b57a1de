"""Shared benchmark plumbing: lines (ratios computed from one run's figures) printed at the end."""

from __future__ import annotations

import pytest

_LINES: list[str] = []


@pytest.fixture(scope="session")
def report():
    """``report(line)`` adds a line to the summary printed after the benchmark tables."""
    return _LINES.append


def pytest_terminal_summary(terminalreporter) -> None:
    if _LINES:
        terminalreporter.section("benchmark ratios (this run)")
        for line in _LINES:
            terminalreporter.write_line(line)
