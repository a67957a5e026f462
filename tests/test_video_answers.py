"""track_video answers (python_backend/video/answers.py): the answer format a sequence chooses at
START and the response tensors of each kind, built from a FrameResult; no server.

The compact kinds are checked against what they stand for: RLE decodes to the "masks" answer,
small masks are the thresholded resize of the same logits (at the frame's size: the "masks"
answer itself), logits are that resize; and they never make the full-size masks.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2_triton import rle, wire
from sam2_triton.python_backend.boxes import mask_bounds
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.masks import masks_at_original_size
from sam2_triton.python_backend.video.answers import (
    AnswerFormat,
    answer_tensors,
    frame_boxes,
)
from sam2_triton.python_backend.video.device import HostTransfers

FRAME = (90, 120)  # H, W of the frames here


def blob_logits(count: int, seed: int = 0) -> np.ndarray:
    """Smooth low-res logits float32 [count, 1, 256, 256]: a few Gaussian blobs per object."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    planes = []
    for _ in range(count):
        plane = np.full((256, 256), -4.0, np.float32)
        for _ in range(3):
            cy, cx = rng.uniform(30, 226, size=2)
            radius = rng.uniform(8, 40)
            plane += 9.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        planes.append(plane)
    return np.stack(planes)[:, None]


class StandInResult:
    """A FrameResult as the tracker gives it (host scores, device logits, lazy full-size masks
    and boxes) that counts how often its full-size masks or boxes are read."""

    def __init__(self, logits, obj_ids=(2, 5, 9), frame_size=FRAME, frame_idx=3):
        count = len(obj_ids)
        self.frame_idx = frame_idx
        self.obj_ids = list(obj_ids)
        self.scores = np.linspace(0.5, 0.9, count, dtype=np.float32)
        self.object_score_logits = np.linspace(-1.0, 4.0, count, dtype=np.float32)
        self.present = self.object_score_logits > 0
        self.low_res_logits = torch.as_tensor(logits)
        self.frame_size = frame_size
        self.transfers = HostTransfers()
        self.full_size_reads = 0

    @property
    def masks(self) -> np.ndarray:
        self.full_size_reads += 1
        logits = self.low_res_logits.cpu().numpy()
        return masks_at_original_size(logits, self.frame_size)[:, 0]

    @property
    def boxes(self) -> np.ndarray:
        self.full_size_reads += 1
        return mask_bounds(self.masks)[0].astype(np.float32)


def reference_resize(logits: np.ndarray, size) -> np.ndarray:
    """float32 [N, h, w]: F.interpolate of the low-res logits, as the full-size masks are made."""
    tensor = torch.from_numpy(logits)
    return F.interpolate(tensor, size, mode="bilinear", align_corners=False)[:, 0].numpy()


# -- the answer format -------------------------------------------------------------------------


def test_answer_format_from_start_tensors():
    assert AnswerFormat.from_tensors(None, None) == AnswerFormat("masks", None)
    assert AnswerFormat.from_tensors(np.array([b"rle"], np.object_), None).kind == "rle"
    small = AnswerFormat.from_tensors(
        np.array(["small_masks"], np.object_), np.array([64, 48], np.int64)
    )
    assert small == AnswerFormat("small_masks", (64, 48)) and not small.full_size
    logits = AnswerFormat.from_tensors(np.array([b"logits"]), np.array([256, 256], np.int32))
    assert logits.size == (256, 256) and logits.output_size(FRAME) == (256, 256)
    assert AnswerFormat().output_size(FRAME) == FRAME and AnswerFormat().full_size


