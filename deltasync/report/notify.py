"""Sending a run's notices: the e-mail over SMTP, the JSON post to a webhook.

A notice that cannot be sent never fails the run: its work is done (or was refused, or
stopped) whatever the mail server says. Each failure comes back as one line saying what could
not be sent where and why, for the caller to show (the CLI writes it to stderr, which cron
mails) and to log. Each channel is tried twice: a timeout, a refused connection, an SMTP 4xx
answer or an HTTP 429/5xx is worth a second try after a short pause; a wrong password, a
refused recipient or an HTTP 4xx is not. Webhook URLs carry their token in the path, so
messages show only the scheme and host. Redirects are not followed: a POST that is redirected
turns into a GET that loses the message, and could carry it elsewhere.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..redact import redact
from .run import RunReport
from .settings import EmailSettings, NotifySettings, WebhookSettings

# smtplib, urllib.request and the message's template are imported by the channel that uses
# them: every run comes through here, and most have no notice to send.
if TYPE_CHECKING:
    import smtplib
    import urllib.request

ATTEMPTS = 2
RETRY_PAUSE = 2.0
"""Seconds before the second try (module-level so tests can shorten it)."""
TEXT_LIMIT = 3000
"""Characters of the webhook's ``text``: chat programs cut long messages or refuse them."""

log = logging.getLogger("deltasync.notify")


@dataclass(frozen=True)
class Sent:
    """What was sent, and what could not be."""

    sent: list[str]
    problems: list[str]


class _Failure(Exception):
    """One try failed; ``again`` says whether a second try may succeed."""

    def __init__(self, message: str, *, again: bool) -> None:
        super().__init__(message)
        self.again = again


def send(report: RunReport, settings: NotifySettings) -> Sent:
    """Send ``report``'s notices as ``settings`` say; never raises for a failed notice."""
    sent: list[str] = []
    problems: list[str] = []
    if not settings.wants(report.outcome.value) or report.dry_run:
        return Sent(sent, problems)
    channels: list[tuple[str, Callable[[], str]]] = []
    if settings.email is not None:
        email = settings.email
        channels.append((f"e-mail via {email.describe()}", lambda: send_email(report, email)))
    if settings.webhook is not None:
        hook = settings.webhook
        channels.append((f"webhook {hook.describe()}", lambda: post_webhook(report, hook)))
    for name, channel in channels:
        try:
            done = _twice(channel)
        except _Failure as exc:
            problem = f"notice not sent: {name}: {exc}"
            log.error("feed %s: %s", report.feed, problem)
            problems.append(problem)
            continue
        log.info("feed %s: notice sent: %s", report.feed, done)
        sent.append(done)
    return Sent(sent, problems)


def _twice(channel: Callable[[], str]) -> str:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return channel()
        except _Failure as exc:
            if not exc.again or attempt == ATTEMPTS:
                raise
            log.warning(
                "notice: try %d failed: %s; trying again in %g s", attempt, exc, RETRY_PAUSE
            )
            time.sleep(RETRY_PAUSE)
    raise AssertionError("unreachable")


def send_email(report: RunReport, settings: EmailSettings) -> str:
    """Send the e-mail once; what was sent, or :class:`_Failure`."""
    import smtplib

    from . import mail

    try:
        credentials = settings.credentials()
        context = ssl.create_default_context(
            cafile=None if settings.ca_file is None else str(settings.ca_file)
        )
    except ConfigError as exc:
        raise _Failure(str(exc), again=False) from exc
    except (OSError, ssl.SSLError) as exc:
        raise _Failure(f"{settings.ca_file}: cannot read the CA file: {exc}", again=False) from exc
    secrets = [] if credentials is None else [credentials[1]]
    msg = mail.message(report, settings)
    try:
        smtp: smtplib.SMTP
        if settings.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                settings.smtp_host, settings.smtp_port, timeout=settings.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout)
        with smtp:
            if settings.security == "starttls":
                _starttls(smtp, context)
            if credentials is not None:
                _login(smtp, *credentials)
            refused = smtp.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        refusals = _refusals(exc.recipients)
        raise _Failure(f"every recipient was refused: {refusals}", again=False) from exc
    except smtplib.SMTPAuthenticationError as exc:
        raise _Failure(
            f"the server refused the login ({settings.username_env}): {_smtp_text(exc)}",
            again=False,
        ) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise _Failure(f"the server does not offer {exc}", again=False) from exc
    except smtplib.SMTPResponseException as exc:
        # 4xx: the server is busy or greylisting; 5xx: it will say the same again.
        raise _Failure(
            redact(f"the server answered {_smtp_text(exc)}", secrets), again=exc.smtp_code < 500
        ) from exc
    except ssl.SSLError as exc:
        raise _Failure(_tls_text(exc), again=False) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise _Failure(redact(_os_text(exc), secrets), again=True) from exc
    to = ", ".join(settings.to)
    if refused:
        # Some recipients took it: a second try would send them a copy.
        raise _Failure(f"sent, but refused for {_refusals(refused)}", again=False)
    return f"e-mail to {to} via {settings.describe()}"


