"""Many institutions: feeds in included files, shared [defaults], errors naming file and key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from helpers import invoke

from deltasync.config import load
from deltasync.errors import ConfigError

MAIN = """
include = ["feeds.d/*.toml"]

[state]
url = "sqlite:///var/deltasync.db"

[defaults]
timezone = "America/Chicago"
extract = "/srv/sis/{feed}/patrons-*.xml"
outbox = "var/outbox/{feed}"
ignore = ["status_date"]
transport = "sftp"
remote_dir = "/alma/{feed}"
pickup_timeout = "30h"

[defaults.sftp]
host = "sftp.consortium.example"
username = "alma"
key_file = "keys/id_ed25519"
known_hosts = "keys/known_hosts"
connect_timeout = 20

[defaults.departure]
max_departures = "5%"
purge_after_days = 365

[defaults.checks.policy]
expired-active = "off"
"""


def consortium(tmp_path: Path, main: str = MAIN, **members: str) -> Path:
    (tmp_path / "feeds.d").mkdir(exist_ok=True)
    for name, text in members.items():
        (tmp_path / "feeds.d" / f"{name}.toml").write_text(text, encoding="utf-8")
    path = tmp_path / "config.toml"
    path.write_text(main, encoding="utf-8")
    return path


def test_members_come_from_included_files_with_the_defaults_under_them(tmp_path: Path) -> None:
    path = consortium(
        tmp_path,
        uiuc="""
[feeds.uiuc]
pickup_timeout = "12h"
[feeds.uiuc.sftp]
username = "uiuc-alma"
[feeds.uiuc.departure]
max_departures = 900
""",
        isu="""
