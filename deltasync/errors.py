"""The exceptions deltasync raises; the CLI turns each into a message and an exit code."""

from __future__ import annotations


class DeltasyncError(Exception):
    """Base of every error deltasync reports to its user."""


class ConfigError(DeltasyncError):
    """The configuration file is missing, malformed or names an unknown key."""


class ExtractError(DeltasyncError):
    """An SIS extract cannot be read; the message names the file, line and column."""


class StoreError(DeltasyncError):
    """The state store cannot be opened, migrated or written."""


class OutboxError(DeltasyncError):
    """A delta file cannot be written to the feed's outbox."""


class GuardRefused(DeltasyncError):
    """A safety guard refused the run; nothing was changed."""


class NotFound(DeltasyncError):
    """A feed, patron or batch that was asked for does not exist."""
