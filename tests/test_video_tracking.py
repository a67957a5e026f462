"""Streaming video tracking (python_backend/video) against the official SAM2VideoPredictor.

The parity test runs the official predictor (the test checkpoint, `exported.model`) over a small
synthetic video written as JPEGs, and `VideoTracker` over the same decoded frames with the
exported graphs in ONNX Runtime: every frame's mask of every object must agree (IoU >= 0.99).
The memory-bound tests run the bank alone on synthetic arrays (no networks).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from sam2_triton.python_backend.video.memory_bank import (
    MemoryBank,
    MemorySettings,
    from_bfloat16_bits,
    to_bfloat16_bits,
)

NUM_FRAMES = 8
HEIGHT, WIDTH = 120, 160


def synthetic_frames(num_frames: int = NUM_FRAMES) -> list:
    """A disc moving right and a square moving down over a smooth textured background."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = []
    for t in range(num_frames):
        image = np.empty((HEIGHT, WIDTH, 3), np.float32)
        image[..., 0] = 60 + 30 * np.sin(xx / 9.0)
        image[..., 1] = 70 + 30 * np.cos(yy / 11.0)
        image[..., 2] = 90
        cx, cy = 40 + 6 * t, 40
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= 18**2
        image[disc] = (230, 60, 40)
        x0, y0 = 100, 20 + 6 * t
        square = (xx >= x0) & (xx < x0 + 34) & (yy >= y0) & (yy < y0 + 34)
        image[square] = (40, 200, 230)
        frames.append(image.clip(0, 255).astype(np.uint8))
    return frames


CLICK = ([[40.0, 40.0]], [1])  # obj 1: one positive click on the disc (frame 0)
BOX = [96.0, 16.0, 138.0, 58.0]  # obj 2: a box around the square (frame 0)

# The test checkpoint has random weights: its object-score logits are all within +-0.15, so
# most masks would be "object absent" (all empty) and compare trivially. Both sides are shifted
# by the same amount so that every object is present and the masks themselves are compared:
# the reference through the bias of the score head's last layer, the tracker by adding it to the
# decoder's object_score_logits output (the logit is used nowhere inside the decoder graph).
SCORE_SHIFT = 10.0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _score_head_bias(model):
    head = model.sam_mask_decoder.pred_obj_score_head
    return (head.layers[-1] if hasattr(head, "layers") else head).bias


def run_reference(model, frames_dir, num_frames, score_shift=0.0):
    """{frame: (obj_ids, mask logits [N, H, W], object score logits [N])} of propagate_in_video."""
    import torch

    bias = _score_head_bias(model)
    original = bias.detach().clone()
    with torch.inference_mode():
        bias += score_shift
        try:
            state = model.init_state(str(frames_dir))
            model.add_new_points_or_box(state, 0, obj_id=1, points=CLICK[0], labels=CLICK[1])
            model.add_new_points_or_box(state, 0, obj_id=2, box=BOX)
            masks = {t: (list(ids), logits[:, 0].float().cpu().numpy())
                     for t, ids, logits in model.propagate_in_video(state)}
        finally:
            bias.copy_(original)  # the session's model is shared with other tests
    out = {}
    for t, (ids, frame_logits) in masks.items():
        scores = []
        for obj_idx in range(len(ids)):
            outputs = state["output_dict_per_obj"][obj_idx]
            entry = outputs["cond_frame_outputs"].get(t) or outputs["non_cond_frame_outputs"][t]
            scores.append(float(entry["object_score_logits"].reshape(-1)[0]))
        out[t] = (ids, frame_logits, np.array(scores, np.float32))
    assert sorted(out) == list(range(num_frames))
    return out


class ShiftedScores:
    """VideoNetworks wrapper adding `shift` to the decoder's object score logits."""

    def __init__(self, networks, shift):
        self.networks, self.shift = networks, np.float32(shift)

    def __getattr__(self, name):
        return getattr(self.networks, name)

    def decode(self, inputs):
        out = dict(self.networks.decode(inputs))
        out["object_score_logits"] = out["object_score_logits"] + self.shift
        return out


