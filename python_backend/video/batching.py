"""New frames of several video sequences tracked together: one network batch per phase.

`track_together(items, limits)` takes (tracker, frame index, frame) of several sequences (each
tracker at most once) and runs the tracker's phases across all of them:

1. one image-encoder batch of every frame (each tracker's own preprocessing);
2. memory attention batched over the tracked objects of every sequence whose memory selections
   share a (memories, pointers) signature;
3. one decoder batch per prompt-point count, over the rows of every sequence;
4. one memory-encoder batch of every decoded object;
5. then each tracker's own bookkeeping (`_finish`: host scalars, commit, answer).

Each tracker builds the inputs of its part (`VideoTracker.attention_inputs`, `decoder_inputs`,
`memory_encoder_inputs`) and reads its rows of the outputs (`decoded_outputs`), exactly as when
it tracks alone; the planner only concatenates the parts along the batch axis (broadcast rows
made explicit), calls the network, and hands each part its rows (views, no copies). A call
holds at most `BatchLimits` rows (the engines' batch axes): parts go to calls greedily, a part
never split. Nothing changes a tracker before its commit, so a batch whose network call fails
is run again one sequence at a time; a frame refused by its tracker's checks fails alone.

Design notes: docs/serving.md (frames of concurrent videos in one batch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sam2_triton.python_backend.video.tracker import (
    FEATURE_NAMES,
    FrameResult,
    VideoTracker,
    _FrameWork,
    _Row,
    _RowOf,
)

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class BatchLimits:
    """Most rows one call of each network may hold (None: no limit): the engines' batch axes
    (configs/profiles.yaml engine_shapes: image_encoder batch, memory_attention batch,
    mask_decoder num_prompts, memory_encoder batch)."""

    image_encoder: int | None = None
    memory_attention: int | None = None
    mask_decoder: int | None = None
    memory_encoder: int | None = None

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and value < 1:
                raise ValueError(f"batch limit {name} must be >= 1 or None, not {value}")


@dataclass(frozen=True)
class TrackItem:
    """One new frame of one sequence: RGB uint8 [H, W, 3] as frame `frame_idx`."""

    tracker: VideoTracker
    frame_idx: int
    image: np.ndarray


@dataclass
class _Part:
    """One tracker's inputs of a network call: `rows` rows along the batch axis."""

    inputs: Mapping[str, torch.Tensor]
    rows: int


@dataclass
class BatchStats:
    """What `track_together` ran (for tests, benchmarks and metrics)."""

    sequences: int = 0  # frames that went through the batched phases
    shared: int = 0  # of those, frames batched with at least one other sequence's frame
    network_calls: dict[str, int] | None = None  # per network
    alone: int = 0  # frames run one sequence at a time (a failed batch, or several rounds)


def track_together(
    items: Sequence[TrackItem], limits: BatchLimits = BatchLimits(), stats: BatchStats | None = None
) -> list[FrameResult | Exception]:
    """Each item's FrameResult (or the exception that refused it), in order; each equals what
    `item.tracker.track(item.frame_idx, item.image)` returns alone. One item per tracker;
    trackers batch with those that share their VideoNetworks."""
    trackers = [item.tracker for item in items]
    if len({id(t) for t in trackers}) != len(trackers):
        raise ValueError("track_together takes one frame per tracker")
    stats = stats if stats is not None else BatchStats()
    stats.network_calls = stats.network_calls or {}
    outcomes: list[FrameResult | Exception | None] = [None] * len(items)
    planned: list[tuple[int, VideoTracker, _FrameWork]] = []
    for i, item in enumerate(items):
        tracker = item.tracker
        if any(len(prompt.rounds) > 1 for prompt in tracker.pending.values()):
            outcomes[i] = _alone(item, stats)  # clicks in several rounds: one pass each
            continue
        try:
            work = tracker.plan_track(item.frame_idx, item.image)
        except Exception as exc:  # refused by the tracker's checks: this item alone fails
            outcomes[i] = exc
            continue
        if not work.decode:  # nothing to track: no network call
            outcomes[i] = _track(item)
            continue
        planned.append((i, tracker, work))
    by_networks: dict[int, list[tuple[int, VideoTracker, _FrameWork]]] = {}
    for entry in planned:  # trackers batch with those that share their networks
        by_networks.setdefault(id(entry[1].networks), []).append(entry)
    for group in by_networks.values():
        try:
            _run_phases([(t, w) for _, t, w in group], limits, stats.network_calls)
        except Exception as exc:  # a network call failed: no tracker changed
            for i, _, _ in group:  # each runs alone (a lone frame failed alone already)
                outcomes[i] = _alone(items[i], stats) if len(group) > 1 else exc
            continue
        stats.sequences += len(group)
        stats.shared += len(group) if len(group) > 1 else 0
        for i, tracker, work in group:
            try:
                with torch.inference_mode():  # as in VideoTracker.track
                    outcomes[i] = tracker._finish(work)
            except Exception as exc:
                outcomes[i] = exc
    return [outcome for outcome in outcomes if outcome is not None]


