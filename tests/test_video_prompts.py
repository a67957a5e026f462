"""Corrections, repeated prompts and mask prompts of the streaming video tracker.

The fast tests run `VideoTracker` over the stand-in networks of test_video_tracking.py and check
what reaches the networks (which features, which mask input, which memories) and what the
tracker keeps. The slow test compares a mask prompt and corrections with the official
`SAM2VideoPredictor` on the test checkpoint (`add_all_frames_to_correct_as_cond` set, which is
the tracker's documented policy: a corrected frame becomes a conditioning frame).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from test_video_tracking import (
    FAKE_METADATA,
    FAKE_POINT_SCALE,
    FAKE_SIZE,
    HEIGHT,
    WIDTH,
    FakeNetworks,
    default_script,
    fake_frame,
    fake_tracker,
    iou,
    synthetic_frames,
    write_jpeg_frames,
)

from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.video.frames import prompt_mask_input
from sam2_triton.python_backend.video.tracker import VideoTracker

TOKEN_2_IOU = 0.9  # the fake decoder's best multimask token (default_script)


def _mask(y0, y1, x0, x1, size=FAKE_SIZE) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _two_tracked_objects():
    networks, tracker = fake_tracker()
    tracker.add_prompt(0, 1, points=[[1, 5]], labels=[1])
    tracker.add_prompt(0, 2, points=[[2, 5]], labels=[1])
    tracker.track(0, fake_frame(0))
    return networks, tracker, tracker.track(1, fake_frame(1))


def test_correction_reads_memory_and_the_previous_logits():
    networks, tracker, before = _two_tracked_objects()
    networks.clear()
    tracker.add_prompt(1, 1, points=[[1, 9]], labels=[0])
    result = tracker.correct(1)

    # memory attention again for object 1 only; no image-encoder call (features were kept)
    assert networks.calls == [("attend", 1, 1, 1), ("decode", 1, 1, 1), ("encode_memory", 1)]
    row = networks.decoded[0]
    assert row["key"] == 1 and row["frame"] == 1 and not row["no_mem"]
    assert row["labels"].tolist() == [0]
    np.testing.assert_allclose(row["points"], [[1 * FAKE_POINT_SCALE, 9 * 1024 / FAKE_SIZE[0]]])
    assert row["has_mask"] == 1.0  # the previous logits of that frame, clamped to +-32
    np.testing.assert_array_equal(
        row["mask_input"], np.clip(before.host_low_res_logits[0, 0], -32, 32)
    )
    assert networks.memory_inputs[0][0].tolist() == [1.0]  # binarized: from the user's clicks

    assert result.frame_idx == 1 and result.obj_ids == [1, 2]
    assert result.scores[0] == pytest.approx(TOKEN_2_IOU)  # one click: multimask, argmax IoU
    for field in ("host_low_res_logits", "masks", "scores", "object_score_logits", "boxes"):
        np.testing.assert_array_equal(getattr(result, field)[1], getattr(before, field)[1])
    counts = tracker.counts
    assert counts[1]["conditioning_frames"] == 2 and counts[2]["conditioning_frames"] == 1

    networks.clear()
    tracker.track(2, fake_frame(2))
    attended = {key: (frames, t_pos) for _, key, frames, t_pos in networks.attended}
    assert attended[1] == ((0, 1), (0, 0))  # frame 1 is now a conditioning frame of object 1
    assert attended[2] == ((0, 1), (0, 6))  # ... and still object 2's previous frame


def test_new_object_on_the_last_frame_is_decoded_without_memory():
    networks, tracker, _ = _two_tracked_objects()
    networks.clear()
    tracker.add_prompt(1, 3, box=[3, 2, 12, 9])
    result = tracker.correct(1)
    assert networks.calls == [("decode", 1, 1, 2), ("encode_memory", 1)]
    assert networks.decoded[0]["no_mem"] and networks.decoded[0]["has_mask"] == 0.0
    assert result.obj_ids == [1, 2, 3]
    assert tracker.counts[3] == {"conditioning_frames": 1, "memories": 0, "pointers": 0}


def test_corrections_are_checked():
    _, tracker, _ = _two_tracked_objects()
    with pytest.raises(InputError, match="no prompts are pending for frame 1"):
        tracker.correct(1)
    with pytest.raises(InputError, match="before the last tracked frame 1"):
        tracker.add_prompt(0, 1, points=[[1, 1]], labels=[1])
    tracker.add_prompt(1, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(InputError, match=r"pending for frame 1 \(a correction: call correct\(\)\)"):
        tracker.track(2, fake_frame(2))
    with pytest.raises(InputError, match="prompts are pending for frame 1"):
        tracker.add_prompt(2, 2, points=[[1, 1]], labels=[1])
    with pytest.raises(InputError, match=r"only the last tracked frame \(1\) can be corrected"):
        tracker.correct(2)
    tracker.discard_pending()
    assert tracker.track(2, fake_frame(2)).obj_ids == [1, 2]
    _, fresh = fake_tracker()
    with pytest.raises(InputError, match="nothing to correct"):
        fresh.correct(0)


def test_repeated_prompts_chain_like_the_reference():
    """Each add_prompt call is one add_new_points_or_box call: its logits are the next call's
    mask input; clear_old_points=False adds to the frame's earlier clicks."""
    networks, tracker = fake_tracker()
    tracker.add_prompt(0, 1, points=[[1, 4]], labels=[1])
    tracker.add_prompt(0, 1, points=[[1, 8]], labels=[0], clear_old_points=False)
    result = tracker.track(0, fake_frame(0))
    first, second = networks.decoded
    assert first["labels"].tolist() == [1] and first["has_mask"] == 0.0
    assert second["labels"].tolist() == [1, 0] and second["has_mask"] == 1.0
    first_choice = default_script(1, 0)[0][2]  # one click: multimask, argmax IoU (token 2)
    np.testing.assert_array_equal(second["mask_input"], first_choice)
    assert [c for c in networks.calls if c[0] == "encode_memory"] == [("encode_memory", 1)]

    networks.clear()
    tracker.add_prompt(0, 1, points=[[1, 12]], labels=[1], clear_old_points=False)
    tracker.correct(0)
    (row,) = networks.decoded
    assert row["labels"].tolist() == [1, 0, 1]  # the frame's clicks so far, then the new one
    np.testing.assert_array_equal(
        row["mask_input"], np.clip(result.host_low_res_logits[0, 0], -32, 32)
    )
    with pytest.raises(InputError, match="a box must come first"):
        tracker.add_prompt(0, 1, box=[1, 1, 5, 5], clear_old_points=False)


