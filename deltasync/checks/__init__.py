"""Pre-flight validation: catch what Alma would reject before a file leaves.

``codes`` names every finding, ``settings`` holds a feed's policies, ``record`` checks and
fixes one record, ``identifiers`` says how identifier values compare, and ``findings`` tallies
what they found. The run's pass (:mod:`deltasync.scan`) applies them to every record it reads
in full; :mod:`deltasync.check` runs that pass on any file.
"""

from __future__ import annotations

from .codes import FILE_CODES, RECORD_CODES, Policy
from .findings import Finding, Report
from .settings import CheckSettings

__all__ = [
    "FILE_CODES",
    "RECORD_CODES",
    "CheckSettings",
    "Finding",
    "Policy",
    "Report",
]
