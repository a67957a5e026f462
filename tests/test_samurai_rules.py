"""SAMURAI's rules, one scenario each (docs/samurai-rules.md, S1-S13).

SAMURAI's code (github.com/yangchris11/samurai at commit 76ba195) is not part of this project,
so each rule is restated here as a small oracle, in this file's own words, citing the file and
lines it restates: `sam2/sam2/modeling/sam2_base.py` ("base"), `sam2/sam2/utils/kalman_filter.py`
("kf"), `sam2/sam2/configs/samurai/*.yaml` ("cfg"). The tracker runs with scripted stand-in
networks (test_video_tracking.FakeNetworks); the expected values come from the oracle fed the
same scripted decoder outputs, never from the tracker's own output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_video_tracking import fake_frame, fake_tracker, rect_logits

from sam2_triton.python_backend.samurai import (
    FrameRecord,
    ObjectMotionState,
    SamuraiSettings,
    choose_box,
    choose_mask,
    select_memory_frames,
)
from sam2_triton.python_backend.video.heads import NO_OBJ_SCORE

IMAGE_SIZE = 1024  # SAMURAI measures boxes on masks upsampled to the model's image_size

# -- the oracle: SAMURAI's rules restated --------------------------------------------------------


def samurai_box(low_res: np.ndarray) -> list[int] | None:
    """base:408-432: the candidate's low-res logits upsampled bilinearly to 1024 x 1024
    (align_corners=False), pixels > 0.0, inclusive index bounds [x_min, y_min, x_max, y_max]
    as Python ints; None where empty (SAMURAI's placeholder [0, 0, 0, 0])."""
    logits = torch.as_tensor(np.asarray(low_res, np.float32))[None, None]
    upsampled = F.interpolate(
        logits, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
    )
    rows, cols = np.nonzero(upsampled[0, 0].numpy() > 0.0)
    if rows.size == 0:
        return None
    return [int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())]


def xyah(box: list[int]) -> np.ndarray:
    """kf:308-316: centre, w / h and h of an xyxy box; h == 0 counts as 1."""
    x1, y1, x2, y2 = box
    h = y2 - y1
    if h == 0:
        h = 1
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / h, h], dtype=np.float64)


def xyxy(mean: np.ndarray) -> list[float]:
    """kf:318-324."""
    xc, yc, a, h = mean[:4]
    return [xc - a * h / 2, yc - h / 2, xc + a * h / 2, yc + h / 2]


def motion_iou(predicted: list[float], box: list[int]) -> float:
    """kf:282-306: 0 for the placeholder box; areas not clamped; 0 where the union is 0."""
    if box == [0, 0, 0, 0]:
        return 0.0
    x1, y1, x2, y2 = predicted
    u1, v1, u2, v2 = box
    intersection = max(0, min(x2, u2) - max(x1, u1)) * max(0, min(y2, v2) - max(y1, v1))
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - intersection
    return float(intersection / union) if union != 0 else 0.0


MOTION = np.eye(8) + np.eye(8, k=4)  # kf:39-45, dt = 1
POS, VEL = 1.0 / 20, 1.0 / 160  # kf:50-51: noise weights (times the box height h)


def kf_initiate(z: np.ndarray):
    """kf:75-84."""
    h = z[3]
    std = [
        2 * POS * h,
        2 * POS * h,
        1e-2,
        2 * POS * h,
        10 * VEL * h,
        10 * VEL * h,
        1e-5,
        10 * VEL * h,
    ]
    return np.r_[z, np.zeros(4)], np.diag(np.square(std))


def kf_predict(mean: np.ndarray, cov: np.ndarray):
    """kf:106-116: process noise from the h of the mean before the step."""
    h = mean[3]
    std = [POS * h, POS * h, 1e-2, POS * h, VEL * h, VEL * h, 1e-5, VEL * h]
    return MOTION @ mean, MOTION @ cov @ MOTION.T + np.diag(np.square(std))


