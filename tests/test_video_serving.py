"""The track_video sequence model on a real Triton server (the `served` fixture, CPU profile).

Requests are built with tritonclient directly, so these tests pin the wire contract
(sam2_triton/wire.py, model_repository/README.md); the client library has its own tests.

* parity: 8 frames, 2 objects (a click, a box) on frame 0, against SAM2VideoPredictor;
* isolation: four sequences interleaved from four clients give what each gives alone;
* bad input: each mistake gets a per-request error naming it, and the server stays healthy;
* sequence ids (string and integer, whole), refused STARTs, a full server, bounded indices;
* answers: RLE, small masks and logits next to full-size masks on the same frames.
"""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest
from test_video_tracking import (
    BOX,
    CLICK,
    HEIGHT,
    NUM_FRAMES,
    WIDTH,
    iou,
    synthetic_frames,
    write_jpeg_frames,
)

from sam2_triton import rle, wire
from sam2_triton.benchmarks.all_sizes import VIDEO_PARITY_FRAMES_ENV

# Every test here talks to a server; the idle-eviction test starts its own (served_short_idle).
pytestmark = pytest.mark.served

MODEL = "track_video"
# Frames of the parity video: NUM_FRAMES, fewer when the environment variable says so (the
# all-sizes run, benchmarks/all_sizes.py, keeps the large sizes' CPU time down with it).
PARITY_FRAMES = int(os.environ.get(VIDEO_PARITY_FRAMES_ENV, NUM_FRAMES))
_next_id = iter(range(1000, 10**6))


def png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


class Sequence:
    """One video sequence over raw tritonclient calls (HTTP or gRPC)."""

    def __init__(self, url: str, protocol: str, sequence_id: int | str | None = None) -> None:
        module = __import__(f"tritonclient.{protocol}", fromlist=["InferenceServerClient"])
        self.module = module
        self.protocol = protocol
        self.client = module.InferenceServerClient(url)
        self.sequence_id = next(_next_id) if sequence_id is None else sequence_id
        self.started = False

    def send(self, frame=None, *, start=None, end=False, encoded=True, timeout_s=None, **tensors):
        """One request; `timeout_s` (gRPC only) gives up waiting for the answer after that."""
        start = (not self.started) if start is None else start
        arrays = dict(tensors)
        if frame is not None:
            if encoded:
                arrays["IMAGE"] = np.array([png(frame)], dtype=np.object_)
            else:
                arrays["IMAGE_RAW"] = frame
        inputs = []
        for name, array in arrays.items():
            array = np.asarray(array)[None]  # Triton's batch axis: one request
            dtype = "BYTES" if array.dtype == np.object_ else self.module_dtype(array)
            tensor = self.module.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        options = {} if timeout_s is None else {"client_timeout": timeout_s}
        result = self.client.infer(
            MODEL,
            inputs,
            sequence_id=self.sequence_id,
            sequence_start=start,
            sequence_end=end,
            **options,
        )
        self.started = True
        return {name: result.as_numpy(name)[0] for name in wire.TRACK_OUTPUTS}

    @staticmethod
    def module_dtype(array: np.ndarray) -> str:
        from tritonclient.utils import np_to_triton_dtype

        return np_to_triton_dtype(array.dtype)


def click_prompt(obj_id: int, xy, label: int = 1) -> dict:
    return dict(
        POINT_OBJ_IDS=np.array([obj_id], np.int64),
        POINT_COORDS=np.array([[xy]], np.float32),
        POINT_LABELS=np.array([[label]], np.int32),
    )


def box_prompt(obj_id: int, box) -> dict:
    return dict(BOX_OBJ_IDS=np.array([obj_id], np.int64), BOXES=np.array([box], np.float32))


def reference_logits(model, frames_dir, num_frames):
    """{frame: mask logits [2, H, W]} of SAM2VideoPredictor (obj 1 click, obj 2 box, frame 0)."""
    import torch

    with torch.inference_mode():
        state = model.init_state(str(frames_dir))
        model.add_new_points_or_box(state, 0, obj_id=1, points=CLICK[0], labels=CLICK[1])
        model.add_new_points_or_box(state, 0, obj_id=2, box=BOX)
        out = {
            t: (list(ids), logits[:, 0].float().numpy())
            for t, ids, logits in model.propagate_in_video(state)
        }
    assert sorted(out) == list(range(num_frames))
    return out