@pytest.mark.parametrize(
    "kind, size, message",
    [
        ([b"png"], None, "ANSWER is 'png': the answer kinds are masks, rle, small_masks, logits"),
        ([b"masks", b"rle"], None, "ANSWER must hold one string, got 2 elements"),
        ([b"\xff\xfe"], None, "ANSWER is not UTF-8 text"),
        (np.array([3]), None, "ANSWER must be a string \\(BYTES\\), got int64 3"),
        ([b"small_masks"], None, "ANSWER 'small_masks' needs ANSWER_SIZE \\(h, w\\)"),
        ([b"logits"], None, "ANSWER 'logits' needs ANSWER_SIZE"),
        (None, [32, 32], "ANSWER_SIZE is only used with ANSWER small_masks or logits; this "),
        ([b"rle"], [32, 32], "ANSWER_SIZE is only used with ANSWER small_masks or logits"),
        ([b"logits"], [0, 32], "ANSWER_SIZE is \\[0, 32\\]: need \\(h, w\\), each side in 1..8192"),
        ([b"logits"], [32, 8193], "ANSWER_SIZE is \\[32, 8193\\]"),
        ([b"logits"], [-5, 32], "ANSWER_SIZE is \\[-5, 32\\]"),
        ([b"logits"], np.array([32.0, 32.0]), "ANSWER_SIZE must be 2 integers \\(h, w\\)"),
        ([b"logits"], [32, 32, 32], "ANSWER_SIZE must be 2 integers \\(h, w\\), got int64 \\[3\\]"),
    ],
)
def test_bad_answer_formats_are_refused_naming_the_problem(kind, size, message):
    kind = None if kind is None else np.asarray(kind, dtype=getattr(kind, "dtype", np.object_))
    size = None if size is None else np.asarray(size, dtype=getattr(size, "dtype", np.int64))
    with pytest.raises(InputError, match=message):
        AnswerFormat.from_tensors(kind, size)


def test_budget_counts_the_answer_in_its_own_format():
    limit = 3 * 100 * 100 * 4  # three objects of float32 logits at 100x100
    AnswerFormat("logits", (100, 100)).check_budget((4000, 4000), 3, limit)
    with pytest.raises(
        InputError, match="4 objects of logits at 100x100 pixels x 4 bytes = 160000 bytes"
    ):
        AnswerFormat("logits", (100, 100)).check_budget((4000, 4000), 4, limit)
    AnswerFormat("small_masks", (200, 200)).check_budget((4000, 4000), 3, limit)  # 1 byte each
    with pytest.raises(InputError, match="x 1 byte = 160000 .*max_mask_bytes.*smaller ANSWER_SIZE"):
        AnswerFormat("small_masks", (200, 200)).check_budget((4000, 4000), 4, limit)
    for kind in ("masks", "rle"):  # the full-size masks, whatever travels
        with pytest.raises(InputError, match="3 objects of 4000x4000 pixels .*max_mask_bytes"):
            AnswerFormat(kind).check_budget((4000, 4000), 3, limit)
    assert AnswerFormat("rle").answer_bytes(FRAME, 2) == 2 * FRAME[0] * FRAME[1]


# -- answers of each kind ----------------------------------------------------------------------


def test_masks_answer_is_the_full_size_masks_and_their_bounds():
    result = StandInResult(blob_logits(3))
    tensors = answer_tensors(result, AnswerFormat(), state_bytes=77)
    masks = result.masks
    assert tensors[wire.OBJECT_MASKS].shape == (3, *FRAME) and tensors[wire.OBJECT_MASKS].any()
    np.testing.assert_array_equal(tensors[wire.OBJECT_MASKS], masks)
    np.testing.assert_array_equal(tensors[wire.MASK_BOXES], mask_bounds(masks)[0])
    assert tensors[wire.OBJ_IDS].tolist() == [2, 5, 9]
    assert tensors[wire.FRAME_SIZE].dtype == np.int32 and tensors[wire.FRAME_SIZE].tolist() == [
        *FRAME
    ]
    assert tensors[wire.TRACKED_FRAME].tolist() == [3] and tensors[wire.STATE_BYTES].tolist() == [
        77
    ]
    np.testing.assert_array_equal(tensors[wire.PRESENT], [False, True, True])
    # the outputs "masks" does not use are there, with no rows
    assert tensors[wire.OBJECT_RLE_COUNTS].shape == (0,)
    assert tensors[wire.OBJECT_LOGITS].shape == (0, 0, 0)
    assert set(tensors) == set(wire.TRACK_OUTPUTS)


