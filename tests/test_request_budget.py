"""What one request may cost in memory: the mask budget (limits.max_mask_bytes), chunked
upscaling, ORIGINAL_SIZE against the pixel limit, image decoding (accepted formats, 16-bit PNGs,
the decompression-bomb message). No server, no graph."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sam2_triton.configs import RequestLimits, get_profile
from sam2_triton.python_backend import masks as mask_module
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.images import check_original_size, decode_image
from sam2_triton.python_backend.masks import (
    MASK_THRESHOLD,
    answer_shape,
    check_mask_budget,
    masks_at_original_size,
)
from sam2_triton.wire import IMAGE_FORMATS

LIMITS = RequestLimits.for_profile(get_profile("cpu"))
ITEM_1_SIZE = (1448, 1448)  # the hostile client's 335-byte PNG, sent with 64 boxes
MIB = 1 << 20


# -- the mask budget ---------------------------------------------------------------------------


def test_serving_yaml_sets_a_budget_that_fits_one_prompt_at_the_pixel_limit():
    one_prompt = answer_shape(1, True, (1, LIMITS.max_image_pixels))
    check_mask_budget(one_prompt, LIMITS.max_mask_bytes)  # 3 masks at the largest image: fits
    with pytest.raises(InputError, match="max_mask_bytes"):
        check_mask_budget(answer_shape(64, True, ITEM_1_SIZE), LIMITS.max_mask_bytes)


def test_answer_over_the_budget_is_refused_before_anything_is_allocated():
    logits = np.zeros((64, 3, 256, 256), np.float32)
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as info:
            masks_at_original_size(logits, ITEM_1_SIZE, max_mask_bytes=256 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "64 prompts x 3 masks of 1448x1448 pixels = 402567168 bytes" in message, message
    assert f"limit of {256 * MIB}" in message
    assert "limits.max_mask_bytes in configs/serving.yaml" in message
    assert peak < MIB, peak  # refused from the shape alone


def test_budget_counts_objects_of_a_video_frame():
    check_mask_budget((4, 100, 100), 40_000, unit="objects")
    with pytest.raises(InputError, match="5 objects of 100x100 pixels = 50000 bytes"):
        check_mask_budget((5, 100, 100), 40_000, unit="objects")


def test_chunked_upscaling_equals_upscaling_at_once(monkeypatch):
    logits = np.random.default_rng(0).normal(size=(5, 3, 256, 256)).astype(np.float32)
    size = (97, 131)
    monkeypatch.setattr(mask_module, "UPSCALE_CHUNK_PIXELS", 4 * size[0] * size[1])  # 4 of 15
    chunked = masks_at_original_size(logits, size)
    with torch.inference_mode():
        at_once = F.interpolate(torch.from_numpy(logits), size, mode="bilinear")
    assert chunked.dtype == np.bool_ and chunked.shape == (5, 3, *size)
    np.testing.assert_array_equal(chunked, (at_once > MASK_THRESHOLD).numpy())
    assert masks_at_original_size(logits[:0], size).shape == (0, 3, *size)


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the process's peak RSS to its current RSS (Linux clear_refs 5); return it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as exc:
        pytest.skip(f"cannot reset the peak RSS here ({exc})")
    return peak_rss_bytes()


def test_peak_memory_of_upscaling_is_the_answer_plus_a_bounded_chunk():
    """Item 1's image with 16 prompts: the answer is 100 MB of bool masks; upscaling it all at
    once in float32 would add 400 MB."""
    logits = np.random.default_rng(1).normal(size=(16, 3, 256, 256)).astype(np.float32)
    answer_bytes = int(np.prod(answer_shape(16, True, ITEM_1_SIZE)))
    chunk_bytes = mask_module.UPSCALE_CHUNK_PIXELS * 4  # float32
    before = reset_peak_rss()
    masks = masks_at_original_size(logits, ITEM_1_SIZE, max_mask_bytes=answer_bytes)
    growth = peak_rss_bytes() - before
    assert masks.nbytes == answer_bytes
    # the answer + one float32 chunk (+ allocator slack)
    assert growth < answer_bytes + chunk_bytes + 32 * MIB, growth / MIB


# -- ORIGINAL_SIZE (decode_masks sends it) -----------------------------------------------------


@pytest.mark.parametrize(
    "size,message",
    [
        ([8000, 8000], "ORIGINAL_SIZE is 8000x8000 = 64000000 pixels, more than the limit of"),
        ([2**31 - 1, 2**31 - 1], "limits.max_image_pixels in configs/serving.yaml"),
        ([0, 40], "ORIGINAL_SIZE must be (height, width) >= 1, got [0, 40]"),
        ([1, 2, 3], "ORIGINAL_SIZE must be (height, width)"),
    ],
)
def test_original_size_beyond_the_pixel_limit_is_refused(size, message):
    with pytest.raises(InputError) as info:
        check_original_size(np.array(size, np.int32), LIMITS.max_image_pixels)
    assert message in str(info.value)


def test_original_size_within_the_limit_passes():
    assert check_original_size(np.array([1448, 1448], np.int32), LIMITS.max_image_pixels) == (
        1448,
        1448,
    )


# -- image decoding ----------------------------------------------------------------------------


def encode(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def test_documented_formats_decode():
    pixels = np.random.default_rng(2).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    for format in IMAGE_FORMATS:
        decoded = decode_image(encode(Image.fromarray(pixels), format), 10**6, 10**6)
        assert decoded.shape == (12, 20, 3) and decoded.dtype == np.uint8, format
        if format in ("PNG", "BMP"):  # lossless
            np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("format", ["TIFF", "GIF", "PPM", "ICO", "TGA"])
def test_other_formats_are_refused(format):
    data = encode(Image.new("RGB", (16, 16), (10, 200, 30)), format)
    with pytest.raises(InputError, match="accepted formats \\(JPEG, PNG, BMP, WEBP\\)"):
        decode_image(data, 10**6, 10**6)


def test_16_bit_grey_png_is_scaled_to_8_bits_not_clipped():
    grey = (np.arange(12 * 20).reshape(12, 20) * 270).astype(np.uint16)  # up to 64530
    data = encode(Image.fromarray(grey), "PNG")
    decoded = decode_image(data, 10**6, 10**6)
    expected = (grey >> 8).astype(np.uint8)  # the high byte, as PIL reads 16-bit RGB PNGs
    assert decoded.shape == (12, 20, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], expected)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (1-bit grey); PIL reads no pixel to open it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [10_000, 20_000])  # above PIL's warning / error thresholds
def test_decompression_bomb_message_quotes_the_configured_limit(side):
    assert side * side > Image.MAX_IMAGE_PIXELS  # PIL's own check would speak first
    with pytest.raises(InputError) as info:
        decode_image(png_header(side, side), 10**6, LIMITS.max_image_pixels)
    message = str(info.value)
    assert f"more than the limit of {LIMITS.max_image_pixels}" in message, message
    assert "limits.max_image_pixels" in message and str(Image.MAX_IMAGE_PIXELS) not in message


# -- video: objects x frame pixels -------------------------------------------------------------


def test_tracker_refuses_a_frame_whose_masks_exceed_the_budget():
    from test_video_tracking import FAKE_METADATA, FAKE_SIZE, FakeNetworks, fake_frame

    from sam2_triton.python_backend.video.tracker import VideoTracker

    networks = FakeNetworks()
    two_objects = 2 * FAKE_SIZE[0] * FAKE_SIZE[1]
    tracker = VideoTracker(networks, FAKE_METADATA, max_mask_bytes=two_objects)
    for obj_id in (1, 2, 3):
        tracker.add_prompt(0, obj_id, points=[[10, 10]], labels=[1])
    with pytest.raises(InputError, match="3 objects of 32x24 pixels = 2304 bytes.*max_mask_bytes"):
        tracker.track(0, fake_frame(0))
    assert networks.calls == [] and tracker.last_frame == -1  # refused before any network
    tracker.discard_pending()
    tracker.add_prompt(0, 1, points=[[10, 10]], labels=[1])
    tracker.add_prompt(0, 2, points=[[12, 10]], labels=[1])
    assert tracker.track(0, fake_frame(0)).masks.shape == (2, *FAKE_SIZE)
    tracker.add_prompt(0, 3, points=[[14, 10]], labels=[1])  # a correction adding an object
    with pytest.raises(InputError, match="max_mask_bytes"):
        tracker.correct(0)


# -- the model.py files (Triton's Python backend without a server) -----------------------------

BOX = np.float32([[2, 3, 20, 18]])


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """The CPU repository generated from the stand-in networks' metadata (no graph runs)."""
    from conftest import SERVED_VIDEO_SETTINGS
    from test_video_tracking import FAKE_METADATA

    from sam2_triton.export.contract import CONTRACTS
    from sam2_triton.export.metadata import FORMAT_VERSION, write_metadata
    from sam2_triton.python_backend.video.sequences import VideoSettings
    from sam2_triton.serving.repository import build_repository

    export = tmp_path_factory.mktemp("graphless-export")
    write_metadata(
        export, {**FAKE_METADATA, "format_version": FORMAT_VERSION, "model": {"name": "tiny"}}
    )
    for contract in CONTRACTS.values():
        (export / contract.file).write_bytes(b"placeholder: the unit tier runs no graph")
    return build_repository(
        export,
        tmp_path_factory.mktemp("repository") / "cpu",
        get_profile("cpu"),
        warmup=False,
        video=VideoSettings(**SERVED_VIDEO_SETTINGS),
    )


