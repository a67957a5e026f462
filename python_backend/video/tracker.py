"""Streaming SAM 2 (and SAMURAI) video object tracking over the four exported graphs.

`VideoTracker` does, frame by frame, what `SAM2VideoPredictor` does over a whole video, with the
networks behind `VideoNetworks` (ONNX Runtime in tests, Triton BLS in the server):

    tracker = VideoTracker(networks, metadata, num_frames=None)   # samurai=SamuraiSettings(...)
    tracker.add_prompt(0, obj_id=1, points=[[x, y]], labels=[1])   # or box=, or mask= bool [H, W]
    result = tracker.track(0, frame0)          # RGB uint8 [H, W, 3] -> FrameResult
    tracker.add_prompt(0, obj_id=1, points=[[x, y]], labels=[0])
    result = tracker.correct(0)                # only the last tracked frame can be corrected

Coordinates are pixels of the frame; every frame must have the first frame's size; results list
objects by ascending id; user mistakes raise `InputError`. `nbytes` (the state) stays constant
on a long video.

Every tensor the tracker keeps or computes (features, memories, pointers, logits, head choices)
is a torch tensor on `self.device` (default: the networks' device). Prompts and frames arrive
on the host and are uploaded when applied; values come back to the host only through
`self.transfers` (`HostTransfers`), a fixed number of times per frame whatever the number of
objects: one packed [N, 3] tensor of scores, object-score logits and presence per frame (and,
in SAMURAI mode, two small ones: the candidates' low-res bounds and IoUs, then their boxes at
1024, measured on the device, for the Kalman filter). A `FrameResult`'s
full-size masks and boxes are computed on the device when first read, one transfer each.

A frame runs in phases, each a method with explicit inputs and outputs (`_FrameWork`): encode
the frame, condition the tracked objects on their memories, decode, encode the memories, then
move the scalars to the host and commit. Nothing changes the tracker before the commit.
`plan_track` and the phases' input builders (`attention_inputs`, `decoder_inputs`,
`memory_encoder_inputs`) and output readers (`decoded_outputs`) let
python_backend/video/batching.py run the phases of several trackers in shared network batches.

Design notes (one frame step by step, corrections, SAMURAI mode, pointer positions, data path,
differences from the offline predictor): docs/video-tracker.md
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from sam2_triton.export.contract import IMAGE_SIZE, LOW_RES_MASK_SIZE
from sam2_triton.python_backend.boxes import mask_bounds_torch, upsampled_mask_bounds_torch
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.masks import (
    check_mask_budget,
    clamp_low_res_torch,
    masks_at_original_size_torch,
)
from sam2_triton.python_backend.samurai import (
    FrameRecord,
    ObjectMotionState,
    SamuraiSettings,
    boxes_read,
    choose_box,
    reachable_memory_frames,
    select_memory_frames,
)
from sam2_triton.python_backend.video.device import HostTransfers, resolve_device
from sam2_triton.python_backend.video.frames import (
    PREPROCESSINGS,
    check_frame,
    check_prompt_mask,
    preprocess_frame,
    prompt_mask_input,
    upload,
)
from sam2_triton.python_backend.video.heads import (
    SAM2_PRESENCE_THRESHOLD,
    HeadOutputs,
    HeadSettings,
    MaskPromptHead,
    choose_outputs,
)
from sam2_triton.python_backend.video.holes import fill_hole_area, fill_holes
from sam2_triton.python_backend.video.memory_bank import (
    MemoryBank,
    MemorySettings,
    Selection,
    memory_features_shape,
    stack_memory_features,
    stack_object_pointers,
    storage_dtype,
    tensor_nbytes,
)
from sam2_triton.python_backend.video.networks import VideoNetworks
from sam2_triton.python_backend.workspace import Workspace, shared_workspace
from sam2_triton.wire import BOX_CORNER_LABELS, CLICK_LABELS, PADDING_LABEL

PAD_COORDS = np.zeros((1, 2), np.float32)  # SAM 2's prompt without clicks: (0, 0) as padding
PAD_LABELS = np.full((1,), PADDING_LABEL, np.int32)
FEATURE_NAMES = ("image_embed", "high_res_feats_0", "high_res_feats_1")
NUM_CANDIDATES = 3  # SAMURAI chooses among the multimask tokens 1-3


@dataclass
class FrameResult:
    """Tracking answer for one frame: one row per object, in `obj_ids` order (ascending).

    `low_res_logits` stays on the tracker's device (it may be the tracker's own tensor: read
    it, do not write it); the host scalars came in one packed transfer. `masks` and `boxes`
    are computed on the device when first read (then kept), one transfer each;
    `host_low_res_logits` moves the logits (one transfer). Every transfer goes through
    `transfers`, the tracker's counter; the arrays it gives are read-only.
    """

    frame_idx: int
    obj_ids: list[int]
    frame_size: tuple[int, int]  # (H, W) of the frame
    low_res_logits: torch.Tensor  # float32 [N, 1, 256, 256] on the device, NO_OBJ_SCORE if absent
    scores: np.ndarray  # float32 [N], predicted IoU of the chosen mask token (1 for a mask prompt)
    object_score_logits: np.ndarray  # float32 [N], > presence threshold: object present
    present: np.ndarray  # bool [N]
    transfers: HostTransfers
    max_mask_bytes: int | None = None  # the masks' budget (checked before they are allocated)

    @functools.cached_property
    def device_masks(self) -> torch.Tensor:
        """bool [N, H, W] on the device: the upscaled logits > 0 (computed once)."""
        with torch.inference_mode():
            return masks_at_original_size_torch(
                self.low_res_logits, self.frame_size, self.max_mask_bytes
            )[:, 0]

    @functools.cached_property
    def masks(self) -> np.ndarray:
        """bool [N, H, W] at the frame's size (one transfer)."""
        return _read_only(self.transfers.to_host(self.device_masks))

    @functools.cached_property
    def boxes(self) -> np.ndarray:
        """float32 [N, 4] (x0, y0, x1, y1) of each mask, inclusive pixels; zeros if empty (one
        transfer of the bounds, computed on the device)."""
        with torch.inference_mode():
            bounds = mask_bounds_torch(self.device_masks)[0].to(torch.float32)
        return _read_only(self.transfers.to_host(bounds))

    @functools.cached_property
    def host_low_res_logits(self) -> np.ndarray:
        """`low_res_logits` on the host, float32 [N, 1, 256, 256] (one transfer)."""
        return _read_only(self.transfers.to_host(self.low_res_logits))


def _read_only(array: np.ndarray) -> np.ndarray:
    """The array, not writable: on the CPU a transfer is a view of the tracker's tensor."""
    array.flags.writeable = False
    return array


# -- per-object state --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clicks:
    """The clicks of one add_prompt call, with those it added to (clear_old_points=False)."""

    points: np.ndarray  # float32 [P, 2], pixels of the original frame (box corners first)
    labels: np.ndarray  # int32 [P]: 0, 1, box corners 2, 3

    @property
    def nbytes(self) -> int:
        return int(self.points.nbytes + self.labels.nbytes)


