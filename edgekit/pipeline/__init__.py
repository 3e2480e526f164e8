"""``edgekit build``: the whole pipeline into a verified, benchmarked bundle."""

from edgekit.pipeline.build import BuildResult, build

__all__ = ["BuildResult", "build"]
