"""The Python-backend stub process: end it without CPython's teardown once Triton is done.

After Triton finalizes a model, its stub has answered, called `finalize`, released its shared
memory and closed its queues; what remains is the interpreter's teardown, about 1.5 s of CPU per
stub with torch loaded, which made a ten-model server need 15 s to stop on two cores. Design
notes: docs/serving.md#stopping
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import sys

# A module the stub's embedded interpreter has built in (pb_stub.cc); no other interpreter has.
STUB_BUILTIN_MODULE = "c_python_backend_utils"

_registered = False


def in_python_backend_stub() -> bool:
    """True inside a Triton Python-backend stub process."""
    return STUB_BUILTIN_MODULE in sys.builtin_module_names


def exit_without_teardown() -> None:
    """Flush logging, Python's standard streams and C's stdio buffers (the stub's own log
    lines), then end the process at once with status 0."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        ctypes.CDLL(None).fflush(None)
    except (AttributeError, OSError):
        pass
    os._exit(0)


def skip_teardown_at_exit() -> bool:
    """Inside a stub, run `exit_without_teardown` at interpreter exit (after the stub's own
    cleanup; exit handlers registered later still run before it). Returns whether it did."""
    global _registered
    if not in_python_backend_stub():
        return False
    if not _registered:
        atexit.register(exit_without_teardown)
        _registered = True
    return True
