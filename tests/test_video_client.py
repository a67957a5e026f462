"""The video client without a server: request tensors, sequence flags, the gRPC stream's answer
matching, the `track` command line, frames from folders and video files, the files it writes."""

from __future__ import annotations

import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from tritonclient.utils import InferenceServerException

from sam2_triton import rle, wire
from sam2_triton.client import visualize
from sam2_triton.client.cli import main, video_prompts_from_args
from sam2_triton.client.client import Sam2Client
from sam2_triton.client.errors import Sam2ClientError
from sam2_triton.client.results import VideoFrameResult
from sam2_triton.client.video import (
    FramePrompts,
    SequenceTransport,
    VideoSession,
    mask_tensors,
    point_tensors,
)
from sam2_triton.client.video_io import VideoWriter, encode_frame, open_frames

H, W = 24, 32
OUTPUTS = wire.track_outputs("masks")  # what a session with the default answer reads


def object_masks(frame_index: int, count: int, h: int = H, w: int = W) -> np.ndarray:
    """bool [count, h, w]: object k's mask covers k + frame_index + 1 rows, 4 (k + 1) columns."""
    masks = np.zeros((count, h, w), bool)
    for row in range(count):
        masks[row, : row + frame_index + 1, : 4 * (row + 1)] = True
    return masks


def frame_outputs(
    frame_index: int, obj_ids=(1,), h: int = H, w: int = W, answer="masks", answer_size=None
) -> dict:
    """A `track_video` answer of kind `answer` on frames of h x w (object_masks; at
    `answer_size` for the sized kinds, logits +-4), with the outputs that kind reads."""
    n = len(obj_ids)
    masks = object_masks(frame_index, n, *(answer_size or (h, w)))
    if answer == "rle":
        sent = np.array([r["counts"].encode() for r in rle.encode_masks(masks)], np.object_)
    elif answer == "logits":
        sent = np.where(masks, 4.0, -4.0).astype(np.float32)
    else:
        sent = masks
    return {
        wire.OBJ_IDS: np.array(obj_ids, np.int64),
        wire.ANSWER_OUTPUTS[answer]: sent.reshape(n, *sent.shape[1:]),
        wire.FRAME_SIZE: np.array([h, w], np.int32),
        wire.OBJECT_SCORES: np.full(n, 0.9, np.float32),
        wire.OBJECT_SCORE_LOGITS: np.full(n, 3.0, np.float32),
        wire.PRESENT: np.ones(n, bool),
        wire.MASK_BOXES: np.tile(np.array([0, 0, 4, 1], np.float32), (n, 1)),
        wire.TRACKED_FRAME: np.array([frame_index], np.int64),
        wire.STATE_BYTES: np.array([1000 * (frame_index + 1)], np.int64),
    }


class FakeSequence:
    """Stands in for SequenceTransport: records each request, answers like the server would
    (the frame index it was sent, or the next one; -1 for END)."""

    protocol = "grpc"
    sequence_id = 77

    def __init__(self, fail_tickets=()):
        self.requests = []  # (tensors, start, end)
        self.answer, self.answer_size = "masks", None  # as START chose
        self.answers = {}
        self.fail_tickets = set(fail_tickets)
        self.closed = False
        self.collected = []
        self.outstanding_at_submit = []
        self._next_frame = 0

    def submit(self, tensors, outputs, start=False, end=False):
        if start:
            answer = tensors.get(wire.ANSWER)
            self.answer = "masks" if answer is None else answer[0].decode()
            size = tensors.get(wire.ANSWER_SIZE)
            self.answer_size = None if size is None else tuple(size.tolist())
        assert outputs == wire.track_outputs(self.answer)
        self.outstanding_at_submit.append(self.outstanding)
        ticket = len(self.requests)
        self.requests.append((dict(tensors), start, end))
        if wire.FRAME_INDEX in tensors:
            frame = int(tensors[wire.FRAME_INDEX][0])
        elif wire.IMAGE_RAW in tensors or wire.IMAGE in tensors:
            frame = self._next_frame
        else:
            frame = -1
        if wire.IMAGE_RAW in tensors or wire.IMAGE in tensors:
            self._next_frame = frame + 1
        self.answers[ticket] = frame
        return ticket

    @property
    def outstanding(self):
        return len(self.answers)

    def result(self, ticket, outputs):
        self.collected.append(ticket)
        frame = self.answers.pop(ticket)
        if ticket in self.fail_tickets:
            raise Sam2ClientError(f"track_video: request {ticket} rejected")
        if frame < 0:
            return frame_outputs(-1, obj_ids=(), answer=self.answer, answer_size=self.answer_size)
        return frame_outputs(frame, answer=self.answer, answer_size=self.answer_size)

    def close(self):
        self.closed = True


def pixels(index: int = 0) -> np.ndarray:
    frame = np.zeros((H, W, 3), np.uint8)
    frame[..., 0] = index
    return frame


# Request tensors -------------------------------------------------------------------------


