"""The simulated SIS synchronize job: swap-all loads, rejections, .handled renames."""

from __future__ import annotations

import copy
import io
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lxml import etree

from .sources import Source

PRIMARY = "PRIMARYIDENTIFIER"
HANDLED = ".handled"
OUTCOMES = ("success", "failed", "aborted", "not_run")
STATUS_DESC = {
    "COMPLETED_SUCCESS": "Completed Successfully",
    "COMPLETED_WITH_ERRORS": "Completed with Errors",
    "COMPLETED_NO_BULKS": "Completed with no bulks",
    "FAILED": "Failed",
    "ABORTED_BY_SYSTEM": "Aborted by System",
}
ALERTS = {
    "COMPLETED_SUCCESS": (
        "alert_general_success",
        "The job completed successfully. For more information view the report details.",
    ),
    "COMPLETED_WITH_ERRORS": ("alert_general_errors", "The job completed with errors."),
    "COMPLETED_NO_BULKS": ("alert_general_no_bulks", "No input files were found."),
    "FAILED": ("alert_general_failure", "The job failed."),
    "ABORTED_BY_SYSTEM": ("alert_general_aborted", "The job was aborted by the system."),
}
# Alma's SIS counter codes are undocumented; these are invented and must stay opaque to callers.
COUNTERS = {
    "rejected": ("C.jobs.users.sis.rejected", "Users rejected"),
    "updated": ("C.jobs.users.sis.updated", "Users updated"),
    "created": ("C.jobs.users.sis.created", "Users created"),
    "unchanged": ("C.jobs.users.sis.unchanged", "Users unchanged"),
}
TOTAL_COUNTER = ("C.jobs.users.sis.total", "Total users processed")
INSTANCE_BASE = 7_000_000_000_000


@dataclass
class User:
    """A user as Alma holds it after a load: the record's canonical XML and a flat view."""

    key: str
    match_id: str
    xml: bytes
    fields: dict[str, str]
    identifiers: list[tuple[str, str]]
    account_type: str = "EXTERNAL"
    external_id: str | None = None
    loaded_from: str | None = None

    def element(self) -> etree._Element:
        """The stored record, parsed, for XPath assertions."""
        return etree.fromstring(self.xml)


@dataclass
class JobInstance:
    """One run of the synchronize job, as the Jobs API reports it."""

    id: str
    job_id: str
    job_name: str
    submit_time: datetime
    start_time: datetime
    end_time: datetime
    status: str = "COMPLETED_SUCCESS"
    files: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    events: list[dict[str, Any]] = field(default_factory=list)

    def counters(self) -> list[dict[str, Any]]:
        """``counter`` entries as Alma's JSON gives them: values are strings."""
        rows = [(COUNTERS[name], self.counts[name]) for name in COUNTERS]
        rows.append((TOTAL_COUNTER, sum(self.counts.values())))
        return [{"type": {"value": c, "desc": d}, "value": str(n)} for (c, d), n in rows]

    def to_json(self, base_url: str = "") -> dict[str, Any]:
        """The ``job_instance`` object of the Jobs API."""
        job_link = f"{base_url}/almaws/v1/conf/jobs/{self.job_id}"
        alert, alert_desc = ALERTS[self.status]
        return {
            "id": self.id,
            "name": f"{self.job_name} - {self.submit_time:%m/%d/%Y %H:%M}",
            "progress": 100,
            "status": {"value": self.status, "desc": STATUS_DESC[self.status]},
            "submitted_by": {"value": "System", "desc": "System"},
            "submit_time": _iso(self.submit_time),
            "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time),
            "status_date": f"{self.end_time:%Y-%m-%d}Z",
            "alert": [{"value": alert, "desc": alert_desc}],
            "counter": self.counters(),
            "job_info": {
                "id": self.job_id,
                "name": self.job_name,
                "type": {"value": "SCHEDULED", "desc": "Scheduled"},
                "category": {"value": "USERS", "desc": "Users"},
                "link": job_link,
            },
            "link": f"{job_link}/instances/{self.id}",
        }


class FileRejected(Exception):
    """A whole input file Alma could not read."""


