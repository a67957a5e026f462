"""Memory attention: conditions the current frame's features on the memory bank."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sam2.modeling.sam.transformer import RoPEAttention
from sam2.modeling.sam2_base import SAM2Base
from torch import nn

from sam2_triton.errors import ExportError
from sam2_triton.export.networks.rotary import AxialRotary, swapped_linear


class MemoryAttentionNet(nn.Module):
    """See `sam2_triton.export.contract.MEMORY_ATTENTION` for the tensors.

    Equals the memory path of `SAM2Base._prepare_memory_conditioned_features` for one set of
    selected memories: it builds the memory tokens and their position encodings (spatial sine
    encoding + `maskmem_tpos_enc[num_maskmem - 1 - t_pos]`; pointer tokens with the projected
    1-D sine encoding of their temporal position), then runs `MemoryAttention` with real-valued
    rotary encoding, pointer tokens excluded from rotation. Constants that depend only on the
    64x64 grid (position encodings, rotary tables) are baked in.
    """

    curr_pos: torch.Tensor  # buffer [1, HW, C]
    memory_pos: torch.Tensor  # buffer [1, 1, HW, mem_dim]

    def __init__(self, sam2_model: SAM2Base) -> None:
        super().__init__()
        attention = sam2_model.memory_attention
        if not attention.batch_first:
            raise ExportError("only batch-first memory attention is supported")
        if not sam2_model.directly_add_no_mem_embed:
            raise ExportError(
                "models that run memory attention on the first frame (directly_add_no_mem_embed "
                "= False) are not supported"
            )
        self.layers = attention.layers
        self.norm = attention.norm
        self.pos_enc_at_input = bool(attention.pos_enc_at_input)
        self.hidden_dim = int(sam2_model.hidden_dim)
        self.mem_dim = int(sam2_model.mem_dim)
        self.num_maskmem = int(sam2_model.num_maskmem)
        self.maskmem_tpos_enc = sam2_model.maskmem_tpos_enc  # Parameter [num_maskmem,1,1,mem_dim]
        self.add_tpos_enc_to_obj_ptrs = bool(sam2_model.add_tpos_enc_to_obj_ptrs)
        self.obj_ptr_tpos_proj = sam2_model.obj_ptr_tpos_proj
        self.tpos_dim = self.hidden_dim if sam2_model.proj_tpos_enc_in_obj_ptrs else self.mem_dim

        size = sam2_model.image_size // sam2_model.backbone_stride
        self.grid_size = size
        with torch.no_grad():
            probe = torch.zeros(1, self.hidden_dim, size, size)
            curr_pos = sam2_model.image_encoder.neck.position_encoding(probe)
            mem_probe = torch.zeros(1, self.mem_dim, size, size)
            mem_pos = sam2_model.memory_encoder.position_encoding(mem_probe)
        # [1, HW, C] and [1, 1, HW, mem_dim], batch-first token layout
        self.register_buffer(
            "curr_pos", curr_pos.flatten(2).transpose(1, 2).clone(), persistent=False
        )
        self.register_buffer(
            "memory_pos", mem_pos.flatten(2).transpose(1, 2).unsqueeze(1).clone(), persistent=False
        )

        first = self.layers[0]
        self.self_rotary = AxialRotary(
            _rotary_table(first.self_attn, size), first.self_attn.num_heads
        )
        self.cross_rotary = AxialRotary(
            _rotary_table(first.cross_attn_image, size), first.cross_attn_image.num_heads
        )
        for layer in self.layers:
            pairs = (
                (layer.self_attn, first.self_attn),
                (layer.cross_attn_image, first.cross_attn_image),
            )
            for attn, reference in pairs:
                if attn.num_heads != reference.num_heads or not torch.equal(
                    _rotary_table(attn, size), _rotary_table(reference, size)
                ):
                    raise ExportError("memory-attention layers with different rotary tables")
            if not getattr(layer.cross_attn_image, "rope_k_repeat", False):
                raise ExportError("cross-attention without rope_k_repeat is not supported")
        self.self_attention = nn.ModuleList(
            RoPEAttentionNet(layer.self_attn) for layer in self.layers
        )
        self.cross_attention = nn.ModuleList(
            RoPEAttentionNet(layer.cross_attn_image) for layer in self.layers
        )

    def forward(
        self,
        current_features: torch.Tensor,
        memory_features: torch.Tensor,
        memory_temporal_positions: torch.Tensor,
        object_pointers: torch.Tensor,
        object_pointer_positions: torch.Tensor,
    ) -> torch.Tensor:
        batch = current_features.shape[0]
        channels = self.hidden_dim
        x = current_features.flatten(2).transpose(1, 2)  # [B, HW, C]
        curr_pos = self.curr_pos
        if self.pos_enc_at_input:
            x = x + 0.1 * curr_pos

        # Spatial memory tokens [B, M*HW, mem_dim], frame-major as SAM 2 concatenates them.
        memory = memory_features.flatten(3).transpose(2, 3)  # [B, M, HW, mem_dim]
        tpos_table = self.maskmem_tpos_enc.reshape(self.num_maskmem, self.mem_dim)
        tpos = tpos_table[(self.num_maskmem - 1 - memory_temporal_positions).long()]  # [B,M,mem]
        memory_pos = self.memory_pos + tpos.unsqueeze(2)
        memory = memory.reshape(batch, -1, self.mem_dim)
        memory_pos = memory_pos.reshape(batch, -1, self.mem_dim)

        # Object pointers, each split into C / mem_dim tokens sharing one position encoding.
        split = channels // self.mem_dim
        num_pointers = object_pointers.shape[1]
        pointers = object_pointers.reshape(batch, num_pointers * split, self.mem_dim)
        if self.add_tpos_enc_to_obj_ptrs:
            from sam2.modeling.sam2_utils import get_1d_sine_pe

            pointer_pos = self.obj_ptr_tpos_proj(
                get_1d_sine_pe(object_pointer_positions, dim=self.tpos_dim)
            )
        else:
            # SAM 2.0: pointers carry no temporal encoding. Zeros shaped by the positions input
            # keep it in the graph, so every size has the same I/O contract.
            pointer_pos = torch.zeros_like(object_pointer_positions).unsqueeze(-1)
            pointer_pos = pointer_pos.expand(-1, -1, self.mem_dim)
        pointer_pos = pointer_pos.unsqueeze(2).expand(-1, -1, split, -1)
        pointer_pos = pointer_pos.reshape(batch, num_pointers * split, self.mem_dim)

        for layer, self_attn, cross_attn in zip(
            self.layers, self.self_attention, self.cross_attention
        ):
            # self-attention
            y = layer.norm1(x)
            qk = y + curr_pos if layer.pos_enc_at_attn else y
            x = x + self_attn(self.self_rotary, qk, qk, y)
            # cross-attention to the memory; pointer tokens are not rotated
            y = layer.norm2(x)
            q = y + curr_pos if layer.pos_enc_at_cross_attn_queries else y
            if layer.pos_enc_at_cross_attn_keys:
                keys = (memory + memory_pos, pointers + pointer_pos)
            else:
                keys = (memory, pointers)
            x = x + cross_attn(self.cross_rotary, q, keys[0], memory, keys[1], pointers)
            # feed-forward
            y = layer.norm3(x)
            x = x + layer.linear2(layer.activation(layer.linear1(y)))
        x = self.norm(x)
        return x.transpose(1, 2).reshape(batch, channels, self.grid_size, self.grid_size)


class RoPEAttentionNet(nn.Module):
    """`RoPEAttention.forward` (eval) with real rotary and optional unrotated trailing keys.

    Written out as MatMul / Softmax / MatMul rather than `scaled_dot_product_attention` (whose
    ONNX decomposition scales both queries and keys), with two exact rearrangements that cut
    the work of the cross-attention to the memory (4096 queries x ~28k keys):

    * the softmax scale and the pair swap of the rotary encoding are folded into copies of the
      query / key projection weights (`rotary.swapped_linear`), so rotating is one multiply-add;
    * with one head, when values are projected up from fewer channels (memory: 64 -> 256),
      softmax(S) @ v_proj(v) is computed as v_proj(softmax(S) @ v): the rows of softmax(S) sum
      to 1, so the bias passes through, and the largest product runs on 64 channels, not 256.
    """

    q_weight: torch.Tensor  # buffers: query projection with the softmax scale folded in
    q_bias: torch.Tensor
    q_swapped_weight: torch.Tensor  # buffers: `swapped_linear` projections
    q_swapped_bias: torch.Tensor
    k_swapped_weight: torch.Tensor
    k_swapped_bias: torch.Tensor

    def __init__(self, attn: RoPEAttention) -> None:
        super().__init__()
        self.attn = attn
        self.heads = int(attn.num_heads)
        head_dim = attn.internal_dim // self.heads
        if head_dim % 2:
            raise ExportError("rotary attention needs an even head size")
        scale = float(head_dim) ** -0.5  # scaled_dot_product_attention's default
        self.register_buffer(
            "q_weight", (attn.q_proj.weight.detach() * scale).contiguous(), persistent=False
        )
        self.register_buffer(
            "q_bias", (attn.q_proj.bias.detach() * scale).contiguous(), persistent=False
        )
        for name, (weight, bias) in (
            ("q_swapped", swapped_linear(attn.q_proj, scale)),
            ("k_swapped", swapped_linear(attn.k_proj)),
        ):
            self.register_buffer(f"{name}_weight", weight, persistent=False)
            self.register_buffer(f"{name}_bias", bias, persistent=False)
        self.values_first = self.heads == 1 and attn.kv_in_dim < attn.internal_dim

    def forward(
        self,
        rotary: AxialRotary,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_unrotated: torch.Tensor | None = None,
        v_unrotated: torch.Tensor | None = None,
    ) -> torch.Tensor:
        attn = self.attn
        q = rotary(
            F.linear(q, self.q_weight, self.q_bias),
            F.linear(q, self.q_swapped_weight, self.q_swapped_bias),
        )
        k = rotary(attn.k_proj(k), F.linear(k, self.k_swapped_weight, self.k_swapped_bias))
        if k_unrotated is not None and v_unrotated is not None:
            k = torch.cat((k, attn.k_proj(k_unrotated)), dim=1)
            v = torch.cat((v, v_unrotated), dim=1)
        if self.heads == 1:
            weights = torch.softmax(torch.matmul(q, k.transpose(1, 2)), dim=-1)
            if self.values_first:
                out = attn.v_proj(torch.matmul(weights, v))
            else:
                out = torch.matmul(weights, attn.v_proj(v))
            return attn.out_proj(out)
        q = attn._separate_heads(q, self.heads)
        k = attn._separate_heads(k, self.heads)
        v = attn._separate_heads(attn.v_proj(v), self.heads)
        weights = torch.softmax(torch.matmul(q, k.transpose(2, 3)), dim=-1)
        return attn.out_proj(attn._recombine_heads(torch.matmul(weights, v)))


def _rotary_table(attn: RoPEAttention, size: int) -> torch.Tensor:
    """The complex [size*size, head_dim/2] table the official RoPEAttention uses on this grid."""
    return attn.compute_cis(end_x=size, end_y=size).cpu()
