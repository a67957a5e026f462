"""SAMURAI mode of the streaming video tracker, several objects at once (stand-in networks).

The scripted decoder (test_video_tracking.FakeNetworks) answers per object and frame: each
object has a true box moving its own way; from DISTRACTOR_FRAME on, a distractor far from the
track gets a higher predicted IoU than the true mask (plain SAM 2 takes it, SAMURAI's motion
score does not); object 1 has one poor frame (IoU under the memory threshold but above the
stability threshold) that SAMURAI leaves out of object 1's memory, not object 2's; object 2 has
one frame with a slightly negative object score (present for SAMURAI, absent for SAM 2).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_samurai_rules import samurai_box
from test_video_tracking import fake_frame, fake_tracker, rect_logits

from sam2_triton.python_backend.boxes import mask_bounds_torch, upsampled_mask_bounds_torch
from sam2_triton.python_backend.samurai import SamuraiSettings, choose_box, mask_box
from sam2_triton.python_backend.video.heads import NO_OBJ_SCORE

BOX_SIZE = 40  # low-res pixels
START = {1: (20, 40), 2: (150, 30)}  # (x0, y0) of each object's true box at frame 0, low-res
SPEED = {1: (2, 0), 2: (0, 3)}  # low-res pixels per frame (dx, dy)
LOW_RES_TO_MODEL = 4  # 256 -> 1024
DISTRACTOR_FRAME = 6
TRUE_IOU, DISTRACTOR_IOU = 0.8, 0.85
POOR_FRAME, POOR_IOU = 8, 0.45  # object 1: 0.3 < 0.45 <= memory_bank_iou_threshold 0.5
FAINT_FRAME, FAINT_SCORE = 11, -0.5  # object 2: min_obj_score_logits -1 < -0.5 <= 0
NUM_FRAMES = 12
STABLE_FRAMES = 3


def true_box(key: int, frame: int):
    (x0, y0), (dx, dy) = START[key], SPEED[key]
    return x0 + dx * frame, y0 + dy * frame


def script(key: int, frame: int):
    x, y = true_box(key, frame)
    true = rect_logits(y, y + BOX_SIZE, x, x + BOX_SIZE)
    masks = np.stack([true, true, rect_logits(200, 240, 200, 240), rect_logits(0, 8, 0, 8)])
    ious = np.float32(
        [TRUE_IOU, TRUE_IOU, DISTRACTOR_IOU if frame >= DISTRACTOR_FRAME else 0.4, 0.2]
    )
    if key == 1 and frame == POOR_FRAME:
        ious = np.float32([POOR_IOU, POOR_IOU, 0.4, 0.1])
    score = FAINT_SCORE if (key == 2 and frame == FAINT_FRAME) else 1.0
    return masks, ious, score


def run(samurai):
    """Objects 1 and 2 clicked (object key = click x) on frame 0, tracked for NUM_FRAMES."""
    networks, tracker = fake_tracker(script=script, samurai=samurai)
    tracker.add_prompt(0, 1, points=[[1, 10]], labels=[1])
    tracker.add_prompt(0, 2, points=[[2, 10]], labels=[1])
    results = [tracker.track(t, fake_frame(t)) for t in range(NUM_FRAMES)]
    return networks, tracker, results


@pytest.fixture(scope="module")
def settings():
    return SamuraiSettings.load().with_overrides({"stable_frames_threshold": STABLE_FRAMES})


def test_samurai_follows_each_object_with_its_own_filter(settings):
    networks, tracker, results = run(settings)
    _, _, sam2_results = run(None)
    for t in range(DISTRACTOR_FRAME, NUM_FRAMES):
        poor = t == POOR_FRAME
        # plain SAM 2 takes the distractor (higher predicted IoU) for both objects ...
        expected = [POOR_IOU if poor else DISTRACTOR_IOU, DISTRACTOR_IOU]
        assert sam2_results[t].scores.tolist() == pytest.approx(expected), t
        # ... SAMURAI keeps the mask on each object's predicted box
        expected = [POOR_IOU if poor else TRUE_IOU, TRUE_IOU]
        assert results[t].scores.tolist() == pytest.approx(expected), t
        for i, key in enumerate((1, 2)):
            x, y = true_box(key, t)
            np.testing.assert_array_equal(
                results[t].host_low_res_logits[i, 0] > 0,
                rect_logits(y, y + BOX_SIZE, x, x + BOX_SIZE) > 0,
            )
    # each object's filter follows its own box (1024x1024 model pixels per frame)
    first, second = tracker.objects[1].motion, tracker.objects[2].motion
    assert first.mean[4] > 0.6 * SPEED[1][0] * LOW_RES_TO_MODEL and abs(first.mean[5]) < 1.0
    assert second.mean[5] > 0.6 * SPEED[2][1] * LOW_RES_TO_MODEL and abs(second.mean[4]) < 1.0
    x, y = true_box(1, NUM_FRAMES - 1)
    assert first.predicted_box() == pytest.approx(
        [LOW_RES_TO_MODEL * v for v in (x, y, x + BOX_SIZE, y + BOX_SIZE)], abs=6.0
    )
    # SAMURAI's counter stops at the threshold (sam2_base.py:495-498 never counts up)
    assert first.stable_count == second.stable_count == STABLE_FRAMES
    # objects are still batched: one attention and one decoder batch per frame
    assert ("attend", 2, 7, 11) in networks.calls and ("decode", 2, 2, 1) in networks.calls


def test_samurai_memory_skips_a_poor_frame_of_one_object_only(settings):
    networks, tracker, _ = run(settings)
    attended = {(frame, key): (frames, t_pos) for frame, key, frames, t_pos in networks.attended}
    t_pos = (0, 1, 2, 3, 4, 5, 6)  # conditioning frame 0, then the newest memory in slot 6
    assert attended[(POOR_FRAME + 2, 1)] == ((0, 3, 4, 5, 6, 7, 9), t_pos)
    assert attended[(POOR_FRAME + 2, 2)] == ((0, 4, 5, 6, 7, 8, 9), t_pos)
    # the previous frame is always used, poor or not
    assert attended[(POOR_FRAME + 1, 1)] == ((0, 3, 4, 5, 6, 7, 8), t_pos)
    # the banks keep what a correction of frame 11 or a later frame can select
    for key, kept in ((1, {4, 5, 6, 7, 9, 10, 11}), (2, {5, 6, 7, 8, 9, 10, 11})):
        assert set(tracker.objects[key].bank.non_cond_memories) == kept
        assert set(tracker.objects[key].motion.records) == kept


def test_samurai_presence_threshold(settings):
    networks, _, results = run(settings)
    _, _, sam2_results = run(None)
    faint = results[FAINT_FRAME]
    assert faint.object_score_logits[1] == pytest.approx(FAINT_SCORE)
    assert faint.present.tolist() == [True, True] and faint.masks[1].any()
    assert sam2_results[FAINT_FRAME].present.tolist() == [True, False]
    assert np.all(sam2_results[FAINT_FRAME].host_low_res_logits[1] == NO_OBJ_SCORE)
    # the memory encoder gets the logit as it is (it applies SAM 2's > 0 itself)
    assert networks.memory_inputs[FAINT_FRAME][1][1, 0] == pytest.approx(FAINT_SCORE)


def test_samurai_click_correction_steps_the_filter(settings):
    """SAMURAI's filter runs on every multimask decoder call (sam2_base.py:420) and no prompt
    resets it (sam2_base.py:202-205): a single-click correction of the last frame is one more
    step of the object's filter, from where it stood, and the next frame stays stable."""
    networks, tracker, _ = run(settings)
    last = NUM_FRAMES - 1
    expected = tracker.objects[1].motion.copy()
    masks, ious, _ = script(1, last)
    choose_box(expected, [samurai_box(m) for m in masks[1:]], ious[1:], settings)
    tracker.add_prompt(last, 1, points=[[1, 12]], labels=[1])
    tracker.correct(last)
    first, second = tracker.objects[1].motion, tracker.objects[2].motion
    np.testing.assert_array_equal(first.mean, expected.mean)
    np.testing.assert_array_equal(first.covariance, expected.covariance)
    assert first.stable_count == STABLE_FRAMES and last not in first.records
    assert second.stable_count == STABLE_FRAMES and last in second.records
    networks.clear()
    tracker.track(last + 1, fake_frame(last + 1))
    assert tracker.objects[1].motion.records[last + 1].motion_score is not None  # still stable
    frames = {key: frames for _, key, frames, _ in networks.attended}
    assert frames[1][:2] == (0, last)  # the corrected frame is a conditioning frame now


