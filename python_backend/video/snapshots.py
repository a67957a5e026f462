"""Sequence snapshots: one video sequence's whole state as bytes, to resume it on any server.

    model = model_identity(metadata, precision="fp32")
    data = snapshot_tracker(tracker, model, sequence={...}, max_bytes=...)   # bytes
    snapshot = read_snapshot(data, model, memory_storage="bfloat16", max_bytes=...)
    tracker = VideoTracker(networks, metadata, num_frames=snapshot.num_frames,
                           samurai=snapshot.samurai, ...)   # a fresh tracker, as at START
    restore_tracker(tracker, snapshot)   # tracking goes on exactly as on the original

What a snapshot holds: per object its memory bank (conditioning frames with their memories,
pointers and object-score logits; recent memories and pointers by frame, in the bank's order),
its output on the last frame (low-res logits, pointer, score, object-score logit, presence: what
a correction of that frame and the answer of objects a correction leaves alone read), the clicks
it got on that frame, and in SAMURAI mode its motion state (Kalman mean / covariance, stable
count, frame records); the prompts pending for the next frame; the frame counters and size; the
sequence's START options (`num_frames`, SAMURAI settings, and what the caller adds in
`sequence`, such as the answer format). Memories keep their stored dtype (bfloat16 stays
bfloat16). The last frame's image features are left out: they are 16 MiB of float32 whatever the
model (more than everything else of a small sequence), and only a correction of the snapshot's
own frame reads them; after a restore that frame can no longer be corrected (a clear InputError)
and tracking the next frames needs nothing of them. A frame tracked with no object keeps its
image instead (as the tracker does), and so does the snapshot.

Layout (`FORMAT_VERSION` 1): MAGIC, the header's length (uint32, little endian), the header
(UTF-8 JSON: format version, model identity, memory storage, the state's structure, a table of
the tensors, SHA-256), then the tensors as a NumPy `.npz` archive. Why these: `.npz` (a zip of
`.npy` files) is NumPy's own documented format, loads without pickle
(`allow_pickle=False`: a snapshot from a client cannot run code on the server), and needs no
package beyond NumPy (safetensors is not a dependency); bfloat16, which NumPy lacks, is stored
as its raw 16-bit pattern and named in the header's table. JSON keeps the header readable by any
tool (`snapshot_header`), and Python's float repr round-trips every float64 exactly. The
checksum covers the header (without its checksum) and the archive.

Device tensors leave the device in one transfer (`tracker.transfers`), packed as bytes.
Refusals raise `SnapshotError` (an InputError) naming the problem: not a snapshot, another
format version, a corrupted one (checksum), another model, size, weights or precision, another
memory storage, one larger than the bound, or a tracker that is not fresh.

Design notes: docs/serving.md (snapshots and failover)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sam2_triton.python_backend.errors import SnapshotError
from sam2_triton.python_backend.samurai import FrameRecord, ObjectMotionState, SamuraiSettings
from sam2_triton.python_backend.video.frames import PREPROCESSINGS, upload
from sam2_triton.python_backend.video.heads import HeadOutputs
from sam2_triton.python_backend.video.memory_bank import FrameMemory, MemoryBank
from sam2_triton.wire import SNAPSHOT_MAGIC
from sam2_triton.wire import snapshot_header as wire_snapshot_header

if TYPE_CHECKING:
    from sam2_triton.python_backend.video.tracker import VideoTracker

MAGIC = SNAPSHOT_MAGIC  # first bytes of every snapshot (sam2_triton/wire.py)
FORMAT_VERSION = 1  # bumped whenever the layout or the state it holds changes
_LENGTH = struct.Struct("<I")  # the header's length in bytes (as wire.snapshot_header reads it)
# Wire dtype name -> (torch dtype, numpy dtype of the stored array: bfloat16 as its bits).
DTYPES: dict[str, tuple[torch.dtype, type]] = {
    "bfloat16": (torch.bfloat16, np.uint16),
    "float32": (torch.float32, np.float32),
    "float64": (torch.float64, np.float64),
    "int32": (torch.int32, np.int32),
    "uint8": (torch.uint8, np.uint8),
    "bool": (torch.bool, np.bool_),
}
_DTYPE_NAMES = {torch_dtype: name for name, (torch_dtype, _) in DTYPES.items()}
# Header entries that are mappings (besides format_version, memory_storage, sha256).
HEADER_FIELDS = ("model", "sequence", "state", "dtypes")
# Model identity fields a snapshot must match, in the order refusals name them.
IDENTITY_FIELDS = ("family", "name", "config", "checkpoint_sha256", "precision")


def model_identity(metadata: Mapping[str, Any], precision: str = "fp32") -> dict[str, str]:
    """What a snapshot must match to be restored: the export's model family, name (the size:
    "tiny", "large", ...), config and checkpoint SHA-256 (metadata.json `model`; "" when the
    export did not record one), and the precision the networks run at."""
    model = metadata.get("model", {})
    checkpoint = model.get("checkpoint") or {}
    return {
        "family": str(model.get("family", "")),
        "name": str(model.get("name", "")),
        "config": str(model.get("config", "")),
        "checkpoint_sha256": str(checkpoint.get("sha256", "")),
        "precision": str(precision),
    }


@dataclass
class Snapshot:
    """A verified snapshot: its header (JSON mapping) and its tensors (host arrays by name,
    bfloat16 already as torch tensors). `sequence` is what the snapshotting caller added (the
    START options beyond the tracker's, e.g. the answer format)."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray | torch.Tensor]

    @property
    def state(self) -> dict[str, Any]:
        return self.header["state"]

    @property
    def sequence(self) -> dict[str, Any]:
        return self.header["sequence"]

    @property
    def num_frames(self) -> int | None:
        return self.state["num_frames"]

    @property
    def samurai(self) -> SamuraiSettings | None:
        values = self.state["samurai"]
        return None if values is None else SamuraiSettings(**values)

    @property
    def last_frame(self) -> int:
        return int(self.state["last_frame"])


# -- writing -------------------------------------------------------------------------------------


class _Tensors:
    """Tensors of a snapshot by name: device tensors packed and moved in one transfer, host
    arrays as they are."""

    def __init__(self) -> None:
        self.device: list[tuple[str, torch.Tensor]] = []
        self.host: dict[str, np.ndarray] = {}

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.device.append((name, tensor))

    def add_host(self, name: str, array: np.ndarray) -> None:
        self.host[name] = np.ascontiguousarray(array)

    def arrays(self, tracker: VideoTracker) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """(name -> host array, name -> dtype name of every array)."""
        dtypes = {name: _dtype_name(t.dtype) for name, t in self.device}
        dtypes.update({name: np.dtype(a.dtype).name for name, a in self.host.items()})
        arrays = dict(self.host)
        if not self.device:
            return arrays, dtypes
        with torch.inference_mode():
            packed = torch.cat(
                [t.detach().contiguous().reshape(-1).view(torch.uint8) for _, t in self.device]
            )
        flat = tracker.transfers.to_host(packed)
        offset = 0
        for name, tensor in self.device:
            size = tensor.numel() * tensor.element_size()
            stored = DTYPES[dtypes[name]][1]
            arrays[name] = flat[offset : offset + size].view(stored).reshape(tuple(tensor.shape))
            offset += size
        return arrays, dtypes


def _dtype_name(dtype: torch.dtype) -> str:
    if dtype not in _DTYPE_NAMES:
        raise TypeError(f"snapshots do not store {dtype} tensors")
    return _DTYPE_NAMES[dtype]


def _bank_state(prefix: str, bank: MemoryBank, tensors: _Tensors) -> dict[str, Any]:
    """A bank's structure (frames in its own order), its tensors stacked into `tensors`."""
    cond = list(bank.cond.items())
    if cond:
        tensors.add(f"{prefix}/cond_memories", torch.stack([e.memory for _, e in cond]))
        tensors.add(f"{prefix}/cond_pointers", torch.stack([e.pointer for _, e in cond]))
    if bank.non_cond_memories:
        tensors.add(f"{prefix}/memories", torch.stack(list(bank.non_cond_memories.values())))
    if bank.non_cond_pointers:
        tensors.add(f"{prefix}/pointers", torch.stack(list(bank.non_cond_pointers.values())))
    return {
        "cond": [[frame, entry.object_score] for frame, entry in cond],
        "memory_frames": list(bank.non_cond_memories),
        "pointer_frames": list(bank.non_cond_pointers),
        "last_frame": bank.last_frame,
        "storage": bank.storage,
    }


def _motion_state(
    prefix: str, motion: ObjectMotionState | None, tensors: _Tensors
) -> dict[str, Any] | None:
    if motion is None:
        return None
    has_filter = motion.mean is not None and motion.covariance is not None
    if has_filter:
        tensors.add_host(f"{prefix}/kalman_mean", np.asarray(motion.mean, np.float64))
        tensors.add_host(f"{prefix}/kalman_covariance", np.asarray(motion.covariance, np.float64))
    return {
        "has_filter": has_filter,
        "stable_count": motion.stable_count,
        "records": [_record_values(record) for record in motion.records.values()],
    }


def _record_values(record: FrameRecord) -> list:
    """A FrameRecord as JSON values (floats exactly: JSON writes Python's repr)."""
    motion = record.motion_score
    return [
        int(record.frame_idx),
        float(record.predicted_iou),
        float(record.object_score_logit),
        None if motion is None else float(motion),
    ]


def snapshot_tracker(
    tracker: VideoTracker,
    model: Mapping[str, str],
    sequence: Mapping[str, Any] | None = None,
    max_bytes: int | None = None,
) -> bytes:
    """The tracker's state as snapshot bytes (module docstring); `model` is `model_identity` of
    the tracker's export, `sequence` JSON values the restorer gets back (`Snapshot.sequence`).
    SnapshotError when the snapshot would exceed `max_bytes`."""
    tensors = _Tensors()
    objects = []
    for obj_id, tracked in tracker.objects.items():
        prefix = f"objects/{obj_id}"
        heads, row = tracked.output.heads, tracked.output.row
        tensors.add(f"{prefix}/low_res", heads.low_res_masks[row : row + 1])
        tensors.add(f"{prefix}/scores", heads.scores[row : row + 1])
        tensors.add(f"{prefix}/object_pointers", heads.object_pointers[row : row + 1])
        tensors.add(f"{prefix}/object_score_logits", heads.object_score_logits[row : row + 1])
        tensors.add(f"{prefix}/present", heads.present[row : row + 1])
        if tracked.clicks is not None:
            tensors.add_host(f"{prefix}/click_points", tracked.clicks.points)
            tensors.add_host(f"{prefix}/click_labels", tracked.clicks.labels)
        objects.append(
            {
                "id": obj_id,
                "bank": _bank_state(prefix, tracked.bank, tensors),
                "prompted": tracked.output.prompted,
                "clicks": tracked.clicks is not None,
                "motion": _motion_state(prefix, tracked.motion, tensors),
            }
        )
    pending = []
    for obj_id, prompt in tracker.pending.items():
        prefix = f"pending/{obj_id}"
        for k, clicks in enumerate(prompt.rounds):
            tensors.add_host(f"{prefix}/{k}/points", clicks.points)
            tensors.add_host(f"{prefix}/{k}/labels", clicks.labels)
        if prompt.mask is not None:
            tensors.add_host(f"{prefix}/mask", prompt.mask)
        pending.append(
            {"id": obj_id, "rounds": len(prompt.rounds), "mask": prompt.mask is not None}
        )
    last = tracker._last
    if last is not None and last.features is None and last.image is not None:
        tensors.add_host("last_image", last.image)
    samurai = tracker.samurai
    state = {
        "num_frames": tracker.num_frames,
        "samurai": None if samurai is None else dataclasses.asdict(samurai),
        "preprocessing": tracker.preprocessing,
        "last_frame": tracker.last_frame,
        "frame_size": None if tracker.frame_size is None else list(tracker.frame_size),
        "pending_frame": tracker.pending_frame,
        "last_image": "last_image" in tensors.host,
        "objects": objects,
        "pending": pending,
    }
    arrays, dtypes = tensors.arrays(tracker)
    archive = io.BytesIO()
    np.savez(archive, **{_member(name): array for name, array in arrays.items()})
    header = {
        "format_version": FORMAT_VERSION,
        "model": dict(model),
        "memory_storage": tracker.memory_storage,
        "sequence": dict(sequence or {}),
        "state": state,
        "dtypes": dtypes,
    }
    data = _pack(header, archive.getvalue())
    check_snapshot_size(len(data), max_bytes)
    return data


def _member(name: str) -> str:
    """An archive member name for a tensor name ("/" would make folders in the zip)."""
    return name.replace("/", ".")


def _pack(header: dict[str, Any], archive: bytes) -> bytes:
    header = {**header, "sha256": _checksum(header, archive)}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return MAGIC + _LENGTH.pack(len(text)) + text + archive


def _checksum(header: Mapping[str, Any], archive: bytes) -> str:
    """SHA-256 (hex) of the canonical header (without `sha256`) and the archive."""
    fields = {k: v for k, v in header.items() if k != "sha256"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    digest.update(archive)
    return digest.hexdigest()


def check_snapshot_size(size: int, max_bytes: int | None) -> None:
    """SnapshotError when a snapshot of `size` bytes exceeds `max_bytes` (None: no bound)."""
    if max_bytes is not None and size > max_bytes:
        raise SnapshotError(
            f"the sequence snapshot is {size} bytes, more than this server's bound of "
            f"{max_bytes} bytes (video setting max_snapshot_bytes): track fewer objects per "
            "sequence, or raise the bound"
        )


# -- reading -------------------------------------------------------------------------------------


def snapshot_header(data: bytes) -> dict[str, Any]:
    """The header of snapshot bytes (not verified: see `read_snapshot`); SnapshotError when
    `data` is not a snapshot."""
    return _split(data)[0]


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    data = bytes(data)
    try:
        header, end = wire_snapshot_header(data)
    except ValueError as exc:
        raise SnapshotError(str(exc)) from None
    return header, data[end:]


def read_snapshot(
    data: bytes,
    model: Mapping[str, str],
    memory_storage: str,
    max_bytes: int | None = None,
) -> Snapshot:
    """Verified snapshot bytes: SnapshotError (module docstring) unless they are within
    `max_bytes`, of this FORMAT_VERSION, intact (checksum), of the model `model`
    (`model_identity`) and the memory storage `memory_storage` of the restoring server."""
    check_snapshot_size(len(data), max_bytes)
    header, archive = _split(data)
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"the sequence snapshot has format version {version!r}; this server reads version "
            f"{FORMAT_VERSION} only"
        )
    if header.get("sha256") != _checksum(header, archive):
        raise SnapshotError(
            "the sequence snapshot is corrupted: its checksum does not match its contents"
        )
    missing = [key for key in HEADER_FIELDS if not isinstance(header.get(key), dict)]
    if missing:
        raise SnapshotError(f"the sequence snapshot is malformed: its header lacks {missing}")
    _check_model(header["model"], model)
    if header.get("memory_storage") != memory_storage:
        raise SnapshotError(
            f"the sequence snapshot stores memories as {header.get('memory_storage')!r}; this "
            f"server stores them as {memory_storage!r} (video setting memory_storage)"
        )
    try:
        with np.load(io.BytesIO(archive), allow_pickle=False) as npz:
            stored = {name: npz[_member(name)] for name in header["dtypes"]}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise SnapshotError(f"the sequence snapshot is corrupted: {exc}") from None
    arrays: dict[str, np.ndarray | torch.Tensor] = {}
    for name, array in stored.items():
        dtype_name = header["dtypes"][name]
        if dtype_name == "bfloat16":
            arrays[name] = torch.from_numpy(array.astype(np.uint16, copy=True)).view(torch.bfloat16)
        else:
            arrays[name] = array
    return Snapshot(header, arrays)


def _check_model(theirs: Mapping[str, Any], ours: Mapping[str, str]) -> None:
    for key in IDENTITY_FIELDS:
        if theirs.get(key) != ours.get(key):
            raise SnapshotError(
                f"the sequence snapshot belongs to another model: its {key} is "
                f"{theirs.get(key)!r}, this server's is {ours.get(key)!r} "
                f"(snapshot of {theirs.get('family')} {theirs.get('name')} at "
                f"{theirs.get('precision')}; this server runs {ours.get('family')} "
                f"{ours.get('name')} at {ours.get('precision')})"
            )


# -- restoring -----------------------------------------------------------------------------------


def restore_tracker(tracker: VideoTracker, snapshot: Snapshot) -> None:
    """Load `snapshot` into a fresh `tracker` made for it (same num_frames and SAMURAI settings,
    the memory storage `read_snapshot` checked); SnapshotError otherwise."""
    from sam2_triton.python_backend.video.tracker import (
        _Clicks,
        _LastFrame,
        _ObjectOutput,
        _PendingPrompt,
        _TrackedObject,
    )

    if tracker.objects or tracker.pending or tracker.last_frame >= 0:
        raise SnapshotError("a snapshot is restored into a fresh sequence only (START)")
    state = snapshot.state
    if tracker.num_frames != snapshot.num_frames or tracker.samurai != snapshot.samurai:
        raise SnapshotError(
            "the tracker was not made with the snapshot's num_frames and SAMURAI settings"
        )
    if tracker.memory_storage != snapshot.header["memory_storage"]:
        raise SnapshotError("the tracker does not store memories as the snapshot does")
    if state.get("preprocessing") not in PREPROCESSINGS:
        raise SnapshotError(
            f"the sequence snapshot names an unknown preprocessing {state.get('preprocessing')!r}"
        )
    arrays = snapshot.arrays
    device = tracker.device

    def tensor(name: str) -> torch.Tensor:
        value = arrays[name]
        if isinstance(value, torch.Tensor):
            return value.to(device)
        return upload(value, device)

    def host(name: str) -> np.ndarray:
        value = arrays[name]
        assert isinstance(value, np.ndarray)
        return value.copy()

    try:
        objects = {}
        for entry in state["objects"]:
            obj_id = int(entry["id"])
            prefix = f"objects/{obj_id}"
            output = _ObjectOutput(
                HeadOutputs(
                    low_res_masks=tensor(f"{prefix}/low_res"),
                    scores=tensor(f"{prefix}/scores"),
                    object_pointers=tensor(f"{prefix}/object_pointers"),
                    object_score_logits=tensor(f"{prefix}/object_score_logits"),
                    present=tensor(f"{prefix}/present"),
                ),
                0,
                bool(entry["prompted"]),
            )
            clicks = None
            if entry["clicks"]:
                clicks = _Clicks(host(f"{prefix}/click_points"), host(f"{prefix}/click_labels"))
            objects[obj_id] = _TrackedObject(
                bank=_restore_bank(prefix, entry["bank"], tracker, tensor),
                motion=_restore_motion(prefix, entry["motion"], host),
                output=output,
                clicks=clicks,
            )
        pending = {}
        for entry in state["pending"]:
            prefix = f"pending/{int(entry['id'])}"
            rounds = [
                _Clicks(host(f"{prefix}/{k}/points"), host(f"{prefix}/{k}/labels"))
                for k in range(int(entry["rounds"]))
            ]
            mask = host(f"{prefix}/mask") if entry["mask"] else None
            pending[int(entry["id"])] = _PendingPrompt(rounds=rounds, mask=mask)
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"the sequence snapshot is malformed: {exc!r}") from None
    tracker.objects = objects
    tracker.pending = pending
    tracker.pending_frame = state["pending_frame"]
    tracker.last_frame = int(state["last_frame"])
    size = state["frame_size"]
    tracker.frame_size = None if size is None else (int(size[0]), int(size[1]))
    tracker.preprocessing = state["preprocessing"]
    if tracker.last_frame >= 0:
        image = host("last_image") if state["last_image"] else None
        tracker._last = _LastFrame(tracker.last_frame, None, image)


