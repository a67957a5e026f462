"""Build a ready-to-serve Triton model repository from templates, configs and an export.

    build_repository("artifacts/tiny", "build/model_repository", get_profile("cpu"))

Inputs: the committed templates in `model_repository/` (`config.pbtxt.in` + Python-backend
`model.py` files), the deployment profile (how networks are served, engine shapes, instance
kinds), `configs/serving.yaml` (limits, cache size, generator defaults) and the export
directory (graphs + metadata.json; TensorRT plans under engines/<profile>/). Network configs get
their inputs and outputs from the I/O contract (export/contract.py), so they cannot drift from
the graphs. Design notes (the models, how they call each other, limits): docs/serving.md
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam2_triton.configs import (
    NETWORKS,
    DeploymentProfile,
    RequestLimits,
    dataclass_parameters,
    load_serving_settings,
)
from sam2_triton.errors import ConfigError, ExportError
from sam2_triton.export.contract import CONTRACTS, GraphContract, TensorSpec
from sam2_triton.export.metadata import METADATA_FILE, load_metadata
from sam2_triton.python_backend.samurai import SamuraiSettings
from sam2_triton.python_backend.video.sequences import VideoSettings
from sam2_triton.wire import SAMURAI_SETTINGS

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "model_repository"
MARKER_FILE = "sam2_triton_repository.json"
BATCHING_NETWORKS = ("image_encoder",)  # leading axis is a request batch: dynamic batching

TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}


@dataclass(frozen=True)
class PythonModel:
    """A Python-backend model from the templates and what its version folder needs."""

    name: str
    needs_metadata: bool
    # groups: "limits", "cache", "generator", "decoder", "video", "prompts_required", "device"
    # ("device": the model keeps its tensors on the serving device, a GPU of its own instance
    # on GPU profiles)
    parameters: tuple[str, ...]
    template: str = ""  # folder of model_repository/ it is made from, when not `name`


PYTHON_MODELS = (
    PythonModel("preprocess_image", False, ("limits",)),
    # segment's first step: preprocess_image refusing a request without prompts, so that the
    # image encoder never runs for it (encode_image's step takes images alone).
    PythonModel("preprocess_segment", False, ("limits", "prompts_required"), "preprocess_image"),
    PythonModel("preprocess_prompts", True, ("limits",)),
    PythonModel("postprocess_masks", True, ("limits",)),
    PythonModel("segment_interactive", True, ("limits", "cache", "decoder", "device")),
    PythonModel("automatic_mask_generator", True, ("limits", "generator", "decoder", "device")),
    PythonModel("track_video", True, ("limits", "video", "device")),
)
# Engine axes that bound the objects of one video frame (all go through each network at once).
OBJECT_AXES = (
    ("memory_attention", "batch"),
    ("memory_encoder", "batch"),
    ("mask_decoder", "num_prompts"),
)
ENSEMBLES = ("segment", "encode_image", "decode_masks")


def template_dir() -> Path:
    """model_repository/ of the source tree, or the installed package's copy."""
    if (TEMPLATE_DIR / "network" / "config.pbtxt.in").is_file():
        return TEMPLATE_DIR
    from sam2_triton import model_repository

    return Path(model_repository.__file__).resolve().parent


def render(template: Path, **values: str) -> str:
    """Fill `${name}` placeholders; blank lines left by empty values are dropped."""
    text = string.Template(template.read_text(encoding="utf-8")).substitute(values)
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


def _parameters(values: dict[str, str]) -> str:
    if not values:
        return ""
    entries = ",\n".join(
        f'  {{ key: "{k}" value: {{ string_value: {json.dumps(str(v))} }} }}'
        for k, v in values.items()
    )
    return f"parameters [\n{entries}\n]"


def _dims(spec: TensorSpec, batching: bool) -> list[int]:
    shape = spec.shape[1:] if batching else spec.shape
    return [d if isinstance(d, int) else -1 for d in shape]


def _tensors(kind: str, specs: Iterable[TensorSpec], batching: bool) -> str:
    entries = ",\n".join(
        f'  {{ name: "{s.name}" data_type: {TRITON_DTYPES[s.dtype]} dims: {_dims(s, batching)} }}'
        for s in specs
    )
    return f"{kind} [\n{entries}\n]"


