"""Run the four exported SAM 2 graphs with ONNX Runtime.

This is how the networks run where no TensorRT or ONNX Runtime Triton backend exists (the
Python-backend runner models), and what the fidelity tests compare with PyTorch. It needs only
numpy, onnxruntime and the export directory (graphs + metadata.json): no torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import onnxruntime as ort

from sam2_triton.errors import ExportError
from sam2_triton.export.contract import CONTRACTS, GraphContract
from sam2_triton.export.metadata import load_metadata
from sam2_triton.python_backend.errors import InputError


def validate_inputs(contract: GraphContract, inputs: Dict[str, np.ndarray]) -> Dict[str, int]:
    """Check names, dtypes and shapes of `inputs`; return the sizes of the dynamic axes."""
    missing = [n for n in contract.input_names if n not in inputs]
    extra = [n for n in inputs if n not in contract.input_names]
    if missing or extra:
        raise InputError(
            f"{contract.name}: missing inputs {missing}, unexpected inputs {extra}"
            if missing
            else f"{contract.name}: unexpected inputs {extra}"
        )
    sizes: Dict[str, int] = {}
    for spec in contract.inputs:
        array = inputs[spec.name]
        if array.dtype != spec.np_dtype:
            raise InputError(
                f"{contract.name}.{spec.name}: dtype {array.dtype}, expected {spec.dtype}"
            )
        if array.ndim != len(spec.shape):
            raise InputError(
                f"{contract.name}.{spec.name}: {array.ndim} dims {array.shape}, expected "
                f"{len(spec.shape)} {spec.shape}"
            )
        for axis, (actual, expected) in enumerate(zip(array.shape, spec.shape)):
            if isinstance(expected, int):
                if actual != expected:
                    raise InputError(
                        f"{contract.name}.{spec.name}: size {actual} on axis {axis}, "
                        f"expected {expected} (shape {spec.shape})"
                    )
            elif sizes.setdefault(expected, actual) != actual:
                raise InputError(
                    f"{contract.name}.{spec.name}: axis {expected!r} is {actual} here but "
                    f"{sizes[expected]} in another input"
                )
    return sizes


class OnnxNetworks:
    """The exported graphs of one model, each in an ONNX Runtime session.

    >>> nets = OnnxNetworks("artifacts/tiny")
    >>> out = nets.run("image_encoder", image=image)  # {"image_embed": ..., ...}
    """

    def __init__(
        self,
        export_dir: os.PathLike,
        networks: Iterable[str] = tuple(CONTRACTS),
        providers: Optional[Sequence[str]] = None,
        intra_op_threads: int = 0,
        allow_spinning: bool = True,
    ) -> None:
        self.export_dir = Path(export_dir)
        self.metadata = load_metadata(self.export_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        if not allow_spinning:
            # Idle worker threads sleep instead of spinning: on a small CPU shared with other
            # work (post-processing, other model instances) spinning steals the cores.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = list(providers or ["CPUExecutionProvider"])
        self.sessions: Dict[str, ort.InferenceSession] = {}
        for name in networks:
            path = self.export_dir / CONTRACTS[name].file
            if not path.is_file():
                raise ExportError(f"{path} not found: export the model again")
            self.sessions[name] = ort.InferenceSession(str(path), options, providers=providers)

    def run(self, network: str, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        contract = CONTRACTS[network]
        validate_inputs(contract, inputs)
        outputs = self.sessions[network].run(contract.output_names, inputs)
        return dict(zip(contract.output_names, outputs))
