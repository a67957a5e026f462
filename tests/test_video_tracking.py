"""Streaming video tracking (python_backend/video) against the official SAM2VideoPredictor.

The parity test runs the official predictor (the test checkpoint, `exported.model`) over a small
synthetic video written as JPEGs, and `VideoTracker` over the same decoded frames with the
exported graphs in ONNX Runtime: every frame's mask of every object must agree (IoU >= 0.99).
The memory-bound tests run the bank alone on synthetic tensors (no networks). The stand-in
networks (`FakeNetworks`, scripted; `InstantNetworks`, preallocated outputs) check the
tracker's bookkeeping, its device data path (transfers to the host per frame, lazy masks,
device preprocessing) and its host time per frame.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2_triton.python_backend.video.memory_bank import MemoryBank, MemorySettings

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


def write_jpeg_frames(folder: Path, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Writes `frames` as the JPEG folder SAM2VideoPredictor reads (00000.jpg, ...; quality 95)
    into `folder` (created); returns them as that loader decodes them (PIL, RGB): the pixels
    the tracker is given, so that both sides see the same frames."""
    from PIL import Image

    folder.mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    return [
        np.asarray(Image.open(folder / f"{t:05d}.jpg").convert("RGB")) for t in range(len(frames))
    ]


CLICK = ([[40.0, 40.0]], [1])  # obj 1: one positive click on the disc (frame 0)
BOX = [96.0, 16.0, 138.0, 58.0]  # obj 2: a box around the square (frame 0)
# The test checkpoint's object-score head is biased (export.checkpoints.OBJECT_SCORE_BIAS_SHIFT)
# so that objects are present and the masks themselves are compared, not "absent" everywhere.


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
    frames_dir = tmp_path / "frames"
    decoded = write_jpeg_frames(frames_dir, synthetic_frames())

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
        logits = upscale_logits(result.host_low_res_logits, (HEIGHT, WIDTH))[:, 0].numpy()
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
    memory = torch.from_numpy(np.random.default_rng(0).standard_normal((64, 64, 64)))
    for t in range(num_frames):
        pointer = torch.full((256,), float(t))
        bank.add(t, memory.float(), pointer, 1.0, is_conditioning=t in cond_frames)


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
        selection.object_pointers[:, 0].numpy(),
        np.array([0, 12] + list(range(29, 14, -1)), np.float32),
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


@pytest.mark.parametrize("storage", ["bfloat16", "float32"])
def test_memory_bank_stores_memories_in_the_storage_dtype(storage):
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[storage]
    values = torch.from_numpy(np.random.default_rng(1).standard_normal((64, 64, 64))).float()
    # halfway between two bfloat16 values: rounded to the even one (as SAM 2's .to(bfloat16))
    values[0, 0, :2] = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8])
    bank = MemoryBank(SETTINGS, storage)
    bank.add(0, values * 100, torch.zeros(256), 1.0, is_conditioning=True)
    bank.add(1, values, torch.ones(256), 1.0, is_conditioning=False)
    assert bank.cond[0].memory.dtype == bank.non_cond_memories[1].dtype == dtype
    features = bank.select(2).memory_features
    assert features.dtype == torch.float32 and features.shape == (2, 64, 64, 64)
    assert torch.equal(features[1], values.to(dtype).float())
    assert torch.equal(features[0], (values * 100).to(dtype).float())
    if storage == "bfloat16":
        assert features[1, 0, 0, :2].tolist() == [1.0, 1 + 4 * 2**-8]
    assert bank.nbytes == 2 * 64**3 * dtype.itemsize + 2 * 256 * 4


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


def _host(value):
    """A tensor the tracker sent (CPU) or an array as numpy."""
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def numpy_io(method):
    """A network method scripted in numpy serves both callers: the tracker (CPU torch tensors
    in and out) and the network models of test_model_files (numpy in and out)."""

    @functools.wraps(method)
    def run(self, inputs):
        if isinstance(inputs, Mapping):
            as_torch = any(isinstance(v, torch.Tensor) for v in inputs.values())
            inputs = {name: _host(value) for name, value in inputs.items()}
        else:
            as_torch = isinstance(inputs, torch.Tensor)
            inputs = _host(inputs)
        outputs = method(self, inputs)
        if not as_torch:
            return outputs
        return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in outputs.items()}

    return run


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

    device = torch.device("cpu")

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

    @numpy_io
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

    @numpy_io
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

    @numpy_io
    def encode_memory(self, inputs):
        n = inputs["image_embed"].shape[0]
        self.calls.append(("encode_memory", n))
        self.memory_inputs.append(
            (inputs["is_mask_from_points"].copy(), inputs["object_score_logits"].copy())
        )
        memory = np.empty((n, 64, 64, 64), np.float32)
        memory[:] = inputs["image_embed"][:, FRAME_CHANNEL, :1, :1][:, None]
        return {"memory_features": memory}

    @numpy_io
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