def test_point_rows_are_padded_with_minus_one():
    tensors = point_tensors({5: ([[1, 2], [3, 4], [5, 6]], [1, 0, 1]), 2: ([7, 8], [1])})
    assert tensors[wire.POINT_OBJ_IDS].dtype == np.int64
    assert tensors[wire.POINT_OBJ_IDS].tolist() == [2, 5]  # ascending object id
    coords, labels = tensors[wire.POINT_COORDS], tensors[wire.POINT_LABELS]
    assert coords.dtype == np.float32 and coords.shape == (2, 3, 2)
    assert labels.dtype == np.int32 and labels.shape == (2, 3)
    assert labels.tolist() == [[1, -1, -1], [1, 0, 1]]
    assert coords[0].tolist() == [[7, 8], [0, 0], [0, 0]]
    assert coords[1].tolist() == [[1, 2], [3, 4], [5, 6]]


@pytest.mark.parametrize(
    "points, error, message",
    [
        ({1: ([[1, 2], [3, 4]], [1])}, ValueError, "2 coordinate pair(s) but 1 label(s)"),
        ({1: ([[1, 2, 3]], [1])}, ValueError, "coords must be [P, 2]"),
        ({1: [[1, 2]]}, ValueError, "must be (coords"),
        ({-1: ([[1, 2]], [1])}, ValueError, "object ids must be >= 0"),
        ({"a": ([[1, 2]], [1])}, TypeError, "object ids must be integers"),
    ],
)
def test_bad_point_prompts(points, error, message):
    with pytest.raises(error) as raised:
        point_tensors(points)
    assert message in str(raised.value)


def test_every_prompt_kind_and_removal():
    mask = np.zeros((H, W), bool)
    mask[2:5, 3:9] = True
    tensors = FramePrompts(
        points={3: ([[4, 5]], [1])},
        boxes={1: [1, 2, 10, 12], 0: (0, 0, 5, 5)},
        masks={7: mask},
        remove=[9, 4],
    ).tensors()
    assert set(tensors) == {
        wire.POINT_OBJ_IDS,
        wire.POINT_COORDS,
        wire.POINT_LABELS,
        wire.BOX_OBJ_IDS,
        wire.BOX_PROMPTS,
        wire.MASK_OBJ_IDS,
        wire.MASK_PROMPTS,
        wire.REMOVE_OBJ_IDS,
    }
    assert tensors[wire.BOX_OBJ_IDS].tolist() == [0, 1]
    boxes = tensors[wire.BOX_PROMPTS]
    assert boxes.dtype == np.float32 and boxes.tolist() == [[0, 0, 5, 5], [1, 2, 10, 12]]
    assert tensors[wire.MASK_OBJ_IDS].tolist() == [7]
    masks = tensors[wire.MASK_PROMPTS]
    assert masks.dtype == np.bool_ and masks.shape == (1, H, W) and masks[0].sum() == 18
    remove = tensors[wire.REMOVE_OBJ_IDS]
    assert remove.dtype == np.int64 and remove.tolist() == [9, 4]
    assert FramePrompts().tensors() == {}
    with pytest.raises(ValueError, match="must all be"):
        mask_tensors({1: mask, 2: mask[:-1]})
    with pytest.raises(ValueError, match="must be \\[x0, y0, x1, y1\\]"):
        FramePrompts(boxes={1: [1, 2, 3]}).tensors()


def test_first_request_starts_the_sequence_with_its_settings():
    fake = FakeSequence()
    video = VideoSession(
        fake,
        num_frames=8,
        samurai=True,
        samurai_settings={"kf_score_weight": 0.3, "num_recent_memories": 5},
    )
    first = video.track(pixels(0), boxes={1: [1, 1, 9, 9]})
    video.track(b"\x89PNG-bytes", points={1: ([[3, 3]], [0])})
    tensors, start, end = fake.requests[0]
    assert start and not end
    assert tensors[wire.NUM_FRAMES].dtype == np.int64 and tensors[wire.NUM_FRAMES].tolist() == [8]
    assert tensors[wire.SAMURAI].dtype == np.bool_ and tensors[wire.SAMURAI].tolist() == [True]
    assert tensors["KF_SCORE_WEIGHT"].dtype == np.float32
    assert tensors["NUM_RECENT_MEMORIES"].dtype == np.int32
    assert tensors["NUM_RECENT_MEMORIES"].tolist() == [5]
    assert tensors[wire.IMAGE_RAW].shape == (H, W, 3)
    assert wire.FRAME_INDEX not in tensors  # the server's default: the next frame
    later, start, end = fake.requests[1]
    assert not start and not end
    assert set(later) == {
        wire.IMAGE,
        wire.POINT_OBJ_IDS,
        wire.POINT_COORDS,
        wire.POINT_LABELS,
    }
    assert first.frame_index == 0 and first.masks.shape == (1, H, W)
    assert video.last_frame == 1 and video.state_bytes == 2000


def test_start_without_settings_sends_samurai_false_only():
    fake = FakeSequence()
    VideoSession(fake).track(pixels(), boxes={1: [1, 1, 9, 9]})
    tensors, start, _ = fake.requests[0]
    assert start and tensors[wire.SAMURAI].tolist() == [False]
    assert wire.NUM_FRAMES not in tensors and "KF_SCORE_WEIGHT" not in tensors
    assert wire.ANSWER not in tensors and wire.ANSWER_SIZE not in tensors  # full-size masks


