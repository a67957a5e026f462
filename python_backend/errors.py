"""The errors every serving function raises for bad client input (mapped to INVALID_ARG).

`reason` names the kind of refusal for the sam2_refused_requests_total metric
(python_backend/metrics.py).
"""


class InputError(ValueError):
    """A request does not fit what the model accepts; the message names the problem."""

    reason = "invalid_request"


class ServerFullError(InputError):
    """A new video sequence cannot start: the server holds as many as it may."""

    reason = "server_full"


class UnknownSequenceError(InputError):
    """A request names a video sequence the server does not hold (never started, ended,
    evicted, or lost when a crashed model was reloaded)."""

    reason = "unknown_sequence"


class SnapshotError(InputError):
    """A sequence snapshot cannot be taken or restored: too large for the server's bound, not a
    snapshot, corrupted, of another format version, model, size, weights or precision."""

    reason = "snapshot_refused"
