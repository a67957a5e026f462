"""The memory of one tracked object, and SAM 2's choice of what frame t attends to.

`MemoryBank` holds, for one object, what the memory-attention graph may read: its conditioning
(prompted) frames and the recent tracked frames a later frame can still select, each a spatial
memory [64, 64, 64] (torch.bfloat16 by default, or float32) and an object pointer float32
[256], torch tensors on the tracker's device. Older entries are dropped as the stream advances
(forward only), so the bank is bounded whatever the video's length. `select(frame_idx)` returns
a `Selection`: the memories, temporal positions, pointers and pointer positions SAM 2's
`_prepare_memory_conditioned_features` chooses for that frame; `stack_memory_features` and
`stack_object_pointers` build the batch tensors of several selections on the device in one
stack each. Which frames are chosen is host bookkeeping (frame indices, positions as numpy);
no value is read back from the device. `MemorySettings` are the `SAM2Base` settings that decide
the choice (from metadata.json).

Design notes: docs/memory-bank.md
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

MEMORY_SHAPE = (64, 64, 64)  # mem_dim, 64, 64 (per object and frame)
POINTER_DIM = 256  # object pointer length (hidden_dim)
STORAGE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def tensor_nbytes(*tensors: torch.Tensor | None) -> int:
    """Bytes of the tensors' elements (numel * element_size; None counts 0)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def storage_dtype(storage: str) -> torch.dtype:
    """ "bfloat16" or "float32" -> the torch dtype memories are kept in; ValueError otherwise."""
    if storage not in STORAGE_DTYPES:
        raise ValueError(f"storage must be one of {tuple(STORAGE_DTYPES)}, not {storage!r}")
    return STORAGE_DTYPES[storage]


@dataclass(frozen=True)
class MemorySettings:
    """The SAM2Base settings that decide memory selection (from metadata.json `settings`)."""

    num_maskmem: int = 7
    memory_temporal_stride: int = 1  # memory_temporal_stride_for_eval
    max_cond_frames_in_attn: int = -1
    max_obj_ptrs_in_encoder: int = 16
    use_obj_ptrs_in_encoder: bool = True
    only_obj_ptrs_in_the_past: bool = True  # only_obj_ptrs_in_the_past_for_eval
    use_signed_tpos_enc_to_obj_ptrs: bool = True

    @classmethod
    def from_metadata(cls, settings: Mapping) -> MemorySettings:
        return cls(
            num_maskmem=int(settings["num_maskmem"]),
            memory_temporal_stride=int(settings.get("memory_temporal_stride_for_eval", 1)),
            max_cond_frames_in_attn=int(settings.get("max_cond_frames_in_attn", -1)),
            max_obj_ptrs_in_encoder=int(settings.get("max_obj_ptrs_in_encoder", 16)),
            use_obj_ptrs_in_encoder=bool(settings.get("use_obj_ptrs_in_encoder", True)),
            only_obj_ptrs_in_the_past=bool(
                settings.get("only_obj_ptrs_in_the_past_for_eval", False)
            ),
            use_signed_tpos_enc_to_obj_ptrs=bool(
                settings.get("use_signed_tpos_enc_to_obj_ptrs", True)
            ),
        )

    def memory_frame(self, frame_idx: int, t_pos: int) -> int:
        """The frame whose memory fills temporal slot t_pos (1 .. num_maskmem-1) at frame_idx."""
        t_rel = self.num_maskmem - t_pos
        if t_rel == 1:
            return frame_idx - 1
        stride = self.memory_temporal_stride
        return ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride

    @property
    def memory_window(self) -> int:
        """How many frames back from frame t a non-conditioning memory can fill a slot of t."""
        stride = self.memory_temporal_stride
        return 2 + (stride - 1) + max(self.num_maskmem - 3, 0) * stride

    def pointer_frames(self, num_frames: int | None) -> int:
        """min(num_frames, max_obj_ptrs_in_encoder): SAM 2's pointer count and position scale."""
        if num_frames is None:
            return self.max_obj_ptrs_in_encoder
        return min(int(num_frames), self.max_obj_ptrs_in_encoder)


