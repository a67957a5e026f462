"""Checks shared by the per-request settings of the automatic mask generator and SAMURAI.

Values may arrive as Python scalars (YAML defaults) or as one-element numpy arrays (Triton
request inputs); every check raises InputError naming the setting.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from sam2_triton.python_backend.errors import InputError


def scalar_value(value: Any) -> Any:
    """A one-element array or numpy scalar -> the Python scalar; anything else as is.

    A float32 (or narrower) value becomes the float of its shortest decimal, so that an FP32
    request value 0.7 means 0.7 as in Python, not 0.699999988.
    """
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(())[()]
    if isinstance(value, np.floating) and np.finfo(value.dtype).bits <= 32:
        return float(str(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


def typed_value(name: str, value: Any, kind: type) -> Any:
    """`value` as `kind` (bool, int or float: a setting's field type, configs.field_types);
    InputError if it is of another kind (a bool is not a number here)."""
    is_bool = isinstance(value, bool)
    if kind is bool:
        if not is_bool:
            raise InputError(f"{name} must be true or false, got {value!r}")
        return value
    if kind is int:
        if is_bool or not isinstance(value, numbers.Integral):
            raise InputError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if is_bool or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {value!r}")
    return float(value)


def check_int_range(name: str, value: int, low: int, high: int | None) -> None:
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in {low}..{high}"
        raise InputError(f"{name} must be {allowed}, got {value}")


def check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")


def check_unit_interval(name: str, value: float, upper_open: bool = False) -> None:
    check_finite(name, value)
    if value < 0 or value > 1 or (upper_open and value == 1):
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise InputError(f"{name} must be in {interval}, got {value:g}")
