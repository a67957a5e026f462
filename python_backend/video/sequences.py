"""Video sequences a server holds at once: one `VideoTracker` per Triton correlation id.

    store = SequenceStore(make_tracker, VideoSettings(...))
    tracker = store.new_tracker(corrid, options)  # InputError if the server is full
    store.hold(corrid, tracker, options)  # once its START request succeeded (`start`: both)
    tracker = store.get(corrid)     # InputError if unknown, ended or evicted
    options = store.options(corrid)  # what the sequence chose at START (its answer format)
    store.end(corrid)               # frees the tracker at once
    store.evict_idle()              # called on every request and by `IdleEvictor`'s timer

Correlation ids are ints or strings (`check_sequence_id`). Triton never tells the model that a
sequence went idle, so the store evicts idle sequences itself (`idle_timeout_s`). Thread-safe.

Design notes (why, and the policies): docs/serving.md
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sam2_triton.configs import dataclass_from_parameters
from sam2_triton.python_backend.errors import InputError, ServerFullError, UnknownSequenceError
from sam2_triton.python_backend.samurai import SamuraiSettings
from sam2_triton.python_backend.video.answers import AnswerFormat
from sam2_triton.python_backend.video.holes import HOLE_FILLINGS
from sam2_triton.python_backend.video.tracker import VideoTracker
from sam2_triton.wire import MAX_SEQUENCE_ID_BYTES

FORGOTTEN_IDS_KEPT = 4096  # ended / evicted ids remembered for the error message
PREPROCESSING_MODES = ("video", "image", "device")
MEMORY_STORAGES = ("bfloat16", "float32")
# Triton's sequence slots beyond max_sequences (under 1 KiB each in Triton): a START the model
# refuses keeps its Triton slot until the client sends END or the sequence idles out, and only
# while slots are free does a START reach the model (else it waits in Triton's backlog).
TRITON_SPARE_SEQUENCE_SLOTS = 4096
UINT64_MAX = 2**64 - 1

SequenceId = int | str  # Triton's correlation id: unsigned 64-bit integer or string


def check_sequence_id(value: object) -> SequenceId:
    """A request's correlation id as the store keys it; InputError unless it is an integer in
    1..2**64 - 1 or a string of 1..MAX_SEQUENCE_ID_BYTES bytes (UTF-8)."""
    if isinstance(value, str):
        size = len(value.encode("utf-8"))
        if not 1 <= size <= MAX_SEQUENCE_ID_BYTES:
            raise InputError(
                f"string sequence ids must have 1..{MAX_SEQUENCE_ID_BYTES} bytes; this one has "
                f"{size}"
            )
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= UINT64_MAX:
        return value
    raise InputError(
        f"sequence id {value!r} is neither an integer in 1..2**64 - 1 nor a non-empty string"
    )


@dataclass(frozen=True)
class VideoSettings:
    """Per-deployment limits of the video model (configs/serving.yaml, section `video`)."""

    max_objects: int  # objects per sequence
    max_prompted_frames: int  # conditioning (prompted or corrected) frames per object
    max_sequences: int  # sequences held at once; a START beyond is refused at once
    idle_timeout_s: float  # a sequence idle this long is evicted
    preprocessing: str  # "video" (SAM2VideoPredictor's frame loading) or "image"
    memory_storage: str  # "bfloat16" (as SAM 2 stores memories) or "float32"
    max_snapshot_bytes: int  # a sequence snapshot taken or restored holds at most this many bytes
    # "reference": SAM 2's hole filling (holes of up to the model's fill_hole_area low-res
    # pixels become foreground, as SAM2VideoPredictor with its CUDA extension); "off": none
    hole_filling: str = "reference"
    # frames of different sequences one execute takes (Triton's max_batch_size; 1: one at a
    # time) and how long Triton waits for more (sequence_batching oldest max_queue_delay)
    max_batch_frames: int = 8
    batch_queue_delay_us: int = 1000

    def __post_init__(self) -> None:
        counts = (self.max_objects, self.max_sequences, self.max_prompted_frames)
        if min(*counts, self.max_snapshot_bytes) < 1:
            raise ValueError(
                "max_objects, max_sequences, max_prompted_frames and max_snapshot_bytes must be "
                ">= 1"
            )
        if not self.idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be > 0, not {self.idle_timeout_s}")
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING_MODES}")
        if self.memory_storage not in MEMORY_STORAGES:
            raise ValueError(f"memory_storage must be one of {MEMORY_STORAGES}")
        if self.hole_filling not in HOLE_FILLINGS:
            raise ValueError(f"hole_filling must be one of {HOLE_FILLINGS}")
        if self.max_batch_frames < 1 or self.batch_queue_delay_us < 0:
            raise ValueError("max_batch_frames must be >= 1 and batch_queue_delay_us >= 0")

    @property
    def triton_sequence_slots(self) -> int:
        """Triton's max_candidate_sequences: room for every held sequence plus refused ones not
        ended yet, so that the model, not Triton's backlog, answers a START when it is full."""
        return self.max_sequences + TRITON_SPARE_SEQUENCE_SLOTS

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> VideoSettings:
        """From serving.yaml's `video` section or a model's string parameters
        (`dataclass_parameters` wrote them)."""
        try:
            return dataclass_from_parameters(cls, values)
        except KeyError as exc:
            raise ValueError(f"video settings lack {exc}") from None


@dataclass(frozen=True)
class SequenceOptions:
    """What a sequence may choose at START."""

    num_frames: int | None = None  # the video's length when known (None: a stream)
    samurai: SamuraiSettings | None = None  # None: plain SAM 2
    answer: AnswerFormat = AnswerFormat()  # what each answer holds (default: full-size masks)


@dataclass
class _Entry:
    tracker: VideoTracker
    options: SequenceOptions
    last_used: float


