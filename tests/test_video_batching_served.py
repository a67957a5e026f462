"""Frames of concurrent videos in one batch on a real Triton server (the `served` fixture).

Four sequences (different frame sizes, 1-3 objects, one in SAMURAI mode, one adding an object
mid-way, one corrected) run one after another, then concurrently (a barrier before each frame),
one of them sending a frame of the wrong size inside the concurrent batch first. Each frame's
answer must be the one the sequence got alone, and Triton's own counters must show that
track_video ran fewer batches than requests (frames of several sequences shared an execute).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_video_serving import Sequence, box_prompt, click_prompt, in_lockstep, served_metric
from test_video_tracking import iou, synthetic_frames

pytestmark = pytest.mark.served

NUM_FRAMES = 4
REFUSED_FRAME = 2  # the SAMURAI sequence first sends a frame of the wrong size here
SAMURAI_ON = {"SAMURAI": np.array([True])}

# (protocol, crop (y0, y1, x0, x1), {frame: prompts sent with it}, {frame: correction prompts})
SCENARIOS = [
    (
        "grpc",
        (0, 120, 0, 160),
        {0: {**click_prompt(1, [40, 40]), **box_prompt(2, [96, 16, 138, 58])}},
        {},
    ),
    ("http", (8, 104, 0, 128), {0: {**click_prompt(1, [40, 32]), **SAMURAI_ON}}, {}),
    (
        "grpc",
        (0, 120, 20, 160),
        {0: box_prompt(1, [76, 16, 118, 58]), 2: click_prompt(4, [32, 40])},
        {},
    ),
    ("http", (10, 110, 10, 150), {0: click_prompt(1, [30, 30])}, {1: click_prompt(1, [36, 30], 0)}),
]


def frames_of(crop) -> list[np.ndarray]:
    y0, y1, x0, x1 = crop
    return [np.ascontiguousarray(f[y0:y1, x0:x1]) for f in synthetic_frames(NUM_FRAMES)]


def run(served, index: int, barrier: threading.Barrier | None = None) -> list[dict]:
    """The answers of scenario `index` (frames, then corrections where it has them)."""
    protocol, crop, prompts, corrections = SCENARIOS[index]
    sequence = Sequence(served.grpc_url if protocol == "grpc" else served.http_url, protocol)
    frames = frames_of(crop)
    answers = []
    for t, frame in enumerate(frames):
        if barrier is not None:
            barrier.wait()
            if index == 1 and t == REFUSED_FRAME:  # a bad frame inside the batch: refused alone
                with pytest.raises(Exception, match="every frame must have the first"):
                    sequence.send(frames_of(SCENARIOS[0][1])[t], encoded=False)
        last = t == NUM_FRAMES - 1
        answers.append(sequence.send(frame, encoded=False, end=last, **prompts.get(t, {})))
        if t in corrections:
            answers.append(sequence.send(None, **corrections[t]))
    return answers


@pytest.mark.slow
def test_concurrent_sequences_share_batches_and_answer_as_alone(served):
    alone = [run(served, i) for i in range(len(SCENARIOS))]
    requests = served_metric(served, "nv_inference_request_success", version="1")
    executions = served_metric(served, "nv_inference_exec_count", version="1")
    batched = served_metric(served, "sam2_video_frames_batched_total")

    together = in_lockstep(lambda i, barrier: run(served, i, barrier), len(SCENARIOS))

    for i, (solo, mixed) in enumerate(zip(alone, together)):
        assert mixed is not None and len(mixed) == len(solo)
        for k, (a, b) in enumerate(zip(solo, mixed)):
            where = f"sequence {i} answer {k}"
            assert a["OBJ_IDS"].tolist() == b["OBJ_IDS"].tolist(), where
            assert a["MASKS"].any(), f"{where}: empty masks"
            for row in range(len(a["OBJ_IDS"])):
                assert iou(a["MASKS"][row], b["MASKS"][row]) >= 0.999, where
            for name in ("SCORES", "OBJECT_SCORE_LOGITS"):
                np.testing.assert_allclose(a[name], b[name], atol=1e-4, err_msg=where)
    assert together[0][-1]["OBJ_IDS"].tolist() == [1, 2]
    assert together[2][-1]["OBJ_IDS"].tolist() == [1, 4]  # added on frame 2

    # Triton ran fewer executes than it answered requests: frames of several sequences shared
    # batches, and track_video counted frames tracked together with another sequence's frame
    new_requests = served_metric(served, "nv_inference_request_success", version="1") - requests
    new_executions = served_metric(served, "nv_inference_exec_count", version="1") - executions
    assert new_executions < new_requests, (new_executions, new_requests)
    assert served_metric(served, "sam2_video_frames_batched_total") > batched