@pytest.mark.slow
def test_served_tracking_matches_sam2_video_predictor(served, worst_values, tmp_path):

    frames_dir = tmp_path / "frames"
    # the server gets the JPEG-decoded pixels the reference reads, losslessly (PNG)
    decoded = write_jpeg_frames(frames_dir, synthetic_frames(PARITY_FRAMES))

    start = time.perf_counter()
    reference = reference_logits(served.exported.model, frames_dir, PARITY_FRAMES)
    reference_s = time.perf_counter() - start

    sequence = Sequence(served.grpc_url, "grpc")
    start = time.perf_counter()
    results = []
    for t, frame in enumerate(decoded):
        prompts = {}
        if t == 0:
            prompts = {
                **click_prompt(1, CLICK[0][0]),
                **box_prompt(2, BOX),
                "NUM_FRAMES": np.array([PARITY_FRAMES], np.int64),
            }
        results.append(sequence.send(frame, end=t == PARITY_FRAMES - 1, **prompts))
    served_s = time.perf_counter() - start

    ious = []
    for t, result in enumerate(results):
        ref_ids, ref_logits = reference[t]
        assert result["OBJ_IDS"].tolist() == ref_ids == [1, 2]
        assert result["TRACKED_FRAME"].tolist() == [t]
        masks = result["MASKS"]
        assert masks.shape == (2, HEIGHT, WIDTH) and masks.dtype == bool
        assert masks.any(axis=(1, 2)).all(), f"frame {t}: empty masks"
        np.testing.assert_array_equal(result["PRESENT"], result["OBJECT_SCORE_LOGITS"] > 0)
        ious.append([iou(masks[i], ref_logits[i] > 0) for i in range(2)])
        for i in range(2):  # boxes are the masks' extents (inclusive pixels)
            rows, cols = np.flatnonzero(masks[i].any(1)), np.flatnonzero(masks[i].any(0))
            assert result["MASK_BOXES"][i].tolist() == [cols[0], rows[0], cols[-1], rows[-1]]
    ious = np.array(ious)
    worst_values.record("video_iou", ious.min())
    print(
        f"\nreference {reference_s:.1f} s, served {served_s:.1f} s; IoU per frame "
        f"(obj 1, obj 2):\n{np.array2string(ious, precision=5)}"
    )
    assert ious.min() >= 0.99
    assert results[-2]["STATE_BYTES"][0] > 0
    assert results[-1]["STATE_BYTES"][0] == 0  # the last frame carried END: freed at once


# -- sequences do not leak into each other -----------------------------------------------------


def video(seed: int, num_frames: int) -> list:
    """A different video per seed: the synthetic one rolled and colour-shifted."""
    return [
        np.roll(frame, shift=7 * seed, axis=1) ^ np.uint8(16 * seed)
        for frame in synthetic_frames(num_frames)
    ]


def disc_click(obj_id: int, seed: int) -> dict:
    return click_prompt(obj_id, [CLICK[0][0][0] + 7 * seed, CLICK[0][0][1]])


def square_box(obj_id: int, seed: int) -> dict:
    return box_prompt(obj_id, [BOX[0] + 7 * seed, BOX[1], BOX[2] + 7 * seed, BOX[3]])


# (protocol, prompts on frame 0, START options, prompts on frame 1) per sequence (= seed)
SCENARIOS = [
    ("grpc", disc_click(1, 0), {}, {}),
    ("http", square_box(4, 1), {}, {}),
    (
        "grpc",
        {**disc_click(2, 2), **square_box(3, 2)},
        {"SAMURAI": np.array([True]), "KF_SCORE_WEIGHT": np.array([0.4], np.float32)},
        {},
    ),
    ("http", disc_click(5, 3), {"NUM_FRAMES": np.array([2], np.int64)}, click_prompt(6, [80, 60])),
]
ISOLATION_FRAMES = 2


