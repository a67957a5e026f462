"""ONNX Runtime (CPU, fp32) against the official PyTorch modules, on fresh random inputs.

Every output of every graph must satisfy ||onnx - reference|| / ||reference|| <= 1e-4, at
several batch sizes, point counts and memory lengths. The references call the official `sam2`
code paths (`forward_image`, the prompt encoder + `predict_masks`, `_encode_new_memory`,
`_prepare_memory_conditioned_features`), not this project's wrappers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2_triton.export.contract import CONTRACTS, IMAGE_SIZE
from sam2_triton.export.sample_inputs import random_inputs
from sam2_triton.python_backend.onnx_networks import OnnxNetworks

REL_TOL = 1e-4


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    reference = np.asarray(reference, dtype=np.float64)
    diff = np.asarray(actual, dtype=np.float64) - reference
    return float(np.linalg.norm(diff) / max(np.linalg.norm(reference), 1e-30))


def assert_close(
    outputs: dict[str, np.ndarray], references: dict[str, np.ndarray], worst_values
) -> None:
    """Every output within REL_TOL of its reference; the largest error is recorded in
    `worst_values` (tests/conftest.py) before the check."""
    errors = {}
    for name, reference in references.items():
        assert outputs[name].shape == tuple(reference.shape), (name, outputs[name].shape)
        assert np.isfinite(outputs[name]).all(), name
        errors[name] = relative_error(outputs[name], reference)
    worst_values.record("graph_relative_error", max(errors.values()))
    assert max(errors.values()) <= REL_TOL, errors


@pytest.fixture(scope="module")
def networks(exported) -> OnnxNetworks:
    return OnnxNetworks(exported.directory)


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


# --- image encoder --------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2])
def test_image_encoder(exported, networks, worst_values, batch):
    rng = np.random.default_rng(100 + batch)
    inputs = random_inputs(CONTRACTS["image_encoder"], {"batch": batch}, rng)
    with torch.no_grad():
        fpn = exported.model.forward_image(_t(inputs["image"]))["backbone_fpn"]
    references = {"image_embed": fpn[2], "high_res_feats_0": fpn[0], "high_res_feats_1": fpn[1]}
    assert_close(networks.run("image_encoder", **inputs), references, worst_values)


# --- prompt encoder + mask decoder ----------------------------------------------------------


def reference_decoder(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Official prompt encoder + MaskDecoder.predict_masks + obj_ptr_proj, one prompt at a time
    (as SAM2Base does per object), each prompt with or without its mask input."""
    num_prompts = inputs["point_coords"].shape[0]
    shared = inputs["image_embed"].shape[0] == 1
    outs: dict[str, list[torch.Tensor]] = {k: [] for k in CONTRACTS["mask_decoder"].output_names}
    with torch.no_grad():
        for p in range(num_prompts):
            i = 0 if shared else p
            mask = _t(inputs["mask_input"][p : p + 1]) if inputs["has_mask_input"][p] else None
            sparse, dense = model.sam_prompt_encoder(
                points=(
                    _t(inputs["point_coords"][p : p + 1]),
                    _t(inputs["point_labels"][p : p + 1]),
                ),
                boxes=None,
                masks=mask,
            )
            masks, iou, tokens, score = model.sam_mask_decoder.predict_masks(
                image_embeddings=_t(inputs["image_embed"][i : i + 1]),
                image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                repeat_image=False,
                high_res_features=[
                    _t(inputs["high_res_feats_0"][i : i + 1]),
                    _t(inputs["high_res_feats_1"][i : i + 1]),
                ],
            )
            outs["masks"].append(masks)
            outs["iou_scores"].append(iou)
            outs["object_pointers"].append(model.obj_ptr_proj(tokens))
            outs["object_score_logits"].append(score)
    return {k: torch.cat(v).numpy() for k, v in outs.items()}


@pytest.mark.parametrize(
    "num_images,num_prompts,num_points",
    [(1, 1, 1), (1, 3, 2), (2, 2, 4), (1, 4, 7)],
)
def test_mask_decoder(exported, networks, worst_values, num_images, num_prompts, num_points):
    rng = np.random.default_rng(num_images * 100 + num_prompts * 10 + num_points)
    sizes = {"num_images": num_images, "num_prompts": num_prompts, "num_points": num_points}
    inputs = random_inputs(CONTRACTS["mask_decoder"], sizes, rng)
    outputs = networks.run("mask_decoder", **inputs)
    assert_close(outputs, reference_decoder(exported.model, inputs), worst_values)


# --- memory encoder -------------------------------------------------------------------------


