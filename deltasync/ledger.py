"""The delivery ledger: deliver batches, learn what Alma did with them, never lose one.

``reconcile`` reads the remote folder (and, in ``alma-api`` mode, the SIS job's runs) and moves
batches along: a file renamed ``.handled`` was picked up; a file that vanished without being
handled failed; a picked-up batch is confirmed by the pickup itself, by Alma's job result, or by
staff (``manual``). ``deliver`` uploads the newest built batch after taking back any older one
still waiting unread on the server, so one patron never occurs twice among the files one Alma
run can pick up. What Alma has not confirmed is selected again by the next run (catch-up).

Remote operations happen outside database transactions; each outcome is recorded in a short
transaction of its own, so a crash between the two is found and repaired by the next reconcile.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from . import recovery
from .config import AlmaApiConfig, FeedConfig
from .delivery import HANDLED_SUFFIX, RemoteFile, Transport, open_transport, withdrawn_name
from .delivery.fenced import FencedTransport
from .delta import outbox
from .errors import (
    ConfigError,
    DeliveryError,
    DeltasyncError,
    InputError,
    NotFound,
    RemoteFileMissing,
)
from .store import Store, batches
from .store.tables import OPEN, BatchStatus

if TYPE_CHECKING:
    from .alma_api import AlmaJobs  # imported where a feed confirms by Alma's API

MAX_WAITING_ZIPS = 20
"""Alma reads at most 20 zip files per run; never leave more waiting."""


@dataclass
class LedgerReport:
    """What reconcile and deliver did, and what needs a person's attention."""

    events: list[str] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)


