"""TensorRT optimization-profile shapes from the I/O contract and a deployment profile."""

from __future__ import annotations

from sam2_triton.configs import DeploymentProfile
from sam2_triton.export.contract import GraphContract

Shape = tuple[int, ...]


def profile_shapes(
    contract: GraphContract, profile: DeploymentProfile
) -> dict[str, tuple[Shape, Shape, Shape]]:
    """(min, opt, max) shape of every input of `contract`, from `profile.engine_shapes`."""
    ranges = {axis: profile.axis_range(contract.name, axis) for axis in contract.axis_names}
    shapes = {}
    for spec in contract.inputs:
        low, opt, high = (
            spec.concrete_shape({axis: r[i] for axis, r in ranges.items()}) for i in range(3)
        )
        shapes[spec.name] = (low, opt, high)
    return shapes


def sizes_at(contract: GraphContract, profile: DeploymentProfile, which: int) -> dict[str, int]:
    """Dynamic-axis sizes at the profile's min (0), opt (1) or max (2)."""
    return {axis: profile.axis_range(contract.name, axis)[which] for axis in contract.axis_names}
