"""One request of the `track_video` model: parse, check, apply to the sequence's tracker.

Plain Python over numpy arrays (the Triton glue in python_backend/triton_io.py only reads the
tensors; names and meanings: model_repository/README.md). `parse_frame_request` -> a
`FrameRequest` (integer inputs within sam2_triton/wire.py's ranges); `VideoRequestHandler.handle`
checks it whole, then applies it (START, removals, prompts, track or correct, END) to the
`SequenceStore`'s tracker, so a bad request leaves the sequence as it was (a refused START leaves
no sequence under its id); `VideoRequestHandler.respond` does the same and returns the output
tensors, in the answer format the sequence chose at START (python_backend/video/answers.py).

Design notes (one request step by step): docs/serving.md
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sam2_triton.configs import RequestLimits
from sam2_triton.python_backend.errors import InputError, SnapshotError
from sam2_triton.python_backend.prompts import check_finite, check_within_image
from sam2_triton.python_backend.samurai import SamuraiSettings
from sam2_triton.python_backend.video.answers import AnswerFormat, answer_tensors
from sam2_triton.python_backend.video.batching import (
    BatchLimits,
    BatchStats,
    TrackItem,
    track_together,
)
from sam2_triton.python_backend.video.sequences import (
    SequenceId,
    SequenceOptions,
    SequenceStore,
    VideoSettings,
)
from sam2_triton.python_backend.video.snapshots import read_snapshot, restore_tracker
from sam2_triton.python_backend.video.tracker import FrameResult, VideoTracker
from sam2_triton.wire import (
    ANSWER,
    ANSWER_SIZE,
    BOX_OBJ_IDS,
    BOX_PROMPTS,
    FRAME_INDEX,
    MASK_OBJ_IDS,
    MASK_PROMPTS,
    MAX_FRAME_INDEX,
    MAX_NUM_FRAMES,
    MAX_OBJECT_ID,
    NUM_FRAMES,
    PADDING_LABEL,
    POINT_COORDS,
    POINT_LABELS,
    POINT_OBJ_IDS,
    REMOVE_OBJ_IDS,
    RESTORE_SNAPSHOT,
    SAMURAI,
    SAMURAI_SETTINGS,
    SNAPSHOT,
    TAKE_SNAPSHOT,
    VIDEO_POINT_LABELS,
)

# Per-sequence SAMURAI overrides: input name -> setting (configs/samurai.yaml).
SAMURAI_INPUTS: dict[str, str] = {name: setting for setting, (name, _) in SAMURAI_SETTINGS.items()}
# Integer SAMURAI inputs -> their wire dtype's range (SamuraiSettings checks the settings' own).
SAMURAI_INT_RANGES: dict[str, tuple[int, int]] = {
    name: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    for name, dtype in SAMURAI_SETTINGS.values()
    if np.issubdtype(dtype, np.integer)
}
# Inputs read only with START: the sequence's options (or a snapshot holding them).
START_OPTION_INPUTS = (NUM_FRAMES, SAMURAI, ANSWER, ANSWER_SIZE) + tuple(SAMURAI_INPUTS)
START_ONLY_INPUTS = START_OPTION_INPUTS + (RESTORE_SNAPSHOT,)
PROMPT_INPUTS = (
    POINT_OBJ_IDS,
    POINT_COORDS,
    POINT_LABELS,
    BOX_OBJ_IDS,
    BOX_PROMPTS,
    MASK_OBJ_IDS,
    MASK_PROMPTS,
)


@dataclass
class PointPrompt:
    coords: np.ndarray  # float32 [P, 2], pixels (x, y)
    labels: np.ndarray  # int32 [P], 0 background / 1 foreground


@dataclass
class FrameRequest:
    """A parsed request; arrays already checked for shape, type and finiteness."""

    sequence_id: SequenceId
    start: bool = False
    end: bool = False
    image: np.ndarray | None = None  # uint8 [H, W, 3]
    frame_index: int | None = None
    points: dict[int, PointPrompt] = field(default_factory=dict)
    boxes: dict[int, np.ndarray] = field(default_factory=dict)  # float32 [4] (x0, y0, x1, y1)
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # bool [H, W]
    remove: list[int] = field(default_factory=list)
    options: SequenceOptions = field(default_factory=SequenceOptions)
    take_snapshot: bool = False  # TAKE_SNAPSHOT: answer with the state before this request
    restore: bytes | None = None  # RESTORE_SNAPSHOT (START only): start from this snapshot
    snapshot: bytes | None = None  # filled by the handler when take_snapshot: the SNAPSHOT

    @property
    def prompted_ids(self) -> list[int]:
        return sorted(set(self.points) | set(self.boxes) | set(self.masks))

    @property
    def carries_nothing(self) -> bool:
        """No frame, frame index, prompt, removal or snapshot (an END-only request, say)."""
        return (
            not self.take_snapshot
            and self.image is None
            and self.frame_index is None
            and not self.prompted_ids
            and not self.remove
        )


def check_frame_index(frame_idx: int) -> int:
    """`frame_idx` if it lies in 0..MAX_FRAME_INDEX; InputError otherwise."""
    if not 0 <= frame_idx <= MAX_FRAME_INDEX:
        raise InputError(f"frame index {frame_idx} is outside 0..{MAX_FRAME_INDEX}")
    return frame_idx


def _integer(name: str, array: np.ndarray, low: int, high: int) -> int:
    """The one integer of a [1] tensor, within low..high (inclusive); InputError otherwise."""
    value = _scalar(name, array)
    if not np.issubdtype(type(value), np.integer) or not low <= int(value) <= high:
        raise InputError(f"{name} is {value}: must be an integer in {low}..{high}")
    return int(value)


def _object_ids(name: str, array: np.ndarray) -> list[int]:
    ids = np.asarray(array)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"{name} must be a 1-D integer tensor, got {ids.dtype} {list(ids.shape)}")
    values = [int(v) for v in ids]
    outside = [v for v in values if not 0 <= v <= MAX_OBJECT_ID]
    if outside:
        raise InputError(f"{name} holds {outside[0]}: object ids must be in 0..{MAX_OBJECT_ID}")
    if len(set(values)) != len(values):
        raise InputError(f"{name} repeats object ids {sorted(values)}: one row per object")
    return values


def _rows(name: str, ids_name: str, ids: list[int], array: np.ndarray | None) -> np.ndarray:
    if array is None:
        raise InputError(f"{ids_name} was sent without {name}: send both")
    if array.shape[0] != len(ids):
        raise InputError(
            f"{name} has {array.shape[0]} rows but {ids_name} names {len(ids)} objects"
        )
    return array


def _point_prompts(tensors: Mapping[str, np.ndarray]) -> dict[int, PointPrompt]:
    ids_array, coords, labels = (
        tensors.get(n) for n in (POINT_OBJ_IDS, POINT_COORDS, POINT_LABELS)
    )
    if ids_array is None:
        if coords is not None or labels is not None:
            raise InputError(
                "POINT_COORDS / POINT_LABELS need POINT_OBJ_IDS: the object of each row"
            )
        return {}
    ids = _object_ids(POINT_OBJ_IDS, ids_array)
    coords = _rows(POINT_COORDS, POINT_OBJ_IDS, ids, coords).astype(np.float32)
    labels = _rows(POINT_LABELS, POINT_OBJ_IDS, ids, labels)
    if coords.ndim != 3 or coords.shape[2] != 2:
        raise InputError(f"POINT_COORDS must be [objects, points, 2], got {list(coords.shape)}")
    if labels.shape != coords.shape[:2]:
        raise InputError(
            f"POINT_LABELS must be [objects, points] = {list(coords.shape[:2])}, "
            f"got {list(labels.shape)}"
        )
    check_finite(POINT_COORDS, coords)
    bad = ~np.isin(labels, VIDEO_POINT_LABELS)
    if np.any(bad):
        raise InputError(
            f"POINT_LABELS holds {int(labels[bad][0])}: labels must be 1 (foreground), "
            "0 (background) or -1 (padding); boxes go in BOXES"
        )
    prompts = {}
    for row, obj_id in enumerate(ids):
        keep = labels[row] != PADDING_LABEL
        if not np.any(keep):
            raise InputError(f"POINT_LABELS row {row} (object {obj_id}) is all padding")
        prompts[obj_id] = PointPrompt(coords[row][keep], labels[row][keep].astype(np.int32))
    return prompts


def _rows_by_object(
    tensors: Mapping[str, np.ndarray], ids_name: str, rows_name: str
) -> tuple[list[int], np.ndarray | None]:
    """(object ids, one row per id) of a single-tensor prompt kind; ([], None) when not sent."""
    ids_array, rows = tensors.get(ids_name), tensors.get(rows_name)
    if ids_array is None:
        if rows is not None:
            raise InputError(f"{rows_name} needs {ids_name}: the object of each row")
        return [], None
    ids = _object_ids(ids_name, ids_array)
    return ids, _rows(rows_name, ids_name, ids, rows)


def _box_prompts(tensors: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
    ids, boxes = _rows_by_object(tensors, BOX_OBJ_IDS, BOX_PROMPTS)
    if boxes is None:
        return {}
    boxes = boxes.astype(np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"BOXES must be [objects, 4] (x0, y0, x1, y1), got {list(boxes.shape)}")
    check_finite(BOX_PROMPTS, boxes)
    return {obj_id: boxes[row] for row, obj_id in enumerate(ids)}


def _mask_prompts(tensors: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
    ids, masks = _rows_by_object(tensors, MASK_OBJ_IDS, MASK_PROMPTS)
    if masks is None:
        return {}
    if masks.ndim != 3:
        raise InputError(f"MASK_PROMPTS must be [objects, height, width], got {list(masks.shape)}")
    return {obj_id: masks[row].astype(bool) for row, obj_id in enumerate(ids)}


def _scalar(name: str, array: np.ndarray):
    if array.size != 1:
        raise InputError(f"{name} must hold exactly one value, got shape {list(array.shape)}")
    return array.reshape(-1)[0]


def _options(
    tensors: Mapping[str, np.ndarray], samurai_defaults: SamuraiSettings
) -> SequenceOptions:
    num_frames = None
    if NUM_FRAMES in tensors:
        num_frames = _integer(NUM_FRAMES, tensors[NUM_FRAMES], 1, MAX_NUM_FRAMES)
    overrides = {
        setting: (
            _integer(name, tensors[name], *SAMURAI_INT_RANGES[name])
            if name in SAMURAI_INT_RANGES
            else _scalar(name, tensors[name])
        )
        for name, setting in SAMURAI_INPUTS.items()
        if name in tensors
    }
    samurai = SAMURAI in tensors and bool(_scalar(SAMURAI, tensors[SAMURAI]))
    if overrides and not samurai:
        raise InputError(f"SAMURAI settings {sorted(overrides)} were sent without SAMURAI = true")
    settings = samurai_defaults.with_overrides(overrides) if samurai else None
    answer = AnswerFormat.from_tensors(tensors.get(ANSWER), tensors.get(ANSWER_SIZE))
    return SequenceOptions(num_frames=num_frames, samurai=settings, answer=answer)


def _restore_snapshot(sent: Mapping[str, np.ndarray]) -> bytes | None:
    """RESTORE_SNAPSHOT's bytes (UINT8 [B]), or None; InputError when START options come with
    it (the snapshot holds the sequence's options)."""
    if RESTORE_SNAPSHOT not in sent:
        return None
    options = [name for name in START_OPTION_INPUTS if name in sent]
    if options:
        raise InputError(
            f"{', '.join(options)} cannot be sent with {RESTORE_SNAPSHOT}: a sequence started "
            "from a snapshot keeps the options it was started with"
        )
    data = np.asarray(sent[RESTORE_SNAPSHOT])
    if data.ndim != 1 or data.dtype != np.uint8:
        raise InputError(
            f"{RESTORE_SNAPSHOT} must be a 1-D UINT8 tensor, got {data.dtype} {list(data.shape)}"
        )
    return data.tobytes()


def parse_frame_request(
    sequence_id: SequenceId,
    start: bool,
    end: bool,
    tensors: Mapping[str, np.ndarray | None],
    image: np.ndarray | None,
    samurai_defaults: SamuraiSettings,
) -> FrameRequest:
    """A FrameRequest from the request's optional tensors (name -> array or None) and its
    already decoded frame; InputError naming the first problem."""
    sent = {name: array for name, array in tensors.items() if array is not None}
    if not start:
        late = [name for name in START_ONLY_INPUTS if name in sent]
        if late:
            raise InputError(
                f"{', '.join(late)} can only be sent with the sequence's START request"
            )
    frame_index = None
    if FRAME_INDEX in sent:
        frame_index = _integer(FRAME_INDEX, sent[FRAME_INDEX], 0, MAX_FRAME_INDEX)
    remove = []
    if REMOVE_OBJ_IDS in sent:
        remove = _object_ids(REMOVE_OBJ_IDS, sent[REMOVE_OBJ_IDS])
    take_snapshot = TAKE_SNAPSHOT in sent and bool(_scalar(TAKE_SNAPSHOT, sent[TAKE_SNAPSHOT]))
    restore = _restore_snapshot(sent)
    request = FrameRequest(
        sequence_id=sequence_id,
        start=bool(start),
        end=bool(end),
        image=image,
        frame_index=frame_index,
        points=_point_prompts(sent),
        boxes=_box_prompts(sent),
        masks=_mask_prompts(sent),
        remove=remove,
        options=_options(sent, samurai_defaults) if start else SequenceOptions(),
        take_snapshot=take_snapshot,
        restore=restore,
    )
    both = sorted(set(request.masks) & (set(request.points) | set(request.boxes)))
    if both:
        raise InputError(
            f"objects {both} have a mask prompt and points/boxes: a mask prompt stands alone"
        )
    return request


def is_plain_frame(request: FrameRequest) -> bool:
    """A new frame of a held sequence, perhaps its last (END), and nothing else (no START,
    prompt, removal or snapshot): such frames of different sequences are tracked together."""
    return (
        request.image is not None
        and not (request.start or request.take_snapshot)
        and request.restore is None
        and not request.prompted_ids
        and not request.remove
    )


class VideoRequestHandler:
    """Applies FrameRequests to the trackers of a SequenceStore."""

    def __init__(
        self,
        store: SequenceStore,
        settings: VideoSettings,
        limits: RequestLimits,
        model: Mapping[str, str] | None = None,
        batch_limits: BatchLimits | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.limits = limits
        # snapshots.model_identity of the served model: what snapshots are taken and restored
        # for (None: this handler refuses snapshots)
        self.model = None if model is None else dict(model)
        # network batch limits of frames tracked together, and what they ran (metrics)
        self.batch_limits = batch_limits or BatchLimits()
        self.batch_stats = BatchStats()

    def handle(self, request: FrameRequest) -> FrameResult | None:
        """Track / correct as the request says; None when it tracks nothing. A refused or
        failed request is handled by `refused` (the InputError or other exception is raised)."""
        return self._handle(request)[0]

    def respond(self, request: FrameRequest) -> dict[str, np.ndarray]:
        """`handle`, then the response tensors in the sequence's answer format (chosen at
        START; the default format for an END alone of a sequence not held)."""
        result, options = self._handle(request)
        return self._answer(request, result, options)

    def _answer(
        self, request: FrameRequest, result: FrameResult | None, options: SequenceOptions
    ) -> dict[str, np.ndarray]:
        """The response tensors of a handled request."""
        image = request.image
        size = None if image is None else (int(image.shape[0]), int(image.shape[1]))
        state_bytes = self.state_bytes(request.sequence_id)
        tensors = answer_tensors(result, options.answer, state_bytes, size)
        tensors[SNAPSHOT] = np.frombuffer(request.snapshot or b"", dtype=np.uint8)
        return tensors

    # -- several requests in one batch (python_backend/video/batching.py) ------------------

    def respond_all(
        self, requests: Sequence[FrameRequest]
    ) -> list[dict[str, np.ndarray] | Exception]:
        """`respond` to each request of one batch, in order: each request's tensors, or the
        exception that refused it (that request alone). New frames of different sequences
        (`is_plain_frame`: no START, prompt, removal or snapshot) are tracked
        together (`batching.track_together`); the others run one by one, after the frames
        of their own sequence that came before them."""
        outcomes: list[dict[str, np.ndarray] | Exception | None] = [None] * len(requests)
        together: dict[SequenceId, int] = {}  # sequence -> index of its frame waiting

        def flush() -> None:
            indices = list(together.values())
            answers = self._track_together([requests[i] for i in indices])
            for i, outcome in zip(indices, answers):
                outcomes[i] = outcome
            together.clear()

        for i, request in enumerate(requests):
            if request.sequence_id in together:
                flush()
            if is_plain_frame(request):
                together[request.sequence_id] = i
                continue
            try:
                outcomes[i] = self.respond(request)
            except Exception as exc:
                outcomes[i] = exc
        flush()
        return [outcome for outcome in outcomes if outcome is not None]

    def _track_together(
        self, requests: Sequence[FrameRequest]
    ) -> list[dict[str, np.ndarray] | Exception]:
        """Plain new frames of different sequences: each checked as `_handle` checks it, then
        all tracked together; each request's tensors or exception."""
        if not requests:
            return []
        self.store.evict_idle()
        outcomes: list[dict[str, np.ndarray] | Exception] = []
        items: list[TrackItem] = []
        checked: list[tuple[int, SequenceOptions]] = []
        for request in requests:
            outcomes.append(InputError("not tracked"))  # replaced below
            try:
                tracker = self.store.get(request.sequence_id)
                options = self.store.options(request.sequence_id)
                frame_idx, _ = self._check(tracker, request, options.answer)
            except Exception as exc:
                self.refused(request.sequence_id, False, request.end, exc)
                outcomes[-1] = exc
                continue
            assert request.image is not None and frame_idx is not None  # a plain frame
            items.append(TrackItem(tracker, frame_idx, request.image))
            checked.append((len(outcomes) - 1, options))
        results = track_together(items, self.batch_limits, self.batch_stats)
        for (k, options), result in zip(checked, results):
            request = requests[k]
            if isinstance(result, Exception):
                self.refused(request.sequence_id, False, request.end, result)
                outcomes[k] = result
                continue
            if request.end:
                self.store.end(request.sequence_id)
            else:  # idle time counts from the end of the last request
                self.store.touch(request.sequence_id)
            try:
                outcomes[k] = self._answer(request, result, options)
            except Exception as exc:
                outcomes[k] = exc
        return outcomes

    def _handle(self, request: FrameRequest) -> tuple[FrameResult | None, SequenceOptions]:
        """(what `handle` returns, the options of the request's sequence)."""
        self.store.evict_idle()
        sequence_id = request.sequence_id
        if request.end and not request.start and request.carries_nothing:
            options = self._held_options(sequence_id)
            self.store.end(sequence_id)  # END alone always succeeds, held or not
            return None, options
        try:
            if request.start and request.restore is not None:
                tracker, options = self._restored(sequence_id, request.restore)
            elif request.start:
                options = request.options
                tracker = self.store.new_tracker(sequence_id, options)
            else:
                tracker = self.store.get(sequence_id)
                options = self.store.options(sequence_id)
            if request.take_snapshot:
                request.snapshot = self._snapshot(tracker, options)
            result = self._apply(tracker, request, options.answer)
            if request.start and not request.end:
                self.store.hold(sequence_id, tracker, options)
        except Exception as exc:
            self.refused(sequence_id, request.start, request.end, exc)
            raise
        if request.end:
            self.store.end(sequence_id)
        else:  # idle time counts from the end of the last request, not its start
            self.store.touch(sequence_id)
        return result, options

    # -- snapshots (python_backend/video/snapshots.py) -------------------------------------

    def _model(self) -> Mapping[str, str]:
        if self.model is None:
            raise SnapshotError("this server was started without a model identity: no snapshots")
        return self.model

    def _snapshot(self, tracker: VideoTracker, options: SequenceOptions) -> bytes:
        """The sequence's snapshot bytes, with its answer format; SnapshotError beyond the
        server's max_snapshot_bytes."""
        answer = options.answer
        sequence = {
            "answer": answer.kind,
            "answer_size": None if answer.size is None else list(answer.size),
        }
        return tracker.snapshot(self._model(), sequence, self.settings.max_snapshot_bytes)

    def _restored(
        self, sequence_id: SequenceId, data: bytes
    ) -> tuple[VideoTracker, SequenceOptions]:
        """A fresh tracker for a START of `sequence_id` from snapshot `data`, with the options
        the snapshot holds (not held yet); SnapshotError when the snapshot is refused."""
        snapshot = read_snapshot(
            data, self._model(), self.settings.memory_storage, self.settings.max_snapshot_bytes
        )
        size = snapshot.sequence.get("answer_size")
        try:
            answer = AnswerFormat(
                snapshot.sequence.get("answer", AnswerFormat().kind),
                None if size is None else (int(size[0]), int(size[1])),
            )
        except InputError as exc:
            raise SnapshotError(f"the sequence snapshot holds a bad answer format: {exc}") from None
        options = SequenceOptions(
            num_frames=snapshot.num_frames, samurai=snapshot.samurai, answer=answer
        )
        tracker = self.store.new_tracker(sequence_id, options)
        restore_tracker(tracker, snapshot)
        return tracker, options

    def _held_options(self, sequence_id: SequenceId) -> SequenceOptions:
        """The options of a held sequence; the defaults when the id holds none."""
        try:
            return self.store.options(sequence_id)
        except InputError:
            return SequenceOptions()

    def refused(self, sequence_id: SequenceId, start: bool, end: bool, error: Exception) -> None:
        """What a refused (InputError) or failed request leaves: END ends the sequence; a START
        leaves no sequence under its id (what the id held ends too), and the id's next request
        without START is told why; otherwise the sequence stays as it was."""
        if end:
            self.store.end(sequence_id)
        elif start:
            why = str(error)
            if not isinstance(error, InputError):
                why = f"{type(error).__name__}: {why}"
            self.store.discard(sequence_id, f"could not start ({why}); send START again")
        else:
            self.store.touch(sequence_id)

    def state_bytes(self, sequence_id: SequenceId) -> int:
        try:
            return self.store.get(sequence_id).nbytes
        except InputError:  # ended with this request
            return 0

    # -- checks, then changes ---------------------------------------------------------------

    def _apply(
        self, tracker: VideoTracker, request: FrameRequest, answer: AnswerFormat
    ) -> FrameResult | None:
        frame_idx, size = self._check(tracker, request, answer)
        for obj_id in request.remove:
            tracker.remove_object(obj_id)
        if frame_idx is None:
            return None
        try:
            for obj_id in request.prompted_ids:
                points = request.points.get(obj_id)
                tracker.add_prompt(
                    frame_idx,
                    obj_id,
                    points=None if points is None else points.coords,
                    labels=None if points is None else points.labels,
                    box=request.boxes.get(obj_id),
                    mask=request.masks.get(obj_id),
                )
            if request.image is not None:
                return tracker.track(frame_idx, request.image)
            return tracker.correct(frame_idx)
        except BaseException:
            tracker.discard_pending()
            raise

    def _check(
        self, tracker: VideoTracker, request: FrameRequest, answer: AnswerFormat
    ) -> tuple[int | None, tuple[int, int] | None]:
        """(frame to track or correct, its size), or (None, None); InputError if the request
        does not fit the sequence or its answer (in `answer`'s format) the mask budget."""
        known = set(tracker.obj_ids)
        unknown = [obj_id for obj_id in request.remove if obj_id not in known]
        if unknown:
            raise InputError(
                f"cannot remove objects {unknown}: the sequence tracks "
                f"{sorted(known) or 'no objects'}"
            )
        after = (known - set(request.remove)) | set(request.prompted_ids)
        if len(after) > self.settings.max_objects:
            raise InputError(
                f"a sequence tracks at most {self.settings.max_objects} objects; this "
                f"request would make it {len(after)}"
            )
        last = tracker.last_frame
        self._check_prompted_frames(tracker, request)
        if request.image is not None:
            frame_idx = last + 1 if request.frame_index is None else request.frame_index
            frame_idx = tracker.check_new_frame(check_frame_index(frame_idx))
            size = (int(request.image.shape[0]), int(request.image.shape[1]))
            tracker.check_frame_size(frame_idx, size)
        elif request.prompted_ids:
            if last < 0 or tracker.frame_size is None:
                raise InputError(
                    "prompts without an image correct the last tracked frame, and no frame "
                    "was tracked yet: send the frame (IMAGE or IMAGE_RAW) with its prompts"
                )
            frame_idx = last if request.frame_index is None else request.frame_index
            if frame_idx != last:
                raise InputError(
                    f"without an image, prompts correct the last tracked frame ({last}); "
                    f"FRAME_INDEX is {frame_idx}. Send the image to prompt a new frame"
                )
            size = tracker.frame_size
        else:
            if request.frame_index is not None:
                raise InputError("FRAME_INDEX was sent without an image or prompts")
            return None, None
        self._check_prompts(request, size)
        answer.check_budget(size, len(after), self.limits.max_mask_bytes)
        return frame_idx, size

    def _check_prompted_frames(self, tracker: VideoTracker, request: FrameRequest) -> None:
        """A prompt on a frame makes it one more conditioning frame of the object (unless it
        already is one); SAM 2 attends to all of them, so their number is capped."""
        limit = self.settings.max_prompted_frames
        tracked = set(tracker.obj_ids) - set(request.remove)
        for obj_id in request.prompted_ids:
            if obj_id not in tracked:
                continue
            frames = tracker.conditioning_frames(obj_id)
            held = len(frames)
            if held >= limit and not (request.image is None and tracker.last_frame in frames):
                raise InputError(
                    f"object {obj_id} was prompted on {held} frames, the most this server "
                    f"keeps per object ({limit}): remove the object and prompt it anew"
                )

    def _check_prompts(self, request: FrameRequest, size: tuple[int, int]) -> None:
        margin = self.limits.point_margin
        for obj_id, prompt in request.points.items():
            check_within_image(f"POINT_COORDS of object {obj_id}", prompt.coords, size, margin)
            count = prompt.labels.shape[0] + (2 if obj_id in request.boxes else 0)
            if count > self.limits.max_points:
                raise InputError(
                    f"object {obj_id} has {count} prompt points (a box counts 2); "
                    f"at most {self.limits.max_points}"
                )
        for obj_id, box in request.boxes.items():
            check_within_image(f"BOXES of object {obj_id}", box.reshape(2, 2), size, margin)
            if box[2] < box[0] or box[3] < box[1]:
                raise InputError(
                    f"box of object {obj_id} is {box.tolist()}: need x0 <= x1 and y0 <= y1"
                )
        for obj_id, mask in request.masks.items():
            VideoTracker.check_mask_size(obj_id, mask, size)