def run_scenario(served, index: int, barrier=None) -> list:
    protocol, first, options, second = SCENARIOS[index]
    url = served.grpc_url if protocol == "grpc" else served.http_url
    sequence = Sequence(url, protocol)
    frames = video(index, ISOLATION_FRAMES)
    outputs = []
    for t, frame in enumerate(frames):
        if barrier is not None:
            barrier.wait()
        prompts = {**first, **options} if t == 0 else second
        outputs.append(
            sequence.send(frame, encoded=index % 2 == 0, end=t == ISOLATION_FRAMES - 1, **prompts)
        )
    return outputs


def in_lockstep(run, count: int) -> list:
    """`run(i, barrier)` for i in 0..count-1, each on its own thread, the threads meeting at
    `barrier` where `run` waits on it; the results in order (fails with every error raised)."""
    results: list = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count, timeout=600)

    def worker(i: int) -> None:
        try:
            results[i] = run(i, barrier)
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


@pytest.mark.slow
def test_interleaved_sequences_give_what_each_gives_alone(served):
    alone = [run_scenario(served, i) for i in range(len(SCENARIOS))]
    together = in_lockstep(lambda i, barrier: run_scenario(served, i, barrier), len(SCENARIOS))
    for i, (solo, mixed) in enumerate(zip(alone, together)):
        for t, (a, b) in enumerate(zip(solo, mixed)):
            assert a["OBJ_IDS"].tolist() == b["OBJ_IDS"].tolist()
            assert a["MASKS"].any(), f"sequence {i} frame {t}: empty masks"
            for name in ("MASKS", "SCORES", "OBJECT_SCORE_LOGITS", "MASK_BOXES"):
                np.testing.assert_array_equal(
                    a[name], b[name], err_msg=f"sequence {i} frame {t} {name}"
                )
    assert alone[2][0]["OBJ_IDS"].tolist() == [2, 3]  # SAMURAI with two objects
    assert alone[3][1]["OBJ_IDS"].tolist() == [5, 6]  # an object added on frame 1


# -- bad input ---------------------------------------------------------------------------------

SMALL = synthetic_frames(1)[0][:48, :64]


def expect_error(sequence: Sequence, match: str, frame=None, **kwargs) -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        sequence.send(frame, **kwargs)
    message = str(info.value)
    assert match in message, message
    return message


def assert_healthy(served, protocol: str) -> None:
    sequence = Sequence(served.grpc_url if protocol == "grpc" else served.http_url, protocol)
    result = sequence.send(SMALL, end=True)  # no object: no network call
    assert result["OBJ_IDS"].shape == (0,) and result["MASKS"].shape == (0, 48, 64)
    assert sequence.client.is_server_ready() and sequence.client.is_model_ready(MODEL)


def url(served, protocol):
    return served.grpc_url if protocol == "grpc" else served.http_url


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_frame_without_start_and_after_end(served, protocol):
    sequence = Sequence(url(served, protocol), protocol)
    expect_error(sequence, "must specify the START flag", SMALL, start=False)
    sequence.send(SMALL, start=True, end=True)
    expect_error(sequence, "must specify the START flag", SMALL, start=False)
    assert_healthy(served, protocol)