def _restore_bank(
    prefix: str, entry: Mapping[str, Any], tracker: VideoTracker, tensor
) -> MemoryBank:
    bank = MemoryBank(
        tracker.memory_settings, entry["storage"], external_recent=tracker.samurai is not None
    )
    cond = entry["cond"]
    if cond:
        memories, pointers = tensor(f"{prefix}/cond_memories"), tensor(f"{prefix}/cond_pointers")
        for i, (frame, object_score) in enumerate(cond):
            bank.cond[int(frame)] = FrameMemory(
                memories[i].clone(), pointers[i].clone(), object_score
            )
    if entry["memory_frames"]:
        memories = tensor(f"{prefix}/memories")
        for i, frame in enumerate(entry["memory_frames"]):
            bank.non_cond_memories[int(frame)] = memories[i].clone()
    if entry["pointer_frames"]:
        pointers = tensor(f"{prefix}/pointers")
        for i, frame in enumerate(entry["pointer_frames"]):
            bank.non_cond_pointers[int(frame)] = pointers[i].clone()
    bank.last_frame = int(entry["last_frame"])
    return bank


def _restore_motion(prefix: str, entry: Mapping[str, Any] | None, host) -> ObjectMotionState | None:
    if entry is None:
        return None
    motion = ObjectMotionState(stable_count=int(entry["stable_count"]))
    if entry["has_filter"]:
        motion.mean = host(f"{prefix}/kalman_mean")
        motion.covariance = host(f"{prefix}/kalman_covariance")
    for frame_idx, iou, score_logit, motion_score in entry["records"]:
        motion.add_record(FrameRecord(int(frame_idx), iou, score_logit, motion_score))
    return motion