def kf_update(mean: np.ndarray, cov: np.ndarray, z: np.ndarray):
    """kf:142-147 and 215-224: measurement noise from the predicted h, Cholesky solve."""
    h = mean[3]
    projected = cov[:4, :4] + np.diag(np.square([POS * h, POS * h, 1e-1, POS * h]))
    lower = np.linalg.cholesky(projected)
    gain = np.linalg.solve(lower.T, np.linalg.solve(lower, cov[:4, :].copy())).T
    return mean + gain @ (z - mean[:4]), cov - gain @ projected @ gain.T


@dataclass
class Record:
    """What base:1012-1013 and vp:970-981 keep of a tracked frame."""

    best_iou_score: float
    object_score_logit: float
    kf_score: float | None


class Oracle:
    """SAMURAI's Kalman branch of `_forward_sam_heads` (base:419-498) for one object: one
    `step` per multimask decoder call, the state on the model (base:202-205)."""

    def __init__(self, settings: SamuraiSettings) -> None:
        self.settings = settings
        self.mean: np.ndarray | None = None
        self.cov: np.ndarray | None = None
        self.stable_frames = 0

    def step(self, candidates: np.ndarray, ious: np.ndarray, score_logit: float):
        """Candidates [3, 256, 256] low-res logits, predicted IoUs float32 [3], the object-score
        logit -> (chosen index, kf score or None)."""
        s = self.settings
        if not score_logit > s.min_obj_score_logits:  # base:397-406: absent -> NO_OBJ_SCORE
            candidates = np.full_like(candidates, NO_OBJ_SCORE)
        boxes = [samurai_box(c) or [0, 0, 0, 0] for c in candidates]
        ious_t = torch.as_tensor(np.asarray(ious, np.float32))[None]  # [1, 3] float32
        if (self.mean is None and self.cov is None) or self.stable_frames == 0:  # base:421-437
            best = int(torch.argmax(ious_t, dim=-1)[0])
            self.mean, self.cov = kf_initiate(xyah(boxes[best]))
            self.stable_frames += 1
            return best, None
        assert self.mean is not None and self.cov is not None
        self.mean, self.cov = kf_predict(self.mean, self.cov)
        if self.stable_frames < s.stable_frames_threshold:  # base:438-458
            best = int(torch.argmax(ious_t, dim=-1)[0])
            if bool(ious_t[0][best] > s.stable_ious_threshold):
                self.mean, self.cov = kf_update(self.mean, self.cov, xyah(boxes[best]))
                self.stable_frames += 1
            else:
                self.stable_frames = 0
            return best, None
        predicted = xyxy(self.mean)  # base:459-498
        kf_ious = torch.tensor([np.float64(motion_iou(predicted, b)) for b in boxes])
        weighted = s.kf_score_weight * kf_ious + (1 - s.kf_score_weight) * ious_t
        best = int(torch.argmax(weighted, dim=-1)[0])
        if bool(ious_t[0][best] < s.stable_ious_threshold):
            self.stable_frames = 0
        else:
            self.mean, self.cov = kf_update(self.mean, self.cov, xyah(boxes[best]))
        return best, float(kf_ious[best])


def samurai_memory(records: dict[int, Record], frame_idx: int, s: SamuraiSettings, num_ptrs=16):
    """base:663-687: t_pos (1..6) -> frame of the memories frame `frame_idx` attends to."""
    valid: list[int] = []
    if frame_idx > 1:
        for i in range(frame_idx - 1, 1, -1):
            r = records[i]
            if (
                r.best_iou_score > s.memory_bank_iou_threshold
                and r.object_score_logit > s.memory_bank_obj_score_threshold
                and (r.kf_score is None or r.kf_score > s.memory_bank_kf_score_threshold)
            ):
                valid.insert(0, i)
            if len(valid) >= num_ptrs - 1:
                break
    if frame_idx - 1 not in valid:
        valid.append(frame_idx - 1)
    slots = {}
    for t_pos in range(1, 7):
        idx = t_pos - 7
        if idx >= -len(valid) and valid[idx] in records:  # a conditioning frame has no slot
            slots[t_pos] = valid[idx]
    return slots


