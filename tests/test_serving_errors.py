"""Bad input gets a per-request INVALID_ARG with a clear message; the server stays healthy.

Raw tritonclient requests (so that malformed tensors the client library would refuse can be
sent), over HTTP and gRPC, against the real server of the `served` fixture.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

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


def encoded(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def png(width: int = 64, height: int = 48) -> bytes:
    pixels = (np.arange(width * height * 3) % 251).astype(np.uint8).reshape(height, width, 3)
    return encoded(Image.fromarray(pixels))


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
    (
        "decode_masks original size over the pixel limit",
        "decode_masks",
        {
            "IMAGE_EMBED": np.zeros((1, 256, 64, 64), np.float32),
            "HIGH_RES_FEATS_0": np.zeros((1, 32, 256, 256), np.float32),
            "HIGH_RES_FEATS_1": np.zeros((1, 64, 128, 128), np.float32),
            "ORIGINAL_SIZE": np.array([2**31 - 1, 2**31 - 1], np.int32),
            **CLICK,
        },
        f"more than the limit of {SERVED_MAX_IMAGE_PIXELS} (limits.max_image_pixels",
    ),
    (
        "not one of the documented image formats",
        "segment",
        {"IMAGE": image_input(encoded(Image.new("RGB", (64, 48)), "TIFF")), **CLICK},
        "accepted formats (JPEG, PNG, BMP, WEBP)",
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


# -- what a request may cost before it is refused ---------------------------------------------


def encoder_executions(raw: RawClient) -> int:
    """How many times Triton ran the image_encoder model (its inference statistics)."""
    if raw.module is grpcclient:
        stats = raw.client.get_inference_statistics("image_encoder", as_json=True)
    else:
        stats = raw.client.get_inference_statistics("image_encoder")
    return sum(int(model.get("execution_count", 0)) for model in stats["model_stats"])


def timed_error(raw: RawClient, model: str, **tensors: np.ndarray) -> tuple[str, float]:
    start = time.perf_counter()
    message = raw.error(model, **tensors)
    return message, time.perf_counter() - start


def test_no_prompt_is_refused_before_the_image_encoder(raw):
    before = encoder_executions(raw)
    message, seconds = timed_error(raw, "segment", IMAGE=image_input(png()))
    assert "no prompt: send POINT_COORDS" in message, message
    assert encoder_executions(raw) == before  # the encoder did not run for it
    assert seconds < 2.0, seconds  # the tiny encoder alone takes ~3 s on 2 CPU cores


# The hostile client's case (item 1 of the reliability issue): a few hundred bytes of PNG that
# decode to 1448x1448, sent to segment with 64 boxes, 3 masks each: 402 MB of bool masks.
ITEM_1_SIZE = 1448
ITEM_1_BOXES = np.tile(np.array([[10, 10, 900, 900]], np.float32), (64, 1))


def item_1_png() -> bytes:
    return encoded(Image.new("1", (ITEM_1_SIZE, ITEM_1_SIZE)))


def test_answer_over_the_mask_budget_is_refused_before_the_encoder(raw):
    assert len(item_1_png()) < 1000
    before = encoder_executions(raw)
    message, seconds = timed_error(
        raw, "segment", IMAGE=image_input(item_1_png()), BOXES=ITEM_1_BOXES
    )
    assert "64 prompts x 3 masks of 1448x1448 pixels" in message, message
    assert "limits.max_mask_bytes" in message
    assert encoder_executions(raw) == before
    assert seconds < 2.0, seconds


def stub_process(served, model: str) -> int:
    """pid of the Python-backend stub that runs `model` of the served repository."""
    script = f"{served.repository}/{model}/1/model.py".encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and script in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except OSError:  # a process that ended meanwhile
            continue
    raise AssertionError(f"no stub process runs {script.decode()}")


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def test_peak_memory_of_a_large_answer_is_bounded(served):
    """Item 1's image and boxes with one mask each: 134 MB of masks fit the budget; the
    postprocess_masks process's peak grows by the answer and a bounded float32 chunk, not by the
    whole answer in float32 (537 MB more)."""
    client = httpclient.InferenceServerClient(served.http_url)
    pid = stub_process(served, "postprocess_masks")
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := current RSS
    except OSError as exc:
        pytest.skip(f"cannot reset the stub's peak RSS here ({exc})")
    before = memory_kib(pid, "VmHWM")
    inputs = []
    for name, array in (
        ("IMAGE", image_input(item_1_png())),
        ("BOXES", ITEM_1_BOXES),
        ("MULTIMASK_OUTPUT", np.array([False])),
    ):
        tensor = httpclient.InferInput(name, list(array.shape), TRITON_DTYPES[array.dtype])
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput("MASKS", binary_data=True)]
    masks = client.infer("segment", inputs, outputs=outputs).as_numpy("MASKS")
    growth = (memory_kib(pid, "VmHWM") - before) * 1024
    answer = 64 * ITEM_1_SIZE * ITEM_1_SIZE
    assert masks.shape == (64, 1, ITEM_1_SIZE, ITEM_1_SIZE) and masks.nbytes == answer
    # the answer, its copy into Triton's shared memory, one float32 chunk, the logits in and out
    assert growth < 2 * answer + 256 * 2**20, growth / 2**20
