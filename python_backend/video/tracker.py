"""Streaming SAM 2 (and SAMURAI) video object tracking over the four exported graphs.

`VideoTracker` does, frame by frame, what `SAM2VideoPredictor` does over a whole video, with the
networks behind `VideoNetworks` (ONNX Runtime in tests, Triton BLS in the server):

    tracker = VideoTracker(networks, metadata, num_frames=None)   # samurai=SamuraiSettings(...)
    tracker.add_prompt(0, obj_id=1, points=[[x, y]], labels=[1])   # or box=, or mask= bool [H, W]
    result = tracker.track(0, frame0)          # RGB uint8 [H, W, 3] -> FrameResult
    tracker.add_prompt(0, obj_id=1, points=[[x, y]], labels=[0])
    result = tracker.correct(0)                # only the last tracked frame can be corrected

Coordinates are pixels of the frame; every frame must have the first frame's size; results list
objects by ascending id (masks bool [N, H, W]); user mistakes raise `InputError`. `nbytes` (the
state) stays constant on a long video.

Design notes (one frame step by step, corrections, SAMURAI mode, pointer positions, differences
from the offline predictor): docs/video-tracker.md
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sam2_triton.export.contract import IMAGE_SIZE, LOW_RES_MASK_SIZE
from sam2_triton.python_backend.boxes import mask_bounds
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.masks import (
    check_mask_budget,
    clamp_low_res,
    masks_at_original_size,
)
from sam2_triton.python_backend.samurai import (
    FrameRecord,
    ObjectMotionState,
    SamuraiSettings,
    choose_box,
    reachable_memory_frames,
    select_memory_frames,
)
from sam2_triton.python_backend.video.frames import (
    check_frame,
    check_prompt_mask,
    preprocess_frame,
    prompt_mask_input,
)
from sam2_triton.python_backend.video.heads import (
    SAM2_PRESENCE_THRESHOLD,
    HeadSettings,
    MaskPromptHead,
    choose_outputs,
    upscaled_mask_box,
)
from sam2_triton.python_backend.video.memory_bank import (
    MemoryBank,
    MemorySettings,
    Selection,
    stack_memory_features,
)
from sam2_triton.python_backend.video.networks import VideoNetworks
from sam2_triton.wire import BOX_CORNER_LABELS, CLICK_LABELS, PADDING_LABEL

PAD_COORDS = np.zeros((1, 2), np.float32)  # SAM 2's prompt without clicks: (0, 0) as padding
PAD_LABELS = np.full((1,), PADDING_LABEL, np.int32)
FEATURE_NAMES = ("image_embed", "high_res_feats_0", "high_res_feats_1")


@dataclass
class FrameResult:
    """Tracking answer for one frame: one row per object, in `obj_ids` order (ascending)."""

    frame_idx: int
    obj_ids: list[int]
    masks: np.ndarray  # bool [N, H, W] at the frame's original size
    scores: np.ndarray  # float32 [N], predicted IoU of the chosen mask token (1 for a mask prompt)
    object_score_logits: np.ndarray  # float32 [N], > presence threshold: object present
    present: np.ndarray  # bool [N]
    boxes: np.ndarray  # float32 [N, 4] (x0, y0, x1, y1) of the mask, inclusive pixels; 0 if empty
    low_res_logits: np.ndarray  # float32 [N, 1, 256, 256], NO_OBJ_SCORE where absent


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
    """What add_prompt calls left for one object on the pending frame: clicks or a mask."""

    rounds: list[_Clicks] = field(default_factory=list)  # one per call, replayed in order
    mask: np.ndarray | None = None  # bool [H, W]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.rounds) + (0 if self.mask is None else self.mask.nbytes)


@dataclass
class _ObjectOutput:
    """One object's answer on one frame."""

    low_res: np.ndarray  # float32 [1, 256, 256] mask logits (NO_OBJ_SCORE where absent)
    score: float  # predicted IoU of the chosen mask
    object_score_logit: float
    pointer: np.ndarray  # float32 [256], after the no-object blend
    prompted: bool  # from the user's prompt: memory encoded from the binarized mask

    @property
    def nbytes(self) -> int:
        return int(self.low_res.nbytes + self.pointer.nbytes)


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
    features: dict[str, np.ndarray] | None  # image-encoder outputs (image_embed raw)
    image: np.ndarray | None = None  # uint8 [H, W, 3], only while `features` is None

    @property
    def nbytes(self) -> int:
        arrays = list((self.features or {}).values()) + [self.image]
        return int(sum(a.nbytes for a in arrays if a is not None))


