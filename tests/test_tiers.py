"""The test tiers (tests/conftest.py): a test outside the `served` tier cannot start Triton."""

from __future__ import annotations

import tempfile

import pytest

from sam2_triton.serving.local_server import LocalTritonServer


def test_unmarked_test_cannot_launch_tritonserver(tmp_path, request, monkeypatch):
    assert request.node.get_closest_marker("served") is None
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the server's work folder
    server = LocalTritonServer(tmp_path, http_port=1, grpc_port=2, metrics_port=3)
    with pytest.raises(RuntimeError, match="launches tritonserver: mark it @pytest.mark.served"):
        server.command(tmp_path, tmp_path)