# -- the device data path (stand-in networks) ---------------------------------------------------


class InstantNetworks:
    """VideoNetworks that answer at once with preallocated outputs of the contract's shapes on
    `device` (views of the first rows for smaller batches): what remains of a frame's time is
    the tracker's own. Every object is present with the same rectangle as mask."""

    def __init__(self, max_objects: int = 16, device: str = "cpu"):
        self.device = torch.device(device)
        n = max_objects

        def zeros(*shape):
            return torch.zeros(shape, dtype=torch.float32, device=self.device)

        self.features = {
            "image_embed": zeros(1, 256, 64, 64),
            "high_res_feats_0": zeros(1, 32, 256, 256),
            "high_res_feats_1": zeros(1, 64, 128, 128),
        }
        masks = torch.from_numpy(rect_logits(64, 128, 32, 96)).to(self.device)
        self.decoded = {
            "masks": masks.expand(n, 4, 256, 256).contiguous(),
            "iou_scores": torch.tensor([0.5, 0.6, 0.9, 0.7], device=self.device).repeat(n, 1),
            "object_pointers": zeros(n, 4, 256),
            "object_score_logits": zeros(n, 1) + 1.0,
        }
        self.memories = zeros(n, 64, 64, 64)
        self.conditioned = zeros(n, 256, 64, 64)

    def encode(self, image):
        return self.features

    def decode(self, inputs):
        n = inputs["point_coords"].shape[0]
        return {name: value[:n] for name, value in self.decoded.items()}

    def encode_memory(self, inputs):
        return {"memory_features": self.memories[: inputs["image_embed"].shape[0]]}

    def attend(self, inputs):
        return {"conditioned_features": self.conditioned[: inputs["current_features"].shape[0]]}