def run_tracker(export_dir, frames, num_frames, score_shift=0.0):
    from sam2_triton.python_backend.video.networks import OnnxVideoNetworks
    from sam2_triton.python_backend.video.tracker import VideoTracker

    onnx = OnnxVideoNetworks(export_dir)
    tracker = VideoTracker(ShiftedScores(onnx, score_shift), onnx.metadata, num_frames=num_frames)
    tracker.add_prompt(0, 1, points=CLICK[0], labels=CLICK[1])
    tracker.add_prompt(0, 2, box=BOX)
    results = [tracker.track(t, frame) for t, frame in enumerate(frames)]
    return tracker, results


@pytest.mark.slow
def test_tracker_matches_sam2_video_predictor(exported, tmp_path):
    from PIL import Image

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for t, frame in enumerate(synthetic_frames()):
        Image.fromarray(frame).save(frames_dir / f"{t:05d}.jpg", quality=95)
    # the tracker gets the frames as the reference decodes them (PIL, RGB)
    decoded = [np.asarray(Image.open(frames_dir / f"{t:05d}.jpg").convert("RGB"))
               for t in range(NUM_FRAMES)]

    start = time.perf_counter()
    reference = run_reference(exported.model, frames_dir, NUM_FRAMES, SCORE_SHIFT)
    reference_s = time.perf_counter() - start
    start = time.perf_counter()
    tracker, results = run_tracker(exported.directory, decoded, NUM_FRAMES, SCORE_SHIFT)
    tracker_s = time.perf_counter() - start

    from sam2_triton.python_backend.masks import upscale_logits

    ious, score_errors, logit_errors = [], [], []
    for result in results:
        ref_ids, ref_logits, ref_scores = reference[result.frame_idx]
        ref_masks = ref_logits > 0
        logits = upscale_logits(result.low_res_logits, (HEIGHT, WIDTH))[:, 0].numpy()
        logit_errors.append(np.abs(logits - ref_logits).max() / np.abs(ref_logits).max())
        assert result.obj_ids == ref_ids == [1, 2]
        assert result.masks.shape == (2, HEIGHT, WIDTH) and result.masks.dtype == bool
        assert result.boxes.shape == (2, 4) and result.scores.shape == (2,)
        np.testing.assert_array_equal(result.present, ref_scores > 0)
        ious.append([iou(result.masks[i], ref_masks[i]) for i in range(2)])
        score_errors.append(np.abs(result.object_score_logits - ref_scores).max())
    ious = np.array(ious)
    print(f"\nreference {reference_s:.1f} s, tracker {tracker_s:.1f} s; per-frame IoU "
          f"(obj 1, obj 2):\n{np.array2string(ious, precision=4)}\n"
          f"mask pixels: {[tuple(int(m.sum()) for m in r.masks) for r in results]}\n"
          f"max |object score logit error| per frame: {np.array2string(np.array(score_errors), precision=5)}\n"
          f"max |mask logit error| / max |logit| per frame: {np.array2string(np.array(logit_errors), precision=6)}")
    assert all(r.masks[i].any() for r in results for i in range(2)), "masks must not be empty"
    assert ious.min() >= 0.99, ious
    assert max(score_errors) < 1e-2
    assert max(logit_errors) < 1e-3
    # the bank holds the conditioning frame and at most num_maskmem-1 / 15 recent frames
    for counts in tracker.counts.values():
        assert counts["conditioning_frames"] == 1
        assert counts["memories"] <= 6 and counts["pointers"] <= 15


# -- the memory bank alone ---------------------------------------------------------------------

SETTINGS = MemorySettings(num_maskmem=7, memory_temporal_stride=1, max_cond_frames_in_attn=-1,
                          max_obj_ptrs_in_encoder=16, only_obj_ptrs_in_the_past=True)


def fill(bank: MemoryBank, num_frames: int, cond_frames=(0,)) -> None:
    rng = np.random.default_rng(0)
    memory = rng.standard_normal((64, 64, 64)).astype(np.float32)
    for t in range(num_frames):
        pointer = np.full(256, t, np.float32)
        bank.add(t, memory, pointer, 1.0, is_conditioning=t in cond_frames)