def _instance_group(kind: str, count: int = 1, gpus: tuple[int, ...] | None = None) -> str:
    """One instance group; KIND_GPU without `gpus` means `count` instances on every GPU."""
    placement = f" gpus: [ {', '.join(str(g) for g in gpus)} ]" if gpus is not None else ""
    return f"instance_group [ {{ count: {count} kind: {kind}{placement} }} ]"


def _warmup(contract: GraphContract, profile: DeploymentProfile, batching: bool) -> str:
    """One zero-filled request at the profile's minimum shapes (the first real request then
    does not pay for session / engine initialisation)."""
    sizes = {axis: profile.axis_range(contract.name, axis)[0] for axis in contract.axis_names}
    inputs = []
    for spec in contract.inputs:
        dims = list(spec.concrete_shape(sizes))[1 if batching else 0 :]
        inputs.append(
            f'    inputs {{ key: "{spec.name}" value: {{ data_type: {TRITON_DTYPES[spec.dtype]} '
            f"dims: {dims} zero_data: true }} }}"
        )
    body = "\n".join(inputs)
    return f'model_warmup [ {{\n    name: "zeros"\n    batch_size: 1\n{body}\n  }} ]'


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class RepositoryBuilder:
    """Writes one repository; see `build_repository`."""

    def __init__(
        self,
        export_dir: Path,
        output: Path,
        profile: DeploymentProfile,
        engine_dir: Path | None,
        checkpoint: Path | None,
        warmup: bool,
        limits: RequestLimits | None = None,
        video: VideoSettings | None = None,
    ) -> None:
        self.export_dir = export_dir
        self.output = output
        self.profile = profile
        self.engine_dir = engine_dir or export_dir / "engines" / profile.name
        self.checkpoint = checkpoint
        self.warmup = warmup
        self.templates = template_dir()
        self.metadata = load_metadata(export_dir)
        self.limits = limits or RequestLimits.for_profile(profile)
        self.settings = load_serving_settings()
        self.video = video or VideoSettings.from_mapping(self.settings["video"])
        self.on_gpu = profile.device == "gpu"
        # On CPU-only Python-backend deployments the BLS models run the (small) mask decoder
        # themselves, next to the embeddings they hold; elsewhere they call mask_decoder.
        self.decoder_in_process = (
            profile.triton_backend == "python"
            and profile.runtime == "onnxruntime"
            and not self.on_gpu
        )

    # -- networks ------------------------------------------------------------------------
    def network(self, name: str) -> None:
        contract = CONTRACTS[name]
        batching = name in BATCHING_NETWORKS
        backend = self.profile.triton_backend
        version = self.output / name / "1"
        version.mkdir(parents=True)
        parameters: dict[str, str] = {}
        if backend == "python":
            backend_line = 'backend: "python"'
            shutil.copy2(self.templates / "network" / "1" / "model.py", version / "model.py")
            parameters = {
                "network": name,
                "runtime": self.profile.runtime,
                "intra_op_threads": "0",
                # CPU: idle ONNX Runtime threads sleep, leaving the cores to the
                # other models' processes.
                "allow_spinning": "1" if self.on_gpu else "0",
            }
            if self.profile.runtime == "torch":
                if self.checkpoint is None or not self.checkpoint.is_file():
                    raise ConfigError(
                        f"profile {self.profile.name!r} runs the official modules in PyTorch: "
                        f"give --checkpoint (the file the export was made from)"
                    )
                parameters.update(
                    checkpoint=str(self.checkpoint.resolve()), model=self.metadata["model"]["name"]
                )
            else:
                _link_or_copy(self.export_dir / contract.file, version / contract.file)
            _link_or_copy(self.export_dir / METADATA_FILE, version / METADATA_FILE)
        elif backend == "onnxruntime":
            backend_line = 'backend: "onnxruntime"'
            _link_or_copy(self.export_dir / contract.file, version / "model.onnx")
        else:  # tensorrt_plan
            backend_line = 'platform: "tensorrt_plan"'
            plan = self.engine_dir / f"{name}.plan"
            if not plan.is_file():
                raise ExportError(
                    f"{plan} not found: build the engines first "
                    f"(sam2-triton build-engines --model-dir {self.export_dir} "
                    f"--profile {self.profile.name})"
                )
            _link_or_copy(plan, version / "model.plan")
        max_batch = self.profile.axis_range(name, "batch")[2] if batching else 0
        text = render(
            self.templates / "network" / "config.pbtxt.in",
            network=name,
            doc=contract.doc,
            profile=self.profile.name,
            backend=backend_line,
            max_batch_size=str(max_batch),
            inputs=_tensors("input", contract.inputs, batching),
            outputs=_tensors("output", contract.outputs, batching),
            batching=(
                f"dynamic_batching {{ max_queue_delay_microseconds: {2000 if self.on_gpu else 0} }}"
                if batching
                else ""
            ),
            instance_group=_instance_group("KIND_GPU" if self.on_gpu else "KIND_CPU"),
            warmup=_warmup(contract, self.profile, batching) if self.warmup else "",
            parameters=_parameters(parameters),
        )
        (self.output / name / "config.pbtxt").write_text(text, encoding="utf-8")

    # -- Python models and ensembles -----------------------------------------------------
    def python_model(self, model: PythonModel) -> None:
        version = self.output / model.name / "1"
        version.mkdir(parents=True)
        template = self.templates / (model.template or model.name)
        shutil.copy2(template / "1" / "model.py", version / "model.py")
        if model.needs_metadata:
            _link_or_copy(self.export_dir / METADATA_FILE, version / METADATA_FILE)
        parameters: dict[str, str] = {}
        if "limits" in model.parameters:
            parameters.update(dataclass_parameters(self.limits))
        if "prompts_required" in model.parameters:
            parameters["prompts_required"] = "1"
        if "cache" in model.parameters:
            parameters["embedding_cache_bytes"] = str(
                int(self.settings["embedding_cache"]["max_bytes"])
            )
        if "generator" in model.parameters:
            parameters["generator_defaults"] = json.dumps(self.settings["automatic_mask_generator"])
        if "video" in model.parameters:
            parameters.update(dataclass_parameters(self.video_settings()))
            parameters["samurai_defaults"] = json.dumps(
                dataclasses.asdict(SamuraiSettings.load(model=self.metadata["model"]["name"]))
            )
            # the networks' precision: part of the model identity sequence snapshots carry
            parameters["precision"] = self.profile.precision
            parameters["video_batch_limits"] = json.dumps(self.video_batch_limits())
        if "decoder" in model.parameters:
            parameters["decoder"] = "in_process" if self.decoder_in_process else "bls"
            if self.decoder_in_process:
                _link_or_copy(
                    self.export_dir / CONTRACTS["mask_decoder"].file,
                    version / CONTRACTS["mask_decoder"].file,
                )
        kind, gpus = "KIND_CPU", None
        if "device" in model.parameters:
            # GPU profiles: instances on GPUs, working on their GPU's memory
            # (triton_io.serving_device); the network models' outputs reach them by DLPack.
            # track_video's sequences stay on one instance (the sequence batcher's rule), so
            # it gets one on each GPU; the embedding cache is one instance's memory, which
            # every IMAGE_ID request must reach: the first GPU's alone.
            parameters["device"] = "gpu" if self.on_gpu else "cpu"
            if self.on_gpu:
                kind, gpus = "KIND_GPU", ((0,) if "cache" in model.parameters else None)
        # Pre/post-processing is CPU work: on a GPU server two instances overlap requests.
        count = 2 if self.on_gpu and model.name.startswith(("preprocess", "postprocess")) else 1
        text = render(
            template / "config.pbtxt.in",
            profile=self.profile.name,
            instance_group=_instance_group(kind, count, gpus),
            parameters=_parameters(parameters),
            **self.video_template_values(),
        )
        (self.output / model.name / "config.pbtxt").write_text(text, encoding="utf-8")

    def video_settings(self) -> VideoSettings:
        """serving.yaml's `video` section (or the one given), capped by the engines' shapes:
        objects by the object axes; prompted frames per object by memory attention's
        num_memories (they come with num_maskmem - 1 recent memories) and num_pointers (with
        max_obj_ptrs_in_encoder - 1 recent pointers)."""
        objects = min(self.profile.axis_range(network, axis)[2] for network, axis in OBJECT_AXES)
        settings = self.metadata["settings"]
        prompted = min(
            self.profile.axis_range("memory_attention", "num_memories")[2]
            - (int(settings["num_maskmem"]) - 1),
            self.profile.axis_range("memory_attention", "num_pointers")[2]
            - (int(settings["max_obj_ptrs_in_encoder"]) - 1),
        )
        if prompted < 1:
            raise ConfigError(
                f"profile {self.profile.name}: memory_attention's num_memories / num_pointers "
                "leave no room for a conditioning frame"
            )
        return dataclasses.replace(
            self.video,
            max_objects=min(self.video.max_objects, objects),
            max_prompted_frames=min(self.video.max_prompted_frames, prompted),
        )

    def video_batch_limits(self) -> dict[str, int]:
        """Rows one call of each network may hold when track_video batches the frames of
        several sequences (batching.BatchLimits): the engines' batch axes."""
        axes = {"image_encoder": "batch", "mask_decoder": "num_prompts"}
        return {
            network: self.profile.axis_range(network, axes.get(network, "batch"))[2]
            for network in ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")
        }

    def video_template_values(self) -> dict[str, str]:
        """Placeholders of track_video's config (ignored by the other templates)."""
        settings = self.video_settings()
        samurai_inputs = ",\n".join(
            f'  {{ name: "{name}" data_type: {TRITON_DTYPES[np.dtype(dtype).name]} dims: [ 1 ] '
            "optional: true }"
            for name, dtype in SAMURAI_SETTINGS.values()
        )
        return {
            "max_sequence_idle_microseconds": str(int(round(settings.idle_timeout_s * 1e6))),
            "triton_sequence_slots": str(settings.triton_sequence_slots),
            "max_batch_frames": str(settings.max_batch_frames),
            "batch_queue_delay_us": str(settings.batch_queue_delay_us),
            "samurai_inputs": samurai_inputs,
        }

    def ensemble(self, name: str) -> None:
        (self.output / name / "1").mkdir(parents=True)
        text = render(self.templates / name / "config.pbtxt.in", profile=self.profile.name)
        (self.output / name / "config.pbtxt").write_text(text, encoding="utf-8")

    def build(self) -> Path:
        for name in NETWORKS:
            self.network(name)
        for model in PYTHON_MODELS:
            self.python_model(model)
        for name in ENSEMBLES:
            self.ensemble(name)
        marker = {
            "model": self.metadata["model"]["name"],
            "profile": self.profile.name,
            "export_dir": str(self.export_dir.resolve()),
            "checkpoint": self.metadata["model"].get("checkpoint"),
            "models": sorted(p.name for p in self.output.iterdir() if p.is_dir()),
        }
        (self.output / MARKER_FILE).write_text(
            json.dumps(marker, indent=1) + "\n", encoding="utf-8"
        )
        return self.output


