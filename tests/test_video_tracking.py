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
# The test checkpoint's object-score head is biased (conftest.OBJECT_SCORE_BIAS_SHIFT) so that
# objects are present and the masks themselves are compared, not "absent" everywhere.


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def run_reference(model, frames_dir, num_frames):
    """{frame: (obj_ids, mask logits [N, H, W], object score logits [N])} of propagate_in_video."""
    import torch

    with torch.inference_mode():
        state = model.init_state(str(frames_dir))
        model.add_new_points_or_box(state, 0, obj_id=1, points=CLICK[0], labels=CLICK[1])
        model.add_new_points_or_box(state, 0, obj_id=2, box=BOX)
        masks = {
            t: (list(ids), logits[:, 0].float().cpu().numpy())
            for t, ids, logits in model.propagate_in_video(state)
        }
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


def run_tracker(export_dir, frames, num_frames):
    from sam2_triton.python_backend.video.networks import OnnxVideoNetworks
    from sam2_triton.python_backend.video.tracker import VideoTracker

    onnx = OnnxVideoNetworks(export_dir)
    tracker = VideoTracker(onnx, onnx.metadata, num_frames=num_frames)
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
    decoded = [
        np.asarray(Image.open(frames_dir / f"{t:05d}.jpg").convert("RGB"))
        for t in range(NUM_FRAMES)
    ]

    start = time.perf_counter()
    reference = run_reference(exported.model, frames_dir, NUM_FRAMES)
    reference_s = time.perf_counter() - start
    start = time.perf_counter()
    tracker, results = run_tracker(exported.directory, decoded, NUM_FRAMES)
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
    print(
        f"\nreference {reference_s:.1f} s, tracker {tracker_s:.1f} s; per-frame IoU "
        f"(obj 1, obj 2):\n{np.array2string(ious, precision=4)}\n"
        f"mask pixels: {[tuple(int(m.sum()) for m in r.masks) for r in results]}\n"
        "max |object score logit error| per frame: "
        f"{np.array2string(np.array(score_errors), precision=5)}\n"
        "max |mask logit error| / max |logit| per frame: "
        f"{np.array2string(np.array(logit_errors), precision=6)}"
    )
    assert all(r.masks[i].any() for r in results for i in range(2)), "masks must not be empty"
    assert ious.min() >= 0.99, ious
    assert max(score_errors) < 1e-2
    assert max(logit_errors) < 1e-3
    # the bank holds the conditioning frame and at most num_maskmem / 16 recent frames (what
    # the last frame, which may still be corrected, and the next frame can select)
    for counts in tracker.counts.values():
        assert counts["conditioning_frames"] == 1
        assert counts["memories"] <= 7 and counts["pointers"] <= 16


# -- the memory bank alone ---------------------------------------------------------------------

SETTINGS = MemorySettings(
    num_maskmem=7,
    memory_temporal_stride=1,
    max_cond_frames_in_attn=-1,
    max_obj_ptrs_in_encoder=16,
    only_obj_ptrs_in_the_past=True,
)


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
    # what the last frame (a correction) and later frames can select: t-6 .. t, t-15 .. t
    assert short.counts == long.counts == {"conditioning_frames": 1, "memories": 7, "pointers": 16}
    assert short.nbytes == long.nbytes
    per_memory = 64 * 64 * 64 * (2 if storage == "bfloat16" else 4)
    assert long.nbytes == 8 * per_memory + 17 * 256 * 4


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
    np.testing.assert_array_equal(
        selection.object_pointers[:, 0], np.array([0, 12] + list(range(29, 14, -1)), np.float32)
    )
    # a short known length scales pointer positions by min(num_frames, 16) - 1
    short = MemoryBank(SETTINGS)
    fill(short, 5)
    selection = short.select(5, num_frames=8)
    assert selection.pointer_frames == (0, 4, 3, 2, 1)
    np.testing.assert_allclose(
        selection.object_pointer_positions, np.array([5, 1, 2, 3, 4], np.float32) / 7
    )


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

FAKE_SIZE = (24, 32)  # H, W of the fake videos
FAKE_POINT_SCALE = 1024 / FAKE_SIZE[1]  # model pixels per frame pixel along x
NO_MEM_CHANNEL, FRAME_CHANNEL, KEY_CHANNEL = 2, 0, 1  # channels of the fake image features


