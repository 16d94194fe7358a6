"""Configuration: precedence, path resolution, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltasync.config import Limit, load
from deltasync.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_in_the_repository_loads() -> None:
    root = Path(__file__).resolve().parent.parent
    config = load(root / "config.toml", environ={})
    feed = config.feed(None)
    assert feed.name == "patrons"
    assert config.state_url.startswith("sqlite:////")
    assert feed.outbox.is_absolute()


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[state]
url = "sqlite:///var/deltasync.db"
[feeds.patrons]
match_id = "identifier:UNIV_ID"
extract = "incoming/patrons-*.xml"
outbox = "var/outbox/patrons"
timezone = "America/Chicago"
ignore = ["status_date", "contact_info/addresses/address/start_date"]
records_per_part = 5000
[feeds.patrons.departure]
expiry = "today+7"
purge_after_days = 30
status = "INACTIVE"
user_group = "ALUMNI"
max_departures = 250
max_changes = "10%"
""",
    )
    config = load(path, environ={})
    feed = config.feed("patrons")
    assert config.state_url == f"sqlite:///{tmp_path / 'var' / 'deltasync.db'}"
    assert feed.extract == str(tmp_path / "incoming" / "patrons-*.xml")
    assert feed.outbox == tmp_path / "var" / "outbox" / "patrons"
    assert feed.match_id.id_type == "UNIV_ID"
    assert feed.records_per_part == 5000
    assert feed.departure.expiry_offset_days == 7
    assert feed.departure.purge_after_days == 30
    assert feed.departure.status == "INACTIVE"
    assert feed.departure.user_group == "ALUMNI"
    assert feed.departure.max_departures == Limit(250, False)
    assert feed.departure.max_changes == Limit(10, True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[feeds.p]\nmatchid = 'primary_id'\n", "feeds.p.matchid: unknown key"),
        (
            "[feeds.p]\n[feeds.p.departure]\nmax_departure = 3\n",
            "feeds.p.departure.max_departure: unknown key",
        ),
        ("[stat]\nurl = 'x'\n[feeds.p]\n", "stat: unknown key"),
        ("[feeds.p]\nmatch_id = 'barcode'\n", "feeds.p.match_id: expected 'primary_id'"),
        ("[feeds.p]\ntimezone = 'Mars/Olympus'\n", "feeds.p.timezone: unknown time zone"),
        ("[feeds.p]\nrecords_per_part = 0\n", "feeds.p.records_per_part: must be a whole number"),
        (
            "[feeds.p]\n[feeds.p.departure]\nexpiry = 'tomorrow'\n",
            "feeds.p.departure.expiry: must be 'today' or 'today+N'",
        ),
        (
            "[feeds.p]\n[feeds.p.departure]\nmax_departures = 'lots'\n",
            "feeds.p.departure.max_departures: expected a count",
        ),
        ("[feeds.p]\nignore = 'status_date'\n", "feeds.p.ignore: must be a list"),
        (
            "[state]\nurl = 'postgresql+psycopg://u:secret@db/x'\n[feeds.p]\n",
            "state.url: holds a password",
        ),
        ("[state]\nurl = 'mysql://db/x'\n[feeds.p]\n", "state.url: only sqlite"),
        ("[state]\n", "[feeds]: at least one feed"),
        ("[feeds.p]\noutbox = 3\n", "feeds.p.outbox: must be a string"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load(tmp_path / "nope.toml", environ={})


def test_environment_overrides_the_store_url(tmp_path: Path) -> None:
    path = write(tmp_path, "[state]\nurl = 'sqlite:///a.db'\n[feeds.p]\n")
    url = "postgresql+psycopg://deltasync@127.0.0.1:5432/deltasync"
    config = load(path, environ={"DELTASYNC_STATE_URL": url})
    assert config.state_url == url


def test_feed_choice(tmp_path: Path) -> None:
    path = write(tmp_path, "[feeds.staff]\n[feeds.students]\n")
    config = load(path, environ={})
    assert config.feed("staff").name == "staff"
    with pytest.raises(ConfigError, match="several feeds are configured"):
        config.feed(None)
    with pytest.raises(ConfigError, match="no feed named 'alumni'"):
        config.feed("alumni")


@pytest.mark.parametrize(
    ("raw", "base", "ceiling"), [("5%", 1000, 50), ("5%", 19, 0), (12, 5, 12), ("0.5%", 1000, 5)]
)
def test_limits(raw: object, base: int, ceiling: int) -> None:
    assert Limit.parse(raw, "x").ceiling(base) == ceiling


def test_delivery_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[feeds.local]
transport = "dir"
remote_dir = "alma-inbox"

[feeds.remote]
transport = "sftp"
remote_dir = "/alma/patrons"
[feeds.remote.sftp]
host = "sftp.example.edu"
username = "alma"
key_file = "keys/id_ed25519"
known_hosts = "keys/known_hosts"
passphrase_env = "DELTASYNC_SFTP_PASSPHRASE"
connect_timeout = 10

[feeds.none]
""",
    )
    config = load(path, environ={})
    local = config.feed("local").delivery
    assert local is not None and local.transport == "dir"
    assert local.remote_dir == str(tmp_path / "alma-inbox")
    remote = config.feed("remote").delivery
    assert remote is not None and remote.sftp is not None
    assert remote.remote_dir == "/alma/patrons"
    assert remote.sftp.key_file == tmp_path / "keys" / "id_ed25519"
    assert remote.sftp.port == 22 and remote.sftp.connect_timeout == 10.0
    assert config.feed("none").delivery is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[feeds.p]\nremote_dir = 'x'\n", "feeds.p.transport: set 'dir' or 'sftp'"),
        ("[feeds.p]\ntransport = 'ftp'\nremote_dir = 'x'\n", "feeds.p.transport: must be"),
        ("[feeds.p]\ntransport = 'dir'\n", "feeds.p.remote_dir: the folder Alma reads"),
        (
            "[feeds.p]\ntransport = 'sftp'\nremote_dir = '/in'\n[feeds.p.sftp]\nhost = 'h'\n",
            "feeds.p.sftp.username: is required",
        ),
        (
            "[feeds.p]\ntransport = 'sftp'\nremote_dir = 'in'\n[feeds.p.sftp]\nhost = 'h'\n"
            "username = 'u'\nkey_file = 'k'\nknown_hosts = 'kh'\n",
            "feeds.p.remote_dir: an absolute path",
        ),
        (
            "[feeds.p]\ntransport = 'sftp'\nremote_dir = '/in'\n[feeds.p.sftp]\nhost = 'h'\n"
            "username = 'u'\nkey_file = 'k'\nknown_hosts = 'kh'\npassword = 'x'\n",
            "feeds.p.sftp.password: unknown key",
        ),
        (
            "[feeds.p]\ntransport = 'sftp'\nremote_dir = '/in'\n[feeds.p.sftp]\nhost = 'h'\n"
            "username = 'u'\nkey_file = 'k'\nknown_hosts = 'kh'\nconnect_timeout = 0\n",
            "feeds.p.sftp.connect_timeout: must be a number of seconds",
        ),
    ],
)
def test_delivery_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text), environ={})
