"""Notices: the run's e-mail and webhook post, received by a real SMTP server (aiosmtpd) and a
real HTTP listener on loopback, for runs that need attention, were refused or failed; and a
notice that cannot be sent, which never changes the run's exit code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import dump_store, invoke, record, users, write
from notices import SmtpServer, WebhookServer, free_port

from deltasync.store import open_store, runs

HELD_BACK = (
    "1 record(s) held back (named in the run's output); fix them in the SIS and they go out "
    "with the first extract that passes"
)
SECRET_PATH = "/services/T0001/B0002/Xs3cr3tT0k3n"
"""A webhook URL's token sits in its path: never shown in a message."""


def notify_config(
    tmp_path: Path,
    url: str,
    *,
    email: dict[str, Any] | None = None,
    webhook: dict[str, Any] | None = None,
    on: str | None = None,
    feed: str = "",
) -> Path:
    lines = [f'[state]\nurl = "{url}"\n']
    if on is not None:
        lines.append(f'[notify]\non = "{on}"\n')
    for name, table in (("email", email), ("webhook", webhook)):
        if table is not None:
            lines.append(f"[notify.{name}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
            lines.append("")
    lines.append('[feeds.patrons]\ntimezone = "America/Chicago"\n' + feed)
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def plain_smtp(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "security": "none",
        "from": "deltasync@example.edu",
        "to": ["library-systems@example.edu", "Night Desk <desk@example.edu>"],
        **extra,
    }


def hook(server: WebhookServer) -> dict[str, Any]:
    return {"url": server.url + SECRET_PATH, "timeout": 2}


def duplicate_extract(folder: Path, day: int = 0) -> Path:
    """B twice: neither copy is sent, which makes the run exit 4. Each day a newcomer, so
    each day's extract is a new one (the same file again is skipped: nothing to hold back)."""
    newcomers = [record(f"C{n}") for n in range(1, day + 1)]
    return write(folder, f"dup{day}.xml", users(record("A"), record("B"), record("B"), *newcomers))


def test_a_run_that_needs_attention_mails_and_posts_its_report(
    sqlite_url: str, tmp_path: Path, smtp_server: SmtpServer, webhook_server: WebhookServer
) -> None:
    config = notify_config(
        tmp_path, sqlite_url, email=plain_smtp(smtp_server.port), webhook=hook(webhook_server)
    )
    result = invoke(config, "run", "--json", str(duplicate_extract(tmp_path)))
    assert result.exit_code == 4, result.output
    # The notices add nothing to the streams: cron still gets exactly the reasons.
    assert result.stderr == f"ATTENTION: feed patrons: {HELD_BACK}\n"
    run_json = json.loads(result.stdout)

    [mail] = smtp_server.wait_for(1)
    subject = (
        "deltasync patrons: ATTENTION - 1 record(s) held back (1 sent: "
        "1 new, 0 changed, 0 departed, 0 returned)"
    )
    assert mail.subject == subject
    assert mail.sender == "deltasync@example.edu"
    assert mail.recipients == ["library-systems@example.edu", "desk@example.edu"]
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert mail.message["X-Deltasync-Outcome"] == "attention"
    plain = mail.part("plain")
    assert plain.startswith("deltasync feed patrons: ATTENTION (run, exit 4)\nrun started ")
    assert f"Needs attention\n  - {HELD_BACK}\n" in plain
    assert "Held back by the checks (fix in the SIS)\n  match-id-duplicate (1): B\n" in plain
    assert (
        "What to do next\n  - Fix the held-back records (by match ID and check code in this "
        "report) in the SIS: each goes out with the first extract that passes its checks.\n"
    ) in plain
    assert "  held back B: match ID occurs more than once in the extract" in plain
    assert "Batches\n  - no batch is waiting for Alma\n" in plain
    html = mail.part("html")
    assert "<li>" + HELD_BACK.replace("'", "&#39;") + "</li>" in html
    assert "match-id-duplicate (1): B" in html

    [post] = webhook_server.posts
    assert post.path == SECRET_PATH
    assert post.headers["Content-Type"] == "application/json; charset=utf-8"
    body = post.json()
    assert body["text"].splitlines()[:2] == [subject, f"• {HELD_BACK}"]
    notice = body["deltasync"]
    assert notice["result"] == run_json  # the run's full --json object
    assert (notice["feed"], notice["command"], notice["outcome"], notice["exit_code"]) == (
        "patrons",
        "run",
        "attention",
        4,
    )
    assert notice["held_back"] == {"match-id-duplicate": ["B"]}
    assert [e["status"] for e in notice["ledger"]] == ["built", "confirmed"]


@pytest.mark.parametrize("on", ["attention", "always", "never"])
def test_a_run_that_went_well_notifies_only_with_on_always(
    sqlite_url: str,
    tmp_path: Path,
    smtp_server: SmtpServer,
    webhook_server: WebhookServer,
    on: str,
) -> None:
    config = notify_config(
        tmp_path,
        sqlite_url,
        email=plain_smtp(smtp_server.port),
        webhook=hook(webhook_server),
        on=on,
    )
    extract = write(tmp_path, "a.xml", users(record("A"), record("B")))
    result = invoke(config, "run", str(extract))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    if on != "always":
        assert smtp_server.wait_for(1, timeout=0.5) == [] and webhook_server.posts == []
        return
    [mail] = smtp_server.wait_for(1)
    assert mail.subject == (
        "deltasync patrons: OK - 2 sent: 2 new, 0 changed, 0 departed, 0 returned"
    )
    assert webhook_server.posts[0].json()["deltasync"]["outcome"] == "ok"


def test_a_dry_run_never_notifies(
    sqlite_url: str, tmp_path: Path, smtp_server: SmtpServer, webhook_server: WebhookServer
) -> None:
    config = notify_config(
        tmp_path,
        sqlite_url,
        email=plain_smtp(smtp_server.port),
        webhook=hook(webhook_server),
        on="always",
    )
    result = invoke(config, "diff", str(duplicate_extract(tmp_path)))
    assert result.exit_code == 4, result.output
    assert smtp_server.wait_for(1, timeout=0.5) == [] and webhook_server.posts == []


def test_a_refused_run_reaches_a_person(
    sqlite_url: str,
    tmp_path: Path,
    smtp_server: SmtpServer,
    webhook_server: WebhookServer,
    make_extract: Callable[..., Path],
) -> None:
    config = notify_config(
        tmp_path,
        sqlite_url,
        email=plain_smtp(smtp_server.port),
        webhook=hook(webhook_server),
        feed='[feeds.patrons.departure]\nmax_departures = "5%"\n',
    )
    assert invoke(config, "run", str(make_extract(0, 40))).exit_code == 0
    truncated = write(tmp_path, "short.xml", users(record("ZZ1")))
    result = invoke(config, "run", str(truncated))
    assert result.exit_code == 3, result.output
    message = (
        f"{truncated}: 40 of 40 patrons would depart (100.0%), over max_departures = 5% for "
        "feed 'patrons'. Check the extract; if it is right, run again with --force"
    )
    assert result.stderr == f"Error: refused: {message}\n"

    [mail] = smtp_server.wait_for(1)
    assert mail.subject == (
        "deltasync patrons: REFUSED - short.xml: 40 of 40 patrons would depart (100.0%), over "
        "max_departures = 5% for feed 'patrons'. C..."
    )
    plain = mail.part("plain")
    assert f"What happened\n  - {message}\n" in plain
    assert "The run was refused and changed nothing. Check the extract" in plain
    notice = webhook_server.posts[0].json()["deltasync"]
    assert (notice["outcome"], notice["exit_code"], notice["result"]) == ("refused", 3, None)
    assert notice["error"] == message
    assert notice["started_at"] is not None  # the run log's entry of this very run


@pytest.mark.parametrize("case", ["broken", "missing"])
def test_a_failed_run_reaches_a_person(
    sqlite_url: str,
    tmp_path: Path,
    smtp_server: SmtpServer,
    webhook_server: WebhookServer,
    case: str,
) -> None:
    """A broken extract, or the SIS export that never came: exit 1, and a notice."""
    config = notify_config(
        tmp_path, sqlite_url, email=plain_smtp(smtp_server.port), webhook=hook(webhook_server)
    )
    extract = tmp_path / "incoming" / "patrons.xml"
    if case == "broken":
        extract = write(tmp_path, "broken.xml", "<users><user>")
    result = invoke(config, "run", str(extract))
    assert result.exit_code == 1, result.output
    [error] = result.stderr.splitlines()
    assert error.startswith(f"Error: {extract}")
    if case == "missing":
        assert error == f"Error: {extract}: extract not found"
        # Told before the store was even opened: it is as it was (here: never made).
        assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
    [mail] = smtp_server.wait_for(1)
    reason = error.removeprefix("Error: ")
    name = extract.name
    assert mail.subject.startswith(f"deltasync patrons: ERROR - the run stopped: {name}: ")
    assert f"What happened\n  - {reason}\n" in mail.part("plain")
    assert "The run stopped and changed nothing (the store is as it was)" in mail.part("plain")
    notice = webhook_server.posts[0].json()["deltasync"]
    assert (notice["outcome"], notice["exit_code"], notice["error"]) == ("error", 1, reason)


def test_notices_that_cannot_be_sent_change_nothing_of_the_run(
    db_url: str, tmp_path: Path, webhook_server: WebhookServer
) -> None:
    closed = free_port()  # nothing listens there: the mail server is down
    webhook_server.answers = [500, 500]
    config = notify_config(
        tmp_path,
        db_url,
        email=plain_smtp(closed, timeout=2),
        webhook=hook(webhook_server),
    )
    result = invoke(config, "run", "--json", str(duplicate_extract(tmp_path)))
    assert result.exit_code == 4, result.output  # the run's own exit code
    where = webhook_server.url.split("//")[1]
    assert result.stderr == (
        f"Warning: feed patrons: notice not sent: e-mail via 127.0.0.1:{closed}: "
        "Connection refused\n"
        f"Warning: feed patrons: notice not sent: webhook http://{where}/…: "
        "HTTP 500 Internal Server Error\n"
        f"ATTENTION: feed patrons: {HELD_BACK}\n"
    )
    assert SECRET_PATH not in result.output
    assert len(webhook_server.posts) == 2  # tried again once
    assert json.loads(result.stdout)["batch"]["seq"] == 1
    # The run is committed and logged as it ended, notices or not.
    with open_store(db_url) as store, store.read() as conn:
        [entry] = runs.runs(conn, "patrons")
    assert (entry.outcome, entry.batch_seq) == (runs.Outcome.ATTENTION, 1)
    assert dump_store(db_url)["batch"]


@pytest.mark.parametrize(
    ("answers", "posts", "warning"),
    [
        ([503], 2, None),
        ([429, 429], 2, "HTTP 429 Too Many Requests"),
        ([404], 1, "HTTP 404 Not Found"),
        (["redirect"], 1, "HTTP 302 Found"),
        (["slow", "slow"], 2, "no answer in time (timeout)"),
    ],
    ids=["retried", "retried-twice", "not-retried", "redirect-not-followed", "timeout"],
)
def test_webhook_retries_and_failures(
    sqlite_url: str,
    tmp_path: Path,
    webhook_server: WebhookServer,
    answers: list[int | str],
    posts: int,
    warning: str | None,
) -> None:
    webhook_server.answers = list(answers)
    config = notify_config(tmp_path, sqlite_url, webhook={**hook(webhook_server), "timeout": 1})
    result = invoke(config, "run", str(duplicate_extract(tmp_path)))
    assert result.exit_code == 4, result.output
    assert len(webhook_server.posts) == posts
    where = f"webhook http://{webhook_server.url.split('//')[1]}/…"
    lines = [f"Warning: feed patrons: notice not sent: {where}: {warning}"] if warning else []
    assert result.stderr.splitlines() == [*lines, f"ATTENTION: feed patrons: {HELD_BACK}"]


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_mail_over_tls_with_a_login_from_the_environment(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, security: str
) -> None:
    monkeypatch.setattr("deltasync.report.notify.RETRY_PAUSE", 0.05)
    password = "correct-horse-battery"
    server = SmtpServer(tmp_path / "smtp", security=security, users={"dsync": password}).start()
    try:
        monkeypatch.setenv("TEST_SMTP_USER", "dsync")
        monkeypatch.setenv("TEST_SMTP_PASSWORD", password)
        email = plain_smtp(
            server.port,
            security=security,
            username_env="TEST_SMTP_USER",
            password_env="TEST_SMTP_PASSWORD",
            ca_file=str(server.ca_file),
        )
        config = notify_config(tmp_path, sqlite_url, email=email)
        result = invoke(config, "run", str(duplicate_extract(tmp_path)))
        assert result.exit_code == 4, result.output
        [mail] = server.wait_for(1)
        assert mail.login == "dsync"
        assert password.encode() not in mail.raw

        monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong-password")
        again = invoke(config, "run", str(duplicate_extract(tmp_path, 1)))
        assert again.exit_code == 4, again.output
        refused = (
            f"Warning: feed patrons: notice not sent: e-mail via 127.0.0.1:{server.port}: the "
            "server refused the login (TEST_SMTP_USER): 535 5.7.8 Authentication credentials "
            "invalid"
        )
        assert again.stderr.splitlines()[0] == refused
        assert "wrong-password" not in again.output

        monkeypatch.setenv("TEST_SMTP_PASSWORD", password)
        without_ca = {key: value for key, value in email.items() if key != "ca_file"}
        untrusted = notify_config(tmp_path, sqlite_url, email=without_ca)
        third = invoke(untrusted, "run", str(duplicate_extract(tmp_path, 2)))
        assert third.exit_code == 4, third.output
        assert third.stderr.splitlines()[0] == (
            f"Warning: feed patrons: notice not sent: e-mail via 127.0.0.1:{server.port}: the "
            "server's certificate is not trusted: self-signed certificate"
        )
        assert len(server.received) == 1
    finally:
        server.stop()


def test_a_feed_overrides_the_shared_notify_table_key_by_key(
    sqlite_url: str, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    # The consortium names its mail server once; each institution its own people, and one
    # wants to hear of every run.
    feed = '[feeds.patrons.notify]\non = "always"\n[feeds.patrons.notify.email]\n'
    feed += 'to = ["circ@branch.example.edu"]\n'
    config = notify_config(tmp_path, sqlite_url, email=plain_smtp(smtp_server.port), feed=feed)
    result = invoke(config, "run", str(write(tmp_path, "a.xml", users(record("A")))))
    assert result.exit_code == 0, result.output
    [mail] = smtp_server.wait_for(1)
    assert mail.recipients == ["circ@branch.example.edu"]
    assert mail.sender == "deltasync@example.edu"


def test_replay_and_baseline_notify_too(
    sqlite_url: str, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    remote = tmp_path / "alma-inbox"
    remote.write_text("not a folder")  # the mount is broken: nothing can be delivered
    feed = f'transport = "dir"\nremote_dir = "{remote}"\n'
    config = notify_config(tmp_path, sqlite_url, email=plain_smtp(smtp_server.port), feed=feed)
    baseline = invoke(config, "baseline", str(duplicate_extract(tmp_path)))
    assert baseline.exit_code == 4, baseline.output
    replayed = invoke(config, "replay")
    assert replayed.exit_code in (0, 4), replayed.output
    first, *rest = smtp_server.wait_for(1)
    assert first.subject == (
        "deltasync patrons: ATTENTION - 1 record(s) held back (1 adopted, nothing sent)"
    )
    assert "feed patrons: adopted 1 patrons from" in first.part("plain")
    assert first.part("plain").startswith("deltasync feed patrons: ATTENTION (baseline, exit 4)")
    if replayed.exit_code == 4:
        [second] = smtp_server.wait_for(2)[1:]
        assert second.subject.startswith("deltasync patrons: ATTENTION - ")
        assert "(replay, exit 4)" in second.part("plain")
    else:
        assert rest == []


def test_quiet_prints_no_report_but_still_says_why_on_stderr(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = notify_config(tmp_path, sqlite_url)
    result = invoke(config, "-q", "run", str(duplicate_extract(tmp_path)))
    assert result.exit_code == 4
    assert result.stdout == ""
    assert result.stderr == f"ATTENTION: feed patrons: {HELD_BACK}\n"
    both = invoke(config, "-q", "-v", "status")
    assert both.exit_code == 2
    assert "Error: -v and -q contradict each other: give one of them" in both.stderr


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        (
            {"password": "hunter22"},
            "notify.email.password",
            "secrets never go in the config file: put it in an environment variable and name "
            "the variable in username_env / password_env (or url_env)",
        ),
        (
            {"security": "none", "smtp_host": "smtp.example.edu", "username_env": "U"}
            | {"password_env": "P"},
            "notify.email.security",
            "'none' would send the SMTP password in clear text; use 'starttls' or 'ssl' (a "
            "login without TLS is accepted only on this machine: localhost, 127.0.0.0/8, ::1)",
        ),
        ({"password_env": "P"}, "notify.email.password_env", "give both username_env and "
         "password_env, or neither"),
        ({"to": []}, "notify.email.to", "a list of addresses, such as "
         "['library-systems@example.edu']"),
        ({"to": ["systems\nBcc: x@evil.example"]}, "notify.email.to",
         "'systems\\nBcc: x@evil.example' is not an e-mail address"),
        ({"security": "tls"}, "notify.email.security", "must be 'starttls', 'ssl' or 'none'"),
        ({"password_env": "not a name", "username_env": "U"}, "notify.email.password_env",
         "the name of an environment variable, such as SMTP_PASSWORD"),
    ],
    ids=["password", "cleartext-login", "half-login", "no-recipient", "header-injection",
         "security", "env-name"],
)  # fmt: skip
def test_email_settings_errors_name_the_key(
    sqlite_url: str, tmp_path: Path, table: dict[str, Any], key: str, message: str
) -> None:
    base = {
        "smtp_host": "smtp.example.edu",
        "from": "deltasync@example.edu",
        "to": ["systems@example.edu"],
    }
    config = notify_config(tmp_path, sqlite_url, email=base | table)
    result = invoke(config, "status")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {config}: {key}: {message}\n"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"url": "http://hooks.example.com/T1/secret"},
            "http:// would send the webhook's token in clear text; use https:// (http is "
            "accepted only for this machine: localhost, 127.0.0.0/8, ::1)",
        ),
        ({"url": "ftp://example.com/x"}, "must be an https:// URL, such as "
         "'https://hooks.slack.com/services/…'"),
        ({}, "give url, or url_env naming the variable that holds it"),
    ],
    ids=["plain-http", "scheme", "no-url"],
)  # fmt: skip
def test_webhook_settings_errors_name_the_key(
    sqlite_url: str, tmp_path: Path, table: dict[str, Any], message: str
) -> None:
    config = notify_config(tmp_path, sqlite_url, webhook={"timeout": 5} | table)
    result = invoke(config, "status")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {config}: notify.webhook.url: {message}\n"


def test_webhook_url_from_the_environment(
    sqlite_url: str,
    tmp_path: Path,
    webhook_server: WebhookServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = notify_config(tmp_path, sqlite_url, webhook={"url_env": "TEST_WEBHOOK_URL"})
    unset = invoke(config, "run", str(duplicate_extract(tmp_path)))
    assert unset.exit_code == 4
    assert unset.stderr.splitlines()[0] == (
        "Warning: feed patrons: notice not sent: webhook the webhook in $TEST_WEBHOOK_URL: "
        "notify.webhook.url_env names TEST_WEBHOOK_URL, which is not set (or empty)"
    )
    monkeypatch.setenv("TEST_WEBHOOK_URL", webhook_server.url + SECRET_PATH)
    again = invoke(config, "run", str(duplicate_extract(tmp_path, 1)))
    assert again.exit_code == 4
    assert [p.path for p in webhook_server.posts] == [SECRET_PATH]
