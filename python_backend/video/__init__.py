"""Streaming SAM 2 video object tracking over the exported graphs (no Triton imports).

Modules, one job each:

* `memory_bank`: bounded per-object memory and SAM 2's choice of memories / object pointers for
  a frame (`MemoryBank`, `MemorySettings`, `Selection`);
* `frames`: frame preprocessing (the video predictor's, or the image predictor's);
* `heads`: mask-token / pointer choice and object-presence handling of decoder outputs;
* `networks`: the `VideoNetworks` protocol and its ONNX Runtime implementation;
* `tracker`: `VideoTracker` (add_prompt / track / remove_object) and `FrameResult`.
"""

from sam2_triton.python_backend.video.memory_bank import MemoryBank, MemorySettings, Selection
from sam2_triton.python_backend.video.networks import OnnxVideoNetworks, VideoNetworks
from sam2_triton.python_backend.video.tracker import FrameResult, VideoTracker

__all__ = [
    "FrameResult",
    "MemoryBank",
    "MemorySettings",
    "OnnxVideoNetworks",
    "Selection",
    "VideoNetworks",
    "VideoTracker",
]