def fake_frame(t: int) -> np.ndarray:
    """Frame t of a fake video: every pixel is t (so FakeNetworks.encode can read t back)."""
    return np.full(FAKE_SIZE + (3,), t, np.uint8)


def rect_logits(y0, y1, x0, x1, inside=5.0, outside=-5.0) -> np.ndarray:
    """[256, 256] low-res logits: `inside` on rows y0:y1, columns x0:x1."""
    logits = np.full((256, 256), outside, np.float32)
    logits[y0:y1, x0:x1] = inside
    return logits


def default_script(key: int, frame: int):
    """(mask logits [4, 256, 256], predicted IoU [4], object score logit) for any object."""
    masks = np.stack([rect_logits(64, 128, 32, 96)] * 4)
    return masks, np.float32([0.5, 0.6, 0.9, 0.7]), 1.0


class FakeNetworks:
    """Right shapes, cheap scripted numbers; records every call.

    Identities travel through the tensors so that a script can answer per object and frame:
    encode writes the frame index (read back from the frame's pixel value, see fake_frame) into
    channel FRAME_CHANNEL of the features; a prompted row's object key is the x of its first
    point in frame pixels (click object k at x = k); a tracked row's key comes from its first
    object pointer (a conditioning frame's), which attend copies into channel KEY_CHANNEL;
    decode answers `script(key, frame)` and writes the key into every object pointer;
    encode_memory writes the frame index into the memory, so `attended` tells which frames every
    row attended to.
    """

    def __init__(self, script=default_script):
        self.script = script
        self.calls = []  # ("encode", B) / ("decode", N, images, P) / ("attend", G, M, P) / ...
        self.decoded = []  # per decoder row: key, frame, points, labels, has_mask, mask_input...
        self.attended = []  # per attention row: (frame, key, memory frames, t_positions)
        self.memory_inputs = []  # per memory-encoder call: is_mask_from_points, score logits

    def clear(self):
        """Forget the calls recorded so far."""
        for log in (self.calls, self.decoded, self.attended, self.memory_inputs):
            log.clear()

    def encode(self, image):
        self.calls.append(("encode", image.shape[0]))
        frame = round((float(image[0, 0, 0, 0]) * 0.229 + 0.485) * 255)
        embed = np.zeros((1, 256, 64, 64), np.float32)
        embed[:, FRAME_CHANNEL] = frame
        return {
            "image_embed": embed,
            "high_res_feats_0": np.zeros((1, 32, 256, 256), np.float32),
            "high_res_feats_1": np.zeros((1, 64, 128, 128), np.float32),
        }

    def decode(self, inputs):
        coords, labels = inputs["point_coords"], inputs["point_labels"]
        n, embeds = coords.shape[0], inputs["image_embed"]
        self.calls.append(("decode", n, embeds.shape[0], coords.shape[1]))
        masks = np.empty((n, 4, 256, 256), np.float32)
        ious = np.empty((n, 4), np.float32)
        scores = np.empty((n, 1), np.float32)
        keys = np.empty((n,), np.float32)
        for i in range(n):
            embed = embeds[i if embeds.shape[0] > 1 else 0]
            frame = round(float(embed[FRAME_CHANNEL, 0, 0]))
            prompted = labels[i, 0] != -1
            key = (
                round(float(coords[i, 0, 0]) / FAKE_POINT_SCALE)
                if prompted
                else (round(float(embed[KEY_CHANNEL, 0, 0])))
            )
            masks[i], ious[i], scores[i, 0] = self.script(key, frame)
            keys[i] = key
            self.decoded.append(
                {
                    "key": key,
                    "frame": frame,
                    "points": coords[i].copy(),
                    "labels": labels[i].copy(),
                    "has_mask": float(inputs["has_mask_input"][i]),
                    "mask_input": inputs["mask_input"][i, 0].copy(),
                    "no_mem": float(embed[NO_MEM_CHANNEL, 0, 0]) == 1.0,
                }
            )
        pointers = np.broadcast_to(keys[:, None, None], (n, 4, 256)).astype(np.float32)
        return {
            "masks": masks,
            "iou_scores": ious,
            "object_pointers": pointers,
            "object_score_logits": scores,
        }

    def encode_memory(self, inputs):
        n = inputs["image_embed"].shape[0]
        self.calls.append(("encode_memory", n))
        self.memory_inputs.append(
            (inputs["is_mask_from_points"].copy(), inputs["object_score_logits"].copy())
        )
        memory = np.empty((n, 64, 64, 64), np.float32)
        memory[:] = inputs["image_embed"][:, FRAME_CHANNEL, :1, :1][:, None]
        return {"memory_features": memory}

    def attend(self, inputs):
        memories, pointers = inputs["memory_features"], inputs["object_pointers"]
        self.calls.append(("attend", memories.shape[0], memories.shape[1], pointers.shape[1]))
        out = inputs["current_features"].copy()
        for g in range(memories.shape[0]):
            out[g, KEY_CHANNEL] = pointers[g, 0, 0]
            self.attended.append(
                (
                    round(float(out[g, FRAME_CHANNEL, 0, 0])),
                    round(float(pointers[g, 0, 0])),
                    tuple(round(float(m)) for m in memories[g, :, 0, 0, 0]),
                    tuple(inputs["memory_temporal_positions"][g].tolist()),
                )
            )
        return {"conditioned_features": out}


