"""One root error for the project; `retriable` says whether trying again can help."""

from __future__ import annotations


class PinganError(Exception):
    retriable: bool = False


class ConfigError(PinganError):
    """A setting is missing or malformed."""


class TransientError(PinganError):
    """A dependency is briefly unavailable; the operation may be retried."""

    retriable = True


class NotFound(PinganError):
    """A named thing (unit, device, officer) does not exist."""
