"""Run the four exported SAM 2 graphs with ONNX Runtime.

This is how the networks run where no TensorRT or ONNX Runtime Triton backend exists (the
Python-backend runner models), and what the fidelity tests compare with PyTorch. It needs only
numpy, onnxruntime and the export directory (graphs + metadata.json): no torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sam2_triton.errors import ExportError
from sam2_triton.export.contract import CONTRACTS, GraphContract
from sam2_triton.export.metadata import load_metadata
from sam2_triton.python_backend.errors import InputError


def validate_inputs(contract: GraphContract, inputs: dict[str, np.ndarray]) -> dict[str, int]:
    """Check names, dtypes and shapes of `inputs`; return the sizes of the dynamic axes."""
    missing = [n for n in contract.input_names if n not in inputs]
    extra = [n for n in inputs if n not in contract.input_names]
    if missing or extra:
        raise InputError(
            f"{contract.name}: missing inputs {missing}, unexpected inputs {extra}"
            if missing
            else f"{contract.name}: unexpected inputs {extra}"
        )
    sizes: dict[str, int] = {}
    for spec in contract.inputs:
        array = inputs[spec.name]
        if array.dtype != spec.np_dtype:
            raise InputError(
                f"{contract.name}.{spec.name}: dtype {array.dtype}, expected {spec.dtype}"
            )
        if array.ndim != len(spec.shape):
            raise InputError(
                f"{contract.name}.{spec.name}: {array.ndim} dims {array.shape}, expected "
                f"{len(spec.shape)} {spec.shape}"
            )
        for axis, (actual, expected) in enumerate(zip(array.shape, spec.shape)):
            if isinstance(expected, int):
                if actual != expected:
                    raise InputError(
                        f"{contract.name}.{spec.name}: size {actual} on axis {axis}, "
                        f"expected {expected} (shape {spec.shape})"
                    )
            elif sizes.setdefault(expected, actual) != actual:
                raise InputError(
                    f"{contract.name}.{spec.name}: axis {expected!r} is {actual} here but "
                    f"{sizes[expected]} in another input"
                )
    return sizes


# After every run, ONNX Runtime's CPU arena hands back to the system what it holds beyond its
# first chunk: a burst of large batches (image encoder, batch 4: ~3 GB) does not keep the process
# at its peak for good. Measured cost and levels: docs/serving.md#memory.
ARENA_SHRINKAGE = ("memory.enable_memory_arena_shrinkage", "cpu:0")

# Graphs whose attention `fuse_cpu_attention` rewrites when they run on CPU (the others' attention
# is multi-head in 4-D layouts, which the pattern does not match).
FUSED_ATTENTION_NETWORKS = ("memory_attention",)


def fuse_cpu_attention(proto) -> int:
    """Replace MatMul(q, Transpose(k)) -> Softmax -> MatMul(., v) by one MultiHeadAttention.

    For ONNX Runtime on CPU only: `com.microsoft.MultiHeadAttention` runs a tiled (flash)
    attention that never materialises the [queries, keys] score matrix (4096 x ~28k per
    object in memory attention), which the plain ops write, softmax and read back. The
    exported files keep the plain ops (TensorRT and other runtimes read those); this rewrites
    the in-memory graph. Matches single-head attention on [batch, tokens, channels] tensors
    with the scale already applied to q (as the exporter writes it, `RoPEAttentionNet`).
    Returns the number of attentions fused.
    """
    import onnx.helper

    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {v.name for v in graph.output}

    def only_use(name: str, node) -> bool:
        return name not in outputs and [id(n) for n in consumers.get(name, [])] == [id(node)]

    remove, fused = set(), 0
    for softmax in list(graph.node):
        if softmax.op_type != "Softmax":
            continue
        axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
        scores = producer.get(softmax.input[0])
        users = consumers.get(softmax.output[0], [])
        if axis not in (-1, 2) or scores is None or scores.op_type != "MatMul" or len(users) != 1:
            continue
        mix = users[0]
        keys_t = producer.get(scores.input[1])
        if (
            mix.op_type != "MatMul"
            or mix.input[0] != softmax.output[0]
            or keys_t is None
            or keys_t.op_type != "Transpose"
            or [list(a.ints) for a in keys_t.attribute if a.name == "perm"] != [[0, 2, 1]]
            or not only_use(scores.output[0], softmax)
            or not only_use(softmax.output[0], mix)
        ):
            continue
        attention = onnx.helper.make_node(
            "MultiHeadAttention",
            [scores.input[0], keys_t.input[0], mix.input[1]],
            [mix.output[0]],
            name=f"{softmax.name}/FusedMultiHeadAttention",
            domain="com.microsoft",
            num_heads=1,
            scale=1.0,
        )
        graph.node.insert(list(graph.node).index(mix), attention)
        remove.update({id(scores), id(softmax), id(mix)})
        if only_use(keys_t.output[0], scores):
            remove.add(id(keys_t))
        fused += 1
    kept = [n for n in graph.node if id(n) not in remove]
    del graph.node[:]
    graph.node.extend(kept)
    if fused and not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return fused


class OnnxNetworks:
    """The exported graphs of one model, each in an ONNX Runtime session.

    >>> nets = OnnxNetworks("artifacts/tiny")
    >>> out = nets.run("image_encoder", image=image)  # {"image_embed": ..., ...}
    """

    def __init__(
        self,
        export_dir: os.PathLike,
        networks: Iterable[str] = tuple(CONTRACTS),
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        allow_spinning: bool = True,
        fuse_attention: bool = True,
        shrink_arena: bool = True,
    ) -> None:
        self.export_dir = Path(export_dir)
        self.metadata = load_metadata(self.export_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        if not allow_spinning:
            # Idle worker threads sleep instead of spinning: on a small CPU shared with other
            # work (post-processing, other model instances) spinning steals the cores.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = list(providers or ["CPUExecutionProvider"])
        cpu_only = all(
            (p[0] if isinstance(p, (tuple, list)) else p) == "CPUExecutionProvider"
            for p in providers
        )
        self.run_options = ort.RunOptions()
        if shrink_arena:
            self.run_options.add_run_config_entry(*ARENA_SHRINKAGE)
        self.sessions: dict[str, ort.InferenceSession] = {}
        self.fused_attentions: dict[str, int] = {}
        for name in networks:
            path = self.export_dir / CONTRACTS[name].file
            if not path.is_file():
                raise ExportError(f"{path} not found: export the model again")
            model = str(path)
            if fuse_attention and cpu_only and name in FUSED_ATTENTION_NETWORKS:
                import onnx

                proto = onnx.load(model)
                self.fused_attentions[name] = fuse_cpu_attention(proto)
                model = proto.SerializeToString()
            self.sessions[name] = ort.InferenceSession(model, options, providers=providers)

    def run(self, network: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        contract = CONTRACTS[network]
        validate_inputs(contract, inputs)
        outputs = self.sessions[network].run(contract.output_names, inputs, self.run_options)
        return dict(zip(contract.output_names, outputs))