def test_bad_session_settings():
    with pytest.raises(ValueError, match="only used with samurai=True"):
        VideoSession(FakeSequence(), samurai_settings={"kf_score_weight": 0.2})
    with pytest.raises(TypeError, match="unknown SAMURAI setting 'kf'"):
        VideoSession(FakeSequence(), samurai=True, samurai_settings={"kf": 0.2})
    with pytest.raises(ValueError, match="whole number"):
        VideoSession(FakeSequence(), samurai=True, samurai_settings={"num_recent_memories": 2.5})
    with pytest.raises(ValueError, match="num_frames"):
        VideoSession(FakeSequence(), num_frames=0)


def test_correction_sends_the_last_frame_index_and_no_image():
    fake = FakeSequence()
    video = VideoSession(fake)
    with pytest.raises(Sam2ClientError, match="nothing to correct"):
        video.correct(points={1: ([[1, 1]], [1])})
    video.track(pixels(), boxes={1: [1, 1, 9, 9]}, frame_index=4)
    fixed = video.correct(points={1: ([[2, 3]], [0])})
    tensors, start, _ = fake.requests[-1]
    assert not start
    assert wire.IMAGE_RAW not in tensors and wire.IMAGE not in tensors
    assert tensors[wire.FRAME_INDEX].dtype == np.int64
    assert tensors[wire.FRAME_INDEX].tolist() == [4]
    assert fixed.frame_index == 4
    with pytest.raises(ValueError, match="at least one"):
        video.correct()


def test_end_is_an_end_only_request_and_the_context_manager_sends_it():
    fake = FakeSequence()
    with VideoSession(fake) as video:
        video.track(pixels())
    tensors, start, end = fake.requests[-1]
    assert tensors == {} and end and not start
    assert fake.closed and video.ended
    video.end()  # twice: nothing more
    assert len(fake.requests) == 2
    with pytest.raises(Sam2ClientError, match="has ended"):
        video.track(pixels())


def test_a_session_without_requests_ends_without_sending():
    fake = FakeSequence()
    with VideoSession(fake):
        pass
    assert fake.requests == [] and fake.closed


def test_exit_keeps_the_callers_error():
    fake = FakeSequence(fail_tickets={1})  # the END request fails
    with pytest.raises(KeyError), VideoSession(fake) as video:
        video.track(pixels())
        raise KeyError("the caller's error")
    fake = FakeSequence(fail_tickets={1})
    with pytest.raises(Sam2ClientError, match="request 1 rejected"), VideoSession(fake) as video:
        video.track(pixels())
    assert fake.closed


def test_a_rejected_start_is_sent_again():
    fake = FakeSequence(fail_tickets={0})
    video = VideoSession(fake)
    with pytest.raises(Sam2ClientError):
        video.track(pixels())
    video.track(pixels())
    assert [start for _, start, _ in fake.requests] == [True, True]


def test_track_frames_keeps_requests_in_flight_and_yields_in_order():
    fake = FakeSequence()
    video = VideoSession(fake)
    outstanding = []

    def frames():
        for i in range(5):
            outstanding.append(fake.outstanding)
            yield pixels(i)

    prompts = {0: FramePrompts(boxes={1: [1, 1, 9, 9]}), 3: {"points": {1: ([[2, 2]], [1])}}}
    results = list(video.track_frames(frames(), prompts, max_in_flight=3))
    assert [r.frame_index for r in results] == [0, 1, 2, 3, 4]
    assert outstanding == [0, 1, 2, 3, 3]  # the frame is read before waiting on the oldest
    assert fake.outstanding_at_submit == [0, 1, 2, 2, 2]
    sent = [tensors for tensors, _, _ in fake.requests]
    assert [int(t[wire.FRAME_INDEX][0]) for t in sent] == [0, 1, 2, 3, 4]
    assert wire.BOX_OBJ_IDS in sent[0] and wire.POINT_OBJ_IDS in sent[3]
    assert all(wire.BOX_OBJ_IDS not in sent[i] for i in (1, 2, 4))
    assert [start for _, start, _ in fake.requests] == [True, False, False, False, False]
    # A second call continues at the next frame.
    more = list(video.track_frames([pixels(5)], {5: FramePrompts(remove=[1])}))
    assert more[0].frame_index == 5
    assert fake.requests[-1][0][wire.REMOVE_OBJ_IDS].tolist() == [1]
    with pytest.raises(ValueError, match="continues at frame 6"):
        list(video.track_frames([pixels()], {2: FramePrompts(boxes={1: [0, 0, 1, 1]})}))


def test_track_frames_over_http_sends_one_at_a_time():
    fake = FakeSequence()
    fake.protocol = "http"
    assert len(list(VideoSession(fake).track_frames(map(pixels, range(3)), max_in_flight=4))) == 3
    assert fake.outstanding_at_submit == [0, 0, 0]


def test_track_frames_prompts_beyond_the_video():
    video = VideoSession(FakeSequence())
    with pytest.raises(Sam2ClientError, match=r"frame\(s\) \[7\], beyond the last frame \(1\)"):
        list(video.track_frames([pixels(0), pixels(1)], {7: FramePrompts(boxes={1: [0, 0, 1, 1]})}))


