"""Errors that carry a message meant for a person, not a traceback.

The CLI prints ``LookalikeError`` messages as one clean line and exits non-zero;
anything else is a bug and keeps its traceback.
"""


class LookalikeError(Exception):
    """Base class: bad input or an unmet precondition, explained in the message."""


class ConfigError(LookalikeError):
    """A configuration file or override is invalid."""


class DataValidationError(LookalikeError):
    """Input data is missing a column, has the wrong type, duplicates, or is too small."""


class PrivacyViolationError(LookalikeError):
    """A model input path was asked to use a feature not held under legitimate interest."""


class ArtifactError(LookalikeError):
    """An artifact is missing, corrupt, or inconsistent with another artifact."""