# (message, frame, extra tensors) of requests a sequence refuses without losing its state
REFUSED_MIDWAY = {
    "unknown object": (
        "cannot remove objects [7]: the sequence tracks no objects",
        None,
        dict(REMOVE_OBJ_IDS=np.array([7], np.int64)),
    ),
    "size change": ("frame 1 is 60x40 but this sequence's frames are 64x48", SMALL[:40, :60], {}),
    "corrupt bytes": (
        "IMAGE",
        None,
        dict(IMAGE=np.array([b"\x89PNG\r\n not an image"], dtype=np.object_)),
    ),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", sorted(REFUSED_MIDWAY))
def test_refused_request_leaves_the_sequence_usable(served, protocol, case):
    message, frame, tensors = REFUSED_MIDWAY[case]
    sequence = Sequence(url(served, protocol), protocol)
    sequence.send(SMALL)
    expect_error(sequence, message, frame, **tensors)
    result = sequence.send(SMALL, end=True)  # the sequence goes on at the next frame
    assert result["TRACKED_FRAME"].tolist() == [1]
    assert_healthy(served, protocol)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_too_many_objects(served, protocol):
    from conftest import SERVED_VIDEO_SETTINGS

    limit = SERVED_VIDEO_SETTINGS["max_objects"]
    sequence = Sequence(url(served, protocol), protocol)
    n = limit + 1
    expect_error(
        sequence,
        f"at most {limit} objects; this request would make it {n}",
        SMALL,
        POINT_OBJ_IDS=np.arange(n, dtype=np.int64),
        POINT_COORDS=np.full((n, 1, 2), 10, np.float32),
        POINT_LABELS=np.ones((n, 1), np.int32),
    )
    result = sequence.send(start=False, end=True)  # a request with no tensors: END only
    assert result["TRACKED_FRAME"].tolist() == [-1] and result["OBJ_IDS"].shape == (0,)
    assert_healthy(served, protocol)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_other_mistakes_name_the_problem(served, protocol):
    sequence = Sequence(url(served, protocol), protocol)
    expect_error(
        sequence,
        "prompts without an image correct the last tracked frame",
        **click_prompt(1, [5, 5]),
    )
    sequence.send(SMALL, start=True)
    expect_error(
        sequence,
        "NUM_FRAMES can only be sent with the sequence's START",
        SMALL,
        NUM_FRAMES=np.array([4], np.int64),
    )
    expect_error(
        sequence,
        "frame 0 is not after the last tracked frame 0",
        SMALL,
        FRAME_INDEX=np.array([0], np.int64),
    )
    expect_error(sequence, "lies far outside the 64x48 image", SMALL, **click_prompt(1, [500, 5]))
    expect_error(
        sequence,
        "kf_score_weight must be in [0, 1]",
        SMALL,
        start=True,
        SAMURAI=np.array([True]),
        KF_SCORE_WEIGHT=np.array([3.0], np.float32),
    )
    # the refused START left no state behind: the next frame must START again
    expect_error(sequence, "could not start (kf_score_weight", SMALL, start=False)
    assert sequence.send(SMALL, start=True)["TRACKED_FRAME"].tolist() == [0]
    # an END request that fails still ends the sequence
    expect_error(
        sequence, "cannot remove objects [9]", end=True, REMOVE_OBJ_IDS=np.array([9], np.int64)
    )
    expect_error(sequence, "must specify the START flag", SMALL, start=False)
    assert_healthy(served, protocol)


# -- sequence ids, refused STARTs, a full server, frame-index bound ---------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_string_sequence_ids_sharing_length_and_prefix_are_distinct(served, protocol):
    """Issue item 3: "video-a" and "video-b" reached the model as one UINT64 CORRID (the
    string's length and first bytes): B's START replaced A's tracker, A's next frame returned
    B's object and A's END freed B's state."""
    n = next(_next_id)
    a = Sequence(url(served, protocol), protocol, f"video-a-{n}")
    b = Sequence(url(served, protocol), protocol, f"video-b-{n}")
    number = Sequence(url(served, protocol), protocol, n)  # the integer id is yet another
    assert a.send(SMALL, **click_prompt(1, [20, 20]))["OBJ_IDS"].tolist() == [1]
    assert b.send(SMALL, **click_prompt(2, [40, 30]))["OBJ_IDS"].tolist() == [2]
    assert number.send(SMALL)["OBJ_IDS"].tolist() == []
    assert a.send(SMALL)["OBJ_IDS"].tolist() == [1]
    assert b.send(SMALL, end=True)["TRACKED_FRAME"].tolist() == [1]
    result = a.send(SMALL)
    assert result["OBJ_IDS"].tolist() == [1] and result["TRACKED_FRAME"].tolist() == [2]
    assert a.send(end=True)["STATE_BYTES"].tolist() == [0]
    assert number.send(SMALL, end=True)["TRACKED_FRAME"].tolist() == [1]
    # Triton's frontends refuse a longer string id themselves (the model allows the same 128)
    too_long = Sequence(url(served, protocol), protocol, "v" * 129)
    expect_error(too_long, "string correlation ID cannot be longer than 128 characters", SMALL)
    assert_healthy(served, protocol)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_refused_start_leaves_no_sequence_behind(served, protocol):
    """Issue item 4: a START refused after parsing (a bad box here) left an empty sequence
    that took the next frame without START; a refused re-START ends its own id only."""
    bad_box = box_prompt(1, [40, 5, 10, 30])  # x0 > x1
    sequence = Sequence(url(served, protocol), protocol)
    expect_error(sequence, "need x0 <= x1", SMALL, **bad_box)
    message = expect_error(sequence, "send START again", SMALL, start=False)
    assert "could not start (box of object 1 is" in message, message
    other = Sequence(url(served, protocol), protocol)
    other.send(SMALL, **click_prompt(2, [20, 20]))
    assert sequence.send(SMALL, start=True, **click_prompt(1, [20, 20]))["OBJ_IDS"].tolist() == [1]
    expect_error(sequence, "need x0 <= x1", SMALL, start=True, **bad_box)
    expect_error(sequence, "could not start (box of object 1", SMALL, start=False)
    assert sequence.send(start=False, end=True)["TRACKED_FRAME"].tolist() == [-1]
    result = other.send(SMALL, end=True)  # the other sequence went on untouched
    assert result["OBJ_IDS"].tolist() == [2] and result["TRACKED_FRAME"].tolist() == [1]
    assert_healthy(served, protocol)


def test_full_server_refuses_a_start_at_once(served):
    """Issue item 5: with max_sequences held, a new START waited silently in Triton's backlog
    (its slots were exactly max_sequences) until the client gave up. Now it gets an error at
    once, also after refused STARTs that were never ended (Triton's spare slots), and a
    sequence that ends makes room. Every sequence started here is ended."""
    from conftest import SERVED_VIDEO_SETTINGS
    from tritonclient.utils import InferenceServerException

    limit = SERVED_VIDEO_SETTINGS["max_sequences"]
    held, refused = [], []
    try:
        for _ in range(limit + 1):
            sequence = Sequence(served.grpc_url, "grpc")
            try:
                sequence.send(SMALL, timeout_s=60)
                held.append(sequence)
            except InferenceServerException as error:
                assert "the server is full" in str(error), str(error)
                refused.append(sequence)
                break
        assert len(refused) == 1 and 0 < len(held) <= limit
        for _ in range(3):  # refused STARTs whose clients never send END keep Triton slots
            sequence = Sequence(served.grpc_url, "grpc")
            refused.append(sequence)
            start = time.perf_counter()
            message = expect_error(sequence, "the server is full", SMALL, timeout_s=60)
            assert time.perf_counter() - start < 30, "the refusal was not immediate"
        assert f"holds {len(held)} video sequences, its maximum" in message, message
        assert "a sequence is freed by its END or after 600 s without a request" in message
        held.pop(0).send(end=True)
        assert refused[0].send(SMALL, start=True, timeout_s=60)["TRACKED_FRAME"].tolist() == [0]
        # the model's Prometheus metrics on Triton's metrics port (python_backend/metrics.py)
        assert served_metric(served, "sam2_video_sequences") == limit
        assert served_metric(served, "sam2_refused_requests_total", reason="server_full") >= 4
        assert served_metric(served, "sam2_video_frames_total") >= limit
    finally:
        for sequence in held + refused:  # END alone always succeeds: frees Triton's slots
            sequence.send(start=False, end=True)
    assert_healthy(served, "grpc")


def served_metric(served, name: str, model: str = "track_video", **labels: str) -> float:
    """The value of a custom metric of `model` on the server's metrics port (0 if absent)."""
    import re
    import urllib.request

    url = f"http://127.0.0.1:{served.server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    total = 0.0
    for found in re.finditer(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.M):
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1)))
        if pairs == {"model": model, **labels}:
            total += float(found.group(2))
    return total


