"""The I/O contract of the four exported graphs: tensor names, dtypes, shapes, dynamic axes.

This module is the single source of the contract. The exporter names graph inputs and outputs
from it, the tests check every exported graph against it, the TensorRT builder derives its
optimization profiles from its axis names, and `export/README.md` documents it.

Shapes mix fixed sizes (ints) and dynamic axes (strings). Sizes that depend on the model
(hidden and memory widths) are the same for all eight official SAM 2 / 2.1 checkpoints and are
checked against the model at export time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Dim = int | str

IMAGE_SIZE = 1024  # model input resolution (square, aspect ratio not kept)
EMBED_SIZE = 64  # IMAGE_SIZE / backbone stride 16
LOW_RES_MASK_SIZE = 256  # decoder mask logits (stride 4)
HIDDEN_DIM = 256  # transformer width
MEMORY_DIM = 64  # memory-encoder output width
HIGH_RES_DIMS = (32, 64)  # channels of the stride-4 and stride-8 features after conv_s0/conv_s1
NUM_MASK_TOKENS = 4  # token 0: single-mask output; tokens 1..3: multimask outputs

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "int32", ...
    shape: tuple[Dim, ...]
    doc: str

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def concrete_shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The shape with each dynamic axis replaced by `sizes[axis]`."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)


@dataclass(frozen=True)
class GraphContract:
    name: str
    file: str
    doc: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list:
        return [t.name for t in self.outputs]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: t.dynamic_axes for t in self.inputs + self.outputs if t.dynamic_axes}

    @property
    def axis_names(self) -> tuple[str, ...]:
        seen = []
        for t in self.inputs + self.outputs:
            seen += [a for a in t.dynamic_axes.values() if a not in seen]
        return tuple(seen)

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)


_F32 = "float32"
_E = EMBED_SIZE
_M = LOW_RES_MASK_SIZE

IMAGE_ENCODER = GraphContract(
    name="image_encoder",
    file="image_encoder.onnx",
    doc="Hiera trunk + FPN neck, and the decoder's conv_s0/conv_s1 on the two high-res levels.",
    inputs=(
        TensorSpec(
            "image",
            _F32,
            ("batch", 3, IMAGE_SIZE, IMAGE_SIZE),
            "RGB resized to 1024x1024 (bilinear, aspect ratio not kept), /255, normalized with "
            "IMAGE_MEAN / IMAGE_STD",
        ),
    ),
    outputs=(
        TensorSpec(
            "image_embed",
            _F32,
            ("batch", HIDDEN_DIM, _E, _E),
            "stride-16 features, raw: no_mem_embed NOT added",
        ),
        TensorSpec(
            "high_res_feats_0",
            _F32,
            ("batch", HIGH_RES_DIMS[0], 4 * _E, 4 * _E),
            "stride-4 features after conv_s0",
        ),
        TensorSpec(
            "high_res_feats_1",
            _F32,
            ("batch", HIGH_RES_DIMS[1], 2 * _E, 2 * _E),
            "stride-8 features after conv_s1",
        ),
    ),
)

MASK_DECODER = GraphContract(
    name="mask_decoder",
    file="mask_decoder.onnx",
    doc="Prompt encoder + mask decoder + object-pointer projection; all four mask tokens out.",
    inputs=(
        TensorSpec(
            "image_embed",
            _F32,
            ("num_images", HIDDEN_DIM, _E, _E),
            "image_embed + no_mem_embed (images, first video frame) or the memory-conditioned "
            "features (tracking); num_images is 1 (shared by all prompts) or num_prompts",
        ),
        TensorSpec(
            "high_res_feats_0",
            _F32,
            ("num_images", HIGH_RES_DIMS[0], 4 * _E, 4 * _E),
            "from the image encoder",
        ),
        TensorSpec(
            "high_res_feats_1",
            _F32,
            ("num_images", HIGH_RES_DIMS[1], 2 * _E, 2 * _E),
            "from the image encoder",
        ),
        TensorSpec(
            "point_coords",
            _F32,
            ("num_prompts", "num_points", 2),
            "(x, y) in pixels of the 1024x1024 model input, the points SAM 2's predictors pass to "
            "the prompt encoder: box corners first, then clicks; the graph appends SAM 2's "
            "padding point (0, 0) with label -1 itself",
        ),
        TensorSpec(
            "point_labels",
            "int32",
            ("num_prompts", "num_points"),
            "-1 padding, 0 negative click, 1 positive click, 2 box top-left, 3 box bottom-right",
        ),
        TensorSpec(
            "mask_input",
            _F32,
            ("num_prompts", 1, _M, _M),
            "low-res mask logits of an earlier prediction; ignored where has_mask_input is 0",
        ),
        TensorSpec(
            "has_mask_input",
            _F32,
            ("num_prompts",),
            "1: use mask_input as dense prompt; 0: use the learned no-mask embedding",
        ),
    ),
    outputs=(
        TensorSpec(
            "masks",
            _F32,
            ("num_prompts", NUM_MASK_TOKENS, _M, _M),
            "mask logits of the 4 tokens (0: single-mask output, 1-3: multimask outputs)",
        ),
        TensorSpec("iou_scores", _F32, ("num_prompts", NUM_MASK_TOKENS), "predicted IoU per token"),
        TensorSpec(
            "object_pointers",
            _F32,
            ("num_prompts", NUM_MASK_TOKENS, HIDDEN_DIM),
            "obj_ptr_proj of each mask token's output (before the no-object blend)",
        ),
        TensorSpec(
            "object_score_logits",
            _F32,
            ("num_prompts", 1),
            "object presence logit (> 0: present)",
        ),
    ),
)

MEMORY_ENCODER = GraphContract(
    name="memory_encoder",
    file="memory_encoder.onnx",
    doc="Mask -> memory: sigmoid (or binarize), scale/bias, downsample, fuse with raw features.",
    inputs=(
        TensorSpec(
            "image_embed",
            _F32,
            ("batch", HIDDEN_DIM, _E, _E),
            "raw stride-16 features of the frame (no no_mem_embed, not memory-conditioned)",
        ),
        TensorSpec(
            "mask_logits",
            _F32,
            ("batch", 1, "mask_height", "mask_width"),
            "chosen mask logits: 256x256 decoder logits (upsampled in-graph to 1024x1024 "
            "exactly as SAM 2 does) or 1024x1024 high-res logits",
        ),
        TensorSpec(
            "object_score_logits",
            _F32,
            ("batch", 1),
            "decoder object score; <= 0 adds SAM 2.1's no-object embedding",
        ),
        TensorSpec(
            "is_mask_from_points",
            _F32,
            ("batch",),
            "1: binarize the mask (frames with clicks, as the video predictor does); "
            "0: sigmoid of the logits",
        ),
    ),
    outputs=(
        TensorSpec(
            "memory_features",
            _F32,
            ("batch", MEMORY_DIM, _E, _E),
            "spatial memory of this frame, no-object embedding included",
        ),
    ),
)

MEMORY_ATTENTION = GraphContract(
    name="memory_attention",
    file="memory_attention.onnx",
    doc="Conditions the current frame's features on the memory bank (4 RoPE transformer layers).",
    inputs=(
        TensorSpec(
            "current_features",
            _F32,
            ("batch", HIDDEN_DIM, _E, _E),
            "raw stride-16 features of the current frame",
        ),
        TensorSpec(
            "memory_features",
            _F32,
            ("batch", "num_memories", MEMORY_DIM, _E, _E),
            "spatial memories of the selected frames (memory encoder outputs)",
        ),
        TensorSpec(
            "memory_temporal_positions",
            "int32",
            ("batch", "num_memories"),
            "SAM 2's t_pos of each memory: 0 for conditioning frames, 1..num_maskmem-1 for "
            "recent frames (num_maskmem-1 = the previous frame)",
        ),
        TensorSpec(
            "object_pointers",
            _F32,
            ("batch", "num_pointers", HIDDEN_DIM),
            "object pointers of the selected frames (after the no-object blend)",
        ),
        TensorSpec(
            "object_pointer_positions",
            _F32,
            ("batch", "num_pointers"),
            "signed frame distance (current - pointer frame) divided by "
            "min(num_frames, max_obj_ptrs_in_encoder) - 1; unused by SAM 2.0 models",
        ),
    ),
    outputs=(
        TensorSpec(
            "conditioned_features",
            _F32,
            ("batch", HIDDEN_DIM, _E, _E),
            "memory-conditioned features for the mask decoder",
        ),
    ),
)

CONTRACTS: dict[str, GraphContract] = {
    c.name: c for c in (IMAGE_ENCODER, MASK_DECODER, MEMORY_ENCODER, MEMORY_ATTENTION)
}
