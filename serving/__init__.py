"""Serving: build a Triton model repository from configs + exported graphs, run a local server."""
