"""Measurements of the exported pipeline against the official PyTorch reference."""