def test_track_frames_failure_drains_the_frames_in_flight():
    fake = FakeSequence(fail_tickets={1})
    video = VideoSession(fake)
    seen = []
    with pytest.raises(Sam2ClientError, match="request 1 rejected"):
        for result in video.track_frames((pixels(i) for i in range(5)), max_in_flight=2):
            seen.append(result.frame_index)
    assert seen == [0]
    assert fake.outstanding == 0 and sorted(fake.collected) == [0, 1, 2]


def test_frame_result_rows_by_object():
    result = VideoFrameResult.from_outputs(frame_outputs(2, obj_ids=(3, 8)))
    assert result.obj_ids.tolist() == [3, 8] and result.frame_index == 2
    assert result.mask(8).sum() == 4 * 8 and result.boxes.shape == (2, 4)
    with pytest.raises(KeyError, match="object 5 is not tracked"):
        result.mask(5)
    broken = frame_outputs(0, obj_ids=(1, 2))
    broken[wire.OBJECT_MASKS] = broken[wire.OBJECT_MASKS][:1]
    with pytest.raises(ValueError, match="for 2 object"):
        VideoFrameResult.from_outputs(broken)
    broken = frame_outputs(0, obj_ids=(1, 2), answer="rle")
    broken[wire.OBJECT_RLE_COUNTS] = broken[wire.OBJECT_RLE_COUNTS][:1]
    with pytest.raises(ValueError, match="RLE_COUNTS \\[1\\] for 2 object"):
        VideoFrameResult.from_outputs(broken, "rle")
    with pytest.raises(ValueError, match="MASK_LOGITS \\[0, 0, 0\\] for 2 object"):
        outputs = frame_outputs(0, obj_ids=(1, 2))
        VideoFrameResult.from_outputs(
            {**outputs, wire.OBJECT_LOGITS: np.zeros((0, 0, 0))}, "logits"
        )


# Compact answers ---------------------------------------------------------------------------


def test_answer_is_chosen_at_start_and_results_follow_it():
    fake = FakeSequence()
    video = VideoSession(fake, answer="small_masks", answer_size=(12, 16))
    first = video.track(pixels(0), boxes={1: [1, 1, 9, 9]})
    second = video.track(pixels(1))
    tensors, start, _ = fake.requests[0]
    assert start and tensors[wire.ANSWER].dtype == np.object_
    assert tensors[wire.ANSWER].tolist() == [b"small_masks"]
    assert tensors[wire.ANSWER_SIZE].dtype == np.int64
    assert tensors[wire.ANSWER_SIZE].tolist() == [12, 16]
    assert wire.ANSWER not in fake.requests[1][0] and wire.ANSWER_SIZE not in fake.requests[1][0]
    assert first.answer == "small_masks" and first.frame_size == (H, W)
    np.testing.assert_array_equal(second.masks, object_masks(1, 1, 12, 16))
    assert second.rle is None and second.logits is None
    upscaled = second.frame_masks()  # nearest neighbour: every answer pixel is 2 x 2 pixels
    assert upscaled.shape == (1, H, W)
    np.testing.assert_array_equal(upscaled, second.masks.repeat(2, axis=1).repeat(2, axis=2))
    video.end()
    assert fake.requests[-1][2]  # END read the same outputs (FakeSequence checks them)


def test_rle_answer_decodes_to_the_masks():
    result = VideoFrameResult.from_outputs(frame_outputs(2, obj_ids=(3, 8), answer="rle"), "rle")
    expected = object_masks(2, 2)
    assert [r["size"] for r in result.rle] == [[H, W], [H, W]]
    assert all(isinstance(r["counts"], str) for r in result.rle)
    np.testing.assert_array_equal(result.masks, expected)
    np.testing.assert_array_equal(result.frame_masks(), expected)
    np.testing.assert_array_equal(result.mask(8), expected[1])
    empty = VideoFrameResult.from_outputs(frame_outputs(-1, obj_ids=(), answer="rle"), "rle")
    assert empty.masks.shape == (0, H, W)


def test_logits_answer_upscales_as_the_server_does():
    """Logits at the decoder's 256x256 stand for the full-size masks: upscaled bilinearly here,
    they give the server's "masks" answer (torch's interpolation) but for logits within float
    rounding of 0."""
    import torch
    import torch.nn.functional as F

    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    logits = np.stack(
        [8.0 - np.hypot(yy - 100, xx - 60) / 6.0, 5.0 - np.abs(yy - 180) / 4 - np.abs(xx - 170) / 9]
    ).astype(np.float32)
    outputs = frame_outputs(0, obj_ids=(1, 2), h=270, w=480)
    outputs.pop(wire.OBJECT_MASKS)
    outputs[wire.OBJECT_LOGITS] = logits
    result = VideoFrameResult.from_outputs(outputs, "logits")
    np.testing.assert_array_equal(result.masks, logits > 0)
    server = F.interpolate(
        torch.from_numpy(logits)[:, None], (270, 480), mode="bilinear", align_corners=False
    )
    expected = (server[:, 0] > 0).numpy()
    upscaled = result.frame_masks()
    assert upscaled.shape == (2, 270, 480) and expected.any()
    assert (upscaled != expected).sum() <= 2


