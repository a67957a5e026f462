"""Bad input gets a per-request INVALID_ARG with a clear message; the server stays healthy.

Raw tritonclient requests (so that malformed tensors the client library would refuse can be
sent), over HTTP and gRPC, against the real server of the `served` fixture.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import SERVED_MAX_IMAGE_BYTES, SERVED_MAX_IMAGE_PIXELS
from PIL import Image
from tritonclient.utils import InferenceServerException

PROTOCOLS = {"http": httpclient, "grpc": grpcclient}
TRITON_DTYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.object_): "BYTES",
}


def png(width: int = 64, height: int = 48) -> bytes:
    pixels = (np.arange(width * height * 3) % 251).astype(np.uint8).reshape(height, width, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class RawClient:
    def __init__(self, served, protocol: str) -> None:
        self.module = PROTOCOLS[protocol]
        url = served.http_url if protocol == "http" else served.grpc_url
        self.client = self.module.InferenceServerClient(url)

    def infer(self, model: str, **tensors: np.ndarray):
        inputs = []
        for name, array in tensors.items():
            tensor = self.module.InferInput(name, list(array.shape), TRITON_DTYPES[array.dtype])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return self.client.infer(model, inputs)

    def error(self, model: str, **tensors: np.ndarray) -> str:
        with pytest.raises(InferenceServerException) as info:
            self.infer(model, **tensors)
        status = str(info.value.status())
        assert "400" in status or "INVALID_ARGUMENT" in status, (status, info.value.message())
        return info.value.message()


@pytest.fixture(params=sorted(PROTOCOLS))
def raw(request, served) -> RawClient:
    return RawClient(served, request.param)


def image_input(data: bytes) -> np.ndarray:
    return np.array([data], dtype=np.object_)


CLICK = {
    "POINT_COORDS": np.array([[[30.0, 20.0]]], np.float32),
    "POINT_LABELS": np.array([[1]], np.int32),
}

# (case id, model, tensors, fragment the message must contain)
BAD_REQUESTS = [
    (
        "undecodable bytes",
        "segment",
        {"IMAGE": image_input(b"certainly not an image"), **CLICK},
        "could not be decoded",
    ),
    ("empty bytes", "segment", {"IMAGE": image_input(b""), **CLICK}, "IMAGE is empty"),
    (
        "too many bytes",
        "segment",
        {"IMAGE": image_input(b"\x89PNG" + bytes(SERVED_MAX_IMAGE_BYTES)), **CLICK},
        "more than the limit",
    ),
    (
        "too many pixels",
        "segment",
        {"IMAGE_RAW": np.zeros((2001, 2000, 3), np.uint8), **CLICK},
        f"more than the limit of {SERVED_MAX_IMAGE_PIXELS}",
    ),
    (
        "raw image wrong dtype",
        "segment",
        {"IMAGE_RAW": np.zeros((48, 64, 3), np.float32), **CLICK},
        "IMAGE_RAW",
    ),
    (
        "raw image wrong shape",
        "segment",
        {"IMAGE_RAW": np.zeros((48, 64, 4), np.uint8), **CLICK},
        "IMAGE_RAW",
    ),
    (
        "coords wrong dtype",
        "segment",
        {
            "IMAGE": image_input(png()),
            "POINT_COORDS": np.array([[[30.0, 20.0]]], np.float64),
            "POINT_LABELS": CLICK["POINT_LABELS"],
        },
        "POINT_COORDS",
    ),
    (
        "coords wrong shape",
        "segment",
        {
            "IMAGE": image_input(png()),
            "POINT_COORDS": np.zeros((1, 1, 3), np.float32),
            "POINT_LABELS": CLICK["POINT_LABELS"],
        },
        "POINT_COORDS",
    ),
    (
        "labels not matching coords",
        "segment",
        {
            "IMAGE": image_input(png()),
            "POINT_COORDS": CLICK["POINT_COORDS"],
            "POINT_LABELS": np.array([[1, 1]], np.int32),
        },
        "POINT_LABELS must be [prompts, points]",
    ),
    (
        "NaN coordinate",
        "segment",
        {
            "IMAGE": image_input(png()),
            "POINT_COORDS": np.array([[[np.nan, 20.0]]], np.float32),
            "POINT_LABELS": CLICK["POINT_LABELS"],
        },
        "NaN or infinite",
    ),
    (
        "infinite box",
        "segment",
        {"IMAGE": image_input(png()), "BOXES": np.array([[0, 0, np.inf, 10]], np.float32)},
        "NaN or infinite",
    ),
    (
        "point far outside",
        "segment",
        {
            "IMAGE": image_input(png()),
            "POINT_COORDS": np.array([[[30.0, 5000.0]]], np.float32),
            "POINT_LABELS": CLICK["POINT_LABELS"],
        },
        "far outside the 64x48 image",
    ),
    (
        "label not allowed",
        "segment",
        {
            "IMAGE": image_input(png()),
            "POINT_COORDS": CLICK["POINT_COORDS"],
            "POINT_LABELS": np.array([[4]], np.int32),
        },
        "labels must be one of [-1, 0, 1, 2, 3]",
    ),
    ("no prompt", "segment", {"IMAGE": image_input(png())}, "no prompt"),
    (
        "mask input alone",
        "segment",
        {"IMAGE": image_input(png()), "MASK_INPUT": np.zeros((1, 1, 256, 256), np.float32)},
        "MASK_INPUT alone",
    ),
    (
        "too many points",
        "segment",
        {
            "IMAGE": image_input(png()),
            "POINT_COORDS": np.full((1, 17, 2), 10.0, np.float32),
            "POINT_LABELS": np.ones((1, 17), np.int32),
        },
        "more than the configured maximum of 16",
    ),
    (
        "too many prompts",
        "segment",
        {
            "IMAGE": image_input(png()),
            "BOXES": np.tile(np.array([[1, 1, 20, 20]], np.float32), (65, 1)),
        },
        "more than the configured maximum of 64",
    ),
    ("no image", "segment", dict(CLICK), "send exactly one of IMAGE"),
    (
        "unknown image id",
        "segment_interactive",
        {"IMAGE_ID": image_input(b"0123456789abcdef0123456789abcdef"), **CLICK},
        "unknown IMAGE_ID",
    ),
    (
        "image and image id",
        "segment_interactive",
        {"IMAGE": image_input(png()), "IMAGE_ID": image_input(b"00"), **CLICK},
        "not both",
    ),
    (
        "decode_masks bad embedding",
        "decode_masks",
        {
            "IMAGE_EMBED": np.zeros((1, 256, 64, 64), np.float32),
            "HIGH_RES_FEATS_0": np.zeros((1, 32, 256, 256), np.float32),
            "HIGH_RES_FEATS_1": np.zeros((1, 64, 128, 128), np.float32),
            "ORIGINAL_SIZE": np.array([0, 10], np.int32),
            **CLICK,
        },
        "ORIGINAL_SIZE",
    ),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_clear_error(raw, case):
    _, model, tensors, fragment = case
    message = raw.error(model, **tensors)
    assert fragment in message, message
    assert raw.client.is_server_ready()


def test_server_answers_after_bad_requests(raw):
    """After every bad request above, a good one still works on the same server."""
    raw.error("segment", IMAGE=image_input(b"junk"), **CLICK)
    result = raw.infer("segment", IMAGE=image_input(png()), **CLICK)
    masks = result.as_numpy("MASKS")
    assert masks.shape == (1, 3, 48, 64) and masks.dtype == np.bool_


def test_released_image_id_is_gone(raw):
    first = raw.infer("segment_interactive", IMAGE=image_input(png()))
    image_id = first.as_numpy("IMAGE_ID")
    assert first.as_numpy("MASKS").shape == (0, 0, 48, 64)
    raw.infer("segment_interactive", IMAGE_ID=image_id, RELEASE=np.array([True]), **CLICK)
    message = raw.error("segment_interactive", IMAGE_ID=image_id, **CLICK)
    assert "unknown IMAGE_ID" in message
