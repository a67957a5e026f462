"""The workspace the tracker stacks per-frame network inputs into (python_backend/video/
workspace.py): views reused across scopes, bounded, never handed out outside a scope; memories
stacked into it equal a fresh stack."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from sam2_triton.python_backend.video.memory_bank import (
    MEMORY_SHAPE,
    Selection,
    memory_features_shape,
    stack_memory_features,
)
from sam2_triton.python_backend.workspace import Workspace, shared_workspace

CPU = torch.device("cpu")


def test_later_scopes_reuse_the_storage_the_first_one_grew_to():
    workspace = Workspace(CPU)
    with workspace.scope():  # storage empty: plain tensors; then it grows to hold both
        workspace.take((4, 8), torch.float32)
        workspace.take((3,), torch.int64)
    assert workspace.nbytes == 128 + 64  # each view starts on a 64-byte boundary
    pointers = set()
    for _ in range(3):
        with workspace.scope():
            a = workspace.take((4, 8), torch.float32)
            b = workspace.take((3,), torch.int64)
            pointers.add((a.data_ptr(), b.data_ptr()))
            assert a.is_contiguous() and a.shape == (4, 8) and b.dtype == torch.int64
            assert b.data_ptr() >= a.data_ptr() + a.numel() * 4  # no overlap
            assert a.data_ptr() % 64 == 0 and b.data_ptr() % 64 == 0
    assert len(pointers) == 1  # the same views every frame


def test_views_live_until_the_outermost_scope_ends():
    workspace = Workspace(CPU)
    with workspace.scope():
        workspace.take((256,), torch.float32)
    with workspace.scope():
        outer = workspace.take((64,), torch.float32)
        with workspace.scope():
            inner = workspace.take((64,), torch.float32)
        after = workspace.take((64,), torch.float32)  # the inner scope freed nothing
        starts = {outer.data_ptr(), inner.data_ptr(), after.data_ptr()}
    assert len(starts) == 3


def test_take_outside_a_scope_is_refused():
    with pytest.raises(RuntimeError, match="outside a scope"):
        Workspace(CPU).take((2,), torch.float32)


def test_the_storage_never_exceeds_max_bytes():
    workspace = Workspace(CPU, max_bytes=1024)
    for _ in range(2):
        with workspace.scope():
            big = workspace.take((1024,), torch.float32)  # 4 KiB: beyond the bound
            big.fill_(1.0)
    assert workspace.nbytes == 1024 and float(big.sum()) == 1024.0
    with pytest.raises(ValueError, match="max_bytes"):
        Workspace(CPU, max_bytes=-1)


def test_each_thread_has_its_own_shared_workspace():
    seen: list[Workspace] = []
    thread = threading.Thread(target=lambda: seen.append(shared_workspace(CPU)))
    thread.start()
    thread.join()
    assert shared_workspace(CPU) is shared_workspace(CPU)
    assert seen[0] is not shared_workspace(CPU)


def _selection(memories: list[torch.Tensor]) -> Selection:
    return Selection(
        memories=tuple(memories),
        memory_temporal_positions=np.zeros(len(memories), np.int32),
        pointers=(),
        object_pointer_positions=np.zeros(0, np.float32),
    )


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float32])
def test_memories_stacked_into_a_workspace_equal_a_fresh_stack(storage):
    generator = torch.Generator().manual_seed(0)
    selections = [
        _selection([torch.randn(MEMORY_SHAPE, generator=generator).to(storage) for _ in range(3)])
        for _ in range(2)
    ]
    expected = torch.stack([torch.stack(s.memories) for s in selections]).to(torch.float32)
    workspace = Workspace(CPU)
    for _ in range(2):
        with workspace.scope():
            out = workspace.take(memory_features_shape(selections), torch.float32)
            out.fill_(float("nan"))  # whatever the storage held before is overwritten
            got = stack_memory_features(selections, out=out)
            assert got is out
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(stack_memory_features(selections), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="contiguous float32"):
        stack_memory_features(selections, out=torch.empty(2, 3, *MEMORY_SHAPE).bfloat16())
