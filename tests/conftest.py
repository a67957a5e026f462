"""Shared fixtures: a checkpoint written by the tests, the model loaded from it, its export.

No weights can be downloaded in CI, so the tests write an official-format checkpoint
(`{"model": state_dict}`) from a randomly initialised model whose every parameter is then
perturbed (so zero-initialised biases and unit norms cannot hide a mistake), load it back
through the real loading code, and export from the loaded model. Random weights put every
object at "absent" (object-score logits < 0), which would make every video mask empty; the
object-score head's bias is raised (export.checkpoints.write_random_checkpoint) so that, as with
trained weights, prompted objects are present and tracked masks are not trivially empty.

`SAM2_TRITON_TEST_MODELS` chooses the sizes the fidelity tests run on: a comma-separated
list of names from configs/models.yaml, or "all". Default: tiny.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from sam2_triton.configs import ModelSpec, get_model, model_names

if TYPE_CHECKING:
    from sam2_triton.serving.local_server import LocalTritonServer

TEST_MODELS_ENV = "SAM2_TRITON_TEST_MODELS"


# -- test tiers --------------------------------------------------------------------------------
# Markers follow the fixtures a test uses (directly or through other fixtures), so that a new
# test lands in its tier by itself; tests that start their own server carry `served` explicitly.
#   unit:   -m "not model and not served"  (no weights, no server: about a minute)
#   model:  a written test checkpoint or its ONNX export (`test_checkpoint`, `exported`)
#   served: a real Triton server (the `served` fixture or their own LocalTritonServer)
TIER_FIXTURES = {"test_checkpoint": "model", "exported": "model", "served": "served"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        used = getattr(item, "fixturenames", ())
        for marker in sorted({TIER_FIXTURES[f] for f in used if f in TIER_FIXTURES}):
            item.add_marker(marker)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A test not marked `served` cannot launch tritonserver (in its fixtures either): it
    fails with a message saying to mark it, instead of slowing down the fast tier."""
    if item.get_closest_marker("served"):
        yield
        return
    from sam2_triton.serving.local_server import LocalTritonServer

    def refuse(*args, **kwargs):
        raise RuntimeError(
            f"{item.nodeid} launches tritonserver: mark it @pytest.mark.served "
            "(or use the `served` fixture)"
        )

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalTritonServer, "command", refuse)
        yield


def selected_model_names():
    value = os.environ.get(TEST_MODELS_ENV, "tiny").strip()
    if value == "all":
        return model_names()
    return [get_model(name).name for name in value.split(",") if name.strip()]


