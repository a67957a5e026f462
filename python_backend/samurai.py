"""SAMURAI: motion-aware mask choice and memory selection for SAM 2 video tracking.

`choose_mask` picks among a frame's candidate masks by predicted IoU and agreement with the
object's Kalman-filtered box (`BoxKalmanFilter`, constant velocity); `select_memory_frames`
picks the recent frames whose memories the next frame attends to. Motion state is per object
(`ObjectMotionState`), settings shared per sequence (`SamuraiSettings`, configs/samurai.yaml).

Units and shapes: boxes float64 [4] (x0, y0, x1, y1), pixels of the caller's mask frame (the
1024x1024 model frame in the tracker), SAMURAI's box: the inclusive pixel indices of the
foreground's extremes (pixels > 0); the filter state (cx, cy, w / h, h and their velocities per
step) float64 [8], covariance [8, 8], one step per multimask decoder call; candidate masks
[K, H, W] (pixels > 0 are foreground), predicted IoUs [K] (float32, as the decoder gives them).

Every default computes what SAMURAI's own code computes (github.com/yangchris11/samurai at
commit 76ba195: `sam2/sam2/modeling/sam2_base.py`, `sam2/sam2/utils/kalman_filter.py`), rule by
rule; where SAMURAI's behaviour looks accidental, a named setting offers ours
(`memory_candidates_from_frame`, `measure_empty_masks`, `filter_on_click_prompts`,
`restart_filter_on_prompt`).

Design notes: docs/video-tracker.md (SAMURAI mode), docs/samurai-rules.md (the rules)
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sam2_triton.configs import CONFIG_DIR, field_types, get_model, read_yaml
from sam2_triton.errors import ConfigError
from sam2_triton.python_backend.boxes import mask_bounds
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.setting_values import (
    check_finite,
    check_int_range,
    check_unit_interval,
    scalar_value,
    typed_value,
)

SAMURAI_FILE = CONFIG_DIR / "samurai.yaml"
PER_MODEL_KEY = "per_model"  # configs/samurai.yaml: model name -> settings that differ for it

# SAM 2 has num_maskmem = 7 temporal memory slots: slot 0 for conditioning frames, 1..6 for
# the most recent (here: selected) frames. More recent memories than 6 have no slot.
MAX_RECENT_MEMORIES = 6

# --- Kalman filter constants (DeepSORT-style noise, scaled by the box height h) ---------------
MEASUREMENT_DIM = 4  # cx, cy, a, h
STATE_DIM = 2 * MEASUREMENT_DIM  # + their velocities
FRAME_STEP = 1.0  # dt: one frame
STD_WEIGHT_POSITION = 1.0 / 20  # std of cx, cy, h (process and measurement) = h / 20
STD_WEIGHT_VELOCITY = 1.0 / 160  # process std of their velocities = h / 160
ASPECT_PROCESS_STD = 1e-2  # process std of a (also its initial std)
ASPECT_VELOCITY_PROCESS_STD = 1e-5  # process std of a's velocity (also its initial std)
ASPECT_MEASUREMENT_STD = 1e-1
INITIAL_POSITION_STD_SCALE = 2.0  # initial std of cx, cy, h = 2 * h / 20
INITIAL_VELOCITY_STD_SCALE = 10.0  # initial std of their velocities = 10 * h / 160


# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamuraiSettings:
    """SAMURAI's hyperparameters; defaults live in configs/samurai.yaml (`load`).

    Construction validates every value and raises InputError naming the first bad setting.
    """

    kf_score_weight: float  # in [0, 1]
    stable_frames_threshold: int  # >= 1 accepted frames before the motion score is used
    stable_ious_threshold: float  # in [0, 1]
    memory_bank_iou_threshold: float  # in [0, 1]
    memory_bank_obj_score_threshold: float  # logit, finite
    memory_bank_kf_score_threshold: float  # in [0, 1]
    min_obj_score_logits: float  # logit, finite (applied by the video tracker)
    max_memory_candidates: int  # >= 1
    num_recent_memories: int  # 1..MAX_RECENT_MEMORIES
    # Where SAMURAI's behaviour looks accidental (docs/samurai-rules.md), a setting offers ours;
    # the defaults are SAMURAI's.
    memory_candidates_from_frame: int  # >= 0; the memory walk's oldest frame (SAMURAI: 2)
    measure_empty_masks: bool  # an empty chosen mask is measured as the box (0, 0, 0, 0)
    filter_on_click_prompts: bool  # single-click prompts and corrections step the filter
    restart_filter_on_prompt: bool  # a prompt or correction restarts the object's filter

    @classmethod
    def load(cls, path: Path = SAMURAI_FILE, model: str | None = None) -> SamuraiSettings:
        """The settings in `path` for `model` (a name or alias of configs/models.yaml: its
        `per_model` entry applies; None: the common values); cached; ConfigError if the file
        is malformed or the model unknown."""
        name = None if model is None else get_model(model).name
        return _load_settings(Path(path), name)

    def with_overrides(self, overrides: Mapping[str, Any]) -> SamuraiSettings:
        """A copy with `overrides` (name -> value; numpy scalars accepted) applied, validated.

        Raises InputError naming the setting for an unknown name, a value of the wrong kind
        or one out of range.
        """
        known = field_types(SamuraiSettings)
        values = {}
        for name, value in overrides.items():
            if name not in known:
                raise InputError(
                    f"unknown SAMURAI setting {name!r}; settings are: {', '.join(sorted(known))}"
                )
            values[name] = typed_value(name, scalar_value(value), known[name])
        return replace(self, **values)

    def __post_init__(self) -> None:
        for name, kind in field_types(SamuraiSettings).items():  # also for direct construction
            object.__setattr__(self, name, typed_value(name, getattr(self, name), kind))
        for name in (
            "kf_score_weight",
            "stable_ious_threshold",
            "memory_bank_iou_threshold",
            "memory_bank_kf_score_threshold",
        ):
            check_unit_interval(name, getattr(self, name))
        for name in ("memory_bank_obj_score_threshold", "min_obj_score_logits"):
            check_finite(name, getattr(self, name))
        for name in ("stable_frames_threshold", "max_memory_candidates"):
            check_int_range(name, getattr(self, name), 1, None)
        check_int_range("memory_candidates_from_frame", self.memory_candidates_from_frame, 0, None)
        check_int_range("num_recent_memories", self.num_recent_memories, 1, MAX_RECENT_MEMORIES)


@functools.cache
def _load_settings(path: Path, model: str | None) -> SamuraiSettings:
    data = dict(read_yaml(path))
    per_model = data.pop(PER_MODEL_KEY, None) or {}
    known = field_types(SamuraiSettings)
    unknown = sorted(set(data) - set(known))
    missing = sorted(set(known) - set(data))
    if unknown or missing:
        raise ConfigError(f"{path}: unknown settings {unknown}, missing settings {missing}")
    if not isinstance(per_model, dict):
        raise ConfigError(f"{path}: {PER_MODEL_KEY} must map model names to settings")
    for name, values in per_model.items():
        canonical = get_model(str(name)).name
        if canonical != name or not isinstance(values, dict) or set(values) - set(known):
            raise ConfigError(
                f"{path}: {PER_MODEL_KEY}.{name} must be a model's name mapping settings "
                f"(of {sorted(known)}) to values"
            )
    if model is not None:
        data.update(per_model.get(model, {}))
    try:
        return SamuraiSettings(
            **{name: typed_value(name, data[name], known[name]) for name in known}
        )
    except InputError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# --- boxes ------------------------------------------------------------------------------------


def xyxy_to_xyah(box: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) [4] -> (cx, cy, w / h, h) [4] float64. A box of height 0 (one row, or
    the empty box (0, 0, 0, 0)) is measured with h = 1, as SAMURAI's `xyxy_to_xyah` does."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    height = y1 - y0
    if height == 0:
        height = 1.0
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / height, height])


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """(cx, cy, w / h, h) [4] -> (x0, y0, x1, y1) [4] float64."""
    cx, cy, aspect, height = np.asarray(xyah, dtype=np.float64)[:MEASUREMENT_DIM]
    width = aspect * height
    return np.array([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes [4] as SAMURAI's `_compute_iou` computes it: the intersection's
    sides clamped at 0, the areas (x1 - x0) * (y1 - y0) not clamped; 0 where the union is 0.
    A box with no area (x1 <= x0 or y1 <= y0) has IoU 0 (or -0.0) with any box."""
    x0, y0, x1, y1 = np.asarray(a, dtype=np.float64)
    u0, v0, u1, v1 = np.asarray(b, dtype=np.float64)
    intersection = max(0.0, min(x1, u1) - max(x0, u0)) * max(0.0, min(y1, v1) - max(y0, v0))
    union = (x1 - x0) * (y1 - y0) + (u1 - u0) * (v1 - v0) - intersection
    return float(intersection / union) if union != 0 else 0.0


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """SAMURAI's box of `mask` [H, W]: the inclusive pixel indices (x_min, y_min, x_max, y_max)
    of its pixels > 0, float64 [4]; None if it has none."""
    bounds, present = mask_bounds((np.asarray(mask) > 0)[None])
    return bounds[0].astype(np.float64) if present[0] else None