def reference_memory_encoder(model, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Official SAM2Base._encode_new_memory, one object at a time (is_mask_from_pts per call)."""
    results = []
    with torch.no_grad():
        for b in range(inputs["image_embed"].shape[0]):
            features = _t(inputs["image_embed"][b : b + 1])
            logits = _t(inputs["mask_logits"][b : b + 1])
            if logits.shape[-1] != IMAGE_SIZE:  # as _forward_sam_heads makes high-res masks
                logits = F.interpolate(
                    logits, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
                )
            memory, _ = model._encode_new_memory(
                current_vision_feats=[features.flatten(2).permute(2, 0, 1)],
                feat_sizes=[tuple(features.shape[-2:])],
                pred_masks_high_res=logits,
                object_score_logits=_t(inputs["object_score_logits"][b : b + 1]),
                is_mask_from_pts=bool(inputs["is_mask_from_points"][b]),
            )
            results.append(memory)
    return torch.cat(results).numpy()


@pytest.mark.parametrize("batch,mask_size", [(1, 256), (3, 256), (2, 1024)])
def test_memory_encoder(exported, networks, worst_values, batch, mask_size):
    rng = np.random.default_rng(batch * 1000 + mask_size)
    sizes = {"batch": batch, "mask_height": mask_size, "mask_width": mask_size}
    inputs = random_inputs(CONTRACTS["memory_encoder"], sizes, rng)
    outputs = networks.run("memory_encoder", **inputs)
    assert_close(
        outputs,
        {"memory_features": reference_memory_encoder(exported.model, inputs)},
        worst_values,
    )


# --- memory attention -----------------------------------------------------------------------


def memory_scenario(model, frame_idx, cond_frames, past_frames, num_frames, batch, rng):
    """A video state in the official format, the official result for `frame_idx`, and the same
    memory laid out in this project's graph inputs.

    The layout follows SAM 2's selection for stride 1, forward tracking: conditioning frames
    first (t_pos 0), then frames frame_idx-6 .. frame_idx-1 (t_pos 1..6) where stored; pointers
    of conditioning frames at or before frame_idx, then of up to 15 previous stored frames.
    """
    hidden, mem_dim, size = model.hidden_dim, model.mem_dim, 64
    mem_pos_enc = model.memory_encoder.position_encoding(torch.zeros(1, mem_dim, size, size))

    def frame_output():
        return {
            "maskmem_features": torch.from_numpy(
                rng.normal(0, 1, (batch, mem_dim, size, size)).astype(np.float32)
            ),
            "maskmem_pos_enc": [mem_pos_enc.expand(batch, -1, -1, -1)],
            "obj_ptr": torch.from_numpy(rng.normal(0, 1, (batch, hidden)).astype(np.float32)),
        }

    output_dict = {
        "cond_frame_outputs": {t: frame_output() for t in cond_frames},
        "non_cond_frame_outputs": {t: frame_output() for t in past_frames},
    }
    current = torch.from_numpy(rng.normal(0, 1, (batch, hidden, size, size)).astype(np.float32))
    current_pos = model.image_encoder.neck.position_encoding(current[:1]).expand(batch, -1, -1, -1)
    with torch.no_grad():
        reference = model._prepare_memory_conditioned_features(
            frame_idx=frame_idx,
            is_init_cond_frame=False,
            current_vision_feats=[current.flatten(2).permute(2, 0, 1)],
            current_vision_pos_embeds=[current_pos.flatten(2).permute(2, 0, 1)],
            feat_sizes=[(size, size)],
            output_dict=output_dict,
            num_frames=num_frames,
        )

    memories, t_positions = [], []
    for t in cond_frames:
        memories.append(output_dict["cond_frame_outputs"][t]["maskmem_features"])
        t_positions.append(0)
    for t_pos in range(1, model.num_maskmem):
        t = frame_idx - (model.num_maskmem - t_pos)
        if t in output_dict["non_cond_frame_outputs"]:
            memories.append(output_dict["non_cond_frame_outputs"][t]["maskmem_features"])
            t_positions.append(t_pos)
    max_ptrs = min(num_frames, model.max_obj_ptrs_in_encoder)
    pointers, distances = [], []
    for t in cond_frames:
        if t <= frame_idx:
            pointers.append(output_dict["cond_frame_outputs"][t]["obj_ptr"])
            distances.append(frame_idx - t)
    for t_diff in range(1, max_ptrs):
        t = frame_idx - t_diff
        if t < 0:
            break
        if t in output_dict["non_cond_frame_outputs"]:
            pointers.append(output_dict["non_cond_frame_outputs"][t]["obj_ptr"])
            distances.append(t_diff)
    inputs = {
        "current_features": current.numpy(),
        "memory_features": torch.stack(memories, dim=1).numpy(),
        "memory_temporal_positions": np.tile(np.array(t_positions, np.int32), (batch, 1)),
        "object_pointers": torch.stack(pointers, dim=1).numpy(),
        "object_pointer_positions": np.tile(
            np.array(distances, np.float32) / np.float32(max_ptrs - 1), (batch, 1)
        ),
    }
    return inputs, reference.numpy()


@pytest.mark.parametrize(
    "frame_idx,cond_frames,past_frames,num_frames,batch",
    [
        (1, [0], [], 8, 1),  # one memory, one pointer
        (3, [0], [1, 2], 8, 2),  # three memories
        (9, [0], list(range(1, 9)), 12, 1),  # full bank: 1 + 6 memories, 9 pointers
        (20, [0, 12], [t for t in range(1, 20) if t != 12], 40, 2),  # 2 cond frames, 16 pointers
    ],
)
def test_memory_attention(
    exported, networks, worst_values, frame_idx, cond_frames, past_frames, num_frames, batch
):
    rng = np.random.default_rng(frame_idx)
    inputs, reference = memory_scenario(
        exported.model, frame_idx, cond_frames, past_frames, num_frames, batch, rng
    )
    outputs = networks.run("memory_attention", **inputs)
    assert_close(outputs, {"conditioned_features": reference}, worst_values)