def test_rle_answer_decodes_to_the_masks_answer():
    masks_answer = answer_tensors(StandInResult(blob_logits(3)), AnswerFormat(), 0)
    tensors = answer_tensors(StandInResult(blob_logits(3)), AnswerFormat("rle"), 0)
    counts = tensors[wire.OBJECT_RLE_COUNTS]
    assert counts.dtype == np.object_ and counts.shape == (3,)
    assert all(isinstance(c, bytes) for c in counts)
    size = tensors[wire.FRAME_SIZE].tolist()
    decoded = np.stack([rle.decode(rle.from_counts(c, size)) for c in counts])
    np.testing.assert_array_equal(decoded, masks_answer[wire.OBJECT_MASKS])
    np.testing.assert_array_equal(tensors[wire.MASK_BOXES], masks_answer[wire.MASK_BOXES])
    assert tensors[wire.OBJECT_MASKS].shape == (0, 0, 0)
    assert tensors[wire.OBJECT_LOGITS].shape == (0, 0, 0)


@pytest.mark.parametrize("size", [(45, 60), (256, 256), (200, 300), (17, 23)])
def test_small_masks_are_the_thresholded_resize_of_the_logits(size):
    logits = blob_logits(3, seed=1)
    result = StandInResult(logits)
    tensors = answer_tensors(result, AnswerFormat("small_masks", size), 0)
    masks = tensors[wire.OBJECT_MASKS]
    assert masks.dtype == bool and masks.shape == (3, *size) and masks.any()
    np.testing.assert_array_equal(masks, reference_resize(logits, size) > 0)
    assert result.full_size_reads == 0  # no full-size masks were made
    assert result.transfers.count == 1  # the masks, in one transfer
    np.testing.assert_array_equal(tensors[wire.MASK_BOXES], frame_boxes(masks, FRAME))
    assert tensors[wire.OBJECT_RLE_COUNTS].shape == (0,)
    assert tensors[wire.OBJECT_LOGITS].shape == (0, 0, 0)


@pytest.mark.parametrize("size", [(256, 256), (64, 64), (120, 90)])
def test_logits_answer_is_the_resized_logits(size):
    logits = blob_logits(2, seed=2)
    result = StandInResult(logits, obj_ids=(1, 4))
    tensors = answer_tensors(result, AnswerFormat("logits", size), 0)
    answer = tensors[wire.OBJECT_LOGITS]
    assert answer.dtype == np.float32 and answer.shape == (2, *size)
    if size == (256, 256):  # the decoder's own resolution: the logits as they are
        np.testing.assert_array_equal(answer, logits[:, 0])
    else:
        np.testing.assert_allclose(answer, reference_resize(logits, size), rtol=0, atol=1e-5)
    assert result.full_size_reads == 0 and result.transfers.count == 1
    np.testing.assert_array_equal(tensors[wire.MASK_BOXES], frame_boxes(answer > 0, FRAME))
    assert tensors[wire.OBJECT_MASKS].shape == (0, 0, 0)


def test_small_masks_at_the_frame_size_are_the_masks_answer():
    logits = blob_logits(3, seed=3)
    small = answer_tensors(StandInResult(logits), AnswerFormat("small_masks", FRAME), 0)
    full = answer_tensors(StandInResult(logits), AnswerFormat(), 0)
    for name in (wire.OBJECT_MASKS, wire.MASK_BOXES, wire.OBJECT_SCORES, wire.PRESENT):
        np.testing.assert_array_equal(small[name], full[name], err_msg=name)


def outward(small_boxes: np.ndarray, full_boxes: np.ndarray) -> np.ndarray:
    """[N, 4]: how far each side of `small_boxes` reaches beyond `full_boxes` (frame pixels)."""
    return np.concatenate(
        [full_boxes[:, :2] - small_boxes[:, :2], small_boxes[:, 2:] - full_boxes[:, 2:]], axis=1
    )