@pytest.mark.parametrize(
    "answer, size, message",
    [
        ("png", None, "unknown answer 'png' (known: masks, rle, small_masks, logits)"),
        ("logits", None, "answer 'logits' needs answer_size (h, w)"),
        ("rle", (8, 8), "answer_size is only used with answer small_masks or logits"),
        ("small_masks", (0, 8), "answer_size must be (h, w), two whole numbers >= 1"),
        ("small_masks", (8, 2.5), "two whole numbers"),
        ("small_masks", (8,), "two whole numbers"),
    ],
)
def test_bad_answer_arguments(answer, size, message):
    with pytest.raises(ValueError) as raised:
        VideoSession(FakeSequence(), answer=answer, answer_size=size)
    assert message in str(raised.value)


def test_video_session_from_the_client():
    client = Sam2Client("localhost:1", protocol="grpc", model_prefix="sam2_")
    with client.video_session(sequence_id=12345) as video:
        assert video.sequence_id == 12345 and video.protocol == "grpc"
        assert video._transport.model == "sam2_track_video"
    ids = set()
    for _ in range(20):
        video = client.video_session()
        ids.add(video.sequence_id)
        assert 0 < video.sequence_id < 2**63
        video.end()
    assert len(ids) == 20


# The gRPC stream: answers matched to requests ----------------------------------------------


class _Answer:
    """What tritonclient's stream callback receives as a result."""

    def __init__(self, request_id, frame):
        self._id = request_id
        self._outputs = frame_outputs(frame)

    def get_response(self):
        return type("Response", (), {"id": self._id})()

    def as_numpy(self, name):
        array = self._outputs.get(name)
        return None if array is None else array[None]  # Triton's batch axis: one request


class FakeGrpcClient:
    """tritonclient.grpc.InferenceServerClient's streaming calls; answers when told to."""

    def __init__(self):
        self.callback = None
        self.sent = []  # (request_id, sequence controls)
        self.stopped = None
        self.stream_headers = None

    def start_stream(self, callback, headers=None):
        self.callback = callback
        self.stream_headers = headers

    def async_stream_infer(
        self, model, inputs, outputs, request_id, sequence_id, sequence_start, sequence_end
    ):
        self.sent.append((request_id, sequence_id, sequence_start, sequence_end))

    def answer(self, request_id, frame):
        self.callback(result=_Answer(request_id, frame), error=None)

    def fail(self, message, status=None):
        self.callback(result=None, error=InferenceServerException(msg=message, status=status))

    def stop_stream(self, cancel_requests=False):
        self.stopped = cancel_requests

    def close(self):
        pass


def stream_transport(timeout_s=5.0):
    transport = SequenceTransport("localhost:1", "grpc", "track_video", 99, timeout_s=timeout_s)
    transport._client.close()
    fake = FakeGrpcClient()
    transport._client = fake
    return transport, fake


def test_stream_answers_out_of_order_and_errors_by_request_id():
    transport, fake = stream_transport()
    tickets = [transport.submit({}, OUTPUTS, start=i == 0) for i in range(3)]
    assert [s[1:] for s in fake.sent] == [(99, True, False), (99, False, False), (99, False, False)]
    assert fake.stream_headers == {"sam2-sequence-id": "99"}  # a proxy routes the stream by it
    fake.answer("1", 11)
    fake.fail(f"[request id: {tickets[2]}] frame 3 is not after the last tracked frame 5")
    fake.answer("0", 10)
    first = transport.result(tickets[0], OUTPUTS)
    assert first[wire.TRACKED_FRAME].tolist() == [10]
    with pytest.raises(Sam2ClientError, match="^track_video: frame 3 is not after"):
        transport.result(tickets[2], OUTPUTS)
    assert transport.result(tickets[1], OUTPUTS)[wire.TRACKED_FRAME].tolist() == [11]
    transport.close()
    assert fake.stopped is False  # nothing outstanding: the stream is closed gracefully


def test_stream_error_without_id_goes_to_the_oldest_request():
    transport, fake = stream_transport()
    first = transport.submit({}, OUTPUTS, start=True)
    second = transport.submit({}, OUTPUTS)
    fake.fail(
        "inference request for sequence 99 to model 'track_video' must specify the "
        "START flag on the first request of the sequence"
    )
    fake.answer(str(second), 1)
    with pytest.raises(Sam2ClientError) as raised:
        transport.result(first, OUTPUTS)
    message = str(raised.value)
    assert message.startswith("track_video: inference request for sequence 99")
    assert "does not hold video sequence 99" in message and "\n" not in message
    assert transport.result(second, OUTPUTS)[wire.OBJ_IDS].tolist() == [1]


def test_a_broken_stream_fails_every_outstanding_request_and_later_ones():
    transport, fake = stream_transport()
    tickets = [transport.submit({}, OUTPUTS) for _ in range(2)]
    fake.fail("failed to connect to all addresses", status="StatusCode.UNAVAILABLE")
    for ticket in tickets:
        with pytest.raises(Sam2ClientError, match="not reachable over grpc") as raised:
            transport.result(ticket, OUTPUTS)
        assert "the stream of video sequence 99 broke" in str(raised.value)
    with pytest.raises(Sam2ClientError, match="not reachable over grpc"):
        transport.submit({}, OUTPUTS)


