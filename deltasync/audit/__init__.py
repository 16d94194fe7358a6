"""Read-only questions about a feed: where it stands, a patron's history, who changed what.

``status`` (counts, batches), ``history`` (one patron over time, ``show`` at a moment),
``changes`` (what changed across patrons), ``fields`` (a record as fields, and their diff).
"""

from __future__ import annotations

from .changes import ChangeRow, list_changes
from .fields import FieldChange
from .history import Shown, VersionRow, View, history, show
from .status import (
    BatchDetail,
    BatchRow,
    ExtractInfo,
    FeedStatus,
    Member,
    as_json,
    batch_detail,
    batches,
    status,
)

__all__ = [
    "BatchDetail",
    "BatchRow",
    "ChangeRow",
    "FieldChange",
    "Member",
    "batch_detail",
    "list_changes",
    "ExtractInfo",
    "FeedStatus",
    "Shown",
    "VersionRow",
    "View",
    "as_json",
    "batches",
    "history",
    "show",
    "status",
]
