"""Video object tracking with the `track_video` sequence model: one Triton sequence per video.

>>> client = Sam2Client("localhost:8001", protocol="grpc")       # or Sam2Client("localhost:8000")
>>> with client.video_session() as video:                        # END is sent on leaving
...     first = video.track("frame_00000.jpg", boxes={1: [40, 30, 120, 110]})
...     second = video.track("frame_00001.jpg")                  # objects follow by themselves
...     fixed = video.correct(points={1: ([[60, 70]], [0])})     # fix frame 1 with a click
...     first.masks.shape, first.obj_ids                          # ((N, H, W), [1])
>>> with client.video_session(answer="rle") as video:            # compact answers (see below)
...     video.track("frame_00000.jpg", boxes={1: box}).rle          # [{"size": .., "counts": ..}]
>>> with client.video_session() as video:                        # a whole video, pipelined
...     for result in video.track_frames(frames, {0: FramePrompts(boxes={1: box})}):
...         ...

Prompts per object id (integers >= 0), pixels of the frame: points {obj_id: (coords [[x, y],
...], labels [1 or 0, ...])}, boxes {obj_id: [x0, y0, x1, y1]}, masks {obj_id: bool [H, W]}.
Frames: anything `client/images.py` accepts. Requests carry Triton's sequence controls; over
gRPC they share one stream, so `track_frames` keeps several frames in flight. The server checks
what the client does not. Answers (`answer`, chosen for the whole session): full-size masks,
COCO RLE of them, or masks / logits at a smaller `answer_size` (sam2_triton/wire.py
ANSWER_KINDS). Usage: client/README.md; the sequence model: docs/serving.md
"""

from __future__ import annotations

import collections
import queue
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from tritonclient.utils import InferenceServerException

from sam2_triton import wire
from sam2_triton.client.errors import Sam2ClientError
from sam2_triton.client.images import ImageLike, image_tensor
from sam2_triton.client.results import VideoFrameResult
from sam2_triton.client.transport import DEFAULT_TIMEOUT_S, Transport

if TYPE_CHECKING:
    from typing_extensions import Self

PointPrompts = Mapping[int, tuple[ArrayLike, ArrayLike]]  # obj_id -> (coords [P, 2], labels [P])
BoxPrompts = Mapping[int, ArrayLike]  # obj_id -> [x0, y0, x1, y1]
MaskPrompts = Mapping[int, ArrayLike]  # obj_id -> bool [H, W]

DEFAULT_MAX_IN_FLIGHT = 2
SEQUENCE_ID_BITS = 63  # positive in a signed int64 too (Triton's correlation ids are uint64)

# Triton's own answer to a non-START request of a sequence it does not hold.
_UNKNOWN_SEQUENCE = "must specify the START flag"
# Statuses of a request whose server is gone or unreachable (no status at all: no answer).
_SERVER_LOST_STATUSES = (
    "StatusCode.UNAVAILABLE",
    "StatusCode.CANCELLED",
    "StatusCode.DEADLINE_EXCEEDED",
)
_REQUEST_ID = re.compile(r"\[request id: ([^\]]*)\]")


def server_lost(error: Sam2ClientError) -> bool:
    """Whether `error` means the sequence's server is gone: no answer (connection refused or
    cut, timeout), a broken gRPC stream, or a server that does not hold the sequence (restarted,
    or another one behind the same address)."""
    return (
        error.status is None
        or error.status in _SERVER_LOST_STATUSES
        or _UNKNOWN_SEQUENCE in str(error)
        or "does not hold video sequence" in str(error)
    )


def new_sequence_id() -> int:
    """A random, non-zero correlation id below 2**63."""
    while True:
        sequence_id = secrets.randbits(SEQUENCE_ID_BITS)
        if sequence_id:
            return sequence_id


def _obj_id(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what}: object ids must be integers, got {value!r}")
    if value < 0:
        raise ValueError(f"{what}: object ids must be >= 0, got {value}")
    return int(value)


