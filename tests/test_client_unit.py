"""The client library and `sam2-triton-client` without a server: prompt shapes, wire tensors,
results, error messages, unreachable servers, the command line and the files it writes."""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest
from PIL import Image
from tritonclient.utils import InferenceServerException

from sam2_triton import rle, wire
from sam2_triton.client import visualize
from sam2_triton.client.cli import main, prompts_from_args
from sam2_triton.client.client import InteractiveSession, Sam2Client, settings_tensors
from sam2_triton.client.errors import Sam2ClientError
from sam2_triton.client.images import image_tensor, load_rgb
from sam2_triton.client.prompts import normalize_prompts
from sam2_triton.client.results import Segmentation, generated_masks
from sam2_triton.client.transport import Transport

H, W = 24, 32


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def png_file(tmp_path):
    pixels = (np.arange(H * W * 3) % 251).astype(np.uint8).reshape(H, W, 3)
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


def mask_outputs(n: int, k: int, h: int = H, w: int = W) -> dict:
    masks = np.zeros((n, k, h, w), bool)
    for i in range(n):
        for j in range(k):
            masks[i, j, : i + j + 1, : 2 * (j + 1)] = True
    scores = np.tile(np.array([0.2, 0.9, 0.5][:k], np.float32), (n, 1))
    return {
        wire.MASKS: masks,
        wire.SCORES: scores,
        wire.LOW_RES_MASKS: np.zeros((n, k, 256, 256), np.float32),
    }


# Prompts ---------------------------------------------------------------------------------


def test_single_prompt_gets_a_prompt_axis_and_wire_dtypes():
    prompts = normalize_prompts(
        point_coords=[[10, 20], [30, 5]], point_labels=[1, 0], box=[1, 2, 3, 4]
    )
    assert not prompts.batched
    tensors = prompts.tensors(multimask_output=False)
    assert tensors[wire.POINT_COORDS].shape == (1, 2, 2)
    assert tensors[wire.POINT_COORDS].dtype == np.float32
    assert tensors[wire.POINT_LABELS].shape == (1, 2)
    assert tensors[wire.POINT_LABELS].dtype == np.int32
    assert tensors[wire.BOXES].shape == (1, 4) and tensors[wire.BOXES].dtype == np.float32
    assert wire.MASK_INPUT not in tensors
    multimask = tensors[wire.MULTIMASK_OUTPUT]
    assert multimask.dtype == np.bool_ and multimask.shape == (1,) and not multimask[0]


def test_batched_prompts_keep_their_shape():
    prompts = normalize_prompts(
        point_coords=np.zeros((3, 2, 2), np.float64),
        point_labels=np.ones((3, 2), np.int64),
        box=np.zeros((3, 4)),
        mask_input=np.zeros((3, 1, 256, 256)),
    )
    assert prompts.batched
    assert prompts.point_coords.shape == (3, 2, 2) and prompts.point_coords.dtype == np.float32
    assert prompts.point_labels.dtype == np.int32
    assert prompts.boxes.shape == (3, 4)
    assert prompts.mask_input.shape == (3, 1, 256, 256) and prompts.mask_input.dtype == np.float32


def test_single_mask_input_and_mixed_forms():
    single = normalize_prompts(box=[0, 0, 5, 5], mask_input=np.zeros((1, 256, 256)))
    assert not single.batched and single.mask_input.shape == (1, 1, 256, 256)
    mixed = normalize_prompts(point_coords=[[1, 1]], point_labels=[1], box=[[0, 0, 5, 5]])
    assert mixed.batched  # one batched prompt makes the request batched
    assert mixed.point_coords.shape == (1, 1, 2) and mixed.boxes.shape == (1, 4)


