"""deeptut's own error types. Every defect a user can cause maps onto one of these; the CLI prints
the message (which names the file or value at fault) without a traceback."""


class DeeptutError(Exception):
    """Base class of every error deeptut raises on purpose."""


class ConfigError(DeeptutError, ValueError):
    """An unknown key, a value of the wrong type, or an inconsistent configuration."""


class DataError(DeeptutError, ValueError):
    """A data file is missing, malformed, corrupted or hostile."""


class CheckpointError(DeeptutError, ValueError):
    """A checkpoint or saved model is missing, corrupted, or from another model or version."""


class TrainingError(DeeptutError, RuntimeError):
    """Training cannot go on (NaN/Inf in the cost or the parameters, divergence)."""