def test_a_silent_stream_times_out():
    transport, fake = stream_transport(timeout_s=0.2)
    ticket = transport.submit({}, OUTPUTS)
    with pytest.raises(
        Sam2ClientError, match="no answer from the server at localhost:1 within 0.2 s"
    ):
        transport.result(ticket, OUTPUTS)
    transport.close()
    assert fake.stopped is True  # the stream was given up: cancelled, not waited for


# HTTP: the sequence controls on the wire ---------------------------------------------------


def test_http_requests_carry_the_sequence_controls():
    bodies, routing = [], []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            header_length = int(self.headers.get("Inference-Header-Content-Length", length))
            bodies.append(json.loads(self.rfile.read(length)[:header_length]))
            routing.append(self.headers.get("sam2-sequence-id"))
            answer = json.dumps(
                {
                    "error": "inference request for sequence 5 to model "
                    "'track_video' must specify the START flag on the first "
                    "request of the sequence"
                }
            ).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = Sam2Client(f"127.0.0.1:{server.server_address[1]}")
        video = client.video_session(sequence_id=5)
        with pytest.raises(Sam2ClientError, match="does not hold video sequence 5") as raised:
            video.track(pixels(), boxes={2: [1, 1, 5, 5]})
        assert raised.value.status == "400"
        parameters = bodies[0]["parameters"]
        assert parameters["sequence_id"] == 5
        assert parameters["sequence_start"] is True and parameters["sequence_end"] is False
        assert routing == ["5"]  # the routing header (docs/deployment.md#several-servers)
        inputs = {i["name"]: i for i in bodies[0]["inputs"]}
        assert inputs["BOX_OBJ_IDS"]["datatype"] == "INT64"
        assert inputs["BOXES"]["shape"] == [1, 1, 4]  # Triton's batch axis first
        assert inputs["IMAGE_RAW"]["datatype"] == "UINT8"
        assert inputs["SAMURAI"]["datatype"] == "BOOL"
        video.end()  # START was rejected: nothing to end
        assert len(bodies) == 1
    finally:
        server.shutdown()
        server.server_close()


# Frames in and out ----------------------------------------------------------------------


def moving_square(count: int, width: int = 64, height: int = 48) -> list:
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), 40, np.uint8)
        frame[10:26, 4 + 6 * i : 20 + 6 * i] = (230, 30, 30)
        frames.append(frame)
    return frames


def test_folder_frames_in_natural_name_order(tmp_path):
    for i, name in enumerate(["f2.png", "f10.png", "f1.png"]):
        Image.fromarray(np.full((H, W, 3), i * 50, np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    source = open_frames(tmp_path)
    assert [p.name for p in source.files] == ["f1.png", "f2.png", "f10.png"]
    assert source.num_frames == 3 and source.size == (W, H) and source.fps == 10.0
    assert [int(f[0, 0, 0]) for f in source.frames()] == [100, 0, 50]


def test_unreadable_sources(tmp_path):
    with pytest.raises(Sam2ClientError, match="no video file or folder of frames"):
        open_frames(tmp_path / "absent.mp4")
    with pytest.raises(Sam2ClientError, match="no frames in folder"):
        open_frames(tmp_path)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 20)
    with pytest.raises(Sam2ClientError, match="cannot read video .*bad.mp4: Invalid data"):
        open_frames(bad)


def test_video_written_then_read_back(tmp_path):
    path = tmp_path / "clip.mp4"
    frames = moving_square(6)
    with VideoWriter(path, fps=12) as writer:
        for frame in frames:
            writer.write(frame)
    source = open_frames(path)
    assert source.num_frames == 6 and source.size == (64, 48) and source.fps == 12.0
    read = list(source.frames())
    assert len(read) == 6 and read[0].shape == (48, 64, 3) and read[0].dtype == np.uint8
    # Lossy, but close: the square's pixels stay red.
    assert np.abs(read[3].astype(int) - frames[3].astype(int)).mean() < 6
    assert read[3][18, 30, 0] > 180 and read[3][18, 30, 1] < 80


def test_odd_sized_frames_are_padded_and_sizes_must_agree(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=5) as writer:
        writer.write(np.zeros((11, 15, 3), np.uint8))
        with pytest.raises(ValueError, match="the video is 15x11"):
            writer.write(np.zeros((12, 15, 3), np.uint8))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (16, 12)


def test_frame_encodings():
    frame = moving_square(1)[0]
    assert encode_frame(frame, "raw") is frame
    png = encode_frame(frame, "png")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), frame)
    assert encode_frame(frame, "jpeg")[:2] == b"\xff\xd8"
    with pytest.raises(ValueError, match="unknown frame encoding"):
        encode_frame(frame, "gif")


def test_object_colors_stay_with_the_object():
    np.testing.assert_array_equal(visualize.object_colors([2, 0]), visualize.palette(3)[[2, 0]])
    assert visualize.object_colors([]).shape == (0, 3)