class WorstValues:
    """The worst value of each measure per model size over a test session (the measures and
    which way is worse: benchmarks/all_sizes.py, MEASURES). Written as JSON
    ({measure: value}, over all sizes the session ran) to the file named by the environment
    variable benchmarks.all_sizes.RESULTS_ENV at the session's end, when it is set."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def record(self, measure: str, value: float) -> None:
        from sam2_triton.benchmarks.all_sizes import worse

        self.values[measure] = worse(measure, self.values.get(measure), float(value))


@pytest.fixture(scope="session")
def worst_values() -> Iterator[WorstValues]:
    import json

    from sam2_triton.benchmarks.all_sizes import RESULTS_ENV

    values = WorstValues()
    yield values
    path = os.environ.get(RESULTS_ENV)
    if path and values.values:
        Path(path).write_text(json.dumps(values.values, indent=2) + "\n")


@dataclass
class ExportedModel:
    spec: ModelSpec
    checkpoint: Path
    model: torch.nn.Module  # the official SAM2Base, loaded from `checkpoint`
    directory: Path  # graphs + metadata.json


def write_test_checkpoint(spec: ModelSpec, path: Path, seed: int = 0) -> Path:
    from sam2_triton.export.checkpoints import write_random_checkpoint

    with pytest.warns(UserWarning, match="RANDOM weights"):
        return write_random_checkpoint(spec, path, seed)


@pytest.fixture(scope="session")
def test_checkpoint(tmp_path_factory):
    """`test_checkpoint(name)`: path of a checkpoint written for that size (once per session)."""
    written = {}

    def checkpoint_for(name: str) -> Path:
        spec = get_model(name)
        if spec.name not in written:
            root = tmp_path_factory.mktemp(f"checkpoint-{spec.name}")
            written[spec.name] = write_test_checkpoint(spec, root / spec.checkpoint)
        return written[spec.name]

    return checkpoint_for


@pytest.fixture(scope="session", params=selected_model_names())
def exported(request, tmp_path_factory, test_checkpoint) -> Iterator[ExportedModel]:
    """The test checkpoint of a size, its official model and its export. While it is in use,
    the model's SAM2VideoPredictor fills holes (fill_hole_area 8) as it does with SAM 2's CUDA
    extension built: the extension's connected-components kernel is replaced by a CPU one
    (tests/cpu_components.py), as the tracker fills holes by default."""
    from cpu_components import installed

    from sam2_triton.export.checkpoints import build_sam2_model, sha256_file
    from sam2_triton.export.onnx_export import export_model

    spec = get_model(request.param)
    root = tmp_path_factory.mktemp(spec.name)
    checkpoint = test_checkpoint(spec.name)
    model = build_sam2_model(spec, checkpoint=checkpoint)
    directory = root / "export"
    export_model(
        model,
        spec,
        directory,
        checkpoint={
            "file": checkpoint.name,
            "sha256": sha256_file(checkpoint),
            "random_weights": False,
        },
    )
    with installed(int(model.fill_hole_area)):
        yield ExportedModel(spec=spec, checkpoint=checkpoint, model=model, directory=directory)


# -- a real Triton server (the one carried by nvidia-pytriton) on the test export --------------

# Limits of the served test repository: small enough that tests can exceed them cheaply.
SERVED_MAX_IMAGE_PIXELS = 4_000_000
SERVED_MAX_IMAGE_BYTES = 8 * 1024 * 1024
# Video settings of the served test repository: few objects (so "too many" is cheap to send),
# an idle timeout longer than any test waits between two frames of a sequence.
SERVED_VIDEO_SETTINGS = dict(
    max_objects=4,
    max_prompted_frames=10,
    max_sequences=8,
    idle_timeout_s=600.0,
    preprocessing="video",
    memory_storage="bfloat16",
    max_snapshot_bytes=64 * 1024 * 1024,
)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServedModel:
    exported: ExportedModel
    repository: Path
    http_url: str
    grpc_url: str
    server: object  # LocalTritonServer


@pytest.fixture(scope="session")
def served(exported, tmp_path_factory) -> ServedModel:
    """The CPU-profile repository for the test export, served for the whole session."""
    import dataclasses

    from sam2_triton.configs import RequestLimits, get_profile
    from sam2_triton.python_backend.video.sequences import VideoSettings
    from sam2_triton.serving.repository import build_repository

    profile = get_profile("cpu")
    limits = dataclasses.replace(
        RequestLimits.for_profile(profile),
        max_image_pixels=SERVED_MAX_IMAGE_PIXELS,
        max_image_bytes=SERVED_MAX_IMAGE_BYTES,
    )
    root = tmp_path_factory.mktemp("served")
    repository = build_repository(
        exported.directory,
        root / "model_repository",
        profile,
        warmup=False,
        limits=limits,
        video=VideoSettings(**SERVED_VIDEO_SETTINGS),
    )
    with running_server(repository, root) as server:
        yield ServedModel(exported, repository, server.http_url, server.grpc_url, server)


@contextlib.contextmanager
def running_server(repository: Path, root: Path) -> Iterator[LocalTritonServer]:
    """A LocalTritonServer on `repository`, on free loopback ports, logging into `root`;
    stopped on exit (its exit status printed)."""
    from sam2_triton.serving.local_server import LocalTritonServer

    server = LocalTritonServer(
        repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_file=root / "tritonserver.log",
    )
    server.start(timeout_s=600)
    try:
        yield server
    finally:
        code = server.stop()
        print(f"\ntritonserver stopped with exit status {code}; log: {server.log_file}")