def test_frame_index_is_bounded(served):
    """Issue item 7: FRAME_INDEX 2**63 - 1 was accepted, and every later frame did a frame's
    work before failing with an internal OverflowError."""
    sequence = Sequence(served.grpc_url, "grpc")
    sequence.send(SMALL)
    expect_error(
        sequence,
        "FRAME_INDEX is 9223372036854775807: must be an integer in 0..2147483647",
        SMALL,
        FRAME_INDEX=np.array([2**63 - 1], np.int64),
    )
    last = sequence.send(SMALL, FRAME_INDEX=np.array([2**31 - 1], np.int64))
    assert last["TRACKED_FRAME"].tolist() == [2**31 - 1]
    expect_error(sequence, "frame index 2147483648 is outside 0..2147483647", SMALL)
    expect_error(
        sequence,
        "POINT_OBJ_IDS holds 2147483648: object ids must be in 0..2147483647",
        SMALL,
        **click_prompt(2**31, [5, 5]),
    )
    assert sequence.send(end=True)["TRACKED_FRAME"].tolist() == [-1]
    assert_healthy(served, "grpc")


# -- answers -----------------------------------------------------------------------------------

ANSWERS = {  # sequence -> START inputs choosing its answer
    "masks": {},
    "rle": {"ANSWER": np.array([b"rle"], np.object_)},
    "small_masks": {
        "ANSWER": np.array([b"small_masks"], np.object_),
        "ANSWER_SIZE": np.array([45, 70], np.int64),
    },
    "logits": {
        "ANSWER": np.array([b"logits"], np.object_),
        "ANSWER_SIZE": np.array([256, 256], np.int64),
    },
}


