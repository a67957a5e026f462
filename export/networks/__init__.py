"""The four exported networks, each an `nn.Module` built from an official `SAM2Base`.

They hold references to the official submodules (no weights are copied or re-initialised) and
re-express only what does not export: complex-valued rotary encoding, boolean-mask indexing,
`repeat_interleave` with data-dependent counts, Python-side selection logic.
"""

from sam2_triton.export.networks.image_encoder import ImageEncoderNet
from sam2_triton.export.networks.mask_decoder import MaskDecoderNet
from sam2_triton.export.networks.memory_attention import MemoryAttentionNet
from sam2_triton.export.networks.memory_encoder import MemoryEncoderNet

NETWORK_CLASSES = {
    "image_encoder": ImageEncoderNet,
    "mask_decoder": MaskDecoderNet,
    "memory_encoder": MemoryEncoderNet,
    "memory_attention": MemoryAttentionNet,
}

__all__ = [
    "ImageEncoderNet",
    "MaskDecoderNet",
    "MemoryAttentionNet",
    "MemoryEncoderNet",
    "NETWORK_CLASSES",
]
