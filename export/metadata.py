"""`metadata.json`: what a serving process needs beside the four graphs.

Written by the exporter, read by the serving code and the engine builder. Reading it needs only
the standard library (serving processes do not import torch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sam2_triton.errors import ExportError

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1

# SAM2Base settings that decide how the served pipeline combines the graphs (memory selection,
# multimask choice, presence handling). Recorded verbatim from the exported model.
MODEL_SETTINGS = (
    "image_size",
    "backbone_stride",
    "num_maskmem",
    "hidden_dim",
    "mem_dim",
    "sigmoid_scale_for_mem_enc",
    "sigmoid_bias_for_mem_enc",
    "binarize_mask_from_pts_for_mem_enc",
    "use_mask_input_as_output_without_sam",
    "max_cond_frames_in_attn",
    "directly_add_no_mem_embed",
    "multimask_output_in_sam",
    "multimask_min_pt_num",
    "multimask_max_pt_num",
    "multimask_output_for_tracking",
    "use_multimask_token_for_obj_ptr",
    "iou_prediction_use_sigmoid",
    "memory_temporal_stride_for_eval",
    "non_overlap_masks_for_mem_enc",
    "use_obj_ptrs_in_encoder",
    "max_obj_ptrs_in_encoder",
    "add_tpos_enc_to_obj_ptrs",
    "proj_tpos_enc_in_obj_ptrs",
    "use_signed_tpos_enc_to_obj_ptrs",
    "only_obj_ptrs_in_the_past_for_eval",
    "pred_obj_scores",
    "fixed_no_obj_ptr",
    "soft_no_obj_ptr",
    "fill_hole_area",
)

DECODER_SETTINGS = (
    "dynamic_multimask_via_stability",
    "dynamic_multimask_stability_delta",
    "dynamic_multimask_stability_thresh",
    "num_mask_tokens",
)


def write_metadata(directory: os.PathLike, metadata: dict[str, Any]) -> Path:
    path = Path(directory) / METADATA_FILE
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=1)
        f.write("\n")
    return path


def load_metadata(directory: os.PathLike) -> dict[str, Any]:
    """Read and sanity-check `metadata.json` of an export directory."""
    path = Path(directory) / METADATA_FILE
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except FileNotFoundError:
        raise ExportError(
            f"{path} not found: export the model first (sam2-triton export --model ...)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is unreadable: {exc}") from None
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportError(
            f"{path} has format_version {version!r}, this sam2-triton reads "
            f"{FORMAT_VERSION}: export the model again"
        )
    return metadata
