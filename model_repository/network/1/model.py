"""Python-backend runner for one exported network (profiles whose triton_backend is `python`).

Runs the graph with ONNX Runtime (CPU, or the CUDA provider on a GPU instance) or, for runtime
`torch`, the official modules in PyTorch. Which network, runtime and device: the config's
parameters. Requests of a batching model (image_encoder) are concatenated into one call.
"""

import json
from pathlib import Path

import numpy as np

from sam2_triton.export.contract import CONTRACTS
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.onnx_networks import validate_inputs
from sam2_triton.python_backend.triton_io import (
    error_response,
    model_parameters,
    optional_input,
    respond_each,
    response,
)


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        self.network = params["network"]
        self.contract = CONTRACTS[self.network]
        self.batching = json.loads(args["model_config"]).get("max_batch_size", 0) > 0
        directory = Path(args["model_repository"]) / args["model_version"]
        on_gpu = args.get("model_instance_kind") == "GPU"
        if params["runtime"] == "torch":
            from sam2_triton.python_backend.torch_networks import TorchNetworks

            device = f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu"
            self.runner = TorchNetworks(
                params["checkpoint"], params["model"], [self.network], device
            )
        else:
            from sam2_triton.python_backend.onnx_networks import OnnxNetworks

            providers = (
                [("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])})]
                if on_gpu
                else ["CPUExecutionProvider"]
            )
            self.runner = OnnxNetworks(
                directory,
                [self.network],
                providers=providers,
                intra_op_threads=int(params.get("intra_op_threads", 0)),
                allow_spinning=params.get("allow_spinning", "1") == "1",
                fuse_attention=params.get("fuse_attention", "1") == "1",
            )

    def _inputs(self, request):
        inputs = {}
        for name in self.contract.input_names:
            array = optional_input(request, name)
            if array is None:
                raise InputError(f"{self.network}: input {name} is required")
            inputs[name] = array
        return inputs

    def execute(self, requests):
        if not self.batching or len(requests) == 1:
            return respond_each(
                requests, lambda r: self.runner.run(self.network, **self._inputs(r)), self.network
            )
        # Dynamic batching: check each request, run the valid ones as one batch, split.
        responses, valid = [None] * len(requests), []
        for i, request in enumerate(requests):
            try:
                inputs = self._inputs(request)
                validate_inputs(self.contract, inputs)
                valid.append((i, inputs))
            except InputError as exc:
                responses[i] = error_response(str(exc))
        if valid:
            batch = {n: np.concatenate([v[n] for _, v in valid]) for n in self.contract.input_names}
            try:
                outputs = self.runner.run(self.network, **batch)
            except Exception as exc:
                for i, _ in valid:
                    responses[i] = error_response(
                        f"{self.network}: {type(exc).__name__}: {exc}", False
                    )
                return responses
            start = 0
            for i, inputs in valid:
                size = len(inputs[self.contract.input_names[0]])
                responses[i] = response({n: a[start : start + size] for n, a in outputs.items()})
                start += size
        return responses