# The `track` command ---------------------------------------------------------------------


def cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("sam2-triton-client: error: ") and "\n" not in err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--point", "0:1:10"], "'0:1:10' is not FRAME:OBJ:X,Y or FRAME:OBJ:X,Y:LABEL"),
        (["--point", "a:1:10,20"], "'a:1:10,20' is not FRAME:OBJ:X,Y"),
        (["--point", "0:1:10,20:5"], "(label 1 foreground, 0 background)"),
        (["--point", "0:-1:10,20"], "frame and object id must be >= 0"),
        (["--point", "10,20"], "'10,20' is not FRAME:OBJ:X,Y"),
        (["--box", "0:1:1,2,3"], "'0:1:1,2,3' is not FRAME:OBJ:X0,Y0,X1,Y1"),
        (["--box", "0:1:1,2,3,4:1"], "is not FRAME:OBJ:X0,Y0,X1,Y1"),
        (["--box", "0:1:1,2,3,4", "--box", "0:1:2,2,3,4"], "two --box for object 1 on frame 0"),
        ([], "give at least one --point or --box"),
        (["--box", "0:1:1,2,3,4", "--max-in-flight", "0"], "must be > 0"),
        (["--box", "0:1:1,2,3,4", "--mask-format", "gif"], "invalid choice: 'gif'"),
        (["--box", "0:1:1,2,3,4", "--kf-score-weight", "0.2"], "need --samurai"),
        (["--box", "0:1:1,2,3,4", "--answer", "png"], "invalid choice: 'png'"),
        (["--box", "0:1:1,2,3,4", "--answer", "logits"], "--answer logits needs --answer-size"),
        (
            ["--box", "0:1:1,2,3,4", "--answer-size", "8x8"],
            "--answer-size is only used with --answer small_masks or logits",
        ),
        (["--box", "0:1:1,2,3,4", "--answer-size", "8by8"], "'8by8' is not HxW (e.g. 256x256)"),
        (["--box", "0:1:1,2,3,4", "--answer-size", "0x8"], "height and width must be >= 1"),
    ],
)
def test_bad_track_command_lines(capsys, tmp_path, argv, message):
    assert message in cli_error(capsys, ["track", str(tmp_path), *argv])


def test_track_source_problems(capsys, tmp_path):
    err = cli_error(capsys, ["track", str(tmp_path / "none.mp4"), "--box", "0:1:1,2,3,4"])
    assert "no video file or folder of frames at" in err
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(pixels(i)).save(folder / f"{i}.png")
    err = cli_error(capsys, ["track", str(folder), "--box", "3:1:1,2,3,4", "--point", "1:1:2,2"])
    assert f"prompts on frame(s) [3], but {folder} has 3 frames (0-2)" in err


def test_video_prompts_from_args_group_clicks_per_object_and_frame():
    prompts = video_prompts_from_args(
        [(0, 1, 5.0, 6.0, 1), (0, 1, 7.0, 8.0, 0), (2, 4, 1.0, 1.0, 1)],
        [(0, 2, (1.0, 1.0, 9.0, 9.0))],
    )
    assert sorted(prompts) == [0, 2]
    assert prompts[0].points == {1: ([[5.0, 6.0], [7.0, 8.0]], [1, 0])}
    assert prompts[0].boxes == {2: (1.0, 1.0, 9.0, 9.0)}
    assert prompts[2].boxes is None and list(prompts[2].points) == [4]


SESSIONS = []  # (FakeSequence, VideoSession) of each CannedVideoClient.video_session