def test_no_prompts_sends_only_multimask_flag():
    tensors = normalize_prompts().tensors()
    assert list(tensors) == [wire.MULTIMASK_OUTPUT] and tensors[wire.MULTIMASK_OUTPUT][0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"point_labels": [1]}, "point_labels given without point_coords"),
        ({"point_coords": [[1, 2]]}, "point_labels must be given with point_coords"),
        ({"point_coords": [1, 2], "point_labels": [1]}, "point_coords must have shape [P, 2]"),
        ({"box": np.zeros((1, 2, 4))}, "box must have shape [4] (one prompt) or [N, 4]"),
        ({"box": [1, 2, 3, 4], "mask_input": np.zeros((256, 256))}, "got [256, 256]"),
    ],
)
def test_prompts_that_cannot_be_interpreted(kwargs, message):
    with pytest.raises(ValueError) as error:
        normalize_prompts(**kwargs)
    assert message in str(error.value)


# Wire tensors ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inputs_carry_triton_dtypes(protocol):
    transport = Transport(f"localhost:{unused_port()}", protocol)
    tensors = {
        wire.IMAGE: np.array([b"\x89PNG..."], dtype=np.object_),
        wire.IMAGE_RAW: np.zeros((H, W, 3), np.uint8),
        **normalize_prompts(point_coords=[[1, 2]], point_labels=[1], box=[1, 2, 3, 4]).tensors(),
        wire.RELEASE: np.array([True]),
        wire.ORIGINAL_SIZE: np.array([H, W], np.int32),
    }
    inputs = {i.name(): i for i in transport.make_inputs(tensors)}
    expected = {
        wire.IMAGE: ("BYTES", [1]),
        wire.IMAGE_RAW: ("UINT8", [H, W, 3]),
        wire.POINT_COORDS: ("FP32", [1, 1, 2]),
        wire.POINT_LABELS: ("INT32", [1, 1]),
        wire.BOXES: ("FP32", [1, 4]),
        wire.MULTIMASK_OUTPUT: ("BOOL", [1]),
        wire.RELEASE: ("BOOL", [1]),
        wire.ORIGINAL_SIZE: ("INT32", [2]),
    }
    assert {name: (i.datatype(), list(i.shape())) for name, i in inputs.items()} == expected
    transport.close()


def test_http_asks_for_binary_outputs():
    transport = Transport(f"localhost:{unused_port()}", "http")
    outputs = transport.make_outputs(wire.MASK_OUTPUTS)
    assert [o._get_tensor() for o in outputs] == [
        {"name": name, "parameters": {"binary_data": True}} for name in wire.MASK_OUTPUTS
    ]
    transport.close()


def test_unknown_protocol_and_url_with_scheme():
    with pytest.raises(ValueError, match="unknown protocol 'websocket'"):
        Transport("localhost:8000", "websocket")
    with pytest.raises(Sam2ClientError, match="without a scheme"):
        Transport("http://localhost:8000", "http")


def test_generator_settings_map_to_scalar_inputs():
    tensors = settings_tensors(
        {"points_per_side": 16, "pred_iou_thresh": 0.7, "box_nms_thresh": None}
    )
    assert set(tensors) == {"POINTS_PER_SIDE", "PRED_IOU_THRESH"}
    assert tensors["POINTS_PER_SIDE"].dtype == np.int32 and tensors["POINTS_PER_SIDE"].tolist() == [
        16
    ]
    assert tensors["PRED_IOU_THRESH"].dtype == np.float32 and tensors["PRED_IOU_THRESH"].shape == (
        1,
    )
    with pytest.raises(ValueError, match="points_per_side must be a whole number"):
        settings_tensors({"points_per_side": 16.5})


def test_unknown_generator_setting_is_a_type_error_before_any_request():
    client = Sam2Client(f"localhost:{unused_port()}")  # nothing listens: a request would fail
    with pytest.raises(TypeError, match="'points_per_sid'"):
        client.generate_masks(np.zeros((H, W, 3), np.uint8), points_per_sid=8)


# Images ----------------------------------------------------------------------------------