def point_tensors(points: PointPrompts) -> dict[str, np.ndarray]:
    """POINT_OBJ_IDS int64 [Np], POINT_COORDS float32 [Np, P, 2], POINT_LABELS int32 [Np, P].

    Rows follow ascending object id; rows with fewer than P points are padded with label -1
    (coordinates 0). An object's coords may be one [x, y] or [P, 2]; labels [P].
    """
    ids, coords, labels = [], [], []
    for obj_id, prompt in sorted((_obj_id(k, "points"), v) for k, v in points.items()):
        try:
            xy, lab = prompt
        except (TypeError, ValueError):
            raise ValueError(
                f"points of object {obj_id} must be (coords [[x, y], ...], labels [...])"
            ) from None
        xy = np.asarray(xy, dtype=np.float32)
        xy = xy.reshape(1, 2) if xy.shape == (2,) else xy
        lab = np.asarray(lab, dtype=np.int32).reshape(-1)
        if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] == 0:
            raise ValueError(
                f"points of object {obj_id}: coords must be [P, 2], got {list(xy.shape)}"
            )
        if lab.shape[0] != xy.shape[0]:
            raise ValueError(
                f"points of object {obj_id}: {xy.shape[0]} coordinate pair(s) but "
                f"{lab.shape[0]} label(s)"
            )
        ids.append(obj_id)
        coords.append(xy)
        labels.append(lab)
    if not ids:
        return {}
    width = max(len(row) for row in labels)
    coords_tensor = np.zeros((len(ids), width, 2), np.float32)
    labels_tensor = np.full((len(ids), width), wire.PADDING_LABEL, np.int32)
    for row, (xy, lab) in enumerate(zip(coords, labels)):
        coords_tensor[row, : len(lab)] = xy
        labels_tensor[row, : len(lab)] = lab
    return {
        wire.POINT_OBJ_IDS: np.array(ids, np.int64),
        wire.POINT_COORDS: coords_tensor,
        wire.POINT_LABELS: labels_tensor,
    }


def box_tensors(boxes: BoxPrompts) -> dict[str, np.ndarray]:
    """BOX_OBJ_IDS int64 [Nb], BOXES float32 [Nb, 4] (x0, y0, x1, y1), ascending object id."""
    rows = sorted((_obj_id(k, "boxes"), v) for k, v in boxes.items())
    if not rows:
        return {}
    values = []
    for obj_id, box in rows:
        box = np.asarray(box, dtype=np.float32).reshape(-1)
        if box.shape != (4,):
            raise ValueError(
                f"box of object {obj_id} must be [x0, y0, x1, y1], got {box.size} values"
            )
        values.append(box)
    return {
        wire.BOX_OBJ_IDS: np.array([obj_id for obj_id, _ in rows], np.int64),
        wire.BOX_PROMPTS: np.stack(values),
    }


def mask_tensors(masks: MaskPrompts) -> dict[str, np.ndarray]:
    """MASK_OBJ_IDS int64 [Nm], MASK_PROMPTS bool [Nm, H, W], ascending object id."""
    rows = sorted((_obj_id(k, "masks"), np.asarray(v, dtype=bool)) for k, v in masks.items())
    if not rows:
        return {}
    shapes = {mask.shape for _, mask in rows}
    if any(len(shape) != 2 for shape in shapes) or len(shapes) > 1:
        raise ValueError(
            f"mask prompts must all be [H, W] of the frame, got shapes {sorted(shapes)}"
        )
    return {
        wire.MASK_OBJ_IDS: np.array([obj_id for obj_id, _ in rows], np.int64),
        wire.MASK_PROMPTS: np.stack([mask for _, mask in rows]),
    }


def setting_tensors(
    settings: Mapping[str, Any], table: Mapping[str, tuple], what: str
) -> dict[str, np.ndarray]:
    """Settings (keys of `table`: name -> (input, dtype), e.g. wire.SAMURAI_SETTINGS) ->
    [1] tensors. None values are left out (server default); unknown names raise TypeError,
    a fraction for an integer setting ValueError; `what` names the kind in messages."""
    tensors = {}
    for key, value in settings.items():
        if key not in table:
            raise TypeError(f"unknown {what} setting {key!r} (known: {', '.join(table)})")
        if value is None:
            continue
        name, dtype = table[key]
        if np.issubdtype(dtype, np.integer) and float(value) != int(value):
            raise ValueError(f"{what} setting {key} must be a whole number, got {value!r}")
        tensors[name] = np.array([value], dtype=dtype)
    return tensors