def resized(logits: np.ndarray, size) -> np.ndarray:
    """float32 [N, h, w]: low-res logits [N, 256, 256] resized as the server resizes them."""
    import torch
    import torch.nn.functional as F

    tensor = torch.tensor(logits, dtype=torch.float32)[:, None]
    return F.interpolate(tensor, tuple(size), mode="bilinear", align_corners=False)[:, 0].numpy()


def test_compact_answers_stand_for_the_same_masks(served):
    """Four sequences track the same frames with the same prompts, each answering in its own
    format: the RLE decodes to the full-size masks, the 256x256 logits upscale to them and
    resize to the small masks; boxes, scores and presence agree."""
    from sam2_triton.python_backend.video.answers import frame_boxes

    frames = synthetic_frames(2)
    sequences = {kind: Sequence(served.grpc_url, "grpc") for kind in ANSWERS}
    answers: dict[str, list] = {kind: [] for kind in ANSWERS}
    for t, frame in enumerate(frames):
        for kind, sequence in sequences.items():
            prompts = {**click_prompt(1, CLICK[0][0]), **box_prompt(2, BOX), **ANSWERS[kind]}
            answers[kind].append(sequence.send(frame, encoded=False, **(prompts if t == 0 else {})))
    for kind, sequence in sequences.items():  # a correction of frame 1, answered in each format
        answers[kind].append(sequence.send(**click_prompt(1, [46.0, 40.0], 0)))
        answers[kind].append(sequence.send(end=True))

    for step in range(3):
        full, coded, small, logits = (answers[kind][step] for kind in ANSWERS)
        masks = full["MASKS"]
        assert masks.shape == (2, HEIGHT, WIDTH) and masks.any(axis=(1, 2)).all()
        for answer in (full, coded, small, logits):
            assert answer["ORIGINAL_SIZE"].tolist() == [HEIGHT, WIDTH]
            assert answer["TRACKED_FRAME"].tolist() == [min(step, 1)]
            for name in ("OBJ_IDS", "SCORES", "OBJECT_SCORE_LOGITS", "PRESENT"):
                np.testing.assert_array_equal(answer[name], full[name], err_msg=name)
        decoded = [rle.decode(rle.from_counts(c, (HEIGHT, WIDTH))) for c in coded["RLE_COUNTS"]]
        np.testing.assert_array_equal(np.stack(decoded), masks)
        np.testing.assert_array_equal(coded["MASK_BOXES"], full["MASK_BOXES"])
        low_res = logits["MASK_LOGITS"]
        assert low_res.shape == (2, 256, 256) and low_res.dtype == np.float32
        np.testing.assert_array_equal(resized(low_res, (HEIGHT, WIDTH)) > 0, masks)
        assert small["MASKS"].shape == (2, 45, 70)
        np.testing.assert_array_equal(small["MASKS"], resized(low_res, (45, 70)) > 0)
        # boxes of small masks: the frame pixels they cover, at most one answer pixel beyond
        # the full-size bounds (thin parts of a mask may vanish at 45x70: no bound inwards)
        np.testing.assert_array_equal(
            small["MASK_BOXES"], frame_boxes(small["MASKS"], (HEIGHT, WIDTH))
        )
        beyond = np.concatenate(
            [
                full["MASK_BOXES"][:, :2] - small["MASK_BOXES"][:, :2],
                small["MASK_BOXES"][:, 2:] - full["MASK_BOXES"][:, 2:],
            ],
            axis=1,
        )
        assert (beyond <= np.ceil([WIDTH / 70, HEIGHT / 45] * 2)).all(), beyond
        # the outputs a kind does not use are there, with no rows
        assert coded["MASKS"].shape == (0, 0, 0) and full["RLE_COUNTS"].shape == (0,)
        assert full["MASK_LOGITS"].shape == (0, 0, 0) and logits["MASKS"].shape == (0, 0, 0)
    ended = answers["rle"][3]
    assert ended["TRACKED_FRAME"].tolist() == [-1] and ended["RLE_COUNTS"].shape == (0,)

    sequence = Sequence(served.http_url, "http")
    expect_error(
        sequence,
        "ANSWER is 'png': the answer kinds are masks, rle, small_masks, logits",
        SMALL,
        ANSWER=np.array([b"png"], np.object_),
    )
    expect_error(
        sequence,
        "ANSWER 'logits' needs ANSWER_SIZE (h, w)",
        SMALL,
        start=True,
        ANSWER=np.array([b"logits"], np.object_),
    )
    sequence.send(SMALL, start=True, **ANSWERS["rle"])
    expect_error(
        sequence, "ANSWER can only be sent with the sequence's START", SMALL, **ANSWERS["rle"]
    )
    assert sequence.send(SMALL, end=True)["RLE_COUNTS"].shape == (0,)  # no objects
    assert_healthy(served, "http")