class AlmaSimulator:
    """Alma's user store and its "Users SYNCHRONIZE using profile …" job over one input dir."""

    def __init__(
        self,
        source: Source,
        *,
        match_id: str = "primary_id",
        job_id: str = "S20000",
        profile_code: str = "SIS",
        max_files_per_run: int = 20,
        max_parts_per_zip: int = 50,
    ) -> None:
        if match_id == "primary_id":
            self.id_type: str | None = None
        elif match_id.startswith("identifier:") and match_id.removeprefix("identifier:"):
            self.id_type = match_id.removeprefix("identifier:")
        else:
            raise ValueError(f"match_id must be 'primary_id' or 'identifier:TYPE': {match_id!r}")
        self.source = source
        self.job_id, self.profile_code = job_id, profile_code
        self.max_files_per_run, self.max_parts_per_zip = max_files_per_run, max_parts_per_zip
        self.users: dict[str, User] = {}
        self.history: list[JobInstance] = []
        self.lock = threading.RLock()
        self._holders: dict[tuple[str, str], str] = {}

    @property
    def job_name(self) -> str:
        """The job's name as Alma lists it."""
        return f"Users SYNCHRONIZE using profile {self.profile_code}"

    def key(self, match_id: str) -> str:
        """The form under which match IDs compare: primary IDs case-insensitively."""
        return match_id.lower() if self.id_type is None else match_id

    def user(self, match_id: str) -> User | None:
        """The stored user with this match ID, if any."""
        return self.users.get(self.key(match_id))

    def snapshot(self) -> dict[str, bytes]:
        """Match key → canonical XML of every stored user."""
        return {key: self.users[key].xml for key in sorted(self.users)}

    @property
    def rejections(self) -> list[dict[str, Any]]:
        """Every event of every run, oldest first."""
        return [event for instance in self.history for event in instance.events]

    def files(self) -> list[str]:
        """The input directory's current listing."""
        return self.source.list()

    def pending(self) -> list[str]:
        """Files the next run would consider, oldest first (before the per-run limit)."""
        names = [n for n in self.source.list() if n.endswith(".zip") and not n.startswith(".")]
        return sorted(names, key=lambda n: (self.source.mtime(n), n))

    def job_json(self, base_url: str = "") -> dict[str, Any]:
        """The ``job`` object of the Jobs API (``GET /conf/jobs/{job_id}``)."""
        return {
            "id": self.job_id,
            "name": self.job_name,
            "description": f"Synchronize users from the SIS using profile {self.profile_code}",
            "type": {"value": "SCHEDULED", "desc": "Scheduled"},
            "category": {"value": "USERS", "desc": "Users"},
            "link": f"{base_url}/almaws/v1/conf/jobs/{self.job_id}",
        }

    def instance(self, instance_id: str) -> JobInstance | None:
        """A recorded run by its id."""
        return next((i for i in self.history if i.id == instance_id), None)

    def add_internal_user(self, match_id: str) -> None:
        """Add a user staff created by hand (INTERNAL): SIS records for it are rejected."""
        record = etree.Element("user")
        if self.id_type is None:
            etree.SubElement(record, "primary_id").text = match_id
        etree.SubElement(record, "account_type", desc="Internal").text = "INTERNAL"
        if self.id_type is not None:
            identifier = etree.SubElement(
                etree.SubElement(record, "user_identifiers"), "user_identifier"
            )
            etree.SubElement(identifier, "id_type").text = self.id_type
            etree.SubElement(identifier, "value").text = match_id
        with self.lock:
            self._store(self.key(match_id), match_id, record, account_type="INTERNAL", file=None)

    def run_job(self, now: datetime, *, outcome: str = "success") -> JobInstance | None:
        """One run of the job at ``now``; ``outcome`` injects Alma's failure modes."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}: {outcome!r}")
        if outcome == "not_run":
            return None
        with self.lock:
            start = _utc(now)
            # Simulated runs take one second; ids grow and keep one width so they sort as text too.
            instance = JobInstance(
                id=str(INSTANCE_BASE + len(self.history) + 1),
                job_id=self.job_id,
                job_name=self.job_name,
                submit_time=start,
                start_time=start,
                end_time=start + timedelta(seconds=1),
            )
            if outcome == "failed":
                instance.status = "FAILED"
            else:
                instance.files = self.pending()[: self.max_files_per_run]
                loaded: set[str] = set()
                for name in instance.files:
                    if outcome == "success":
                        self._load_file(name, instance, loaded)
                    self.source.rename(name, name + HANDLED)
                if outcome == "aborted":
                    instance.status = "ABORTED_BY_SYSTEM"
                elif not instance.files:
                    instance.status = "COMPLETED_NO_BULKS"
                elif instance.events:
                    instance.status = "COMPLETED_WITH_ERRORS"
            self.history.append(instance)
            return instance

    def _load_file(self, name: str, instance: JobInstance, loaded: set[str]) -> None:
        try:
            records = read_zip(self.source.read(name), self.max_parts_per_zip)
        except FileRejected as exc:
            instance.events.append(_event("FILE_REJECTED", "File rejected", str(exc), name))
            return
        for record in records:
            match_id, problem = self._check(record, loaded)
            if problem is not None:
                instance.counts["rejected"] += 1
                event = _event("USER_REJECTED", "User rejected", problem, name)
                instance.events.append({**event, "user_id": match_id})
                continue
            key = self.key(match_id)
            loaded.add(key)
            before = self.users.get(key)
            user = self._store(key, match_id, record, account_type="EXTERNAL", file=name)
            if before is None:
                instance.counts["created"] += 1
            elif before.xml == user.xml:
                instance.counts["unchanged"] += 1
            else:
                instance.counts["updated"] += 1

    def _check(self, record: etree._Element, loaded: set[str]) -> tuple[str, str | None]:
        """The record's match ID and why Alma rejects it (None when it loads)."""
        match_id = self._match_id(record)
        if match_id is None:
            label = "primary_id" if self.id_type is None else f"user identifier {self.id_type}"
            return (record.findtext("primary_id") or "").strip(), f"missing match ID: no {label}"
        key = self.key(match_id)
        if key in loaded:
            id_type = self.id_type or PRIMARY
            return match_id, (
                f"Identifier of type {id_type} and value {match_id} is already taken "
                "AcrossInstitution in this feed"
            )
        existing = self.users.get(key)
        declared = (record.findtext("account_type") or "").strip().upper()
        if declared == "INTERNAL" or (existing is not None and existing.account_type == "INTERNAL"):
            return match_id, "User is not external"
        for id_type, value in identifiers(record):
            holder = self._holders.get(_held(id_type, value))
            if holder is not None and holder != key:
                return match_id, (
                    f"Identifier of type {id_type} and value {value} is already taken "
                    "by another user"
                )
        return match_id, None

    def _match_id(self, record: etree._Element) -> str | None:
        if self.id_type is None:
            value = record.findtext("primary_id")
        else:
            value = next((v for t, v in identifiers(record) if t == self.id_type), None)
        return (value or "").strip() or None

    def _store(
        self,
        key: str,
        match_id: str,
        record: etree._Element,
        *,
        account_type: str,
        file: str | None,
    ) -> User:
        """Swap all: the user becomes exactly the record; its identifiers are re-indexed."""
        old = self.users.get(key)
        if old is not None:
            for id_type, value in old.identifiers:
                if self._holders.get(_held(id_type, value)) == key:
                    del self._holders[_held(id_type, value)]
        user = User(
            key=key,
            match_id=match_id,
            xml=canonical(record),
            fields=flat_fields(record),
            identifiers=identifiers(record),
            account_type=account_type,
            external_id=self.profile_code if account_type == "EXTERNAL" else None,
            loaded_from=file,
        )
        for id_type, value in user.identifiers:
            self._holders[_held(id_type, value)] = key
        self.users[key] = user
        return user


