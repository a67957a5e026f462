"""A stand-in for `triton_python_backend_utils`, so the Triton glue runs without a server.

Inside Triton, `python_backend/triton_io.py` and the `model_repository/*/1/model.py` files
import `triton_python_backend_utils` (pb_utils), which only the Python-backend stub provides.
`install()` puts this module in `sys.modules` under that name. It implements what the glue uses,
with the semantics of the Python backend (Triton 2.51):

- `Tensor(name, array)`: `name()`, `as_numpy()`. The array is copied, as into Triton's shared
  memory; a dtype without a Triton type (str, complex, ...) is refused; BYTES tensors (object or
  `np.bytes_` arrays) reach the receiver as object arrays of `bytes` (other objects as the
  UTF-8 of their `str`), as through `serialize_byte_tensor`.
- `Tensor.from_dlpack(name, tensor)` (a DLPack capsule or an object with `__dlpack__`; refused
  unless C-contiguous, as Triton refuses strided and broadcast tensors), `to_dlpack()`,
  `is_cpu()`. The stand-in holds CPU memory only: a tensor made from a device tensor is copied to
  the host, which Triton would not do.
- `InferenceRequest(model_name=..., inputs=[Tensor], requested_output_names=[...],
  correlation_id=0, preferred_memory=None)`: requests given to `execute` (`inputs()`,
  `correlation_id()`: the sequence id, an int or a str as the client sent it) and BLS requests
  (`exec()`). `exec()` hands the request to `bls_handler` (tests set it; `answer_with` builds
  one) and returns its response: a failed call is a response with an error, not an exception.
- `InferenceResponse(output_tensors=[...], error=None)`: `output_tensors()`, `has_error()`,
  `error()`.
- `TritonError(message, code=TritonError.INTERNAL)`: `message()`, `code()`; the codes are
  TRITONSERVER_Error_Code's.
- `PreferredMemory(memory_type, device_id)` with `TRITONSERVER_MEMORY_CPU` / `_GPU`: where a
  BLS call asks for its outputs (kept on the request as `preferred_memory()` for tests).
- `get_input_tensor_by_name`, `get_output_tensor_by_name` (None when absent),
  `triton_string_to_numpy`.
- `MetricFamily(name, description, kind)` (COUNTER / GAUGE) and its `Metric(labels)` with
  `set` / `increment`; `MetricFamily.registry` holds every family by name for tests.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

MODULE_NAME = "triton_python_backend_utils"

TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}
# numpy dtypes with a Triton data type (numpy_to_triton_type): the above and np.bytes_.
_NUMERIC_DTYPES = {np.dtype(t) for t in TRITON_STRING_TO_NUMPY.values()} - {np.dtype(object)}


def triton_string_to_numpy(triton_type_string: str) -> type:
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def _bytes_element(value: object) -> bytes:
    return value if type(value) is bytes else str(value).encode("utf-8")


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("Tensor name cannot be an empty string.")
        if not isinstance(array, np.ndarray):
            raise TypeError(f"Tensor {name}: expected a numpy array, got {type(array).__name__}")
        if array.dtype == np.object_ or array.dtype.type == np.bytes_:
            flat = [_bytes_element(v) for v in array.reshape(-1).tolist()]
            stored = np.empty(len(flat), dtype=np.object_)
            stored[:] = flat
            self._array = stored.reshape(array.shape)
        elif array.dtype in _NUMERIC_DTYPES:
            self._array = np.array(array, copy=True, order="C")
        else:
            raise TypeError(f"Tensor {name}: dtype {array.dtype} has no Triton data type")
        self._name = name

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    @staticmethod
    def from_dlpack(name: str, tensor: object) -> Tensor:
        """A tensor from a DLPack capsule or an object with `__dlpack__` (a torch tensor)."""
        import torch

        if not (hasattr(tensor, "__dlpack__") or type(tensor).__name__ == "PyCapsule"):
            raise TypeError(
                "Provided tensor is not supported. Tensor must be a DLPack capsule or have "
                "`__dlpack__` and `__dlpack_device__` attributes"
            )
        source = torch.utils.dlpack.from_dlpack(tensor)
        if not source.is_contiguous():
            raise RuntimeError(
                "DLPack tensor is not contiguous. Only contiguous DLPack tensors that are stored "
                "in C-Order are supported."
            )
        if source.dtype == torch.bfloat16:
            raise TypeError(f"Tensor {name}: the stand-in holds numpy arrays, bfloat16 has none")
        return Tensor(name, source.detach().cpu().numpy())

    def to_dlpack(self) -> object:
        """A DLPack capsule sharing this tensor's memory."""
        if self._array.dtype == np.object_:
            raise RuntimeError("TYPE_BYTES tensors cannot be converted to DLPack.")
        return self._array.__dlpack__()

    def __dlpack__(self, stream: object = None) -> object:
        return self.to_dlpack()

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._array.__dlpack_device__()

    def is_cpu(self) -> bool:
        return True


class TritonError:
    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class InferenceResponse:
    def __init__(
        self, output_tensors: Sequence[Tensor] = (), error: TritonError | None = None
    ) -> None:
        if not all(isinstance(t, Tensor) for t in output_tensors):
            raise TypeError("output_tensors must be a list of Tensor")
        self._tensors = list(output_tensors)
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return self._tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