def samurai_tensors(settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """SAMURAI settings (wire.SAMURAI_SETTINGS names, configs/samurai.yaml) -> [1] tensors."""
    return setting_tensors(settings, wire.SAMURAI_SETTINGS, "SAMURAI")


@dataclass(frozen=True)
class FramePrompts:
    """What to tell the tracker on one frame: new prompts per object, objects to forget.

    points {obj_id: (coords [P, 2], labels [P])}, boxes {obj_id: [x0, y0, x1, y1]},
    masks {obj_id: bool [H, W]}, remove [obj_id, ...] (applied before the prompts).
    """

    points: PointPrompts | None = None
    boxes: BoxPrompts | None = None
    masks: MaskPrompts | None = None
    remove: Sequence[int] | None = None

    def tensors(self) -> dict[str, np.ndarray]:
        """The request's prompt and removal tensors (none for an empty FramePrompts)."""
        tensors = {
            **point_tensors(self.points or {}),
            **box_tensors(self.boxes or {}),
            **mask_tensors(self.masks or {}),
        }
        if self.remove:
            tensors[wire.REMOVE_OBJ_IDS] = np.array(
                [_obj_id(v, "remove") for v in self.remove], np.int64
            )
        return tensors

    @classmethod
    def of(cls, value: FramePrompts | Mapping[str, Any]) -> FramePrompts:
        """A FramePrompts, or one from a mapping with keys points / boxes / masks / remove."""
        if isinstance(value, FramePrompts):
            return value
        unknown = set(value) - {"points", "boxes", "masks", "remove"}
        if unknown:
            raise TypeError(
                f"unknown frame prompt keys {sorted(unknown)}: use points, boxes, masks, remove"
            )
        return cls(**value)


def _frame_index_tensor(index: int) -> dict[str, np.ndarray]:
    return {wire.FRAME_INDEX: np.array([int(index)], np.int64)}


def answer_tensors(answer: str, answer_size: Sequence[int] | None) -> dict[str, np.ndarray]:
    """START tensors choosing a session's answers: none for the default "masks"; ANSWER
    (BYTES [1]) otherwise, with ANSWER_SIZE (INT64 [2], h, w) for "small_masks" / "logits".
    ValueError for an unknown kind, a missing or needless size, or sides that are not whole
    numbers >= 1 (the server checks the upper bound, wire.MAX_ANSWER_SIDE)."""
    if answer not in wire.ANSWER_KINDS:
        raise ValueError(f"unknown answer {answer!r} (known: {', '.join(wire.ANSWER_KINDS)})")
    sized = answer in wire.SIZED_ANSWERS
    if sized != (answer_size is not None):
        raise ValueError(
            f"answer {answer!r} needs answer_size (h, w)"
            if sized
            else f"answer_size is only used with answer {' or '.join(wire.SIZED_ANSWERS)}"
        )
    tensors = {}
    if answer != wire.ANSWER_MASKS:
        tensors[wire.ANSWER] = np.array([answer.encode("utf-8")], dtype=np.object_)
    if answer_size is not None:
        sides = list(answer_size)
        if len(sides) != 2 or any(
            isinstance(v, (bool, np.bool_)) or float(v) != int(v) or v < 1 for v in sides
        ):
            raise ValueError(
                f"answer_size must be (h, w), two whole numbers >= 1, got {answer_size!r}"
            )
        tensors[wire.ANSWER_SIZE] = np.array([int(v) for v in sides], np.int64)
    return tensors


def batch_of_one(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A track_video request's tensors with Triton's batch axis first (size 1): the model
    batches frames of several sequences (max_batch_size > 0), so every tensor has one, which
    the answers' tensors have too."""
    return {name: np.asarray(array)[None] for name, array in tensors.items()}


class SequenceTransport(Transport):
    """A Transport for one Triton sequence of `model`: each request carries `sequence_id` and
    the START / END flags. A request is sent with `submit`, which returns a ticket, and its
    answer collected with `result(ticket)`.

    Over HTTP, `submit` runs the request at once (plain `infer`). Over gRPC the requests go on
    one bidirectional stream, opened on the first `submit`, so several can be outstanding;
    answers are matched to requests by request id (errors carry none: Triton's error
    messages are matched by the "[request id: N]" they start with, else to the oldest
    request still waiting). A failure of the stream itself fails every outstanding request.
    Not thread-safe; one per session, closed with `close`.
    """

    def __init__(
        self,
        url: str,
        protocol: str,
        model: str,
        sequence_id: int,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ):
        super().__init__(url, protocol, timeout_s)
        self.model = model
        self.sequence_id = int(sequence_id)
        self._next_ticket = 0
        # Tickets sent on the stream and not answered yet, oldest first.
        self._waiting: collections.deque[int] = collections.deque()
        self._answers: dict[int, tuple[Any, BaseException | None]] = {}
        self._responses: queue.Queue[tuple[Any, InferenceServerException | None]] = queue.Queue()
        self._stream_open = False
        self._stream_error: BaseException | None = None  # the stream is unusable

    @property
    def routing_headers(self) -> dict[str, str]:
        """Sent with every request of the sequence (HTTP headers; gRPC metadata of the stream)
        so that a proxy in front of several servers keeps the video on one of them
        (docs/deployment.md#several-servers)."""
        return {wire.SEQUENCE_ROUTING_HEADER: str(self.sequence_id)}

    @property
    def outstanding(self) -> int:
        """Requests submitted whose answer was not collected yet."""
        return len(self._waiting) + len(self._answers)

    def submit(
        self,
        tensors: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        start: bool = False,
        end: bool = False,
    ) -> int:
        """Send one request of the sequence; returns its ticket for `result`."""
        ticket = self._next_ticket
        self._next_ticket += 1
        controls = {"sequence_id": self.sequence_id, "sequence_start": start, "sequence_end": end}
        if self.protocol == "http":
            try:
                answer = self._client.infer(
                    self.model,
                    self.make_inputs(batch_of_one(tensors)),
                    outputs=self.make_outputs(outputs),
                    request_id=str(ticket),
                    headers=self.routing_headers,
                    **controls,
                    **self._call_options,
                )
                self._answers[ticket] = (answer, None)
            except (InferenceServerException, OSError) as error:
                self._answers[ticket] = (None, error)
            return ticket
        if self._stream_error is not None:
            raise self._failure(self._stream_error)
        try:
            if not self._stream_open:
                # the stream's metadata: a proxy routes the whole stream by it
                self._client.start_stream(callback=self._on_response, headers=self.routing_headers)
                self._stream_open = True
            self._client.async_stream_infer(
                self.model,
                self.make_inputs(batch_of_one(tensors)),
                outputs=self.make_outputs(outputs),
                request_id=str(ticket),
                **controls,
            )
        except InferenceServerException as error:
            # A dead stream refuses requests; the reason comes through the callback.
            self._await_stream_error()
            raise self._failure(self._stream_error or error) from None
        self._waiting.append(ticket)
        return ticket

    def result(self, ticket: int, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """The outputs named in `outputs` of the request `ticket`; Sam2ClientError if the
        server rejected it, the stream failed, or no answer came within `timeout_s`."""
        while ticket not in self._answers:
            if ticket not in self._waiting:
                raise KeyError(f"no request {ticket} is outstanding")
            self._receive()
        answer, error = self._answers.pop(ticket)
        if error is not None:
            raise self._failure(error)
        arrays = {}
        for name in outputs:
            array = answer.as_numpy(name)
            if array is None:
                raise Sam2ClientError(
                    f"{self.model}: the server's answer has no {name} output", model=self.model
                )
            arrays[name] = array[0]  # the batch axis: one request
        return arrays

    def close(self) -> None:
        """Close the stream and the connection; answers not collected yet are dropped (requests
        still on their way are cancelled)."""
        try:
            if self._stream_open:
                broken = bool(self._waiting) or self._stream_error is not None
                self._client.stop_stream(cancel_requests=broken)
                self._stream_open = False
        finally:
            self._waiting.clear()
            self._answers.clear()
            super().close()

    # -- gRPC stream ------------------------------------------------------------------------

    def _on_response(self, result: Any, error: InferenceServerException | None) -> None:
        """tritonclient's stream callback (runs on the stream's thread)."""
        self._responses.put((result, error))

    def _receive(self) -> None:
        """Wait for the next answer on the stream and file it under its ticket."""
        try:
            result, error = self._responses.get(timeout=self.timeout_s)
        except queue.Empty:
            # A late answer could no longer be told apart: the stream is given up.
            result, error = (
                None,
                Sam2ClientError(
                    f"{self.model}: no answer from the server at {self.url} within "
                    f"{self.timeout_s:g} s",
                    model=self.model,
                ),
            )
        self._file(result, error)

    def _file(self, result: Any, error: BaseException | None) -> None:
        """Keep an answer under its ticket; a failure of the stream fails every ticket."""
        if isinstance(error, Sam2ClientError) or (
            isinstance(error, InferenceServerException) and error.status()
        ):
            # The stream itself failed (server gone, cancelled, silent): nothing more arrives.
            self._stream_error = error
            while self._waiting:
                self._answers[self._waiting.popleft()] = (None, error)
            return
        if not self._waiting:  # an answer to nothing sent: not Triton's behaviour; dropped
            return
        ticket = self._ticket_of(result, error)
        self._waiting.remove(ticket)
        self._answers[ticket] = (result, error)

    def _await_stream_error(self, wait_s: float = 1.0) -> None:
        """File the answers that arrive within `wait_s`, until the stream's own error does."""
        while self._stream_error is None:
            try:
                self._file(*self._responses.get(timeout=wait_s))
            except queue.Empty:
                return

    def _ticket_of(self, result: Any, error: InferenceServerException | None) -> int:
        if result is not None:
            said = result.get_response().id
        else:
            found = _REQUEST_ID.search((error.message() if error else None) or "")
            said = found.group(1) if found else ""
        if said.isdigit() and int(said) in self._waiting:
            return int(said)
        return self._waiting[0]

    def _failure(self, error: BaseException) -> Sam2ClientError:
        if isinstance(error, Sam2ClientError):
            return error
        failure = self.translate(error, self.model)
        if _UNKNOWN_SEQUENCE in str(failure):
            return Sam2ClientError(
                f"{failure} (the server does not hold video sequence {self.sequence_id}: it "
                "ended, was never started, sat idle past the server's sequence timeout, or was "
                "lost when the server reloaded a crashed model; start a new video session)",
                status=failure.status,
                model=failure.model,
            )
        if error is self._stream_error:
            return Sam2ClientError(
                f"{failure} (the stream of video sequence {self.sequence_id} broke: the server "
                "holding the sequence stopped or the connection to it was cut, and the "
                "sequence's memory stays on that server; start a new video session)",
                status=failure.status,
                model=failure.model,
            )
        return failure


def snapshot_options(data: bytes) -> dict[str, Any]:
    """The START options a snapshot holds: answer, answer_size (or None), num_frames (or
    None), samurai (bool); ValueError when `data` is not a snapshot."""
    header, _ = wire.snapshot_header(data)
    try:
        sequence, state = header.get("sequence", {}), header["state"]
        size = sequence.get("answer_size")
        return {
            "answer": sequence.get("answer", wire.ANSWER_MASKS),
            "answer_size": None if size is None else tuple(int(v) for v in size),
            "num_frames": state["num_frames"],
            "samurai": state["samurai"] is not None,
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValueError("the sequence snapshot's header lacks its options") from None


def snapshot_answer(data: bytes) -> tuple[str, tuple[int, int] | None]:
    """(answer kind, answer size or None) of the sequence a snapshot holds."""
    options = snapshot_options(data)
    return options["answer"], options["answer_size"]


def _snapshot_tensor(data: bytes) -> np.ndarray:
    """RESTORE_SNAPSHOT: the snapshot's bytes as UINT8 [B]."""
    return np.frombuffer(bytes(data), dtype=np.uint8)


class VideoSession:
    """One video tracked by the server (`Sam2Client.video_session`); requests in frame order.

    `num_frames`: the video's length when known (sent with START); `samurai`: motion-aware
    SAMURAI tracking, with `samurai_settings` overriding configs/samurai.yaml per sequence;
    `answer`: what each result holds (sent with START; `VideoFrameResult`): "masks" (full
    size, the default), "rle" (COCO RLE of them, encoded by the server), "small_masks" or
    "logits" at `answer_size` (h, w). `last_frame` is the index of the last tracked frame (None
    before the first). Use it as a context manager, or call `end()`: the server holds the
    sequence's memory until END (or until it has been idle for the server's timeout).

    Failover (docs/serving.md#snapshots): `snapshot()` returns the sequence's state as bytes;
    `restore_from` starts the session from such a snapshot (on any server of the same model,
    size, weights and precision; its options come with it). With `snapshot_every` K, the
    session asks for a snapshot with every K-th frame (the state before that frame) and keeps
    the requests sent since (at most K frames); when the server is lost (`server_lost`), it
    starts the sequence on the next of `fallback_urls` from the last snapshot (or from scratch
    before the first), re-sends those requests, and goes on; results are the same as if
    nothing happened. Requests then go one at a time (`track_frames` too).
    """

    def __init__(
        self,
        transport: SequenceTransport,
        num_frames: int | None = None,
        samurai: bool = False,
        samurai_settings: Mapping[str, Any] | None = None,
        answer: str = wire.ANSWER_MASKS,
        answer_size: Sequence[int] | None = None,
        snapshot_every: int | None = None,
        fallback_urls: Sequence[str] = (),
        restore_from: bytes | None = None,
    ):
        if num_frames is not None and (int(num_frames) != num_frames or num_frames < 1):
            raise ValueError(f"num_frames must be a whole number >= 1, got {num_frames!r}")
        settings = samurai_tensors(samurai_settings or {})
        if settings and not samurai:
            raise ValueError("samurai_settings are only used with samurai=True")
        if snapshot_every is not None and (
            int(snapshot_every) != snapshot_every or snapshot_every < 1
        ):
            raise ValueError(f"snapshot_every must be a whole number >= 1, got {snapshot_every!r}")
        if fallback_urls and snapshot_every is None:
            raise ValueError("fallback_urls need snapshot_every (how often to take a snapshot)")
        self._transport = transport
        self.snapshot_every = None if snapshot_every is None else int(snapshot_every)
        self.fallback_urls = list(fallback_urls)  # servers not tried yet, in order
        self.failovers = 0  # times the session moved to another server
        self.last_snapshot: bytes | None = None if restore_from is None else bytes(restore_from)
        self._since_snapshot: list[dict[str, np.ndarray]] = []  # requests to re-send
        self._frames_since_snapshot = 0
        self._start_tensors = {
            wire.SAMURAI: np.array([bool(samurai)], np.bool_),
            **settings,
            **answer_tensors(answer, answer_size),
        }
        if num_frames is not None:
            self._start_tensors[wire.NUM_FRAMES] = np.array([int(num_frames)], np.int64)
        if restore_from is not None:
            if samurai or settings or num_frames is not None or answer != wire.ANSWER_MASKS:
                raise ValueError(
                    "a session started from a snapshot keeps the snapshot's options: do not "
                    "pass num_frames, samurai, samurai_settings or answer with restore_from"
                )
            answer, answer_size = snapshot_answer(restore_from)
            self._start_tensors = {wire.RESTORE_SNAPSHOT: _snapshot_tensor(restore_from)}
        if restore_from is not None:
            num_frames = snapshot_options(restore_from)["num_frames"]
        self.num_frames = None if num_frames is None else int(num_frames)
        self.samurai = bool(samurai) or (
            restore_from is not None and snapshot_options(restore_from)["samurai"]
        )
        self.answer = answer
        self.answer_size = None if answer_size is None else tuple(int(v) for v in answer_size)
        self._outputs = wire.track_outputs(answer)
        self.last_frame: int | None = None
        self.state_bytes = 0
        self.ended = False
        self._started = False  # START went out and was not rejected
        self._start_ticket: int | None = None

    @property
    def sequence_id(self) -> int:
        """Triton's correlation id of this session."""
        return self._transport.sequence_id

    @property
    def protocol(self) -> str:
        return self._transport.protocol

    # -- requests ---------------------------------------------------------------------------

    def _submit(self, tensors: dict[str, np.ndarray]) -> int:
        if self.ended:
            raise Sam2ClientError(f"video session {self.sequence_id} has ended")
        start = not self._started
        if start:
            tensors = {**tensors, **self._start_tensors}
        ticket = self._transport.submit(tensors, self._outputs, start=start)
        if start:
            self._started, self._start_ticket = True, ticket
        return ticket

    def _collect(self, ticket: int) -> VideoFrameResult:
        try:
            outputs = self._transport.result(ticket, self._outputs)
        except Sam2ClientError:
            if ticket == self._start_ticket:  # the server did not start it: START again next time
                self._started, self._start_ticket = False, None
            raise
        if ticket == self._start_ticket:
            self._start_ticket = None
        return self._result(outputs)

    def _result(self, outputs: Mapping[str, np.ndarray]) -> VideoFrameResult:
        result = VideoFrameResult.from_outputs(outputs, self.answer)
        if result.frame_index >= 0:
            self.last_frame = result.frame_index
        self.state_bytes = result.state_bytes
        return result

    # -- snapshots and failover ---------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The sequence's state now, after every request answered so far, as opaque bytes
        (bounded by the server's max_snapshot_bytes): start a session from it with
        `Sam2Client.video_session(restore_from=...)` on any server of the same model, size,
        weights and precision. The frame it was taken on cannot be corrected after a restore."""
        outputs = self._send_or_fail_over({wire.TAKE_SNAPSHOT: np.array([True])})
        data = outputs[wire.SNAPSHOT].tobytes()
        self._keep_snapshot(data)
        return data

    def _keep_snapshot(self, data: bytes) -> None:
        """`data` is the state before every request kept for re-sending: forget them."""
        self.last_snapshot = data
        self._since_snapshot.clear()
        self._frames_since_snapshot = 0

    def _outputs_for(self, tensors: Mapping[str, np.ndarray]) -> tuple[str, ...]:
        if wire.TAKE_SNAPSHOT in tensors:
            return (*self._outputs, wire.SNAPSHOT)
        return self._outputs

    def _request(self, tensors: dict[str, np.ndarray]) -> VideoFrameResult:
        """One request answered before the next; with `snapshot_every`, snapshots on every
        K-th frame and failover (class docstring)."""
        if self.snapshot_every is None:
            return self._collect(self._submit(tensors))
        is_frame = wire.IMAGE in tensors or wire.IMAGE_RAW in tensors
        take = is_frame and self._frames_since_snapshot >= self.snapshot_every
        sent = {**tensors, wire.TAKE_SNAPSHOT: np.array([True])} if take else tensors
        outputs = self._send_or_fail_over(sent)
        if take:  # the state before this request
            self._keep_snapshot(outputs[wire.SNAPSHOT].tobytes())
        self._since_snapshot.append(tensors)
        self._frames_since_snapshot += int(is_frame)
        return self._result(outputs)

    def _send_or_fail_over(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs of one request; when the server is lost and `fallback_urls` remain, the
        sequence moves to the next server (`_fail_over`)."""
        try:
            return self._send(tensors)
        except Sam2ClientError as error:
            if not server_lost(error) or not self.fallback_urls:
                raise
            return self._fail_over(tensors, error)

    def _send(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request, answered before anything else is sent; its outputs."""
        if self.ended:
            raise Sam2ClientError(f"video session {self.sequence_id} has ended")
        start = not self._started
        if start:
            tensors = {**tensors, **self._start_tensors}
        names = self._outputs_for(tensors)
        ticket = self._transport.submit(tensors, names, start=start)
        self._started = True
        try:
            return self._transport.result(ticket, names)
        except Sam2ClientError:
            if start:
                self._started = False
            raise

    def _fail_over(self, tensors: dict[str, np.ndarray], error: Sam2ClientError) -> dict:
        """Start the sequence on the next fallback server from the last snapshot (from scratch
        before the first), re-send the requests since, then `tensors`; its outputs. Raises the
        last server-lost error when no fallback server is left."""
        while self.fallback_urls:
            url = self.fallback_urls.pop(0)
            old = self._transport
            self._transport = SequenceTransport(
                url, old.protocol, old.model, old.sequence_id, old.timeout_s
            )
            try:
                old.close()
            except Exception:  # noqa: BLE001 - the lost server's connection may fail to close
                pass
            self._started = False
            self.failovers += 1
            try:
                return self._replay(tensors)
            except Sam2ClientError as again:
                if not server_lost(again):
                    raise
                error = again
        raise error

    def _replay(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.last_snapshot is not None:
            start = {wire.RESTORE_SNAPSHOT: _snapshot_tensor(self.last_snapshot)}
        else:
            start = self._start_tensors
        outputs: dict[str, np.ndarray] = {}
        for i, sent in enumerate([*self._since_snapshot, tensors]):
            if i == 0:
                sent = {**sent, **start}
            names = self._outputs_for(sent)
            ticket = self._transport.submit(sent, names, start=i == 0)
            outputs = self._transport.result(ticket, names)
            self._started = True
        return outputs

    def _frame_tensors(
        self, frame: ImageLike, prompts: FramePrompts, frame_index: int | None
    ) -> dict[str, np.ndarray]:
        tensors = {**image_tensor(frame), **prompts.tensors()}
        if frame_index is not None:
            tensors.update(_frame_index_tensor(frame_index))
        return tensors

    def track(
        self,
        frame: ImageLike,
        points: PointPrompts | None = None,
        boxes: BoxPrompts | None = None,
        masks: MaskPrompts | None = None,
        remove: Sequence[int] | None = None,
        frame_index: int | None = None,
    ) -> VideoFrameResult:
        """Track every object onto `frame`, after applying this frame's prompts and removals.

        `frame_index`: default the next frame (0 first); indices must increase, gaps allowed.
        Returns the masks of all objects on this frame.
        """
        prompts = FramePrompts(points, boxes, masks, remove)
        return self._request(self._frame_tensors(frame, prompts, frame_index))

    def correct(
        self,
        points: PointPrompts | None = None,
        boxes: BoxPrompts | None = None,
        masks: MaskPrompts | None = None,
    ) -> VideoFrameResult:
        """Re-prompt objects on the last tracked frame (no image is sent); returns that frame's
        corrected masks. Later frames are tracked from the corrected masks."""
        if self.last_frame is None:
            raise Sam2ClientError("nothing to correct: no frame has been tracked in this session")
        tensors = FramePrompts(points, boxes, masks).tensors()
        if not tensors:
            raise ValueError("correct needs at least one of points, boxes, masks")
        tensors.update(_frame_index_tensor(self.last_frame))
        return self._request(tensors)

    def track_frames(
        self,
        frames: Iterable[ImageLike],
        prompts_by_frame: Mapping[int, FramePrompts | Mapping[str, Any]] | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> Iterator[VideoFrameResult]:
        """Track `frames` in order, yielding one result per frame.

        The frames get consecutive indices from the session's next frame (0 in a new session);
        `prompts_by_frame` maps such an index to its prompts (a FramePrompts or a mapping with
        keys points / boxes / masks / remove). Over gRPC up to `max_in_flight` requests are
        outstanding on the stream, so sending a frame overlaps the server's work on the one
        before; over HTTP one request at a time. Frames are read from `frames` lazily.
        Prompts for frames the iterable does not reach raise Sam2ClientError at its end.
        """
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        limit = max_in_flight if self.protocol == "grpc" else 1
        first = 0 if self.last_frame is None else self.last_frame + 1
        prompts = {int(k): FramePrompts.of(v) for k, v in (prompts_by_frame or {}).items()}
        early = sorted(k for k in prompts if k < first)
        if early:
            raise ValueError(
                f"prompts for frame(s) {early}, but this session continues at frame {first}"
            )
        in_flight: collections.deque[int] = collections.deque()
        index = first - 1
        try:
            for index, frame in enumerate(frames, start=first):
                tensors = self._frame_tensors(frame, prompts.get(index, FramePrompts()), index)
                if self.snapshot_every is not None:  # one at a time: failover re-sends them
                    yield self._request(tensors)
                    continue
                while len(in_flight) >= limit:
                    yield self._collect(in_flight.popleft())
                in_flight.append(self._submit(tensors))
            while in_flight:
                yield self._collect(in_flight.popleft())
        finally:
            self._drain(in_flight)
        beyond = sorted(k for k in prompts if k > index)
        if beyond:
            raise Sam2ClientError(
                f"prompts for frame(s) {beyond}, beyond the last frame ({index}) of the video"
            )

    def _drain(self, tickets: collections.deque[int]) -> None:
        """Collect and drop the answers of `tickets` (after a failure or an early stop)."""
        while tickets:
            try:
                self._collect(tickets.popleft())
            except Sam2ClientError:
                pass

    def end(self) -> None:
        """Free the server's memory of this sequence (an END-only request) and close the
        connection. Nothing is sent if no request was; calling it again does nothing; a
        sequence the server no longer holds (idle past its timeout) counts as ended."""
        if self.ended:
            return
        self.ended = True
        try:
            if self._started:
                ticket = self._transport.submit({}, self._outputs, end=True)
                self._transport.result(ticket, self._outputs)
        except Sam2ClientError as error:
            # already gone: evicted when idle, or (with failover) its server was lost
            gone = self.snapshot_every is not None and server_lost(error)
            if _UNKNOWN_SEQUENCE not in str(error) and not gone:
                raise
        finally:
            self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self.end()
        except Sam2ClientError:
            if exc_type is None:  # do not hide the error that ended the block
                raise
