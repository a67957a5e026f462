"""The wire contract of the served models: model names, tensor names, setting tables, labels.

What a request to a served model may carry and what its response holds, written once and imported
by both sides: the client (client/) and the server (python_backend/, model_repository/). It
belongs to neither; model_repository/README.md documents the same tensors for people.
"""

from __future__ import annotations

import numpy as np

# Models (a deployment may prefix every name, see `Sam2Client(model_prefix=...)`).
SEGMENT = "segment"
ENCODE_IMAGE = "encode_image"
DECODE_MASKS = "decode_masks"
SEGMENT_INTERACTIVE = "segment_interactive"
AUTOMATIC_MASK_GENERATOR = "automatic_mask_generator"
TRACK_VIDEO = (
    "track_video"  # stateful: one sequence (correlation id) per video, one request per frame
)
CLIENT_MODELS = (
    SEGMENT,
    ENCODE_IMAGE,
    DECODE_MASKS,
    SEGMENT_INTERACTIVE,
    AUTOMATIC_MASK_GENERATOR,
    TRACK_VIDEO,
)

# Image inputs (exactly one per request).
IMAGE = "IMAGE"  # BYTES [1]: encoded image, one of IMAGE_FORMATS
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")  # PIL format names; others are refused
IMAGE_RAW = "IMAGE_RAW"  # UINT8 [H, W, 3]: RGB pixels

# Prompt inputs.
POINT_COORDS = "POINT_COORDS"  # FP32 [N, P, 2], pixels (x, y)
POINT_LABELS = "POINT_LABELS"  # INT32 [N, P], codes below
BOXES = "BOXES"  # FP32 [N, 4], pixels (x0, y0, x1, y1)
MASK_INPUT = "MASK_INPUT"  # FP32 [N, 1, 256, 256], low-res logits
MULTIMASK_OUTPUT = "MULTIMASK_OUTPUT"  # BOOL [1]

# POINT_LABELS codes (SAM 2's point labels).
PADDING_LABEL = -1  # no point: evens out rows of different lengths
BACKGROUND_LABEL = 0  # negative click
FOREGROUND_LABEL = 1  # positive click
BOX_CORNER_LABELS = (2, 3)  # a box as two points: top-left, bottom-right corner
CLICK_LABELS = (BACKGROUND_LABEL, FOREGROUND_LABEL)
# What POINT_LABELS may hold: image models (segment, decode_masks, segment_interactive) also take
# box corners; track_video takes boxes in BOXES only.
IMAGE_POINT_LABELS = (PADDING_LABEL, *CLICK_LABELS, *BOX_CORNER_LABELS)
VIDEO_POINT_LABELS = (PADDING_LABEL, *CLICK_LABELS)

# Mask outputs of segment, decode_masks, segment_interactive.
MASKS = "MASKS"  # BOOL [N, K, H, W]
SCORES = "SCORES"  # FP32 [N, K]
LOW_RES_MASKS = "LOW_RES_MASKS"  # FP32 [N, K, 256, 256]
MASK_OUTPUTS = (MASKS, SCORES, LOW_RES_MASKS)

# encode_image outputs, decode_masks inputs.
IMAGE_EMBED = "IMAGE_EMBED"  # FP32 [1, 256, 64, 64]
HIGH_RES_FEATS_0 = "HIGH_RES_FEATS_0"  # FP32 [1, 32, 256, 256]
HIGH_RES_FEATS_1 = "HIGH_RES_FEATS_1"  # FP32 [1, 64, 128, 128]
ORIGINAL_SIZE = "ORIGINAL_SIZE"  # INT32 [2]: (h, w)
EMBEDDING_TENSORS = (IMAGE_EMBED, HIGH_RES_FEATS_0, HIGH_RES_FEATS_1, ORIGINAL_SIZE)

# segment_interactive.
IMAGE_ID = "IMAGE_ID"  # BYTES [1], in and out
RELEASE = "RELEASE"  # BOOL [1]