# -- scripted video: one object moving right, a distractor, absent frames -----------------------

X0, Y0, W, H = 20, 40, 10, 15  # low-res pixels: 40 x 60 at 1024, +4 px per frame
TRUE_IOU, WIDE_IOU, DISTRACTOR_IOU = 0.8, 0.5, 0.9


def moving_script(distractor_from: int = 15, absent: range = range(0), back_iou: float = 0.9):
    """Token 1: the object's mask (IoU 0.8, `back_iou` after an absence), token 2: a wider one,
    token 3: a distractor far away (IoU 0.9 from `distractor_from`); the object-score logit is
    -5 on `absent` frames (candidate IoUs unchanged: SAMURAI does not zero them)."""

    def script(key: int, frame: int):
        x = X0 + frame
        true = rect_logits(Y0, Y0 + H, x, x + W)
        wide = rect_logits(Y0 - 4, Y0 + H + 4, x - 4, x + W + 4)
        distractor = rect_logits(200, 200 + H, 200, 200 + W)
        iou = back_iou if absent and frame > absent[-1] else TRUE_IOU
        third = DISTRACTOR_IOU if frame >= distractor_from else 0.4
        ious = np.float32([iou, iou, WIDE_IOU, third])
        score = -5.0 if frame in absent else 5.0
        return np.stack([true, true, wide, distractor]), ious, score

    return script


def settings_with(**overrides) -> SamuraiSettings:
    return SamuraiSettings.load().with_overrides(overrides)


def run_tracker(script, settings, frames, prompt="click", obj_id=1):
    """Prompt object `obj_id` on frame 0 ("click": one click, "box", "two_clicks"), track
    `frames`; returns (networks, tracker, results by frame)."""
    networks, tracker = fake_tracker(script=script, samurai=settings)
    if prompt == "click":
        tracker.add_prompt(0, obj_id, points=[[obj_id, 10]], labels=[1])
    elif prompt == "box":
        tracker.add_prompt(0, obj_id, box=[obj_id, 2, 20, 20])
    else:
        tracker.add_prompt(0, obj_id, points=[[obj_id, 10], [obj_id, 12]], labels=[1, 1])
    results = {t: tracker.track(t, fake_frame(t)) for t in frames}
    return networks, tracker, results


def run_oracle(script, settings, frames, first_call: bool):
    """The oracle on the same decoder outputs: a step on frame 0 only when the prompt was one
    click (`first_call`, base:1033-1041), then one per tracked frame; records of tracked
    frames."""
    oracle = Oracle(settings)
    chosen: dict[int, int] = {}
    records: dict[int, Record] = {}
    for t in frames:
        masks, ious, score = script(1, t)
        if t == 0 and not first_call:
            continue
        best, kf_score = oracle.step(masks[1:], ious[1:], score)
        chosen[t] = best
        if t > 0:
            records[t] = Record(float(ious[1 + best]), score, kf_score)
    return oracle, chosen, records


