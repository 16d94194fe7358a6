"""``[notify]``: who hears about a run, by e-mail and by webhook, and when.

A top-level ``[notify]`` applies to every feed; ``[feeds.NAME.notify]`` overrides it key by
key (``email`` and ``webhook`` key by key too), so a consortium names its mail server once and
each institution its own recipients. Secrets never sit in the file: the SMTP login comes from
the environment variables ``username_env`` and ``password_env`` name, and a webhook URL, which
carries its token, may come from the one ``url_env`` names.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ON = ("attention", "always", "never")
SECURITY = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
NOTIFY_KEYS = {"on", "email", "webhook"}
EMAIL_KEYS = {
    "smtp_host",
    "smtp_port",
    "security",
    "from",
    "to",
    "username_env",
    "password_env",
    "ca_file",
    "timeout",
}
WEBHOOK_KEYS = {"url", "url_env", "timeout"}
SECRET_KEYS = {"password", "username", "pass", "passwd", "secret", "token"}
"""Keys someone may write by habit: each gets a message pointing at the ``_env`` key instead."""
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Error = Callable[[str, str], ConfigError]


@dataclass(frozen=True)
class EmailSettings:
    """An SMTP server and the people who get the run's e-mail."""

    smtp_host: str
    sender: str
    to: tuple[str, ...]
    smtp_port: int = 587
    security: str = "starttls"
    username_env: str | None = None
    password_env: str | None = None
    ca_file: Path | None = None
    """Certificates to trust instead of the system's (a campus relay with an internal CA)."""
    timeout: float = 30.0

    def credentials(self) -> tuple[str, str] | None:
        """The SMTP login from the environment; None when the server takes mail without one."""
        if self.username_env is None or self.password_env is None:
            return None
        return _variable("notify.email.username_env", self.username_env), _variable(
            "notify.email.password_env", self.password_env
        )

    def describe(self) -> str:
        """``host:port``, for messages."""
        return f"{self.smtp_host}:{self.smtp_port}"


@dataclass(frozen=True)
class WebhookSettings:
    """Where the run's JSON is posted (Slack, Teams, Mattermost … incoming webhooks)."""

    url: str | None = None
    url_env: str | None = None
    timeout: float = 10.0

    def target(self) -> str:
        """The URL to post to, from the file or from the environment (checked like the file's)."""
        if self.url is not None:
            return self.url
        assert self.url_env is not None
        raw = _variable("notify.webhook.url_env", self.url_env)
        problem = url_problem(raw)
        if problem is not None:
            raise ConfigError(f"notify.webhook.url_env: {self.url_env} {problem}")
        return raw

    def describe(self) -> str:
        """The URL without its path and query, which carry the token: safe for messages."""
        if self.url is None:
            return f"the webhook in ${self.url_env}"
        return redact_url(self.url)


@dataclass(frozen=True)
class NotifySettings:
    """When a run tells someone, and how."""

    on: str = "attention"
    email: EmailSettings | None = None
    webhook: WebhookSettings | None = None

    def wants(self, outcome: str) -> bool:
        """Whether a run that ended with ``outcome`` (ok, attention, refused, error) notifies."""
        if self.on == "never" or (self.email is None and self.webhook is None):
            return False
        return self.on == "always" or outcome != "ok"