TRITONSERVER_MEMORY_CPU = 0
TRITONSERVER_MEMORY_GPU = 2


class PreferredMemory:
    def __init__(self, preferred_memory_type: int, preferred_device_id: int = 0) -> None:
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


# BLS: what `InferenceRequest.exec()` calls; tests set it (monkeypatch) to answer the calls.
bls_handler: Callable[[InferenceRequest], InferenceResponse] | None = None


class InferenceRequest:
    def __init__(
        self,
        model_name: str = "",
        inputs: Sequence[Tensor] = (),
        requested_output_names: Sequence[str] = (),
        correlation_id: int | str = 0,
        preferred_memory: PreferredMemory | None = None,
    ) -> None:
        if not all(isinstance(t, Tensor) for t in inputs):
            raise TypeError("inputs must be a list of Tensor")
        if not isinstance(correlation_id, int | str):
            raise TypeError("Correlation ID must be integer or string")
        self._model_name = model_name
        self._inputs = list(inputs)
        self._requested = list(requested_output_names)
        self._correlation_id = correlation_id
        self._preferred_memory = preferred_memory or PreferredMemory(TRITONSERVER_MEMORY_CPU)

    def preferred_memory(self) -> PreferredMemory:
        return self._preferred_memory

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def model_name(self) -> str:
        return self._model_name

    def requested_output_names(self) -> list[str]:
        return self._requested

    def exec(self) -> InferenceResponse:
        if bls_handler is None:
            raise RuntimeError(f"BLS call to {self._model_name!r} but the test set no bls_handler")
        return bls_handler(self)


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in inference_request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in inference_response.output_tensors() if t.name() == name), None)


def install() -> None:
    """Make `import triton_python_backend_utils` give this module."""
    present = sys.modules.setdefault(MODULE_NAME, sys.modules[__name__])
    if present is not sys.modules[__name__]:
        raise RuntimeError(f"another {MODULE_NAME} is already imported: {present!r}")


# -- test helpers (not part of pb_utils) -------------------------------------------------------


def import_glue():
    """python_backend/triton_io.py, imported over this stand-in (it imports pb_utils at once)."""
    install()
    return importlib.import_module("sam2_triton.python_backend.triton_io")


def load_model_class(model_file: Path) -> type:
    """`TritonPythonModel` of a model.py file, imported by path as Triton's stub does."""
    install()
    name = f"triton_model_{model_file.parent.parent.name}"
    spec = importlib.util.spec_from_file_location(name, model_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel


def request(**arrays: np.ndarray) -> InferenceRequest:
    """A request as `execute` receives it: one input tensor per keyword."""
    return InferenceRequest(inputs=[Tensor(name, array) for name, array in arrays.items()])


def outputs(response: InferenceResponse) -> dict[str, np.ndarray]:
    """name -> array of a successful response (AssertionError with the message otherwise)."""
    assert not response.has_error(), response.error().message()
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


def answer_with(
    models: Mapping[str, Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]],
) -> Callable[[InferenceRequest], InferenceResponse]:
    """A `bls_handler` answering model name -> function(inputs) -> outputs, as Triton would:
    the requested outputs only; an unknown model or an exception in the function (a failing
    model) comes back as an error response."""

    def handle(call: InferenceRequest) -> InferenceResponse:
        name = call.model_name()
        if name not in models:
            return InferenceResponse(
                error=TritonError(
                    f"Request for unknown model: '{name}' is not found", TritonError.NOT_FOUND
                )
            )
        try:
            result = models[name]({t.name(): t.as_numpy() for t in call.inputs()})
            return InferenceResponse(
                [Tensor(n, np.asarray(result[n])) for n in call.requested_output_names()]
            )
        except Exception as exc:
            return InferenceResponse(error=TritonError(f"{type(exc).__name__}: {exc}"))

    return handle


class _Metric:
    """One labelled metric of a MetricFamily: `value` is what Triton would export."""

    def __init__(self, family: MetricFamily, labels: Mapping[str, str]) -> None:
        self.family = family
        self.labels = dict(labels)
        self.value = 0.0

    def set(self, value: float) -> None:
        if self.family.kind != MetricFamily.GAUGE:
            raise ValueError("set is for gauges")
        self.value = float(value)

    def increment(self, value: float) -> None:
        if self.family.kind == MetricFamily.COUNTER and value < 0:
            raise ValueError("a counter cannot decrease")
        self.value += float(value)

    def value_of(self) -> float:
        return self.value


class MetricFamily:
    """Triton's custom-metrics API: MetricFamily(name, description, kind).Metric(labels)."""

    COUNTER, GAUGE, HISTOGRAM = 0, 1, 2
    registry: dict[str, MetricFamily] = {}  # every family created, by name (for tests)

    def __init__(self, name: str, description: str, kind: int) -> None:
        self.name, self.description, self.kind = name, description, kind
        self.metrics: list[_Metric] = []
        MetricFamily.registry[name] = self

    def Metric(self, labels: Mapping[str, str] | None = None) -> _Metric:  # noqa: N802
        metric = _Metric(self, labels or {})
        self.metrics.append(metric)
        return metric