def test_samurai_correction_restarts_the_filter_when_asked(settings):
    """restart_filter_on_prompt with filter_on_click_prompts off: a correction restarts the
    object's filter (not SAMURAI's rule; docs/samurai-rules.md, R1 and R4)."""
    ours = settings.with_overrides(
        {"restart_filter_on_prompt": True, "filter_on_click_prompts": False}
    )
    networks, tracker, _ = run(ours)
    last = NUM_FRAMES - 1
    tracker.add_prompt(last, 1, points=[[1, 12]], labels=[1])
    tracker.correct(last)
    first, second = tracker.objects[1].motion, tracker.objects[2].motion
    assert first.stable_count == 0 and first.mean is None and last not in first.records
    assert second.stable_count == STABLE_FRAMES and last in second.records
    networks.clear()
    tracker.track(last + 1, fake_frame(last + 1))
    restarted = tracker.objects[1].motion
    assert restarted.stable_count == 1 and restarted.records[last + 1].motion_score is None
    frames = {key: frames for _, key, frames, _ in networks.attended}
    assert frames[1][:2] == (0, last)


def _random_logits(rng, kind: int) -> np.ndarray:
    """Noise, a small blob, a single pixel or a smooth field with many values near 0."""
    if kind == 0:
        return rng.normal(-2.0, 1.5, (256, 256)).astype(np.float32)
    logits = np.full((256, 256), -4.0, np.float32)
    y, x = rng.integers(0, 250, 2)
    if kind == 1:
        logits[y : y + rng.integers(1, 30), x : x + rng.integers(1, 30)] = rng.uniform(0.01, 3)
    elif kind == 2:
        logits[y, x] = rng.uniform(1e-3, 3)
    else:
        field = np.cumsum(np.cumsum(rng.normal(0, 0.05, (256, 256)), axis=0), axis=1)
        logits = (field - np.quantile(field, rng.uniform(0.2, 0.9))).astype(np.float32)
    return logits


def test_upsampled_mask_bounds_equal_the_bounds_of_the_upsampled_mask():
    """SAMURAI measures its boxes on the candidates upsampled to 1024 x 1024 (sam2_base.py:408-
    432): the banded device computation gives what the whole upsampled map gives."""
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(np.stack([_random_logits(rng, t % 4) for t in range(120)]))
    logits[7] = -1.0  # empty
    full = F.interpolate(logits[:, None], size=(1024, 1024), mode="bilinear", align_corners=False)
    expected, expected_present = mask_bounds_torch(full[:, 0] > 0)
    low_res, low_res_present = mask_bounds_torch(logits > 0)
    bounds, present = upsampled_mask_bounds_torch(
        logits, low_res.numpy(), low_res_present.numpy(), LOW_RES_TO_MODEL
    )
    np.testing.assert_array_equal(present.numpy(), expected_present.numpy())
    np.testing.assert_array_equal(bounds.numpy(), expected.numpy())
    assert not present[7] and 0 < int(present.sum()) < 120
    for i in (0, 1, 3):  # and SAMURAI's box of one upsampled mask is those bounds
        np.testing.assert_array_equal(mask_box(full[i, 0].numpy()), expected[i].numpy())