@pytest.fixture
def bls(monkeypatch):
    import triton_stub as pb_utils
    from test_model_files import BlsNetworks

    networks = BlsNetworks()
    monkeypatch.setattr(pb_utils, "bls_handler", networks)
    return networks


def invalid_arg(response) -> str:
    """The message of an INVALID_ARG response."""
    from test_model_files import INVALID_ARG, error_of

    code, message = error_of(response)
    assert code == INVALID_ARG, message
    return message


def test_segment_runs_preprocess_segment_before_the_encoder(repository):
    from test_model_files import read_config

    steps = read_config(repository / "segment" / "config.pbtxt").ensemble_scheduling.step
    first, encoder = steps[0], steps[1]
    assert (first.model_name, encoder.model_name) == ("preprocess_segment", "image_encoder")
    assert encoder.input_map["image"] == first.output_map["image"]  # the encoder waits for it
    assert set(first.input_map) >= {"POINT_COORDS", "POINT_LABELS", "BOXES", "MULTIMASK_OUTPUT"}
    config = read_config(repository / "preprocess_segment" / "config.pbtxt")
    assert config.parameters["prompts_required"].string_value == "1"
    encode = read_config(repository / "encode_image" / "config.pbtxt").ensemble_scheduling.step
    assert encode[0].model_name == "preprocess_image"  # images alone: no prompt required