class Ledger:
    """Delivery and confirmation for one feed."""

    def __init__(
        self,
        store: Store,
        alma: AlmaApiConfig | None,
        feed: FeedConfig,
        feed_id: int,
        transport: Transport | None = None,
        jobs: AlmaJobs | None = None,
    ) -> None:
        self.store = store
        self.feed = feed
        self.feed_id = feed_id
        self.delivery = feed.delivery
        self.transport = transport
        if self.transport is None and self.delivery is not None:
            self.transport = open_transport(self.delivery)
        if self.transport is not None and store.lease is not None:
            self.transport = FencedTransport(self.transport, store.lease.check)
        self.jobs = jobs
        if self.jobs is None and self.delivery is not None and self.delivery.confirm == "alma-api":
            if alma is None or self.delivery.job_id is None:
                raise ConfigError(
                    f"feed {feed.name!r}: confirm = 'alma-api' needs [alma] and job_id"
                )
            from .alma_api import AlmaJobs  # only a feed confirmed by Alma's API needs it

            self.jobs = AlmaJobs(alma, self.delivery.job_id)
        self.report = LedgerReport()
        self.remote_failed = False
        """A remote operation failed this run (and was reported); more would only repeat it."""

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- reconcile ---------------------------------------------------------------------------

    def reconcile(self, now: dt.datetime) -> None:
        """Learn what happened to every open batch since the last run."""
        if self.delivery is None or self.transport is None:
            return
        with self.store.begin() as conn:
            open_batches = batches.listed(conn, self.feed_id, OPEN)
        if not open_batches:
            return
        try:
            listing = self._listing()
        except DeliveryError as exc:
            self.remote_failed = True
            self.report.attention.append(f"cannot check delivered batches: {exc}")
            return
        for batch in open_batches:
            self._reconcile_one(batch, listing, now)

    def _listing(self) -> dict[str, RemoteFile]:
        assert self.transport is not None
        return {f.name: f for f in self.transport.list()}

    def _reconcile_one(
        self, batch: batches.BatchState, listing: dict[str, RemoteFile], now: dt.datetime
    ) -> None:
        name = batch.file_name
        handled = name + HANDLED_SUFFIX in listing
        with self.store.begin() as conn:
            if batch.status == BatchStatus.BUILT and (name in listing or handled):
                # Uploaded by a run that died before it could record the upload: that run
                # built it, so its build time bounds the upload from below.
                batches.transition(
                    conn,
                    batch,
                    BatchStatus.UPLOADED,
                    now,
                    "found on the server",
                    uploaded_at=batch.created_at,
                )
                batch = _refreshed(conn, self.feed_id, batch)
            if batch.status == BatchStatus.UPLOADED:
                if handled:
                    batches.transition(
                        conn, batch, BatchStatus.PICKED_UP, now, "renamed .handled by Alma"
                    )
                    self.report.events.append(f"batch {batch.seq} picked up by Alma")
                    batch = _refreshed(conn, self.feed_id, batch)
                elif name not in listing:
                    message = "vanished from remote_dir without being handled"
                    batches.transition(conn, batch, BatchStatus.FAILED, now, message)
                    self.report.attention.append(f"batch {batch.seq} failed: {message}")
                    return
                elif batch.uploaded_at and now - batch.uploaded_at > self._timeout():
                    self.report.attention.append(
                        f"batch {batch.seq} not picked up by Alma since "
                        f"{batch.uploaded_at:%Y-%m-%d %H:%M}Z (pickup_timeout "
                        f"{self._timeout()}): is the SIS job scheduled?"
                    )
            if batch.status == BatchStatus.PICKED_UP:
                self._confirm_picked_up(conn, batch, now)
                batch = _refreshed(conn, self.feed_id, batch)
            if (
                batch.status == BatchStatus.PICKED_UP
                and batch.picked_up_at
                and now - batch.picked_up_at > self._timeout()
            ):
                self.report.attention.append(
                    f"batch {batch.seq} was picked up {batch.picked_up_at:%Y-%m-%d %H:%M}Z "
                    f"but has no result yet (confirm = {self._confirm_mode()!r}): check the "
                    "SIS job's report, or confirm/fail it by hand"
                )

    def _confirm_mode(self) -> str:
        assert self.delivery is not None
        return self.delivery.confirm

    def _timeout(self) -> dt.timedelta:
        assert self.delivery is not None
        return self.delivery.pickup_timeout

    def _confirm_picked_up(
        self, conn: Connection, batch: batches.BatchState, now: dt.datetime
    ) -> None:
        assert self.delivery is not None
        if self.delivery.confirm == "pickup":
            batches.transition(conn, batch, BatchStatus.CONFIRMED, now, "confirmed by pickup")
            return
        if self.delivery.confirm == "manual":
            return
        assert self.jobs is not None
        from .alma_api import AlmaApiError

        try:
            self._confirm_from_job(conn, batch, now)
        except AlmaApiError as exc:
            batches.attempt_failed(conn, batch, now, str(exc))
            self.report.attention.append(f"batch {batch.seq}: {exc}")

    def _confirm_from_job(
        self, conn: Connection, batch: batches.BatchState, now: dt.datetime
    ) -> None:
        assert self.jobs is not None
        from .alma_api import FAILED as RUN_FAILED
        from .alma_api import WITH_ERRORS

        since = batch.uploaded_at or batch.created_at
        # The run that picked the file up is the first one after the upload that took files:
        # a run that failed outright, or found no files, did not. deltasync never leaves more
        # than one of its batches waiting, so no other candidate run can have taken it.
        run = next(
            (
                r
                for r in self.jobs.runs_since(since)
                if r.start_time is not None
                and r.start_time >= since
                and (r.processed_files or not r.finished)
            ),
            None,
        )
        if run is None or not run.finished:
            return
        counters = json.dumps(run.counters, sort_keys=True)
        detail = f"Alma job run {run.id}: {run.status}; counters {counters}"
        if run.status in RUN_FAILED:
            batches.transition(conn, batch, BatchStatus.FAILED, now, detail, job_instance=run.id)
            self.report.attention.append(f"batch {batch.seq} failed: {detail}")
            return
        if run.status in WITH_ERRORS:
            found = self.jobs.events(run)
            if found.file_errors:
                # A file rejected whole (unreadable, bad XML) loaded nobody: send again.
                detail += f"; file rejected: {'; '.join(found.file_errors)}"
                batches.transition(
                    conn, batch, BatchStatus.FAILED, now, detail, job_instance=run.id
                )
                self.report.attention.append(f"batch {batch.seq} failed: {detail}")
                return
            carried = batches.members(conn, batch)
            reasons = {
                carried[self.feed.match_id.key(user)]: reason
                for user, reason in found.rejected_users.items()
                if self.feed.match_id.key(user) in carried
            }
            batches.reject(conn, batch, reasons)
            if reasons:
                detail += f"; {len(reasons)} patrons rejected"
                self.report.attention.append(
                    f"batch {batch.seq}: Alma rejected {len(reasons)} patrons"
                )
        batches.transition(conn, batch, BatchStatus.CONFIRMED, now, detail, job_instance=run.id)

    # -- deliver -----------------------------------------------------------------------------

    def deliver(self, now: dt.datetime) -> None:
        """Upload the newest built batch, after taking back any older one left unread."""
        if self.delivery is None or self.transport is None:
            return
        with self.store.begin() as conn:
            built = batches.listed(conn, self.feed_id, [BatchStatus.BUILT])
            uploaded = batches.listed(conn, self.feed_id, [BatchStatus.UPLOADED])
        if not built:
            return
        newest = built[-1]
        # Older batches may be on the server although the ledger never recorded their upload
        # (a lost reply, a crash): take every one back, built or uploaded, before a newer one.
        for waiting in [*built[:-1], *uploaded]:
            if not self._take_back(waiting, newest, now):
                return
        try:
            listing = self._listing()
        except DeliveryError as exc:
            self._failed_attempt(newest, now, str(exc))
            return
        with self.store.begin() as conn:
            known = {b.file_name for b in batches.listed(conn, self.feed_id)}
        # A batch staff failed while its file was still unread, any other leftover, and files
        # of ours the ledger does not know (a store restored from a backup): never leave one
        # beside the new batch.
        stale = sorted(
            name
            for name in listing
            if name != newest.file_name
            and (name in known or outbox.is_delta_name(name, self.feed.name))
        )
        for name in stale:
            try:
                self.transport.rename(name, withdrawn_name(name))
            except RemoteFileMissing:
                continue
            except DeliveryError as exc:
                self._failed_attempt(newest, now, f"cannot take back {name}: {exc}")
                return
            listing.pop(name, None)
            if name not in known:
                self._took_back_unknown(name, newest, now)
        zips = [n for n in listing if n.endswith(".zip")]
        if len(zips) >= MAX_WAITING_ZIPS:
            self._failed_attempt(
                newest,
                now,
                f"{len(zips)} zip files already wait in the "
                f"remote folder; Alma reads at most {MAX_WAITING_ZIPS} a run",
            )
            return
        local = self._checked_file(newest, now)
        if local is None:
            return
        try:
            remote = self.transport.upload(local, newest.file_name)
        except DeliveryError as exc:
            self._failed_attempt(newest, now, str(exc))
            return
        with self.store.begin() as conn:
            batches.transition(
                conn,
                newest,
                BatchStatus.UPLOADED,
                now,
                f"uploaded to {self.transport.describe()} ({remote.size} bytes)",
            )
        self.report.events.append(f"batch {newest.seq} uploaded")

    def _took_back_unknown(self, name: str, newest: batches.BatchState, now: dt.datetime) -> None:
        message = (
            f"took back {name} from remote_dir as {withdrawn_name(name)}: the ledger does not "
            "know it (was the store restored from a backup?), and Alma must not read it beside "
            f"batch {newest.seq}"
        )
        with self.store.begin() as conn:
            batches.note(conn, newest, now, message)
        self.report.events.append(f"took back unknown file {name}")
        self.report.attention.append(message)

    def _checked_file(self, batch: batches.BatchState, now: dt.datetime) -> Path | None:
        """The batch's outbox file, as the ledger's SHA-256 says it was built: rebuilt from the
        store when it is missing or differs; None (the batch failed) when it cannot be."""
        local = self.feed.outbox / batch.file_name
        problem = outbox.check(local, batch.sha256)
        if problem is None:
            return local
        try:
            recovery.restore_outbox_file(self.store, self.feed, batch.seq)
        except DeltasyncError as exc:
            # Its patrons are pending again once it has failed: the next run sends them.
            message = f"{local}: {problem}, and it cannot be rebuilt: {exc}"
            with self.store.begin() as conn:
                batches.transition(conn, batch, BatchStatus.FAILED, now, message)
            self.report.attention.append(f"batch {batch.seq} failed: {message}")
            return None
        message = f"{problem}: rebuilt it from the store before the upload"
        with self.store.begin() as conn:
            batches.note(conn, batch, now, f"{local}: {message}")
        self.report.events.append(f"batch {batch.seq}: {message}")
        return local

    def _take_back(
        self, waiting: batches.BatchState, newest: batches.BatchState, now: dt.datetime
    ) -> bool:
        assert self.transport is not None
        try:
            try:
                self.transport.rename(waiting.file_name, withdrawn_name(waiting.file_name))
            except RemoteFileMissing:
                # Never uploaded, taken by Alma meanwhile, or vanished: reconcile decides.
                self._reconcile_one(waiting, self._listing(), now)
                with self.store.begin() as conn:
                    if _refreshed(conn, self.feed_id, waiting).status == BatchStatus.BUILT:
                        batches.transition(
                            conn,
                            waiting,
                            BatchStatus.SUPERSEDED,
                            now,
                            f"replaced by batch {newest.seq} before delivery",
                        )
                return True
        except DeliveryError as exc:
            self._failed_attempt(newest, now, f"cannot take back batch {waiting.seq}: {exc}")
            return False
        with self.store.begin() as conn:
            batches.transition(
                conn,
                waiting,
                BatchStatus.SUPERSEDED,
                now,
                f"taken back unread; its patrons go in batch {newest.seq}",
            )
        self.report.events.append(f"batch {waiting.seq} taken back")
        return True

    def _failed_attempt(self, batch: batches.BatchState, now: dt.datetime, error: str) -> None:
        self.remote_failed = True  # mostly a remote error; at worst retention waits a run
        with self.store.begin() as conn:
            batches.attempt_failed(conn, batch, now, error)
        self.report.attention.append(f"batch {batch.seq} not delivered: {error}")


