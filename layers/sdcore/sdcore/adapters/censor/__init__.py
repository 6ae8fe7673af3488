"""Censor adapters that run wherever the inference function runs (both backends)."""
