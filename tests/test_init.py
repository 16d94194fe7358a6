"""`deltasync init`: a working, commented configuration from the packaged template."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner
from helpers import invoke

from deltasync import scaffold
from deltasync.cli import cli
from deltasync.config import load

ROOT = Path(__file__).resolve().parent.parent


def init(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["init", *args], catch_exceptions=True)
    return result.exit_code, result.output


def test_the_repository_example_is_the_template_rendered_with_the_defaults() -> None:
    # One source: edit deltasync/templates/config.toml, then write config.toml from it:
    #   deltasync init --dir /tmp/x && cp /tmp/x/config.toml config.toml
    assert (ROOT / "config.toml").read_text(encoding="utf-8") == scaffold.render(scaffold.Options())


def test_init_writes_the_config_and_its_folders_and_says_what_next(tmp_path: Path) -> None:
    site = tmp_path / "site"
    code, output = init("--dir", str(site))
    assert code == 0, output
    config = site / "config.toml"
    assert config.read_text(encoding="utf-8") == (ROOT / "config.toml").read_text("utf-8")
    for folder in ("incoming", "var", "var/outbox/patrons"):
        assert stat.S_IMODE((site / folder).stat().st_mode) == 0o700, folder
    assert not (site / "keys").exists()
    lines = output.splitlines()
    assert lines[0] == f"wrote {config}"
    assert lines[2] == "next steps:"
    assert lines[3] == (
        f"  1. Put the SIS extract (a full export in Alma user XML: .xml, .xml.gz or .zip) in "
        f"{site / 'incoming'}/ as patrons-<date>.xml; `run` takes the newest."
    )
    assert f"  3. Check everything, changing nothing: deltasync --config {config} doctor" in lines
    loaded = load(config, environ={})
    assert loaded.state_url == f"sqlite:///{site / 'var' / 'deltasync.db'}"
    assert loaded.feed("patrons").outbox == site / "var" / "outbox" / "patrons"
    # The written config works: a first status of its empty store.
    assert invoke(config, "status").exit_code == 0

    before = config.read_bytes()
    code, output = init("--dir", str(site))
    assert code == 1
    assert output == f"Error: {config}: already exists; init never overwrites a configuration\n"
    assert config.read_bytes() == before


def test_init_for_sftp_and_the_alma_api(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "deltasync.toml"
    result = CliRunner().invoke(
        cli,
        ["--config", str(config), "init", "--feed", "students", "--sftp", "127.0.0.1:2222"]
        + ["--alma-api"],
    )
    assert result.exit_code == 0, result.output
    feed = load(config, environ={}).feed("students")
    assert feed.delivery is not None and feed.delivery.sftp is not None
    assert (feed.delivery.sftp.host, feed.delivery.sftp.port) == ("127.0.0.1", 2222)
    assert feed.delivery.sftp.key_file == tmp_path / "etc" / "keys" / "id_ed25519"
    assert feed.delivery.confirm == "alma-api"
    assert stat.S_IMODE((tmp_path / "etc" / "keys").stat().st_mode) == 0o700
    known_hosts = tmp_path / "etc" / "keys" / "known_hosts"
    assert f"     ssh-keyscan -p 2222 127.0.0.1 >> {known_hosts}" in result.output.splitlines()
    assert "export ALMA_API_KEY=..." in result.output
    assert "(the folder the SIS integration profile reads)" in result.output


def test_init_refuses_what_cannot_work(tmp_path: Path) -> None:
    code, output = init("--dir", str(tmp_path), "--alma-api")
    assert (code, output) == (
        1,
        "Error: --alma-api confirms delivered batches: use it with --sftp HOST\n",
    )
    code, output = init("--dir", str(tmp_path), "--feed", "no spaces")
    assert code == 1
    assert output == "Error: --feed 'no spaces': a feed name is 1-64 letters, digits, '_' or '-'\n"
    code, output = init("--dir", str(tmp_path), "--sftp", "host:99999")
    assert code == 2 and "99999 is not a TCP port" in output
    both = invoke(tmp_path / "c.toml", "init", "--dir", str(tmp_path))
    assert both.exit_code == 2 and "give --dir or --config, not both" in both.output
    assert list(tmp_path.iterdir()) == []  # nothing written by any of them