def assert_same_state(motion: ObjectMotionState, oracle: Oracle) -> None:
    np.testing.assert_allclose(motion.mean, oracle.mean, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(motion.covariance, oracle.cov, rtol=1e-12, atol=1e-9)
    assert motion.stable_count == oracle.stable_frames


def assert_same_choices(results, script, chosen: dict[int, int]) -> None:
    """Each frame's mask is the oracle's token (1 + index) where the object is present."""
    for t, best in chosen.items():
        masks, ious, score = script(1, t)
        assert results[t].scores[0] == pytest.approx(float(ious[1 + best])), t
        if score > 0:
            np.testing.assert_array_equal(
                results[t].host_low_res_logits[0, 0] > 0, masks[1 + best] > 0, err_msg=str(t)
            )


# -- S1: a single-click prompt steps the filter (R1, R4) ---------------------------------------


def test_s1_single_click_prompt_starts_the_filter_on_its_frame():
    """base:420 (`multimask_output and samurai_mode`) with base:1033-1041 and cfg:114-117
    (multimask for 0..1 points): the prompt's single click is a filter step, so the filter is
    stable after frame 14 and frame 15 already chooses by motion."""
    settings, frames, script = settings_with(), range(21), moving_script()
    _, tracker, results = run_tracker(script, settings, frames, "click")
    oracle, chosen, _ = run_oracle(script, settings, frames, first_call=True)
    assert chosen[15] == 0  # the rule's consequence: token 1, not the distractor
    assert_same_choices(results, script, chosen)
    assert_same_state(tracker.objects[1].motion, oracle)
    # ours (filter_on_click_prompts off): the filter starts on frame 1, frame 15 is fooled
    _, _, ours = run_tracker(script, settings_with(filter_on_click_prompts=False), frames)
    assert ours[15].scores[0] == pytest.approx(DISTRACTOR_IOU)


# -- S2: a box or two clicks leave the filter alone (R1, R4) -----------------------------------


@pytest.mark.parametrize("prompt", ["box", "two_clicks"])
def test_s2_box_and_two_click_prompts_do_not_step_the_filter(prompt):
    """base:1033-1041: 2 points (a box's corners, two clicks) give a single-mask call, which
    never reaches the Kalman branch (base:420): the filter starts on frame 1."""
    settings, frames, script = settings_with(), range(21), moving_script()
    _, tracker, results = run_tracker(script, settings, range(1), prompt)
    motion = tracker.objects[1].motion
    assert motion.mean is None and motion.stable_count == 0
    for t in range(1, 21):
        results[t] = tracker.track(t, fake_frame(t))
    oracle, chosen, records = run_oracle(script, settings, frames, first_call=False)
    assert chosen[15] == 2  # not stable yet: the argmax IoU, the distractor
    assert records[15].kf_score is None and records[16].kf_score is not None
    assert_same_choices(results, script, chosen)
    assert_same_state(tracker.objects[1].motion, oracle)


# -- S3: a click correction is one more step, no restart (R1, R4) ------------------------------


def test_s3_click_correction_steps_the_filter_and_two_clicks_leave_it():
    """base:420 and base:202-205: a single-click correction is one more multimask call, one
    more predict + update of the same state (no prompt resets it); a two-click correction is
    single-mask and leaves the state untouched. (SAMURAI's own predictor raises KeyError for a
    correction of a frame >= 3, docs/samurai-rules.md; the rule stated here is that of R1/R4.)"""
    settings, frames, script = settings_with(), range(21), moving_script()
    oracle, chosen, _ = run_oracle(script, settings, frames, first_call=False)
    masks, ious, score = script(1, 20)
    oracle.step(masks[1:], ious[1:], score)  # the correction's call
    for clicks, stepped in (([[1, 12]], True), ([[1, 12], [1, 14]], False)):
        networks, tracker, _ = run_tracker(script, settings, frames, "box")
        before = tracker.objects[1].motion.copy()
        assert before.stable_count == settings.stable_frames_threshold
        tracker.add_prompt(20, 1, points=clicks, labels=[1] * len(clicks))
        tracker.correct(20)
        after = tracker.objects[1].motion
        if stepped:
            assert_same_state(after, oracle)
        else:
            np.testing.assert_array_equal(after.mean, before.mean)
            np.testing.assert_array_equal(after.covariance, before.covariance)
            assert after.stable_count == before.stable_count
        assert 20 not in after.records  # a conditioning frame now
        tracker.track(21, fake_frame(21))
        assert tracker.objects[1].motion.records[21].motion_score is not None  # still stable


# -- S4: the object disappears for some frames (R12, M5, M2) -----------------------------------


def test_s4_absent_object_is_measured_as_the_zero_box():
    """base:397-406 (absent: every candidate NO_OBJ_SCORE), base:426-432 (empty mask: box
    [0, 0, 0, 0]) and kf:314-315 (h 0 -> 1): absent frames pull the filter to the image corner;
    after the object is back its motion score is 0 for a while, so those frames fail the
    memory motion threshold (base:671-673)."""
    settings, frames = settings_with(), range(31)
    script = moving_script(distractor_from=99, absent=range(20, 25))
    networks, tracker, results = run_tracker(script, settings, frames, "box")
    oracle, chosen, records = run_oracle(script, settings, frames, first_call=False)
    assert_same_choices(results, script, chosen)
    assert_same_state(tracker.objects[1].motion, oracle)
    for t in range(25, 28):  # the rule's consequence, from the oracle
        assert records[t].kf_score == 0.0
    motion = tracker.objects[1].motion
    for t, record in motion.records.items():
        expected = records[t].kf_score
        assert record.motion_score == (None if expected is None else pytest.approx(expected)), t
    # the memories attended on every frame are SAMURAI's
    attended = {frame: (m, p) for frame, key, m, p in networks.attended if key == 1}
    for t in range(2, 31):
        slots = samurai_memory(records, t, settings)
        memory_frames, t_pos = attended[t]
        assert memory_frames[0] == 0 and t_pos[0] == 0, t  # the box prompt's conditioning frame
        assert dict(zip(t_pos[1:], memory_frames[1:])) == slots, t
    partial = Oracle(settings)  # the corner after two absent frames, counter still stable
    for t in range(1, 22):
        partial.step(*_candidates(script, t))
    assert partial.mean[0] < 10 and partial.mean[1] < 10
    assert partial.stable_frames == settings.stable_frames_threshold
    # ours (measure_empty_masks off): an absent frame is not measured and restarts the filter
    _, ours, _ = run_tracker(script, settings_with(measure_empty_masks=False), range(21), "box")
    assert ours.objects[1].motion.stable_count == 0


def _candidates(script, t):
    masks, ious, score = script(1, t)
    return masks[1:], ious[1:], score


# -- S5: the box convention (R7, R8) -----------------------------------------------------------


def test_s5_inclusive_boxes_and_h_zero_as_one():
    """base:426-432 (inclusive pixel indices of the foreground) and kf:308-316 (h == 0 -> 1)."""
    settings = settings_with()
    mask = np.zeros((64, 64), np.float32)
    mask[10:20, 20:30] = 1.0  # columns 20-29, rows 10-19
    state = ObjectMotionState()
    choose_mask(state, np.stack([mask] * 3), np.float32([0.9, 0.5, 0.4]), settings)
    expected, _ = kf_initiate(xyah([20, 10, 29, 19]))
    np.testing.assert_allclose(state.mean, expected, rtol=1e-15)
    assert state.mean[:4].tolist() == [24.5, 14.5, 1.0, 9.0]
    row = np.zeros((64, 64), np.float32)
    row[50, 20:30] = 1.0  # one row: h = 0, measured as 1
    state = ObjectMotionState()
    choose_mask(state, np.stack([row] * 3), np.float32([0.9, 0.5, 0.4]), settings)
    assert state.mean[1] == 50.0 and state.mean[3] == 1.0 and state.mean[2] == 9.0


# -- S6: float32 comparisons and score arithmetic (R15) ----------------------------------------


def test_s6_float32_thresholds_and_scores():
    """base:451 / base:495 compare float32 IoUs with the threshold cast to float32; base:474
    adds (1 - w) * IoU computed in float32 to the float64 motion term."""
    at_threshold = np.float32(0.3)  # 0.30000001192...: not > float32(0.3), and not < it
    box = [[10, 10, 50, 70]] * 3
    settings = settings_with()
    stabilising = ObjectMotionState()
    choose_box(stabilising, box, np.float32([0.9, 0.1, 0.1]), settings)
    choose_box(stabilising, box, np.float32([at_threshold, 0.1, 0.1]), settings)
    assert stabilising.stable_count == 0  # rejected
    stable_settings = settings_with(stable_frames_threshold=1)
    stable = ObjectMotionState()
    choose_box(stable, box, np.float32([0.9, 0.1, 0.1]), stable_settings)
    choose_box(stable, box, np.float32([at_threshold, 0.1, 0.1]), stable_settings)
    assert stable.stable_count == 1  # accepted
    # a near-tie that float32 rounding makes an exact tie: the first token wins
    low = np.float32(0.6000001)
    high = np.nextafter(low, np.float32(1))
    weight = np.float32(1 - 0.15)
    assert weight * low == weight * high and low < high  # the scenario's premise
    tie_settings = settings_with(stable_frames_threshold=1, kf_score_weight=0.15)
    tie = ObjectMotionState()
    choose_box(tie, box, np.float32([0.9, 0.1, 0.1]), tie_settings)
    index, _ = choose_box(tie, box, np.array([0.1, low, high], np.float32), tie_settings)
    predicted = xyxy(kf_predict(*kf_initiate(xyah(box[0])))[0])
    kf_ious = torch.tensor([np.float64(motion_iou(predicted, b)) for b in box])
    ious = torch.tensor([[0.1, low, high]], dtype=torch.float32)
    expected = int(torch.argmax(0.15 * kf_ious + (1 - 0.15) * ious, dim=-1)[0])
    assert index == expected == 1


# -- S7-S10: memory selection and pointers (M2, M5-M8, P1) -------------------------------------


def _records(frames, iou=0.9, logit=5.0, motion=None):
    return {t: FrameRecord(t, iou, logit, motion) for t in frames}


def _oracle_records(records):
    return {
        t: Record(r.predicted_iou, r.object_score_logit, r.motion_score) for t, r in records.items()
    }


def _as_slots(selected: list[int]) -> dict[int, int]:
    """select_memory_frames' newest-first list -> t_pos (6 = newest) -> frame."""
    return {6 - i: frame for i, frame in enumerate(selected)}


def test_s7_the_walk_never_reaches_frames_0_and_1():
    """base:665-666: the walk runs i = t-1 .. 2, so frame 1 is never a candidate (the frame-3
    divergence); t-1 is appended when it failed (base:678-679)."""
    settings = settings_with()
    records = _records(range(1, 5))
    for t, expected in ((3, [2]), (2, [1]), (5, [4, 3, 2])):
        assert select_memory_frames(records, t, settings, {0}) == expected
        assert _as_slots(expected) == samurai_memory(_oracle_records(records), t, settings)
    records[3] = FrameRecord(3, 0.5, 5.0, None)  # IoU exactly at the threshold
    records[2] = FrameRecord(2, 0.9, 5.0, 0.0)  # motion exactly at the threshold
    assert select_memory_frames(records, 5, settings, {0}) == [4]
    assert samurai_memory(_oracle_records(records), 5, settings) == {6: 4}
    ours = settings_with(memory_candidates_from_frame=0)
    assert select_memory_frames(records, 5, ours, {0}) == [4, 1]
    # the tracker attends to those frames
    networks, _, _ = run_tracker(moving_script(), settings, range(5), "box")
    attended = {frame: (m, p) for frame, key, m, p in networks.attended}
    assert attended[3] == ((0, 2), (0, 6))
    assert attended[4] == ((0, 2, 3), (0, 5, 6))


def test_s8_thresholds_are_strict_and_the_previous_frame_always_counts():
    """base:671-673 (strict >, Python floats, kf_score None passes) and base:678-679."""
    settings = settings_with()
    records = {
        2: FrameRecord(2, 0.9, 5.0, None),  # passes: no motion score
        3: FrameRecord(3, 0.5, 5.0, None),  # IoU at the threshold: fails
        4: FrameRecord(4, 0.9, 0.0, None),  # logit at the threshold: fails
        5: FrameRecord(5, 0.9, 5.0, 0.0),  # motion at the threshold: fails
        6: FrameRecord(6, 0.2, 5.0, None),  # t-1: kept although poor
    }
    assert select_memory_frames(records, 7, settings) == [6, 2]
    assert samurai_memory(_oracle_records(records), 7, settings) == {5: 2, 6: 6}


def test_s9_the_newest_six_fill_slots_1_to_6():
    """base:676-687: at most 15 valid frames, the newest num_maskmem - 1 = 6 used, by rank."""
    settings = settings_with()
    records = _records(range(1, 25))
    selected = select_memory_frames(records, 25, settings)
    assert selected == [24, 23, 22, 21, 20, 19]
    assert _as_slots(selected) == samurai_memory(_oracle_records(records), 25, settings)


def test_s10_pointers_ignore_the_memory_thresholds():
    """base:737-798 (SAM 2's pointer choice, untouched by SAMURAI): pointers of the last 15
    frames whether or not they passed the memory thresholds (base:671-673 choose only the
    memories)."""

    def poor(key, frame):
        masks, ious, score = moving_script(distractor_from=99)(key, frame)
        if 5 <= frame <= 19:
            ious = np.float32([0.45, 0.45, 0.4, 0.3])  # accepted by the filter, not the bank
        return masks, ious, score

    settings = settings_with()
    _, tracker, _ = run_tracker(poor, settings, range(20), "box")
    _, _, records = run_oracle(poor, settings, range(20), first_call=False)
    selection = tracker._selection(1, 20)
    assert set(selection.pointer_frames) == {0} | set(range(5, 20))
    slots = samurai_memory(records, 20, settings)
    assert slots == {3: 2, 4: 3, 5: 4, 6: 19}  # the rule's consequence for this script
    assert set(selection.memory_frames) == {0} | set(slots.values())


# -- S11, S12: settings and the counter (O1, R11) ----------------------------------------------


def test_s11_kf_score_weight_per_model():
    """cfg sam2.1_hiera_l.yaml:126 (0.15) and sam2.1_hiera_t.yaml:127, _s:125, _b+:122 (0.25)."""
    assert SamuraiSettings.load(model="large").kf_score_weight == 0.15
    for model in ("tiny", "small", "base_plus", "sam2_large"):
        assert SamuraiSettings.load(model=model).kf_score_weight == 0.25


def test_s12_the_counter_stops_at_the_threshold():
    """base:495-498: the stable phase updates without counting, so stable_frames stays 15."""
    settings = settings_with()
    state = ObjectMotionState()
    oracle = Oracle(settings)
    for t in range(30):
        mask = np.full((3, 256, 256), -5.0, np.float32)
        mask[:, 40:55, 20 + t : 30 + t] = 5.0
        ious = np.float32([0.8, 0.7, 0.6])
        choose_box(state, [samurai_box(m) for m in mask], ious, settings)
        oracle.step(mask, ious, 5.0)
    assert state.stable_count == oracle.stable_frames == 15
    assert_same_state(state, oracle)


# -- S13: several objects, later prompts and gaps (ours: SAMURAI raises there) -----------------


def test_s13_objects_keep_their_own_filters_through_later_prompts_and_gaps():
    """R2, R3, M4: SAMURAI keeps one filter on the model and raises for several objects
    (base:671), a conditioning frame >= 2 or a gap (base:667); here each object has its own
    filter and walk, which skips conditioning frames and frames never tracked."""
    settings = settings_with()
    script = moving_script()
    frames = [t for t in range(17) if t != 14]
    networks, tracker = fake_tracker(script=script, samurai=settings)
    _, alone = fake_tracker(script=script, samurai=settings)
    tracker.add_prompt(0, 1, box=[1, 2, 20, 20])
    alone.add_prompt(0, 1, box=[1, 2, 20, 20])
    for t in frames:
        if t == 10:
            tracker.add_prompt(10, 2, box=[2, 2, 20, 20])
        result, single = tracker.track(t, fake_frame(t)), alone.track(t, fake_frame(t))
        np.testing.assert_array_equal(
            result.host_low_res_logits[0], single.host_low_res_logits[0], err_msg=str(t)
        )
    first, first_alone = tracker.objects[1].motion, alone.objects[1].motion
    np.testing.assert_array_equal(first.mean, first_alone.mean)
    assert first.stable_count == first_alone.stable_count
    # object 2: conditioning frame 10 in slot 0; its walk skips frame 10 and the gap at 14
    second = {frame: (m, p) for frame, key, m, p in networks.attended if key == 2}
    assert second[16] == ((10, 11, 12, 13, 15), (0, 3, 4, 5, 6))
    assert tracker.objects[2].motion.stable_count == 5  # stepped on 11, 12, 13, 15, 16
