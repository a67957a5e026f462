"""SequenceStore (trackers per correlation id, admission, idle eviction), request parsing and
the handler's START / END rules over stand-in networks, no server."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from sam2_triton.configs import RequestLimits, dataclass_parameters, field_types, get_profile
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.samurai import SamuraiSettings
from sam2_triton.python_backend.video.answers import AnswerFormat, answer_tensors
from sam2_triton.python_backend.video.frame_requests import parse_frame_request
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
        max_snapshot_bytes=64 * 1024 * 1024,
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
        MEASURE_EMPTY_MASKS=np.array([False]),
        MEMORY_CANDIDATES_FROM_FRAME=np.array([0], np.int32),
    )
    assert request.prompted_ids == [1, 3, 5]
    np.testing.assert_array_equal(request.points[3].coords, [[10, 20]])  # padding dropped
    np.testing.assert_array_equal(request.points[1].labels, [1, 0])
    np.testing.assert_array_equal(request.boxes[1], [1, 2, 30, 40])
    assert request.masks[5].shape == (4, 6)
    assert request.options.num_frames == 12
    assert request.options.samurai.kf_score_weight == 0.5
    assert request.options.samurai.stable_frames_threshold == SAMURAI.stable_frames_threshold
    assert request.options.samurai.measure_empty_masks is False
    assert request.options.samurai.memory_candidates_from_frame == 0
    assert request.options.samurai.filter_on_click_prompts is SAMURAI.filter_on_click_prompts


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
        (
            dict(BOX_OBJ_IDS=np.array([-4]), BOXES=np.zeros((1, 4), np.float32)),
            "BOX_OBJ_IDS holds -4: object ids must be in 0..2147483647",
        ),
        (
            dict(REMOVE_OBJ_IDS=np.array([3, 2**31], np.int64)),
            "REMOVE_OBJ_IDS holds 2147483648: object ids must be in 0..2147483647",
        ),
        (
            dict(
                POINT_OBJ_IDS=np.array([2**63 - 1], np.int64),
                POINT_COORDS=np.zeros((1, 1, 2), np.float32),
                POINT_LABELS=np.ones((1, 1), np.int32),
            ),
            "POINT_OBJ_IDS holds 9223372036854775807",
        ),
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
        (
            dict(NUM_FRAMES=np.array([2**31 + 1], np.int64)),
            "NUM_FRAMES is 2147483649: must be an integer in 1..2147483648",
        ),
        (
            dict(SAMURAI=np.array([True]), STABLE_FRAMES_THRESHOLD=np.array([2**40], np.int64)),
            "STABLE_FRAMES_THRESHOLD is 1099511627776",
        ),
        (dict(KF_SCORE_WEIGHT=np.array([0.5], np.float32)), "without SAMURAI = true"),
        (
            dict(SAMURAI=np.array([True]), KF_SCORE_WEIGHT=np.array([1.5], np.float32)),
            "kf_score_weight",
        ),
        (dict(FRAME_INDEX=np.array([-1], np.int64)), "FRAME_INDEX is -1"),
        (
            dict(FRAME_INDEX=np.array([2**63 - 1], np.int64)),
            "FRAME_INDEX is 9223372036854775807: must be an integer in 0..2147483647",
        ),
        (dict(FRAME_INDEX=np.array([2**31], np.int64)), "FRAME_INDEX is 2147483648"),
        (dict(FRAME_INDEX=np.array([1.0], np.float32)), "FRAME_INDEX is 1.0: must be an integer"),
        (
            dict(ANSWER=np.array([b"png"], np.object_)),
            "ANSWER is 'png': the answer kinds are masks, rle, small_masks, logits",
        ),
        (dict(ANSWER=np.array([b"logits"], np.object_)), "ANSWER 'logits' needs ANSWER_SIZE"),
        (dict(ANSWER_SIZE=np.array([8, 8], np.int64)), "ANSWER_SIZE is only used with ANSWER"),
    ],
)
def test_parse_rejects_bad_tensors(tensors, message):
    with pytest.raises(InputError, match=message):
        parse(**tensors)


def test_start_only_inputs_are_refused_later():
    with pytest.raises(InputError, match="NUM_FRAMES can only be sent with the sequence's START"):
        parse(start=False, NUM_FRAMES=np.array([3], np.int64))
    answer = dict(ANSWER=np.array([b"logits"], np.object_), ANSWER_SIZE=np.array([8, 8]))
    with pytest.raises(
        InputError, match="ANSWER, ANSWER_SIZE can only be sent with the sequence's START"
    ):
        parse(start=False, **answer)
    assert parse(**answer).options.answer == AnswerFormat("logits", (8, 8))
    assert parse().options.answer == AnswerFormat()  # full-size masks unless START says


def test_store_keeps_what_each_sequence_chose_at_start():
    store = SequenceStore(FakeTracker, settings())
    store.start(1, SequenceOptions(answer=AnswerFormat("rle")))
    store.start(2, SequenceOptions())
    assert store.options(1).answer.kind == "rle" and store.options(2).answer.kind == "masks"
    store.end(1)
    with pytest.raises(InputError, match="sequence 1 has ended"):
        store.options(1)


def test_answer_without_a_frame_has_zero_rows():
    tensors = answer_tensors(None, AnswerFormat(), 123, (4, 6))
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


def test_handler_checks_the_answer_budget_before_removing_objects():
    from test_video_tracking import FAKE_METADATA, FAKE_SIZE, FakeNetworks, fake_frame

    from sam2_triton.python_backend.video.frame_requests import VideoRequestHandler
    from sam2_triton.python_backend.video.tracker import VideoTracker

    two_objects = 2 * FAKE_SIZE[0] * FAKE_SIZE[1]  # bool masks of two objects on a frame
    video = settings()
    store = SequenceStore(lambda options: VideoTracker(FakeNetworks(), FAKE_METADATA), video)
    limits = dataclasses.replace(LIMITS, max_mask_bytes=two_objects)
    handler = VideoRequestHandler(store, video, limits)
    both = dict(
        POINT_OBJ_IDS=np.array([1, 2], np.int64),
        POINT_COORDS=np.array([[[4, 4]], [[9, 9]]], np.float32),
        POINT_LABELS=np.array([[1], [1]], np.int32),
    )
    assert handler.handle(parse(start=True, image=fake_frame(0), **both)).obj_ids == [1, 2]
    two_new = dict(
        POINT_OBJ_IDS=np.array([3, 4], np.int64),
        POINT_COORDS=np.array([[[4, 4]], [[9, 9]]], np.float32),
        POINT_LABELS=np.array([[1], [1]], np.int32),
        REMOVE_OBJ_IDS=np.array([1], np.int64),
    )
    with pytest.raises(InputError, match="3 objects .*max_mask_bytes"):
        handler.handle(parse(start=False, image=fake_frame(1), **two_new))
    tracker = store.get(42)
    assert tracker.obj_ids == [1, 2] and tracker.last_frame == 0  # the removal did not happen


def test_each_answer_comes_in_the_format_its_sequence_chose():
    """Three sequences on the same frames: every answer (tracked frame, correction, frame with
    END, END alone) is in its own sequence's format."""
    from test_video_tracking import FAKE_SIZE, fake_frame

    handler, store = handler_with_fake_networks()
    starts = {
        1: {},
        2: dict(ANSWER=np.array([b"small_masks"], np.object_), ANSWER_SIZE=np.array([6, 8])),
        3: dict(ANSWER=np.array([b"rle"], np.object_)),
    }
    answers: dict[int, list] = {sid: [] for sid in starts}

    def respond(sequence_id, **kwargs):
        request = parse(**kwargs)
        request.sequence_id = sequence_id
        answers[sequence_id].append(handler.respond(request))

    for sequence_id, options in starts.items():
        respond(sequence_id, image=fake_frame(0), **click(1), **options)
        respond(sequence_id, start=False, image=fake_frame(1))
        respond(sequence_id, start=False, **click(1, x=5.0))  # a correction of frame 1
        respond(sequence_id, start=False, end=True, image=fake_frame(2))
        respond(sequence_id, start=False, end=True)  # END alone: no longer held
    assert len(store) == 0
    full, small, coded = answers[1], answers[2], answers[3]
    for step in range(4):
        masks = full[step]["MASKS"]
        assert masks.shape == (1, *FAKE_SIZE) and masks.any()
        assert small[step]["MASKS"].shape == (1, 6, 8) and small[step]["MASKS"].any()
        assert coded[step]["MASKS"].shape == (0, 0, 0)
        assert coded[step]["RLE_COUNTS"].shape == (1,)
        for answer in (small[step], coded[step]):
            assert answer["TRACKED_FRAME"].tolist() == full[step]["TRACKED_FRAME"].tolist()
            assert answer["ORIGINAL_SIZE"].tolist() == list(FAKE_SIZE)
    assert [a["TRACKED_FRAME"].tolist() for a in full] == [[0], [1], [1], [2], [-1]]
    assert small[4]["MASKS"].shape == (0, 0, 0)  # END alone of an id not held: the default
    # END alone of a held sequence answers in its format
    respond(3, image=fake_frame(0), **starts[3])
    respond(3, start=False, end=True)
    assert coded[-1]["RLE_COUNTS"].shape == (0,) and coded[-1]["MASKS"].shape == (0, 0, 0)