def _refreshed(conn: Connection, feed_id: int, batch: batches.BatchState) -> batches.BatchState:
    fresh = batches.batch_by_seq(conn, feed_id, batch.seq)
    assert fresh is not None
    return fresh


# -- staff decisions (confirm = "manual", or corrections in any mode) -----------------------


def _open_batch(store: Store, feed: FeedConfig, seq: int) -> tuple[int, batches.BatchState]:
    with store.begin() as conn:
        return batches.find_batch(conn, feed.name, seq)


def confirm(store: Store, feed: FeedConfig, seq: int, now: dt.datetime) -> None:
    """Staff say Alma loaded batch ``seq``."""
    _feed_id, batch = _open_batch(store, feed, seq)
    if batch.status not in (BatchStatus.UPLOADED, BatchStatus.PICKED_UP, BatchStatus.BUILT):
        raise NotFound(f"batch {seq} is {batch.status}; only an open batch can be confirmed")
    with store.begin() as conn:
        batches.transition(conn, batch, BatchStatus.CONFIRMED, now, "confirmed by staff")


def fail(store: Store, feed: FeedConfig, seq: int, reason: str, now: dt.datetime) -> None:
    """Staff say Alma did not load batch ``seq``: its patrons go out again."""
    _feed_id, batch = _open_batch(store, feed, seq)
    if batch.status not in OPEN:
        raise NotFound(f"batch {seq} is {batch.status}; only an open batch can fail")
    with store.begin() as conn:
        batches.transition(conn, batch, BatchStatus.FAILED, now, f"failed by staff: {reason}")


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
"""Characters no match ID can hold (XML forbids them): a binary file, not a list of IDs."""


