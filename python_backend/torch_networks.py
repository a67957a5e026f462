"""Run the four networks in PyTorch from an official checkpoint (the GPU Python-backend path).

The same `nn.Module` wrappers that are exported to ONNX (`export/networks/`), built from the
checkpoint and run eagerly, so the served results equal the exported graphs' definition. Used
by the Python-backend network runner when a profile's runtime is `torch` (servers without the
TensorRT / ONNX Runtime backends, with a GPU).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch

from sam2_triton.configs import get_model
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.export.networks import NETWORK_CLASSES
from sam2_triton.python_backend.onnx_networks import validate_inputs


class TorchNetworks:
    """The networks of one checkpoint as eval-mode modules on `device` ("cpu", "cuda", ...)."""

    def __init__(
        self,
        checkpoint: os.PathLike,
        model_name: str,
        networks: Iterable[str] = tuple(CONTRACTS),
        device: str = "cuda",
    ) -> None:
        from sam2_triton.export.checkpoints import build_sam2_model

        self.device = torch.device(device)
        model = build_sam2_model(
            get_model(model_name), checkpoint=checkpoint, device=str(self.device)
        )
        self.modules = {name: NETWORK_CLASSES[name](model).eval() for name in networks}

    @torch.inference_mode()
    def run(self, network: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        contract = CONTRACTS[network]
        validate_inputs(contract, inputs)
        args = [
            torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device)
            for n in contract.input_names
        ]
        outputs = self.modules[network](*args)
        return {
            name: out.float().cpu().numpy() for name, out in zip(contract.output_names, outputs)
        }
