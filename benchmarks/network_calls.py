"""What a network call costs through BLS, against the same call in the calling process.

    python -m sam2_triton.benchmarks.network_calls --export-dir EXPORT [--repeat 20] \
        [--json network_calls.json]

`track_video` calls four networks per frame. Through BLS (triton_io.BlsVideoNetworks) every
call crosses processes: the inputs are handed to Triton (DLPack; on a CPU server they are
copied into the Python backend's shared memory), the network model runs, its outputs come back
the same way. In process (video/networks.py) a call is a function call on the same tensors.
This starts the Triton server carried by nvidia-pytriton on a repository of four models:

- `echo`: a Python-backend model that returns a slice of a preallocated buffer: a call to it
  costs the BLS round trip alone, for payloads the size of each network's inputs and outputs
  (1 object: image 12 MiB in / features 16 MiB out, decoder 16 MiB in / 1 MiB out, memory
  encoder 4.3 MiB / 1 MiB, memory attention 11 MiB / 4 MiB, and a 4-byte call);
- `mask_decoder`, `memory_encoder`: the network models of the CPU profile (ONNX Runtime in a
  Python-backend model), on the same inputs as the in-process `OnnxVideoNetworks`;
- `bls_probe`: a Python-backend model that makes those calls with
  `triton_io.call_model_on_device` (what track_video does) and times each inside the server.

The in-process side runs in this process (same session options as the network models). The
copy cost of the payloads within one process (a memcpy of the bytes in + out) is reported
beside the echo calls. Medians (and p90) in milliseconds are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sam2_triton.benchmarks.report import record_header
from sam2_triton.configs import get_profile
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.export.sample_inputs import random_inputs

MIB = 1 << 20
FLOAT_BYTES = 4

# Payloads of one object's calls, (bytes in, bytes out), from the contract's shapes.
ECHO_CASES = {
    "empty call": (4, 4),
    "image_encoder": (12 * MIB, 16 * MIB),  # image -> image_embed + high-res features
    "mask_decoder": (16 * MIB + 256 * 1024, 1 * MIB),  # features + mask prompt -> masks
    "memory_encoder": (4 * MIB + 256 * 1024, 1 * MIB),  # image_embed + logits -> memory
    "memory_attention": (11 * MIB, 4 * MIB),  # features + 7 memories -> conditioned features
}
# Real network calls compared with the in-process runtime (the two that run fast on a CPU).
NETWORK_CASES = {
    "mask_decoder": {"num_images": 1, "num_prompts": 1, "num_points": 2},
    "memory_encoder": {"batch": 1, "mask_height": 256, "mask_width": 256},
}
NETWORK_MODELS = tuple(NETWORK_CASES)

ECHO_CONFIG = """\
name: "echo"
backend: "python"
max_batch_size: 0
input [
  { name: "x" data_type: TYPE_FP32 dims: [-1] },
  { name: "output_elements" data_type: TYPE_INT64 dims: [1] }
]
output [ { name: "y" data_type: TYPE_FP32 dims: [-1] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

ECHO_MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils

BUFFER_ELEMENTS = 64 * 1024 * 1024 // 4


class TritonPythonModel:
    def initialize(self, args):
        self.buffer = np.ones(BUFFER_ELEMENTS, np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            count = pb_utils.get_input_tensor_by_name(request, "output_elements").as_numpy()
            y = pb_utils.Tensor("y", self.buffer[: int(count.reshape(-1)[0])])
            responses.append(pb_utils.InferenceResponse([y]))
        return responses
"""

PROBE_CONFIG = """\
name: "bls_probe"
backend: "python"
max_batch_size: 0
input [ { name: "PLAN" data_type: TYPE_STRING dims: [1] } ]
output [ { name: "SECONDS" data_type: TYPE_FP64 dims: [-1] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

PROBE_MODEL = """\
import json
import time

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from sam2_triton.benchmarks.network_calls import call_inputs
from sam2_triton.python_backend.triton_io import call_model_on_device


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            plan = json.loads(pb_utils.get_input_tensor_by_name(request, "PLAN").as_numpy()[0])
            inputs, outputs = call_inputs(plan)
            call_model_on_device(plan["model"], inputs, outputs, torch.device("cpu"))  # warm-up
            seconds = []
            for _ in range(plan["repeat"]):
                start = time.perf_counter()
                call_model_on_device(plan["model"], inputs, outputs, torch.device("cpu"))
                seconds.append(time.perf_counter() - start)
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor("SECONDS", np.array(seconds))])
            )
        return responses
"""


def call_inputs(plan: dict) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(inputs, requested outputs) of one planned call: an echo of `bytes_in` / `bytes_out`, or
    a network on random contract inputs of `sizes`."""
    if plan["model"] == "echo":
        count_in = max(plan["bytes_in"] // FLOAT_BYTES, 1)
        count_out = max(plan["bytes_out"] // FLOAT_BYTES, 1)
        return {
            "x": torch.zeros(count_in),
            "output_elements": torch.tensor([count_out], dtype=torch.int64),
        }, ["y"]
    contract = CONTRACTS[plan["model"]]
    arrays = random_inputs(contract, plan["sizes"], np.random.default_rng(0))
    return {n: torch.from_numpy(a) for n, a in arrays.items()}, contract.output_names


def write_repository(export_dir: Path, root: Path) -> Path:
    """The CPU repository of `export_dir` with only the network models measured, plus the echo
    and probe models."""
    from sam2_triton.serving.repository import build_repository

    repository = build_repository(export_dir, root / "repository", get_profile("cpu"), warmup=False)
    for model in repository.iterdir():
        if model.is_dir() and model.name not in NETWORK_MODELS:
            shutil.rmtree(model)
    for name, config, source in (
        ("echo", ECHO_CONFIG, ECHO_MODEL),
        ("bls_probe", PROBE_CONFIG, PROBE_MODEL),
    ):
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "config.pbtxt").write_text(config, encoding="utf-8")
        (repository / name / "1" / "model.py").write_text(source, encoding="utf-8")
    return repository


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in seconds)
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 3),
    }


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    call()  # warm-up
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export-dir", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    import tritonclient.http as http

    from sam2_triton.export.metadata import load_metadata
    from sam2_triton.python_backend.video.networks import OnnxVideoNetworks
    from sam2_triton.serving.local_server import LocalTritonServer

    model = load_metadata(args.export_dir)["model"]
    weights = model["checkpoint"].get("file", "random")  # the speed does not depend on them
    record: dict[str, object] = {**record_header(model["name"], weights), "repeat": args.repeat}
    with tempfile.TemporaryDirectory(prefix="sam2-network-calls-") as tmp:
        repository = write_repository(args.export_dir, Path(tmp))
        server = LocalTritonServer(
            repository, free_port(), free_port(), free_port(), log_file=Path(tmp) / "log"
        )
        with server:
            client = http.InferenceServerClient(server.http_url)

            def probe(plan: dict) -> list[float]:
                tensor = http.InferInput("PLAN", [1], "BYTES")
                tensor.set_data_from_numpy(np.array([json.dumps(plan).encode()], np.object_))
                result = client.infer("bls_probe", [tensor])
                return [float(s) for s in result.as_numpy("SECONDS")]

            echo = {}
            for case, (bytes_in, bytes_out) in ECHO_CASES.items():
                plan = {"model": "echo", "bytes_in": bytes_in, "bytes_out": bytes_out}
                bls = probe({**plan, "repeat": args.repeat})
                source = np.ones(max(bytes_in + bytes_out, 4) // FLOAT_BYTES, np.float32)
                copy = timed(
                    functools.partial(np.copyto, np.empty_like(source), source), args.repeat
                )
                echo[case] = {
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "bls": summary(bls),
                    "memcpy_in_process": summary(copy),
                }
                print(f"echo {case:17} BLS {echo[case]['bls']}  memcpy {summary(copy)}")
            record["echo"] = echo

            in_process = OnnxVideoNetworks(
                args.export_dir, networks=NETWORK_MODELS, allow_spinning=False
            )
            networks = {}
            for network, sizes in NETWORK_CASES.items():
                plan = {"model": network, "sizes": sizes}
                inputs, _ = call_inputs(plan)
                local = timed(functools.partial(in_process.run, network, inputs), args.repeat)
                bls = probe({**plan, "repeat": args.repeat})
                networks[network] = {
                    "sizes": sizes,
                    "bls": summary(bls),
                    "in_process": summary(local),
                    "bls_minus_in_process_ms": round(
                        statistics.median(bls) * 1e3 - statistics.median(local) * 1e3, 3
                    ),
                }
                print(f"{network:22} BLS {summary(bls)}  in process {summary(local)}")
            record["networks"] = networks
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
