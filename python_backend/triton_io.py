"""Glue between Triton's Python backend and the plain functions of python_backend/.

Only the `model.py` files import this module (it needs `triton_python_backend_utils`, which
exists inside the Python-backend stub alone). It reads inputs and parameters, and turns
`InputError` into a per-request INVALID_ARG response so that one bad request never fails the
others of a batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import triton_python_backend_utils as pb_utils

from sam2_triton.configs import RequestLimits
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.images import check_raw_image, decode_image
from sam2_triton.python_backend.metrics import MetricSpec, ModelMetrics
from sam2_triton.python_backend.prompts import DecoderPrompts, prepare_prompts
from sam2_triton.python_backend.stub_process import skip_teardown_at_exit
from sam2_triton.python_backend.video.sequences import SequenceId, check_sequence_id
from sam2_triton.wire import BOXES, IMAGE, IMAGE_RAW, MASK_INPUT, POINT_COORDS, POINT_LABELS

if TYPE_CHECKING:
    import torch

log = logging.getLogger("sam2_triton.model")
skip_teardown_at_exit()  # a stopping server's stubs exit at once (stub_process.py)


def model_parameters(args: dict[str, str]) -> dict[str, str]:
    """`parameters` of the model's config.pbtxt as plain strings."""
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in (config.get("parameters") or {}).items()}


def optional_input(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def required_input(request, name: str) -> np.ndarray:
    array = optional_input(request, name)
    if array is None:
        raise InputError(f"input {name} is required")
    return array


def scalar(request, name: str, default, kind: type):
    """A [1]-shaped input as a Python scalar of `kind`, or `default` when absent."""
    array = optional_input(request, name)
    if array is None:
        return default
    if array.size != 1:
        raise InputError(f"{name} must hold exactly one value, got shape {list(array.shape)}")
    value = array.reshape(-1)[0]
    if kind is str:
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    if kind is float and not np.isfinite(value):
        raise InputError(f"{name} is {value}: must be finite")
    return kind(value)


def read_image(request, limits: RequestLimits) -> np.ndarray:
    """Exactly one of IMAGE (encoded bytes [1]) and IMAGE_RAW (uint8 [H, W, 3]) -> RGB uint8."""
    return image_of(optional_input(request, IMAGE), optional_input(request, IMAGE_RAW), limits)


def image_of(
    encoded: np.ndarray | None, raw: np.ndarray | None, limits: RequestLimits
) -> np.ndarray:
    """`read_image` of the IMAGE / IMAGE_RAW arrays (None: not sent) -> RGB uint8."""
    if (encoded is None) == (raw is None):
        raise InputError(
            "send exactly one of IMAGE (encoded bytes) and IMAGE_RAW (uint8 [height, width, 3])"
            if encoded is None
            else "IMAGE and IMAGE_RAW were both sent: send one"
        )
    if raw is not None:
        return check_raw_image(raw, limits.max_image_pixels)
    assert encoded is not None  # exactly one of the two was sent (checked above)
    if encoded.size != 1:
        raise InputError(f"IMAGE must hold exactly one encoded image, got {encoded.size} elements")
    data = encoded.reshape(-1)[0]
    if not isinstance(data, bytes):
        data = bytes(data)
    return decode_image(data, limits.max_image_bytes, limits.max_image_pixels)


def read_optional_image(request, limits: RequestLimits) -> np.ndarray | None:
    """RGB uint8 of IMAGE / IMAGE_RAW, or None when the request carries neither."""
    if optional_input(request, IMAGE) is None and optional_input(request, IMAGE_RAW) is None:
        return None
    return read_image(request, limits)


def sequence_controls(request) -> tuple[SequenceId, bool, bool]:
    """(sequence id, START, END) of a sequence-batched request: the request's correlation id
    (int or str, whole; no CORRID control, which Triton 2.51 fills with the first bytes of a
    string id) and the START / END control inputs of the model's sequence_batching."""
    try:
        sequence_id = check_sequence_id(request.correlation_id())
    except UnicodeDecodeError:
        raise InputError("string sequence ids must be UTF-8") from None
    start = bool(required_input(request, "START").reshape(-1)[0])
    end = bool(required_input(request, "END").reshape(-1)[0])
    return sequence_id, start, end


def has_prompts(request) -> bool:
    return any(
        pb_utils.get_input_tensor_by_name(request, name) is not None
        for name in (POINT_COORDS, POINT_LABELS, BOXES, MASK_INPUT)
    )


def read_prompts(request, original_size: Sequence[int], limits: RequestLimits) -> DecoderPrompts:
    return prepare_prompts(
        (int(original_size[0]), int(original_size[1])),
        limits,
        point_coords=optional_input(request, POINT_COORDS),
        point_labels=optional_input(request, POINT_LABELS),
        boxes=optional_input(request, BOXES),
        mask_input=optional_input(request, MASK_INPUT),
    )


def response(outputs: dict[str, np.ndarray]):
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, array) for name, array in outputs.items()]
    )


