"""The exceptions deltasync raises; the CLI turns each into a message and an exit code."""

from __future__ import annotations


class DeltasyncError(Exception):
    """Base of every error deltasync reports to its user."""


class ConfigError(DeltasyncError):
    """The configuration file is missing, malformed or names an unknown key."""


class ExtractError(DeltasyncError):
    """An SIS extract cannot be read; the message names the file, line and column."""

    def __init__(self, message: str, *, code: str = "file-unreadable") -> None:
        super().__init__(message)
        self.code = code
        """A stable name for the problem (README: Pre-flight checks)."""


class InputError(DeltasyncError):
    """A file the user gave (such as a list of match IDs) cannot be used; names file and line."""


class StoreError(DeltasyncError):
    """The state store cannot be opened, migrated or written."""


class FeedLost(StoreError):
    """This run no longer holds its feed's lock; it stopped before committing or delivering."""


class OutboxError(DeltasyncError):
    """A delta file cannot be written to the feed's outbox."""


class ReportError(DeltasyncError):
    """A report (the HTML page) cannot be written; the run it reports on stands."""


class GuardRefused(DeltasyncError):
    """A safety guard refused the run; nothing was changed."""


class NotFound(DeltasyncError):
    """A feed, patron or batch that was asked for does not exist."""


class DeliveryError(DeltasyncError):
    """A delta file could not be delivered to the remote folder Alma reads."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient
        """True when trying again later may succeed (a timeout, a dropped connection)."""


class RemoteFileMissing(DeliveryError):
    """A file expected in the remote folder is not there (Alma may have taken it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class MetricsError(DeltasyncError):
    """The metrics file (``metrics_file``) cannot be written."""
