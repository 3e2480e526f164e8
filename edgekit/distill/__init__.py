"""Distillation: teacher -> student (losses, top-K cache, trainer, monitor)."""
