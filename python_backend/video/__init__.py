"""Streaming SAM 2 video object tracking over the exported graphs (no Triton imports).

Every tensor of a sequence lives on the tracker's device (torch); values reach the host only
through `device.HostTransfers`. Modules, one job each:

* `device`: `resolve_device` and `HostTransfers`, the one door from the device to the host;
* `memory_bank`: bounded per-object memory and SAM 2's choice of memories / object pointers for
  a frame (`MemoryBank`, `MemorySettings`, `Selection`); SAMURAI's choice plugs in;
* `frames`: frame preprocessing (the video predictor's, on the host or on the device, or the
  image predictor's) and the resize of mask prompts;
* `heads`: mask-token / pointer choice and object-presence handling of decoder outputs, mask
  prompts used as output;
* `holes`: SAM 2's hole filling of the low-res masks (`fill_holes_in_mask_scores`) in torch;
* `networks`: the `VideoNetworks` protocol (device tensors) and its ONNX Runtime implementation;
* `tracker`: `VideoTracker` (add_prompt / track / correct / remove_object, SAM 2 or SAMURAI)
  and `FrameResult` (device logits, host scalars, masks and boxes computed when read).

SAMURAI's filter, mask choice and memory selection live in python_backend/samurai.py.
Design notes: docs/video-tracker.md, docs/memory-bank.md
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