def error_response(message: str, invalid_argument: bool = True):
    code = pb_utils.TritonError.INVALID_ARG if invalid_argument else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def respond_each(
    requests: list,
    handle: Callable[[object], dict[str, np.ndarray]],
    model: str,
    metrics: ModelMetrics | None = None,
) -> list:
    """One response per request: outputs of `handle`, INVALID_ARG for InputError, INTERNAL
    (logged with traceback) for anything else; each refusal counted in `metrics` by reason."""
    outcomes: list[dict[str, np.ndarray] | Exception] = []
    for request in requests:
        try:
            outcomes.append(handle(request))
        except Exception as exc:
            outcomes.append(exc)
    return respond_outcomes(outcomes, model, metrics)


def respond_outcomes(
    outcomes: Sequence[dict[str, np.ndarray] | Exception],
    model: str,
    metrics: ModelMetrics | None = None,
) -> list:
    """One response per outcome (a request's outputs, or the exception that failed it alone):
    the outputs, INVALID_ARG for InputError, INTERNAL (logged with traceback) for anything
    else; each refusal counted in `metrics` by reason."""
    responses = []
    for outcome in outcomes:
        if isinstance(outcome, InputError):
            responses.append(error_response(str(outcome)))
            if metrics is not None:
                metrics.refused(outcome.reason)
        elif isinstance(outcome, Exception):  # a bug or a failed network call: report, serve on
            log.error("%s: request failed", model, exc_info=outcome)
            responses.append(
                error_response(
                    f"{model}: internal error: {type(outcome).__name__}: {outcome}", False
                )
            )
            if metrics is not None:
                metrics.refused("internal")
        else:
            responses.append(response(outcome))
    return responses


def model_metrics(specs: Sequence[MetricSpec], model: str) -> ModelMetrics:
    """The model's Prometheus metrics through Triton's custom-metrics API."""
    return ModelMetrics(pb_utils, specs, model)


class NetworkCallError(RuntimeError):
    """A BLS call to a network model failed."""