def read_ids(path: Path) -> list[str]:
    """The match IDs in a file, one per line; blank lines and ``#`` comments are skipped."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NotFound(f"{path}: cannot read: {exc.strerror}") from exc
    ids: list[str] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path}: line {number}: not UTF-8") from None
        if _CONTROL.search(line):
            raise InputError(
                f"{path}: line {number}: a NUL or control character; a file of match IDs is "
                "plain text, one ID per line"
            )
        if line.strip() and not line.startswith("#"):
            ids.append(line.strip())
    return ids


READ_BY_ALMA = (
    BatchStatus.BUILT,
    BatchStatus.UPLOADED,
    BatchStatus.PICKED_UP,
    BatchStatus.CONFIRMED,
)
"""The states of a batch whose file Alma may have loaded: confirmed (in pickup mode too), and
built (a run that died after the upload could not record it; the next reconcile will)."""


def reject(
    store: Store, feed: FeedConfig, seq: int, ids_file: Path, now: dt.datetime
) -> tuple[int, list[str]]:
    """Record the match IDs Alma rejected in batch ``seq``; returns (marked, unknown IDs)."""
    _feed_id, batch = _open_batch(store, feed, seq)
    if batch.status not in READ_BY_ALMA:
        # Taken back unread, or not loaded at all: marking its patrons rejected would keep
        # their undelivered records out of the next delta.
        raise NotFound(
            f"batch {seq} is {batch.status}: Alma never read it, so it rejected no one; "
            "record rejections against the batch Alma loaded"
        )
    ids = read_ids(ids_file)
    with store.begin() as conn:
        carried = batches.members(conn, batch)
        reasons = {
            carried[feed.match_id.key(i)]: f"rejected by Alma (recorded by staff, {ids_file.name})"
            for i in ids
            if feed.match_id.key(i) in carried
        }
        batches.reject(conn, batch, reasons)
        batches.note(conn, batch, now, f"{len(reasons)} patrons rejected by Alma (from staff)")
    unknown = [i for i in ids if feed.match_id.key(i) not in carried]
    return len(reasons), unknown
