"""Real servers that receive deltasync's notices: an SMTP server (aiosmtpd) and an HTTP
listener (http.server), both on loopback, recording everything they receive."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"


@dataclass
class Mail:
    """One message the SMTP server accepted."""

    sender: str
    recipients: list[str]
    raw: bytes
    login: str | None

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def subject(self) -> str:
        # A long Subject is folded right after "Subject:"; the parser keeps the fold's space.
        return str(self.message["Subject"]).strip()

    def part(self, subtype: str) -> str:
        """The text of the ``text/<subtype>`` part."""
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None and body.get_content_subtype() == subtype, subtype
        content = body.get_content()
        assert isinstance(content, str)
        return content.replace("\r\n", "\n")  # SMTP carries CRLF line ends


class _Handler:
    def __init__(self, inbox: SmtpServer) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        self.inbox.received.append(
            Mail(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content), login)
        )
        return "250 Message accepted"


@dataclass
class SmtpServer:
    """aiosmtpd on loopback; ``security`` none (plain), starttls or ssl; with ``users`` it
    requires a login (over TLS only)."""

    folder: Path
    security: str = "none"
    users: dict[str, str] = field(default_factory=dict)
    received: list[Mail] = field(default_factory=list)
    port: int = 0
    ca_file: Path | None = None

    def start(self) -> SmtpServer:
        self.port = free_port()
        options: dict[str, Any] = {}
        if self.security != "none":
            cert, key = self_signed(self.folder)
            self.ca_file = cert
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            if self.security == "ssl":
                options["ssl_context"] = context
            else:
                options |= {"tls_context": context, "require_starttls": True}
        if self.users:
            # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; implicit TLS is too.
            tls_only = self.security == "starttls"
            options |= {"authenticator": self._authenticate, "auth_require_tls": tls_only}
        self._controller = Controller(
            _Handler(self), hostname=LOOPBACK, port=self.port, ready_timeout=10, **options
        )
        self._controller.start()
        return self

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            if self.users.get(user) == password:
                return AuthResult(success=True, auth_data=data.login)
        return AuthResult(success=False, handled=False)

    def stop(self) -> None:
        self._controller.stop()

    def wait_for(self, count: int, timeout: float = 10) -> list[Mail]:
        """The messages received, once there are ``count`` (the server stores them late)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)


@dataclass
class Post:
    """One request the webhook listener received."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookServer:
    """An HTTP listener on loopback that records POSTs and answers as told (200 by default)."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.answers: list[int | str] = []
        """Statuses for the next requests; "slow" sleeps past any test timeout, "redirect" 302s."""
        self._lock = threading.Lock()
        self._httpd = _Httpd((LOOPBACK, 0), _WebhookHandler, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._httpd.server_address[1]}"

    def start(self) -> WebhookServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int | str:
        with self._lock:
            self.posts.append(Post(path, headers, body))
            return self.answers.pop(0) if self.answers else 200


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, hook: WebhookServer) -> None:
        super().__init__(address, handler)
        self.hook = hook

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that gave up (a timeout test) is no error to print on stderr,
        where it would land in whichever test's output is being captured then."""


class _WebhookHandler(BaseHTTPRequestHandler):
    server: _Httpd

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        answer = self.server.hook.answer(self.path, dict(self.headers.items()), body)
        if answer == "slow":
            time.sleep(1.5)  # past the client's timeout of 1 s
            answer = 200
        if answer == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        assert isinstance(answer, int)
        data = b"ok" if answer < 300 else b"no"
        self.send_response(answer)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no access log on stderr."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files in ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deltasync test SMTP")])
    now = dt.datetime.now(dt.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