def natural_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """RGB uint8 [H, W, 3] that looks like a photograph to a resize filter: smooth gradients
    and a texture, sharp-edged shapes, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    image[..., 0] = 128 + 100 * np.sin(xx / 57.0 + seed) * np.cos(yy / 43.0)
    image[..., 1] = 255 * xx / width
    image[..., 2] = 255 * yy / height
    image[height // 4 : height // 2, width // 5 : width // 3] = (250, 20, 30)
    disc = (xx - 0.6 * width) ** 2 + (yy - 0.6 * height) ** 2 < (height / 6) ** 2
    image[disc] = (10, 240, 60)
    image += rng.normal(0, 6, image.shape)
    return image.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "size",
    [(720, 1280), (480, 640), (1080, 1920), (24, 32), (37, 2000), (600, 4000), (1024, 1024)]
    + [(1024, 700), (1023, 1025)],
)
def test_device_preprocessing_equals_the_video_loader(size):
    """ "device" resizes in PIL's fixed-point arithmetic: the same uint8 levels as PIL, so the
    same model input as "video" (SAM2VideoPredictor's loader), bit for bit."""
    from PIL import Image

    from sam2_triton.python_backend.video.frames import pil_resize_device, preprocess_frame

    cpu = torch.device("cpu")
    for seed in range(2):
        frame = natural_frame(*size, seed)
        pil = np.asarray(Image.fromarray(frame).resize((1024, 1024), Image.Resampling.BICUBIC))
        ours = pil_resize_device(torch.from_numpy(frame)).numpy()
        levels = np.abs(ours.astype(np.int64) - pil)
        print(
            f"\n{size} seed {seed}: max |level difference| {levels.max()}, pixels differing "
            f"{np.mean(levels > 0):.2e}"
        )
        assert levels.max() == 0
        video = preprocess_frame(frame, "video", cpu)
        device = preprocess_frame(frame, "device", cpu)
        assert device.shape == (1, 3, 1024, 1024) and device.dtype == torch.float32
        assert torch.equal(device, video)


def test_image_preprocessing_on_the_device_equals_the_image_predictor():
    from sam2_triton.python_backend.images import preprocess_image
    from sam2_triton.python_backend.video.frames import preprocess_frame

    frame = natural_frame(480, 640)
    on_device = preprocess_frame(frame, "image", torch.device("cpu"))
    np.testing.assert_array_equal(on_device.numpy(), preprocess_image(frame)[0])


def test_device_mask_functions_equal_the_host_ones(monkeypatch):
    from sam2_triton.python_backend import masks as mask_module
    from sam2_triton.python_backend.boxes import mask_bounds, mask_bounds_torch
    from sam2_triton.python_backend.errors import InputError
    from sam2_triton.python_backend.masks import (
        masks_at_original_size,
        masks_at_original_size_torch,
        stability_scores,
        stability_scores_torch,
    )

    rng = np.random.default_rng(2)
    logits = rng.normal(-1.0, 2.0, (5, 1, 256, 256)).astype(np.float32)
    logits[3] = -5.0  # an empty mask
    size = (97, 131)
    monkeypatch.setattr(mask_module, "UPSCALE_CHUNK_PIXELS", 2 * size[0] * size[1])  # 3 chunks
    device_masks = masks_at_original_size_torch(torch.from_numpy(logits), size)
    assert device_masks.dtype == torch.bool and device_masks.shape == (5, 1, *size)
    np.testing.assert_array_equal(device_masks.numpy(), masks_at_original_size(logits, size))
    with pytest.raises(InputError, match="max_mask_bytes"):
        masks_at_original_size_torch(torch.from_numpy(logits), size, max_mask_bytes=1000)

    masks = device_masks[:, 0]
    bounds, present = mask_bounds_torch(masks)
    expected_bounds, expected_present = mask_bounds(masks.numpy())
    assert bounds.dtype == torch.int64 and present.tolist() == expected_present.tolist()
    np.testing.assert_array_equal(bounds.numpy(), expected_bounds)
    assert present.tolist() == [True, True, True, False, True]
    single = torch.zeros((1, 6, 8), dtype=torch.bool)
    single[0, 5, 3] = True
    assert mask_bounds_torch(single)[0].tolist() == [[3, 5, 3, 5]]
    assert mask_bounds_torch(torch.zeros((2, 0, 4), dtype=torch.bool))[0].tolist() == [[0] * 4] * 2

    stability = stability_scores_torch(torch.from_numpy(logits[:, 0]), 0.0, 0.5)
    np.testing.assert_array_equal(stability.numpy(), stability_scores(logits[:, 0], 0.0, 0.5))


def test_tracker_device_and_settings_are_checked():
    from sam2_triton.python_backend.video.tracker import VideoTracker

    networks = FakeNetworks()
    assert VideoTracker(networks, FAKE_METADATA).device == torch.device("cpu")
    assert VideoTracker(networks, FAKE_METADATA, device="cpu").device == torch.device("cpu")
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        VideoTracker(networks, FAKE_METADATA, preprocessing="bicubic")
    with pytest.raises(ValueError, match="storage must be one of"):
        VideoTracker(networks, FAKE_METADATA, memory_storage="float16")


def _many_objects(count: int, samurai: bool):
    from sam2_triton.python_backend.samurai import SamuraiSettings

    networks, tracker = fake_tracker(samurai=SamuraiSettings.load() if samurai else None)
    for obj_id in range(1, count + 1):  # FakeNetworks reads the click's x back as the key
        tracker.add_prompt(0, obj_id, points=[[obj_id, 10]], labels=[1])
    return networks, tracker


@pytest.mark.parametrize("samurai", [False, True], ids=["sam2", "samurai"])
def test_transfers_per_frame_do_not_grow_with_objects(samurai):
    """SAM 2: one transfer per tracked frame (the packed scalars); SAMURAI two more (the
    candidates' low-res bounds and IoUs, then their boxes at 1024, of every object, for the
    Kalman filters); masks and boxes one each, once."""
    per_frame = {}
    for count in (1, 16):
        _, tracker = _many_objects(count, samurai)
        tracker.track(0, fake_frame(0))
        counts = []
        for t in range(1, 4):
            tracker.transfers.reset()
            result = tracker.track(t, fake_frame(t))
            counts.append(tracker.transfers.reset())
        per_frame[count] = counts
        assert result.obj_ids == list(range(1, count + 1))
        assert result.low_res_logits.shape == (count, 1, 256, 256)
        assert result.scores.shape == result.present.shape == (count,) and result.present.all()
        assert result.masks.shape == (count, *FAKE_SIZE) and result.masks.all(axis=0).any()
        assert result.boxes.shape == (count, 4)
        result.masks, result.boxes  # noqa: B018 (read again: kept, no transfer)
        assert tracker.transfers.reset() == 2
        tracker.add_prompt(3, 1, points=[[1, 12]], labels=[0])
        tracker.correct(3)
        # a correction: the packed scalars (and SAMURAI's candidates: one click steps the filter)
        assert tracker.transfers.reset() == (3 if samurai else 1)
    assert per_frame[1] == per_frame[16] == [3 if samurai else 1] * 3


def test_frame_result_masks_and_boxes_are_computed_when_read():
    from sam2_triton.python_backend.boxes import mask_bounds
    from sam2_triton.python_backend.masks import masks_at_original_size

    _, tracker = _many_objects(3, samurai=False)
    result = tracker.track(0, fake_frame(0))
    tracker.transfers.reset()
    assert "masks" not in vars(result) and "device_masks" not in vars(result)
    boxes = result.boxes  # computes the device masks once, moves only the bounds
    assert tracker.transfers.count == 1 and "masks" not in vars(result)
    logits = result.host_low_res_logits
    expected = masks_at_original_size(logits, FAKE_SIZE)[:, 0]
    np.testing.assert_array_equal(result.masks, expected)
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, mask_bounds(expected)[0].astype(np.float32))
    assert tracker.transfers.count == 3  # bounds, logits, masks