# -- idle sequences ----------------------------------------------------------------------------

IDLE_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def served_short_idle(exported, tmp_path_factory):
    """A second server whose video sequences are evicted after IDLE_TIMEOUT_S."""
    from conftest import SERVED_VIDEO_SETTINGS, running_server

    from sam2_triton.configs import get_profile
    from sam2_triton.python_backend.video.sequences import VideoSettings
    from sam2_triton.serving.repository import build_repository

    root = tmp_path_factory.mktemp("served-short-idle")
    settings = VideoSettings(**{**SERVED_VIDEO_SETTINGS, "idle_timeout_s": IDLE_TIMEOUT_S})
    repository = build_repository(
        exported.directory,
        root / "model_repository",
        get_profile("cpu"),
        warmup=False,
        video=settings,
    )
    with running_server(repository, root) as server:
        yield server


def test_idle_sequence_is_evicted_and_its_next_request_refused(served_short_idle):
    config = Sequence(served_short_idle.http_url, "http").client.get_model_config(MODEL)
    idle_us = int(config["sequence_batching"]["max_sequence_idle_microseconds"])
    assert idle_us == IDLE_TIMEOUT_S * 1e6
    sequence = Sequence(served_short_idle.grpc_url, "grpc")
    assert sequence.send(SMALL)["TRACKED_FRAME"].tolist() == [0]
    assert sequence.send(SMALL)["TRACKED_FRAME"].tolist() == [1]  # within the timeout: kept
    time.sleep(IDLE_TIMEOUT_S * 2)
    message = expect_error(sequence, "", SMALL, start=False)
    assert "must specify the START flag" in message or "was evicted after" in message, message
    # a new START under the same id starts afresh at frame 0
    assert sequence.send(SMALL, start=True)["TRACKED_FRAME"].tolist() == [0]
    assert sequence.send(SMALL, end=True)["TRACKED_FRAME"].tolist() == [1]
    assert sequence.client.is_server_ready()