def test_preprocess_segment_refuses_missing_prompts_and_oversized_answers(repository):
    from test_model_files import load_model
    from triton_stub import outputs, request

    model = load_model(repository, "preprocess_segment")
    small = np.zeros((30, 40, 3), np.uint8)
    item_1 = np.zeros((*ITEM_1_SIZE, 3), np.uint8)
    boxes = np.tile(np.float32([[1, 1, 20, 20]]), (64, 1))
    nothing, too_big, single, boxed = model.execute(
        request(IMAGE_RAW=small),
        request(IMAGE_RAW=item_1, BOXES=boxes),
        request(IMAGE_RAW=item_1, BOXES=boxes, MULTIMASK_OUTPUT=np.zeros(1, bool)),
        request(IMAGE_RAW=small, BOXES=BOX),
    )
    assert invalid_arg(nothing).startswith("no prompt")
    assert "64 prompts x 3 masks of 1448x1448" in invalid_arg(too_big)
    assert "limits.max_mask_bytes" in invalid_arg(too_big)
    assert outputs(single)["ORIGINAL_SIZE"].tolist() == list(ITEM_1_SIZE)  # 134 MB: fits
    assert outputs(boxed)["image"].shape == (1, 3, 1024, 1024)
    [images_alone] = load_model(repository, "preprocess_image").execute(request(IMAGE_RAW=small))
    assert outputs(images_alone)["ORIGINAL_SIZE"].tolist() == [30, 40]


def test_postprocess_masks_checks_original_size_and_the_budget(repository):
    from test_model_files import load_model
    from triton_stub import outputs, request

    model = load_model(repository, "postprocess_masks")
    logits = np.zeros((64, 4, 256, 256), np.float32)
    iou = np.zeros((64, 4), np.float32)
    huge, above, too_big, fits = model.execute(
        request(masks=logits[:1], iou_scores=iou[:1], ORIGINAL_SIZE=np.int32([2**31 - 1] * 2)),
        request(masks=logits[:1], iou_scores=iou[:1], ORIGINAL_SIZE=np.int32([8000, 8000])),
        request(masks=logits, iou_scores=iou, ORIGINAL_SIZE=np.int32(ITEM_1_SIZE)),
        request(masks=logits[:2], iou_scores=iou[:2], ORIGINAL_SIZE=np.int32(ITEM_1_SIZE)),
    )
    assert "limits.max_image_pixels" in invalid_arg(huge)
    assert "ORIGINAL_SIZE is 8000x8000 = 64000000 pixels" in invalid_arg(above)
    assert "limits.max_mask_bytes" in invalid_arg(too_big)
    assert outputs(fits)["MASKS"].shape == (2, 3, *ITEM_1_SIZE)