@dataclass
class _PendingPrompt:
    """What add_prompt calls left for one object on the pending frame: clicks or a mask (host
    values, uploaded when the prompt is applied)."""

    rounds: list[_Clicks] = field(default_factory=list)  # one per call, replayed in order
    mask: np.ndarray | None = None  # bool [H, W]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.rounds) + (0 if self.mask is None else self.mask.nbytes)


@dataclass(frozen=True)
class _ObjectOutput:
    """One object's answer on one frame: row `row` of a batch of head outputs (device)."""

    heads: HeadOutputs  # low_res_masks: after hole filling (what SAM 2 answers and keeps)
    row: int
    prompted: bool  # from the user's prompt: memory encoded from the binarized mask
    # float32 [B, 1, 256, 256], the batch the memory encoder reads row `row` of when it is not
    # heads.low_res_masks: a tracked row's logits before hole filling (holes.py); this frame only
    unfilled_masks: torch.Tensor | None = None

    @property
    def low_res(self) -> torch.Tensor:
        """float32 [1, 256, 256] mask logits (NO_OBJ_SCORE where absent), holes filled."""
        return self.heads.low_res_masks[self.row]

    @property
    def memory_logits(self) -> _RowOf:
        """The logits [1, 256, 256] the memory encoder reads: as SAM2VideoPredictor, a tracked
        frame's before hole filling (track_step encodes them), a prompted frame's after it
        (propagate_in_video_preflight encodes the stored, filled masks)."""
        if self.unfilled_masks is not None:
            return _RowOf(self.unfilled_masks, self.row)
        return _RowOf(self.heads.low_res_masks, self.row)

    @property
    def pointer(self) -> torch.Tensor:
        """float32 [256], after the no-object blend."""
        return self.heads.object_pointers[self.row]

    @property
    def nbytes(self) -> int:
        h, i = self.heads, self.row
        return tensor_nbytes(
            h.low_res_masks[i],
            h.object_pointers[i],
            h.scores[i],
            h.object_score_logits[i],
            h.present[i],
        )


@dataclass
class _TrackedObject:
    """An object with a memory: its bank, SAMURAI state, and its output on the last frame."""

    bank: MemoryBank
    motion: ObjectMotionState | None  # SAMURAI only
    output: _ObjectOutput  # on the tracker's last frame
    clicks: _Clicks | None = None  # clicks it got on the last frame (None: tracked / mask)

    @property
    def nbytes(self) -> int:
        return (
            self.bank.nbytes
            + (self.motion.nbytes if self.motion is not None else 0)
            + self.output.nbytes
            + (self.clicks.nbytes if self.clicks is not None else 0)
        )


@dataclass
class _LastFrame:
    """What a correction of the last tracked frame needs of the frame itself."""

    frame_idx: int
    features: dict[str, torch.Tensor] | None  # image-encoder outputs on the device (raw embed)
    image: np.ndarray | None = None  # host uint8 [H, W, 3], only while `features` is None

    @property
    def nbytes(self) -> int:
        image = 0 if self.image is None else int(self.image.nbytes)
        return tensor_nbytes(*(self.features or {}).values()) + image


# -- decoding work -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _RowOf:
    """Row `row` of a batch tensor [B, ...] on the device (features several objects share)."""

    batch: torch.Tensor
    row: int


def _stack_rows(rows: Sequence[_RowOf]) -> torch.Tensor:
    """[N, ...] of N rows: the batch itself (no copy) when they are all its rows in order, else
    one concatenation on the device."""
    batch = rows[0].batch
    if all(r.batch is batch for r in rows) and [r.row for r in rows] == list(range(batch.shape[0])):
        return batch
    return torch.cat([r.batch[r.row : r.row + 1] for r in rows])


def _stack_outputs(outputs: Sequence[_ObjectOutput], name: str) -> torch.Tensor:
    """HeadOutputs field `name` of several objects' outputs as one batch (see `_stack_rows`)."""
    return _stack_rows([_RowOf(getattr(o.heads, name), o.row) for o in outputs])


@dataclass
class _Job:
    """How one object is decoded on the current frame.

    Tracked: no rounds, no mask (padding prompt, memory-conditioned features). Clicks: one
    decoder pass per round. Mask prompt: one pass for the pointer, the mask is the output.
    """

    embed: _RowOf  # the features [256, 64, 64] the decoder reads
    is_init: bool = False  # SAM 2's is_init_cond_frame (decoded without memory)
    rounds: Sequence[_Clicks] = ()
    mask: torch.Tensor | None = None  # float32 [1, 1, 1024, 1024] binary mask prompt
    mask_dense: torch.Tensor | None = None  # float32 [1, 256, 256], its decoder dense prompt
    previous_logits: torch.Tensor | None = None  # float32 [1, 256, 256] (a correction)

    @property
    def num_passes(self) -> int:
        return max(len(self.rounds), 1)


@dataclass
class _Row:
    """One decoder row (prompt values on the host, tensors on the device)."""

    obj_id: int
    embed: _RowOf  # [256, 64, 64]
    coords: np.ndarray  # float32 [P, 2], pixels of the 1024x1024 model input
    labels: np.ndarray  # int32 [P]
    mask_input: torch.Tensor | None  # float32 [1, 256, 256] dense prompt, or None
    multimask: bool
    motion_choice: bool = False  # SAMURAI chooses among the multimask candidates
    prompted: bool = True  # a user prompt (not a tracked frame)
    mask: torch.Tensor | None = None  # float32 [1, 1, 1024, 1024]: a mask prompt, the output


@dataclass
class _MotionStep:
    """SAMURAI state of one frame's tracked objects, changed on copies until committed."""

    frame_idx: int
    states: dict[int, ObjectMotionState] = field(default_factory=dict)
    motion_scores: dict[int, float | None] = field(default_factory=dict)


@dataclass
class _FrameWork:
    """One frame's work, filled phase by phase; the tracker changes only when it is committed.

    `decode` lists the objects decoded on this frame (tracked or prompted, in job order);
    `conditioned_ids` those that go through memory attention first (tracked, or corrected with
    clicks). The phases fill `features`, `conditioned`, `outputs` and `memories`.
    """

    frame_idx: int
    size: tuple[int, int]  # (H, W)
    decode: list[int]
    conditioned_ids: list[int]
    motion: _MotionStep
    tracking: bool  # a new frame (track), not a correction
    image: np.ndarray | None = None  # the new frame, host uint8 [H, W, 3] (track only)
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    conditioned: dict[int, _RowOf] = field(default_factory=dict)
    outputs: dict[int, _ObjectOutput] = field(default_factory=dict)
    memories: torch.Tensor | None = None  # float32 [len(outputs), 64, 64, 64]