def test_sized_answers_are_budgeted_at_their_size():
    """The budget counts each answer in its format: a sequence with small masks tracks objects
    whose full-size masks would not fit (its tracker, as the model makes it, never makes them);
    float32 logits count 4 bytes a pixel."""
    from test_video_tracking import FAKE_METADATA, FAKE_SIZE, FakeNetworks, fake_frame

    from sam2_triton.python_backend.video.frame_requests import VideoRequestHandler
    from sam2_triton.python_backend.video.tracker import VideoTracker

    one_object = FAKE_SIZE[0] * FAKE_SIZE[1]  # a full-size bool mask
    video = settings()
    store = SequenceStore(
        lambda options: VideoTracker(
            FakeNetworks(),
            FAKE_METADATA,
            max_mask_bytes=one_object if options.answer.full_size else None,
        ),
        video,
    )
    handler = VideoRequestHandler(
        store, video, dataclasses.replace(LIMITS, max_mask_bytes=one_object)
    )
    two = dict(
        POINT_OBJ_IDS=np.array([1, 2], np.int64),
        POINT_COORDS=np.array([[[4, 4]], [[9, 9]]], np.float32),
        POINT_LABELS=np.array([[1], [1]], np.int32),
    )
    small = dict(ANSWER=np.array([b"small_masks"], np.object_), ANSWER_SIZE=np.array([12, 16]))
    answer = handler.respond(parse(image=fake_frame(0), **two, **small))
    assert answer["MASKS"].shape == (2, 12, 16) and answer["OBJ_IDS"].tolist() == [1, 2]
    assert handler.respond(parse(start=False, image=fake_frame(1)))["MASKS"].shape == (2, 12, 16)
    with pytest.raises(InputError, match="2 objects of 32x24 pixels = 1536 bytes"):
        handler.respond(parse(image=fake_frame(0), **two))  # full-size masks
    logits = dict(ANSWER=np.array([b"logits"], np.object_), ANSWER_SIZE=np.array([12, 16]))
    with pytest.raises(InputError, match="2 objects of logits at 16x12 pixels x 4 bytes = 1536"):
        handler.respond(parse(image=fake_frame(0), **two, **logits))
    assert 42 not in store  # refused STARTs leave no sequence


