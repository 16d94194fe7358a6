"""The CLI contract: arguments, output, exit codes, and the rules a run applies."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import generate_extract
from helpers import dump_store, invoke, read_delta, run_json

from deltasync.cli import cli


def users(*records: str) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>\n<users>\n' + "\n".join(records) + "\n</users>\n"


def user(
    primary_id: str,
    *,
    group: str = "UGRD",
    expiry: str = "2032-06-30Z",
    univ_id: str | None = None,
    extra: str = "",
) -> str:
    identifiers = ""
    if univ_id is not None:
        identifiers = (
            "<user_identifiers><user_identifier><id_type>UNIV_ID</id_type>"
            f"<value>{univ_id}</value></user_identifier></user_identifiers>"
        )
    return (
        f"<user>\n  <primary_id>{primary_id}</primary_id>\n  <last_name>Doe</last_name>\n"
        f"  <user_group>{group}</user_group>\n  <expiry_date>{expiry}</expiry_date>\n"
        f"  <purge_date>{expiry}</purge_date>\n"
        f"  <account_type>EXTERNAL</account_type>{identifiers}{extra}\n{CONTACT}\n</user>"
    )


CONTACT = (
    '  <contact_info><addresses><address preferred="true"><line1>1 Main St</line1>'
    "<city>Urbana</city><state_province>IL</state_province><postal_code>61801</postal_code>"
    "<address_types><address_type>home</address_type></address_types></address></addresses>"
    '<emails><email preferred="true"><email_address>doe@example.edu</email_address>'
    "<email_types><email_type>personal</email_type></email_types></email></emails></contact_info>"
)
"""Preferred address and email: what CARLI's mandatory fields ask of every record."""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_help_has_examples() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["run", "-h"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "--dry-run" in result.output