def test_mask_prompt_is_the_output():
    metadata = copy.deepcopy(FAKE_METADATA)
    metadata["constants"]["no_obj_ptr"] = [7.0] * 256
    networks = FakeNetworks()
    tracker = VideoTracker(networks, metadata)
    mask = _mask(4, 16, 6, 22)
    tracker.add_prompt(0, 1, mask=mask)
    tracker.add_prompt(0, 2, mask=np.zeros(FAKE_SIZE, bool))
    result = tracker.track(0, fake_frame(0))

    assert networks.calls == [("encode", 1), ("decode", 2, 1, 1), ("encode_memory", 2)]
    rows = networks.decoded
    assert [r["labels"].tolist() for r in rows] == [[-1], [-1]]  # no clicks: SAM 2's padding
    assert all(r["has_mask"] == 1.0 and not r["no_mem"] for r in rows)  # raw image features
    # mask_downsample (here a 4x4 mean) of the 1024x1024 binary mask is the dense prompt
    upsampled = prompt_mask_input(mask, torch.device("cpu"))[0, 0].numpy()
    expected = upsampled.reshape(256, 4, 256, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(rows[0]["mask_input"], expected, atol=1e-6)
    assert result.scores.tolist() == [1.0, 1.0]
    assert result.object_score_logits.tolist() == [10.0, -10.0]
    assert result.present.tolist() == [True, False]
    assert iou(result.masks[0], mask) > 0.95 and not result.masks[1].any()
    assert networks.memory_inputs[0][0].tolist() == [1.0, 1.0]  # binarized, as the reference
    # an empty mask means "absent": the pointer is no_obj_ptr
    assert bool((tracker.objects[2].bank.cond[0].pointer == 7.0).all())

    networks.calls.clear()
    tracker.track(1, fake_frame(1))
    moved = _mask(2, 10, 10, 30)
    tracker.add_prompt(1, 1, mask=moved)
    networks.calls.clear()
    corrected = tracker.correct(1)
    assert networks.calls == [("decode", 1, 1, 1), ("encode_memory", 1)]  # no memory attention
    assert iou(corrected.masks[0], moved) > 0.95


def test_mask_prompts_are_checked():
    _, tracker = fake_tracker()
    with pytest.raises(InputError, match="cannot be combined"):
        tracker.add_prompt(0, 1, mask=_mask(1, 5, 1, 5), points=[[1, 1]], labels=[1])
    tracker.add_prompt(0, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(InputError, match="object 1 has points or a box pending"):
        tracker.add_prompt(0, 1, mask=_mask(1, 5, 1, 5))
    tracker.add_prompt(0, 2, mask=_mask(1, 5, 1, 5))
    with pytest.raises(InputError, match="object 2 has a mask prompt pending"):
        tracker.add_prompt(0, 2, points=[[1, 1]], labels=[1])
    with pytest.raises(InputError, match=r"\[height, width\]"):
        tracker.add_prompt(0, 3, mask=np.ones((2, 3, 4), bool))
    tracker.add_prompt(0, 4, mask=np.ones((5, 5), bool))  # the size is not known yet ...
    with pytest.raises(InputError, match="mask prompt of object 4 is 5x5"):
        tracker.track(0, fake_frame(0))  # ... and is checked with the frame
    tracker.remove_object(4)
    tracker.track(0, fake_frame(0))
    with pytest.raises(
        InputError, match="mask prompt of object 3 is 5x5; the video's frames are 32x24"
    ):
        tracker.add_prompt(1, 3, mask=np.ones((5, 5), bool))


def test_objects_prompted_after_an_empty_frame():
    """A frame tracked with no object keeps the frame; a correction encodes it then."""
    networks, tracker = fake_tracker()
    assert tracker.track(0, fake_frame(0)).obj_ids == []
    assert networks.calls == [] and tracker.nbytes == fake_frame(0).nbytes
    tracker.add_prompt(0, 5, points=[[5, 5]], labels=[1])
    tracker.add_prompt(0, 2, points=[[2, 5]], labels=[1])
    result = tracker.correct(0)
    assert networks.calls == [("encode", 1), ("decode", 2, 1, 1), ("encode_memory", 2)]
    assert result.obj_ids == [2, 5] and [r["key"] for r in networks.decoded] == [2, 5]
    features = 4 * (256 * 64 * 64 + 32 * 256 * 256 + 64 * 128 * 128)
    assert tracker.nbytes > features  # the features are kept now, the frame no longer


# -- parity with SAM2VideoPredictor ------------------------------------------------------------

NUM_PARITY_FRAMES = 3
SQUARE_CLICK = ([[117.0, 37.0]], [1])  # obj 2, frame 0 (the square of synthetic_frames)
CORRECTIONS = {2: ([[104.0, 30.0]], [0]), 1: ([[52.0, 40.0]], [1])}  # frame 1


def _disc_mask() -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    return (xx - 40) ** 2 + (yy - 40) ** 2 <= 18**2  # the disc of synthetic_frames, frame 0


def _reference_corrections(model, frames_dir):
    """{step: mask logits [2, H, W]}: steps 0, 1 (tracked), "corrected" (frame 1), 2."""
    import torch

    logits_by_step = {}
    saved = model.add_all_frames_to_correct_as_cond
    model.add_all_frames_to_correct_as_cond = True  # the tracker's policy: corrections persist
    try:
        with torch.inference_mode():
            state = model.init_state(str(frames_dir))
            model.add_new_mask(state, 0, 1, _disc_mask())
            model.add_new_points_or_box(state, 0, 2, points=SQUARE_CLICK[0], labels=SQUARE_CLICK[1])
            for t, _, logits in model.propagate_in_video(state, max_frame_num_to_track=1):
                logits_by_step[t] = logits[:, 0].numpy()
            for obj_id in (2, 1):
                points, labels = CORRECTIONS[obj_id]
                _, _, logits = model.add_new_points_or_box(
                    state, 1, obj_id, points=points, labels=labels
                )
            logits_by_step["corrected"] = logits[:, 0].numpy()
            for t, _, logits in model.propagate_in_video(state, start_frame_idx=2):
                logits_by_step[t] = logits[:, 0].numpy()
    finally:
        model.add_all_frames_to_correct_as_cond = saved
    return logits_by_step


def _tracker_corrections(export_dir, frames):
    from sam2_triton.python_backend.masks import upscale_logits
    from sam2_triton.python_backend.video.networks import OnnxVideoNetworks

    onnx = OnnxVideoNetworks(export_dir)
    tracker = VideoTracker(onnx, onnx.metadata, num_frames=len(frames))
    tracker.add_prompt(0, 1, mask=_disc_mask())
    tracker.add_prompt(0, 2, points=SQUARE_CLICK[0], labels=SQUARE_CLICK[1])
    results = {0: tracker.track(0, frames[0]), 1: tracker.track(1, frames[1])}
    for obj_id in (2, 1):
        tracker.add_prompt(1, obj_id, points=CORRECTIONS[obj_id][0], labels=CORRECTIONS[obj_id][1])
    results["corrected"] = tracker.correct(1)
    results[2] = tracker.track(2, frames[2])
    return {
        step: (r, upscale_logits(r.host_low_res_logits, (HEIGHT, WIDTH))[:, 0].numpy())
        for step, r in results.items()
    }


@pytest.mark.slow
def test_corrections_and_mask_prompts_match_sam2_video_predictor(exported, tmp_path):
    """Object 1 from a mask prompt, object 2 from a click; both corrected on frame 1."""

    frames_dir = tmp_path / "frames"
    decoded = write_jpeg_frames(frames_dir, synthetic_frames(NUM_PARITY_FRAMES))
    start = time.perf_counter()
    reference = _reference_corrections(exported.model, frames_dir)
    reference_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = _tracker_corrections(exported.directory, decoded)
    tracker_s = time.perf_counter() - start

    report = {}
    for step, ref_logits in reference.items():
        result, logits = ours[step]
        ref_masks = ref_logits > 0
        assert result.obj_ids == [1, 2]
        ious = [iou(result.masks[i], ref_masks[i]) for i in range(2)]
        error = np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()
        report[step] = (ious, error, [int(m.sum()) for m in result.masks])
        assert min(ious) >= 0.99, (step, ious)
        assert error < 1e-3, (step, error)
        assert all(m.any() for m in result.masks)
    print(
        f"\nreference {reference_s:.1f} s, tracker {tracker_s:.1f} s; per step: (IoU obj 1, "
        f"obj 2), max |logit error| / max |logit|, mask pixels:\n{report}"
    )
    # the corrections changed both objects' masks (so the comparison is not trivial)
    for i in range(2):
        assert iou(ours[1][0].masks[i], ours["corrected"][0].masks[i]) < 0.98