FAKE_METADATA = {
    "settings": {
        "num_maskmem": 7,
        "memory_temporal_stride_for_eval": 1,
        "max_cond_frames_in_attn": -1,
        "max_obj_ptrs_in_encoder": 16,
        "use_obj_ptrs_in_encoder": True,
        "only_obj_ptrs_in_the_past_for_eval": True,
        "use_signed_tpos_enc_to_obj_ptrs": True,
        "directly_add_no_mem_embed": True,
        "binarize_mask_from_pts_for_mem_enc": True,
        "multimask_output_in_sam": True,
        "multimask_min_pt_num": 0,
        "multimask_max_pt_num": 1,
        "multimask_output_for_tracking": True,
        "use_multimask_token_for_obj_ptr": True,
        "pred_obj_scores": True,
        "soft_no_obj_ptr": False,
        "fixed_no_obj_ptr": True,
        "use_mask_input_as_output_without_sam": True,
    },
    "decoder": {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
        "num_mask_tokens": 4,
    },
    "constants": {
        "no_mem_embed": [0.0] * NO_MEM_CHANNEL + [1.0] + [0.0] * (255 - NO_MEM_CHANNEL),
        "no_obj_ptr": [0.0] * 256,
        "mask_downsample_weight": [1.0 / 16] * 16,
        "mask_downsample_bias": [0.0],
    },
}


def fake_tracker(num_frames=None, script=default_script, samurai=None):
    from sam2_triton.python_backend.video.tracker import VideoTracker

    networks = FakeNetworks(script)
    return networks, VideoTracker(networks, FAKE_METADATA, num_frames=num_frames, samurai=samurai)


