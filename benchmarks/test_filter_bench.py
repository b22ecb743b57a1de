"""Cost of ``~=`` filters on Go's semantics (RE2), against Python's backtracking ``re`` they replaced.

    .venv/bin/python -m pytest benchmarks/test_filter_bench.py

Over 10,000 image names with a typical pattern:

* the engine: `goregex.compile(p).search` against ``re.compile(p).search``;
* a whole filter as ``images.list`` runs it (`filters.parse(...).match` on an
  adaptor per object), ``name~=PATTERN`` against ``name==NAME``.

Targets: the engine within 6x of ``re`` on patterns that do not backtrack
(each search crosses into C++ and back, about 1 µs; on ``(a+)+$`` ``re``
never finishes while RE2 stays linear); a regex filter within 1.5x of an
equality filter. Ratios are printed at the end of the run.
"""

from __future__ import annotations

import re

from cargohold import filters, goregex

NAMES = [f"registry.example.com/team{i % 37}/app{i}:v{i % 11}.{i % 7}" for i in range(10_000)]
PATTERN = r"^registry\.example\.com/team(1|2)[0-9]/app[0-9]+:v1\."
ADAPTORS = [filters.adaptor({"name": name}) for name in NAMES]
MEDIANS: dict[str, float] = {}


def _ratio(report, what: str, a: str, b: str) -> None:
    if a in MEDIANS and b in MEDIANS:
        report(f"{what} over {len(NAMES)} names: {a} / {b} = {MEDIANS[a] / MEDIANS[b]:.2f}x")


def test_engine_re2(benchmark):
    compiled = goregex.compile(PATTERN)
    matched = benchmark(lambda: sum(1 for name in NAMES if compiled.search(name)))
    assert matched == sum(1 for name in NAMES if re.search(PATTERN, name)) > 0
    MEDIANS["re2"] = benchmark.stats.stats.median


def test_engine_python_re(benchmark, report):
    compiled = re.compile(PATTERN)
    benchmark(lambda: sum(1 for name in NAMES if compiled.search(name)))
    MEDIANS["python re"] = benchmark.stats.stats.median
    _ratio(report, "regex engine", "re2", "python re")


def _filter(benchmark, expr: str, key: str) -> None:
    def run() -> int:
        flt = filters.parse(expr)
        return sum(flt.match(a) for a in ADAPTORS)

    benchmark(run)
    MEDIANS[key] = benchmark.stats.stats.median


def test_filter_regex(benchmark):
    _filter(benchmark, "name~=" + '"' + PATTERN.replace("\\", "\\\\") + '"', "name~=")


def test_filter_equality(benchmark, report):
    _filter(benchmark, f"name=={NAMES[5]}", "name==")
    _ratio(report, "whole filter", "name~=", "name==")