# --- Kalman filter ----------------------------------------------------------------------------


def _state_covariance(position_std: float, velocity_std: float) -> np.ndarray:
    """Diagonal [8, 8] covariance of (cx, cy, a, h, and their velocities) from the standard
    deviations of position and velocity (pixels, pixels per frame); the aspect ratio has its
    own fixed noise."""
    std = np.array([position_std, position_std, ASPECT_PROCESS_STD, position_std])
    velocity = np.array([velocity_std, velocity_std, ASPECT_VELOCITY_PROCESS_STD, velocity_std])
    return np.diag(np.concatenate([std, velocity]) ** 2)


class BoxKalmanFilter:
    """Constant-velocity Kalman filter on (cx, cy, a, h) and their velocities, dt = 1 frame.

    Holds only constant matrices: per-object state is the (mean [8], covariance [8, 8]) pair
    the methods take and return (inputs are never modified). Noise is scaled by the height h:
    `initiate` uses the measured h, `predict` the h of the mean it is given, `update` the h of
    the (predicted) mean it is given, as DeepSORT does.
    """

    def __init__(self) -> None:
        self.motion = np.eye(STATE_DIM)  # F: position += velocity * dt
        self.motion[:MEASUREMENT_DIM, MEASUREMENT_DIM:] = FRAME_STEP * np.eye(MEASUREMENT_DIM)
        self.observation = np.eye(MEASUREMENT_DIM, STATE_DIM)  # H: measures the positions

    def initiate(self, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Track from one (cx, cy, a, h) measurement [4]: mean [8] (zero velocity), cov [8, 8]."""
        z = _measurement(measurement)
        height = z[3]
        position = INITIAL_POSITION_STD_SCALE * STD_WEIGHT_POSITION * height
        velocity = INITIAL_VELOCITY_STD_SCALE * STD_WEIGHT_VELOCITY * height
        covariance = _state_covariance(position, velocity)
        return np.concatenate([z, np.zeros(MEASUREMENT_DIM)]), covariance

    def process_covariance(self, height: float) -> np.ndarray:
        """Q [8, 8] for a box of height `height` pixels."""
        return _state_covariance(STD_WEIGHT_POSITION * height, STD_WEIGHT_VELOCITY * height)

    def measurement_covariance(self, height: float) -> np.ndarray:
        """R [4, 4] for a box of height `height` pixels."""
        position = STD_WEIGHT_POSITION * height
        return np.diag(np.array([position, position, ASPECT_MEASUREMENT_STD, position]) ** 2)

    def predict(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame ahead: (F mean, F cov F^T + Q(h of `mean`))."""
        motion = self.motion
        return (motion @ mean, motion @ covariance @ motion.T + self.process_covariance(mean[3]))

    def project(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Measurement-space mean [4] and innovation covariance S = H cov H^T + R [4, 4]."""
        observation = self.observation
        return (
            observation @ mean,
            observation @ covariance @ observation.T + self.measurement_covariance(mean[3]),
        )

    def update(
        self, mean: np.ndarray, covariance: np.ndarray, measurement: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Correct (mean, cov) with a (cx, cy, a, h) measurement [4]: K = P H^T S^-1."""
        projected_mean, innovation_cov = self.project(mean, covariance)
        # S and P are symmetric, so K^T = S^-1 H P.
        gain = np.linalg.solve(innovation_cov, self.observation @ covariance).T
        new_mean = mean + gain @ (_measurement(measurement) - projected_mean)
        new_covariance = covariance - gain @ innovation_cov @ gain.T
        return new_mean, new_covariance


def _measurement(measurement: np.ndarray) -> np.ndarray:
    z = np.asarray(measurement, dtype=np.float64)
    if z.shape != (MEASUREMENT_DIM,):
        raise ValueError(f"a measurement is (cx, cy, a, h), got shape {z.shape}")
    return z


KALMAN_FILTER = BoxKalmanFilter()


# --- per-object state and mask choice ---------------------------------------------------------


@dataclass(frozen=True)
class FrameRecord:
    """What memory selection needs of one tracked frame of one object."""

    frame_idx: int
    predicted_iou: float  # of the chosen mask
    object_score_logit: float
    motion_score: float | None  # IoU(predicted box, chosen box); None while not stable

    NBYTES = 32  # payload counted in state sizes: one int and three floats of 8 bytes


@dataclass
class ObjectMotionState:
    """One object's SAMURAI state in one sequence.

    `mean` [8] / `covariance` [8, 8] are the filter's (None before the first initialisation);
    `stable_count` is SAMURAI's `stable_frames`: steps accepted since the filter was
    (re)initialised, up to stable_frames_threshold, 0 meaning "initialise on the next step";
    `records` maps frame index -> FrameRecord (tracked frames only).
    """

    mean: np.ndarray | None = None
    covariance: np.ndarray | None = None
    stable_count: int = 0
    records: dict[int, FrameRecord] = field(default_factory=dict)

    def add_record(self, record: FrameRecord) -> None:
        """Store (or replace) the record of `record.frame_idx`."""
        self.records[record.frame_idx] = record

    def restart(self) -> None:
        """Forget the filter: the next step initialises it (`restart_filter_on_prompt`)."""
        self.mean, self.covariance, self.stable_count = None, None, 0

    def prune(self, keep: Collection[int]) -> None:
        """Drop the records of frames not in `keep` (see `reachable_memory_frames`)."""
        keep = set(keep)
        for frame in [f for f in self.records if f not in keep]:
            del self.records[frame]

    def copy(self) -> ObjectMotionState:
        """An independent copy (the filter arrays and the record dict are copied)."""
        return ObjectMotionState(
            mean=None if self.mean is None else self.mean.copy(),
            covariance=None if self.covariance is None else self.covariance.copy(),
            stable_count=self.stable_count,
            records=dict(self.records),
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the filter arrays and the records' payload."""
        arrays = sum(a.nbytes for a in (self.mean, self.covariance) if a is not None)
        return int(arrays + FrameRecord.NBYTES * len(self.records))

    def predicted_box(self) -> np.ndarray | None:
        """xyxy box [4] of the current filter mean (None before initialisation)."""
        return None if self.mean is None else xyah_to_xyxy(self.mean)


def choose_mask(
    state: ObjectMotionState,
    candidate_masks: np.ndarray,
    predicted_ious: np.ndarray,
    settings: SamuraiSettings,
    kalman: BoxKalmanFilter = KALMAN_FILTER,
) -> tuple[int, float | None]:
    """Choose one of K candidate masks [K, H, W] with predicted IoUs [K]; updates `state` in place.

    One call is one filter step: SAMURAI's Kalman branch of `_forward_sam_heads`
    (sam2_base.py:419-498). Returns (chosen index, motion score of the chosen mask or None
    while not stable):
    1. No filter or stable_count 0: initialise from the argmax-IoU mask's box (no predict);
       stable_count = 1.
    2. stable_count < stable_frames_threshold: predict; argmax IoU; update and count up if
       that IoU > stable_ious_threshold, else stable_count = 0 (the prediction is kept).
    3. Stable: predict; score = w * IoU(predicted box, candidate box) + (1 - w) * predicted IoU
       (an empty candidate has motion 0); argmax score (the first on ties); stable_count = 0 if
       its predicted IoU < stable_ious_threshold, else update (the count stays).
    IoU thresholds compare float32 values, and (1 - w) * predicted IoU is float32, as in
    SAMURAI's torch code. A chosen mask that is empty is measured as the box (0, 0, 0, 0)
    (h = 1, see `xyxy_to_xyah`); with `measure_empty_masks` off it is not measured: the filter
    is not updated and stable_count becomes 0 (in case 1 the filter is cleared).
    """
    masks, ious = _check_candidates(candidate_masks, predicted_ious)
    return choose_box(state, [mask_box(mask) for mask in masks], ious, settings, kalman)


EMPTY_BOX = np.zeros(4)  # SAMURAI's box of an empty mask (x0, y0, x1, y1)


def choose_box(
    state: ObjectMotionState,
    candidate_boxes: Sequence[np.ndarray | None],
    predicted_ious: np.ndarray,
    settings: SamuraiSettings,
    kalman: BoxKalmanFilter = KALMAN_FILTER,
) -> tuple[int, float | None]:
    """`choose_mask` on the candidates' boxes (inclusive xyxy [4], None for an empty mask)."""
    ious = np.asarray(predicted_ious, dtype=np.float32).reshape(-1)
    if len(candidate_boxes) == 0 or len(candidate_boxes) != ious.shape[0]:
        raise ValueError(
            f"need K >= 1 candidate boxes and K predicted IoUs, got "
            f"{len(candidate_boxes)} boxes and {ious.shape[0]} IoUs"
        )
    if state.mean is None or state.covariance is None or state.stable_count == 0:
        return _initialise(state, candidate_boxes, ious, settings, kalman), None
    state.mean, state.covariance = kalman.predict(state.mean, state.covariance)
    threshold = np.float32(settings.stable_ious_threshold)
    if state.stable_count < settings.stable_frames_threshold:
        index = int(np.argmax(ious))
        motion_score = None
        accepted = bool(ious[index] > threshold)
        count_up = True
    else:
        motion = _motion_scores(xyah_to_xyxy(state.mean), candidate_boxes)
        weight = settings.kf_score_weight
        scores = weight * motion + (np.float32(1.0 - weight) * ious).astype(np.float64)
        index = int(np.argmax(scores))
        motion_score = float(motion[index])
        accepted = not ious[index] < threshold
        count_up = False  # SAMURAI's counter stays where it reached the threshold
    box = _measured_box(candidate_boxes[index], settings)
    if not accepted or box is None:
        state.stable_count = 0
    else:
        measurement = xyxy_to_xyah(box)
        state.mean, state.covariance = kalman.update(state.mean, state.covariance, measurement)
        state.stable_count += int(count_up)
    return index, motion_score


def boxes_read(
    state: ObjectMotionState, predicted_ious: np.ndarray, settings: SamuraiSettings
) -> np.ndarray:
    """bool [K]: the candidates whose boxes the next `choose_box` step of `state` reads: all of
    them once stable (motion scores), else only the argmax-IoU one (a caller may leave the
    others unmeasured)."""
    ious = np.asarray(predicted_ious, dtype=np.float32).reshape(-1)
    stable = state.mean is not None and state.stable_count >= settings.stable_frames_threshold
    read = np.full(ious.shape, stable)
    read[int(np.argmax(ious))] = True
    return read


def _measured_box(box: np.ndarray | None, settings: SamuraiSettings) -> np.ndarray | None:
    """The box the filter measures for a chosen candidate: an empty one's is (0, 0, 0, 0), or
    None (not measured) with `measure_empty_masks` off."""
    if box is not None:
        return box
    return EMPTY_BOX if settings.measure_empty_masks else None


def _check_candidates(masks: np.ndarray, ious: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks)
    ious = np.asarray(ious, dtype=np.float32).reshape(-1)
    if masks.ndim != 3 or masks.shape[0] == 0 or masks.shape[0] != ious.shape[0]:
        raise ValueError(
            f"need candidate masks [K, H, W] with K >= 1 and K predicted IoUs, got masks "
            f"{masks.shape} and {ious.shape[0]} IoUs"
        )
    return masks, ious


def _initialise(
    state: ObjectMotionState,
    boxes: Sequence[np.ndarray | None],
    ious: np.ndarray,
    settings: SamuraiSettings,
    kalman: BoxKalmanFilter,
) -> int:
    index = int(np.argmax(ious))
    box = _measured_box(boxes[index], settings)
    if box is None:
        state.mean, state.covariance, state.stable_count = None, None, 0
    else:
        state.mean, state.covariance = kalman.initiate(xyxy_to_xyah(box))
        state.stable_count = 1
    return index


def _motion_scores(predicted_box: np.ndarray, boxes: Sequence[np.ndarray | None]) -> np.ndarray:
    """IoU [K] float64 of the predicted box with each candidate's box (0 for an empty one)."""
    scores = np.zeros(len(boxes))
    for k, box in enumerate(boxes):
        if box is not None:
            scores[k] = box_iou(predicted_box, box)
    return scores


# --- memory selection -------------------------------------------------------------------------


def select_memory_frames(
    records_by_frame: Mapping[int, FrameRecord],
    current_frame: int,
    settings: SamuraiSettings,
    cond_frames: Collection[int] = frozenset(),
    reverse: bool = False,
) -> list[int]:
    """Past frames whose memories fill temporal slots 1..n, newest first (item i -> slot i + 1).

    Walks back from the previous frame (t - 1; t + 1 when tracking in `reverse`) over the
    frames that have a record and are not conditioning frames (those keep slot 0), down to
    frame memory_candidates_from_frame (SAMURAI's walk stops before frame 2: sam2_base.py:666;
    not in `reverse`). The previous frame is always kept; older ones when predicted IoU >
    memory_bank_iou_threshold, object-score logit > memory_bank_obj_score_threshold and
    motion score > memory_bank_kf_score_threshold (or None). The walk stops after
    max_memory_candidates kept frames; the newest num_recent_memories of them are returned, so
    at most min(max_memory_candidates, num_recent_memories). Slot i + 1 counts frames back: in
    SAM 2's t_pos numbering it is t_pos = num_maskmem - 1 - i.
    """
    previous = current_frame + (1 if reverse else -1)
    if reverse:
        walk = sorted(f for f in records_by_frame if f >= previous)
    else:
        oldest = settings.memory_candidates_from_frame
        walk = sorted(
            (f for f in records_by_frame if f == previous or oldest <= f < previous),
            reverse=True,
        )
    kept: list[int] = []
    for frame in walk:
        if len(kept) >= settings.max_memory_candidates:
            break
        if frame in cond_frames:
            continue
        if frame == previous or _passes_memory_thresholds(records_by_frame[frame], settings):
            kept.append(frame)
    return kept[: settings.num_recent_memories]


def reachable_memory_frames(
    records_by_frame: Mapping[int, FrameRecord],
    last_frame: int,
    settings: SamuraiSettings,
    cond_frames: Collection[int] = frozenset(),
) -> set[int]:
    """Frames that `select_memory_frames` can still return once `last_frame` is tracked.

    Forward tracking where only `last_frame` can still be corrected (made a conditioning
    frame): the union of the selections for a correction of `last_frame`, for the next frame,
    for any later frame (a gap: the previous-frame rule no longer applies) and for the next
    frame after `last_frame` became a conditioning frame. Frames tracked later only push these
    further back, so records and memories of other frames can be dropped; the result holds at
    most 4 * num_recent_memories frames (in practice num_recent_memories + 2).
    """
    cond = set(cond_frames)
    reachable = set(select_memory_frames(records_by_frame, last_frame, settings, cond))
    reachable.update(select_memory_frames(records_by_frame, last_frame + 1, settings, cond))
    reachable.update(select_memory_frames(records_by_frame, last_frame + 2, settings, cond))
    reachable.update(
        select_memory_frames(records_by_frame, last_frame + 1, settings, cond | {last_frame})
    )
    return reachable


def _passes_memory_thresholds(record: FrameRecord, settings: SamuraiSettings) -> bool:
    return (
        record.predicted_iou > settings.memory_bank_iou_threshold
        and record.object_score_logit > settings.memory_bank_obj_score_threshold
        and (
            record.motion_score is None
            or record.motion_score > settings.memory_bank_kf_score_threshold
        )
    )