def test_wire_samurai_inputs_are_the_samurai_settings():
    """sam2_triton/wire.py's SAMURAI_SETTINGS (which the client sends, the model reads and the
    generated config declares) name every SamuraiSettings field, in capitals, with the
    integer / float / bool kind of the setting."""
    from sam2_triton.python_backend.video.frame_requests import SAMURAI_INPUTS
    from sam2_triton.wire import SAMURAI_SETTINGS

    kinds = field_types(SamuraiSettings)
    assert SAMURAI_INPUTS == {setting.upper(): setting for setting in kinds}
    assert list(SAMURAI_SETTINGS) == list(kinds)
    for setting, (_, dtype) in SAMURAI_SETTINGS.items():
        assert kinds[setting] in (int, float, bool), setting
        assert (dtype is np.bool_) == (kinds[setting] is bool), setting
        assert np.issubdtype(dtype, np.integer) == (kinds[setting] is int), setting


# -- sequence ids, consistent START, admission, frame-index bound ------------------------------


@pytest.mark.parametrize(
    "value, message",
    [
        (0, "neither an integer in 1..2\\*\\*64 - 1"),
        (-3, "neither an integer"),
        (2**64, "neither an integer"),
        (True, "neither an integer"),
        (b"video-a", "neither an integer"),
        ("", "string sequence ids must have 1..128 bytes; this one has 0"),
        ("é" * 65, "string sequence ids must have 1..128 bytes; this one has 130"),
    ],
)
def test_sequence_ids_outside_triton_ranges_are_refused(value, message):
    from sam2_triton.python_backend.video.sequences import check_sequence_id

    with pytest.raises(InputError, match=message):
        check_sequence_id(value)


