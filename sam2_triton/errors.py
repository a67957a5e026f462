"""Errors that reach users as one clear line (the CLI prints them without a traceback)."""


class Sam2TritonError(Exception):
    """Base class: a problem the user can fix, described in the message."""


class ConfigError(Sam2TritonError):
    """Unknown model size or profile, or a malformed config file."""


class CheckpointError(Sam2TritonError):
    """A checkpoint is missing, corrupt, or does not match the model config."""


class ExportError(Sam2TritonError):
    """An exported graph is missing, stale, or does not satisfy its I/O contract."""


class TensorRTUnavailableError(Sam2TritonError):
    """TensorRT or an NVIDIA GPU is required but not present."""