@pytest.mark.parametrize("size", [(45, 60), (30, 40), (23, 17), (256, 256), (180, 240), (9, 12)])
def test_sized_answer_boxes_are_near_the_full_size_bounds(size):
    """The boxes of a sized answer reach at most one answer pixel (in frame pixels, rounded up)
    beyond the full-size masks' bounds, and lie within that of them for masks whose parts are
    not thinner than an answer pixel (at 9x12 a thin part may vanish: only the first holds)."""
    logits = blob_logits(8, seed=4)
    full = answer_tensors(StandInResult(logits, obj_ids=range(8)), AnswerFormat(), 0)
    small = answer_tensors(
        StandInResult(logits, obj_ids=range(8)), AnswerFormat("small_masks", size), 0
    )
    pixel = np.ceil([FRAME[1] / size[1], FRAME[0] / size[0]] * 2)
    assert (outward(small[wire.MASK_BOXES], full[wire.MASK_BOXES]) <= pixel).all()
    if size != (9, 12):
        error = np.abs(small[wire.MASK_BOXES] - full[wire.MASK_BOXES])
        assert (error <= pixel).all(), (error.max(axis=0), pixel)


def test_frame_boxes_cover_the_answer_pixels():
    masks = np.zeros((3, 4, 5), bool)
    masks[0, 1, 2] = True  # one answer pixel
    masks[1, :, :] = True  # everything
    boxes = frame_boxes(masks, (8, 15))  # each answer pixel is 2 rows x 3 columns
    assert boxes.tolist() == [[6, 2, 8, 3], [0, 0, 14, 7], [0, 0, 0, 0]]
    np.testing.assert_array_equal(frame_boxes(masks, (4, 5)), mask_bounds(masks)[0])
    # an answer larger than the frame: answer pixels 3..4 of 10 lie in frame column 1 of 3
    wide = np.zeros((1, 1, 10), bool)
    wide[0, 0, 3:5] = True
    assert frame_boxes(wide, (1, 3)).tolist() == [[0, 0, 1, 0]]


def test_rows_follow_ascending_object_ids():
    logits = blob_logits(3, seed=5)
    result = StandInResult(logits, obj_ids=(9, 2, 5))
    tensors = answer_tensors(result, AnswerFormat("logits", (32, 32)), 0)
    assert tensors[wire.OBJ_IDS].tolist() == [2, 5, 9]
    np.testing.assert_allclose(
        tensors[wire.OBJECT_LOGITS], reference_resize(logits, (32, 32))[[1, 2, 0]], atol=1e-5
    )
    np.testing.assert_array_equal(tensors[wire.OBJECT_SCORES], result.scores[[1, 2, 0]])


@pytest.mark.parametrize(
    "answer, used, shape",
    [
        (AnswerFormat(), wire.OBJECT_MASKS, (0, 4, 6)),
        (AnswerFormat("rle"), wire.OBJECT_RLE_COUNTS, (0,)),
        (AnswerFormat("small_masks", (2, 3)), wire.OBJECT_MASKS, (0, 2, 3)),
        (AnswerFormat("logits", (2, 3)), wire.OBJECT_LOGITS, (0, 2, 3)),
    ],
)
def test_nothing_tracked_has_no_rows_in_every_format(answer, used, shape):
    tensors = answer_tensors(None, answer, 123, (4, 6))
    assert set(tensors) == set(wire.TRACK_OUTPUTS)
    assert tensors[used].shape == shape
    assert all(tensors[name].shape[0] == 0 for name in wire.TRACK_OUTPUTS[:4])
    assert tensors[wire.TRACKED_FRAME].tolist() == [-1]
    assert tensors[wire.STATE_BYTES].tolist() == [123]
    assert tensors[wire.FRAME_SIZE].tolist() == [4, 6]
    assert answer_tensors(None, answer, 0)[wire.FRAME_SIZE].tolist() == [0, 0]


