"""Model sizes and deployment profiles, read from the YAML files beside this module.

Every command gets model facts (config name, checkpoint file, download address, checksum) and
deployment knobs (runtime, precision, engine shapes) from here, so they are named once.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sam2_triton.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent
MODELS_FILE = CONFIG_DIR / "models.yaml"
PROFILES_FILE = CONFIG_DIR / "profiles.yaml"

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
RUNTIMES = ("onnxruntime", "tensorrt", "torch")
# How network models are served: runtime -> Triton backends that can run it.
TRITON_BACKENDS = {
    "onnxruntime": ("python", "onnxruntime"),
    "tensorrt": ("tensorrt_plan",),
    "torch": ("python",),
}
DEVICES = ("cpu", "gpu")
NETWORKS = ("image_encoder", "mask_decoder", "memory_encoder", "memory_attention")

# Axis ranges are [min, opt, max].
AxisRange = tuple[int, int, int]


@dataclass(frozen=True)
class ModelSpec:
    """One official SAM 2 checkpoint and the `sam2` config that builds it."""

    name: str
    family: str  # "sam2.1" or "sam2.0"
    config: str  # Hydra config name inside the installed `sam2` package
    checkpoint: str  # official file name
    url: str
    sha256: str
    size: int  # bytes
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploymentProfile:
    """How the networks run (runtime, device, precision) and the shapes they accept."""

    name: str
    description: str
    runtime: str
    device: str
    precision: str
    triton_backend: str = "python"
    engine_shapes: dict[str, dict[str, AxisRange]] = field(default_factory=dict)

    def axis_range(self, network: str, axis: str) -> AxisRange:
        try:
            return self.engine_shapes[network][axis]
        except KeyError:
            raise ConfigError(
                f"profile {self.name!r} has no engine shape for axis {axis!r} of {network!r}"
            ) from None


def read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


@functools.cache
def load_models(path: Path = MODELS_FILE) -> dict[str, ModelSpec]:
    """All model sizes by canonical name."""
    entries = read_yaml(path).get("models") or {}
    specs = {}
    for name, entry in entries.items():
        try:
            specs[name] = ModelSpec(
                name=name,
                family=str(entry["family"]),
                config=str(entry["config"]),
                checkpoint=str(entry["checkpoint"]),
                url=str(entry["url"]),
                sha256=str(entry["sha256"]).lower(),
                size=int(entry["size"]),
                aliases=tuple(entry.get("aliases") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: model {name!r} is malformed ({exc!r})") from exc
    return specs


def model_names() -> list[str]:
    return list(load_models())


def get_model(name: str) -> ModelSpec:
    """Look a size up by canonical name or alias (case-insensitive)."""
    wanted = name.strip().lower()
    for spec in load_models().values():
        if wanted == spec.name or wanted in (a.lower() for a in spec.aliases):
            return spec
    raise ConfigError(f"unknown model size {name!r}; choose one of: {', '.join(model_names())}")


def _axis_ranges(network: str, axes: dict, path: Path) -> dict[str, AxisRange]:
    ranges = {}
    for axis, value in (axes or {}).items():
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 3
            or not all(isinstance(v, int) for v in value)
            or not 0 <= value[0] <= value[1] <= value[2]
        ):
            raise ConfigError(
                f"{path}: engine shape {network}.{axis} must be [min, opt, max] integers "
                f"with 0 <= min <= opt <= max, got {value!r}"
            )
        ranges[axis] = tuple(value)
    return ranges


@functools.cache
def load_profiles(path: Path = PROFILES_FILE) -> dict[str, DeploymentProfile]:
    """All deployment profiles by name."""
    data = read_yaml(path)
    shapes = {
        network: _axis_ranges(network, axes, path)
        for network, axes in (data.get("engine_shapes") or {}).items()
    }
    unknown = set(shapes) - set(NETWORKS)
    if unknown:
        raise ConfigError(f"{path}: engine_shapes names unknown networks {sorted(unknown)}")
    profiles = {}
    for name, entry in (data.get("profiles") or {}).items():
        entry = entry or {}
        runtime = entry.get("runtime")
        device = entry.get("device")
        precision = entry.get("precision")
        if runtime not in RUNTIMES or device not in DEVICES or precision not in PRECISIONS:
            raise ConfigError(
                f"{path}: profile {name!r} needs runtime in {RUNTIMES}, device in {DEVICES}, "
                f"precision in {PRECISIONS}; got {runtime!r}, {device!r}, {precision!r}"
            )
        if runtime == "tensorrt" and device != "gpu":
            raise ConfigError(f"{path}: profile {name!r}: TensorRT runs on gpu only")
        backend = entry.get("triton_backend", TRITON_BACKENDS[runtime][0])
        if backend not in TRITON_BACKENDS[runtime]:
            raise ConfigError(
                f"{path}: profile {name!r}: runtime {runtime!r} is served by triton_backend "
                f"{' or '.join(TRITON_BACKENDS[runtime])}, not {backend!r}"
            )
        profiles[name] = DeploymentProfile(
            name=name,
            description=" ".join(str(entry.get("description", "")).split()),
            runtime=runtime,
            device=device,
            precision=precision,
            triton_backend=backend,
            engine_shapes=shapes,
        )
    return profiles


def get_profile(name: str) -> DeploymentProfile:
    profiles = load_profiles()
    if name not in profiles:
        raise ConfigError(
            f"unknown deployment profile {name!r}; choose one of: {', '.join(profiles)}"
        )
    return profiles[name]


# -- dataclass settings <-> Triton model-config parameters (strings) ---------------------------

SettingsT = TypeVar("SettingsT")
PARAMETER_TYPES = (int, float, str)  # field types a parameter string converts back to


def field_types(cls: type) -> dict[str, type]:
    """Field name -> type of the dataclass `cls`, in field order. `typing.get_type_hints` resolves
    the annotations (strings under `from __future__ import annotations`) to the types."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def dataclass_parameters(settings: Any) -> dict[str, str]:
    """A dataclass instance -> Triton model-config parameters: field name -> str(value)."""
    return {f.name: str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


def dataclass_from_parameters(cls: type[SettingsT], parameters: Mapping[str, Any]) -> SettingsT:
    """Inverse of `dataclass_parameters`: every field of `cls` from its entry in `parameters`
    (strings, or YAML values), converted to the field's type. KeyError names a missing field."""
    values = {}
    for name, kind in field_types(cls).items():
        if kind not in PARAMETER_TYPES:
            raise TypeError(f"{cls.__name__}.{name}: no parameter form for type {kind!r}")
        values[name] = kind(parameters[name])
    return cls(**values)


SERVING_FILE = CONFIG_DIR / "serving.yaml"


@dataclass(frozen=True)
class RequestLimits:
    """What one request may carry; anything beyond is rejected with INVALID_ARG."""

    max_image_bytes: int
    max_image_pixels: int
    point_margin: float  # fraction of the image size a point may lie outside it
    max_mask_bytes: int  # bool masks one answer may hold: masks x pixels, one byte each
    max_prompts: int  # prompts (objects) per request
    max_points: int  # model points per prompt: clicks + 2 per box

    @classmethod
    def for_profile(cls, profile: DeploymentProfile, path: Path | None = None) -> RequestLimits:
        """Limits from serving.yaml, prompt counts from the profile's decoder engine shapes."""
        settings = load_serving_settings(path or SERVING_FILE)
        limits = settings.get("limits") or {}
        try:
            return cls(
                max_image_bytes=int(limits["max_image_bytes"]),
                max_image_pixels=int(limits["max_image_pixels"]),
                point_margin=float(limits["point_margin"]),
                max_mask_bytes=int(limits["max_mask_bytes"]),
                max_prompts=profile.axis_range("mask_decoder", "num_prompts")[2],
                max_points=profile.axis_range("mask_decoder", "num_points")[2],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path or SERVING_FILE}: limits are malformed ({exc!r})") from exc

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> RequestLimits:
        """The limits a Triton model reads from its config (`dataclass_parameters` wrote them)."""
        try:
            return dataclass_from_parameters(cls, parameters)
        except KeyError as exc:
            raise ConfigError(f"model config lacks parameter {exc}") from None


@functools.cache
def load_serving_settings(path: Path = SERVING_FILE) -> dict:
    """serving.yaml as a mapping (limits, embedding_cache, automatic_mask_generator, video)."""
    data = read_yaml(path)
    for section in ("limits", "embedding_cache", "automatic_mask_generator", "video"):
        if not isinstance(data.get(section), dict):
            raise ConfigError(f"{path}: section {section!r} is missing")
    return data