@pytest.fixture
def host_reads_counted(monkeypatch):
    """Fails a test whose code reads a tensor's values on the host other than through
    HostTransfers.to_host (which is allowed to, and counts)."""
    from sam2_triton.python_backend.video.device import HostTransfers

    inside = [False]
    to_host = HostTransfers.to_host

    def counted(self, tensor):
        inside[0] = True
        try:
            return to_host(self, tensor)
        finally:
            inside[0] = False

    def guard(name):
        method = getattr(torch.Tensor, name)

        def guarded(self, *args, **kwargs):
            if not inside[0]:
                raise AssertionError(f"Tensor.{name}() outside HostTransfers.to_host")
            return method(self, *args, **kwargs)

        return guarded

    monkeypatch.setattr(HostTransfers, "to_host", counted)
    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, guard(name))


@pytest.mark.parametrize("samurai", [False, True], ids=["sam2", "samurai"])
@pytest.mark.parametrize("preprocessing", ["video", "device", "image"])
def test_values_reach_the_host_only_through_the_transfers(
    host_reads_counted, samurai, preprocessing
):
    from sam2_triton.python_backend.samurai import SamuraiSettings
    from sam2_triton.python_backend.video.tracker import VideoTracker

    settings = SamuraiSettings.load() if samurai else None
    tracker = VideoTracker(
        InstantNetworks(4), FAKE_METADATA, preprocessing=preprocessing, samurai=settings
    )
    frame = natural_frame(48, 64)
    tracker.add_prompt(0, 1, points=[[10, 10]], labels=[1])
    tracker.add_prompt(0, 2, box=[4, 4, 30, 20])
    tracker.add_prompt(0, 3, mask=np.ones((48, 64), bool))
    tracker.add_prompt(0, 3, mask=np.ones((48, 64), bool))
    tracker.track(0, frame)
    for t in (1, 2):
        result = tracker.track(t, frame)
    tracker.add_prompt(2, 1, points=[[12, 10]], labels=[0], clear_old_points=False)
    tracker.add_prompt(2, 4, points=[[30, 30]], labels=[1])
    result = tracker.correct(2)
    assert result.obj_ids == [1, 2, 3, 4] and result.masks.shape == (4, 48, 64)
    assert result.boxes.shape == (4, 4) and tracker.nbytes > 0


def test_host_time_per_frame_with_instant_networks():
    """The tracker's own host time per tracked frame at 16 objects and 1280x720 ("device"
    preprocessing, stand-in networks that take no time): compact answers (the masks are never
    read) and answers with full-size masks and boxes. Printed, with the transfers per frame."""
    from sam2_triton.python_backend.video.tracker import VideoTracker

    frames = [natural_frame(720, 1280, seed) for seed in range(2)]
    report = {}
    for read_masks in (False, True):
        tracker = VideoTracker(InstantNetworks(16), FAKE_METADATA, preprocessing="device")
        for obj_id in range(1, 17):
            tracker.add_prompt(0, obj_id, points=[[40 * obj_id, 100]], labels=[1])
        tracker.track(0, frames[0])
        times, transfers = [], []
        for t in range(1, 9):
            tracker.transfers.reset()
            start = time.perf_counter()
            result = tracker.track(t, frames[t % 2])
            if read_masks:
                assert result.masks.shape == (16, 720, 1280) and result.boxes.shape == (16, 4)
            times.append(time.perf_counter() - start)
            transfers.append(tracker.transfers.reset())
        report[read_masks] = np.median(times) * 1e3
        assert transfers == [3 if read_masks else 1] * 8
    print(
        f"\nhost ms per frame, 16 objects, 1280x720, device preprocessing: compact "
        f"{report[False]:.1f}, with masks and boxes {report[True]:.1f}"
    )