def test_image_forms(png_file):
    path, pixels = png_file
    from_path = image_tensor(path)
    assert list(from_path) == [wire.IMAGE] and from_path[wire.IMAGE].dtype == np.object_
    assert from_path[wire.IMAGE][0] == path.read_bytes()
    assert image_tensor(path.read_bytes())[wire.IMAGE][0] == path.read_bytes()
    raw = image_tensor(pixels)[wire.IMAGE_RAW]
    assert raw.dtype == np.uint8 and np.array_equal(raw, pixels)
    rgba = Image.fromarray(pixels).convert("RGBA")
    assert np.array_equal(image_tensor(rgba)[wire.IMAGE_RAW], pixels)
    assert np.array_equal(load_rgb(str(path)), pixels)


def test_bad_images(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        image_tensor(np.zeros((H, W, 3), np.float32))
    with pytest.raises(TypeError, match="got int"):
        image_tensor(3)
    with pytest.raises(Sam2ClientError, match="cannot read image .*missing.png: No such file"):
        image_tensor(tmp_path / "missing.png")


# Results ---------------------------------------------------------------------------------


def test_single_prompt_results_are_squeezed():
    result = Segmentation.from_outputs(mask_outputs(1, 3), batched=False)
    assert result.masks.shape == (3, H, W) and result.scores.shape == (3,)
    assert result.low_res_masks.shape == (3, 256, 256) and not result.batched
    assert result.best_index() == 1
    assert np.array_equal(result.best(), mask_outputs(1, 3)[wire.MASKS][0, 1])


def test_batched_results_stay_batched():
    outputs = mask_outputs(1, 3)
    result = Segmentation.from_outputs(outputs, batched=True)
    assert result.masks.shape == (1, 3, H, W) and result.batched
    outputs = mask_outputs(2, 3)
    outputs[wire.SCORES][1] = [0.9, 0.1, 0.2]
    result = Segmentation.from_outputs(outputs, batched=True)
    assert result.best_index().tolist() == [1, 0]
    best = result.best()
    assert best.shape == (2, H, W)
    assert np.array_equal(best[1], outputs[wire.MASKS][1, 0])


def test_generated_masks_decode_the_servers_rle():
    from pycocotools import mask as coco_mask

    masks = np.zeros((2, H, W), np.uint8)
    masks[0, 2:5, 3:9] = 1
    masks[1, 10:, :4] = 1
    encoded = [coco_mask.encode(np.asfortranarray(m)) for m in masks]
    outputs = {
        wire.RLE_COUNTS: np.array([e["counts"] for e in encoded], dtype=np.object_),
        wire.GENERATED_BOXES: np.array([[3, 2, 6, 3], [0, 10, 4, 14]], np.float32),
        wire.AREAS: np.array([18, 56], np.int64),
        wire.PREDICTED_IOUS: np.array([0.9, 0.8], np.float32),
        wire.STABILITY_SCORES: np.array([0.97, 0.96], np.float32),
        wire.GENERATED_POINTS: np.array([[4, 3], [1, 12]], np.float32),
        wire.CROP_BOXES: np.tile(np.array([0, 0, W, H], np.float32), (2, 1)),
        wire.ORIGINAL_SIZE: np.array([H, W], np.int32),
    }
    generated = generated_masks(outputs)
    assert len(generated) == 2
    for mask, expected in zip(generated, masks):
        assert mask.segmentation.dtype == bool and np.array_equal(
            mask.segmentation, expected.astype(bool)
        )
        assert mask.rle["size"] == [H, W] and isinstance(mask.rle["counts"], str)
    assert generated[1].bbox == [0.0, 10.0, 4.0, 14.0] and generated[1].area == 56
    assert generated[0].point_coords == [[4.0, 3.0]] and generated[0].crop_box == [0.0, 0.0, W, H]
    record = generated[0].to_dict()
    assert set(record) == {
        "segmentation",
        "area",
        "bbox",
        "predicted_iou",
        "point_coords",
        "stability_score",
        "crop_box",
    }
    assert record["predicted_iou"] == pytest.approx(0.9)


# Client calls, with the transport replaced by a recorder --------------------------------


class RecordingTransport:
    """Stands in for Transport: records each call, answers from `answers[model]`."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def infer(self, model, tensors, outputs):
        self.calls.append((model, dict(tensors), outputs))
        return self.answers[model]


def client_with(answers, model_prefix=""):
    client = Sam2Client(f"localhost:{unused_port()}", model_prefix=model_prefix)
    client._transport = RecordingTransport(answers)
    return client


def test_segment_sends_image_and_prompts(png_file):
    path, _ = png_file
    client = client_with({"sam2_segment": mask_outputs(2, 1)}, model_prefix="sam2_")
    result = client.segment(path, box=[[0, 0, 4, 4], [1, 1, 9, 9]], multimask_output=False)
    model, tensors, outputs = client._transport.calls[0]
    assert model == "sam2_segment" and outputs == wire.MASK_OUTPUTS
    assert set(tensors) == {wire.IMAGE, wire.BOXES, wire.MULTIMASK_OUTPUT}
    assert result.masks.shape == (2, 1, H, W)


def test_session_lifecycle():
    image_id = b"4f1c0ffee"
    answer = {
        wire.IMAGE_ID: np.array([image_id], np.object_),
        wire.ORIGINAL_SIZE: np.array([H, W], np.int32),
        **mask_outputs(1, 3),
    }
    client = client_with({"segment_interactive": answer})
    calls = client._transport.calls
    with client.session(np.zeros((H, W, 3), np.uint8)) as session:
        assert session.image_id == image_id.decode() and session.original_size == (H, W)
        assert set(calls[0][1]) == {wire.IMAGE_RAW}
        assert calls[0][2] == (wire.IMAGE_ID, wire.ORIGINAL_SIZE)
        result = session.predict(point_coords=[[3, 4]], point_labels=[1])
        assert result.masks.shape == (3, H, W)
        sent = calls[1][1]
        assert sent[wire.IMAGE_ID].tolist() == [image_id] and wire.IMAGE_RAW not in sent
        assert sent[wire.POINT_COORDS].shape == (1, 1, 2)
    release = calls[2][1]
    assert set(release) == {wire.IMAGE_ID, wire.RELEASE}
    assert release[wire.RELEASE].tolist() == [True] and calls[2][2] == (wire.IMAGE_ID,)
    session.close()
    assert len(calls) == 3  # closing twice sends one release
    with pytest.raises(Sam2ClientError, match="is closed"):
        session.predict(box=[0, 0, 1, 1])


def test_session_exit_keeps_the_original_error():
    class FailingTransport(RecordingTransport):
        def infer(self, model, tensors, outputs):
            raise Sam2ClientError("segment_interactive: unknown or evicted IMAGE_ID x")

    client = Sam2Client(f"localhost:{unused_port()}")
    client._transport = FailingTransport({})
    with pytest.raises(KeyError):
        with InteractiveSession(client, b"x", (H, W)):
            raise KeyError("the caller's error")
    with pytest.raises(Sam2ClientError, match="unknown or evicted"):
        with InteractiveSession(client, b"x", (H, W)):
            pass


def test_encode_then_decode_sends_the_embeddings():
    embeddings = {
        wire.IMAGE_EMBED: np.full((1, 256, 64, 64), 0.5, np.float32),
        wire.HIGH_RES_FEATS_0: np.zeros((1, 32, 256, 256), np.float32),
        wire.HIGH_RES_FEATS_1: np.zeros((1, 64, 128, 128), np.float32),
        wire.ORIGINAL_SIZE: np.array([H, W], np.int32),
    }
    client = client_with({"encode_image": embeddings, "decode_masks": mask_outputs(1, 3)})
    encoded = client.encode(np.zeros((H, W, 3), np.uint8))
    assert encoded.original_size == (H, W) and encoded.image_embed.shape == (1, 256, 64, 64)
    result = client.decode(encoded, point_coords=[[1, 1]], point_labels=[1])
    model, tensors, _ = client._transport.calls[1]
    assert model == "decode_masks"
    assert set(wire.EMBEDDING_TENSORS) <= set(tensors) and wire.IMAGE_RAW not in tensors
    assert tensors[wire.ORIGINAL_SIZE].dtype == np.int32
    assert np.array_equal(tensors[wire.IMAGE_EMBED], embeddings[wire.IMAGE_EMBED])
    assert result.masks.shape == (3, H, W)


# Errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            InferenceServerException("unknown or evicted IMAGE_ID abc", status="400"),
            "segment: unknown or evicted IMAGE_ID abc",
        ),
        (
            InferenceServerException(
                "[StatusCode.INVALID_ARGUMENT] POINT_LABELS must be [N, P]",
                status="StatusCode.INVALID_ARGUMENT",
            ),
            "segment: POINT_LABELS must be [N, P]",
        ),
        (
            InferenceServerException(
                "[request id: <id_unknown>] unexpected shape for input\n'BOXES'", status="400"
            ),
            "segment: unexpected shape for input 'BOXES'",
        ),
        (
            InferenceServerException(
                "ValueError: bad image\n\nAt:\n  model.py(12): execute\n", status="500"
            ),
            "segment: ValueError: bad image",
        ),
        (
            InferenceServerException(
                "in ensemble 'segment', BOXES must be [N, 4]", status="StatusCode.INVALID_ARGUMENT"
            ),
            "segment: BOXES must be [N, 4]",
        ),
        (
            InferenceServerException("segment: internal error: KeyError: 'x'", status="500"),
            "segment: internal error: KeyError: 'x'",
        ),
    ],
)
def test_server_messages_become_one_clean_line(error, expected):
    transport = Transport(f"localhost:{unused_port()}", "http")
    translated = transport.translate(error, "segment")
    assert str(translated) == expected
    assert translated.status == error.status() and translated.model == "segment"
    transport.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_connection_refused(protocol, png_file):
    url = f"localhost:{unused_port()}"
    client = Sam2Client(url, protocol, timeout_s=10)
    with pytest.raises(Sam2ClientError) as error:
        client.is_ready()
    assert str(error.value).startswith(f"server at {url} is not reachable over {protocol}")
    assert "\n" not in str(error.value)
    with pytest.raises(Sam2ClientError, match="not reachable"):
        client.segment(png_file[0], point_coords=[[1, 1]], point_labels=[1])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_silent_server_times_out(protocol):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    url = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(Sam2ClientError, match=f"no answer from the server at {url} within 1 s"):
            Sam2Client(url, protocol, timeout_s=1).is_ready()
    finally:
        listener.close()


# Writers ---------------------------------------------------------------------------------


def example_masks() -> np.ndarray:
    masks = np.zeros((2, H, W), bool)
    masks[0, 3:10, 4:12] = True
    masks[1, 15:, 20:30] = True
    masks[1, 0, 0] = True
    return masks


def test_rle_round_trip_area_and_box():
    mask = example_masks()[0]
    encoded = rle.encode(mask)
    assert encoded["size"] == [H, W] and isinstance(encoded["counts"], str)
    assert np.array_equal(rle.decode(encoded), mask)
    assert rle.area(encoded) == 7 * 8
    assert rle.bbox(encoded) == [4.0, 3.0, 8.0, 7.0]
    assert json.loads(json.dumps(encoded)) == encoded


def test_mask_png_round_trip(tmp_path):
    mask = example_masks()[1]
    path = visualize.write_mask_png(tmp_path / "mask.png", mask)
    with Image.open(path) as written:
        assert written.mode == "L"
        pixels = np.asarray(written)
    assert set(np.unique(pixels)) == {0, 255}
    assert np.array_equal(pixels == 255, mask)


def test_overlay_changes_only_masked_pixels(tmp_path):
    masks = example_masks()
    image = np.full((H, W, 3), 100, np.uint8)
    path = visualize.write_overlay(tmp_path / "overlay.png", image, masks)
    with Image.open(path) as written:
        pixels = np.asarray(written.convert("RGB"))
    assert pixels.shape == image.shape
    inside = masks.any(axis=0)
    assert np.array_equal(pixels[~inside], image[~inside])
    assert (pixels[inside] != 100).any(axis=-1).all()
    assert not np.array_equal(pixels[masks[0]][0], pixels[masks[1]][-1])  # two colors
    with_markers = np.asarray(visualize.overlay(image, [], points=[[16, 12]], labels=[1]))
    assert tuple(with_markers[12, 16]) == visualize.FOREGROUND_COLOR


def test_palette_colors_are_distinct():
    colors = visualize.palette(12)
    assert colors.shape == (12, 3) and len({tuple(c) for c in colors}) == 12


def test_coco_json_round_trip(tmp_path):
    masks = example_masks()
    records = [
        visualize.mask_record(rle.encode(m), 0.5 + i / 10, prompt=i) for i, m in enumerate(masks)
    ]
    path = visualize.write_coco_json(tmp_path / "masks.json", records)
    read = visualize.read_coco_json(path)
    assert [r["prompt"] for r in read] == [0, 1]
    for record, mask in zip(read, masks):
        assert np.array_equal(record["mask"], mask)
        assert record["area"] == int(mask.sum())
    assert read[0]["bbox"] == [4.0, 3.0, 8.0, 7.0] and read[1]["score"] == pytest.approx(0.6)


# Command line ----------------------------------------------------------------------------


def cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("sam2-triton-client: error: ") and "\n" not in err
    assert "Traceback" not in captured.err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["segment", "x.png", "--point", "10;20", "--output", "o"],
            "argument --point: '10;20' is not X,Y",
        ),
        (["segment", "x.png", "--point", "1,2,3,4", "--output", "o"], "is not X,Y or X,Y,LABEL"),
        (
            ["segment", "x.png", "--point", "1,2,5", "--output", "o"],
            "label must be 1 (foreground) or 0",
        ),
        (
            ["segment", "x.png", "--box", "1,2,3", "--output", "o"],
            "argument --box: '1,2,3' is not X0,Y0,X1,Y1",
        ),
        (["segment", "x.png", "--point", "1,2"], "required: --output"),
        (["segment", "x.png", "--output", "o"], "give at least one --point or --box"),
        (
            [
                "segment",
                "x.png",
                "--box",
                "0,0,5,5",
                "--box",
                "1,1,4,4",
                "--point",
                "2,2",
                "--output",
                "o",
            ],
            "--point cannot be combined with several --box",
        ),
        (
            ["generate", "x.png", "--output", "o", "--points-per-side", "many"],
            "invalid int value: 'many'",
        ),
        (
            ["segment", "x.png", "--point", "1,2", "--output", "o", "--protocol", "ws"],
            "invalid choice: 'ws'",
        ),
        ([], "required: COMMAND"),
    ],
)
def test_bad_command_lines(capsys, argv, message):
    assert message in cli_error(capsys, argv)


def test_missing_image_is_one_line(capsys, tmp_path):
    err = cli_error(
        capsys,
        [
            "segment",
            str(tmp_path / "nope.png"),
            "--point",
            "1,2",
            "--output",
            str(tmp_path / "out"),
        ],
    )
    assert "cannot read image" in err and "nope.png" in err


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_cli_unreachable_server(capsys, protocol):
    url = f"localhost:{unused_port()}"
    err = cli_error(capsys, ["health", "--url", url, "--protocol", protocol])
    assert f"server at {url} is not reachable over {protocol}" in err


def test_cli_prompts():
    one = prompts_from_args([(1, 2, 1), (3, 4, 0)], [(0, 0, 9, 9)])
    assert one["point_coords"].shape == (2, 2) and one["point_labels"].tolist() == [1, 0]
    assert one["box"].shape == (4,)
    several = prompts_from_args(None, [(0, 0, 9, 9), (1, 1, 5, 5)])
    assert several["box"].shape == (2, 4) and "point_coords" not in several


class CannedClient:
    """Stands in for Sam2Client in the command line: fixed answers, no server."""

    seen = {}

    def __init__(self, url, protocol, model_prefix, timeout_s):
        CannedClient.seen = {"url": url, "protocol": protocol}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def segment(self, image, multimask_output=True, **prompts):
        CannedClient.seen["prompts"] = prompts
        n = len(np.atleast_2d(prompts["box"])) if "box" in prompts else 1
        outputs = mask_outputs(n, 3 if multimask_output else 1)
        return Segmentation.from_outputs(outputs, batched=np.ndim(prompts.get("box", 0)) == 2)

    def generate_masks(self, image, **settings):
        CannedClient.seen["settings"] = settings
        masks = example_masks()
        outputs = {
            wire.RLE_COUNTS: np.array(
                [rle.encode(m)["counts"].encode() for m in masks], np.object_
            ),
            wire.GENERATED_BOXES: np.array([rle.bbox(rle.encode(m)) for m in masks], np.float32),
            wire.AREAS: masks.sum(axis=(1, 2)).astype(np.int64),
            wire.PREDICTED_IOUS: np.array([0.9, 0.8], np.float32),
            wire.STABILITY_SCORES: np.array([0.95, 0.94], np.float32),
            wire.GENERATED_POINTS: np.zeros((2, 2), np.float32),
            wire.CROP_BOXES: np.tile(np.array([0, 0, W, H], np.float32), (2, 1)),
            wire.ORIGINAL_SIZE: np.array([H, W], np.int32),
        }
        return generated_masks(outputs)


def test_cli_segment_writes_best_masks(monkeypatch, capsys, png_file, tmp_path):
    monkeypatch.setattr("sam2_triton.client.cli.Sam2Client", CannedClient)
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                str(png_file[0]),
                "--box",
                "0,0,9,9",
                "--box",
                "2,2,8,8",
                "--output",
                str(out),
                "--protocol",
                "grpc",
            ]
        )
        == 0
    )
    assert CannedClient.seen["url"] == "localhost:8001"  # the protocol's default port
    assert CannedClient.seen["prompts"]["box"].shape == (2, 4)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["mask_0_1.png", "mask_1_1.png"]
    records = visualize.read_coco_json(out / "masks.json")
    expected = mask_outputs(2, 3)[wire.MASKS]
    assert [(r["prompt"], r["mask_index"]) for r in records] == [(0, 1), (1, 1)]
    assert np.array_equal(records[1]["mask"], expected[1, 1])
    with Image.open(out / "masks" / "mask_1_1.png") as written:
        assert np.array_equal(np.asarray(written) == 255, expected[1, 1])
    with Image.open(out / "overlay.png") as overlay:
        assert overlay.size == (W, H)
    assert "2 mask(s) for 2 prompt(s)" in capsys.readouterr().out


def test_cli_segment_all_masks_single_prompt(monkeypatch, png_file, tmp_path):
    monkeypatch.setattr("sam2_triton.client.cli.Sam2Client", CannedClient)
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                str(png_file[0]),
                "--point",
                "3,4",
                "--point",
                "5,6,0",
                "--box",
                "0,0,9,9",
                "--all-masks",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    prompts = CannedClient.seen["prompts"]
    assert prompts["point_coords"].tolist() == [[3, 4], [5, 6]] and prompts[
        "point_labels"
    ].tolist() == [1, 0]
    assert len(list((out / "masks").glob("mask_0_*.png"))) == 3
    assert len(json.loads((out / "masks.json").read_text())) == 3


def test_cli_generate_writes_every_mask(monkeypatch, capsys, png_file, tmp_path):
    monkeypatch.setattr("sam2_triton.client.cli.Sam2Client", CannedClient)
    out = tmp_path / "gen"
    assert (
        main(
            [
                "generate",
                str(png_file[0]),
                "--points-per-side",
                "8",
                "--stability-score-thresh",
                "0.9",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    settings = CannedClient.seen["settings"]
    assert settings["points_per_side"] == 8 and settings["stability_score_thresh"] == 0.9
    assert settings["box_nms_thresh"] is None
    records = visualize.read_coco_json(out / "masks.json")
    for record, mask in zip(records, example_masks()):
        assert np.array_equal(record["mask"], mask)
        assert set(record) >= {
            "bbox",
            "area",
            "score",
            "predicted_iou",
            "stability_score",
            "crop_box",
        }
    assert len(list((out / "masks").glob("*.png"))) == 2
    assert "2 mask(s)" in capsys.readouterr().out