def _alone(item: TrackItem, stats: BatchStats) -> FrameResult | Exception:
    """The item tracked by its tracker alone (counted in `stats`)."""
    stats.alone += 1
    return _track(item)


def _track(item: TrackItem) -> FrameResult | Exception:
    try:
        return item.tracker.track(item.frame_idx, item.image)
    except Exception as exc:
        return exc


@torch.inference_mode()
def _run_phases(
    plans: Sequence[tuple[VideoTracker, _FrameWork]], limits: BatchLimits, calls: dict[str, int]
) -> None:
    """Fill every plan's features, conditioned features, outputs and memories."""
    _encode_frames(plans, limits, calls)
    _condition(plans, limits, calls)
    _decode(plans, limits, calls)
    parts = [
        _Part(tracker.memory_encoder_inputs(work.features, work.outputs), len(work.outputs))
        for tracker, work in plans
    ]
    outputs = _run_packed(
        "memory_encoder",
        lambda inputs: plans[0][0].networks.encode_memory(inputs),
        parts,
        limits.memory_encoder,
        calls,
    )
    for (_, work), out in zip(plans, outputs):
        work.memories = out["memory_features"]


def _encode_frames(
    plans: Sequence[tuple[VideoTracker, _FrameWork]], limits: BatchLimits, calls: dict[str, int]
) -> None:
    """Phase 1: every frame through the image encoder; features of a frame encoded with
    others are copied out of the batch (a tracker keeps its last frame's features)."""
    parts = []
    for tracker, work in plans:
        assert work.image is not None  # plan_track keeps the frame
        parts.append(_Part({"image": tracker.frame_pixels(work.image)}, 1))
    outputs = _run_packed(
        "image_encoder",
        lambda inputs: plans[0][0].networks.encode(inputs["image"]),
        parts,
        limits.image_encoder,
        calls,
    )
    shared = len(plans) > 1
    for (_, work), out in zip(plans, outputs):
        work.features = {name: out[name].clone() if shared else out[name] for name in FEATURE_NAMES}


def _condition(
    plans: Sequence[tuple[VideoTracker, _FrameWork]], limits: BatchLimits, calls: dict[str, int]
) -> None:
    """Phase 2: memory attention, one batch per (memories, pointers) signature over every
    sequence's tracked objects (the stacked memories in the trackers' workspaces until every
    call has run)."""
    with contextlib.ExitStack() as scopes:
        for tracker, _ in plans:
            scopes.enter_context(tracker.workspace.scope())
        by_signature: dict[tuple[int, int], list[tuple[_FrameWork, list[int], _Part]]] = {}
        for tracker, work in plans:
            groups = tracker.attention_groups(work.conditioned_ids, work.frame_idx)
            for signature, group in groups.items():
                inputs = tracker.attention_inputs(work.features, [s for _, s in group])
                part = _Part(inputs, len(group))
                by_signature.setdefault(signature, []).append((work, [o for o, _ in group], part))
        for entries in by_signature.values():
            outputs = _run_packed(
                "memory_attention",
                lambda inputs: plans[0][0].networks.attend(inputs),
                [part for _, _, part in entries],
                limits.memory_attention,
                calls,
            )
            for (work, obj_ids, _), out in zip(entries, outputs):
                batch = out["conditioned_features"]
                work.conditioned.update((o, _RowOf(batch, g)) for g, o in enumerate(obj_ids))


