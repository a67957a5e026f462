"""Frames of several sequences tracked together (python_backend/video/batching.py).

Four sequences over crops of the synthetic video (different frame sizes): one with three
objects, one in SAMURAI mode, one adding an object mid-way, one corrected; all tracked through
`track_together` must answer exactly as each tracks alone (ONNX Runtime on the exported test
model), also when one sequence's frame is refused inside a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from test_video_tracking import iou, synthetic_frames

from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.samurai import SamuraiSettings
from sam2_triton.python_backend.video.batching import (
    BatchLimits,
    BatchStats,
    TrackItem,
    track_together,
)
from sam2_triton.python_backend.video.tracker import FrameResult, VideoTracker

NUM_FRAMES = 5
REFUSED_FRAME = 3  # sequence "samurai" first sends a frame of the wrong size here


@dataclass
class Scenario:
    """One sequence: a crop (y0, y1, x0, x1) of the synthetic frames, prompts per frame
    (obj_id, add_prompt keywords), corrections per frame, SAMURAI or not."""

    name: str
    crop: tuple[int, int, int, int]
    prompts: dict[int, list[tuple[int, dict]]]
    corrections: dict[int, list[tuple[int, dict]]] = field(default_factory=dict)
    samurai: bool = False

    def frames(self) -> list[np.ndarray]:
        y0, y1, x0, x1 = self.crop
        return [np.ascontiguousarray(f[y0:y1, x0:x1]) for f in synthetic_frames(NUM_FRAMES)]


SCENARIOS = [
    Scenario(  # 120x160, three objects from frame 0
        "three objects",
        (0, 120, 0, 160),
        {
            0: [
                (1, {"points": [[40.0, 40.0]], "labels": [1]}),
                (2, {"box": [96.0, 16.0, 138.0, 58.0]}),
                (3, {"points": [[20.0, 100.0], [60.0, 100.0]], "labels": [1, 0]}),
            ]
        },
    ),
    Scenario(  # 96x128, SAMURAI
        "samurai",
        (8, 104, 0, 128),
        {0: [(1, {"points": [[40.0, 32.0]], "labels": [1]})]},
        samurai=True,
    ),
    Scenario(  # 120x140, a second object from frame 2
        "added object",
        (0, 120, 20, 160),
        {
            0: [(1, {"box": [76.0, 16.0, 118.0, 58.0]})],
            2: [(4, {"points": [[32.0, 40.0]], "labels": [1]})],
        },
    ),
    Scenario(  # 100x140, corrected on frame 1
        "corrected",
        (10, 110, 10, 150),
        {0: [(1, {"points": [[30.0, 30.0]], "labels": [1]})]},
        corrections={1: [(1, {"points": [[36.0, 30.0]], "labels": [0]})]},
    ),
]


def make_tracker(networks, scenario: Scenario) -> VideoTracker:
    samurai = SamuraiSettings.load() if scenario.samurai else None
    return VideoTracker(networks, networks.metadata, num_frames=NUM_FRAMES, samurai=samurai)


def prompt(tracker: VideoTracker, frame_idx: int, prompts) -> None:
    for obj_id, kwargs in prompts.get(frame_idx, []):
        tracker.add_prompt(frame_idx, obj_id, **kwargs)


def run_alone(networks, scenario: Scenario) -> list[FrameResult]:
    tracker = make_tracker(networks, scenario)
    results = []
    for t, frame in enumerate(scenario.frames()):
        prompt(tracker, t, scenario.prompts)
        results.append(tracker.track(t, frame))
        if t in scenario.corrections:
            prompt(tracker, t, scenario.corrections)
            results.append(tracker.correct(t))
    return results


def assert_same(batched: list[FrameResult], alone: list[FrameResult], name: str) -> None:
    assert len(batched) == len(alone), name
    for b, a in zip(batched, alone):
        where = f"{name}, frame {a.frame_idx}"
        assert b.obj_ids == a.obj_ids and b.frame_idx == a.frame_idx, where
        logits, reference = b.host_low_res_logits, a.host_low_res_logits
        assert np.abs(logits - reference).max() <= 1e-4 * np.abs(reference).max(), where
        np.testing.assert_allclose(b.object_score_logits, a.object_score_logits, atol=1e-4)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
        np.testing.assert_array_equal(b.present, a.present)
        for i in range(len(a.obj_ids)):
            assert iou(b.masks[i], a.masks[i]) >= 0.999, where


@pytest.mark.slow
def test_sequences_tracked_together_answer_as_alone(exported):
    from sam2_triton.python_backend.video.networks import OnnxVideoNetworks

    networks = OnnxVideoNetworks(exported.directory)
    alone = {s.name: run_alone(networks, s) for s in SCENARIOS}

    trackers = {s.name: make_tracker(networks, s) for s in SCENARIOS}
    frames = {s.name: s.frames() for s in SCENARIOS}
    batched: dict[str, list[FrameResult]] = {s.name: [] for s in SCENARIOS}
    limits = BatchLimits(image_encoder=4, memory_attention=16, mask_decoder=64, memory_encoder=16)
    for t in range(NUM_FRAMES):
        for s in SCENARIOS:
            prompt(trackers[s.name], t, s.prompts)
        items = [TrackItem(trackers[s.name], t, frames[s.name][t]) for s in SCENARIOS]
        if t == REFUSED_FRAME:  # the SAMURAI sequence's frame has the wrong size
            refused = trackers["samurai"]
            before = (refused.last_frame, refused.nbytes, refused.counts)
            items[1] = TrackItem(refused, t, frames["corrected"][t])
        stats = BatchStats()
        outcomes = track_together(items, limits, stats)
        # every frame in one image-encoder call, one memory-encoder call; the sequences'
        # objects with equal memory signatures share memory-attention calls
        assert stats.network_calls is not None
        assert stats.network_calls["image_encoder"] == 1
        assert stats.network_calls["memory_encoder"] == 1
        if t == REFUSED_FRAME:
            assert isinstance(outcomes[1], InputError)
            assert (refused.last_frame, refused.nbytes, refused.counts) == before
            assert stats.sequences == len(SCENARIOS) - 1
            [outcomes[1]] = track_together([TrackItem(refused, t, frames["samurai"][t])], limits)
        else:
            assert stats.sequences == len(SCENARIOS) and stats.alone == 0
        if t == 1:  # every object remembers its one prompted frame: one signature
            assert stats.network_calls["memory_attention"] == 1
        for s, outcome in zip(SCENARIOS, outcomes):
            assert isinstance(outcome, FrameResult), (s.name, outcome)
            batched[s.name].append(outcome)
            if t in s.corrections:
                prompt(trackers[s.name], t, s.corrections)
                batched[s.name].append(trackers[s.name].correct(t))
    for s in SCENARIOS:
        assert_same(batched[s.name], alone[s.name], s.name)
    assert batched["added object"][-1].obj_ids == [1, 4]
    assert batched["three objects"][-1].obj_ids == [1, 2, 3]


def test_pack_respects_limits():
    from sam2_triton.python_backend.video.batching import _pack

    assert list(_pack([1, 1, 1, 1, 1], 4)) == [[0, 1, 2, 3], [4]]
    assert list(_pack([3, 2, 20, 1], 4)) == [[0], [1], [2], [3]]
    assert list(_pack([3, 1, 2, 2], None)) == [[0, 1, 2, 3]]
    with pytest.raises(ValueError):
        BatchLimits(image_encoder=0)


# -- the planner's bookkeeping with the scripted stand-in networks (no export) ----------------


def fake_scenario(tracker: VideoTracker, t: int, k: int) -> None:
    """Sequence k: objects 1 (and 2, except k = 1) from frame 0; k = 2 adds object 5 on 2."""
    if t == 0:
        tracker.add_prompt(0, 1, points=[[1 + k, 10]], labels=[1])
        if k != 1:
            tracker.add_prompt(0, 2, points=[[2 + k, 10]], labels=[1])
    if t == 2 and k == 2:
        tracker.add_prompt(2, 5, points=[[5, 10]], labels=[1])


def fake_trackers(networks) -> list[VideoTracker]:
    from test_video_tracking import FAKE_METADATA

    return [
        VideoTracker(networks, FAKE_METADATA, samurai=SamuraiSettings.load() if k == 1 else None)
        for k in range(3)
    ]


class FailingDecoder:
    """Stand-in networks whose decoder fails on batches of more than `max_rows` rows (more
    than one sequence holds here)."""

    def __init__(self, networks, max_rows: int) -> None:
        self.inner, self.max_rows = networks, max_rows
        self.device = networks.device

    def decode(self, inputs):
        if inputs["point_coords"].shape[0] > self.max_rows:
            raise RuntimeError("decoder batch too large")
        return self.inner.decode(inputs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("failing", [False, True])
def test_planner_batches_stand_in_networks_exactly(failing):
    from test_video_tracking import FakeNetworks, default_script, fake_frame

    frames = 5
    networks = FakeNetworks(default_script)
    alone = []
    for k, tracker in enumerate(fake_trackers(networks)):
        results = []
        for t in range(frames):
            fake_scenario(tracker, t, k)
            results.append(tracker.track(t, fake_frame(t)))
        alone.append(results)

    batched_networks = FailingDecoder(networks, 3) if failing else networks
    trackers = fake_trackers(batched_networks)
    limits = BatchLimits(image_encoder=1)  # the stand-in encoder takes one frame per call
    got: list[list] = [[] for _ in trackers]
    for t in range(frames):
        for k, tracker in enumerate(trackers):
            fake_scenario(tracker, t, k)
        stats = BatchStats()
        items = [TrackItem(tracker, t, fake_frame(t)) for tracker in trackers]
        if t == REFUSED_FRAME:  # a frame index already tracked: refused alone
            refused = track_together(
                [TrackItem(trackers[0], t - 1, fake_frame(t))] + items[1:], limits
            )
            assert isinstance(refused[0], InputError)
            assert all(isinstance(r, FrameResult) for r in refused[1:])
            for k, result in enumerate(refused[1:], start=1):
                got[k].append(result)
            items = items[:1]
        outcomes = track_together(items, limits, stats)
        assert stats.network_calls is not None
        if failing and len(items) > 1:  # the decoder refused the batch: each ran alone
            assert stats.alone == len(items) and stats.sequences == 0
        elif len(items) > 1:
            assert stats.sequences == stats.shared == len(items)
            assert stats.network_calls["mask_decoder"] == 1
            assert stats.network_calls["memory_encoder"] == 1
        for k, outcome in enumerate(outcomes):
            got[k].append(outcome)
    for k in range(len(trackers)):
        assert len(got[k]) == frames
        for a, b in zip(alone[k], got[k]):
            assert isinstance(b, FrameResult), b
            assert a.obj_ids == b.obj_ids
            np.testing.assert_array_equal(a.host_low_res_logits, b.host_low_res_logits)
            np.testing.assert_array_equal(a.scores, b.scores)
            np.testing.assert_array_equal(a.object_score_logits, b.object_score_logits)
    assert [results[-1].obj_ids for results in got] == [[1, 2], [1], [1, 2, 5]]


def test_one_frame_per_tracker():
    from test_video_tracking import FakeNetworks, default_script, fake_frame

    tracker = fake_trackers(FakeNetworks(default_script))[0]
    with pytest.raises(ValueError, match="one frame per tracker"):
        track_together([TrackItem(tracker, 0, fake_frame(0)), TrackItem(tracker, 1, fake_frame(1))])


# -- one execute's requests (VideoRequestHandler.respond_all) ---------------------------------


def fake_handler():
    from test_video_sequences import LIMITS, settings
    from test_video_tracking import FAKE_METADATA, FakeNetworks, default_script

    from sam2_triton.python_backend.video.frame_requests import VideoRequestHandler
    from sam2_triton.python_backend.video.sequences import SequenceStore

    networks = FakeNetworks(default_script)
    video = settings(max_sequences=8)
    store = SequenceStore(lambda options: VideoTracker(networks, FAKE_METADATA), video)
    return VideoRequestHandler(store, video, LIMITS, batch_limits=BatchLimits(image_encoder=1))


def test_respond_all_batches_plain_frames_and_answers_as_one_by_one():
    from test_video_sequences import SAMURAI, click
    from test_video_tracking import fake_frame

    from sam2_triton.python_backend.video.frame_requests import parse_frame_request

    def request(seq, t=None, start=False, end=False, image=True, **tensors):
        frame = fake_frame(t) if image and t is not None else None
        if frame is not None:
            tensors["FRAME_INDEX"] = np.array([t], np.int64)
        return parse_frame_request(seq, start, end, tensors, frame, SAMURAI)

    batches = [
        [request(s, 0, start=True, **click(s, x=s)) for s in (1, 2, 3)],
        # plain frames of 1 and 2, a refused frame of 3 (already tracked), an END-only of 9
        [request(1, 1), request(2, 1), request(3, 0), request(9, end=True, image=False)],
        # 1: a frame, then its correction (runs after 1's frame); 2 and 3: frames, 2's the last
        [request(1, 2), request(3, 1), request(1, **click(1, x=2.0)), request(2, 2, end=True)],
        [request(1, 3), request(2, 3), request(3, 2)],  # 2 has ended: refused
    ]
    together, one_by_one = fake_handler(), fake_handler()
    for batch in batches:
        answers = together.respond_all(batch)
        for req, answer in zip(batch, answers):
            try:
                expected = one_by_one.respond(req)
            except Exception as exc:
                assert isinstance(answer, type(exc)) and str(answer) == str(exc)
                continue
            assert isinstance(answer, dict), answer
            assert sorted(answer) == sorted(expected)
            for name, array in expected.items():
                np.testing.assert_array_equal(answer[name], array, err_msg=name)
    stats = together.batch_stats
    # batch 2: 1 and 2 together; batch 3: 1's frame with 3's (1's correction ends that
    # group), then 2's last frame by itself; batch 4: 1 and 3
    assert stats.shared == 2 + 2 + 2 and stats.sequences == 7 and stats.alone == 0
    assert together.store.get(1).last_frame == 3 and together.store.get(3).last_frame == 2
