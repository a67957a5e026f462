"""SequenceStore (per-correlation-id trackers, idle eviction) and request parsing, no server."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sam2_triton.configs import RequestLimits, dataclass_parameters, field_types, get_profile
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.samurai import SamuraiSettings
from sam2_triton.python_backend.video.frame_requests import parse_frame_request, result_tensors
from sam2_triton.python_backend.video.sequences import (
    IdleEvictor,
    SequenceOptions,
    SequenceStore,
    VideoSettings,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTracker:
    def __init__(self, options: SequenceOptions) -> None:
        self.options = options
        self.nbytes = 100


def settings(**overrides) -> VideoSettings:
    values = dict(
        max_objects=4,
        max_prompted_frames=3,
        max_sequences=3,
        idle_timeout_s=10.0,
        preprocessing="video",
        memory_storage="bfloat16",
    )
    values.update(overrides)
    return VideoSettings(**values)


def test_store_keeps_sequences_apart_and_end_frees_at_once():
    store = SequenceStore(FakeTracker, settings())
    first = store.start(1, SequenceOptions(num_frames=5))
    second = store.start(2, SequenceOptions())
    assert store.get(1) is first and store.get(2) is second and first is not second
    assert first.options.num_frames == 5 and second.options.num_frames is None
    assert store.nbytes == 200
    assert store.end(1)
    assert 1 not in store and len(store) == 1 and store.nbytes == 100
    with pytest.raises(InputError, match="sequence 1 has ended"):
        store.get(1)
    with pytest.raises(InputError, match="sequence 9 was never started"):
        store.get(9)


def test_start_replaces_the_state_of_a_reused_id():
    store = SequenceStore(FakeTracker, settings())
    old = store.start(7, SequenceOptions())
    store.end(7)
    new = store.start(7, SequenceOptions())
    assert store.get(7) is new and new is not old


def test_idle_sequences_are_evicted_with_a_clear_error():
    clock = FakeClock()
    store = SequenceStore(FakeTracker, settings(idle_timeout_s=10.0), clock=clock)
    store.start(1, SequenceOptions())
    store.start(2, SequenceOptions())
    clock.now = 6.0
    store.get(2)  # a request keeps sequence 2 alive
    clock.now = 10.0
    assert store.evict_idle() == [1]
    with pytest.raises(InputError, match="sequence 1 was evicted after 10 s without a request"):
        store.get(1)
    clock.now = 15.9
    assert store.evict_idle() == []
    store.touch(2)  # the end of a long request restarts the clock
    clock.now = 25.0
    assert store.evict_idle() == []
    clock.now = 26.0
    assert store.evict_idle() == [2] and len(store) == 0


def test_store_refuses_more_sequences_than_its_maximum_unless_some_are_idle():
    clock = FakeClock()
    store = SequenceStore(FakeTracker, settings(max_sequences=2), clock=clock)
    store.start(1, SequenceOptions())
    store.start(2, SequenceOptions())
    with pytest.raises(InputError, match="holds 2 video sequences, its maximum"):
        store.start(3, SequenceOptions())
    clock.now = 11.0
    store.get(2)
    store.start(3, SequenceOptions())  # sequence 1 was idle: evicted to make room
    assert 1 not in store and 2 in store and 3 in store


def test_idle_evictor_thread_frees_sequences_without_requests():
    store = SequenceStore(FakeTracker, settings(idle_timeout_s=0.2))
    store.start(1, SequenceOptions())
    evictor = IdleEvictor(store, interval_s=0.05).start()
    try:
        deadline = time.monotonic() + 5.0
        while 1 in store and time.monotonic() < deadline:
            time.sleep(0.02)
        assert 1 not in store
    finally:
        evictor.stop()
    assert not evictor._thread.is_alive()


def test_video_settings_are_validated():
    with pytest.raises(ValueError, match="idle_timeout_s"):
        settings(idle_timeout_s=0)
    with pytest.raises(ValueError, match="preprocessing"):
        settings(preprocessing="bicubic")
    parameters = dataclass_parameters(settings())
    assert parameters["idle_timeout_s"] == "10.0" and parameters["preprocessing"] == "video"
    assert VideoSettings.from_mapping(parameters) == settings()
    with pytest.raises(ValueError, match="video settings lack 'max_objects'"):
        VideoSettings.from_mapping({k: v for k, v in parameters.items() if k != "max_objects"})


# -- request parsing --------------------------------------------------------------------------

LIMITS = RequestLimits.for_profile(get_profile("cpu"))
SAMURAI = SamuraiSettings.load()


def parse(start=True, end=False, image=None, **tensors):
    return parse_frame_request(42, start, end, tensors, image, SAMURAI)


def test_parse_points_boxes_masks_and_options():
    request = parse(
        POINT_OBJ_IDS=np.array([3, 1], np.int64),
        POINT_COORDS=np.array([[[10, 20], [0, 0]], [[5, 6], [7, 8]]], np.float32),
        POINT_LABELS=np.array([[1, -1], [1, 0]], np.int32),
        BOX_OBJ_IDS=np.array([1], np.int64),
        BOXES=np.array([[1, 2, 30, 40]], np.float32),
        MASK_OBJ_IDS=np.array([5], np.int64),
        MASK_PROMPTS=np.zeros((1, 4, 6), bool),
        NUM_FRAMES=np.array([12], np.int64),
        SAMURAI=np.array([True]),
        KF_SCORE_WEIGHT=np.array([0.5], np.float32),
    )
    assert request.prompted_ids == [1, 3, 5]
    np.testing.assert_array_equal(request.points[3].coords, [[10, 20]])  # padding dropped
    np.testing.assert_array_equal(request.points[1].labels, [1, 0])
    np.testing.assert_array_equal(request.boxes[1], [1, 2, 30, 40])
    assert request.masks[5].shape == (4, 6)
    assert request.options.num_frames == 12
    assert request.options.samurai.kf_score_weight == 0.5
    assert request.options.samurai.stable_frames_threshold == SAMURAI.stable_frames_threshold


@pytest.mark.parametrize(
    "tensors, message",
    [
        (
            dict(
                POINT_COORDS=np.zeros((1, 1, 2), np.float32), POINT_LABELS=np.ones((1, 1), np.int32)
            ),
            "need POINT_OBJ_IDS",
        ),
        (
            dict(
                POINT_OBJ_IDS=np.array([1, 2]),
                POINT_COORDS=np.zeros((1, 1, 2), np.float32),
                POINT_LABELS=np.ones((1, 1), np.int32),
            ),
            "1 rows but POINT_OBJ_IDS names 2 objects",
        ),
        (
            dict(
                POINT_OBJ_IDS=np.array([1]),
                POINT_COORDS=np.zeros((1, 1, 2), np.float32),
                POINT_LABELS=np.full((1, 1), 2, np.int32),
            ),
            "boxes go in BOXES",
        ),
        (
            dict(
                POINT_OBJ_IDS=np.array([1]),
                POINT_COORDS=np.zeros((1, 1, 2), np.float32),
                POINT_LABELS=np.full((1, 1), -1, np.int32),
            ),
            "all padding",
        ),
        (
            dict(
                POINT_OBJ_IDS=np.array([1]),
                POINT_COORDS=np.full((1, 1, 2), np.nan, np.float32),
                POINT_LABELS=np.ones((1, 1), np.int32),
            ),
            "NaN",
        ),
        (
            dict(BOX_OBJ_IDS=np.array([1, 1]), BOXES=np.zeros((2, 4), np.float32)),
            "repeats object ids",
        ),
        (dict(BOX_OBJ_IDS=np.array([-4]), BOXES=np.zeros((1, 4), np.float32)), "must be >= 0"),
        (
            dict(
                MASK_OBJ_IDS=np.array([2]),
                MASK_PROMPTS=np.zeros((1, 4, 4), bool),
                BOX_OBJ_IDS=np.array([2]),
                BOXES=np.zeros((1, 4), np.float32),
            ),
            "a mask prompt stands alone",
        ),
        (dict(NUM_FRAMES=np.array([0], np.int64)), "NUM_FRAMES is 0"),
        (dict(KF_SCORE_WEIGHT=np.array([0.5], np.float32)), "without SAMURAI = true"),
        (
            dict(SAMURAI=np.array([True]), KF_SCORE_WEIGHT=np.array([1.5], np.float32)),
            "kf_score_weight",
        ),
        (dict(FRAME_INDEX=np.array([-1], np.int64)), "FRAME_INDEX is -1"),
    ],
)
def test_parse_rejects_bad_tensors(tensors, message):
    with pytest.raises(InputError, match=message):
        parse(**tensors)


def test_start_only_inputs_are_refused_later():
    with pytest.raises(InputError, match="NUM_FRAMES can only be sent with the sequence's START"):
        parse(start=False, NUM_FRAMES=np.array([3], np.int64))


def test_result_tensors_without_a_frame_have_zero_rows():
    tensors = result_tensors(None, (4, 6), 123)
    assert tensors["MASKS"].shape == (0, 4, 6) and tensors["MASKS"].dtype == bool
    assert tensors["TRACKED_FRAME"].tolist() == [-1] and tensors["STATE_BYTES"].tolist() == [123]


# -- the handler over a real VideoTracker (stand-in networks, tests/test_video_tracking.py) ------


def handler_with_fake_networks(**overrides):
    from test_video_tracking import fake_tracker

    from sam2_triton.python_backend.video.frame_requests import VideoRequestHandler

    video = settings(**overrides)
    store = SequenceStore(lambda options: fake_tracker(options.num_frames)[1], video)
    return VideoRequestHandler(store, video, LIMITS), store


def click(obj_id: int, x: float = 4.0, y: float = 4.0) -> dict:
    return dict(
        POINT_OBJ_IDS=np.array([obj_id], np.int64),
        POINT_COORDS=np.array([[[x, y]]], np.float32),
        POINT_LABELS=np.array([[1]], np.int32),
    )


def test_handler_caps_prompted_frames_per_object():
    from test_video_tracking import fake_frame

    handler, store = handler_with_fake_networks(max_prompted_frames=2)
    handle = lambda t, start=False, frame=True, **tensors: handler.handle(  # noqa: E731
        parse(start=start, image=fake_frame(t) if frame else None, **tensors)
    )
    assert handle(0, start=True, **click(1)).obj_ids == [1]
    assert handle(1, **click(1)).frame_idx == 1  # second conditioning frame of object 1
    assert handle(1, frame=False, **click(1, 5.0)).frame_idx == 1  # correcting it adds none
    with pytest.raises(
        InputError, match="object 1 was prompted on 2 frames, the most this server keeps"
    ):
        handle(2, **click(1))
    tracker = store.get(42)
    assert tracker.last_frame == 1 and not tracker.pending  # the refused request changed nothing
    result = handle(2, **click(2))  # another object may still be prompted
    assert result.obj_ids == [1, 2] and result.frame_idx == 2


def test_handler_leaves_the_sequence_as_it_was_after_a_refused_frame():
    from test_video_tracking import fake_frame

    handler, store = handler_with_fake_networks()
    handler.handle(parse(start=True, image=fake_frame(0), **click(1)))
    small = fake_frame(1)[:10, :10]
    with pytest.raises(InputError, match="every frame must have the first frame's size"):
        handler.handle(parse(start=False, image=small, **click(2)))
    # the request is checked by the tracker's own checks before anything changes
    with pytest.raises(InputError, match="frame 0 is not after the last tracked frame 0"):
        handler.handle(
            parse(start=False, image=fake_frame(0), FRAME_INDEX=np.array([0], np.int64), **click(2))
        )
    mask = dict(MASK_OBJ_IDS=np.array([3], np.int64), MASK_PROMPTS=np.ones((1, 5, 5), bool))
    with pytest.raises(InputError, match="mask prompt of object 3 is 5x5; the video's frames are"):
        handler.handle(parse(start=False, image=fake_frame(1), **mask))
    with pytest.raises(InputError, match="cannot remove objects \\[5\\]"):
        handler.handle(
            parse(start=False, image=fake_frame(1), REMOVE_OBJ_IDS=np.array([5], np.int64))
        )
    tracker = store.get(42)
    assert tracker.obj_ids == [1] and tracker.last_frame == 0
    assert handler.handle(parse(start=False, image=fake_frame(1))).obj_ids == [1]
    result = handler.handle(parse(start=False, end=True, REMOVE_OBJ_IDS=np.array([1], np.int64)))
    assert result is None and 42 not in store


def test_wire_samurai_inputs_are_the_samurai_settings():
    """sam2_triton/wire.py's SAMURAI_SETTINGS (which the client sends, the model reads and the
    generated config declares) name every SamuraiSettings field, in capitals, with the
    integer / float kind of the setting."""
    from sam2_triton.python_backend.video.frame_requests import SAMURAI_INPUTS
    from sam2_triton.wire import SAMURAI_SETTINGS

    kinds = field_types(SamuraiSettings)
    assert SAMURAI_INPUTS == {setting.upper(): setting for setting in kinds}
    assert list(SAMURAI_SETTINGS) == list(kinds)
    for setting, (_, dtype) in SAMURAI_SETTINGS.items():
        assert kinds[setting] in (int, float), setting
        assert np.issubdtype(dtype, np.integer) == (kinds[setting] is int), setting