@pytest.mark.parametrize(
    "answer", [AnswerFormat(), AnswerFormat("rle"), AnswerFormat("small_masks", (8, 8))]
)
def test_a_frame_without_objects(answer):
    result = StandInResult(np.zeros((0, 1, 256, 256), np.float32), obj_ids=())
    tensors = answer_tensors(result, answer, 0)
    assert tensors[wire.OBJ_IDS].shape == (0,) and tensors[wire.MASK_BOXES].shape == (0, 4)
    assert tensors[wire.ANSWER_OUTPUTS[answer.kind]].shape[0] == 0


def test_answers_of_the_tracker_itself():
    """A real VideoTracker's FrameResult (stand-in networks) in each format."""
    from test_video_tracking import FAKE_SIZE, fake_frame, fake_tracker

    _, tracker = fake_tracker()
    tracker.add_prompt(0, 1, points=np.array([[1.0, 4.0]], np.float32), labels=np.array([1]))
    result = tracker.track(0, fake_frame(0))
    full = answer_tensors(result, AnswerFormat(), 0)
    assert full[wire.OBJECT_MASKS].shape == (1, *FAKE_SIZE) and full[wire.OBJECT_MASKS].any()
    encoded = answer_tensors(result, AnswerFormat("rle"), 0)[wire.OBJECT_RLE_COUNTS]
    decoded = rle.decode(rle.from_counts(encoded[0], FAKE_SIZE))
    np.testing.assert_array_equal(decoded, full[wire.OBJECT_MASKS][0])
    small = answer_tensors(result, AnswerFormat("small_masks", FAKE_SIZE), 0)
    np.testing.assert_array_equal(small[wire.OBJECT_MASKS], full[wire.OBJECT_MASKS])
    np.testing.assert_array_equal(small[wire.MASK_BOXES], full[wire.MASK_BOXES])
    logits = answer_tensors(result, AnswerFormat("logits", (256, 256)), 0)[wire.OBJECT_LOGITS]
    low_res = torch.as_tensor(result.low_res_logits).cpu().numpy()
    np.testing.assert_array_equal(logits, low_res[:, 0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sized_answers_from_logits_on_the_gpu():
    logits = blob_logits(3, seed=6)
    on_cpu = StandInResult(logits)
    on_gpu = StandInResult(torch.from_numpy(logits).cuda())
    for answer in (AnswerFormat("small_masks", (45, 60)), AnswerFormat("logits", (64, 48))):
        expected = answer_tensors(on_cpu, answer, 0)
        got = answer_tensors(on_gpu, answer, 0)
        name = wire.ANSWER_OUTPUTS[answer.kind]
        np.testing.assert_allclose(got[name], expected[name], atol=1e-4)
        np.testing.assert_array_equal(got[wire.MASK_BOXES], expected[wire.MASK_BOXES])
    assert on_gpu.full_size_reads == 0 and on_gpu.transfers.count == 2


# -- the generated config declares the wire's tensors ------------------------------------------


def test_config_template_declares_the_wire_tensors():
    from sam2_triton.python_backend.video.frame_requests import PROMPT_INPUTS, START_ONLY_INPUTS

    text = (Path(__file__).parents[1] / "model_repository/track_video/config.pbtxt.in").read_text()
    inputs_text, outputs_text = text.split("\ninput [")[1].split("\noutput [")
    declared_inputs = set(re.findall(r'name: "(\w+)"', inputs_text))
    declared_outputs = re.findall(r'name: "(\w+)"', outputs_text)
    samurai_inputs = {name for name, _ in wire.SAMURAI_SETTINGS.values()}
    expected = {wire.IMAGE, wire.IMAGE_RAW, wire.FRAME_INDEX, wire.REMOVE_OBJ_IDS}
    expected |= set(PROMPT_INPUTS) | set(START_ONLY_INPUTS) | {wire.TAKE_SNAPSHOT}
    assert declared_inputs == expected - samurai_inputs  # those come from ${samurai_inputs}
    assert declared_outputs == list(wire.TRACK_OUTPUTS) + [wire.SNAPSHOT]
    assert f'name: "{wire.ANSWER}" data_type: TYPE_STRING dims: [ 1 ]' in text
    assert f'name: "{wire.ANSWER_SIZE}" data_type: TYPE_INT64 dims: [ 2 ]' in text
