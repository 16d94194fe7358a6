"""The notice e-mail of a run: a subject with feed, outcome and counts; plain text and HTML.

Both parts show the same sections: what needs attention, what to do next, what the run did
(the command's own text output), the patrons held back and rejected by code with their match
IDs, and the batches waiting or failed. Patrons are named by match ID only.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from importlib.metadata import PackageNotFoundError, version

from . import text
from .jinja import environment, local_time
from .run import Outcome, RunReport
from .settings import EmailSettings

LIST_LIMIT = 100
"""Match IDs listed per code; more are counted."""
TONES = {
    Outcome.OK: "ok",
    Outcome.ATTENTION: "attention",
    Outcome.REFUSED: "error",
    Outcome.ERROR: "error",
}


@dataclass(frozen=True)
class Section:
    """A titled block of lines, the same in the text and the HTML part."""

    title: str
    lines: list[str]
    monospace: bool = False


def sections(report: RunReport) -> list[Section]:
    """The e-mail's body, section by section."""
    found: list[Section] = []
    if report.error is not None:
        found.append(Section("What happened", [report.error]))
    elif report.attention:
        found.append(Section("Needs attention", report.attention))
    steps = report.next_steps()
    if steps:
        found.append(Section("What to do next", steps))
    did = text.lines(report)
    if did:
        found.append(Section("What the run did", did, monospace=True))
    held = report.held_back_by_code()
    if held:
        found.append(
            Section("Held back by the checks (fix in the SIS)", _by_code(held), monospace=True)
        )
    rejected = report.rejected_by_reason()
    if rejected:
        found.append(Section("Rejected by Alma", _by_code(rejected), monospace=True))
    found.append(Section("Batches", _batches(report)))
    return found


def message(report: RunReport, settings: EmailSettings) -> EmailMessage:
    """The e-mail for ``report``, ready for ``smtplib.SMTP.send_message``."""
    msg = EmailMessage()
    msg["Subject"] = report.subject()
    msg["From"] = settings.sender
    msg["To"] = ", ".join(formataddr(parseaddr(address)) for address in settings.to)
    msg["Date"] = formatdate(localtime=True)
    domain = parseaddr(settings.sender)[1].rpartition("@")[2] or None
    msg["Message-ID"] = make_msgid("deltasync", domain=domain)
    # RFC 3834: no vacation replies to a machine's mail.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Deltasync-Feed"] = report.feed
    msg["X-Deltasync-Outcome"] = report.outcome.value
    msg.set_content(body_text(report))
    msg.add_alternative(body_html(report), subtype="html")
    return msg


def body_text(report: RunReport) -> str:
    """The plain-text part."""
    out = [_title(report), _when(report), ""]
    for section in sections(report):
        out.append(section.title)
        bullet = "  " if section.monospace else "  - "
        out += [f"{bullet}{line}" for line in section.lines]
        out.append("")
    out += ["-- ", _footer()]
    return "\n".join(out) + "\n"


def body_html(report: RunReport) -> str:
    """The HTML part (inline styles: mail programs drop style sheets)."""
    template = environment().get_template("mail.html.j2")
    return template.render(
        report=report,
        title=_title(report),
        when=_when(report),
        tone=TONES[report.outcome],
        sections=sections(report),
        footer=_footer(),
    )


def _title(report: RunReport) -> str:
    what = "dry run" if report.dry_run else report.command
    outcome = report.outcome.value.upper()
    return f"deltasync feed {report.feed}: {outcome} ({what}, exit {report.exit_code})"


def _when(report: RunReport) -> str:
    if report.started_at is None:
        return "time of the run not recorded"
    return f"{report.command} started {local_time(report.started_at, report.timezone)}"


def _by_code(grouped: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for code, ids in grouped.items():
        shown = ", ".join(ids[:LIST_LIMIT])
        more = f" … and {len(ids) - LIST_LIMIT} more" if len(ids) > LIST_LIMIT else ""
        out.append(f"{code} ({len(ids)}): {shown}{more}")
    return out


def _batches(report: RunReport) -> list[str]:
    tz = report.timezone
    out = [
        f"failed in this run: batch {b.seq} ({b.records} records) at {local_time(b.since, tz)}"
        for b in report.failed
    ]
    out += [
        f"waiting: batch {b.seq} {b.status.replace('_', ' ')} since {local_time(b.since, tz)}"
        + (f"; last error: {b.last_error}" if b.last_error else "")
        for b in report.waiting
    ]
    if not out:
        out.append("no batch is waiting for Alma")
    if report.awaiting_confirmation is not None:
        out.append(f"patrons awaiting confirmation by Alma: {report.awaiting_confirmation}")
    return out


def _footer() -> str:
    try:
        release = f"deltasync {version('deltasync')}"
    except PackageNotFoundError:
        release = "deltasync"
    return (
        f"{release} on {socket.gethostname()}. Patrons are named by match ID only; "
        "`deltasync history ID` shows one patron's story."
    )