@dataclass
class FrameMemory:
    """What one frame left for one object: spatial memory, object pointer, presence logit."""

    memory: torch.Tensor  # [64, 64, 64], the bank's storage dtype, on the device
    pointer: torch.Tensor  # float32 [256], after the no-object blend, on the device
    object_score: float  # host copy of the frame's object-score logit

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.memory, self.pointer)


@dataclass
class Selection:
    """Memory-attention inputs of one object for one frame (no batch axis).

    `memories` and `pointers` are the bank's stored tensors (not copies); positions are host
    arrays (they follow from frame indices). `stack_memory_features` / `stack_object_pointers`
    stack several selections into one batch tensor on the device.
    """

    memories: tuple[torch.Tensor, ...]  # M x [64, 64, 64], bfloat16 or float32
    memory_temporal_positions: np.ndarray  # int32 [M]
    pointers: tuple[torch.Tensor, ...]  # P x float32 [256]
    object_pointer_positions: np.ndarray  # float32 [P]
    memory_frames: tuple[int, ...] = ()  # which frames, for tests and debugging
    pointer_frames: tuple[int, ...] = ()

    @property
    def memory_features(self) -> torch.Tensor:
        """float32 [M, 64, 64, 64] on the device."""
        return stack_memory_features([self])[0]

    @property
    def object_pointers(self) -> torch.Tensor:
        """float32 [P, 256] on the device."""
        return stack_object_pointers([self])[0]

    @property
    def signature(self) -> tuple[int, int]:
        """(M, P): objects with equal signatures can share one memory-attention batch."""
        return len(self.memories), len(self.pointers)


def _check_signature(selections: Sequence[Selection]) -> tuple[int, int]:
    signature = selections[0].signature
    if any(s.signature != signature for s in selections):
        raise ValueError("selections of one batch must have the same (memories, pointers) counts")
    return signature


def memory_features_shape(selections: Sequence[Selection]) -> tuple[int, ...]:
    """[G, M, 64, 64, 64]: the shape `stack_memory_features` returns for `selections`."""
    count, _ = _check_signature(selections)
    return (len(selections), count, *MEMORY_SHAPE)


def stack_memory_features(
    selections: Sequence[Selection], out: torch.Tensor | None = None
) -> torch.Tensor:
    """float32 [G, M, 64, 64, 64] of selections with equal (M, P): one stack on the device,
    converting to float32 as it copies, into `out` (a contiguous float32 tensor of that shape,
    e.g. a workspace view) or a new tensor."""
    shape = memory_features_shape(selections)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=selections[0].memories[0].device)
    elif tuple(out.shape) != shape or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of shape {shape}")
    memories = [m for s in selections for m in s.memories]
    torch.stack(memories, out=out.view(len(memories), *MEMORY_SHAPE))
    return out


def stack_object_pointers(
    selections: Sequence[Selection], device: torch.device | None = None
) -> torch.Tensor:
    """float32 [G, P, 256] of selections with equal (M, P), one stack on the device (`device`
    places the empty batch of P = 0; otherwise the pointers' own device)."""
    _, count = _check_signature(selections)
    if count == 0:
        return torch.zeros((len(selections), 0, POINTER_DIM), dtype=torch.float32, device=device)
    stacked = torch.stack([p for s in selections for p in s.pointers])
    return stacked.view(len(selections), count, POINTER_DIM)