def test_string_and_integer_sequence_ids_are_distinct_sequences():
    from sam2_triton.python_backend.video.sequences import check_sequence_id

    ids = [check_sequence_id(v) for v in ("video-a", "video-b", "7", 7, 2**64 - 1, "v" * 128)]
    store = SequenceStore(FakeTracker, settings(max_sequences=len(ids)))
    trackers = [store.start(sequence_id, SequenceOptions()) for sequence_id in ids]
    assert len(store) == len(ids) and len({id(t) for t in trackers}) == len(ids)
    store.end("video-b")
    assert store.get("video-a") is trackers[0] and store.get(7) is trackers[3]
    with pytest.raises(InputError, match="video sequence 'video-b' has ended"):
        store.get("video-b")
    with pytest.raises(InputError, match="video sequence 'video-c' was never started"):
        store.get("video-c")


def test_refused_start_leaves_no_sequence_and_the_next_frame_must_start_again():
    """Issue item 4: a START refused by the checks (too many objects, a bad box) used to leave
    an empty sequence that accepted the next frame."""
    from test_video_tracking import fake_frame

    handler, store = handler_with_fake_networks(max_objects=2)
    three = dict(
        POINT_OBJ_IDS=np.array([1, 2, 3], np.int64),
        POINT_COORDS=np.full((3, 1, 2), 4.0, np.float32),
        POINT_LABELS=np.ones((3, 1), np.int32),
    )
    with pytest.raises(InputError, match="at most 2 objects; this request would make it 3"):
        handler.handle(parse(start=True, image=fake_frame(0), **three))
    assert 42 not in store and len(store) == 0
    with pytest.raises(
        InputError,
        match="video sequence 42 could not start \\(a sequence tracks at most 2 objects.*\\); "
        "send START again",
    ):
        handler.handle(parse(start=False, image=fake_frame(1)))
    bad_box = dict(BOX_OBJ_IDS=np.array([1], np.int64), BOXES=np.array([[9, 2, 3, 8]], np.float32))
    with pytest.raises(InputError, match="need x0 <= x1"):
        handler.handle(parse(start=True, image=fake_frame(0), **bad_box))
    assert 42 not in store
    assert handler.handle(parse(start=True, image=fake_frame(0), **click(1))).obj_ids == [1]
    assert handler.handle(parse(start=False, image=fake_frame(1))).frame_idx == 1


def test_refused_restart_ends_its_own_id_only():
    """The one rule: a START ends what its id held, accepted or refused; other ids are never
    touched."""
    from test_video_tracking import fake_frame

    handler, store = handler_with_fake_networks()
    for sequence_id, obj_id in ((42, 1), (43, 2)):
        request = parse(start=True, image=fake_frame(0), **click(obj_id))
        request.sequence_id = sequence_id
        handler.handle(request)
    other = store.get(43)
    restart = parse(start=True, image=fake_frame(0), **click(3, x=500.0))  # far outside
    with pytest.raises(InputError, match="lies far outside"):
        handler.handle(restart)
    assert 42 not in store
    with pytest.raises(InputError, match="sequence 42 could not start .*send START again"):
        handler.handle(parse(start=False, image=fake_frame(1)))
    assert store.get(43) is other and other.obj_ids == [2] and other.last_frame == 0
    # an accepted START replaces the id's sequence
    first = handler.handle(parse(start=True, image=fake_frame(0), **click(1)))
    assert first.obj_ids == [1]
    assert handler.handle(parse(start=True, image=fake_frame(5), **click(4))).obj_ids == [4]