def _starttls(smtp: smtplib.SMTP, context: ssl.SSLContext) -> None:
    import smtplib

    try:
        smtp.starttls(context=context)
    except smtplib.SMTPNotSupportedError as exc:
        # Never fall back to clear text: the message names patrons, the login is secret.
        raise smtplib.SMTPNotSupportedError(
            "STARTTLS; set security = 'ssl' for a server that speaks TLS from the start"
        ) from exc


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    import smtplib

    try:
        smtp.login(user, password)
    except smtplib.SMTPNotSupportedError as exc:
        raise smtplib.SMTPNotSupportedError(
            "a login (AUTH); leave out username_env and password_env for a server that takes "
            "mail without one"
        ) from exc


def post_webhook(report: RunReport, settings: WebhookSettings) -> str:
    """Post the run's JSON once; what was sent, or :class:`_Failure`."""
    import urllib.error
    import urllib.request

    try:
        url = settings.target()
    except ConfigError as exc:
        raise _Failure(str(exc), again=False) from exc
    body = json.dumps(payload(report)).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "deltasync"},
    )
    opener = urllib.request.build_opener(_no_redirects()())
    where = settings.describe()
    try:
        with opener.open(request, timeout=settings.timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        again = exc.code == 429 or exc.code >= 500
        raise _Failure(f"HTTP {exc.code} {exc.reason}", again=again) from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLError):
            raise _Failure(_tls_text(reason), again=False) from exc
        text = _os_text(reason) if isinstance(reason, OSError) else str(reason)
        raise _Failure(text.replace(url, where), again=True) from exc
    except (TimeoutError, OSError) as exc:
        raise _Failure(_os_text(exc).replace(url, where), again=True) from exc
    if not 200 <= status < 300:
        raise _Failure(f"HTTP {status}", again=status >= 500)
    return f"webhook {where} (HTTP {status})"


def payload(report: RunReport) -> dict[str, Any]:
    """The webhook's JSON: ``text`` for Slack, Teams and the like, then the whole run."""
    return {"text": webhook_text(report), "deltasync": report.as_json()}


def webhook_text(report: RunReport) -> str:
    """A chat message: the subject line, then the reasons and what to do, as plain text."""
    lines = [report.subject()]
    lines += [f"• {reason}" for reason in report.attention[:10]]
    if len(report.attention) > 10:
        lines.append(f"• … and {len(report.attention) - 10} more")
    lines += [f"→ {step}" for step in report.next_steps()[:3]]
    text = "\n".join(lines)
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


@cache
def _no_redirects() -> type[urllib.request.HTTPRedirectHandler]:
    """A redirect handler that follows none (a class made once urllib is imported)."""
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # urllib then raises HTTPError for the 3xx: reported, not followed

    return NoRedirects


def _refusals(recipients: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{who} ({code} {_decode(text)})" for who, (code, text) in recipients.items())


def _smtp_text(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_decode(exc.smtp_error)}"


def _decode(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return " ".join(text.split())


def _tls_text(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the server's certificate is not trusted: {exc.verify_message}"
    return f"TLS failed: {exc.reason or exc}"


def _os_text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return "no answer in time (timeout)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
