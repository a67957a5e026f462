"""Streaming SAM 2 video object tracking over the four exported graphs.

`VideoTracker` does, frame by frame, what `SAM2VideoPredictor` does over a whole video, with the
networks behind `VideoNetworks` (ONNX Runtime in tests, Triton BLS in the server):

    tracker = VideoTracker(networks, metadata, num_frames=None)
    tracker.add_prompt(0, obj_id=1, points=[[x, y]], labels=[1])   # pixels of the frame
    tracker.add_prompt(0, obj_id=2, box=[x0, y0, x1, y1])
    result = tracker.track(0, frame0)          # prompted objects: conditioning frame
    result = tracker.track(1, frame1)          # every object tracked from its memory
    tracker.remove_object(2)

Per frame: one image-encoder call; the objects prompted on this frame are decoded from
`image_embed + no_mem_embed` with their points (SAM 2's "initial conditioning frame", as the
reference treats any prompt on a frame it has not tracked yet); every other object goes through
memory attention (one batch per distinct (memories, pointers) count: usually all objects are one
batch) and the decoder with SAM 2's padding prompt; then one memory-encoder batch writes every
object's memory for this frame (binarized mask on prompted frames). Prompted frames are
conditioning frames of their objects.

Object-pointer positions: SAM 2 divides the frame distance by min(num_frames, 16) - 1. With a
known length (`num_frames=...`) the tracker reproduces the offline predictor exactly. A stream
does not know its length: the default `num_frames=None` uses 16 (max_obj_ptrs_in_encoder), which
is the offline behaviour of every video of 16 frames or more; only videos shorter than 16
frames, tracked without their length, differ (slightly: pointer positions scaled differently).

Differences from `SAM2VideoPredictor` (offline):
* forward only; an object prompted after frame 0 is tracked from its first prompt on (the
  offline predictor also tracks it backwards / from other objects' start frame using its future
  conditioning frame, which a stream cannot have);
* prompts apply to the frame about to be tracked (`add_prompt(t)` then `track(t)`), and
  `clear_old_points=False` adds clicks to those pending for the same frame; refining a frame
  already tracked (the reference's correction clicks with the previous mask as mask input) is
  not implemented here;
* `fill_hole_area` (needs SAM 2's optional CUDA extension; the reference skips it with a
  warning when the extension is missing) and `non_overlap_masks` are not applied.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from sam2_triton.export.contract import IMAGE_SIZE, LOW_RES_MASK_SIZE
from sam2_triton.python_backend.masks import masks_at_original_size
from sam2_triton.python_backend.video.frames import preprocess_frame
from sam2_triton.python_backend.video.heads import HeadSettings, choose_outputs
from sam2_triton.python_backend.video.memory_bank import MemoryBank, MemorySettings, Selection
from sam2_triton.python_backend.video.networks import VideoNetworks


@dataclass
class FrameResult:
    """Tracking answer for one frame: one row per object, in `obj_ids` order."""

    frame_idx: int
    obj_ids: List[int]
    masks: np.ndarray  # bool [N, H, W] at the frame's original size
    scores: np.ndarray  # float32 [N], predicted IoU of the chosen mask token
    object_score_logits: np.ndarray  # float32 [N], > 0: object present
    present: np.ndarray  # bool [N]
    boxes: np.ndarray  # float32 [N, 4] (x0, y0, x1, y1) of the mask, inclusive pixels; 0 if empty
    low_res_logits: np.ndarray  # float32 [N, 1, 256, 256], NO_OBJ_SCORE where absent


@dataclass
class _Prompt:
    points: np.ndarray  # float32 [P, 2], pixels of the original frame (box corners first)
    labels: np.ndarray  # int32 [P]


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """bool [N, H, W] -> float32 [N, 4] (x0, y0, x1, y1), zeros for empty masks."""
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size:
            boxes[i] = (cols[0], rows[0], cols[-1], rows[-1])
    return boxes


class VideoTracker:
    """One video stream: objects, their memory banks, prompts pending for the next frame."""

    def __init__(self, networks: VideoNetworks, metadata: Mapping, num_frames: Optional[int] = None,
                 preprocessing: str = "video", memory_storage: str = "bfloat16") -> None:
        settings = metadata["settings"]
        if not settings.get("directly_add_no_mem_embed", True):
            raise NotImplementedError("models without directly_add_no_mem_embed are not supported")
        if num_frames is not None and int(num_frames) < 1:
            raise ValueError(f"num_frames must be >= 1 or None, not {num_frames}")
        self.networks = networks
        self.num_frames = None if num_frames is None else int(num_frames)
        self.preprocessing = preprocessing
        self.memory_storage = memory_storage
        self.memory_settings = MemorySettings.from_metadata(settings)
        self.head_settings = HeadSettings.from_metadata(metadata)
        self.binarize_prompted = bool(settings.get("binarize_mask_from_pts_for_mem_enc", False))
        self.no_mem_embed = np.asarray(
            metadata["constants"]["no_mem_embed"], dtype=np.float32).reshape(1, -1, 1, 1)
        self.banks: "OrderedDict[int, MemoryBank]" = OrderedDict()
        self.pending: Dict[int, _Prompt] = {}
        self.pending_frame: Optional[int] = None
        self.last_frame: int = -1
        self.frame_size: Optional[Tuple[int, int]] = None

    # -- objects and prompts ------------------------------------------------------------------

    @property
    def obj_ids(self) -> List[int]:
        """Objects in output order: tracked ones, then new ones prompted for the next frame."""
        return list(self.banks) + [o for o in self.pending if o not in self.banks]

    def add_prompt(self, frame_idx: int, obj_id: int, points=None, labels=None, box=None,
                   clear_old_points: bool = True) -> None:
        """Prompt `obj_id` on frame `frame_idx`, the next frame `track` will be called with.

        points [P, 2] (x, y) with labels [P] (1 positive, 0 negative), and/or box
        (x0, y0, x1, y1), in pixels of the original frame. The box goes first, as two corner
        points labelled 2 and 3 (as SAM 2 does). The frame becomes a conditioning frame of the
        object; a new object starts being tracked there.
        """
        frame_idx = int(frame_idx)
        if frame_idx <= self.last_frame:
            raise ValueError(
                f"frame {frame_idx} is already tracked (last tracked frame: {self.last_frame}); "
                "prompts apply to the next frame to track"
            )
        if self.pending_frame is not None and frame_idx != self.pending_frame:
            raise ValueError(
                f"prompts are pending for frame {self.pending_frame}: track it before prompting "
                f"frame {frame_idx}"
            )
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together")
        if points is None and box is None:
            raise ValueError("give points with labels, and/or a box")
        coords = np.zeros((0, 2), np.float32) if points is None else (
            np.asarray(points, dtype=np.float32).reshape(-1, 2))
        codes = np.zeros((0,), np.int32) if labels is None else (
            np.asarray(labels, dtype=np.int32).reshape(-1))
        if coords.shape[0] != codes.shape[0]:
            raise ValueError(f"{coords.shape[0]} points but {codes.shape[0]} labels")
        if not np.all(np.isin(codes, (0, 1))):
            raise ValueError("point labels must be 0 (negative) or 1 (positive)")
        if not np.all(np.isfinite(coords)):
            raise ValueError("points must be finite")
        if box is not None:
            if not clear_old_points:
                raise ValueError("a box must come first: use clear_old_points=True with a box")
            corners = np.asarray(box, dtype=np.float32).reshape(2, 2)
            if not np.all(np.isfinite(corners)):
                raise ValueError("box must be finite")
            coords = np.concatenate([corners, coords])
            codes = np.concatenate([np.array([2, 3], np.int32), codes])
        old = None if clear_old_points else self.pending.get(int(obj_id))
        if old is not None:
            coords = np.concatenate([old.points, coords])
            codes = np.concatenate([old.labels, codes])
        self.pending[int(obj_id)] = _Prompt(coords, codes)
        self.pending_frame = frame_idx

    def remove_object(self, obj_id: int) -> None:
        obj_id = int(obj_id)
        if obj_id not in self.banks and obj_id not in self.pending:
            raise KeyError(f"unknown object id {obj_id}")
        self.banks.pop(obj_id, None)
        self.pending.pop(obj_id, None)
        if not self.pending:
            self.pending_frame = None

    def reset(self) -> None:
        self.banks.clear()
        self.pending.clear()
        self.pending_frame = None
        self.last_frame = -1
        self.frame_size = None

    # -- state size ---------------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        return sum(bank.nbytes for bank in self.banks.values())

    @property
    def counts(self) -> Dict[int, Dict[str, int]]:
        return {obj_id: bank.counts for obj_id, bank in self.banks.items()}

    # -- tracking -----------------------------------------------------------------------------

    def _model_points(self, prompt: _Prompt, size: Tuple[int, int]) -> np.ndarray:
        """Pixels of the original frame -> pixels of the 1024x1024 model input (float32)."""
        height, width = size
        scale = np.array([width, height], dtype=np.float32)
        return (prompt.points / scale * np.float32(IMAGE_SIZE)).astype(np.float32)

    def _decode(self, embeds: np.ndarray, feats: Mapping[str, np.ndarray], coords: np.ndarray,
                labels: np.ndarray) -> Dict[str, np.ndarray]:
        n = coords.shape[0]
        num_images = embeds.shape[0]

        def tile(x: np.ndarray) -> np.ndarray:
            return x if num_images == 1 else np.ascontiguousarray(
                np.broadcast_to(x, (num_images,) + x.shape[1:]))

        return self.networks.decode({
            "image_embed": np.ascontiguousarray(embeds, dtype=np.float32),
            "high_res_feats_0": tile(feats["high_res_feats_0"]),
            "high_res_feats_1": tile(feats["high_res_feats_1"]),
            "point_coords": coords.astype(np.float32),
            "point_labels": labels.astype(np.int32),
            "mask_input": np.zeros((n, 1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE), np.float32),
            "has_mask_input": np.zeros((n,), np.float32),
        })

    def _attend(self, image_embed: np.ndarray, selections: Sequence[Selection]) -> np.ndarray:
        """Memory-conditioned features [G, 256, 64, 64] of objects with equal (M, P)."""
        g = len(selections)
        return self.networks.attend({
            "current_features": np.ascontiguousarray(
                np.broadcast_to(image_embed, (g,) + image_embed.shape[1:]), dtype=np.float32),
            "memory_features": np.stack([s.memory_features for s in selections]),
            "memory_temporal_positions": np.stack([s.memory_temporal_positions for s in selections]),
            "object_pointers": np.stack([s.object_pointers for s in selections]),
            "object_pointer_positions": np.stack([s.object_pointer_positions for s in selections]),
        })["conditioned_features"]

    def track(self, frame_idx: int, image: np.ndarray) -> FrameResult:
        """Segment every object on frame `frame_idx` (RGB uint8 [H, W, 3]) and update memory."""
        frame_idx = int(frame_idx)
        if frame_idx <= self.last_frame:
            raise ValueError(f"frame {frame_idx} comes after frame {self.last_frame}: "
                             "frames must be tracked in increasing order")
        if self.num_frames is not None and frame_idx >= self.num_frames:
            raise ValueError(f"frame {frame_idx} is beyond num_frames={self.num_frames}")
        if self.pending and self.pending_frame != frame_idx:
            raise ValueError(f"prompts are pending for frame {self.pending_frame}, not {frame_idx}")
        pixels, size = preprocess_frame(image, self.preprocessing)
        if not self.banks and not self.pending:  # nothing to track: no network call
            self.last_frame = frame_idx
            empty = np.zeros((0,), np.float32)
            return FrameResult(frame_idx, [], np.zeros((0,) + size, bool), empty, empty,
                               np.zeros((0,), bool), np.zeros((0, 4), np.float32),
                               np.zeros((0, 1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE), np.float32))
        if self.frame_size is not None and size != self.frame_size:
            raise ValueError(f"frame is {size[1]}x{size[0]}, the video is "
                             f"{self.frame_size[1]}x{self.frame_size[0]}")
        feats = self.networks.encode(pixels)
        image_embed = np.asarray(feats["image_embed"], dtype=np.float32)

        obj_ids = self.obj_ids
        prompted = [o for o in obj_ids if o in self.pending]
        tracked = [o for o in obj_ids if o not in self.pending]

        # Decoder inputs per object: (embed [256,64,64], model points [P,2], labels [P], multimask)
        rows: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray, bool]] = {}
        no_mem = (image_embed + self.no_mem_embed)[0]
        for obj_id in prompted:
            prompt = self.pending[obj_id]
            multimask = self.head_settings.use_multimask(True, int(prompt.labels.shape[0]))
            rows[obj_id] = (no_mem, self._model_points(prompt, size), prompt.labels, multimask)

        selections = {o: self.banks[o].select(frame_idx, self.num_frames) for o in tracked}
        groups: Dict[Tuple[int, int], List[int]] = {}
        for obj_id in tracked:
            groups.setdefault(selections[obj_id].signature, []).append(obj_id)
        pad_coords = np.zeros((1, 2), np.float32)  # SAM 2's prompt when tracking: (0, 0) / -1
        pad_labels = -np.ones((1,), np.int32)
        tracking_multimask = self.head_settings.use_multimask(False, 0)
        for ids in groups.values():
            conditioned = self._attend(image_embed, [selections[o] for o in ids])
            for obj_id, embed in zip(ids, conditioned):
                rows[obj_id] = (embed, pad_coords, pad_labels, tracking_multimask)

        # Decoder: one batch per distinct number of prompt points.
        heads = {}
        by_points: Dict[int, List[int]] = {}
        for obj_id in obj_ids:
            by_points.setdefault(rows[obj_id][1].shape[0], []).append(obj_id)
        for ids in by_points.values():
            decoded = self._decode(
                np.stack([rows[o][0] for o in ids]), feats,
                np.stack([rows[o][1] for o in ids]), np.stack([rows[o][2] for o in ids]))
            chosen = choose_outputs(decoded, np.array([rows[o][3] for o in ids]), self.head_settings)
            for i, obj_id in enumerate(ids):
                heads[obj_id] = (chosen.low_res_masks[i], chosen.scores[i],
                                 chosen.object_pointers[i], chosen.object_score_logits[i])

        # Memory encoder: all objects in one batch.
        n = len(obj_ids)
        low_res = np.stack([heads[o][0] for o in obj_ids]).astype(np.float32)  # [N,1,256,256]
        score_logits = np.stack([heads[o][3] for o in obj_ids]).astype(np.float32)  # [N,1]
        from_points = np.array(
            [1.0 if (o in self.pending and self.binarize_prompted) else 0.0 for o in obj_ids],
            dtype=np.float32)
        memories = self.networks.encode_memory({
            "image_embed": np.ascontiguousarray(np.broadcast_to(image_embed, (n,) + image_embed.shape[1:])),
            "mask_logits": low_res,
            "object_score_logits": score_logits,
            "is_mask_from_points": from_points,
        })["memory_features"]

        for i, obj_id in enumerate(obj_ids):
            bank = self.banks.get(obj_id)
            if bank is None:
                bank = self.banks[obj_id] = MemoryBank(self.memory_settings, self.memory_storage)
            bank.add(frame_idx, memories[i], heads[obj_id][2], float(score_logits[i, 0]),
                     is_conditioning=obj_id in self.pending)

        self.pending.clear()
        self.pending_frame = None
        self.last_frame = frame_idx
        self.frame_size = size
        masks = masks_at_original_size(low_res, size)[:, 0]
        return FrameResult(
            frame_idx=frame_idx,
            obj_ids=list(obj_ids),
            masks=masks,
            scores=np.array([heads[o][1] for o in obj_ids], dtype=np.float32),
            object_score_logits=score_logits.reshape(-1),
            present=score_logits.reshape(-1) > 0,
            boxes=mask_boxes(masks),
            low_res_logits=low_res,
        )
