"""Where the video path's tensors live, and the one door they take to the host.

The tracker keeps every tensor of a sequence (frame features, memories, pointers, logits) on
its device as torch tensors. A decision made in Python (SAMURAI's Kalman filter, an answer sent
over the wire) needs values on the host: those go through `HostTransfers.to_host`, and nowhere
else (`.item()`, `.tolist()`, `bool(tensor)`, `.cpu()`, `.numpy()` on a device tensor are not
used by the video path). The counter is how the orchestration benchmark reports transfers per
frame: the count must not grow with the number of objects. On CPU the copy is a view, but it is
counted the same: CPU runs exactly the code a GPU runs.

Design notes: docs/video-tracker.md (data path)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "cpu", "cuda", "cuda:1", a torch.device, or None (cpu) -> torch.device.

    "gpu" (the profiles' word) means the current CUDA device."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    if device == "gpu":
        device = "cuda"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for, but torch sees no CUDA device")
    return resolved


@dataclass
class HostTransfers:
    """Counts device-to-host copies (one per tensor moved), in total and since `reset`."""

    count: int = 0

    def to_host(self, tensor: torch.Tensor) -> np.ndarray:
        """One device-to-host copy: `tensor` as a numpy array (a view for CPU tensors)."""
        self.count += 1
        return tensor.detach().cpu().numpy()

    def reset(self) -> int:
        """The count so far; restarts it from 0."""
        count, self.count = self.count, 0
        return count