[feeds.isu-students]
[feeds.isu-staff]
transport = "dir"
remote_dir = "/mnt/alma/isu-staff"
""",
    )
    config = load(path, environ={})
    assert list(config.feeds) == ["isu-students", "isu-staff", "uiuc"]  # files by name
    uiuc = config.feed("uiuc")
    assert uiuc.extract == "/srv/sis/uiuc/patrons-*.xml"
    assert uiuc.outbox == tmp_path / "var" / "outbox" / "uiuc"
    assert uiuc.ignore == ("status_date",)
    assert uiuc.delivery is not None and uiuc.delivery.remote_dir == "/alma/uiuc"
    assert uiuc.delivery.pickup_timeout == dt.timedelta(hours=12)  # the feed's own value wins
    sftp = uiuc.delivery.sftp
    assert sftp is not None
    # Tables merge key by key: the feed's username, the defaults' host, key and timeout.
    assert (sftp.username, sftp.host, sftp.connect_timeout) == (
        "uiuc-alma",
        "sftp.consortium.example",
        20.0,
    )
    # Relative paths resolve against the main file's folder, wherever they are written.
    assert sftp.key_file == tmp_path / "keys" / "id_ed25519"
    assert uiuc.departure.max_departures.value == 900
    assert uiuc.departure.purge_after_days == 365
    assert uiuc.checks.policy("expired-active") == "off"
    students = config.feed("isu-students")
    assert students.delivery is not None and students.delivery.pickup_timeout.total_seconds() == (
        30 * 3600
    )
    staff = config.feed("isu-staff")
    assert staff.delivery is not None and staff.delivery.transport == "dir"
    assert config.feed_files["uiuc"] == tmp_path / "feeds.d" / "uiuc.toml"
    assert config.feed_files["isu-staff"] == tmp_path / "feeds.d" / "isu.toml"


def test_a_bad_value_in_an_included_file_names_that_file_and_the_key(tmp_path: Path) -> None:
    path = consortium(tmp_path, uiuc="[feeds.uiuc.departure]\nmax_departures = 'many'\n")
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    member = tmp_path / "feeds.d" / "uiuc.toml"
    assert str(caught.value) == (
        f"{member}: feeds.uiuc.departure.max_departures: expected a count such as 500 or a "
        "percent such as '5%'"
    )


def test_a_bad_default_names_the_main_file_and_the_defaults_key(tmp_path: Path) -> None:
    main = MAIN.replace('pickup_timeout = "30h"', 'pickup_timeout = "soon"')
    path = consortium(tmp_path, main, uiuc="[feeds.uiuc]\n")
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    assert str(caught.value) == (
        f"{path}: defaults.pickup_timeout (for feed uiuc): a duration such as '26h' or '90m' "
        "(a bare number is hours)"
    )


def test_an_unknown_key_in_an_included_file_is_named(tmp_path: Path) -> None:
    path = consortium(tmp_path, uiuc="[feeds.uiuc]\nremote_dri = '/alma/x'\n")
    member = tmp_path / "feeds.d" / "uiuc.toml"
    with pytest.raises(ConfigError, match=f"^{member}: feeds.uiuc.remote_dri: unknown key"):
        load(path, environ={})


def test_a_feed_defined_twice_names_both_files(tmp_path: Path) -> None:
    path = consortium(tmp_path, a="[feeds.uiuc]\n", b="[feeds.uiuc]\n")
    first, second = tmp_path / "feeds.d" / "a.toml", tmp_path / "feeds.d" / "b.toml"
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    assert str(caught.value) == (
        f"{second}: feeds.uiuc: feed 'uiuc' is defined twice, in {first} and in {second}; "
        "one feed, one table"
    )
    # The main file and an included one collide just the same.
    (tmp_path / "feeds.d" / "a.toml").unlink()
    path = consortium(tmp_path, MAIN + "\n[feeds.uiuc]\n")
    with pytest.raises(ConfigError, match="is defined twice, in .*config.toml and in .*b.toml"):
        load(path, environ={})


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (
            "[state]\nurl = 'sqlite:///x.db'\n",
            "state: an included file holds only [feeds.NAME] "
            "tables (state belongs in the main file, {main})",
        ),
        (
            "include = ['more/*.toml']\n",
            "include: an included file holds only [feeds.NAME] "
            "tables (include belongs in the main file, {main})",
        ),
        ("[feeds.uiuc\n", "not valid TOML: "),
    ],
)
def test_an_included_file_holds_only_feeds(tmp_path: Path, member: str, message: str) -> None:
    path = consortium(tmp_path, uiuc=member)
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    included = tmp_path / "feeds.d" / "uiuc.toml"
    assert str(caught.value).startswith(f"{included}: {message.format(main=path)}")


def test_include_errors_and_defaults_errors(tmp_path: Path) -> None:
    path = consortium(tmp_path, MAIN.replace("feeds.d/*.toml", "members/*.toml"))
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    assert str(caught.value) == (
        f"{path}: include: 'members/*.toml' matches no file ({tmp_path / 'members' / '*.toml'})"
    )
    shared_outbox = MAIN.replace('"var/outbox/{feed}"', '"var/outbox"')
    path = consortium(tmp_path, shared_outbox, uiuc="[feeds.uiuc]\n")
    with pytest.raises(ConfigError, match=r"defaults.outbox: every feed needs its own outbox"):
        load(path, environ={})
    path = consortium(tmp_path, MAIN + "\n[defaults.nonsense]\n", uiuc="[feeds.uiuc]\n")
    with pytest.raises(ConfigError, match=rf"^{path}: defaults.nonsense: unknown key"):
        load(path, environ={})


def test_the_cli_reports_an_include_error_in_one_line(tmp_path: Path) -> None:
    path = consortium(tmp_path, uiuc="[feeds.uiuc]\nrecords_per_part = 0\n")
    result = invoke(path, "--feed", "uiuc", "status")
    assert result.exit_code == 1
    member = tmp_path / "feeds.d" / "uiuc.toml"
    assert result.output == (
        f"Error: {member}: feeds.uiuc.records_per_part: must be a whole number of at least 1\n"
    )


def test_metrics_file_resolves_against_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('metrics_file = "metrics/deltasync.prom"\n[feeds.a]\n', encoding="utf-8")
    assert load(path, environ={}).metrics_file == tmp_path / "metrics" / "deltasync.prom"
    path.write_text("metrics_file = 3\n[feeds.a]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{path}: metrics_file: must be a string$"):
        load(path, environ={})
