"""Random but valid inputs for the exported graphs (tracing, fidelity tests, engine checks)."""

from __future__ import annotations

import numpy as np

from sam2_triton.export.contract import IMAGE_SIZE, GraphContract

# Axis sizes used to trace the graphs: all different and > 1, so that no dynamic axis is
# specialised to a constant by the tracer.
TRACE_SIZES: dict[str, int] = {
    "batch": 2,
    "num_images": 2,
    "num_prompts": 2,
    "num_points": 3,
    "mask_height": 256,
    "mask_width": 256,
    "num_memories": 3,
    "num_pointers": 5,
}

NUM_MASKMEM = 7  # temporal positions 0..6; checked against the model in onnx_export


def random_inputs(
    contract: GraphContract, sizes: dict[str, int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One valid input array per contract input, shaped by `sizes` for the dynamic axes."""
    arrays = {}
    for spec in contract.inputs:
        shape = spec.concrete_shape(sizes)
        arrays[spec.name] = _random_values(spec.name, shape, rng).astype(spec.np_dtype)
    return arrays


def _random_values(name: str, shape, rng: np.random.Generator) -> np.ndarray:
    if name == "image":  # normalized pixels: roughly zero mean, unit variance
        return rng.uniform(0.0, 1.0, shape) * 4.0 - 2.0
    if name == "point_coords":
        return rng.uniform(0.0, IMAGE_SIZE - 1.0, shape)
    if name == "point_labels":
        labels = rng.integers(0, 2, shape)
        if shape[-1] >= 2:  # a box on half of the prompts
            boxed = rng.random(shape[0]) < 0.5
            labels[boxed, 0], labels[boxed, 1] = 2, 3
        return labels
    if name in ("has_mask_input", "is_mask_from_points"):
        flags = (rng.random(shape) < 0.5).astype(np.float64)
        flags.flat[0] = 1.0  # at least one of each, where the batch allows
        flags.flat[-1] = 0.0 if flags.size > 1 else flags.flat[-1]
        return flags
    if name in ("mask_input", "mask_logits"):
        return rng.normal(0.0, 8.0, shape)
    if name == "object_score_logits":
        scores = rng.normal(0.0, 4.0, shape)
        scores.flat[0] = abs(scores.flat[0]) + 1.0  # present
        if scores.size > 1:
            scores.flat[-1] = -abs(scores.flat[-1]) - 1.0  # absent
        return scores
    if name == "memory_temporal_positions":
        positions = rng.integers(1, NUM_MASKMEM, shape)
        positions[..., 0] = 0  # a conditioning frame comes first, as SAM 2 orders them
        return positions
    if name == "object_pointer_positions":
        return rng.integers(-15, 16, shape) / 15.0
    return rng.normal(0.0, 1.0, shape)