@pytest.mark.parametrize("storage", ["bfloat16", "float32"])
def test_memory_bank_is_bounded(storage):
    short, long = MemoryBank(SETTINGS, storage), MemoryBank(SETTINGS, storage)
    fill(short, 20)
    fill(long, 200)
    assert short.counts == long.counts == {"conditioning_frames": 1, "memories": 6, "pointers": 15}
    assert short.nbytes == long.nbytes
    per_memory = 64 * 64 * 64 * (2 if storage == "bfloat16" else 4)
    assert long.nbytes == 7 * per_memory + 16 * 256 * 4


def test_memory_bank_selection_follows_sam2():
    bank = MemoryBank(SETTINGS)
    fill(bank, 30, cond_frames=(0, 12))
    selection = bank.select(30, num_frames=100)
    # conditioning frames first (t_pos 0), then t-6 .. t-1 (t_pos 1 .. 6)
    assert selection.memory_frames == (0, 12, 24, 25, 26, 27, 28, 29)
    assert selection.memory_temporal_positions.tolist() == [0, 0, 1, 2, 3, 4, 5, 6]
    # pointers: conditioning frames, then the previous 15 frames (12 is a conditioning frame)
    assert selection.pointer_frames == (0, 12) + tuple(range(29, 14, -1))
    expected = np.array([30, 18] + list(range(1, 16)), np.float32) / 15
    np.testing.assert_allclose(selection.object_pointer_positions, expected)
    np.testing.assert_array_equal(selection.object_pointers[:, 0],
                                  np.array([0, 12] + list(range(29, 14, -1)), np.float32))
    # a short known length scales pointer positions by min(num_frames, 16) - 1
    short = MemoryBank(SETTINGS)
    fill(short, 5)
    selection = short.select(5, num_frames=8)
    assert selection.pointer_frames == (0, 4, 3, 2, 1)
    np.testing.assert_allclose(selection.object_pointer_positions,
                               np.array([5, 1, 2, 3, 4], np.float32) / 7)


def test_memory_bank_max_cond_frames():
    settings = MemorySettings(max_cond_frames_in_attn=2)
    bank = MemoryBank(settings)
    fill(bank, 60, cond_frames=(0, 10, 20, 58))
    assert bank.counts["conditioning_frames"] == 2  # only the latest two can still be chosen
    selection = bank.select(60)
    assert sorted(selection.memory_frames[:2]) == [20, 58]
    # 58 is a selected conditioning frame: not used a second time as a recent frame
    assert selection.memory_frames[2:] == (54, 55, 56, 57, 59)


def test_bfloat16_rounding_matches_torch():
    import torch

    values = np.random.default_rng(1).standard_normal(10000).astype(np.float32) * 100
    expected = torch.from_numpy(values).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(from_bfloat16_bits(to_bfloat16_bits(values)), expected)


# -- the tracker's bookkeeping with stand-in networks (no ONNX, fast) ---------------------------


class FakeNetworks:
    """Right shapes, cheap numbers; records the batch sizes of every call."""

    def __init__(self):
        self.calls = []

    def encode(self, image):
        self.calls.append(("encode", image.shape[0]))
        return {"image_embed": np.zeros((1, 256, 64, 64), np.float32),
                "high_res_feats_0": np.zeros((1, 32, 256, 256), np.float32),
                "high_res_feats_1": np.zeros((1, 64, 128, 128), np.float32)}

    def decode(self, inputs):
        n = inputs["point_coords"].shape[0]
        self.calls.append(("decode", n, inputs["image_embed"].shape[0], inputs["point_coords"].shape[1]))
        masks = np.full((n, 4, 256, 256), -5.0, np.float32)
        masks[:, :, 64:128, 32:96] = 5.0
        return {"masks": masks, "iou_scores": np.tile(np.float32([0.5, 0.6, 0.9, 0.7]), (n, 1)),
                "object_pointers": np.ones((n, 4, 256), np.float32),
                "object_score_logits": np.ones((n, 1), np.float32)}

    def encode_memory(self, inputs):
        n = inputs["image_embed"].shape[0]
        self.calls.append(("encode_memory", n))
        return {"memory_features": np.ones((n, 64, 64, 64), np.float32)}

    def attend(self, inputs):
        shape = inputs["memory_features"].shape
        self.calls.append(("attend", shape[0], shape[1], inputs["object_pointers"].shape[1]))
        return {"conditioned_features": inputs["current_features"]}


