"""Benchmark `history` and `show` on a store holding millions of versions.

The store is created by deltasync (so the schema and indexes are the real ones) and filled
directly: PATRONS patrons with VERSIONS versions each, every version carried by a batch (a
``batch_patron`` row) and linked to an extract, as a feed after years of daily runs would be.
Then ``audit.history`` and ``audit.show`` (every view) are timed for random patrons, through
the library, warm, one call at a time; the CLI adds Python's start-up to each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deltasync import audit
from deltasync.config import parse
from deltasync.store import open_store

ROOT = Path(__file__).resolve().parent.parent
BASE = dt.datetime(2020, 1, 6, 11, 0, tzinfo=dt.UTC)
CHUNK = 50_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patrons", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=10, help="versions per patron")
    parser.add_argument("--url", default=None, help="store URL [default: a SQLite file]")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "audit")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    url = args.url or f"sqlite:///{args.out / 'audit.db'}"
    if args.url is None:
        for leftover in args.out.glob("audit.db*"):
            leftover.unlink()
    config = parse(
        {"state": {"url": url}, "feeds": {"patrons": {"timezone": "UTC"}}},
        args.out / "config.toml",
        {},
    )
    feed = config.feed("patrons")
    with open_store(config.state_url) as store:
        started = time.monotonic()
        _fill(store.engine, args.patrons, args.versions)
        total = args.patrons * args.versions
        print(
            f"{store.engine.dialect.name}: loaded {args.patrons:,} patrons, {total:,} versions "
            f"and {total:,} batch members in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )
        rng = random.Random(7)
        ids = [f"P{rng.randrange(args.patrons):08d}" for _ in range(args.samples)]
        middle = BASE + dt.timedelta(days=args.versions // 2, hours=2)
        calls: dict[str, Callable[[str], Any]] = {
            "history": lambda mid: audit.history(store, feed, mid),
            "show extract (now)": lambda mid: audit.show(
                store, feed, mid, as_of=dt.datetime.now(dt.UTC), view=audit.View.EXTRACT
            ),
            "show sent (as of)": lambda mid: audit.show(
                store, feed, mid, as_of=middle, view=audit.View.SENT
            ),
            "show confirmed (as of)": lambda mid: audit.show(
                store, feed, mid, as_of=middle, view=audit.View.CONFIRMED
            ),
        }
        print("| query | versions in store | median ms | p95 ms | max ms |")
        print("|---|---|---|---|---|")
        for name, call in calls.items():
            call(ids[0])  # warm the connection pool and the statement cache
            times = []
            for mid in ids:
                t = time.perf_counter()
                call(mid)
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            p95 = times[int(len(times) * 0.95) - 1]
            print(
                f"| {name} | {total:,} | {statistics.median(times):.2f} | {p95:.2f} "
                f"| {times[-1]:.2f} |"
            )
    return 0


def _fill(engine: Any, patrons: int, versions: int) -> None:
    """Bulk-load the synthetic history, in the database's own fast path."""
    stamp: Callable[[dt.datetime], Any]
    if engine.dialect.name == "sqlite":

        def stamp(moment: dt.datetime) -> Any:
            return moment.replace(tzinfo=None).isoformat(sep=" ")
    else:

        def stamp(moment: dt.datetime) -> Any:
            return moment

    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("BEGIN")  # deltasync's connections autocommit unless told
        many = _loader(engine.dialect.name, cursor)
        many(
            "feed",
            ["id", "name", "match_id", "hash_recipe", "created_at"],
            [(1, "patrons", "primary_id", "v1;xxh3_128;ignore=", stamp(BASE))],
        )
        many(
            "batch",
            [
                "id",
                "feed_id",
                "seq",
                "file_name",
                "sha256",
                "size",
                "status",
                "created_at",
                "records",
                "parts",
                "new",
                "changed",
                "returned",
                "departed",
                "uploaded_at",
                "resolved_at",
                "attempts",
                "records_per_part",
            ],
            [
                (
                    j + 1,
                    1,
                    j + 1,
                    f"patrons_{j + 1:06d}.zip",
                    "0" * 64,
                    1,
                    "confirmed",
                    stamp(_day(j)),
                    patrons,
                    1,
                    0,
                    patrons,
                    0,
                    0,
                    stamp(_day(j, 1)),
                    stamp(_day(j, 3)),
                    1,
                    20000,
                )
                for j in range(versions)
            ],
        )
        many(
            "extract",
            [
                "id",
                "feed_id",
                "name",
                "sha256",
                "records",
                "ingested_at",
                "batch_id",
                "new",
                "changed",
                "unchanged",
                "departed",
                "returned",
                "held_back",
                "baseline",
            ],
            [
                (
                    j + 1,
                    1,
                    f"day{j}.xml",
                    f"{j:064d}",
                    patrons,
                    stamp(_day(j)),
                    j + 1,
                    0,
                    patrons,
                    0,
                    0,
                    0,
                    0,
                    False,
                )
                for j in range(versions)
            ],
        )

        def patron_rows() -> Iterator[tuple[Any, ...]]:
            for p in range(patrons):
                digest = _digest(p, versions - 1)
                yield (
                    p + 1,
                    1,
                    f"p{p:08d}",
                    f"P{p:08d}",
                    digest,
                    "present",
                    None,
                    p * versions + versions,
                    digest,
                    versions,
                )

        many(
            "patron",
            [
                "id",
                "feed_id",
                "match_key",
                "match_id",
                "digest",
                "state",
                "expiry_date",
                "current_version_id",
                "confirmed_digest",
                "confirmed_seq",
            ],
            patron_rows(),
        )

        def version_rows() -> Iterator[tuple[Any, ...]]:
            for p in range(patrons):
                for j in range(versions):
                    yield (
                        p * versions + j + 1,
                        p + 1,
                        "new" if j == 0 else "changed",
                        _digest(p, j),
                        _payload(p, j),
                        stamp(_day(j)),
                        stamp(_day(j + 1, -1)),
                        j + 1,
                        j + 1,
                    )

        many(
            "patron_version",
            [
                "id",
                "patron_id",
                "kind",
                "digest",
                "payload",
                "first_seen",
                "last_seen",
                "extract_id",
                "batch_id",
            ],
            version_rows(),
        )

        def member_rows() -> Iterator[tuple[Any, ...]]:
            for p in range(patrons):
                for j in range(versions):
                    vid = p * versions + j + 1
                    yield (vid, j + 1, p + 1, vid, _digest(p, j), "sent")

        many(
            "batch_patron",
            ["id", "batch_id", "patron_id", "version_id", "digest", "outcome"],
            member_rows(),
        )
        raw.commit()
        if engine.dialect.name == "postgresql":
            cursor.execute("ANALYZE")
            raw.commit()
    finally:
        raw.close()


def _loader(dialect: str, cursor: Any) -> Callable[[str, list[str], Any], None]:
    def load(table: str, columns: list[str], rows: Any) -> None:
        if dialect == "postgresql":
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join("?" for _ in columns)
        statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= CHUNK:
                cursor.executemany(statement, batch)
                batch = []
        if batch:
            cursor.executemany(statement, batch)

    return load


def _day(j: int, hours: int = 0) -> dt.datetime:
    return BASE + dt.timedelta(days=j, hours=hours)


def _digest(p: int, j: int) -> bytes:
    return p.to_bytes(8, "big") + j.to_bytes(8, "big")


def _payload(p: int, j: int) -> bytes:
    groups = ("UGRD", "GRAD", "FAC", "STAFF")
    return (
        f"<user><primary_id>P{p:08d}</primary_id><last_name>Name{j}</last_name>"
        f"<user_group>{groups[(p + j) % 4]}</user_group><expiry_date>2030-06-30Z</expiry_date>"
        "</user>"
    ).encode()


if __name__ == "__main__":
    sys.exit(main())