def read_zip(data: bytes, max_parts: int = 50) -> list[etree._Element]:
    """The ``<user>`` records of an input zip in document order, or FileRejected."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise FileRejected(f"Could not open zip file: {exc}") from exc
    with archive:
        parts = [i for i in archive.infolist() if i.filename.endswith(".xml") and not i.is_dir()]
        if not parts:
            raise FileRejected("The zip file holds no XML file")
        if len(parts) > max_parts:
            raise FileRejected(f"The zip file holds {len(parts)} XML files; at most {max_parts}")
        records: list[etree._Element] = []
        for info in parts:
            try:
                content = archive.read(info)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise FileRejected(f"{info.filename}: could not read from zip: {exc}") from exc
            records.extend(_parse_users(info.filename, content))
    return records


def _parse_users(name: str, content: bytes) -> list[etree._Element]:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRejected(f"{name}: Invalid byte 1 of 1-byte UTF-8 sequence.") from exc
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as exc:
        raise FileRejected(f"Could not parse file {name}: {exc}") from exc
    # Any root: real feeds use <users> and <userRecords>.
    return list(root.iterchildren("user"))


def canonical(record: etree._Element) -> bytes:
    """C14N of a record without indentation or comments: equal content, equal bytes."""
    clone = copy.deepcopy(record)
    for element in clone.iter():
        if len(element) and element.text is not None and not element.text.strip():
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None
    clone.tail = None
    return etree.tostring(clone, method="c14n", with_comments=False)


def flat_fields(record: etree._Element) -> dict[str, str]:
    """Leaf children of ``<user>`` (primary_id, expiry_date, status …) as stripped text."""
    return {
        child.tag: (child.text or "").strip()
        for child in record.iterchildren()
        if isinstance(child.tag, str) and len(child) == 0
    }


def identifiers(record: etree._Element) -> list[tuple[str, str]]:
    """(type, value) of the primary ID and of every user identifier, in document order."""
    found: list[tuple[str, str]] = []
    primary = (record.findtext("primary_id") or "").strip()
    if primary:
        found.append((PRIMARY, primary))
    for identifier in record.iterfind("user_identifiers/user_identifier"):
        id_type = (identifier.findtext("id_type") or "").strip()
        value = (identifier.findtext("value") or "").strip()
        if id_type and value:
            found.append((id_type, value))
    return found


def _held(id_type: str, value: str) -> tuple[str, str]:
    return id_type, value.lower() if id_type == PRIMARY else value


def _event(code: str, desc: str, description: str, file: str) -> dict[str, Any]:
    return {"type": {"value": code, "desc": desc}, "description": description, "file": file}


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
