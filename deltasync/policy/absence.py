"""Departures as libraries run them: a short absence is not a departure (``grace_days``), and
some user groups are never expired by absence (``keep_groups``).

A patron absent but not departed stays present in the snapshot with its record as it was;
its current version's ``last_seen`` says since when it is missing (the time of the last
extract that held it), so the grace runs from there. When it comes back it is simply seen
again: nothing is sent unless its record changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from lxml import etree
from sqlalchemy import Connection, select

from ..store.tables import chunks, patron_t, version_t
from ..userxml import parse_payload


def not_departed(
    conn: Connection,
    patron_ids: list[int],
    *,
    grace_days: int,
    keep_groups: Iterable[str],
    today: dt.date,
    tz: dt.tzinfo,
    last_extract_at: dt.datetime | None,
) -> set[int]:
    """The patrons among ``patron_ids`` (missing from the extract) that do not depart yet."""
    keep = set(keep_groups)
    if not patron_ids or (not grace_days and not keep):
        return set()
    p, v = patron_t.c, version_t.c
    staying: set[int] = set()
    for part in chunks(patron_ids):
        rows = conn.execute(
            select(p.id, v.last_seen, v.payload)
            .join(version_t, v.id == p.current_version_id)
            .where(p.id.in_(part))
        )
        for pid, last_seen, payload in rows:
            if keep and _group(payload) in keep:
                staying.add(int(pid))
                continue
            seen = last_seen or last_extract_at
            if grace_days and seen is not None:
                since = _aware(seen).astimezone(tz).date()
                if (today - since).days < grace_days:
                    staying.add(int(pid))
    return staying


def _group(payload: bytes | None) -> str | None:
    if payload is None:
        return None
    try:
        return (parse_payload(payload).findtext("user_group") or "").strip() or None
    except etree.XMLSyntaxError:
        return None


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite hands timestamps back naive; the store writes them in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
