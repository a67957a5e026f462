"""Which layers stay in fp32 when an engine is built in fp16 / bf16.

Reduced precision breaks SAM 2 in known places: LayerNorm statistics overflow fp16, softmax
saturates, and the rotary products lose the phase. The builder pins every TensorRT layer made
from these ONNX nodes to fp32. TensorRT names layers after the ONNX nodes they come from, so the
choice is made here on the ONNX graph, where it is tested without TensorRT.
"""

from __future__ import annotations

import onnx

# Ops kept in fp32 wherever they occur.
FP32_OP_TYPES = frozenset({"LayerNormalization", "Softmax", "Pow", "Sqrt"})

# Node-name marker of the rotary encoding (the exporter scopes node names by module attribute:
# MemoryAttentionNet.self_rotary / .cross_rotary).
ROTARY_MARKER = "rotary"


def _scope(node_name: str) -> str:
    return node_name.rsplit("/", 1)[0] + "/" if "/" in node_name.strip("/") else ""


def fp32_node_names(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes of `proto` whose layers must run in fp32.

    - LayerNormalization and Softmax nodes (and Pow / Sqrt);
    - every node of a module scope that computes a mean (SAM 2's LayerNorm2d is written out as
      ReduceMean / Sub / Pow / ReduceMean / Add / Sqrt / Div / affine in one scope);
    - every node of the rotary-encoding modules.
    """
    norm_scopes = {
        _scope(n.name) for n in proto.graph.node if n.op_type == "ReduceMean" and _scope(n.name)
    }
    names = []
    for node in proto.graph.node:
        scope = _scope(node.name)
        if (
            node.op_type in FP32_OP_TYPES
            or (scope and scope in norm_scopes)
            or ROTARY_MARKER in scope
        ):
            names.append(node.name)
    return names
