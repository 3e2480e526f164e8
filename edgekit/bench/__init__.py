"""Benchmark harness: metrics, runners, suites, recommendation and reports."""

from edgekit.bench.harness import run_suite
from edgekit.bench.recommend import recommend
from edgekit.bench.report import write_report

__all__ = ["recommend", "run_suite", "write_report"]
