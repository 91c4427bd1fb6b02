"""The exceptions mmgen raises.

Every error a user can cause is an :class:`MMGenError` (a ``ValueError``), so
``except ValueError`` keeps working in user code; the subclasses say which part
of the pipeline refused the input.
"""

from __future__ import annotations

__all__ = [
    "MMGenError",
    "DataError",
    "PrivacyError",
    "FormatError",
    "NotFittedError",
    "BackendError",
    "NotForPublicationWarning",
]


class MMGenError(ValueError):
    """Base class of every error mmgen raises on bad input."""


class DataError(MMGenError):
    """The data is unusable: wrong shape or dtype, NaN/inf, out of domain, missing files."""


class PrivacyError(MMGenError):
    """A privacy parameter is invalid or a guarantee cannot be met."""


class FormatError(MMGenError):
    """A release or checkpoint file is truncated, altered, foreign or of an unknown version."""


class NotFittedError(MMGenError, AttributeError):
    """A component was used before it was set up (e.g. a feature map before ``setup``)."""


class BackendError(MMGenError, RuntimeError):
    """A compute backend was asked for that is not available here (e.g. Triton without a GPU)."""


class NotForPublicationWarning(UserWarning):
    """An input was made with test-only seeded noise (``noise_seed``): nothing derived from it may be published."""
