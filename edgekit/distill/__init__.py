"""Distillation: teacher -> student (losses, top-K cache, trainer, monitor)."""

from edgekit.distill.student import derive_student
from edgekit.distill.trainer import DistillConfig, DistillResult, distill

__all__ = ["DistillConfig", "DistillResult", "derive_student", "distill"]
