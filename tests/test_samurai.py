"""SAMURAI motion-aware mask choice and memory selection (python_backend/samurai.py).

The Kalman filter is checked against a textbook constant-velocity filter written here from
the published noise model (not from the module); mask choice and memory selection against
hand-built scenarios whose expected answers follow from the rules.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from sam2_triton.errors import ConfigError
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.samurai import (
    BoxKalmanFilter,
    FrameRecord,
    ObjectMotionState,
    SamuraiSettings,
    box_iou,
    boxes_read,
    choose_box,
    choose_mask,
    mask_box,
    reachable_memory_frames,
    select_memory_frames,
    xyah_to_xyxy,
    xyxy_to_xyah,
)

# Defaults as stated in SAMURAI's configs (the facts), not read from the module.
FACT_DEFAULTS = {
    "kf_score_weight": 0.25,
    "stable_frames_threshold": 15,
    "stable_ious_threshold": 0.3,
    "memory_bank_iou_threshold": 0.5,
    "memory_bank_obj_score_threshold": 0.0,
    "memory_bank_kf_score_threshold": 0.0,
    "min_obj_score_logits": -1.0,
    "max_memory_candidates": 15,
    "num_recent_memories": 6,
    # SAMURAI's behaviour where it looks accidental (docs/samurai-rules.md): its walk stops
    # before frame 2, it measures empty masks, steps on single clicks, never restarts
    "memory_candidates_from_frame": 2,
    "measure_empty_masks": True,
    "filter_on_click_prompts": True,
    "restart_filter_on_prompt": False,
}


@pytest.fixture(scope="module")
def settings():
    return SamuraiSettings.load()


# --- textbook Kalman filter -------------------------------------------------------------------


def _textbook_matrices():
    transition = np.eye(8)
    for i in range(4):
        transition[i, i + 4] = 1.0  # dt = 1 frame
    observation = np.zeros((4, 8))
    observation[np.arange(4), np.arange(4)] = 1.0
    return transition, observation


def _q(h):
    pos, vel = h / 20, h / 160
    return np.diag(np.square([pos, pos, 1e-2, pos, vel, vel, 1e-5, vel]))


def _r(h):
    return np.diag(np.square([h / 20, h / 20, 0.1, h / 20]))


def _p0(h):
    pos, vel = 2 * h / 20, 10 * h / 160
    return np.diag(np.square([pos, pos, 1e-2, pos, vel, vel, 1e-5, vel]))


def _textbook_predict(x, p):
    f, _ = _textbook_matrices()
    return f @ x, f @ p @ f.T + _q(x[3])


def _textbook_update(x, p, z):
    _, h_mat = _textbook_matrices()
    s = h_mat @ p @ h_mat.T + _r(x[3])
    k = p @ h_mat.T @ np.linalg.inv(s)
    return x + k @ (z - h_mat @ x), (np.eye(8) - k @ h_mat) @ p


def _true_xyah(t):
    return np.array([200 + 3.0 * t, 150 - 1.5 * t, 0.6 + 0.002 * t, 80 + 0.5 * t])


def _assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9)


def test_kalman_matches_textbook_filter_on_noisy_track():
    rng = np.random.default_rng(7)
    noise = np.array([2.0, 2.0, 0.02, 2.0])
    measurements = [_true_xyah(t) + noise * rng.standard_normal(4) for t in range(31)]
    kf = BoxKalmanFilter()
    mean, cov = kf.initiate(measurements[0])
    x = np.concatenate([measurements[0], np.zeros(4)])
    p = _p0(measurements[0][3])
    _assert_close(mean, x)
    _assert_close(cov, p)
    for z in measurements[1:]:
        mean, cov = kf.predict(mean, cov)
        x, p = _textbook_predict(x, p)
        _assert_close(mean, x)
        _assert_close(cov, p)
        mean, cov = kf.update(mean, cov, z)
        x, p = _textbook_update(x, p, z)
        _assert_close(mean, x)
        _assert_close(cov, p)
    assert not np.allclose(x[4:], 0), "the track should have picked up a velocity"


def test_kalman_converges_on_noise_free_constant_velocity_box():
    velocity = np.array([4.0, -2.0, 0.0, 0.0])
    start = np.array([100.0, 300.0, 0.5, 60.0])
    kf = BoxKalmanFilter()
    mean, cov = kf.initiate(start)
    steps = 60
    for t in range(1, steps + 1):
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, start + t * velocity)
    predicted, _ = kf.predict(mean, cov)
    np.testing.assert_allclose(predicted[:4], start + (steps + 1) * velocity, atol=0.05)
    np.testing.assert_allclose(predicted[4:], velocity, atol=0.01)


def test_kalman_functions_leave_their_inputs_alone():
    kf = BoxKalmanFilter()
    mean, cov = kf.initiate(np.array([50.0, 60.0, 1.0, 40.0]))
    mean_before, cov_before = mean.copy(), cov.copy()
    predicted_mean, predicted_cov = kf.predict(mean, cov)
    kf.update(predicted_mean, predicted_cov, np.array([52.0, 61.0, 1.0, 41.0]))
    np.testing.assert_array_equal(mean, mean_before)
    np.testing.assert_array_equal(cov, cov_before)
    assert predicted_mean is not mean and predicted_cov is not cov


# --- box helpers ------------------------------------------------------------------------------


def test_box_conversions_round_trip():
    box = np.array([10.0, 20.0, 40.0, 100.0])
    xyah = xyxy_to_xyah(box)
    np.testing.assert_allclose(xyah, [25.0, 60.0, 30.0 / 80.0, 80.0])
    np.testing.assert_allclose(xyah_to_xyxy(xyah), box)
    # SAMURAI measures a box of height 0 with h = 1 (kalman_filter.py:314-315)
    np.testing.assert_array_equal(xyxy_to_xyah(np.array([0.0, 5.0, 10.0, 5.0])), [5, 5, 10, 1])
    np.testing.assert_array_equal(xyxy_to_xyah(np.zeros(4)), [0, 0, 0, 1])


def test_box_iou():
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == pytest.approx(1.0)
    assert box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # no area: no NaN


def test_mask_box():
    mask = np.zeros((8, 12), dtype=bool)
    assert mask_box(mask) is None
    mask[5, 3] = True  # SAMURAI's box: inclusive pixel indices (sam2_base.py:426-432)
    np.testing.assert_array_equal(mask_box(mask), [3, 5, 3, 5])
    mask[2:4, 7:10] = True
    np.testing.assert_array_equal(mask_box(mask), [3, 2, 9, 5])
    logits = np.where(mask, 2.5, -3.0)  # pixels > 0, not != 0
    np.testing.assert_array_equal(mask_box(logits), [3, 2, 9, 5])


# --- mask choice ------------------------------------------------------------------------------

FRAME = (96, 192)  # H, W of the candidate masks
OBJECT_SIZE = (20, 30)  # w, h pixels
SPEED = 2  # pixels per frame, to the right


def _rect(x0, y0, w=OBJECT_SIZE[0], h=OBJECT_SIZE[1]):
    mask = np.zeros(FRAME, dtype=bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask


def _true_mask(t):
    return _rect(10 + SPEED * t, 30)


def _good_candidates(t):
    """The true mask has the best predicted IoU; the others are worse and elsewhere."""
    masks = np.stack([_rect(150, 60, 10, 10), _true_mask(t), _rect(0, 0, 8, 8)])
    return masks, np.array([0.4, 0.9, 0.2])


def _distractor_candidates(t):
    """A distractor far from the track beats the true mask on predicted IoU."""
    masks = np.stack([_rect(150, 50), _true_mask(t), _rect(0, 0, 8, 8)])
    return masks, np.array([0.95, 0.85, 0.3])


def _track(state, settings, frames):
    for t in frames:
        index, motion = choose_mask(state, *_good_candidates(t), settings)
        assert index == 1
        assert (motion is None) == (t < settings.stable_frames_threshold)
        # SAMURAI's counter stops at the threshold (sam2_base.py:495-498)
        assert state.stable_count == min(t + 1, settings.stable_frames_threshold)


def test_motion_aware_choice_prefers_the_mask_on_the_predicted_box(settings):
    state = ObjectMotionState()
    stable_frames = settings.stable_frames_threshold
    _track(state, settings, range(stable_frames))
    t = stable_frames
    masks, ious = _distractor_candidates(t)
    predicted_mean, _ = _textbook_predict(state.mean, state.covariance)
    index, motion = choose_mask(state, masks, ious, settings)
    assert int(np.argmax(ious)) == 0, "plain SAM 2 would take the distractor"
    assert index == 1
    assert motion == pytest.approx(box_iou(xyah_to_xyxy(predicted_mean), mask_box(_true_mask(t))))
    assert motion > 0.8
    assert state.stable_count == stable_frames
    # The filter follows the object: its velocity is about SPEED pixels per frame in x.
    assert state.mean[4] == pytest.approx(SPEED, abs=0.3)


def test_unstable_phase_takes_argmax(settings):
    state = ObjectMotionState()
    _track(state, settings, range(5))
    masks, ious = _distractor_candidates(5)
    index, motion = choose_mask(state, masks, ious, settings)
    assert index == int(np.argmax(ious)) == 0
    assert motion is None
    assert state.stable_count == 6  # 0.95 > stable_ious_threshold: accepted


def test_low_iou_resets_and_reinitialises(settings):
    state = ObjectMotionState()
    _track(state, settings, range(5))
    masks, _ = _good_candidates(5)
    choose_mask(state, masks, np.array([0.1, 0.25, 0.05]), settings)
    assert state.stable_count == 0
    index, motion = choose_mask(state, *_distractor_candidates(6), settings)
    assert (index, motion, state.stable_count) == (0, None, 1)
    np.testing.assert_allclose(state.mean[:4], xyxy_to_xyah(mask_box(_rect(150, 50))))
    np.testing.assert_array_equal(state.mean[4:], 0.0)


def test_low_iou_resets_a_stable_track(settings):
    state = ObjectMotionState()
    _track(state, settings, range(settings.stable_frames_threshold))
    masks, _ = _good_candidates(settings.stable_frames_threshold)
    index, motion = choose_mask(state, masks, np.array([0.05, 0.2, 0.1]), settings)
    assert index == 1 and motion > 0.5  # the motion score still finds the object
    assert state.stable_count == 0


def test_empty_candidate_has_motion_score_zero(settings):
    state = ObjectMotionState()
    _track(state, settings, range(settings.stable_frames_threshold))
    t = settings.stable_frames_threshold
    empty = np.zeros(FRAME, dtype=bool)
    masks = np.stack([empty, empty, _true_mask(t)])
    before = state.copy()
    index, motion = choose_mask(state, masks, np.array([0.9, 0.8, 0.5]), settings)
    # 0.75 * 0.9 beats at most 0.25 * 1 + 0.75 * 0.5 for the true mask.
    assert (index, motion) == (0, 0.0)
    # SAMURAI measures the empty mask as the box (0, 0, 0, 0), i.e. (0, 0, 0, 1): the filter is
    # pulled toward the corner and stays stable (sam2_base.py:463-470, 495-498)
    predicted = KALMAN.predict(before.mean, before.covariance)
    expected, _ = KALMAN.update(*predicted, np.array([0.0, 0.0, 0.0, 1.0]))
    np.testing.assert_allclose(state.mean, expected)
    assert state.stable_count == settings.stable_frames_threshold
    # measure_empty_masks off (ours): not measured, the filter restarts on the next frame
    ours = before.copy()
    choose_mask(ours, masks, np.array([0.9, 0.8, 0.5]), _ours(settings))
    assert ours.stable_count == 0
    np.testing.assert_array_equal(ours.mean, predicted[0])


def _ours(settings):
    return settings.with_overrides({"measure_empty_masks": False})


KALMAN = BoxKalmanFilter()


def test_objects_are_independent(settings):
    first, second = ObjectMotionState(), ObjectMotionState()
    assert first.records is not second.records
    _track(second, settings, range(3))
    second.add_record(FrameRecord(2, 0.9, 1.0, None))
    snapshot = copy.deepcopy(second)
    _track(first, settings, range(settings.stable_frames_threshold + 1))
    first.add_record(FrameRecord(2, 0.1, -5.0, 0.0))
    np.testing.assert_array_equal(second.mean, snapshot.mean)
    np.testing.assert_array_equal(second.covariance, snapshot.covariance)
    assert second.stable_count == snapshot.stable_count == 3
    assert second.records == snapshot.records
    assert first.stable_count == settings.stable_frames_threshold


# --- memory selection -------------------------------------------------------------------------


def _good(frame, motion=0.8):
    return FrameRecord(frame, predicted_iou=0.9, object_score_logit=2.0, motion_score=motion)


def _records(last):
    return {frame: _good(frame) for frame in range(last + 1)}


def test_memory_skips_frames_failing_a_threshold(settings):
    records = _records(19)
    records[19] = FrameRecord(19, 0.1, -3.0, 0.0)  # t - 1: kept anyway
    records[18] = FrameRecord(18, 0.4, 2.0, 0.8)  # low IoU
    records[17] = FrameRecord(17, 0.9, -0.5, 0.8)  # object score logit <= 0
    records[16] = FrameRecord(16, 0.9, 2.0, 0.0)  # motion score 0
    records[15] = FrameRecord(15, 0.9, 2.0, None)  # not stable: passes
    records[14] = FrameRecord(14, 0.5, 2.0, 0.8)  # IoU equal to the threshold: not above
    assert select_memory_frames(records, 20, settings) == [19, 15, 13, 12, 11, 10]


def test_memory_returns_at_most_num_recent(settings):
    records = _records(30)
    assert select_memory_frames(records, 31, settings) == [30, 29, 28, 27, 26, 25]
    fewer = settings.with_overrides({"num_recent_memories": 2})
    assert select_memory_frames(records, 31, fewer) == [30, 29]
    # SAMURAI's walk never reaches frames 0 and 1 (sam2_base.py:666); t - 1 always counts
    assert select_memory_frames(_records(2), 3, settings) == [2]
    assert select_memory_frames(_records(2), 2, settings) == [1]
    every = settings.with_overrides({"memory_candidates_from_frame": 0})
    assert select_memory_frames(_records(2), 3, every) == [2, 1, 0]
    assert select_memory_frames({}, 3, settings) == []


def test_memory_stops_after_max_candidates(settings):
    records = _records(30)
    capped = settings.with_overrides({"max_memory_candidates": 3})
    assert select_memory_frames(records, 31, capped) == [30, 29, 28]


def test_memory_excludes_conditioning_frames_and_missing_frames(settings):
    records = _records(12)
    del records[9]  # never tracked
    chosen = select_memory_frames(records, 12, settings, cond_frames={0, 11, 8})
    assert chosen == [10, 7, 6, 5, 4, 3]
    assert select_memory_frames(records, 13, settings, cond_frames={12})[0] == 11


def test_memory_walks_forward_in_reverse_tracking(settings):
    records = _records(20)
    records[11] = FrameRecord(11, 0.9, -1.0, None)  # t + 1: kept anyway
    records[12] = FrameRecord(12, 0.9, -1.0, None)
    assert select_memory_frames(records, 10, settings, reverse=True) == [11, 13, 14, 15, 16, 17]
    assert select_memory_frames(records, 20, settings, reverse=True) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"max_memory_candidates": 3},
        {"num_recent_memories": 2, "memory_bank_iou_threshold": 0.8},
    ],
)
def test_pruned_records_select_as_the_whole_history(settings, overrides):
    """Keeping only reachable_memory_frames after every frame never changes a selection:
    for the next frame, after a gap, or for a correction of the last frame."""
    settings = settings.with_overrides(overrides)
    rng = np.random.default_rng(11)
    history, state, cond = {}, ObjectMotionState(), {0}
    last = 0
    for t in range(1, 400):
        if rng.random() < 0.05:
            continue  # a gap: frame t is never tracked
        assert select_memory_frames(state.records, t, settings, cond) == (
            select_memory_frames(history, t, settings, cond)
        )
        record = FrameRecord(
            t,
            float(rng.uniform(0.2, 1.0)),
            float(rng.normal(1.0, 1.5)),
            None if rng.random() < 0.3 else float(rng.uniform(0.0, 1.0)),
        )
        history[t] = record
        state.add_record(record)
        last = t
        if rng.random() < 0.05:  # a correction: the last frame becomes a conditioning frame
            assert select_memory_frames(state.records, t, settings, cond) == (
                select_memory_frames(history, t, settings, cond)
            )
            cond.add(t)
            del history[t], state.records[t]
        state.prune(reachable_memory_frames(state.records, last, settings, cond))
        assert len(state.records) <= 4 * settings.num_recent_memories
    assert len(history) > 300 and len(state.records) <= settings.num_recent_memories + 2


def test_choose_box_is_choose_mask_on_the_boxes(settings):
    by_mask, by_box = ObjectMotionState(), ObjectMotionState()
    for t in range(settings.stable_frames_threshold + 3):
        masks, ious = _distractor_candidates(t) if t % 4 == 3 else _good_candidates(t)
        expected = choose_mask(by_mask, masks, ious, settings)
        assert choose_box(by_box, [mask_box(m) for m in masks], ious, settings) == expected
        np.testing.assert_array_equal(by_box.mean, by_mask.mean)
        assert by_box.stable_count == by_mask.stable_count
    with pytest.raises(ValueError, match="candidate boxes"):
        choose_box(by_box, [], np.zeros(0), settings)


def test_motion_state_copy_restart_and_size():
    state = ObjectMotionState()
    state.mean, state.covariance = np.zeros(8), np.eye(8)
    state.add_record(FrameRecord(3, 0.9, 1.0, None))
    copied = state.copy()
    copied.mean[0] = 5.0
    copied.add_record(FrameRecord(4, 0.9, 1.0, 0.5))
    assert state.mean[0] == 0.0 and list(state.records) == [3]
    assert state.nbytes == 8 * 8 + 64 * 8 + FrameRecord.NBYTES
    state.restart()
    assert (state.mean, state.covariance, state.stable_count) == (None, None, 0)
    assert state.nbytes == FrameRecord.NBYTES


# --- settings ---------------------------------------------------------------------------------


def test_defaults_are_samurais(settings):
    assert {name: getattr(settings, name) for name in FACT_DEFAULTS} == FACT_DEFAULTS
    assert isinstance(settings.stable_frames_threshold, int)
    assert isinstance(settings.min_obj_score_logits, float)


def test_overrides_apply_to_a_copy(settings):
    changed = settings.with_overrides(
        {"kf_score_weight": np.float32(0.4), "stable_frames_threshold": np.int64(5)}
    )
    assert changed.kf_score_weight == 0.4 and changed.stable_frames_threshold == 5
    assert type(changed.stable_frames_threshold) is int
    assert settings.kf_score_weight == 0.25


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"kf_weight": 0.3}, "unknown SAMURAI setting 'kf_weight'"),
        ({"kf_score_weight": 1.5}, r"kf_score_weight must be in \[0, 1\], got 1.5"),
        ({"stable_ious_threshold": -0.1}, "stable_ious_threshold must be in"),
        (
            {"memory_bank_obj_score_threshold": math.nan},
            "memory_bank_obj_score_threshold must be finite",
        ),
        ({"min_obj_score_logits": -math.inf}, "min_obj_score_logits must be finite"),
        ({"stable_frames_threshold": 0}, "stable_frames_threshold must be >= 1, got 0"),
        ({"max_memory_candidates": 2.5}, "max_memory_candidates must be an integer"),
        ({"num_recent_memories": 7}, r"num_recent_memories must be in 1\.\.6, got 7"),
        ({"memory_bank_iou_threshold": True}, "memory_bank_iou_threshold must be a number"),
        (
            {"memory_bank_kf_score_threshold": "0.1"},
            "memory_bank_kf_score_threshold must be a number",
        ),
    ],
)
def test_bad_overrides_name_the_setting(settings, overrides, message):
    with pytest.raises(InputError, match=message):
        settings.with_overrides(overrides)


def test_malformed_file_is_a_config_error(tmp_path):
    path = tmp_path / "samurai.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        SamuraiSettings.load(path)
    lines = [f"{name}: {str(value).lower()}" for name, value in FACT_DEFAULTS.items()]
    path = tmp_path / "missing.yaml"
    path.write_text("\n".join(lines[1:] + ["extra_setting: 1"]))
    expected = r"unknown settings \['extra_setting'\], missing settings \['kf_score_weight'\]"
    with pytest.raises(ConfigError, match=expected):
        SamuraiSettings.load(path)
    path = tmp_path / "range.yaml"
    text = "\n".join(lines)
    path.write_text(text.replace("stable_frames_threshold: 15", "stable_frames_threshold: -2"))
    with pytest.raises(ConfigError, match="stable_frames_threshold must be >= 1"):
        SamuraiSettings.load(path)
    path = tmp_path / "model.yaml"
    path.write_text(text + "\nper_model:\n  huge:\n    kf_score_weight: 0.1\n")
    with pytest.raises(ConfigError, match="unknown model size 'huge'"):
        SamuraiSettings.load(path)


def test_boxes_read_by_the_next_step(settings):
    """Until the filter is stable a step reads only the argmax-IoU candidate's box (the tracker
    measures no other); once stable, every candidate's (motion scores)."""
    state = ObjectMotionState()
    ious = np.float32([0.2, 0.9, 0.5])
    assert boxes_read(state, ious, settings).tolist() == [False, True, False]
    _track(state, settings, range(settings.stable_frames_threshold - 1))
    assert boxes_read(state, ious, settings).tolist() == [False, True, False]
    _track(state, settings, [settings.stable_frames_threshold - 1])
    assert boxes_read(state, ious, settings).tolist() == [True, True, True]
    # a step given only the read boxes chooses as with all of them
    masks, all_ious = _good_candidates(settings.stable_frames_threshold)
    partial, full = state.copy(), state.copy()
    boxes = [mask_box(m) for m in masks]
    read = boxes_read(partial, all_ious, settings)
    assert choose_box(
        partial, [b if r else None for b, r in zip(boxes, read)], all_ious, settings
    ) == (choose_box(full, boxes, all_ious, settings))
