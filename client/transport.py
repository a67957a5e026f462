"""One inference call over tritonclient's HTTP or gRPC client, with the same interface for both.

Tensors go in and come out as numpy arrays keyed by name; Triton dtypes follow the numpy
dtype (object -> BYTES, bool -> BOOL, ...). HTTP requests carry tensors as binary data.
Every failure leaves as `Sam2ClientError` with a one-line message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from sam2_triton.client.errors import Sam2ClientError, attribute, clean_message

PROTOCOLS = ("http", "grpc")
DEFAULT_URLS = {"http": "localhost:8000", "grpc": "localhost:8001"}
# The automatic mask generator runs hundreds of decoder calls per image; on CPU that takes minutes.
DEFAULT_TIMEOUT_S = 600.0

_GRPC_UNREACHABLE = "StatusCode.UNAVAILABLE"
_GRPC_DEADLINE = "StatusCode.DEADLINE_EXCEEDED"


def _protocol_module(protocol: str):
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise ValueError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    return module


class Transport:
    """A tritonclient client for `url` ("host:port", no scheme) over `protocol` ("http" or "grpc").

    `timeout_s` bounds connecting and each call, in seconds. Not thread-safe: one per thread.
    """

    def __init__(self, url: str, protocol: str = "http", timeout_s: float = DEFAULT_TIMEOUT_S):
        self._module = _protocol_module(protocol)
        if "://" in url:
            raise Sam2ClientError(f"bad server URL {url!r}: give host:port without a scheme")
        self.url = url
        self.protocol = protocol
        self.timeout_s = float(timeout_s)
        if protocol == "http":
            self._client = self._module.InferenceServerClient(
                url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
            )
            self._call_options: dict[str, float] = {}
        else:
            self._client = self._module.InferenceServerClient(url)
            self._call_options = {"client_timeout": self.timeout_s}

    def make_inputs(self, tensors: Mapping[str, np.ndarray]) -> list:
        """tritonclient `InferInput`s holding `tensors` (binary data over HTTP)."""
        inputs = []
        for name, array in tensors.items():
            array = np.asarray(array)
            infer_input = self._module.InferInput(
                name, list(array.shape), np_to_triton_dtype(array.dtype)
            )
            if self.protocol == "http":
                infer_input.set_data_from_numpy(array, binary_data=True)
            else:
                infer_input.set_data_from_numpy(array)
            inputs.append(infer_input)
        return inputs

    def make_outputs(self, names: Sequence[str]) -> list:
        """tritonclient `InferRequestedOutput`s for `names` (binary data over HTTP)."""
        if self.protocol == "http":
            return [self._module.InferRequestedOutput(name, binary_data=True) for name in names]
        return [self._module.InferRequestedOutput(name) for name in names]

    def infer(
        self, model: str, tensors: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run `model` on `tensors`; return the outputs named in `outputs`.

        Raises Sam2ClientError when a requested output is missing from the answer.
        """
        try:
            result = self._client.infer(
                model,
                self.make_inputs(tensors),
                outputs=self.make_outputs(outputs),
                **self._call_options,
            )
        except (InferenceServerException, OSError) as error:
            raise self.translate(error, model) from None
        arrays = {}
        for name in outputs:
            array = result.as_numpy(name)
            if array is None:
                raise Sam2ClientError(
                    f"{model}: the server's answer has no {name} output", model=model
                )
            arrays[name] = array
        return arrays

    def is_server_ready(self) -> bool:
        """Whether the server answers its readiness probe; Sam2ClientError if unreachable."""
        try:
            return bool(self._client.is_server_ready(**self._call_options))
        except (InferenceServerException, OSError) as error:
            raise self.translate(error, None) from None

    def is_model_ready(self, model: str) -> bool:
        """Whether `model` is loaded and ready; Sam2ClientError if the server is unreachable."""
        try:
            return bool(self._client.is_model_ready(model, **self._call_options))
        except (InferenceServerException, OSError) as error:
            raise self.translate(error, model) from None

    def translate(self, error: BaseException, model: str | None) -> Sam2ClientError:
        """A one-line Sam2ClientError for a tritonclient or socket error."""
        unreachable = f"server at {self.url} is not reachable over {self.protocol}"
        timed_out = f"no answer from the server at {self.url} within {self.timeout_s:g} s"
        where = f"{model}: " if model else ""
        if isinstance(error, InferenceServerException):
            status = error.status()
            message = clean_message(error.message() or str(error))
            if status == _GRPC_UNREACHABLE and "connect" in message.lower():
                return Sam2ClientError(f"{unreachable} ({message})", status=status, model=model)
            if status == _GRPC_DEADLINE:
                return Sam2ClientError(f"{where}{timed_out}", status=status, model=model)
            return Sam2ClientError(attribute(message, model), status=status, model=model)
        if isinstance(error, TimeoutError):
            return Sam2ClientError(f"{where}{timed_out}", model=model)
        reason = getattr(error, "strerror", None) or str(error)
        return Sam2ClientError(f"{unreachable} ({reason})", model=model)

    def close(self) -> None:
        """Close the underlying connections."""
        self._client.close()