def call_model_on_device(
    model_name: str,
    inputs: Mapping[str, torch.Tensor],
    outputs: Sequence[str],
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """BLS over DLPack: run `model_name` on torch tensors, return the requested outputs as torch
    tensors on `device`.

    Inputs are handed over by DLPack (Triton refuses strided tensors, so broadcast views are made
    contiguous first); CUDA inputs stay on the GPU. The outputs are asked for in `device`'s
    memory (`preferred_memory`) and wrapped by DLPack, so on a GPU no tensor passes through the
    host; on CPU they are views of the response's shared memory.
    """
    import torch

    dense = {name: tensor.contiguous() for name, tensor in inputs.items()}  # alive until exec
    options = {}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        options["preferred_memory"] = pb_utils.PreferredMemory(
            pb_utils.TRITONSERVER_MEMORY_GPU, index
        )
    request = pb_utils.InferenceRequest(
        model_name=model_name,
        inputs=[pb_utils.Tensor.from_dlpack(name, tensor) for name, tensor in dense.items()],
        requested_output_names=list(outputs),
        **options,
    )
    result = request.exec()
    if result.has_error():
        raise NetworkCallError(f"{model_name}: {result.error().message()}")
    tensors = {}
    for name in outputs:
        output = pb_utils.get_output_tensor_by_name(result, name)
        if output is None:
            raise NetworkCallError(f"{model_name}: the response has no output {name}")
        tensors[name] = torch.from_dlpack(output.to_dlpack()).to(device)
    return tensors


class BlsVideoNetworks:
    """`VideoNetworks` (python_backend/video/networks.py) over BLS calls to the network models:
    torch tensors on `device` in and out, passed by DLPack (`call_model_on_device`)."""

    DECODER_OUTPUTS = ("masks", "iou_scores", "object_pointers", "object_score_logits")

    def __init__(self, device: str | torch.device = "cpu") -> None:
        from sam2_triton.python_backend.video.device import resolve_device

        self.device = resolve_device(device)

    def _call(self, model: str, inputs: Mapping[str, torch.Tensor], outputs: Sequence[str]):
        return call_model_on_device(model, inputs, outputs, self.device)

    def encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._call("image_encoder", {"image": image}, BlsImageNetworks.ENCODER_OUTPUTS)

    def decode(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._call("mask_decoder", inputs, self.DECODER_OUTPUTS)

    def encode_memory(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._call("memory_encoder", inputs, ("memory_features",))

    def attend(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._call("memory_attention", inputs, ("conditioned_features",))


class BlsImageNetworks:
    """`ImageNetworks` (python_backend/image_predictor.py) over BLS calls to the network
    models: torch tensors on `device` in and out, passed by DLPack (`call_model_on_device`)."""

    ENCODER_OUTPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1")
    DECODER_OUTPUTS = ("masks", "iou_scores")

    def __init__(
        self,
        device: str | torch.device = "cpu",
        encoder_model: str = "image_encoder",
        decoder_model: str = "mask_decoder",
    ) -> None:
        from sam2_triton.python_backend.video.device import resolve_device

        self.device = resolve_device(device)
        self.encoder_model = encoder_model
        self.decoder_model = decoder_model

    def encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return call_model_on_device(
            self.encoder_model, {"image": image}, self.ENCODER_OUTPUTS, self.device
        )

    def decode(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return call_model_on_device(self.decoder_model, inputs, self.DECODER_OUTPUTS, self.device)


class InProcessDecoderNetworks(BlsImageNetworks):
    """Image encoder over BLS, mask decoder in this process (ONNX Runtime on CPU).

    For CPU deployments: a click then costs the decoder alone, without shipping the cached
    16 MiB of embeddings through shared memory to the mask_decoder model and back.
    """

    def __init__(self, export_dir, encoder_model: str = "image_encoder") -> None:
        from sam2_triton.python_backend.video.networks import OnnxVideoNetworks

        super().__init__("cpu", encoder_model=encoder_model)
        self.decoder = OnnxVideoNetworks(
            export_dir, networks=("mask_decoder",), allow_spinning=False
        )

    def decode(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.decoder.decode(inputs)


def serving_device(args: dict[str, str], parameters: dict[str, str]) -> torch.device:
    """The device a Python model works on: its `device` parameter ("gpu": the GPU of this
    instance, `model_instance_device_id`; else cpu)."""
    from sam2_triton.python_backend.video.device import resolve_device

    if parameters.get("device", "cpu") == "gpu":
        return resolve_device(f"cuda:{int(args['model_instance_device_id'])}")
    return resolve_device("cpu")


def image_networks(
    parameters: dict[str, str], version_dir, device: torch.device | None = None
) -> BlsImageNetworks:
    """The networks a BLS model uses, as its `decoder` parameter says: "bls" (the mask_decoder
    model) or "in_process" (an ONNX Runtime session here, CPU deployments; version_dir holds
    the graph); tensors on `device` (default cpu)."""
    if parameters.get("decoder", "bls") == "in_process":
        if device is not None and device.type != "cpu":
            raise ValueError("the in-process decoder runs on CPU deployments only")
        return InProcessDecoderNetworks(version_dir)
    return BlsImageNetworks(device or "cpu")
