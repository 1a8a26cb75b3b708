"""Exceptions raised by the study.

Every error the user can fix derives from `StudyError`. The command-line entry
points catch it and print its message as one line with its `exit_status` (2
unless a subclass sets another), so each message must say what failed, on
which value, and what to do about it.
"""


class StudyError(Exception):
    """Base class for errors caused by input, files or configuration."""

    exit_status = 2


class DataError(StudyError):
    """CIFAR-10 could not be found, read or validated."""


class SplitError(StudyError):
    """A training-set size or validation split is impossible for the pool."""


class WeightsError(StudyError):
    """ImageNet ResNet50 weights could not be obtained or do not fit the model."""


class ConfigError(StudyError):
    """A command-line value, search-space file or project setting is invalid."""


class TrialFailuresError(StudyError):
    """A search stopped because too many trials in a row failed."""

    exit_status = 1
