"""The error every serving function raises for bad client input (mapped to INVALID_ARG)."""


class InputError(ValueError):
    """A request does not fit what the model accepts; the message names the problem."""
