"""User-facing errors: one line that names the problem and the fix."""


class FallEdgeError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting non-zero."""


class ConfigError(FallEdgeError):
    """The config file is missing, unreadable or invalid."""


class ModelError(FallEdgeError):
    """A model file is missing, empty, truncated or of the wrong shape."""


class SourceError(FallEdgeError):
    """A video source cannot be opened or read."""
