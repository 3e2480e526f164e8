"""Structured pruning: importance scores, surgery on HF models, plans."""