def merged(shared: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """A feed's ``notify`` table laid over the top-level one, ``email`` and ``webhook`` by key."""
    result = {**shared, **own}
    for key in ("email", "webhook"):
        inner_shared, inner_own = shared.get(key, {}), own.get(key, {})
        if isinstance(inner_shared, dict) and isinstance(inner_own, dict):
            result[key] = {**inner_shared, **inner_own}
    return result


def parse(
    table: Mapping[str, Any], where: str, error: Error, path: Callable[[str], Path]
) -> NotifySettings:
    """Read a (merged) notify table; ``path`` resolves a file name against the config's folder."""
    _known(table, where, NOTIFY_KEYS, error)
    on = table.get("on", "attention")
    if on not in ON:
        raise error(f"{where}.on", "must be 'attention', 'always' or 'never'")
    email = table.get("email")
    webhook = table.get("webhook")
    for key, value in (("email", email), ("webhook", webhook)):
        if value is not None and not isinstance(value, dict):
            raise error(f"{where}.{key}", "must be a table")
    return NotifySettings(
        on=on,
        email=None if not email else _email(email, f"{where}.email", error, path),
        webhook=None if not webhook else _webhook(webhook, f"{where}.webhook", error),
    )


def _email(
    table: dict[str, Any], where: str, error: Error, path: Callable[[str], Path]
) -> EmailSettings:
    _known(table, where, EMAIL_KEYS, error)
    host = table.get("smtp_host")
    if not isinstance(host, str) or not host.strip() or _CONTROL.search(host):
        raise error(f"{where}.smtp_host", "the mail server's name, such as 'smtp.example.edu'")
    security = table.get("security", "starttls")
    if security not in SECURITY:
        raise error(f"{where}.security", "must be 'starttls', 'ssl' or 'none'")
    port = table.get("smtp_port", DEFAULT_PORTS[security])
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise error(f"{where}.smtp_port", "must be a port number (1-65535)")
    sender = table.get("from")
    if not isinstance(sender, str) or not _is_address(sender):
        raise error(f"{where}.from", "the sender's address, such as 'deltasync@example.edu'")
    to = table.get("to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to or not all(isinstance(a, str) for a in to):
        raise error(f"{where}.to", "a list of addresses, such as ['library-systems@example.edu']")
    for address in to:
        if not _is_address(address):
            raise error(f"{where}.to", f"{address!r} is not an e-mail address")
    names = {key: _env_name(table, where, key, error) for key in ("username_env", "password_env")}
    if (names["username_env"] is None) != (names["password_env"] is None):
        raise error(f"{where}.password_env", "give both username_env and password_env, or neither")
    if names["password_env"] is not None and security == "none" and not _is_loopback(host):
        raise error(
            f"{where}.security",
            "'none' would send the SMTP password in clear text; use 'starttls' or 'ssl' "
            "(a login without TLS is accepted only on this machine: localhost, 127.0.0.0/8, ::1)",
        )
    ca_file = table.get("ca_file")
    if ca_file is not None and (not isinstance(ca_file, str) or not ca_file.strip()):
        raise error(f"{where}.ca_file", "a file of CA certificates in PEM form")
    return EmailSettings(
        smtp_host=host.strip(),
        sender=sender,
        to=tuple(to),
        smtp_port=port,
        security=security,
        username_env=names["username_env"],
        password_env=names["password_env"],
        ca_file=None if ca_file is None else path(ca_file),
        timeout=_seconds(table, where, 30.0, error),
    )


def _webhook(table: dict[str, Any], where: str, error: Error) -> WebhookSettings:
    _known(table, where, WEBHOOK_KEYS, error)
    url, url_env = table.get("url"), _env_name(table, where, "url_env", error)
    if (url is None) == (url_env is None):
        raise error(f"{where}.url", "give url, or url_env naming the variable that holds it")
    if url is not None:
        if not isinstance(url, str):
            raise error(f"{where}.url", "must be a string")
        problem = url_problem(url)
        if problem is not None:
            raise error(f"{where}.url", problem)
    return WebhookSettings(url=url, url_env=url_env, timeout=_seconds(table, where, 10.0, error))


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot take the run's notice, or None: https (http only on loopback)."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # ValueError for a port that is not a number
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("https", "http") or not parts.hostname or _CONTROL.search(url):
        return "must be an https:// URL, such as 'https://hooks.slack.com/services/…'"
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        # The URL is the webhook's password (its path carries the token): never in clear text.
        return (
            "http:// would send the webhook's token in clear text; use https:// (http is "
            "accepted only for this machine: localhost, 127.0.0.0/8, ::1)"
        )
    return None


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: the path and query of a webhook URL hold its token."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a webhook URL)"
    if ":" in host:
        host = f"[{host}]"
    tail = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{tail}"


def _known(table: Mapping[str, Any], where: str, allowed: set[str], error: Error) -> None:
    for key in table:
        if key in SECRET_KEYS:
            raise error(
                f"{where}.{key}",
                "secrets never go in the config file: put it in an environment variable and "
                "name the variable in username_env / password_env (or url_env)",
            )
        if key not in allowed:
            raise error(
                f"{where}.{key}", f"unknown key (allowed here: {', '.join(sorted(allowed))})"
            )


def _env_name(table: Mapping[str, Any], where: str, key: str, error: Error) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _VARIABLE.fullmatch(value):
        raise error(f"{where}.{key}", "the name of an environment variable, such as SMTP_PASSWORD")
    return value


def _seconds(table: Mapping[str, Any], where: str, default: float, error: Error) -> float:
    value = table.get("timeout", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 600:
        raise error(f"{where}.timeout", "must be a number of seconds above 0 (at most 600)")
    return float(value)


def _is_address(text: str) -> bool:
    if _CONTROL.search(text):
        return False  # a line break would let the value add headers
    _name, address = parseaddr(text)
    local, at, domain = address.rpartition("@")
    return bool(at and local and "." in domain and not re.search(r"\s", address))


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _variable(setting: str, name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"{setting} names {name}, which is not set (or empty)")
    return value