class CannedVideoClient:
    """Stands in for Sam2Client in the command: sessions over a FakeSequence."""

    def __init__(self, url, protocol, model_prefix, timeout_s):
        self.protocol = protocol

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def video_session(
        self,
        num_frames=None,
        samurai=False,
        samurai_settings=None,
        answer="masks",
        answer_size=None,
    ):
        fake = FakeSequence()
        fake.protocol = self.protocol
        session = VideoSession(fake, num_frames, samurai, samurai_settings, answer, answer_size)
        SESSIONS.append((fake, session))
        return session


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=8) as writer:
        for frame in moving_square(4, width=W, height=H):
            writer.write(frame)
    return path


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_track_writes_overlay_video_and_mask_pngs(monkeypatch, capsys, tmp_path, clip, protocol):
    monkeypatch.setattr("sam2_triton.client.cli.Sam2Client", CannedVideoClient)
    SESSIONS.clear()
    out = tmp_path / "out"
    code = main(
        [
            "track",
            str(clip),
            "--box",
            "0:1:1,1,9,9",
            "--point",
            "2:1:4,4:0",
            "--num-frames-known",
            "--samurai",
            "--num-recent-memories",
            "3",
            "--frame-encoding",
            "png",
            "--protocol",
            protocol,
            "--output",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "4 frame(s) tracked" in capsys.readouterr().out
    fake, session = SESSIONS[0]
    first = fake.requests[0][0]
    assert first[wire.NUM_FRAMES].tolist() == [4] and first[wire.SAMURAI].tolist() == [True]
    assert first["NUM_RECENT_MEMORIES"].tolist() == [3]
    assert wire.IMAGE in first  # PNG bytes
    assert wire.POINT_LABELS in fake.requests[2][0]
    assert session.ended and fake.requests[-1][2]  # END last
    overlay = open_frames(out / "overlay.mp4")
    assert overlay.num_frames == 4 and overlay.size == (W, H) and overlay.fps == 8.0
    pngs = sorted(p.name for p in (out / "masks").iterdir())
    assert pngs == [f"0000{i}_obj1.png" for i in range(4)]
    mask = np.asarray(Image.open(out / "masks" / "00002_obj1.png")) > 0
    np.testing.assert_array_equal(mask, frame_outputs(2)[wire.OBJECT_MASKS][0])


def test_track_masks_json_round_trips_through_pycocotools(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("sam2_triton.client.cli.Sam2Client", CannedVideoClient)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(pixels(i)).save(folder / f"frame_{i:03d}.jpg")
    out = tmp_path / "out"
    assert (
        main(
            [
                "track",
                str(folder),
                "--box",
                "0:1:1,1,9,9",
                "--mask-format",
                "rle",
                "--output",
                str(out),
            ]
        )
        == 0
    ), capsys.readouterr().err
    records = json.loads((out / "masks.json").read_text())
    assert [(r["frame"], r["obj_id"]) for r in records] == [(0, 1), (1, 1), (2, 1)]
    for record in records:
        expected = frame_outputs(record["frame"])[wire.OBJECT_MASKS][0]
        segmentation = {
            **record["segmentation"],
            "counts": record["segmentation"]["counts"].encode(),
        }
        np.testing.assert_array_equal(coco_mask.decode(segmentation).astype(bool), expected)
        assert record["area"] == int(expected.sum()) == int(coco_mask.area(segmentation))
        assert record["present"] is True and record["score"] == pytest.approx(0.9)
        assert record["object_score_logit"] == pytest.approx(3.0)
        assert record["mask_box"] == [0, 0, 4, 1]
    assert not (out / "masks").exists()
    assert open_frames(out / "overlay.mp4").num_frames == 3


def test_track_with_rle_answers_writes_the_servers_rle(monkeypatch, capsys, tmp_path, clip):
    monkeypatch.setattr("sam2_triton.client.cli.Sam2Client", CannedVideoClient)
    SESSIONS.clear()
    out = tmp_path / "out"
    argv = ["track", str(clip), "--box", "0:1:1,1,9,9", "--answer", "rle", "--mask-format", "rle"]
    assert main([*argv, "--output", str(out)]) == 0, capsys.readouterr().err
    fake, session = SESSIONS[0]
    assert fake.requests[0][0][wire.ANSWER].tolist() == [b"rle"] and session.answer == "rle"
    records = json.loads((out / "masks.json").read_text())
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    for record in records:
        sent = frame_outputs(record["frame"], answer="rle")[wire.OBJECT_RLE_COUNTS][0]
        assert record["segmentation"] == {"size": [H, W], "counts": sent.decode()}
        assert record["area"] == int(object_masks(record["frame"], 1).sum())
    assert open_frames(out / "overlay.mp4").num_frames == 4


@pytest.mark.parametrize("answer", ["small_masks", "logits"])
def test_track_with_sized_answers_writes_them_at_their_size(
    monkeypatch, capsys, tmp_path, clip, answer
):
    monkeypatch.setattr("sam2_triton.client.cli.Sam2Client", CannedVideoClient)
    SESSIONS.clear()
    out = tmp_path / "out"
    argv = ["track", str(clip), "--box", "0:1:1,1,9,9", "--answer", answer, "--answer-size"]
    assert main([*argv, "12x16", "--output", str(out)]) == 0, capsys.readouterr().err
    first = SESSIONS[0][0].requests[0][0]
    assert first[wire.ANSWER_SIZE].tolist() == [12, 16]
    mask = np.asarray(Image.open(out / "masks" / "00002_obj1.png")) > 0
    np.testing.assert_array_equal(mask, object_masks(2, 1, 12, 16)[0])
    overlay = open_frames(out / "overlay.mp4")  # drawn at the frame's size
    assert overlay.num_frames == 4 and overlay.size == (W, H)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_server_is_one_line(protocol):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Sam2Client(f"127.0.0.1:{port}", protocol=protocol, timeout_s=10)
    for attempt in ("track", "track_frames"):
        video = client.video_session()
        with pytest.raises(Sam2ClientError, match=f"not reachable over {protocol}") as raised:
            if attempt == "track":
                video.track(pixels())
            else:
                list(video.track_frames(map(pixels, range(3))))
        assert "\n" not in str(raised.value)
        video.end()


def test_end_of_a_sequence_the_server_forgot_is_no_error():
    class Forgotten(FakeSequence):
        def result(self, ticket, outputs):
            if self.requests[ticket][2]:  # the END request
                raise Sam2ClientError(
                    "track_video: inference request for sequence 77 to model "
                    "'track_video' must specify the START flag on the first "
                    "request of the sequence"
                )
            return super().result(ticket, outputs)

    fake = Forgotten()
    with VideoSession(fake) as video:
        video.track(pixels())
    assert fake.closed and video.ended