def build_repository(
    export_dir: os.PathLike,
    output: os.PathLike,
    profile: DeploymentProfile,
    *,
    engine_dir: os.PathLike | None = None,
    checkpoint: os.PathLike | None = None,
    warmup: bool = True,
    limits: RequestLimits | None = None,
    video: VideoSettings | None = None,
) -> Path:
    """Write the repository for `profile` into `output` and return its path.

    `limits` replaces the request limits of configs/serving.yaml + the profile, `video` its
    video settings (tests use them).
    `output` is replaced if it is a repository this function wrote before (it holds
    MARKER_FILE) or is empty; any other existing folder is refused.
    """
    export_dir, output = Path(export_dir), Path(output)
    if output.exists():
        if not output.is_dir() or (any(output.iterdir()) and not (output / MARKER_FILE).is_file()):
            raise ConfigError(
                f"{output} exists and is not a repository built by sam2-triton: choose another "
                f"--output or remove it"
            )
        shutil.rmtree(output)
    output.mkdir(parents=True)
    builder = RepositoryBuilder(
        export_dir,
        output,
        profile,
        Path(engine_dir) if engine_dir else None,
        Path(checkpoint) if checkpoint else None,
        warmup,
        limits,
        video,
    )
    try:
        return builder.build()
    except BaseException:
        shutil.rmtree(output, ignore_errors=True)
        raise
