"""A CPU stand-in for SAM 2's CUDA connected-components kernel (`sam2._C`), for the tests.

`sam2.utils.misc.get_connected_components(mask)` returns, for a binary mask [N, 1, H, W], the
8-connected components' labels (> 0 on foreground pixels, 0 elsewhere) and each pixel's
component area (0 off the foreground), int32, on the mask's device. The reference's hole filling
(`fill_holes_in_mask_scores`) reads only `labels > 0` and the areas. `connected_components` returns
the same from a union-find over the horizontal runs of each row (an algorithm independent of
python_backend/video/holes.py's label propagation); `install` puts it in place of the kernel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def label_image(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bool [H, W] -> (labels int32 [H, W], 1.. per 8-connected component of the True pixels,
    0 elsewhere; areas int32 [H, W], the pixel's component size, 0 elsewhere)."""
    height, width = mask.shape
    parent: list[int] = []
    runs: list[tuple[int, int, int, int]] = []  # (row, start, stop, run id)
    previous: list[tuple[int, int, int]] = []  # runs of the row above: (start, stop, run id)
    for y in range(height):
        edges = np.diff(np.concatenate(([0], mask[y].astype(np.int8), [0])))
        current = []
        j = 0
        for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            run = len(parent)
            parent.append(run)
            # 8-connected: a run above touches columns start-1 .. stop (stop exclusive)
            while j < len(previous) and previous[j][1] < start:
                j += 1
            k = j
            while k < len(previous) and previous[k][0] <= stop:
                a, b = _find(parent, run), _find(parent, previous[k][2])
                parent[max(a, b)] = min(a, b)
                k += 1
            current.append((int(start), int(stop), run))
            runs.append((y, int(start), int(stop), run))
        previous = current
    labels = np.zeros((height, width), np.int32)
    areas = np.zeros((height, width), np.int32)
    roots = [_find(parent, run) for _, _, _, run in runs]
    numbers = {root: i + 1 for i, root in enumerate(sorted(set(roots)))}
    size = dict.fromkeys(numbers, 0)
    for (_, start, stop, _), root in zip(runs, roots):
        size[root] += stop - start
    for (y, start, stop, _), root in zip(runs, roots):
        labels[y, start:stop] = numbers[root]
        areas[y, start:stop] = size[root]
    return labels, areas


def connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`get_connected_components` of sam2 1.1.0 on any device: mask [N, 1, H, W] (nonzero:
    foreground) -> (labels, areas), int32 [N, 1, H, W] on the mask's device."""
    host = mask.detach().to("cpu").numpy() != 0
    labels = np.zeros(host.shape, np.int32)
    areas = np.zeros(host.shape, np.int32)
    for n in range(host.shape[0]):
        for c in range(host.shape[1]):
            labels[n, c], areas[n, c] = label_image(host[n, c])
    return (
        torch.from_numpy(labels).to(mask.device),
        torch.from_numpy(areas).to(mask.device),
    )


class CountingComponents:
    """`connected_components`, counting its calls and the holes the reference filled with it
    (background components of at most `max_area` pixels seen; the reference asks for the
    components of `mask <= 0`, so its foreground is the logits' background)."""

    def __init__(self, max_area: int) -> None:
        self.max_area = max_area
        self.calls = 0
        self.hole_pixels = 0

    def __call__(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels, areas = connected_components(mask)
        self.calls += 1
        self.hole_pixels += int(((labels > 0) & (areas <= self.max_area)).sum())
        return labels, areas


@contextlib.contextmanager
def installed(max_area: int = 8) -> Iterator[CountingComponents]:
    """The reference's `get_connected_components` replaced by a `CountingComponents` while the
    context lasts (SAM2VideoPredictor fills holes as it does with its CUDA extension built)."""
    import sam2.utils.misc as misc

    stand_in = CountingComponents(max_area)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(misc, "get_connected_components", stand_in)
        yield stand_in