def fake_tracker(num_frames=None):
    from sam2_triton.python_backend.video.tracker import VideoTracker

    metadata = {
        "settings": {
            "num_maskmem": 7, "memory_temporal_stride_for_eval": 1, "max_cond_frames_in_attn": -1,
            "max_obj_ptrs_in_encoder": 16, "use_obj_ptrs_in_encoder": True,
            "only_obj_ptrs_in_the_past_for_eval": True, "use_signed_tpos_enc_to_obj_ptrs": True,
            "directly_add_no_mem_embed": True, "binarize_mask_from_pts_for_mem_enc": True,
            "multimask_output_in_sam": True, "multimask_min_pt_num": 0, "multimask_max_pt_num": 1,
            "multimask_output_for_tracking": True, "use_multimask_token_for_obj_ptr": True,
            "pred_obj_scores": True, "soft_no_obj_ptr": False, "fixed_no_obj_ptr": True,
        },
        "decoder": {"dynamic_multimask_via_stability": True,
                    "dynamic_multimask_stability_delta": 0.05,
                    "dynamic_multimask_stability_thresh": 0.98, "num_mask_tokens": 4},
        "constants": {"no_mem_embed": [0.0] * 256, "no_obj_ptr": [0.0] * 256},
    }
    networks = FakeNetworks()
    return networks, VideoTracker(networks, metadata, num_frames=num_frames)


def test_tracker_state_is_bounded():
    frame = np.zeros((24, 32, 3), np.uint8)
    sizes = {}
    _, tracker = fake_tracker()
    tracker.add_prompt(0, 1, points=[[10, 10]], labels=[1])
    tracker.add_prompt(0, 2, box=[2, 2, 20, 20])
    for t in range(60):  # the bank alone is run for 200 frames above; windows are <= 15 frames
        result = tracker.track(t, frame)
        if t + 1 in (20, 60):
            sizes[t + 1] = (tracker.nbytes, tracker.counts)
    assert sizes[20] == sizes[60]
    assert result.masks.shape == (2, 24, 32) and result.masks.any(axis=(1, 2)).all()
    # bfloat16 memories: 7 per object (1 conditioning + 6 recent), pointers: 1 + 15
    assert sizes[60][0] == 2 * (7 * 64 * 64 * 64 * 2 + 16 * 256 * 4)


def test_tracker_objects_join_and_leave():
    frame = np.zeros((24, 32, 3), np.uint8)
    networks, tracker = fake_tracker()
    tracker.add_prompt(0, 7, points=[[10, 10]], labels=[1])
    assert tracker.track(0, frame).obj_ids == [7]
    tracker.track(1, frame)
    tracker.add_prompt(2, 3, box=[2, 2, 20, 20])
    networks.calls.clear()
    result = tracker.track(2, frame)
    assert result.obj_ids == [7, 3]
    # obj 7 tracked from memory (1 cond + 1 recent memory, 2 pointers); obj 3 decoded from its box
    assert ("attend", 1, 2, 2) in networks.calls
    assert ("decode", 1, 1, 1) in networks.calls and ("decode", 1, 1, 2) in networks.calls
    assert ("encode_memory", 2) in networks.calls  # one memory-encoder batch for all objects
    networks.calls.clear()
    tracker.track(3, frame)
    # different memory counts: one attention batch per (memories, pointers) signature
    assert sorted(c for c in networks.calls if c[0] == "attend") == [("attend", 1, 1, 1),
                                                                     ("attend", 1, 3, 3)]
    tracker.remove_object(7)
    assert tracker.track(4, frame).obj_ids == [3]
    with pytest.raises(ValueError):
        tracker.add_prompt(4, 3, points=[[1, 1]], labels=[1])  # already tracked
    tracker.remove_object(3)
    assert tracker.track(5, frame).obj_ids == []


def test_tracker_batches_objects_with_equal_memory():
    frame = np.zeros((24, 32, 3), np.uint8)
    networks, tracker = fake_tracker()
    for obj_id in (1, 2, 3):
        tracker.add_prompt(0, obj_id, points=[[10, 10]], labels=[1])
    tracker.track(0, frame)
    networks.calls.clear()
    tracker.track(1, frame)
    assert networks.calls == [("encode", 1), ("attend", 3, 1, 1), ("decode", 3, 3, 1),
                              ("encode_memory", 3)]