# automatic_mask_generator outputs, one row per mask M.
RLE_COUNTS = "RLE_COUNTS"  # BYTES [M]: COCO compressed RLE counts of an H x W mask
GENERATED_BOXES = "BOXES"  # FP32 [M, 4]: (x, y, w, h)
AREAS = "AREAS"  # INT64 [M]
PREDICTED_IOUS = "PREDICTED_IOUS"  # FP32 [M]
STABILITY_SCORES = "STABILITY_SCORES"  # FP32 [M]
GENERATED_POINTS = "POINT_COORDS"  # FP32 [M, 2]
CROP_BOXES = "CROP_BOXES"  # FP32 [M, 4]: (x, y, w, h)
GENERATOR_OUTPUTS = (
    RLE_COUNTS,
    GENERATED_BOXES,
    AREAS,
    PREDICTED_IOUS,
    STABILITY_SCORES,
    GENERATED_POINTS,
    CROP_BOXES,
    ORIGINAL_SIZE,
)

# automatic_mask_generator settings: keyword (as SAM2AutomaticMaskGenerator) -> (input, dtype).
# Each is sent as a [1] tensor; settings left out keep the server's defaults.
GENERATOR_SETTINGS: dict[str, tuple] = {
    "points_per_side": ("POINTS_PER_SIDE", np.int32),
    "points_per_batch": ("POINTS_PER_BATCH", np.int32),
    "pred_iou_thresh": ("PRED_IOU_THRESH", np.float32),
    "stability_score_thresh": ("STABILITY_SCORE_THRESH", np.float32),
    "stability_score_offset": ("STABILITY_SCORE_OFFSET", np.float32),
    "box_nms_thresh": ("BOX_NMS_THRESH", np.float32),
    "crop_n_layers": ("CROP_N_LAYERS", np.int32),
    "crop_nms_thresh": ("CROP_NMS_THRESH", np.float32),
    "crop_overlap_ratio": ("CROP_OVERLAP_RATIO", np.float32),
    "crop_n_points_downscale_factor": ("CROP_N_POINTS_DOWNSCALE_FACTOR", np.int32),
    "mask_threshold": ("MASK_THRESHOLD", np.float32),
    "multimask_output": ("MULTIMASK_OUTPUT", np.bool_),
    "use_m2m": ("USE_M2M", np.bool_),
}

# track_video (sequence batching; the sequence id, START and END travel as Triton's sequence
# controls, not as tensors). Every input is optional; a request carries at least a frame or a
# prompt / removal. All tensors have no batch axis (the model's max_batch_size is 0).
FRAME_INDEX = "FRAME_INDEX"  # INT64 [1]: default: next frame (0 at START); = last tracked frame
#                              with prompts and no image: a correction of that frame
POINT_OBJ_IDS = "POINT_OBJ_IDS"  # INT64 [Np]: object of each POINT_COORDS row
BOX_OBJ_IDS = "BOX_OBJ_IDS"  # INT64 [Nb]: object of each BOXES row
BOX_PROMPTS = "BOXES"  # FP32 [Nb, 4], pixels (x0, y0, x1, y1)
MASK_OBJ_IDS = "MASK_OBJ_IDS"  # INT64 [Nm]: object of each MASK_PROMPTS row
MASK_PROMPTS = "MASK_PROMPTS"  # BOOL [Nm, H, W]: the object's mask on this frame
REMOVE_OBJ_IDS = "REMOVE_OBJ_IDS"  # INT64 [R]: objects to forget (before this frame's prompts)
NUM_FRAMES = "NUM_FRAMES"  # INT64 [1], with START only: the video's length, when known
SAMURAI = "SAMURAI"  # BOOL [1], with START only: motion-aware (SAMURAI) tracking
ANSWER = "ANSWER"  # BYTES [1], with START only: what each answer holds, one of ANSWER_KINDS
ANSWER_SIZE = "ANSWER_SIZE"  # INT64 [2], with START only: (h, w) of a sized answer, each side
#                              1..MAX_ANSWER_SIDE; required by SIZED_ANSWERS, refused otherwise
# POINT_COORDS FP32 [Np, P, 2] and POINT_LABELS INT32 [Np, P] (label -1: padding) as for images.
# Sequence snapshots (docs/serving.md#snapshots): the state of a sequence as opaque bytes that
# any server of the same model, size, weights and precision can resume from.
TAKE_SNAPSHOT = "TAKE_SNAPSHOT"  # BOOL [1], any request: the answer's SNAPSHOT holds the
#                                  sequence's state after this request
RESTORE_SNAPSHOT = "RESTORE_SNAPSHOT"  # UINT8 [B], with START only: start the sequence from this
#                                        snapshot (no other START option: they are in it)
SNAPSHOT = "SNAPSHOT"  # UINT8 [B] output: the snapshot TAKE_SNAPSHOT asked for; [0] otherwise
# A snapshot opens with SNAPSHOT_MAGIC, its JSON header's length (uint32, little endian) and the
# header, which names the model, the format version and the sequence's START options
# (`snapshot_header`); the rest is the server's (python_backend/video/snapshots.py).
SNAPSHOT_MAGIC = b"SAM2SEQ\x00"