def _decode(
    plans: Sequence[tuple[VideoTracker, _FrameWork]], limits: BatchLimits, calls: dict[str, int]
) -> None:
    """Phase 3: one decoder batch per prompt-point count over every sequence's rows (each
    object one pass: clicks in several rounds run alone); each tracker reads its rows."""
    by_points: dict[int, list[tuple[int, list[_Row], _Part]]] = {}
    order: list[list[int]] = []  # per plan: its point counts in its own order
    for p, (tracker, work) in enumerate(plans):
        jobs = tracker._jobs(work)
        rows = [tracker._row(o, job, 0, None, work.size) for o, job in jobs.items()]
        groups: dict[int, list[_Row]] = {}
        for row in rows:
            groups.setdefault(row.coords.shape[0], []).append(row)
        order.append(list(groups))
        for count, group in groups.items():
            part = _Part(tracker.decoder_inputs(group, work.features), len(group))
            by_points.setdefault(count, []).append((p, group, part))
    decoded: dict[tuple[int, int], tuple[list[_Row], Tensors]] = {}
    for count, entries in by_points.items():
        outputs = _run_packed(
            "mask_decoder",
            lambda inputs: plans[0][0].networks.decode(inputs),
            [part for _, _, part in entries],
            limits.mask_decoder,
            calls,
        )
        for (p, group, _), out in zip(entries, outputs):
            decoded[(p, count)] = (group, out)
    for p, (tracker, work) in enumerate(plans):
        for count in order[p]:
            group, out = decoded[(p, count)]
            work.outputs.update(tracker.decoded_outputs(group, out, work.motion))


def _run_packed(
    network: str,
    call: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]],
    parts: Sequence[_Part],
    limit: int | None,
    calls: dict[str, int],
) -> list[Tensors]:
    """Each part's rows of `network`'s outputs: parts packed into calls of at most `limit`
    rows (a part alone when it exceeds it), each call's outputs split by part (views)."""
    results: list[Tensors] = []
    for chunk in _pack([part.rows for part in parts], limit):
        members = [parts[i] for i in chunk]
        outputs = call(_concatenate(members))
        calls[network] = calls.get(network, 0) + 1
        start = 0
        for part in members:
            results.append(
                {name: value[start : start + part.rows] for name, value in outputs.items()}
            )
            start += part.rows
    return results


def _pack(rows: Sequence[int], limit: int | None) -> Iterable[list[int]]:
    """Consecutive indices of `rows` in groups of at most `limit` rows in all."""
    chunk: list[int] = []
    total = 0
    for i, count in enumerate(rows):
        if chunk and limit is not None and total + count > limit:
            yield chunk
            chunk, total = [], 0
        chunk.append(i)
        total += count
    if chunk:
        yield chunk


def _concatenate(parts: Sequence[_Part]) -> Mapping[str, torch.Tensor]:
    """One call's inputs: the parts' tensors along the batch axis (a part's single broadcast
    row expanded to its rows first); a lone part as it is, so that a sequence alone runs
    exactly the call it makes when it tracks by itself."""
    if len(parts) == 1:
        return parts[0].inputs

    def rows_of(tensor: torch.Tensor, rows: int) -> torch.Tensor:
        return tensor if tensor.shape[0] == rows else tensor.expand(rows, *tensor.shape[1:])

    return {
        name: torch.cat([rows_of(part.inputs[name], part.rows) for part in parts])
        for name in parts[0].inputs
    }