# -- decoding work -----------------------------------------------------------------------------


@dataclass
class _Job:
    """How one object is decoded on the current frame.

    Tracked: no rounds, no mask (padding prompt, memory-conditioned features). Clicks: one
    decoder pass per round. Mask prompt: one pass for the pointer, the mask is the output.
    """

    embed: np.ndarray  # float32 [256, 64, 64], the features the decoder reads
    is_init: bool = False  # SAM 2's is_init_cond_frame (decoded without memory)
    rounds: Sequence[_Clicks] = ()
    mask: np.ndarray | None = None  # float32 [1, 1, 1024, 1024] binary mask prompt
    mask_dense: np.ndarray | None = None  # float32 [1, 256, 256], its decoder dense prompt
    previous_logits: np.ndarray | None = None  # float32 [1, 256, 256] (a correction)

    @property
    def num_passes(self) -> int:
        return max(len(self.rounds), 1)


@dataclass
class _Row:
    """One decoder row."""

    obj_id: int
    embed: np.ndarray  # float32 [256, 64, 64]
    coords: np.ndarray  # float32 [P, 2], pixels of the 1024x1024 model input
    labels: np.ndarray  # int32 [P]
    mask_input: np.ndarray | None  # float32 [1, 256, 256] dense prompt, or None
    multimask: bool
    motion_choice: bool = False  # SAMURAI chooses among the multimask candidates
    prompted: bool = True  # a user prompt (not a tracked frame)