# Ranges (inclusive) of track_video's integer inputs, checked when a request is parsed; the
# SAMURAI integer settings are INT32 on the wire and checked by SamuraiSettings.
INT32_MAX = 2**31 - 1
MAX_FRAME_INDEX = INT32_MAX  # FRAME_INDEX in 0..MAX_FRAME_INDEX (2.3 years of frames at 30 fps)
MAX_NUM_FRAMES = MAX_FRAME_INDEX + 1  # NUM_FRAMES in 1..MAX_NUM_FRAMES
MAX_OBJECT_ID = INT32_MAX  # POINT_OBJ_IDS, BOX_OBJ_IDS, MASK_OBJ_IDS, REMOVE_OBJ_IDS: 0..this
MAX_ANSWER_SIDE = 8192  # ANSWER_SIZE sides in 1..MAX_ANSWER_SIDE (may exceed the frame's)
# Sequence ids are Triton's correlation ids: an unsigned 64-bit integer (1..2**64 - 1) or a
# string of 1..MAX_SEQUENCE_ID_BYTES bytes (UTF-8); "7" and 7 are different sequences.
MAX_SEQUENCE_ID_BYTES = 128  # Triton's HTTP / gRPC frontends refuse longer string ids too
# Every request of a video session also carries its sequence id in this HTTP header / gRPC
# metadata key (lower case, as gRPC requires), so that a proxy in front of several servers can
# hash it and keep the video on the server that holds its memory (docs/deployment.md).
SEQUENCE_ROUTING_HEADER = "sam2-sequence-id"

# track_video answer kinds (ANSWER): the masks of a frame, or something smaller that stands for
# them. Boxes, scores and presence come with every kind.
ANSWER_MASKS = "masks"  # default: MASKS bool [N, H, W] at the frame's size
ANSWER_RLE = "rle"  # RLE_COUNTS: COCO compressed RLE of those masks, encoded by the server
ANSWER_SMALL_MASKS = "small_masks"  # MASKS bool [N, h, w] at ANSWER_SIZE
ANSWER_LOGITS = "logits"  # MASK_LOGITS float32 [N, h, w] at ANSWER_SIZE, before thresholding
ANSWER_KINDS = (ANSWER_MASKS, ANSWER_RLE, ANSWER_SMALL_MASKS, ANSWER_LOGITS)
SIZED_ANSWERS = (ANSWER_SMALL_MASKS, ANSWER_LOGITS)  # at ANSWER_SIZE rather than the frame's