def test_run_without_extract_takes_the_newest_match(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(sqlite_url, feed={"extract": "incoming/patrons-*.xml"})
    (tmp_path / "incoming").mkdir()
    old = write(tmp_path / "incoming", "patrons-1.xml", users(user("A")))
    new = write(tmp_path / "incoming", "patrons-2.xml", users(user("A"), user("B")))
    os.utime(old, (time.time() + 60, time.time() + 60))  # the name does not decide; the time does
    result = run_json(config)
    assert result["extract"]["path"] == str(old)
    assert result["counts"]["new"] == 1
    assert new.exists()


def test_usage_and_input_errors(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(sqlite_url)
    no_extract = invoke(config, "run")
    assert no_extract.exit_code == 2
    assert "sets no `extract`" in no_extract.output
    missing = invoke(config, "run", str(tmp_path / "nope.xml"))
    assert missing.exit_code == 1
    assert f"Error: {tmp_path / 'nope.xml'}: extract not found" in missing.output
    no_config = invoke(tmp_path / "absent.toml", "status")
    assert no_config.exit_code == 1
    assert "absent.toml: configuration file not found" in no_config.output
    bad_option = invoke(config, "run", "--frobnicate")
    assert bad_option.exit_code == 2


def test_config_from_environment(
    sqlite_url: str, write_config: Callable[..., Path], monkeypatch: object
) -> None:
    from click.testing import CliRunner

    config = write_config(sqlite_url)
    result = CliRunner().invoke(cli, ["status", "--json"], env={"DELTASYNC_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["feed"] == "patrons"


def test_diff_shows_counts_and_changes_nothing(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    run_json(config, str(make_extract(0, 100)))
    before = dump_store(db_url)
    day1 = make_extract(1, 100)
    diff = invoke(config, "diff", "--json", str(day1))
    assert diff.exit_code == 0, diff.output
    dry = json.loads(invoke(config, "run", "--dry-run", "--json", str(day1)).stdout)
    data = json.loads(diff.stdout)
    assert data == dry
    assert data["dry_run"] is True and data["batch"] is None
    truth = generate_extract.truth(patrons=100, day=1)
    assert data["counts"]["changed"] == len(truth["changed"])
    assert dump_store(db_url) == before
    assert len(list((config.parent / "outbox" / "patrons").iterdir())) == 1
    text = invoke(config, "diff", str(day1))
    assert text.stdout.startswith("dry run: feed patrons:")


def test_text_output_of_run(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(sqlite_url)
    result = invoke(config, "run", str(write(tmp_path, "a.xml", users(user("A"), user("B")))))
    assert result.exit_code == 0
    assert "2 patrons: 2 new, 0 changed" in result.stdout
    assert "batch 1: " in result.stdout and "(2 records, 1 part(s))" in result.stdout
    again = invoke(config, "run", str(tmp_path / "a.xml"))
    assert "already ingested" in again.stdout
    same_content = invoke(config, "run", str(write(tmp_path, "b.xml", users(user("B"), user("A")))))
    assert "nothing to send: no file written" in same_content.stdout


def test_duplicate_match_ids_are_held_back_and_reported(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    run_json(config, str(write(tmp_path, "d0.xml", users(user("A"), user("B"), user("C")))))
    day1 = write(
        tmp_path,
        "d1.xml",
        users(user("a", group="GRAD"), user("B", group="FAC"), user("A", group="STAFF"), user("C")),
    )
    result = run_json(config, str(day1), exit_code=4)
    assert result["counts"] == {
        "new": 0,
        "changed": 1,
        "unchanged": 1,
        "departed": 0,
        "returned": 0,
        "held_back": 1,
    }
    [held] = result["held_back"]
    assert held["match_id"] == "A"
    second = day1.read_text().splitlines().index("  <primary_id>A</primary_id>")  # 0-based
    assert held["where"] == [f"{day1}, line 3", f"{day1}, line {second}"]
    [finding] = result["checks"]["findings"]
    assert finding["code"] == "match-id-duplicate" and finding["match_id"] == "A"
    assert result["attention"][0].startswith("1 record(s) held back")
    assert set(read_delta(Path(result["batch"]["file"]), validate=False)) == {"B"}
    text = invoke(
        config, "diff", str(write(tmp_path, "d2.xml", users(user("A"), user("A")))), "--force"
    )
    assert "held back A: match ID occurs more than once" in text.stdout


def test_primary_ids_compare_case_insensitively(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    run_json(config, str(write(tmp_path, "d0.xml", users(user("Jdoe"), user("B")))))
    result = run_json(config, str(write(tmp_path, "d1.xml", users(user("JDOE"), user("B")))))
    # Same patron, new spelling: sent again so Alma gets the new case, not new + departed.
    assert result["counts"]["new"] == 0 and result["counts"]["departed"] == 0
    assert result["counts"]["changed"] == 1
    history = json.loads(invoke(config, "history", "jdoe", "--json").stdout)
    assert [v["kind"] for v in history] == ["new", "changed"]


def test_match_by_identifier(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url, feed={"match_id": "identifier:UNIV_ID"})
    run_json(
        config,
        str(write(tmp_path, "d0.xml", users(user("a1", univ_id="900"), user("b1", univ_id="901")))),
    )
    # The primary ID changed but the university ID did not: the same patron, changed.
    result = run_json(
        config,
        str(
            write(
                tmp_path,
                "d1.xml",
                users(user("a2", univ_id="900"), user("b1", univ_id="901"), user("c1")),
            )
        ),
        exit_code=4,
    )
    assert result["counts"]["changed"] == 1 and result["counts"]["new"] == 0
    assert result["counts"]["held_back"] == 1  # c1 has no UNIV_ID
    assert "has no identifier:UNIV_ID" in result["held_back"][0]["reason"]
    history = json.loads(invoke(config, "history", "900", "--json").stdout)
    assert len(history) == 2


def test_changed_match_id_rule_is_refused(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(sqlite_url)
    run_json(config, str(write(tmp_path, "d0.xml", users(user("A", univ_id="1")))))
    write_config(sqlite_url, feed={"match_id": "identifier:UNIV_ID"})
    result = invoke(config, "run", str(write(tmp_path, "d1.xml", users(user("A", univ_id="1")))))
    assert result.exit_code == 1
    assert "matches patrons by primary_id" in result.output


def test_already_expired_departures_get_no_record(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url, departure={"max_departures": "100%"})
    run_json(
        config,
        str(
            write(
                tmp_path, "d0.xml", users(user("A"), user("OLD", expiry="2020-01-01Z"), user("C"))
            )
        ),
    )
    result = run_json(config, str(write(tmp_path, "d1.xml", users(user("A")))))
    assert result["counts"]["departed"] == 2
    delta = read_delta(Path(result["batch"]["file"]), validate=False)
    assert set(delta) == {"C"}  # OLD's expiry already passed: Alma needs nothing
    # A departure is sent once: the next day sends nothing for them.
    later = run_json(config, str(write(tmp_path, "d2.xml", users(user("A"), user("A2")))))
    assert later["counts"]["departed"] == 0 and later["counts"]["new"] == 1
    assert set(read_delta(Path(later["batch"]["file"]), validate=False)) == {"A2"}


def test_changed_ignore_list_rehashes_without_reporting_changes(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    run_json(config, str(make_extract(0, 80)))
    write_config(db_url, feed={"ignore": ["status_date", "user_notes"]})
    # The same records in other bytes, so it is not skipped as an already ingested file.
    same = make_extract(0, 80, suffix=".crlf.xml", crlf=True)
    result = invoke(config, "run", str(same))
    assert result.exit_code == 0, result.output
    assert "re-hashed 80 snapshot records" in result.stdout
    assert "0 new, 0 changed, 80 unchanged" in result.stdout


def test_config_defaults_to_the_working_folder(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path, monkeypatch: object
) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    write_config(sqlite_url)
    monkeypatch.chdir(tmp_path)
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["feed"] == "patrons"


def test_progress_bar_on_a_terminal(
    sqlite_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    """A large extract shows a progress bar on stderr when stderr is a terminal, else none."""
    import pty
    import subprocess
    import sys

    config = write_config(sqlite_url)
    extract = make_extract(0, 2500)
    assert extract.stat().st_size > 5 * 1024 * 1024
    command = [sys.executable, "-m", "deltasync", "--config", str(config), "diff", str(extract)]
    primary, secondary = pty.openpty()
    try:
        process = subprocess.run(command, stdout=subprocess.PIPE, stderr=secondary, timeout=120)
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(primary)
    assert process.returncode == 0
    assert f"reading {extract.name}".encode() in seen
    assert b"100%" in seen
    piped = subprocess.run(command, capture_output=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == b""


START_UP = """
import gc, sys

seen = {}


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "deltasync.cli.daily":
            seen[name] = gc.isenabled()


sys.meta_path.insert(0, Watch())
import deltasync.cli
from deltasync.cli import cli  # the group, as a program would import it

assert gc.isenabled(), "importing the CLI stopped the collector"
sys.argv = ["deltasync", "--config", sys.argv[1], "run", "--help"]
try:
    deltasync.cli.main()
except SystemExit:
    pass
print("collector:", seen.get("deltasync.cli.daily"), gc.isenabled(), gc.get_freeze_count() > 0)
"""


def test_start_up_holds_the_collector_while_the_command_imports_and_only_then(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    config = tmp_path / "config.toml"
    config.write_text('[feeds.patrons]\noutbox = "outbox"\n')
    done = subprocess.run(
        [sys.executable, "-c", START_UP, str(config)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    # The command's module came in with the collector held; after it, collecting resumed,
    # with what start-up made frozen out of the way.
    assert done.stdout.splitlines()[-1] == "collector: False True True", done.stderr


RUN_IMPORTS = """
import sys

import deltasync.cli

unwanted = set(sys.argv[3:])
sys.argv = ["deltasync", "--config", sys.argv[1], "run", sys.argv[2]]
try:
    deltasync.cli.main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print("imported:", " ".join(sorted(m for m in sys.modules if m in unwanted)))
"""
NOT_FOR_A_PLAIN_RUN = (
    "urllib.request",  # webhook notices, Alma's API
    "smtplib",  # e-mail notices
    "tenacity",  # Alma's API
    "deltasync.alma_api",
    "deltasync.metrics",  # metrics_file
    "deltasync.audit.health",
    "deltasync.report.html",  # report_html
    "deltasync.report.period",
    "paramiko",  # [delivery] over SFTP
)


def test_a_run_without_notices_reports_or_delivery_imports_none_of_them(tmp_path: Path) -> None:
    import subprocess
    import sys

    from helpers import record, users, write

    config = tmp_path / "config.toml"
    config.write_text('[feeds.patrons]\noutbox = "outbox"\n')
    extract = write(tmp_path, "patrons.xml", users(record("S1"), record("S2")))
    done = subprocess.run(
        [sys.executable, "-c", RUN_IMPORTS, str(config), str(extract), *NOT_FOR_A_PLAIN_RUN],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert done.stdout.splitlines()[-1] == "imported: ", done.stdout
    # The probe itself sees what a run does import.
    probe = subprocess.run(
        [sys.executable, "-c", RUN_IMPORTS, str(config), str(extract), "lxml", "sqlalchemy"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert probe.stdout.splitlines()[-1] == "imported: lxml sqlalchemy", probe.stdout
    assert list((tmp_path / "outbox").glob("*.zip")), "the run sent nothing"