def test_preprocess_prompts_checks_original_size_and_the_budget(repository):
    from test_model_files import load_model
    from triton_stub import request

    model = load_model(repository, "preprocess_prompts")
    embed = np.zeros((1, 256, 64, 64), np.float32)
    boxes = np.tile(BOX, (64, 1))
    above, too_big = model.execute(
        request(image_embed=embed, ORIGINAL_SIZE=np.int32([8000, 8000]), BOXES=BOX),
        request(image_embed=embed, ORIGINAL_SIZE=np.int32(ITEM_1_SIZE), BOXES=boxes),
    )
    assert "more than the limit of 50000000" in invalid_arg(above)
    assert "limits.max_mask_bytes" in invalid_arg(too_big)


def test_segment_interactive_checks_the_budget_before_encoding(repository, bls, monkeypatch):
    from test_model_files import FakeOnnxNetworks, load_model
    from triton_stub import request

    from sam2_triton.python_backend import onnx_networks

    monkeypatch.setattr(onnx_networks, "OnnxNetworks", FakeOnnxNetworks)  # in-process decoder
    model = load_model(repository, "segment_interactive")
    [too_big] = model.execute(
        request(IMAGE_RAW=np.zeros((*ITEM_1_SIZE, 3), np.uint8), BOXES=np.tile(BOX, (64, 1)))
    )
    assert "limits.max_mask_bytes" in invalid_arg(too_big)
    assert bls.calls == [] and model.model.predictor.networks.decoder.networks.runs == []
    assert len(model.model.cache) == 0


# -- ONNX Runtime's arena hands memory back after a burst ---------------------------------------


def encoder_standin_graph() -> bytes:
    """An ONNX graph with the image encoder's I/O contract whose first layer is wide
    ([B, 64, 512, 512]: 256 MiB of float32 at batch 4), as the real encoder's early stages."""
    import onnx.helper as helper
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(0)
    layers = [("image", "wide", 64, 3), ("wide", "high_res_feats_0", 32, 64)]
    layers += [("high_res_feats_0", "high_res_feats_1", 64, 32)]
    layers += [("high_res_feats_1", "image_embed", 256, 64)]
    nodes, weights = [], []
    for source, target, out_channels, in_channels in layers:
        weight = (rng.standard_normal((out_channels, in_channels, 2, 2)) * 0.01).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"{target}_weight"))
        nodes.append(
            helper.make_node(
                "Conv", [source, f"{target}_weight"], [target], strides=[2, 2], kernel_shape=[2, 2]
            )
        )

    def tensor(name: str, channels: int, side: int):
        return helper.make_tensor_value_info(
            name, TensorProto.FLOAT, ["batch", channels, side, side]
        )

    graph = helper.make_graph(
        nodes,
        "image_encoder_standin",
        [tensor("image", 3, 1024)],
        [
            tensor("image_embed", 256, 64),
            tensor("high_res_feats_0", 32, 256),
            tensor("high_res_feats_1", 64, 128),
        ],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def current_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_memory_returns_after_a_burst_of_large_batches(tmp_path):
    from test_video_tracking import FAKE_METADATA

    from sam2_triton.export.contract import CONTRACTS
    from sam2_triton.export.metadata import FORMAT_VERSION, write_metadata
    from sam2_triton.python_backend.onnx_networks import OnnxNetworks

    write_metadata(
        tmp_path, {**FAKE_METADATA, "format_version": FORMAT_VERSION, "model": {"name": "tiny"}}
    )
    (tmp_path / CONTRACTS["image_encoder"].file).write_bytes(encoder_standin_graph())
    networks = OnnxNetworks(tmp_path, ["image_encoder"], allow_spinning=False)
    one, four = (np.zeros((n, 3, 1024, 1024), np.float32) for n in (1, 4))
    networks.run("image_encoder", image=one)
    steady = current_rss_bytes()
    for _ in range(2):
        burst = networks.run("image_encoder", image=four)
    assert burst["image_embed"].shape == (4, 256, 64, 64)
    del burst
    networks.run("image_encoder", image=one)
    kept = current_rss_bytes() - steady
    # Without shrinkage the arena keeps the burst's ~600 MB (batch 4's activations) for good.
    assert kept < 100 * MIB, kept / MIB