# track_video outputs, one row per tracked object N (ascending object id). Every answer holds
# all of them; the mask outputs an answer kind does not use are empty (no rows).
OBJ_IDS = "OBJ_IDS"  # INT64 [N]
OBJECT_MASKS = "MASKS"  # BOOL [N, H, W] at the frame's size ("masks"), [N, h, w] ("small_masks")
OBJECT_RLE_COUNTS = RLE_COUNTS  # BYTES [N]: COCO compressed RLE counts of [H, W] masks ("rle")
OBJECT_LOGITS = "MASK_LOGITS"  # FP32 [N, h, w]: mask logits at ANSWER_SIZE ("logits"), > 0: mask
FRAME_SIZE = ORIGINAL_SIZE  # INT32 [2]: (H, W) of the sequence's frames; (0, 0) before the first
OBJECT_SCORES = "SCORES"  # FP32 [N]: predicted IoU of the mask
OBJECT_SCORE_LOGITS = "OBJECT_SCORE_LOGITS"  # FP32 [N]: > 0 means present
PRESENT = "PRESENT"  # BOOL [N]
# MASK_BOXES: FP32 [N, 4], (x0, y0, x1, y1) inclusive frame pixels of the mask, zeros if empty;
# for sized answers, the frame pixels the answer's mask covers (docs/serving.md).
MASK_BOXES = "MASK_BOXES"
TRACKED_FRAME = "TRACKED_FRAME"  # INT64 [1]: the frame these masks belong to
STATE_BYTES = "STATE_BYTES"  # INT64 [1]: memory the server holds for this sequence
# What every answer kind uses; each kind adds its mask output (ANSWER_OUTPUTS).
TRACK_COMMON_OUTPUTS = (
    OBJ_IDS,
    OBJECT_SCORES,
    OBJECT_SCORE_LOGITS,
    PRESENT,
    MASK_BOXES,
    FRAME_SIZE,
    TRACKED_FRAME,
    STATE_BYTES,
)
ANSWER_OUTPUTS = {
    ANSWER_MASKS: OBJECT_MASKS,
    ANSWER_RLE: OBJECT_RLE_COUNTS,
    ANSWER_SMALL_MASKS: OBJECT_MASKS,
    ANSWER_LOGITS: OBJECT_LOGITS,
}
TRACK_OUTPUTS = (OBJ_IDS, OBJECT_MASKS, OBJECT_RLE_COUNTS, OBJECT_LOGITS) + TRACK_COMMON_OUTPUTS[1:]


def track_outputs(answer: str) -> tuple[str, ...]:
    """The track_video outputs a sequence with answer kind `answer` reads."""
    return (ANSWER_OUTPUTS[answer],) + TRACK_COMMON_OUTPUTS


# SAMURAI settings a sequence may override at START: name (configs/samurai.yaml) -> (input, dtype).
SAMURAI_SETTINGS: dict[str, tuple] = {
    "kf_score_weight": ("KF_SCORE_WEIGHT", np.float32),
    "stable_frames_threshold": ("STABLE_FRAMES_THRESHOLD", np.int32),
    "stable_ious_threshold": ("STABLE_IOUS_THRESHOLD", np.float32),
    "memory_bank_iou_threshold": ("MEMORY_BANK_IOU_THRESHOLD", np.float32),
    "memory_bank_obj_score_threshold": ("MEMORY_BANK_OBJ_SCORE_THRESHOLD", np.float32),
    "memory_bank_kf_score_threshold": ("MEMORY_BANK_KF_SCORE_THRESHOLD", np.float32),
    "min_obj_score_logits": ("MIN_OBJ_SCORE_LOGITS", np.float32),
    "max_memory_candidates": ("MAX_MEMORY_CANDIDATES", np.int32),
    "num_recent_memories": ("NUM_RECENT_MEMORIES", np.int32),
    "memory_candidates_from_frame": ("MEMORY_CANDIDATES_FROM_FRAME", np.int32),
    "measure_empty_masks": ("MEASURE_EMPTY_MASKS", np.bool_),
    "filter_on_click_prompts": ("FILTER_ON_CLICK_PROMPTS", np.bool_),
    "restart_filter_on_prompt": ("RESTART_FILTER_ON_PROMPT", np.bool_),
}

LOW_RES_SIZE = 256  # side of MASK_INPUT / LOW_RES_MASKS


def snapshot_header(data: bytes) -> tuple[dict, int]:
    """(the JSON header of snapshot bytes, where the rest begins); ValueError when `data` is not
    a snapshot or its header is unreadable. Not verified: servers check the checksum."""
    import json
    import struct

    start = len(SNAPSHOT_MAGIC) + 4
    if not data.startswith(SNAPSHOT_MAGIC) or len(data) < start:
        raise ValueError("the data is not a sequence snapshot (its first bytes are not MAGIC)")
    (length,) = struct.unpack_from("<I", data, len(SNAPSHOT_MAGIC))
    try:
        header = json.loads(bytes(data[start : start + length]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the sequence snapshot is corrupted: its header is unreadable") from None
    if not isinstance(header, dict):
        raise ValueError("the sequence snapshot is corrupted: its header is not a mapping")
    return header, start + length
