"""Axial rotary position encoding in real arithmetic.

SAM 2 rotates query/key channel pairs (x[2i], x[2i+1]) as complex numbers multiplied by
`freqs_cis` (`torch.polar`, `view_as_complex`), which ONNX cannot express. Writing the complex
product out on cos/sin tables is the same arithmetic:

    out[2i]   = x[2i] * cos - x[2i+1] * sin
    out[2i+1] = x[2i] * sin + x[2i+1] * cos
"""

from __future__ import annotations

import torch
from torch import nn


class AxialRotary(nn.Module):
    """Rotates [B, heads, R*N, head_dim] by a table of N positions, repeated R times.

    R = 1 for queries and self-attention keys; R = the number of memory frames for
    cross-attention keys (SAM 2's `rope_k_repeat`). R is a dynamic axis of the graph.
    """

    def __init__(self, freqs_cis: torch.Tensor) -> None:
        super().__init__()
        if not torch.is_complex(freqs_cis) or freqs_cis.dim() != 2:
            raise ValueError("freqs_cis must be a complex [positions, head_dim / 2] table")
        self.num_positions = int(freqs_cis.shape[0])
        self.register_buffer("cos", freqs_cis.real.float().contiguous(), persistent=False)
        self.register_buffer("sin", freqs_cis.imag.float().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, heads, _, head_dim = x.shape
        pairs = x.reshape(batch, heads, -1, self.num_positions, head_dim // 2, 2)
        even, odd = pairs[..., 0], pairs[..., 1]
        rotated_even = even * self.cos - odd * self.sin
        rotated_odd = even * self.sin + odd * self.cos
        return torch.stack((rotated_even, rotated_odd), dim=-1).reshape(x.shape)
