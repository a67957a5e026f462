"""Reusable device memory for the large tensors the tracker builds for one network call and
drops right after it (the stacked memories memory attention reads, a batch's packed inputs).

Why: such a tensor is rebuilt every frame. On CPU a fresh allocation above glibc's mmap
threshold (32 MiB at most) comes straight from the kernel and is page-faulted in while it is
first written: the float32 memories of 16 objects (112 MiB) cost more to fault in than to copy.
A workspace allocates once and hands out views of the same storage every frame. On CUDA torch's
caching allocator already reuses blocks; the workspace is then merely one more reuse.

Use: `with workspace.scope(): inputs = ...take(...)...; outputs = network(inputs)`. Views taken
inside a scope stay valid until the outermost scope ends; then the whole storage is free again
(bump allocation, no per-tensor bookkeeping). Every network of this package has read its inputs
when its call returns (BLS calls, ONNX Runtime runs) or reads them in the order of torch's
current CUDA stream (PyTorch modules, TensorRT contexts enqueued on it), so a view is never
overwritten before its network has read it. What a scope needs beyond the storage is allocated
plainly, and the storage grows to the scope's high-water mark when the scope ends, up to
`max_bytes`: a workspace never holds more than that.

`shared_workspace(device)` is the one workspace per device and thread (the server's execute
thread, a benchmark's worker threads), so concurrent trackers never share a view.

Design notes: docs/video-tracker.md (data path)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import torch

ALIGNMENT = 64  # bytes: every view starts on a 64-byte boundary (vector loads, any dtype)
WORKSPACE_MAX_BYTES = 512 * 2**20  # per device and thread: 16 objects' memories fit 4 times


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


class Workspace:
    """Bump-allocated views of one uint8 storage on `device` (see the module docstring)."""

    def __init__(self, device: torch.device, max_bytes: int = WORKSPACE_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.device = device
        self.max_bytes = max_bytes
        self._storage = torch.empty((0,), dtype=torch.uint8, device=device)
        self._depth = 0  # open scopes
        self._offset = 0  # bytes handed out from the storage in the open scope
        self._wanted = 0  # bytes the open scope asked for, storage or not

    @property
    def nbytes(self) -> int:
        """Bytes the workspace holds (its storage)."""
        return self._storage.numel()

    @contextlib.contextmanager
    def scope(self) -> Iterator[Workspace]:
        """Views taken inside stay valid until the outermost scope ends."""
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._end_scope()

    def take(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of `shape` and `dtype` on the device, contiguous: a view of
        the storage, or a plain allocation when the storage is full. Only inside a scope."""
        if self._depth == 0:
            raise RuntimeError("Workspace.take outside a scope: views would outlive their use")
        numel = 1
        for size in shape:
            numel *= int(size)
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        self._wanted += _aligned(nbytes)
        if self._offset + nbytes > self._storage.numel():
            return torch.empty(tuple(shape), dtype=dtype, device=self.device)
        view = self._storage[self._offset : self._offset + nbytes]
        self._offset += _aligned(nbytes)
        return view.view(dtype).view(tuple(shape))

    def _end_scope(self) -> None:
        wanted = min(self._wanted, self.max_bytes)
        if wanted > self._storage.numel():
            self._storage = torch.empty((0,), dtype=torch.uint8, device=self.device)
            self._storage = torch.empty((wanted,), dtype=torch.uint8, device=self.device)
        self._offset = 0
        self._wanted = 0


_LOCAL = threading.local()


def shared_workspace(device: torch.device) -> Workspace:
    """The workspace of `device` for the calling thread (created on first use)."""
    spaces: dict[torch.device, Workspace] = _LOCAL.__dict__.setdefault("spaces", {})
    if device not in spaces:
        spaces[device] = Workspace(device)
    return spaces[device]
