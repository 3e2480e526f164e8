"""The ONNX builder's memory facts that preflight reads: every level has one, and they reproduce the measurements."""

from __future__ import annotations

import pytest

from edgekit.export.onnx_genai import BUILDER_PEAK, LEVELS, builder_peak_bytes


def test_every_level_has_a_peak_estimate():
    assert set(BUILDER_PEAK) == set(LEVELS)


@pytest.mark.parametrize(
    ("checkpoint", "level", "measured"),
    [
        (505_981_120, "fp32", 3.26e9),  # llama-0.3b, docs/onnx.md
        (2_471_645_608, "fp32", 6.40e9),  # llama-1b
        (505_981_120, "int4", 5.46e9),
        (2_471_645_608, "int4", 14.44e9),
    ],
)
def test_peak_estimate_reproduces_the_measured_peaks_within_two_percent(checkpoint, level, measured):
    assert builder_peak_bytes(checkpoint, level) == pytest.approx(measured, rel=0.02)


def test_quantized_levels_cost_more_than_float_ones_at_every_size():
    for size in (10**8, 10**9, 10**10):
        assert builder_peak_bytes(size, "int4") > builder_peak_bytes(size, "fp32") > size
