"""The four networks a video tracker calls, behind one small protocol.

Tensor names are those of the I/O contract (export/contract.py). `OnnxVideoNetworks` runs the
exported graphs in this process with ONNX Runtime (tests, tools); inside Triton the same protocol
is meant to be implemented with BLS calls to the network models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

import numpy as np


class VideoNetworks(Protocol):
    def encode(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """image [B,3,1024,1024] -> image_embed (raw), high_res_feats_0, high_res_feats_1."""

    def decode(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """mask_decoder inputs -> masks, iou_scores, object_pointers, object_score_logits."""

    def encode_memory(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """memory_encoder inputs -> memory_features."""

    def attend(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """memory_attention inputs -> conditioned_features."""


class OnnxVideoNetworks:
    """VideoNetworks with ONNX Runtime (CPU unless providers say otherwise)."""

    def __init__(self, export_dir: os.PathLike, **session_options) -> None:
        from sam2_triton.python_backend.onnx_networks import OnnxNetworks

        self.networks = OnnxNetworks(export_dir, **session_options)
        self.metadata = self.networks.metadata

    def encode(self, image: np.ndarray) -> dict[str, np.ndarray]:
        return self.networks.run("image_encoder", image=image)

    def decode(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.networks.run("mask_decoder", **inputs)

    def encode_memory(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.networks.run("memory_encoder", **inputs)

    def attend(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.networks.run("memory_attention", **inputs)
