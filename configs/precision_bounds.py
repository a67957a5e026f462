"""How far each precision may move the networks and the tracked masks from fp32.

One table for every runtime that runs below fp32:

* `max_relative_error`: the largest relative L2 error, ||out - ref|| / ||ref||, of any output of
  any of the four networks against fp32 (ONNX Runtime or PyTorch fp32, which agree to 1e-5) on
  the contract's random inputs. The TensorRT verifier (export/tensorrt/verify.py,
  DEFAULT_TOLERANCE) and the PyTorch runtime's tests (tests/test_video_networks.py,
  tests/test_precision.py) hold their outputs to it.
* `min_mask_iou`: the smallest mask IoU, per object and frame, of a video tracked by VideoTracker
  at this precision against the same video tracked in fp32 (benchmarks/precision.py;
  tests/test_precision.py). None: not measured (fp32 is the reference itself; TF32 is a CUDA
  mode).

bf16's bounds come from benchmarks/precision.py (docs/benchmarks.md, "Reduced precision"):
PyTorch autocast on a 2-core CPU, tiny model, random weights, a 30-frame synthetic video with two
objects, 2026-12-01: worst network error 1.1e-2 (image_encoder's image_embed), worst mask IoU
0.981 (mean 0.9992 / 0.9996 per object); each bound leaves about 2.5x the measured error
(1 - IoU for masks). fp16 is not measured by that run (CPU fp16 matrix products are too slow,
benchmarks/precision.py SLOW_ON_CPU): an earlier CPU measurement of its network errors gave
7e-4 to 1.4e-3, and its bound is 7x that, wider because GPU kernels (TensorRT's among them) may
accumulate differently; its mask bound is bf16's (bf16 keeps 3 fewer mantissa bits).
fp32 is the graph-fidelity criterion (tests/test_fidelity.py); tf32 (a CUDA mode) is not
measured here and keeps the TensorRT verifier's earlier tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrecisionBound:
    max_relative_error: float  # per network output, against fp32
    min_mask_iou: float | None  # per object and frame of a tracked video, against fp32


PRECISION_BOUNDS = {
    "fp32": PrecisionBound(max_relative_error=1e-4, min_mask_iou=None),
    "tf32": PrecisionBound(max_relative_error=1e-2, min_mask_iou=None),
    "fp16": PrecisionBound(max_relative_error=1e-2, min_mask_iou=0.95),
    "bf16": PrecisionBound(max_relative_error=3e-2, min_mask_iou=0.95),
}