@dataclass
class MemoryBank:
    """Bounded memory of one object (see the module docstring).

    external_recent: the owner chooses the recent memory frames (`select(recent_frames=...)`)
    and which non-conditioning memories stay (`retain_memories`); SAM 2's window then prunes
    only the pointers.
    """

    settings: MemorySettings
    storage: str = "bfloat16"  # or "float32"
    external_recent: bool = False
    cond: dict[int, FrameMemory] = field(default_factory=dict)
    non_cond_memories: dict[int, torch.Tensor] = field(default_factory=dict)
    non_cond_pointers: dict[int, torch.Tensor] = field(default_factory=dict)
    last_frame: int = -1  # the latest frame stored

    def __post_init__(self) -> None:
        storage_dtype(self.storage)  # ValueError for an unknown storage

    @property
    def dtype(self) -> torch.dtype:
        """The dtype memories are stored in."""
        return storage_dtype(self.storage)

    # -- writing ------------------------------------------------------------------------------

    def add(
        self,
        frame_idx: int,
        memory: torch.Tensor,
        pointer: torch.Tensor,
        object_score: float,
        is_conditioning: bool,
    ) -> None:
        """Store frame `frame_idx`'s output: memory [64, 64, 64] and pointer [256] on the
        device, copied (the memory converted to the storage dtype on the way), so that the bank
        holds exactly what it counts and nothing of the caller's batches (a conditioning frame
        replaces a tracked output of the same frame); then drop what neither this frame (a
        correction) nor a later one can select."""
        frame_idx = int(frame_idx)
        memory = memory.reshape(MEMORY_SHAPE).to(self.dtype, copy=True)
        pointer = pointer.reshape(POINTER_DIM).to(torch.float32, copy=True)
        if is_conditioning:
            self.cond[frame_idx] = FrameMemory(memory, pointer, float(object_score))
            # a prompted frame replaces any tracked output of the same frame (as SAM 2 does)
            self.non_cond_memories.pop(frame_idx, None)
            self.non_cond_pointers.pop(frame_idx, None)
        else:
            self.non_cond_memories[frame_idx] = memory
            self.non_cond_pointers[frame_idx] = pointer
        self.last_frame = max(self.last_frame, frame_idx)
        self.prune(self.last_frame)

    def prune(self, first_frame: int) -> None:
        """Drop entries that no frame >= first_frame can select (forward tracking).

        `add` passes the last stored frame: it may still be corrected, which selects again.
        """
        oldest_memory = first_frame - self.settings.memory_window
        if not self.external_recent:
            for t in [t for t in self.non_cond_memories if t < oldest_memory]:
                del self.non_cond_memories[t]
        oldest_pointer = first_frame - (self.settings.max_obj_ptrs_in_encoder - 1)
        if not self.settings.use_obj_ptrs_in_encoder:
            oldest_pointer = first_frame
        for t in [t for t in self.non_cond_pointers if t < oldest_pointer]:
            del self.non_cond_pointers[t]
        limit = self.settings.max_cond_frames_in_attn
        if limit > 0 and len(self.cond) > limit:
            # Going forward, the selected conditioning frames are the `limit` latest ones; an
            # older one is still used as a recent frame while inside the windows above.
            keep = set(sorted(self.cond)[-limit:])
            oldest = min(oldest_memory, oldest_pointer)
            for t in [t for t in self.cond if t not in keep and t < oldest]:
                del self.cond[t]

    def retain_memories(self, frames: Collection[int]) -> None:
        """Keep only the non-conditioning memories of `frames` (owner-chosen recent memories)."""
        if not self.external_recent:
            raise ValueError("retain_memories is for banks whose owner chooses recent memories")
        keep = set(frames)
        for t in [t for t in self.non_cond_memories if t not in keep]:
            del self.non_cond_memories[t]

    # -- reading ------------------------------------------------------------------------------

    def _split_cond(self, frame_idx: int) -> tuple[list[int], list[int]]:
        """SAM 2's closest-conditioning-frame choice: (selected, unselected) frame indices."""
        frames = list(self.cond)
        limit = self.settings.max_cond_frames_in_attn
        if limit == -1 or len(frames) <= limit:
            return frames, []
        if limit < 2:
            raise ValueError("max_cond_frames_in_attn must be -1 or at least 2")
        selected: list[int] = []
        before = [t for t in frames if t < frame_idx]
        after = [t for t in frames if t >= frame_idx]
        if before:
            selected.append(max(before))
        if after:
            selected.append(min(after))
        rest = sorted((t for t in frames if t not in selected), key=lambda t: abs(t - frame_idx))
        selected += rest[: limit - len(selected)]
        return selected, [t for t in frames if t not in selected]

    def _recent_slots(
        self, frame_idx: int, recent_frames: Sequence[int] | None
    ) -> list[tuple[int, int]]:
        """(t_pos, frame) of the recent memories, t_pos ascending (oldest slot first)."""
        s = self.settings
        if recent_frames is None:
            return [(t_pos, s.memory_frame(frame_idx, t_pos)) for t_pos in range(1, s.num_maskmem)]
        newest_first = list(recent_frames)[: s.num_maskmem - 1]
        return [(s.num_maskmem - 1 - i, t) for i, t in reversed(list(enumerate(newest_first)))]

    def select(
        self,
        frame_idx: int,
        num_frames: int | None = None,
        recent_frames: Sequence[int] | None = None,
    ) -> Selection:
        """Memory-attention inputs for tracking this object on frame `frame_idx`.

        recent_frames: the recent memory frames, newest first (item i -> t_pos
        num_maskmem-1-i), instead of SAM 2's last num_maskmem-1 frames; required when the
        owner chooses them (`external_recent`).
        """
        s = self.settings
        if self.external_recent and recent_frames is None:
            raise ValueError("this bank's owner chooses the recent memories: pass recent_frames")
        if not self.cond:
            raise ValueError("the object has no conditioning frame: prompt it first")
        selected, unselected = self._split_cond(frame_idx)
        unselected_set = set(unselected)

        def recent(t: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            """(memory, pointer) of a non-conditioning frame, or an unselected cond frame."""
            if t in unselected_set:
                entry = self.cond[t]
                return entry.memory, entry.pointer
            return self.non_cond_memories.get(t), self.non_cond_pointers.get(t)

        memories: list[torch.Tensor] = []
        t_positions: list[int] = []
        memory_frames: list[int] = []
        for t in selected:
            memories.append(self.cond[t].memory)
            t_positions.append(0)
            memory_frames.append(t)
        for t_pos, t in self._recent_slots(frame_idx, recent_frames):
            memory = recent(t)[0]
            if memory is not None:
                memories.append(memory)
                t_positions.append(t_pos)
                memory_frames.append(t)

        pointers: list[torch.Tensor] = []
        positions: list[int] = []
        pointer_frames: list[int] = []
        if s.use_obj_ptrs_in_encoder:
            max_ptrs = s.pointer_frames(num_frames)
            for t in selected:
                if s.only_obj_ptrs_in_the_past and t > frame_idx:
                    continue
                distance = frame_idx - t
                pointers.append(self.cond[t].pointer)
                positions.append(distance if s.use_signed_tpos_enc_to_obj_ptrs else abs(distance))
                pointer_frames.append(t)
            for t_diff in range(1, max_ptrs):
                t = frame_idx - t_diff
                if t < 0 or (num_frames is not None and t >= num_frames):
                    break
                pointer = recent(t)[1]
                if pointer is not None:
                    pointers.append(pointer)
                    positions.append(t_diff)
                    pointer_frames.append(t)
            scale = max(max_ptrs - 1, 1)  # SAM 2 divides by max_ptrs - 1 (0 only for 1 frame)
        else:
            scale = 1

        return Selection(
            memories=tuple(memories),
            memory_temporal_positions=np.asarray(t_positions, dtype=np.int32),
            pointers=tuple(pointers),
            object_pointer_positions=np.asarray(positions, dtype=np.float32) / np.float32(scale),
            memory_frames=tuple(memory_frames),
            pointer_frames=tuple(pointer_frames),
        )

    # -- size ---------------------------------------------------------------------------------

    @property
    def counts(self) -> dict[str, int]:
        return {
            "conditioning_frames": len(self.cond),
            "memories": len(self.non_cond_memories),
            "pointers": len(self.non_cond_pointers),
        }

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensors (numel * element_size)."""
        return (
            sum(e.nbytes for e in self.cond.values())
            + tensor_nbytes(*self.non_cond_memories.values())
            + tensor_nbytes(*self.non_cond_pointers.values())
        )
