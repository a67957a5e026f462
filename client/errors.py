"""The one error type the client raises for server-side and connection problems."""

from __future__ import annotations

import re

from sam2_triton.errors import Sam2TritonError

# "[StatusCode.INVALID_ARGUMENT] " (gRPC), "[400] " (HTTP) or Triton's "[request id: ...] "
# in front of a server message.
_STATUS_PREFIX = re.compile(r"^\s*\[(?:StatusCode\.[A-Z_]+|\d{3}|request id: [^\]]*)\]\s*")
# What follows this in a Python-backend message is the server-side stack of an exception.
_PYTHON_STACK = "\nAt:\n"


def clean_message(message: str) -> str:
    """The server's message on one line, without status prefixes or a Python stack."""
    message = message.split(_PYTHON_STACK, 1)[0]
    while True:
        stripped = _STATUS_PREFIX.sub("", message, count=1)
        if stripped == message:
            break
        message = stripped
    return " ".join(message.split())


def attribute(message: str, model: str | None) -> str:
    """`message` as "<model>: ...", once: a leading "in ensemble '<model>', " or "<model>: "
    from the server is replaced rather than repeated."""
    if not model:
        return message
    for said in (f"in ensemble '{model}', ", f"{model}: "):
        if message.startswith(said):
            message = message[len(said) :]
    return f"{model}: {message}"


class Sam2ClientError(Sam2TritonError):
    """A request failed: the server rejected it, or could not be reached.

    `str(error)` is one line. `status` is the transport's status ("400",
    "StatusCode.INVALID_ARGUMENT", ...) or None when no server answered; `model` names the
    model called, if any.
    """

    def __init__(self, message: str, status: str | None = None, model: str | None = None):
        super().__init__(clean_message(message))
        self.status = status
        self.model = model