def test_start_that_fails_inside_leaves_no_sequence(monkeypatch):
    """A START whose tracking fails (a network error: INTERNAL) is not held either."""
    from test_video_tracking import fake_frame

    from sam2_triton.python_backend.video.tracker import VideoTracker

    handler, store = handler_with_fake_networks()

    def broken(self, frame_idx, image):
        raise RuntimeError("memory_attention: CUDA error")

    with monkeypatch.context() as patch:
        patch.setattr(VideoTracker, "track", broken)
        with pytest.raises(RuntimeError, match="CUDA error"):
            handler.handle(parse(start=True, image=fake_frame(0), **click(1)))
    assert 42 not in store
    with pytest.raises(InputError, match="could not start \\(RuntimeError: memory_attention"):
        handler.handle(parse(start=False, image=fake_frame(1)))


def test_end_alone_always_succeeds():
    """END with nothing else frees the sequence if held and answers nothing-tracked either way,
    so a client can always release Triton's slot (after a refused START, say)."""
    from test_video_tracking import fake_frame

    handler, store = handler_with_fake_networks()
    assert handler.handle(parse(start=False, end=True)) is None  # never started
    handler.handle(parse(start=True, image=fake_frame(0), **click(1)))
    assert handler.handle(parse(start=False, end=True)) is None and 42 not in store
    assert handler.handle(parse(start=False, end=True)) is None  # ended already
    with pytest.raises(InputError, match="sequence 42 has ended"):
        handler.handle(parse(start=False, end=True, image=fake_frame(1)))


def test_full_server_refuses_a_start_at_once_and_keeps_what_it_holds():
    """Issue item 5: the model refuses a START beyond max_sequences itself (Triton has spare
    slots, see test_model_files), naming the problem, and the held sequences go on."""
    from test_video_tracking import fake_frame

    handler, store = handler_with_fake_networks(max_sequences=2)
    for sequence_id in (1, "two"):
        request = parse(start=True, image=fake_frame(0), **click(1))
        request.sequence_id = sequence_id
        handler.handle(request)
    full = parse(start=True, image=fake_frame(0), **click(1))
    with pytest.raises(
        InputError,
        match="the server is full: it holds 2 video sequences, its maximum; no new sequence can "
        "start now. Retry later \\(a sequence is freed by its END or after 10 s",
    ):
        handler.handle(full)
    assert len(store) == 2 and 42 not in store
    restart = parse(start=True, image=fake_frame(0), **click(2))  # a held id may START again
    restart.sequence_id = "two"
    assert handler.handle(restart).obj_ids == [2]
    end = parse(start=False, end=True)
    end.sequence_id = 1
    handler.handle(end)
    assert handler.handle(full).obj_ids == [1] and len(store) == 2


def test_frame_indices_stop_at_the_last_index():
    """Issue item 7: FRAME_INDEX 2**63 - 1 used to be accepted, and every later frame did a
    frame's work before failing with an OverflowError (INTERNAL)."""
    from test_video_tracking import fake_frame

    from sam2_triton.wire import MAX_FRAME_INDEX

    handler, store = handler_with_fake_networks()
    last = dict(FRAME_INDEX=np.array([MAX_FRAME_INDEX], np.int64))
    handler.handle(parse(start=True, image=fake_frame(0), **click(1)))
    result = handler.handle(parse(start=False, image=fake_frame(1), **last))
    tensors = answer_tensors(result, AnswerFormat(), 0)
    assert tensors["TRACKED_FRAME"].tolist() == [MAX_FRAME_INDEX]
    with pytest.raises(InputError, match="frame index 2147483648 is outside 0..2147483647"):
        handler.handle(parse(start=False, image=fake_frame(2)))
    tracker = store.get(42)
    assert tracker.last_frame == MAX_FRAME_INDEX and not tracker.pending
    # the last frame can still be corrected
    assert handler.handle(parse(start=False, **click(1, x=5.0))).frame_idx == MAX_FRAME_INDEX


def test_triton_slots_leave_room_for_refused_sequences():
    from sam2_triton.python_backend.video.sequences import TRITON_SPARE_SEQUENCE_SLOTS

    assert settings(max_sequences=8).triton_sequence_slots == 8 + TRITON_SPARE_SEQUENCE_SLOTS
    assert TRITON_SPARE_SEQUENCE_SLOTS >= 1024
