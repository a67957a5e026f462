"""Memory attention: conditions the current frame's features on the memory bank."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam2_triton.errors import ExportError
from sam2_triton.export.networks.rotary import AxialRotary


class MemoryAttentionNet(nn.Module):
    """See `sam2_triton.export.contract.MEMORY_ATTENTION` for the tensors.

    Equals the memory path of `SAM2Base._prepare_memory_conditioned_features` for one set of
    selected memories: it builds the memory tokens and their position encodings (spatial sine
    encoding + `maskmem_tpos_enc[num_maskmem - 1 - t_pos]`; pointer tokens with the projected
    1-D sine encoding of their temporal position), then runs `MemoryAttention` with real-valued
    rotary encoding, pointer tokens excluded from rotation. Constants that depend only on the
    64x64 grid (position encodings, rotary tables) are baked in.
    """

    def __init__(self, sam2_model: nn.Module) -> None:
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
        self.register_buffer("curr_pos", curr_pos.flatten(2).transpose(1, 2).clone(), persistent=False)
        self.register_buffer(
            "memory_pos", mem_pos.flatten(2).transpose(1, 2).unsqueeze(1).clone(), persistent=False
        )

        first = self.layers[0]
        self.self_rotary = AxialRotary(_rotary_table(first.self_attn, size))
        self.cross_rotary = AxialRotary(_rotary_table(first.cross_attn_image, size))
        for layer in self.layers:
            for attn, rotary in ((layer.self_attn, self.self_rotary), (layer.cross_attn_image, self.cross_rotary)):
                if not torch.equal(_rotary_table(attn, size).real.float(), rotary.cos):
                    raise ExportError("memory-attention layers with different rotary tables")
            if not getattr(layer.cross_attn_image, "rope_k_repeat", False):
                raise ExportError("cross-attention without rope_k_repeat is not supported")

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

        for layer in self.layers:
            # self-attention
            y = layer.norm1(x)
            qk = y + curr_pos if layer.pos_enc_at_attn else y
            x = x + self._attend(layer.self_attn, self.self_rotary, qk, qk, y)
            # cross-attention to the memory; pointer tokens are not rotated
            y = layer.norm2(x)
            q = y + curr_pos if layer.pos_enc_at_cross_attn_queries else y
            if layer.pos_enc_at_cross_attn_keys:
                keys = (memory + memory_pos, pointers + pointer_pos)
            else:
                keys = (memory, pointers)
            x = x + self._attend(
                layer.cross_attn_image, self.cross_rotary, q, keys[0], memory, keys[1], pointers
            )
            # feed-forward
            y = layer.norm3(x)
            x = x + layer.linear2(layer.activation(layer.linear1(y)))
        x = self.norm(x)
        return x.transpose(1, 2).reshape(batch, channels, self.grid_size, self.grid_size)

    @staticmethod
    def _attend(
        attn: nn.Module,
        rotary: AxialRotary,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_unrotated: torch.Tensor = None,
        v_unrotated: torch.Tensor = None,
    ) -> torch.Tensor:
        """RoPEAttention.forward (eval) with real rotary; optional unrotated trailing keys."""
        heads = attn.num_heads
        q = attn._separate_heads(attn.q_proj(q), heads)
        k = attn._separate_heads(attn.k_proj(k), heads)
        v = attn._separate_heads(attn.v_proj(v), heads)
        q = rotary(q)
        k = rotary(k)
        if k_unrotated is not None:
            k = torch.cat((k, attn._separate_heads(attn.k_proj(k_unrotated), heads)), dim=2)
            v = torch.cat((v, attn._separate_heads(attn.v_proj(v_unrotated), heads)), dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        return attn.out_proj(attn._recombine_heads(out))


def _rotary_table(attn: nn.Module, size: int) -> torch.Tensor:
    """The complex [size*size, head_dim/2] table the official RoPEAttention uses on this grid."""
    return attn.compute_cis(end_x=size, end_y=size).cpu()
