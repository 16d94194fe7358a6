"""A small client for Alma's Jobs API: the runs of the SIS job and their per-user events.

Counter type codes of the SIS job are not documented, so counters are kept as Alma returns
them. Requests time out, and server errors or network failures are retried with backoff. The
API key goes only to the origin (scheme, host and port) of ``alma.base_url``: a redirect
elsewhere is refused, never followed with the key.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPMessage
from typing import IO, Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .config import AlmaApiConfig
from .errors import DeltasyncError

SUCCESS = {"COMPLETED_SUCCESS", "COMPLETED_NO_BULKS"}
WITH_ERRORS = {"COMPLETED_WITH_ERRORS", "COMPLETED_WITH_WARNINGS"}
FAILED = {"FAILED", "ABORTED_BY_SYSTEM", "ABORTED_BY_USER"}
PAGE = 100


class AlmaApiError(DeltasyncError):
    """Alma's API could not be read."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
        """The HTTP status Alma answered with, when it answered."""


@dataclass(frozen=True)
class JobRun:
    """One run (instance) of the SIS synchronize job."""

    id: str
    status: str
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    counters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Whether Alma has a final outcome for this run."""
        return self.status in SUCCESS | WITH_ERRORS | FAILED

    @property
    def processed_files(self) -> bool:
        """Whether the run took files: a failed run took none, nor one that found none."""
        return self.status not in {"FAILED", "COMPLETED_NO_BULKS"}


@dataclass
class RunEvents:
    """The per-user and per-file problems one run reported."""

    rejected_users: dict[str, str] = field(default_factory=dict)
    file_errors: list[str] = field(default_factory=list)


class AlmaJobs:
    """The runs of one Alma job, read through the REST API."""

    def __init__(
        self,
        config: AlmaApiConfig,
        job_id: str,
        *,
        timeout: float = 30.0,
        attempts: int = 4,
        backoff_seconds: float = 2.0,
    ) -> None:
        self.config = config
        self.job_id = job_id
        self.timeout = timeout
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds

    def job(self) -> dict[str, Any]:
        """The job's own record (``GET /conf/jobs/{job_id}``): proves the key and the job ID."""
        return self._get(f"conf/jobs/{self.job_id}", {})

    def runs_since(self, since: dt.datetime) -> list[JobRun]:
        """Runs submitted on or after ``since``'s date, oldest first."""
        runs: list[JobRun] = []
        offset = 0
        while True:
            data = self._get(
                f"conf/jobs/{self.job_id}/instances",
                {
                    "submit_date_from": since.astimezone(dt.UTC).date().isoformat(),
                    "limit": PAGE,
                    "offset": offset,
                },
            )
            page = data.get("job_instance", [])
            runs.extend(_run(item) for item in page)
            offset += len(page)
            if not page or offset >= int(data.get("total_record_count", 0)):
                break
        epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
        return sorted(runs, key=lambda r: (r.start_time or epoch, r.id))

    def events(self, run: JobRun) -> RunEvents:
        """What the run reported: the users it rejected, and errors about whole files."""
        found = RunEvents()
        offset = 0
        while True:
            data = self._get(
                f"conf/jobs/{self.job_id}/instances/{run.id}/events",
                {"limit": PAGE, "offset": offset},
            )
            page = data.get("event", [])
            for event in page:
                user = str(event.get("user_id") or "").strip()
                description = str(event.get("description") or "rejected by Alma")
                if user:
                    found.rejected_users[user] = description
                else:
                    found.file_errors.append(description)
            offset += len(page)
            if not page or offset >= int(data.get("total_record_count", 0)):
                return found

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        query = urllib.parse.urlencode(params)
        url = f"{self.config.base_url}/almaws/v1/{path}" + (f"?{query}" if query else "")
        request = urllib.request.Request(
            url,
            headers={
                "Accept": "application/json",
                "Authorization": f"apikey {self.config.api_key()}",
            },
        )

        opener = urllib.request.build_opener(_SameOriginRedirects(self.config.base_url, path))

        def attempt() -> dict[str, Any]:
            try:
                with opener.open(request, timeout=self.timeout) as response:
                    data: dict[str, Any] = json.load(response)
                    return data
            except urllib.error.HTTPError as exc:
                detail = _alma_error(exc)
                raise AlmaApiError(
                    f"Alma API {path}: HTTP {exc.code}: {detail}",
                    transient=exc.code >= 500 or exc.code == 429,
                    status=exc.code,
                ) from exc
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise AlmaApiError(f"Alma API {path}: {reason}", transient=True) from exc
            except json.JSONDecodeError as exc:
                raise AlmaApiError(f"Alma API {path}: not JSON: {exc}", transient=True) from exc

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_seconds, max=30),
            retry=retry_if_exception(lambda e: isinstance(e, AlmaApiError) and e.transient),
            reraise=True,
        )
        result: dict[str, Any] = retrying(attempt)
        return result


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects within the configured origin only: the request carries the key."""

    def __init__(self, base_url: str, path: str) -> None:
        self.origin = _origin(base_url)
        self.path = path

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        target = _origin(newurl)
        if target != self.origin:
            fp.close()
            raise AlmaApiError(
                f"Alma API {self.path}: HTTP {code} redirect to {_render(target)}, which is "
                f"not alma.base_url's {_render(self.origin)}; refusing to send the API key "
                "there",
                transient=False,
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    try:
        port = parts.port or default
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _render(origin: tuple[str, str, int | None]) -> str:
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def _run(item: dict[str, Any]) -> JobRun:
    status = item.get("status") or {}
    code = status.get("value") if isinstance(status, dict) else str(status)
    counters = item.get("counter") or item.get("counters") or []
    return JobRun(
        str(item.get("id")),
        str(code or ""),
        _time(item.get("start_time")),
        _time(item.get("end_time")),
        list(counters),
    )


def _time(value: object) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _alma_error(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.load(exc)
        return "; ".join(
            f"{e.get('errorCode')}: {e.get('errorMessage')}" for e in body["errorList"]["error"]
        )
    except (ValueError, KeyError, TypeError):
        return str(exc.reason)
