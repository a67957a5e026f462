"""Memory attention, the largest per-frame cost of video tracking: ONNX Runtime against PyTorch.

The PyTorch side is the official `model.memory_attention` (`MemoryAttention` with
`scaled_dot_product_attention`), called as `SAM2Base._prepare_memory_conditioned_features` calls
it, i.e. what `SAM2VideoPredictor` runs per frame. The ONNX side runs the exported graph (and any
other graphs given with --onnx, e.g. an older export, for A/B comparisons). Variants are
interleaved call by call (round robin), so that a noisy machine slows them alike.

    python -m sam2_triton.benchmarks.memory_attention --export-dir artifacts/tiny --model tiny \
        --random-weights [--batch 1 3] [--memories 7] [--pointers 16] [--repeat 5] \
        [--json memory_attention.json] [--plot memory_attention.png]

Variants are named "onnxruntime export" (the export's graph, with the CPU attention fusion as
OnnxNetworks runs it), "onnxruntime <path>" for --onnx graphs, " (plain)" without the fusion,
and "pytorch official". Writes p50 / p95 per batch size and variant as JSON and a plot of time
against batch size (benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sam2.modeling.sam2_utils import get_1d_sine_pe

from sam2_triton.benchmarks.networks import add_model_arguments, summarize, weights_description
from sam2_triton.benchmarks.report import (
    add_output_arguments,
    plot_memory_attention,
    record_header,
    write_report,
)
from sam2_triton.configs import get_model
from sam2_triton.export.checkpoints import build_sam2_model
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.export.sample_inputs import random_inputs
from sam2_triton.python_backend.onnx_networks import fuse_cpu_attention


def official_call(model, inputs: dict[str, np.ndarray]) -> Callable[[], torch.Tensor]:
    """The official memory attention on the tensors SAM 2 would build from `inputs`."""
    batch = inputs["memory_temporal_positions"].shape[0]
    num_pointers = inputs["object_pointers"].shape[1]
    hidden, mem_dim, size = model.hidden_dim, model.mem_dim, 64
    with torch.no_grad():
        current = torch.from_numpy(inputs["current_features"])
        current_pos = model.image_encoder.neck.position_encoding(current[:1]).expand(
            batch, -1, -1, -1
        )
        mem_pos = model.memory_encoder.position_encoding(torch.zeros(1, mem_dim, size, size))
        memory = torch.from_numpy(inputs["memory_features"]).flatten(3).permute(1, 3, 0, 2)
        memory = memory.reshape(-1, batch, mem_dim)  # [M*HW, B, mem_dim]
        tpos = model.maskmem_tpos_enc[
            model.num_maskmem - 1 - torch.from_numpy(inputs["memory_temporal_positions"][0]).long()
        ]  # [M, 1, 1, mem_dim]
        memory_pos = (mem_pos.flatten(2).permute(2, 0, 1).unsqueeze(0) + tpos).reshape(
            -1, 1, mem_dim
        )
        split = hidden // mem_dim
        pointers = torch.from_numpy(inputs["object_pointers"]).permute(1, 0, 2)  # [P, B, C]
        pointers = pointers.reshape(num_pointers, batch, split, mem_dim).permute(0, 2, 1, 3)
        pointers = pointers.flatten(0, 1)
        if model.add_tpos_enc_to_obj_ptrs:
            tpos_dim = hidden if model.proj_tpos_enc_in_obj_ptrs else mem_dim
            positions = torch.from_numpy(inputs["object_pointer_positions"][0])
            pointer_pos = model.obj_ptr_tpos_proj(get_1d_sine_pe(positions, dim=tpos_dim))
        else:
            pointer_pos = torch.zeros(num_pointers, mem_dim)
        pointer_pos = pointer_pos[:, None, None, :].expand(-1, split, batch, -1).flatten(0, 1)
        memory = torch.cat([memory, pointers])
        memory_pos = torch.cat([memory_pos.expand(-1, batch, -1), pointer_pos])
        curr = current.flatten(2).permute(2, 0, 1)
        curr_pos = current_pos.flatten(2).permute(2, 0, 1)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model.memory_attention(
                curr=[curr],
                curr_pos=[curr_pos],
                memory=memory,
                memory_pos=memory_pos,
                num_obj_ptr_tokens=num_pointers * split,
            )

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--memories", type=int, default=7)
    parser.add_argument("--pointers", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--onnx", nargs="*", default=[], help="more graphs to compare (A/B)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: default)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="also run the graphs as exported (without the CPU attention fusion)",
    )
    add_output_arguments(parser)
    args = parser.parse_args()

    model = build_sam2_model(
        get_model(args.model), checkpoint=args.checkpoint, random_weights=args.random_weights
    ).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    graphs = {"export": f"{args.export_dir}/{CONTRACTS['memory_attention'].file}"}
    graphs.update({graph: graph for graph in args.onnx})
    sessions = {}
    for label, graph in graphs.items():
        proto = onnx.load(graph)
        for fused in (False, True) if args.plain else (True,):  # plain first: fusing edits proto
            if fused:  # as OnnxNetworks runs it on CPU
                fuse_cpu_attention(proto)
            sessions[f"{label}{'' if fused else ' (plain)'}"] = ort.InferenceSession(
                proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
    batches: dict[str, dict[str, dict[str, float]]] = {}
    results = {
        **record_header(args.model, weights_description(args)),
        "memories": args.memories,
        "pointers": args.pointers,
        "repeat": args.repeat,
        "threads": args.threads,
        "batches": batches,
    }
    for batch in args.batch:
        sizes = {"batch": batch, "num_memories": args.memories, "num_pointers": args.pointers}
        inputs = random_inputs(CONTRACTS["memory_attention"], sizes, np.random.default_rng(0))
        for name in ("memory_temporal_positions", "object_pointer_positions"):  # as SAM 2 batches
            inputs[name] = np.ascontiguousarray(
                np.broadcast_to(inputs[name][:1], inputs[name].shape)
            )
        variants: dict[str, Callable[[], object]] = {
            f"onnxruntime {g}": functools.partial(s.run, None, inputs) for g, s in sessions.items()
        }
        if not args.no_torch:
            official = official_call(model, inputs)
            variants["pytorch official"] = official
            if batch == args.batch[0]:  # same computation on both sides
                ours = next(iter(sessions.values())).run(None, inputs)[0]
                ref = official().permute(1, 2, 0).reshape(ours.shape).numpy()
                error = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
                results["relative_l2_error_vs_official"] = error
                print(f"relative L2 error ONNX vs official: {error:.2e}")
        times: dict[str, list[float]] = {name: [] for name in variants}
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(args.repeat):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
        batches[str(batch)] = {name: summarize(t) for name, t in times.items()}
        print(f"batch {batch}, {args.memories} memories, {args.pointers} pointers:")
        for name, t in times.items():
            print(f"  {name:60} p50 {np.percentile(t, 50):8.0f} ms  min {min(t):8.0f} ms")
    write_report(results, plot_memory_attention, args.json, args.plot)


if __name__ == "__main__":
    main()
