"""Benchmark harness: metrics, runners, suites, recommendation and reports."""
