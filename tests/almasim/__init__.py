"""A simulated Alma for tests: the SIS "Users SYNCHRONIZE" job and its Jobs API on loopback.

It follows /work/shared/reference/ALMA.md: zips only, at most 20 per run and 50 XML files per
zip, swap-all upserts keyed by the profile's match ID (primary IDs compare case-insensitively),
a second record of one match ID in a run rejected, INTERNAL users rejected, identifiers unique
across users, and every processed file renamed ``.handled`` rather than deleted.
"""

from .api import AlmaApiServer, ApiError
from .simulator import (
    AlmaSimulator,
    FileRejected,
    JobInstance,
    User,
    canonical,
    flat_fields,
    identifiers,
    read_zip,
)
from .sources import FolderSource, SftpSource, Source

__all__ = [
    "AlmaApiServer",
    "AlmaSimulator",
    "ApiError",
    "FileRejected",
    "FolderSource",
    "JobInstance",
    "SftpSource",
    "Source",
    "User",
    "canonical",
    "flat_fields",
    "identifiers",
    "read_zip",
]
