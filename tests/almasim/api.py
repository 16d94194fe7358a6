"""Alma's Jobs API for the simulated job, served over HTTP on loopback."""

from __future__ import annotations

import hmac
import json
import re
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .simulator import AlmaSimulator, JobInstance


class ApiError(Exception):
    """An error answer of the Jobs API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        """Alma's error body."""
        error = {"errorCode": self.code, "errorMessage": self.message, "trackingId": "E01-SIM"}
        return {"errorsExist": True, "errorList": {"error": [error]}, "result": None}


_ROUTE = re.compile(
    r"^/almaws/v1/conf/jobs/(?P<job>[^/]+)"
    r"(?P<instances>/instances(?:/(?P<instance>[^/]+)(?P<events>/events)?)?)?/?$"
)


class AlmaApiServer:
    """The Jobs API of one simulator on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, simulator: AlmaSimulator, api_key: str) -> None:
        self.simulator, self.api_key = simulator, api_key
        self.requests: list[tuple[str, str]] = []
        self._failures: list[int] = []
        self._redirects: list[str] = []
        self._lock = threading.Lock()
        self._httpd = _HttpServer(("127.0.0.1", 0), _Handler, self)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status``, whatever they ask."""
        with self._lock:
            self._failures.extend([status] * n)

    def redirect_next(self, n: int, to: str) -> None:
        """Answer the next ``n`` requests with 302 to the same path and query under ``to``."""
        with self._lock:
            self._redirects.extend([to.rstrip("/")] * n)

    def redirect(self, path: str) -> str | None:
        """Where the request for ``path`` is redirected, if a redirect is due."""
        with self._lock:
            if not self._redirects:
                return None
            self.requests.append(("GET", path))
            return self._redirects.pop(0) + path

    def start(self) -> AlmaApiServer:
        """Start serving."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> AlmaApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def respond(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """Status and JSON body for a GET of ``path``."""
        with self._lock:
            self.requests.append(("GET", path))
            failure = self._failures.pop(0) if self._failures else None
        try:
            if failure is not None:
                raise ApiError(failure, "GENERAL_ERROR", "Simulated failure")
            url = urlsplit(path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            self._authenticate(query.get("apikey"), authorization)
            return 200, self._route(url.path, query)
        except ApiError as exc:
            return exc.status, exc.body()

    def _authenticate(self, query_key: str | None, authorization: str | None) -> None:
        given = query_key
        if given is None and authorization is not None:
            scheme, _, value = authorization.partition(" ")
            given = value.strip() if scheme.lower() == "apikey" else None
        if given is None or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(
                401, "UNAUTHORIZED", "API-key not defined or not configured to allow this API."
            )

    def _route(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        match = _ROUTE.match(path)
        if match is None:
            raise ApiError(404, "NOT_FOUND", f"No such resource: {path}")
        sim = self.simulator
        if match["job"] != sim.job_id:
            raise ApiError(400, "UNKNOWN_JOB", f"Job ID {match['job']} is not valid.")
        with sim.lock:
            if match["instances"] is None:
                return sim.job_json(self.base_url)
            if match["instance"] is None:
                instances = _filter_dates(sim.history, query)
                instances.sort(key=lambda i: (i.submit_time, int(i.id)), reverse=True)
                rows = [i.to_json(self.base_url) for i in instances]
                return _page(rows, "job_instance", query)
            instance = sim.instance(match["instance"])
            if instance is None:
                raise ApiError(
                    400, "UNKNOWN_INSTANCE", f"Job instance {match['instance']} not found."
                )
            if match["events"]:
                return _page(list(instance.events), "event", query)
            return instance.to_json(self.base_url)


def _filter_dates(history: list[JobInstance], query: dict[str, str]) -> list[JobInstance]:
    since, until = _date(query, "submit_date_from"), _date(query, "submit_date_to")
    return [
        i
        for i in history
        if (since is None or i.submit_time.date() >= since)
        and (until is None or i.submit_time.date() <= until)
    ]


def _date(query: dict[str, str], name: str) -> date | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return date.fromisoformat(text.removesuffix("Z"))
    except ValueError:
        raise ApiError(400, "INVALID_PARAMETER", f"{name} must be YYYY-MM-DD: {text}") from None


def _page(rows: list[dict[str, Any]], key: str, query: dict[str, str]) -> dict[str, Any]:
    """One page of a list; like Alma, an empty page has no array at all."""
    try:
        limit, offset = int(query.get("limit", "10")), int(query.get("offset", "0"))
    except ValueError:
        raise ApiError(400, "INVALID_PARAMETER", "limit and offset must be integers") from None
    if not 0 <= limit <= 100 or offset < 0:
        raise ApiError(400, "INVALID_PARAMETER", "limit must be 0-100 and offset at least 0")
    body: dict[str, Any] = {"total_record_count": len(rows)}
    if window := rows[offset : offset + limit]:
        body[key] = window
    return body


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], api: AlmaApiServer
    ) -> None:
        super().__init__(address, handler)
        self.api = api


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_GET(self) -> None:
        location = self.server.api.redirect(self.path)
        if location is not None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, body = self.server.api.respond(self.path, self.headers.get("Authorization"))
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Tests stay quiet: no access log on stderr."""