@dataclass
class _MotionStep:
    """SAMURAI state of one frame's tracked objects, changed on copies until committed."""

    frame_idx: int
    states: dict[int, ObjectMotionState] = field(default_factory=dict)
    motion_scores: dict[int, float | None] = field(default_factory=dict)


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
    ) -> None:
        settings = metadata["settings"]
        if not settings.get("directly_add_no_mem_embed", True):
            raise NotImplementedError("models without directly_add_no_mem_embed are not supported")
        if num_frames is not None and int(num_frames) < 1:
            raise InputError(f"num_frames must be >= 1 or None, not {num_frames}")
        self.networks = networks
        self.num_frames = None if num_frames is None else int(num_frames)
        self.preprocessing = preprocessing
        self.memory_storage = memory_storage
        self.samurai = samurai
        self.max_mask_bytes = max_mask_bytes  # masks of one answer: objects x H x W bytes
        self.memory_settings = MemorySettings.from_metadata(settings)
        self.head_settings = HeadSettings.from_metadata(metadata)
        self.mask_head = MaskPromptHead.from_metadata(metadata)
        self.presence_threshold = (
            SAM2_PRESENCE_THRESHOLD if samurai is None else float(samurai.min_obj_score_logits)
        )
        self.binarize_prompted = bool(settings.get("binarize_mask_from_pts_for_mem_enc", False))
        self.no_mem_embed = np.asarray(
            metadata["constants"]["no_mem_embed"], dtype=np.float32
        ).reshape(1, -1, 1, 1)
        self.objects: dict[int, _TrackedObject] = {}
        self.pending: dict[int, _PendingPrompt] = {}
        self.pending_frame: int | None = None
        self.last_frame: int = -1
        self.frame_size: tuple[int, int] | None = None  # (H, W) of the first frame
        self._last: _LastFrame | None = None

    # -- objects and prompts ------------------------------------------------------------------

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

    def track(self, frame_idx: int, image: np.ndarray) -> FrameResult:
        """Segment every object on the new frame `frame_idx` (RGB uint8 [H, W, 3]), applying
        the prompts pending for it, and update memory."""
        frame_idx = self.check_new_frame(frame_idx)
        image = check_frame(image)
        size = (int(image.shape[0]), int(image.shape[1]))
        self.check_frame_size(frame_idx, size)
        self.check_answer_size(size)
        for obj_id, prompt in self.pending.items():
            if prompt.mask is not None:
                self.check_mask_size(obj_id, prompt.mask, size)
        if not self.objects and not self.pending:  # nothing to track: no network call
            self._commit_frame(_LastFrame(frame_idx, None, image.copy()), size)
            return self._result(frame_idx, size)
        features = self._encode(image)
        obj_ids = self.obj_ids
        tracked = [o for o in obj_ids if o not in self.pending]
        conditioned = self._condition(tracked, frame_idx, features)
        jobs = self._prompt_jobs([o for o in obj_ids if o in self.pending], features, {})
        jobs.update({o: _Job(embed=conditioned[o]) for o in tracked})
        motion = _MotionStep(frame_idx)
        if self.samurai is not None:
            motion.states = {o: self._motion_state(o).copy() for o in tracked}
        outputs = self._decode_jobs(jobs, features, size, motion)
        memories = self._encode_memories(features, outputs)

        for obj_id in obj_ids:  # commit: nothing above changed the tracker
            self._store(obj_id, frame_idx, outputs[obj_id], memories[obj_id], motion)
        self._commit_frame(_LastFrame(frame_idx, features), size)
        return self._result(frame_idx, size)

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
        features = self._last_features()
        size = self._frame_size()
        self.check_answer_size(size)
        prompted = sorted(self.pending)
        corrected = [o for o in prompted if o in self.objects and self.pending[o].mask is None]
        conditioned = self._condition(corrected, frame_idx, features)
        jobs = self._prompt_jobs(prompted, features, conditioned)
        outputs = self._decode_jobs(jobs, features, size, _MotionStep(frame_idx))
        memories = self._encode_memories(features, outputs)

        for obj_id in prompted:  # commit
            self._store(obj_id, frame_idx, outputs[obj_id], memories[obj_id], None)
        self._commit_frame(_LastFrame(frame_idx, features), size)
        return self._result(frame_idx, size)

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

    # -- steps --------------------------------------------------------------------------------

    def _encode(self, image: np.ndarray) -> dict[str, np.ndarray]:
        pixels, _ = preprocess_frame(image, self.preprocessing)
        encoded = self.networks.encode(pixels)
        return {name: np.asarray(encoded[name], dtype=np.float32) for name in FEATURE_NAMES}

    def _last_features(self) -> dict[str, np.ndarray]:
        """The last frame's features (encoded now if it was tracked with no object)."""
        last = self._last
        if last is None:
            raise InputError("no frame was tracked yet")
        if last.features is not None:
            return last.features
        assert last.image is not None  # kept exactly while the features are not
        return self._encode(last.image)

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

    def _prompt_jobs(
        self,
        obj_ids: Sequence[int],
        features: Mapping[str, np.ndarray],
        conditioned: Mapping[int, np.ndarray],
    ) -> dict[int, _Job]:
        """Jobs for the pending prompts of `obj_ids`. Clicks correcting an object in
        `conditioned` read its memory-conditioned features and its previous logits; other
        clicks are decoded without memory (initial conditioning frame); masks are the output."""
        image_embed = features["image_embed"]
        raw = image_embed[0]  # one array for all mask prompts: their rows share the embedding
        no_mem = None  # shared by every object decoded without memory
        jobs = {}
        for obj_id in obj_ids:
            prompt = self.pending[obj_id]
            if prompt.mask is not None:  # _use_mask_as_output reads the raw features
                mask = prompt_mask_input(prompt.mask)
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
                    no_mem = (image_embed + self.no_mem_embed)[0]
                jobs[obj_id] = _Job(embed=no_mem, is_init=True, rounds=prompt.rounds)
        return jobs

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
        self, obj_ids: Sequence[int], frame_idx: int, features: Mapping[str, np.ndarray]
    ) -> dict[int, np.ndarray]:
        """Memory-conditioned features [256, 64, 64] per object: one memory-attention batch per
        distinct (memories, pointers) signature."""
        selections = {o: self._selection(o, frame_idx) for o in obj_ids}
        groups: dict[tuple[int, int], list[int]] = {}
        for obj_id in obj_ids:
            groups.setdefault(selections[obj_id].signature, []).append(obj_id)
        conditioned: dict[int, np.ndarray] = {}
        for ids in groups.values():
            batch = self._attend(features["image_embed"], [selections[o] for o in ids])
            conditioned.update(zip(ids, batch))
        return conditioned

    def _attend(self, image_embed: np.ndarray, selections: Sequence[Selection]) -> np.ndarray:
        """Memory-conditioned features [G, 256, 64, 64] of objects with equal (M, P)."""
        g = len(selections)
        return self.networks.attend(
            {
                "current_features": _repeat(image_embed, g),
                "memory_features": stack_memory_features(selections),
                "memory_temporal_positions": np.stack(
                    [s.memory_temporal_positions for s in selections]
                ),
                "object_pointers": np.stack([s.object_pointers for s in selections]),
                "object_pointer_positions": np.stack(
                    [s.object_pointer_positions for s in selections]
                ),
            }
        )["conditioned_features"]

    def _decode_jobs(
        self,
        jobs: Mapping[int, _Job],
        features: Mapping[str, np.ndarray],
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
            for obj_id, output in self._decode_rows(rows, features, motion).items():
                job = jobs[obj_id]
                if job.mask is not None:
                    output = self._mask_output(job.mask, output)
                outputs[obj_id] = output
        return outputs

    def _row(
        self, obj_id: int, job: _Job, k: int, previous: _ObjectOutput | None, size: tuple[int, int]
    ) -> _Row:
        if job.mask is not None:
            return _Row(obj_id, job.embed, PAD_COORDS, PAD_LABELS, job.mask_dense, False)
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
        mask_input = None if logits is None else clamp_low_res(logits)
        multimask = self.head_settings.use_multimask(job.is_init, int(clicks.labels.shape[0]))
        return _Row(
            obj_id,
            job.embed,
            self._model_points(clicks, size),
            clicks.labels,
            mask_input,
            multimask,
        )

    def _model_points(self, clicks: _Clicks, size: tuple[int, int]) -> np.ndarray:
        """Pixels of the original frame -> pixels of the 1024x1024 model input (float32)."""
        height, width = size
        scale = np.array([width, height], dtype=np.float32)
        return (clicks.points / scale * np.float32(IMAGE_SIZE)).astype(np.float32)

    def _decode_rows(
        self, rows: Sequence[_Row], features: Mapping[str, np.ndarray], motion: _MotionStep
    ) -> dict[int, _ObjectOutput]:
        """One decoder batch per prompt-point count; heads chosen per row."""
        by_points: dict[int, list[_Row]] = {}
        for row in rows:
            by_points.setdefault(row.coords.shape[0], []).append(row)
        outputs = {}
        for group in by_points.values():
            decoded = self._decode(group, features)
            tokens = self._motion_tokens(group, decoded, motion)
            heads = choose_outputs(
                decoded,
                np.array([r.multimask for r in group]),
                self.head_settings,
                self.presence_threshold,
                tokens,
            )
            for i, row in enumerate(group):
                outputs[row.obj_id] = _ObjectOutput(
                    low_res=heads.low_res_masks[i].copy(),
                    score=float(heads.scores[i]),
                    object_score_logit=float(heads.object_score_logits[i, 0]),
                    pointer=heads.object_pointers[i].copy(),
                    prompted=row.prompted,
                )
        return outputs

    def _decode(
        self, rows: Sequence[_Row], features: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        n = len(rows)
        shared = all(row.embed is rows[0].embed for row in rows)  # e.g. all decoded without memory
        images = 1 if shared else n
        embeds = rows[0].embed[None] if shared else np.stack([row.embed for row in rows])
        mask_input = np.zeros((n, 1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE), np.float32)
        has_mask = np.zeros((n,), np.float32)
        for i, row in enumerate(rows):
            if row.mask_input is not None:
                mask_input[i] = row.mask_input
                has_mask[i] = 1.0
        return self.networks.decode(
            {
                "image_embed": np.ascontiguousarray(embeds, dtype=np.float32),
                "high_res_feats_0": _repeat(features["high_res_feats_0"], images),
                "high_res_feats_1": _repeat(features["high_res_feats_1"], images),
                "point_coords": np.stack([row.coords for row in rows]).astype(
                    np.float32, copy=False
                ),
                "point_labels": np.stack([row.labels for row in rows]).astype(np.int32, copy=False),
                "mask_input": mask_input,
                "has_mask_input": has_mask,
            }
        )

    def _motion_tokens(
        self, rows: Sequence[_Row], decoded: Mapping[str, np.ndarray], motion: _MotionStep
    ) -> np.ndarray | None:
        """SAMURAI's token (1-3) per row choosing by motion (0 elsewhere); updates the copies of
        the objects' motion state and notes each choice's motion score."""
        if not any(row.motion_choice for row in rows):
            return None
        tokens = np.zeros((len(rows),), np.int64)
        for i, row in enumerate(rows):
            if not row.motion_choice:
                continue
            present = decoded["object_score_logits"][i].reshape(-1)[0] > self.presence_threshold
            boxes = _candidate_boxes(decoded["masks"][i, 1:], bool(present))
            index, motion_score = choose_box(
                motion.states[row.obj_id],
                boxes,
                decoded["iou_scores"][i, 1:],
                self._samurai_settings(),
            )
            tokens[i] = 1 + index
            motion.motion_scores[row.obj_id] = motion_score
        return tokens

    def _mask_output(self, mask: np.ndarray, decoded: _ObjectOutput) -> _ObjectOutput:
        """The output of a mask prompt: the mask itself, with the decoded pointer."""
        heads = self._mask_prompt_head().outputs(mask, decoded.pointer[None], self.head_settings)
        return _ObjectOutput(
            low_res=heads.low_res_masks[0],
            score=float(heads.scores[0]),
            object_score_logit=float(heads.object_score_logits[0, 0]),
            pointer=heads.object_pointers[0].copy(),
            prompted=True,
        )

    def _encode_memories(
        self, features: Mapping[str, np.ndarray], outputs: Mapping[int, _ObjectOutput]
    ) -> dict[int, np.ndarray]:
        """This frame's memory [64, 64, 64] of every object in `outputs`: one batch."""
        ids = list(outputs)
        low_res = np.stack([outputs[o].low_res for o in ids])  # [N, 1, 256, 256]
        scores = np.array([[outputs[o].object_score_logit] for o in ids], dtype=np.float32)
        from_prompt = np.array(
            [float(outputs[o].prompted and self.binarize_prompted) for o in ids], dtype=np.float32
        )
        memories = self.networks.encode_memory(
            {
                "image_embed": _repeat(features["image_embed"], len(ids)),
                "mask_logits": low_res,
                "object_score_logits": scores,
                "is_mask_from_points": from_prompt,
            }
        )["memory_features"]
        return dict(zip(ids, memories))

    # -- commit -------------------------------------------------------------------------------

    def _store(
        self,
        obj_id: int,
        frame_idx: int,
        output: _ObjectOutput,
        memory: np.ndarray,
        motion: _MotionStep | None,
    ) -> None:
        """Write one object's output on frame `frame_idx` into its state (creating it)."""
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
        state.bank.add(
            frame_idx, memory, output.pointer, output.object_score_logit, is_conditioning=prompted
        )
        state.output = output
        prompt = self.pending.get(obj_id)
        state.clicks = prompt.rounds[-1] if prompt is not None and prompt.rounds else None
        if self.samurai is not None:
            self._store_motion(state, obj_id, frame_idx, output, prompted, motion)

    def _store_motion(
        self,
        state: _TrackedObject,
        obj_id: int,
        frame_idx: int,
        output: _ObjectOutput,
        prompted: bool,
        motion: _MotionStep | None,
    ) -> None:
        if prompted or motion is None:  # a prompted frame is a conditioning frame: no record,
            motion_state = self._motion_state(obj_id)  # and the filter restarts
            motion_state.restart()
            motion_state.records.pop(frame_idx, None)
        else:
            motion_state = state.motion = motion.states[obj_id]
            motion_state.add_record(
                FrameRecord(
                    frame_idx,
                    output.score,
                    output.object_score_logit,
                    motion.motion_scores.get(obj_id),
                )
            )
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

    def _result(self, frame_idx: int, size: tuple[int, int]) -> FrameResult:
        """Every object's output on the last frame, by ascending id."""
        obj_ids = sorted(self.objects)
        outputs = [self.objects[o].output for o in obj_ids]
        if not outputs:
            empty = np.zeros((0,), np.float32)
            return FrameResult(
                frame_idx,
                [],
                np.zeros((0,) + size, bool),
                empty,
                empty,
                np.zeros((0,), bool),
                np.zeros((0, 4), np.float32),
                np.zeros((0, 1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE), np.float32),
            )
        low_res = np.stack([out.low_res for out in outputs])
        score_logits = np.array([out.object_score_logit for out in outputs], np.float32)
        masks = masks_at_original_size(low_res, size)[:, 0]
        return FrameResult(
            frame_idx=frame_idx,
            obj_ids=obj_ids,
            masks=masks,
            scores=np.array([out.score for out in outputs], np.float32),
            object_score_logits=score_logits,
            present=score_logits > self.presence_threshold,
            boxes=mask_bounds(masks)[0].astype(np.float32),
            low_res_logits=low_res,
        )


def _repeat(x: np.ndarray, n: int) -> np.ndarray:
    """[1, ...] -> contiguous float32 [n, ...] (no copy for n == 1)."""
    if n == 1:
        return np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(np.broadcast_to(x, (n,) + x.shape[1:]), dtype=np.float32)


def _candidate_boxes(logits: np.ndarray, present: bool) -> list[np.ndarray | None]:
    """SAMURAI's candidate boxes on the 1024x1024 model frame: [K, 256, 256] low-res logits ->
    K xyxy boxes of the upsampled masks (None if empty; all empty where the object is absent:
    SAM 2 sets absent logits to NO_OBJ_SCORE)."""
    if not present:
        return [None] * logits.shape[0]
    return [upscaled_mask_box(candidate, IMAGE_SIZE // LOW_RES_MASK_SIZE) for candidate in logits]