def _rect_mask(y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros(FAKE_SIZE, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _bounded_script(key: int, frame: int):
    """Object 1's frames t % 5 == 0 are poor (SAMURAI leaves them out of its memory)."""
    masks, ious, score = default_script(key, frame)
    if key == 1 and frame % 5 == 0:
        ious = np.float32([0.4, 0.4, 0.35, 0.1])
    return masks, ious, score


@pytest.mark.parametrize("samurai", [False, True], ids=["sam2", "samurai"])
def test_tracker_state_is_bounded(samurai):
    """Prompts of every kind early on, then tracking only: the state after 200 frames is the
    state after 20 (prompts come before frame 4, out of every window by frame 19)."""
    from sam2_triton.python_backend.samurai import SamuraiSettings

    settings = SamuraiSettings.load() if samurai else None
    _, tracker = fake_tracker(script=_bounded_script, samurai=settings)
    tracker.add_prompt(0, 1, points=[[1, 10]], labels=[1])
    tracker.add_prompt(0, 2, mask=_rect_mask(4, 12, 6, 20))
    sizes = {}
    for t in range(200):
        result = tracker.track(t, fake_frame(t))
        if t == 2:  # a mask correction, and a new object on the corrected frame
            tracker.add_prompt(2, 2, mask=_rect_mask(2, 18, 2, 18))
            tracker.add_prompt(2, 5, box=[5, 3, 15, 9])
            tracker.correct(2)
        if t == 3:  # a click correction; object 5 leaves
            tracker.add_prompt(3, 1, points=[[1, 12]], labels=[0])
            tracker.correct(3)
            tracker.remove_object(5)
        if t + 1 in (20, 200):
            sizes[t + 1] = (tracker.nbytes, tracker.counts)
    assert sizes[20] == sizes[200]
    assert result.obj_ids == [1, 2]
    assert result.masks.shape == (2,) + FAKE_SIZE and result.masks.any(axis=(1, 2)).all()
    counts = sizes[200][1]
    assert {o: c["conditioning_frames"] for o, c in counts.items()} == {1: 2, 2: 2}
    for c in counts.values():  # what the last frame (a correction) and the next can select
        assert c["pointers"] == 16
        assert c["memories"] == 7  # SAMURAI: t-1 .. t-6 (a correction of t) and t
        if samurai:  # the frames 4 selections can reach (192 .. 199 but 195 for object 1)
            assert c["motion_records"] == 7
    features = 4 * (256 * 64 * 64 + 32 * 256 * 256 + 64 * 128 * 128)
    per_object = (
        (2 * 64 * 64 * 64 + 256 * 4) * (counts[1]["conditioning_frames"])
        + (counts[1]["memories"] * 2 * 64 * 64 * 64 + counts[1]["pointers"] * 256 * 4)
        + (256 * 256 * 4 + 256 * 4)
    )  # the last frame's logits and pointer
    assert sizes[200][0] >= features + per_object


def test_tracker_objects_join_and_leave():
    from sam2_triton.python_backend.errors import InputError

    networks, tracker = fake_tracker()
    tracker.add_prompt(0, 7, points=[[10, 10]], labels=[1])
    assert tracker.track(0, fake_frame(0)).obj_ids == [7]
    tracker.track(1, fake_frame(1))
    tracker.add_prompt(2, 3, box=[2, 2, 20, 20])
    networks.calls.clear()
    result = tracker.track(2, fake_frame(2))
    assert result.obj_ids == [3, 7]  # ascending object ids
    # obj 7 tracked from memory (1 cond + 1 recent memory, 2 pointers); obj 3 decoded from its box
    assert ("attend", 1, 2, 2) in networks.calls
    assert ("decode", 1, 1, 1) in networks.calls and ("decode", 1, 1, 2) in networks.calls
    assert ("encode_memory", 2) in networks.calls  # one memory-encoder batch for all objects
    networks.calls.clear()
    tracker.track(3, fake_frame(3))
    # different memory counts: one attention batch per (memories, pointers) signature
    assert sorted(c for c in networks.calls if c[0] == "attend") == [
        ("attend", 1, 1, 1),
        ("attend", 1, 3, 3),
    ]
    tracker.remove_object(7)
    assert tracker.track(4, fake_frame(4)).obj_ids == [3]
    with pytest.raises(InputError, match="before the last tracked frame 4"):
        tracker.add_prompt(3, 3, points=[[1, 1]], labels=[1])
    with pytest.raises(InputError, match="unknown object id 7"):
        tracker.remove_object(7)
    tracker.remove_object(3)
    assert tracker.track(5, fake_frame(5)).obj_ids == []


def test_tracker_batches_objects_with_equal_memory():
    networks, tracker = fake_tracker()
    for obj_id in (1, 2, 3):
        tracker.add_prompt(0, obj_id, points=[[10, 10]], labels=[1])
    tracker.track(0, fake_frame(0))
    # the three objects are decoded without memory: one batch sharing one image embedding
    assert networks.calls == [("encode", 1), ("decode", 3, 1, 1), ("encode_memory", 3)]
    networks.calls.clear()
    tracker.track(1, fake_frame(1))
    assert networks.calls == [
        ("encode", 1),
        ("attend", 3, 1, 1),
        ("decode", 3, 3, 1),
        ("encode_memory", 3),
    ]


def test_frames_keep_the_first_frame_size():
    from sam2_triton.python_backend.errors import InputError

    _, tracker = fake_tracker()
    tracker.track(0, fake_frame(0))  # no object yet: the size is fixed all the same
    with pytest.raises(InputError, match="frame 1 is 33x24 but this sequence's frames are 32x24"):
        tracker.track(1, np.zeros((24, 33, 3), np.uint8))
    tracker.add_prompt(1, 1, points=[[3, 3]], labels=[1])
    with pytest.raises(InputError, match="32x24"):
        tracker.add_prompt(1, 2, mask=np.ones((10, 10), bool))
    assert tracker.track(1, fake_frame(1)).masks.shape == (1,) + FAKE_SIZE