class SequenceStore:
    """Trackers by correlation id, bounded in number, evicted after `idle_timeout_s`."""

    def __init__(
        self,
        make_tracker: Callable[[SequenceOptions], VideoTracker],
        settings: VideoSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.make_tracker = make_tracker
        self.settings = settings
        self.clock = clock
        self._entries: dict[SequenceId, _Entry] = {}
        self._forgotten: OrderedDict[SequenceId, str] = OrderedDict()  # id -> why it is gone
        self._lock = threading.RLock()
        self.evictions = 0  # sequences dropped for idleness so far (metrics)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, sequence_id: SequenceId) -> bool:
        with self._lock:
            return sequence_id in self._entries

    @property
    def nbytes(self) -> int:
        """Bytes all held trackers keep (memory banks, caches)."""
        with self._lock:
            return sum(entry.tracker.nbytes for entry in self._entries.values())

    @property
    def num_objects(self) -> int:
        """Objects over all held sequences (tracked or prompted)."""
        with self._lock:
            return sum(len(entry.tracker.obj_ids) for entry in self._entries.values())

    def start(self, sequence_id: SequenceId, options: SequenceOptions) -> VideoTracker:
        """A fresh tracker held under `sequence_id` at once (replacing what the id held)."""
        with self._lock:
            tracker = self.new_tracker(sequence_id, options)
            self.hold(sequence_id, tracker, options)
            return tracker

    def new_tracker(self, sequence_id: SequenceId, options: SequenceOptions) -> VideoTracker:
        """A fresh tracker for a START of `sequence_id`, not held yet (`hold` it once the
        START request succeeded); InputError if the server is full. Changes no sequence."""
        with self._lock:
            self._check_room(sequence_id)
        return self.make_tracker(options)

    def hold(
        self, sequence_id: SequenceId, tracker: VideoTracker, options: SequenceOptions
    ) -> None:
        """Hold `tracker` (made for `options`) under `sequence_id`, replacing that id's
        sequence; InputError (and nothing changed) if the server is full."""
        with self._lock:
            self._check_room(sequence_id)
            self._entries[sequence_id] = _Entry(tracker, options, self.clock())
            self._forgotten.pop(sequence_id, None)

    def _check_room(self, sequence_id: SequenceId) -> None:
        """InputError unless a START of `sequence_id` fits (its own old sequence would be
        replaced); idle sequences are evicted first."""
        limit = self.settings.max_sequences
        if self._held_besides(sequence_id) >= limit:
            self.evict_idle()
        held = self._held_besides(sequence_id)
        if held >= limit:
            timeout = self.settings.idle_timeout_s
            raise ServerFullError(
                f"the server is full: it holds {held} video sequences, its maximum; no new "
                f"sequence can start now. Retry later (a sequence is freed by its END or after "
                f"{timeout:g} s without a request)"
            )

    def _held_besides(self, sequence_id: SequenceId) -> int:
        return len(self._entries) - (sequence_id in self._entries)

    def get(self, sequence_id: SequenceId) -> VideoTracker:
        """The tracker of a started sequence; InputError saying why if there is none."""
        with self._lock:
            entry = self._entry(sequence_id)
            entry.last_used = self.clock()
            return entry.tracker

    def options(self, sequence_id: SequenceId) -> SequenceOptions:
        """What a held sequence chose at START; InputError saying why if there is none."""
        with self._lock:
            return self._entry(sequence_id).options

    def _entry(self, sequence_id: SequenceId) -> _Entry:
        entry = self._entries.get(sequence_id)
        if entry is None:
            why = self._forgotten.get(sequence_id, "was never started (send START first)")
            raise UnknownSequenceError(f"video sequence {sequence_id!r} {why}")
        return entry

    def touch(self, sequence_id: SequenceId) -> None:
        """Restart the idle clock of a held sequence (after a request finished)."""
        with self._lock:
            entry = self._entries.get(sequence_id)
            if entry is not None:
                entry.last_used = self.clock()

    def end(self, sequence_id: SequenceId) -> bool:
        """Free the sequence at once; True if it was held."""
        with self._lock:
            held = self._entries.pop(sequence_id, None) is not None
            self._remember(sequence_id, "has ended (END was sent); start a new sequence with START")
            return held

    def discard(self, sequence_id: SequenceId, why: str) -> None:
        """Drop the sequence's state (its START request was refused), remembering why."""
        with self._lock:
            self._entries.pop(sequence_id, None)
            self._remember(sequence_id, why)

    def evict_idle(self) -> list[SequenceId]:
        """Drop sequences idle for `idle_timeout_s` or longer; return their ids."""
        timeout = self.settings.idle_timeout_s
        with self._lock:
            now = self.clock()
            idle = [sid for sid, entry in self._entries.items() if now - entry.last_used >= timeout]
            self.evictions += len(idle)
            for sequence_id in idle:
                del self._entries[sequence_id]
                self._remember(
                    sequence_id,
                    f"was evicted after {timeout:g} s without a request; start it again with START",
                )
            return idle

    def _remember(self, sequence_id: SequenceId, why: str) -> None:
        self._forgotten[sequence_id] = why
        self._forgotten.move_to_end(sequence_id)
        while len(self._forgotten) > FORGOTTEN_IDS_KEPT:
            self._forgotten.popitem(last=False)


class IdleEvictor:
    """A daemon thread calling `store.evict_idle()` every `interval_s`, so idle sequences are
    freed even when no request arrives. `stop()` ends it (the model's finalize)."""

    def __init__(self, store: SequenceStore, interval_s: float) -> None:
        self.store = store
        self.interval_s = float(interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sam2-video-evictor", daemon=True)

    def start(self) -> IdleEvictor:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.store.evict_idle()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 1.0)
