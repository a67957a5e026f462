"""Axial rotary position encoding in real arithmetic.

SAM 2 rotates query/key channel pairs (y[2i], y[2i+1]) as complex numbers multiplied by
`freqs_cis` (`torch.polar`, `view_as_complex`), which ONNX cannot express. Writing the complex
product out on cos/sin tables is the same arithmetic:

    out[2i]   = y[2i] * cos - y[2i+1] * sin
    out[2i+1] = y[2i] * sin + y[2i+1] * cos

i.e. out = y * cos' + swap(y) * sin', with cos'/sin' the tables repeated on both channels of a
pair (sin' negated on the even ones) and swap(y) = (y[1], y[0], y[3], y[2], ...). When y is a
projection W x + b, swap(y) is the projection by W and b with their rows swapped the same way
(`swapped_linear`), so the rotation needs no slicing or interleaving of channels: two
projections (computed outside this module) and one multiply-add per tensor.
"""

from __future__ import annotations

import torch
from torch import nn


def swapped_linear(linear: nn.Linear, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of `linear` with output rows paired and swapped, times `scale`."""
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else weight.new_zeros(weight.shape[0])
    out = weight.shape[0]
    order = torch.arange(out).reshape(-1, 2).flip(-1).reshape(-1)
    return (weight[order] * scale).contiguous(), (bias[order] * scale).contiguous()


class AxialRotary(nn.Module):
    """Rotates tokens [B, R*N, C] by a table of N positions, repeated R times.

    C = heads * head_dim (heads side by side, each rotated by the same table). R = 1 for
    queries and self-attention keys; R = the number of memory frames for cross-attention keys
    (SAM 2's `rope_k_repeat`). R is a dynamic axis of the graph.
    """

    cos: torch.Tensor  # buffer [positions, C]
    sin: torch.Tensor  # buffer [positions, C], signs of the pair swap folded in

    def __init__(self, freqs_cis: torch.Tensor, heads: int = 1) -> None:
        super().__init__()
        if not torch.is_complex(freqs_cis) or freqs_cis.dim() != 2:
            raise ValueError("freqs_cis must be a complex [positions, head_dim / 2] table")
        self.num_positions = int(freqs_cis.shape[0])
        cos = freqs_cis.real.float().repeat_interleave(2, dim=-1)
        sin = freqs_cis.imag.float().repeat_interleave(2, dim=-1)
        sin[:, 0::2] = -sin[:, 0::2]
        self.register_buffer("cos", cos.repeat(1, heads).contiguous(), persistent=False)
        self.register_buffer("sin", sin.repeat(1, heads).contiguous(), persistent=False)

    def forward(self, y: torch.Tensor, y_swapped: torch.Tensor) -> torch.Tensor:
        """y = W x + b, y_swapped = the `swapped_linear` projection of the same x."""
        batch, _, channels = y.shape
        y = y.reshape(batch, -1, self.num_positions, channels)
        y_swapped = y_swapped.reshape(batch, -1, self.num_positions, channels)
        out = y * self.cos + y_swapped * self.sin
        return out.reshape(batch, -1, channels)