class VideoTracker:
    """One video stream: objects, their memory banks, prompts pending for one frame."""

    def __init__(
        self,
        networks: VideoNetworks,
        metadata: Mapping,
        num_frames: int | None = None,
        preprocessing: str = "video",
        memory_storage: str = "bfloat16",
        samurai: SamuraiSettings | None = None,
        max_mask_bytes: int | None = None,
        device: str | torch.device | None = None,
        hole_filling: str = "reference",
    ) -> None:
        settings = metadata["settings"]
        if not settings.get("directly_add_no_mem_embed", True):
            raise NotImplementedError("models without directly_add_no_mem_embed are not supported")
        if num_frames is not None and int(num_frames) < 1:
            raise InputError(f"num_frames must be >= 1 or None, not {num_frames}")
        self.networks = networks
        self.device = resolve_device(networks.device if device is None else device)
        self.transfers = HostTransfers()
        self.num_frames = None if num_frames is None else int(num_frames)
        if preprocessing not in PREPROCESSINGS:
            raise ValueError(
                f"preprocessing must be one of {PREPROCESSINGS}, not {preprocessing!r}"
            )
        self.preprocessing = preprocessing
        self.memory_storage = memory_storage
        storage_dtype(memory_storage)  # ValueError now for an unknown storage
        self.samurai = samurai
        self.max_mask_bytes = max_mask_bytes  # masks of one answer: objects x H x W bytes
        self.memory_settings = MemorySettings.from_metadata(settings)
        self.head_settings = HeadSettings.from_metadata(metadata, self.device)
        self.mask_head = MaskPromptHead.from_metadata(metadata, self.device)
        self.presence_threshold = (
            SAM2_PRESENCE_THRESHOLD if samurai is None else float(samurai.min_obj_score_logits)
        )
        self.binarize_prompted = bool(settings.get("binarize_mask_from_pts_for_mem_enc", False))
        self.fill_hole_area = fill_hole_area(settings, hole_filling)  # 0: masks kept as decoded
        self.no_mem_embed = torch.as_tensor(
            np.asarray(metadata["constants"]["no_mem_embed"], dtype=np.float32).reshape(
                1, -1, 1, 1
            ),
            device=self.device,
        )
        self.objects: dict[int, _TrackedObject] = {}
        self.pending: dict[int, _PendingPrompt] = {}
        self.pending_frame: int | None = None
        self.last_frame: int = -1
        self.frame_size: tuple[int, int] | None = None  # (H, W) of the first frame
        self._last: _LastFrame | None = None

    @property
    def workspace(self) -> Workspace:
        """Reusable device memory for per-frame network inputs (this device, this thread)."""
        return shared_workspace(self.device)

    @property
    def obj_ids(self) -> list[int]:
        """Every object (tracked, or prompted for the pending frame), ascending."""
        return sorted(set(self.objects) | set(self.pending))

    def add_prompt(
        self,
        frame_idx: int,
        obj_id: int,
        points=None,
        labels=None,
        box=None,
        mask=None,
        clear_old_points: bool = True,
    ) -> None:
        """Prompt `obj_id` on frame `frame_idx`: the next frame to track, or the last tracked
        frame (a correction, applied by `correct`).

        points [P, 2] (x, y) with labels [P] (1 positive, 0 negative), and/or box
        (x0, y0, x1, y1), in pixels of the original frame: the box goes first, as two corner
        points labelled 2 and 3 (as SAM 2 does). Or mask: bool [H, W] at the frame's size, alone.
        The frame becomes a conditioning frame of the object; a new object starts there.
        """
        frame_idx = self._check_prompt_frame(frame_idx)
        obj_id = int(obj_id)
        pending = self.pending.get(obj_id)
        if mask is not None:
            prompt = self._mask_prompt(obj_id, frame_idx, pending, mask, points, labels, box)
        else:
            clicks = self._clicks(points, labels, box, clear_old_points)
            if pending is not None and pending.mask is not None:
                raise InputError(
                    f"object {obj_id} has a mask prompt pending for frame {frame_idx}: "
                    "a mask prompt cannot be combined with points or a box"
                )
            if not clear_old_points:
                clicks = self._after_earlier_clicks(obj_id, frame_idx, pending, clicks)
            prompt = _PendingPrompt(rounds=(pending.rounds if pending else []) + [clicks])
        self.pending[obj_id] = prompt
        self.pending_frame = frame_idx

    def _check_prompt_frame(self, frame_idx: int) -> int:
        frame_idx = int(frame_idx)
        if frame_idx < 0:
            raise InputError(f"frame index {frame_idx} is negative")
        if self.pending_frame is not None and frame_idx != self.pending_frame:
            raise InputError(
                f"prompts are pending for frame {self.pending_frame}: track or correct it (or "
                f"discard the prompts) before prompting frame {frame_idx}"
            )
        if frame_idx < self.last_frame:
            raise InputError(
                f"frame {frame_idx} is before the last tracked frame {self.last_frame}: prompts go "
                "to the next frame to track, or correct the last tracked frame (older frames "
                "are not kept by a stream)"
            )
        self._check_within_video(frame_idx)
        return frame_idx

    def _mask_prompt(
        self, obj_id: int, frame_idx: int, pending: _PendingPrompt | None, mask, points, labels, box
    ) -> _PendingPrompt:
        if points is not None or labels is not None or box is not None:
            raise InputError(
                f"object {obj_id}: a mask prompt cannot be combined with points or a box"
            )
        if pending is not None and pending.rounds:
            raise InputError(
                f"object {obj_id} has points or a box pending for frame {frame_idx}: "
                "a mask prompt cannot be combined with them"
            )
        self._mask_prompt_head()  # refuses mask prompts when the export cannot take them
        mask = check_prompt_mask(mask)
        if self.frame_size is not None:
            self.check_mask_size(obj_id, mask, self.frame_size)
        return _PendingPrompt(mask=mask.copy())

    @staticmethod
    def check_mask_size(obj_id: int, mask: np.ndarray, size: tuple[int, int]) -> None:
        """InputError unless the mask prompt [H, W] of `obj_id` has the frames' size (H, W)."""
        if tuple(mask.shape) != tuple(size):
            raise InputError(
                f"the mask prompt of object {obj_id} is {mask.shape[1]}x"
                f"{mask.shape[0]}; the video's frames are {size[1]}x{size[0]}"
            )

    @staticmethod
    def _clicks(points, labels, box, clear_old_points: bool) -> _Clicks:
        """Validated clicks of one call, box corners first."""
        if (points is None) != (labels is None):
            raise InputError("points and labels must be given together")
        if points is None and box is None:
            raise InputError("give points with labels, a box, or a mask")
        coords = (
            np.zeros((0, 2), np.float32)
            if points is None
            else (np.asarray(points, dtype=np.float32).reshape(-1, 2))
        )
        codes = np.zeros((0,), np.int32) if labels is None else (np.asarray(labels).reshape(-1))
        if coords.shape[0] != codes.shape[0]:
            raise InputError(f"{coords.shape[0]} points but {codes.shape[0]} labels")
        if not np.all(np.isin(codes, CLICK_LABELS)):
            raise InputError("point labels must be 0 (negative) or 1 (positive)")
        if not np.all(np.isfinite(coords)):
            raise InputError("points must be finite")
        codes = codes.astype(np.int32)
        if box is not None:
            if not clear_old_points:
                raise InputError("a box must come first: use clear_old_points=True with a box")
            corners = np.asarray(box, dtype=np.float32).reshape(-1)
            if corners.shape[0] != 4 or not np.all(np.isfinite(corners)):
                raise InputError(
                    f"a box is 4 finite numbers (x0, y0, x1, y1), got {corners.tolist()}"
                )
            coords = np.concatenate([corners.reshape(2, 2), coords])
            codes = np.concatenate([np.array(BOX_CORNER_LABELS, np.int32), codes])
        return _Clicks(coords, codes)

    def _after_earlier_clicks(
        self, obj_id: int, frame_idx: int, pending: _PendingPrompt | None, clicks: _Clicks
    ) -> _Clicks:
        """clear_old_points=False: the object's earlier clicks on this frame, then these."""
        earlier = pending.rounds[-1] if pending is not None and pending.rounds else None
        state = self.objects.get(obj_id)
        if earlier is None and frame_idx == self.last_frame and state is not None:
            earlier = state.clicks
        if earlier is None:
            return clicks
        return _Clicks(
            np.concatenate([earlier.points, clicks.points]),
            np.concatenate([earlier.labels, clicks.labels]),
        )

    def discard_pending(self) -> None:
        """Drop every prompt not yet applied by track / correct."""
        self.pending.clear()
        self.pending_frame = None

    def remove_object(self, obj_id: int) -> None:
        """Forget an object (its memory and pending prompts); InputError if unknown."""
        obj_id = int(obj_id)
        if obj_id not in self.objects and obj_id not in self.pending:
            raise InputError(
                f"unknown object id {obj_id}; the sequence has objects {self.obj_ids or 'none'}"
            )
        self.objects.pop(obj_id, None)
        self.pending.pop(obj_id, None)
        if not self.pending:
            self.pending_frame = None

    # -- state size ---------------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Bytes of everything held for the sequence: banks, SAMURAI state, last-frame cache,
        pending prompts."""
        return int(
            sum(state.nbytes for state in self.objects.values())
            + sum(prompt.nbytes for prompt in self.pending.values())
            + (self._last.nbytes if self._last is not None else 0)
        )

    def conditioning_frames(self, obj_id: int) -> list[int]:
        """Frames the object was prompted (or corrected) on and still remembers, ascending."""
        state = self.objects.get(int(obj_id))
        if state is None:
            raise InputError(f"unknown object id {obj_id}")
        return sorted(state.bank.cond)

    @property
    def counts(self) -> dict[int, dict[str, int]]:
        """Per object (ascending id): entries of its bank (+ SAMURAI records)."""
        counts = {}
        for obj_id in sorted(self.objects):
            state = self.objects[obj_id]
            counts[obj_id] = dict(state.bank.counts)
            if state.motion is not None:
                counts[obj_id]["motion_records"] = len(state.motion.records)
        return counts

    # -- tracking -----------------------------------------------------------------------------

    @torch.inference_mode()
    def track(self, frame_idx: int, image: np.ndarray) -> FrameResult:
        """Segment every object on the new frame `frame_idx` (RGB uint8 [H, W, 3]), applying
        the prompts pending for it, and update memory."""
        work = self.plan_track(frame_idx, image)
        assert work.image is not None  # plan_track keeps the checked frame
        if not work.decode:  # nothing to track: no network call
            self._commit_frame(_LastFrame(work.frame_idx, None, work.image.copy()), work.size)
            return self._empty_result(work.frame_idx, work.size)
        work.features = self._encode_frame(work.image)
        return self._run(work)

    def plan_track(self, frame_idx: int, image: np.ndarray) -> _FrameWork:
        """The work of tracking `image` (RGB uint8 [H, W, 3]) as the new frame `frame_idx`,
        checked (InputError says why it cannot be tracked) and with no phase run yet; the
        tracker does not change. `decode` is empty when there is nothing to track.
        python_backend/video/batching.py runs the phases of several trackers' plans together."""
        frame_idx = self.check_new_frame(frame_idx)
        image = check_frame(image)
        size = (int(image.shape[0]), int(image.shape[1]))
        self.check_frame_size(frame_idx, size)
        self.check_answer_size(size)
        for obj_id, prompt in self.pending.items():
            if prompt.mask is not None:
                self.check_mask_size(obj_id, prompt.mask, size)
        obj_ids = self.obj_ids
        prompted = [o for o in obj_ids if o in self.pending]
        tracked = [o for o in obj_ids if o not in self.pending]
        motion = _MotionStep(frame_idx)
        if self.samurai is not None:
            motion.states = {o: self._motion_state(o).copy() for o in tracked}
        return _FrameWork(
            frame_idx, size, prompted + tracked, tracked, motion, tracking=True, image=image
        )

    @torch.inference_mode()
    def correct(self, frame_idx: int) -> FrameResult:
        """Apply the prompts pending for the last tracked frame `frame_idx` (see the module
        docstring); results for every object on that frame."""
        frame_idx = int(frame_idx)
        if self._last is None:
            raise InputError("no frame was tracked yet: there is nothing to correct")
        if frame_idx != self.last_frame:
            raise InputError(
                f"only the last tracked frame ({self.last_frame}) can be corrected, "
                f"not frame {frame_idx}"
            )
        if not self.pending or self.pending_frame != frame_idx:
            raise InputError(
                f"no prompts are pending for frame {frame_idx}: add_prompt"
                f"({frame_idx}, ...) before correcting it"
            )
        size = self._frame_size()
        self.check_answer_size(size)
        prompted = sorted(self.pending)
        corrected = [o for o in prompted if o in self.objects and self.pending[o].mask is None]
        work = _FrameWork(
            frame_idx, size, prompted, corrected, _MotionStep(frame_idx), tracking=False
        )
        work.features = self._last_features()
        return self._run(work)

    def _run(self, work: _FrameWork) -> FrameResult:
        """The phases after the frame's features: condition, decode, encode memories, then
        `_finish` (host scalars, commit, answer)."""
        work.conditioned = self._condition(work.conditioned_ids, work.frame_idx, work.features)
        work.outputs = self._decode_jobs(self._jobs(work), work.features, work.size, work.motion)
        work.memories = self._encode_memories(work.features, work.outputs)
        return self._finish(work)

    def _finish(self, work: _FrameWork) -> FrameResult:
        """One transfer of every object's scalars, the commit, and the frame's answer."""
        obj_ids = sorted(set(self.objects) | set(work.outputs))
        outputs = [
            work.outputs[o] if o in work.outputs else self.objects[o].output for o in obj_ids
        ]
        scalars = self._host_scalars(outputs)
        self._commit(work, dict(zip(obj_ids, scalars)))
        return FrameResult(
            frame_idx=work.frame_idx,
            obj_ids=obj_ids,
            frame_size=work.size,
            low_res_logits=_stack_outputs(outputs, "low_res_masks"),
            scores=scalars[:, 0].copy(),
            object_score_logits=scalars[:, 1].copy(),
            present=scalars[:, 2] > 0,
            transfers=self.transfers,
            max_mask_bytes=self.max_mask_bytes,
        )

    # -- checks (also run by the server on a whole request before it changes the tracker) -----

    def check_new_frame(self, frame_idx: int) -> int:
        """`frame_idx` as int if it may be tracked next; InputError saying why not."""
        frame_idx = int(frame_idx)
        if frame_idx <= self.last_frame:
            raise InputError(
                f"frame {frame_idx} is not after the last tracked frame {self.last_frame}: "
                "frames must come in increasing order (prompts for the last tracked frame "
                "correct it)"
            )
        self._check_within_video(frame_idx)
        if self.pending and self.pending_frame != frame_idx:
            what = (
                " (a correction: call correct())" if self.pending_frame == self.last_frame else ""
            )
            raise InputError(
                f"prompts are pending for frame {self.pending_frame}{what}, not {frame_idx}"
            )
        return frame_idx

    def check_frame_size(self, frame_idx: int, size: tuple[int, int]) -> None:
        """InputError unless a frame of `size` (H, W) has the size of the sequence's frames."""
        if self.frame_size is not None and size != self.frame_size:
            height, width = self.frame_size
            raise InputError(
                f"frame {frame_idx} is {size[1]}x{size[0]} but this sequence's frames "
                f"are {width}x{height}: every frame must have the first frame's size"
            )

    def check_answer_size(self, size: tuple[int, int], num_objects: int | None = None) -> None:
        """InputError when the masks of `num_objects` objects (default: every object tracked or
        prompted now) on a frame of `size` (H, W) would exceed `max_mask_bytes`."""
        if self.max_mask_bytes is not None:
            count = len(self.obj_ids) if num_objects is None else num_objects
            shape = (count, *size)
            check_mask_budget(shape, self.max_mask_bytes, unit="objects")

    def _check_within_video(self, frame_idx: int) -> None:
        if self.num_frames is not None and frame_idx >= self.num_frames:
            raise InputError(f"frame {frame_idx} is beyond num_frames={self.num_frames}")

    # -- phase 1: encode the frame --------------------------------------------------------------

    def _encode_frame(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Image-encoder outputs [1, ...] of a host frame, on the device."""
        encoded = self.networks.encode(self.frame_pixels(image))
        return {name: encoded[name] for name in FEATURE_NAMES}

    def frame_pixels(self, image: np.ndarray) -> torch.Tensor:
        """The image encoder's input float32 [1, 3, 1024, 1024] of a host frame, on the device
        (the sequence's preprocessing)."""
        return preprocess_frame(image, self.preprocessing, self.device)

    def _last_features(self) -> dict[str, torch.Tensor]:
        """The last frame's features (encoded now if it was tracked with no object)."""
        last = self._last
        if last is None:
            raise InputError("no frame was tracked yet")
        if last.features is not None:
            return last.features
        if last.image is None:  # restored from a snapshot, which leaves the features out
            raise InputError(
                f"frame {last.frame_idx} cannot be corrected: the sequence was restored from a "
                "snapshot taken on it, and snapshots leave that frame's features out; correct "
                "a frame tracked after the restore"
            )
        return self._encode_frame(last.image)

    def _mask_prompt_head(self) -> MaskPromptHead:
        if self.mask_head is None:
            raise InputError(
                "this model's export cannot take mask prompts (its metadata has no "
                "mask_downsample, or the model decodes mask prompts with SAM)"
            )
        return self.mask_head

    def _frame_size(self) -> tuple[int, int]:
        """(H, W) of the video's frames, fixed by the first tracked frame."""
        if self.frame_size is None:
            raise InputError("no frame was tracked yet")
        return self.frame_size

    def _samurai_settings(self) -> SamuraiSettings:
        """The sequence's SAMURAI settings (SAMURAI code paths only)."""
        if self.samurai is None:
            raise RuntimeError("SAMURAI mode is off for this sequence")
        return self.samurai

    def _motion_state(self, obj_id: int) -> ObjectMotionState:
        """The SAMURAI motion state of a tracked object (SAMURAI mode only)."""
        motion = self.objects[obj_id].motion
        if motion is None:
            raise RuntimeError(f"object {obj_id} has no motion state: SAMURAI mode is off")
        return motion

    # -- phase 2: condition tracked objects on their memories --------------------------------

    def _selection(self, obj_id: int, frame_idx: int) -> Selection:
        state = self.objects[obj_id]
        recent = None
        if self.samurai is not None:
            recent = select_memory_frames(
                self._motion_state(obj_id).records,
                frame_idx,
                self.samurai,
                cond_frames=set(state.bank.cond),
            )
        return state.bank.select(frame_idx, self.num_frames, recent)

    def _condition(
        self, obj_ids: Sequence[int], frame_idx: int, features: Mapping[str, torch.Tensor]
    ) -> dict[int, _RowOf]:
        """Memory-conditioned features [256, 64, 64] per object (rows of the attention
        outputs): one memory-attention batch per distinct (memories, pointers) signature."""
        conditioned: dict[int, _RowOf] = {}
        for group in self.attention_groups(obj_ids, frame_idx).values():
            with self.workspace.scope():
                inputs = self.attention_inputs(features, [selection for _, selection in group])
                batch = self.networks.attend(inputs)["conditioned_features"]
            conditioned.update((o, _RowOf(batch, g)) for g, (o, _) in enumerate(group))
        return conditioned

    def attention_groups(
        self, obj_ids: Sequence[int], frame_idx: int
    ) -> dict[tuple[int, int], list[tuple[int, Selection]]]:
        """(object id, memory selection) of `obj_ids` on frame `frame_idx`, grouped by the
        selection's (memories, pointers) signature: one memory-attention batch each."""
        groups: dict[tuple[int, int], list[tuple[int, Selection]]] = {}
        for obj_id in obj_ids:
            selection = self._selection(obj_id, frame_idx)
            groups.setdefault(selection.signature, []).append((obj_id, selection))
        return groups

    def attention_inputs(
        self, features: Mapping[str, torch.Tensor], selections: Sequence[Selection]
    ) -> dict[str, torch.Tensor]:
        """Memory-attention inputs of G objects with equal (M, P) on one frame: the frame's
        features expanded (not copied) to [G, 256, 64, 64], memories and pointers stacked (the
        memories into the workspace: call inside a `workspace.scope()` that also holds the
        network call)."""
        g = len(selections)
        memories = self.workspace.take(memory_features_shape(selections), torch.float32)
        return {
            "current_features": features["image_embed"].expand(g, -1, -1, -1),
            "memory_features": stack_memory_features(selections, out=memories),
            "memory_temporal_positions": self._upload(
                np.stack([s.memory_temporal_positions for s in selections])
            ),
            "object_pointers": stack_object_pointers(selections, self.device),
            "object_pointer_positions": self._upload(
                np.stack([s.object_pointer_positions for s in selections])
            ),
        }

    # -- phase 3: decode ------------------------------------------------------------------------

    def _jobs(self, work: _FrameWork) -> dict[int, _Job]:
        """How each object of the frame is decoded: pending prompts first (see `_prompt_jobs`),
        then the tracked objects from their memory-conditioned features."""
        prompted = [o for o in work.decode if o in self.pending]
        jobs = self._prompt_jobs(prompted, work.features, work.conditioned)
        jobs.update(
            (o, _Job(embed=work.conditioned[o])) for o in work.decode if o not in self.pending
        )
        return jobs

    def _prompt_jobs(
        self,
        obj_ids: Sequence[int],
        features: Mapping[str, torch.Tensor],
        conditioned: Mapping[int, _RowOf],
    ) -> dict[int, _Job]:
        """Jobs for the pending prompts of `obj_ids`. Clicks correcting an object in
        `conditioned` read its memory-conditioned features and its previous logits; other
        clicks are decoded without memory (initial conditioning frame); masks are the output.
        Mask prompts are uploaded here, once."""
        image_embed = features["image_embed"]
        raw = _RowOf(image_embed, 0)  # mask prompts share the raw embedding
        no_mem: _RowOf | None = None  # shared by every object decoded without memory
        jobs = {}
        for obj_id in obj_ids:
            prompt = self.pending[obj_id]
            if prompt.mask is not None:  # _use_mask_as_output reads the raw features
                mask = prompt_mask_input(prompt.mask, self.device)
                jobs[obj_id] = _Job(
                    embed=raw, mask=mask, mask_dense=self._mask_prompt_head().decoder_input(mask)[0]
                )
            elif obj_id in conditioned:
                jobs[obj_id] = _Job(
                    embed=conditioned[obj_id],
                    rounds=prompt.rounds,
                    previous_logits=self.objects[obj_id].output.low_res,
                )
            else:
                if no_mem is None:
                    no_mem = _RowOf(image_embed + self.no_mem_embed, 0)
                jobs[obj_id] = _Job(embed=no_mem, is_init=True, rounds=prompt.rounds)
        return jobs

    def _decode_jobs(
        self,
        jobs: Mapping[int, _Job],
        features: Mapping[str, torch.Tensor],
        size: tuple[int, int],
        motion: _MotionStep,
    ) -> dict[int, _ObjectOutput]:
        """Every object's output: pass k decodes round k of every job that has one (pass 0:
        all objects), each round reading the previous round's logits as mask input."""
        outputs: dict[int, _ObjectOutput] = {}
        for k in range(max((job.num_passes for job in jobs.values()), default=0)):
            rows = [
                self._row(obj_id, job, k, outputs.get(obj_id), size)
                for obj_id, job in jobs.items()
                if k < job.num_passes
            ]
            outputs.update(self._decode_rows(rows, features, motion))
        return outputs

    def _row(
        self, obj_id: int, job: _Job, k: int, previous: _ObjectOutput | None, size: tuple[int, int]
    ) -> _Row:
        if job.mask is not None:
            return _Row(
                obj_id, job.embed, PAD_COORDS, PAD_LABELS, job.mask_dense, False, mask=job.mask
            )
        if not job.rounds:  # tracked: SAM 2's padding prompt, no clicks
            multimask = self.head_settings.use_multimask(False, 0)
            return _Row(
                obj_id,
                job.embed,
                PAD_COORDS,
                PAD_LABELS,
                None,
                multimask,
                motion_choice=multimask and self.samurai is not None,
                prompted=False,
            )
        clicks = job.rounds[k]
        logits = previous.low_res if previous is not None else job.previous_logits
        mask_input = None if logits is None else clamp_low_res_torch(logits)
        multimask = self.head_settings.use_multimask(job.is_init, int(clicks.labels.shape[0]))
        return _Row(
            obj_id,
            job.embed,
            self._model_points(clicks, size),
            clicks.labels,
            mask_input,
            multimask,
            motion_choice=(
                multimask and self.samurai is not None and self.samurai.filter_on_click_prompts
            ),
        )

    def _model_points(self, clicks: _Clicks, size: tuple[int, int]) -> np.ndarray:
        """Pixels of the original frame -> pixels of the 1024x1024 model input (float32)."""
        height, width = size
        scale = np.array([width, height], dtype=np.float32)
        return (clicks.points / scale * np.float32(IMAGE_SIZE)).astype(np.float32)

    def _decode_rows(
        self, rows: Sequence[_Row], features: Mapping[str, torch.Tensor], motion: _MotionStep
    ) -> dict[int, _ObjectOutput]:
        """One decoder batch per prompt-point count; heads chosen per row on the device."""
        by_points: dict[int, list[_Row]] = {}
        for row in rows:
            by_points.setdefault(row.coords.shape[0], []).append(row)
        outputs: dict[int, _ObjectOutput] = {}
        for group in by_points.values():
            decoded = self.networks.decode(self.decoder_inputs(group, features))
            outputs.update(self.decoded_outputs(group, decoded, motion))
        return outputs

    def decoded_outputs(
        self, rows: Sequence[_Row], decoded: Mapping[str, torch.Tensor], motion: _MotionStep
    ) -> dict[int, _ObjectOutput]:
        """The objects' outputs of one decoder batch of `rows` (its outputs `decoded`, one row
        each): heads chosen per row on the device (SAMURAI: by motion, noted in `motion`)."""
        outputs: dict[int, _ObjectOutput] = {}
        tokens = self._motion_tokens(rows, decoded, motion)
        heads = choose_outputs(
            decoded,
            self._upload(np.array([r.multimask for r in rows])),
            self.head_settings,
            self.presence_threshold,
            tokens,
        )
        filled = self._filled(heads)
        for i, row in enumerate(rows):
            unfilled = None if row.prompted or filled is heads else heads.low_res_masks
            outputs[row.obj_id] = _ObjectOutput(filled, i, row.prompted, unfilled)
        outputs.update(self._mask_outputs(rows, heads))
        return outputs

    def _filled(self, heads: HeadOutputs) -> HeadOutputs:
        """`heads` with SAM 2's hole filling applied to its low-res logits (holes.py), or
        `heads` itself when hole filling is off."""
        if self.fill_hole_area == 0:
            return heads
        return replace(heads, low_res_masks=fill_holes(heads.low_res_masks, self.fill_hole_area))

    def decoder_inputs(
        self, rows: Sequence[_Row], features: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Mask-decoder inputs of one call for `rows`. Rows sharing one embedding send it once (one
        image); otherwise the embeddings are stacked (the attention output itself when the rows
        are its rows in order) and the high-res features expanded (not copied) to the rows."""
        n = len(rows)
        first = rows[0].embed
        shared = all(r.embed.batch is first.batch and r.embed.row == first.row for r in rows)
        if shared:
            embeds = first.batch[first.row : first.row + 1]
            high_res = {name: features[name] for name in FEATURE_NAMES[1:]}
        else:
            embeds = _stack_rows([r.embed for r in rows])
            high_res = {name: features[name].expand(n, -1, -1, -1) for name in FEATURE_NAMES[1:]}
        size = (LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE)
        if any(r.mask_input is not None for r in rows):
            no_mask = torch.zeros((1, *size), dtype=torch.float32, device=self.device)
            mask_input = torch.stack(
                [no_mask if r.mask_input is None else r.mask_input for r in rows]
            )
        else:
            mask_input = torch.zeros((n, 1, *size), dtype=torch.float32, device=self.device)
        return {
            "image_embed": embeds,
            **high_res,
            "point_coords": self._upload(np.stack([r.coords for r in rows]), np.float32),
            "point_labels": self._upload(np.stack([r.labels for r in rows]), np.int32),
            "mask_input": mask_input,
            "has_mask_input": self._upload(
                np.array([r.mask_input is not None for r in rows]), np.float32
            ),
        }

    def _motion_tokens(
        self, rows: Sequence[_Row], decoded: Mapping[str, torch.Tensor], motion: _MotionStep
    ) -> torch.Tensor | None:
        """SAMURAI's token (1-3) per row choosing by motion (0 elsewhere), int64 on the device;
        steps the copies of the objects' motion state (`_step_state`) and notes each choice's
        motion score.

        The Kalman filter runs on the host; the candidates' boxes are measured on the device
        (`_candidate_boxes`) and only they and the predicted IoUs come over."""
        chosen = [i for i, row in enumerate(rows) if row.motion_choice]
        if not chosen:
            return None
        states = [self._step_state(rows[i].obj_id, motion) for i in chosen]
        boxes, found, ious = self._candidate_boxes(decoded, chosen, states)
        tokens = np.zeros((len(rows),), np.int64)
        for j, i in enumerate(chosen):
            obj_id = rows[i].obj_id
            index, motion_score = choose_box(
                states[j],
                [box if present else None for box, present in zip(boxes[j], found[j])],
                ious[j],
                self._samurai_settings(),
            )
            tokens[i] = 1 + index
            motion.motion_scores[obj_id] = motion_score
        return self._upload(tokens)

    def _step_state(self, obj_id: int, motion: _MotionStep) -> ObjectMotionState:
        """The copy of `obj_id`'s motion state this frame steps: made on its first step (a
        fresh state for an object prompted for the first time); committed by `_store_motion`."""
        state = motion.states.get(obj_id)
        if state is None:
            tracked = self.objects.get(obj_id)
            state = ObjectMotionState() if tracked is None else self._motion_state(obj_id).copy()
            motion.states[obj_id] = state
        return state

    def _candidate_boxes(
        self,
        decoded: Mapping[str, torch.Tensor],
        chosen: list[int],
        states: Sequence[ObjectMotionState],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SAMURAI's boxes of the candidates (tokens 1-3) of the decoder rows `chosen` [R]: the
        inclusive pixel bounds of each candidate's logits > 0 upsampled to the 1024x1024 model
        frame (bilinear, as `_forward_sam_heads` measures them), after the absent-object
        substitution (logit <= presence threshold: every candidate empty).

        Two transfers whatever R: (low-res bounds, their presence, predicted IoUs) float32
        [R, 3 * 6], then the upsampled bounds of the non-empty candidates whose boxes the rows'
        filter steps read (`boxes_read`: one per row until its filter is stable), measured on
        the device (`upsampled_mask_bounds_torch`). Returns host arrays: boxes float64
        [R, 3, 4], found bool [R, 3] (False: empty or not read), predicted IoUs float32
        [R, 3]."""
        masks = decoded["masks"]  # [B, 4, 256, 256]
        count, tokens = len(chosen), masks.shape[1]
        if chosen == list(range(masks.shape[0])):
            positive = masks[:, 1:] > 0
            ious = decoded["iou_scores"][:, 1:]
            score_logits = decoded["object_score_logits"].reshape(-1)
        else:
            positive = masks[chosen, 1:] > 0
            ious = decoded["iou_scores"][chosen, 1:]
            score_logits = decoded["object_score_logits"].reshape(-1)[chosen]
        present = (score_logits > self.presence_threshold).repeat_interleave(NUM_CANDIDATES)
        size = (LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE)
        low_res, low_res_found = mask_bounds_torch(positive.reshape(-1, *size))
        packed = torch.cat(
            [
                low_res.to(torch.float32).reshape(count, NUM_CANDIDATES * 4),
                (low_res_found & present).to(torch.float32).reshape(count, NUM_CANDIDATES),
                ious.to(torch.float32),
            ],
            dim=1,
        )
        host = self.transfers.to_host(packed)
        host_ious = host[:, NUM_CANDIDATES * 5 :].astype(np.float32)
        settings = self._samurai_settings()
        read = np.stack([boxes_read(s, i, settings) for s, i in zip(states, host_ious)])
        # candidate k of chosen row j is row tokens * chosen[j] + 1 + k of the flat logits
        rows = (tokens * np.asarray(chosen)[:, None] + 1 + np.arange(NUM_CANDIDATES)).reshape(-1)
        bounds, found = upsampled_mask_bounds_torch(
            masks.flatten(0, 1),
            host[:, : NUM_CANDIDATES * 4].reshape(-1, 4).astype(np.int64),
            (host[:, NUM_CANDIDATES * 4 : NUM_CANDIDATES * 5] > 0).reshape(-1) & read.reshape(-1),
            IMAGE_SIZE // LOW_RES_MASK_SIZE,
            rows,
        )
        upsampled = self.transfers.to_host(torch.cat([bounds, found[:, None].to(bounds.dtype)], 1))
        return (
            upsampled[:, :4].astype(np.float64).reshape(count, NUM_CANDIDATES, 4),
            (upsampled[:, 4] > 0).reshape(count, NUM_CANDIDATES),
            host_ious,
        )

    def _mask_outputs(self, rows: Sequence[_Row], heads: HeadOutputs) -> dict[int, _ObjectOutput]:
        """The outputs of the mask prompts among `rows` (one batch): the masks themselves,
        with the pointers the decoder gave them."""
        index = [i for i, row in enumerate(rows) if row.mask is not None]
        masks = [row.mask for row in rows if row.mask is not None]
        if not masks:
            return {}
        mask_heads = self._filled(
            self._mask_prompt_head().outputs(
                torch.cat(masks),
                heads.object_pointers[index],
                self.head_settings,
                self.presence_threshold,
            )
        )
        return {rows[i].obj_id: _ObjectOutput(mask_heads, j, True) for j, i in enumerate(index)}

    # -- phase 4: encode memories -----------------------------------------------------------

    def _encode_memories(
        self, features: Mapping[str, torch.Tensor], outputs: Mapping[int, _ObjectOutput]
    ) -> torch.Tensor:
        """This frame's memories float32 [N, 64, 64, 64] of the objects in `outputs` (in its
        order), one batch (each bank stores a converted copy of its row)."""
        return self.networks.encode_memory(self.memory_encoder_inputs(features, outputs))[
            "memory_features"
        ]

    def memory_encoder_inputs(
        self, features: Mapping[str, torch.Tensor], outputs: Mapping[int, _ObjectOutput]
    ) -> dict[str, torch.Tensor]:
        """Memory-encoder inputs of the objects in `outputs` (in its order) on one frame: the
        frame's features expanded (not copied) to [N, 256, 64, 64], the outputs stacked."""
        decoded = list(outputs.values())
        return {
            "image_embed": features["image_embed"].expand(len(decoded), -1, -1, -1),
            "mask_logits": _stack_rows([o.memory_logits for o in decoded]),
            "object_score_logits": _stack_outputs(decoded, "object_score_logits"),
            "is_mask_from_points": self._upload(
                np.array([o.prompted and self.binarize_prompted for o in decoded]), np.float32
            ),
        }

    # -- phase 5: host values, commit ----------------------------------------------------------

    def _host_scalars(self, outputs: Sequence[_ObjectOutput]) -> np.ndarray:
        """float32 [N, 3] (score, object-score logit, presence 0 / 1) of the objects' outputs,
        packed on the device and moved in one transfer."""
        packed = torch.stack(
            [
                _stack_outputs(outputs, "scores"),
                _stack_outputs(outputs, "object_score_logits").reshape(-1),
                _stack_outputs(outputs, "present").to(torch.float32),
            ],
            dim=1,
        )
        return self.transfers.to_host(packed)

    def _commit(self, work: _FrameWork, scalars: Mapping[int, np.ndarray]) -> None:
        """Write the frame's outputs and memories into the objects' state, then the frame."""
        assert work.memories is not None
        motion = work.motion
        for i, (obj_id, output) in enumerate(work.outputs.items()):
            score, score_logit, _ = (float(v) for v in scalars[obj_id])
            self._store(
                obj_id, work.frame_idx, output, work.memories[i], score, score_logit, motion
            )
        self._commit_frame(_LastFrame(work.frame_idx, work.features), work.size)

    def _store(
        self,
        obj_id: int,
        frame_idx: int,
        output: _ObjectOutput,
        memory: torch.Tensor,
        score: float,
        object_score_logit: float,
        motion: _MotionStep | None,
    ) -> None:
        """Write one object's output on frame `frame_idx` into its state (creating it); `score`
        and `object_score_logit` are the host copies of the output's."""
        prompted = obj_id in self.pending
        state = self.objects.get(obj_id)
        if state is None:
            state = self.objects[obj_id] = _TrackedObject(
                bank=MemoryBank(
                    self.memory_settings,
                    self.memory_storage,
                    external_recent=self.samurai is not None,
                ),
                motion=ObjectMotionState() if self.samurai is not None else None,
                output=output,
            )
        state.bank.add(frame_idx, memory, output.pointer, object_score_logit, prompted)
        state.output = replace(output, unfilled_masks=None)  # kept: what later frames read
        prompt = self.pending.get(obj_id)
        state.clicks = prompt.rounds[-1] if prompt is not None and prompt.rounds else None
        if self.samurai is not None:
            self._store_motion(
                state, obj_id, frame_idx, score, object_score_logit, prompted, motion
            )

    def _store_motion(
        self,
        state: _TrackedObject,
        obj_id: int,
        frame_idx: int,
        score: float,
        object_score_logit: float,
        prompted: bool,
        motion: _MotionStep | None,
    ) -> None:
        """Commit the object's motion state of this frame: the stepped copy where the filter
        stepped (tracked, or a single-click prompt / correction: SAMURAI steps on every
        multimask call), else the state as it was (a box, multi-click or mask prompt leaves it
        alone: SAMURAI never restarts it, unless `restart_filter_on_prompt`). A tracked frame
        gets a record; a prompted frame is a conditioning frame and has none."""
        stepped = None if motion is None else motion.states.get(obj_id)
        if stepped is not None:
            state.motion = stepped
        motion_state = self._motion_state(obj_id)
        if prompted:
            if self._samurai_settings().restart_filter_on_prompt:
                motion_state.restart()
            motion_state.records.pop(frame_idx, None)
        else:
            motion_score = None if motion is None else motion.motion_scores.get(obj_id)
            motion_state.add_record(FrameRecord(frame_idx, score, object_score_logit, motion_score))
        keep = reachable_memory_frames(
            motion_state.records,
            frame_idx,
            self._samurai_settings(),
            cond_frames=set(state.bank.cond),
        )
        state.bank.retain_memories(keep)
        motion_state.prune(keep)

    def _commit_frame(self, last: _LastFrame, size: tuple[int, int]) -> None:
        self._last = last
        self.last_frame = last.frame_idx
        self.frame_size = size
        self.discard_pending()

    def _empty_result(self, frame_idx: int, size: tuple[int, int]) -> FrameResult:
        """The answer for a frame tracked with no object (nothing moves to the host)."""
        empty = np.zeros((0,), np.float32)
        return FrameResult(
            frame_idx=frame_idx,
            obj_ids=[],
            frame_size=size,
            low_res_logits=torch.zeros(
                (0, 1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE),
                dtype=torch.float32,
                device=self.device,
            ),
            scores=empty,
            object_score_logits=empty.copy(),
            present=np.zeros((0,), bool),
            transfers=self.transfers,
            max_mask_bytes=self.max_mask_bytes,
        )

    def _upload(self, array: np.ndarray, dtype: type | None = None) -> torch.Tensor:
        """A host array (prompt values, positions, flags) as a tensor on the device."""
        return upload(array if dtype is None else array.astype(dtype, copy=False), self.device)

    # -- snapshots (python_backend/video/snapshots.py) ----------------------------------------

    def snapshot(
        self,
        model: Mapping[str, str],
        sequence: Mapping | None = None,
        max_bytes: int | None = None,
    ) -> bytes:
        """The sequence's state as versioned snapshot bytes (`snapshots.snapshot_tracker`):
        `model` is `snapshots.model_identity` of this tracker's export; SnapshotError beyond
        `max_bytes`. The tracker is not changed."""
        from sam2_triton.python_backend.video.snapshots import snapshot_tracker

        return snapshot_tracker(self, model, sequence, max_bytes)

    @classmethod
    def from_snapshot(
        cls,
        data: bytes,
        networks: VideoNetworks,
        metadata: Mapping,
        precision: str = "fp32",
        max_bytes: int | None = None,
        **settings,
    ) -> VideoTracker:
        """A tracker that goes on exactly where the snapshotted one stood; `settings` are the
        restoring server's (memory_storage, max_mask_bytes, device). SnapshotError when the
        snapshot is refused (`snapshots.read_snapshot`)."""
        from sam2_triton.python_backend.video.snapshots import (
            model_identity,
            read_snapshot,
            restore_tracker,
        )

        storage = settings.get("memory_storage", "bfloat16")
        snapshot = read_snapshot(data, model_identity(metadata, precision), storage, max_bytes)
        tracker = cls(
            networks,
            metadata,
            num_frames=snapshot.num_frames,
            samurai=snapshot.samurai,
            preprocessing=snapshot.state["preprocessing"],
            **settings,
        )
        restore_tracker(tracker, snapshot)
        return tracker
