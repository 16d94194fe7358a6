"""Secrets stay secret: no password in a message, no API key sent in clear text or elsewhere."""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from almasim import AlmaApiServer, AlmaSimulator, FolderSource
from helpers import invoke

API_KEY = "l7xx-secret-api-key"
PASSWORD = "hunter2-secret"
PGPASS_HINT = "keep secrets out of config files (PostgreSQL reads PGPASSWORD or ~/.pgpass)"


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config_with(tmp_path: Path, url: str, *, alma: dict[str, str] | None = None) -> Path:
    lines = ["[state]", f"url = {json.dumps(url)}", "[feeds.patrons]", 'timezone = "UTC"']
    if alma is not None:
        lines += ["[alma]"] + [f"{key} = {json.dumps(value)}" for key, value in alma.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- the state store's URL ---------------------------------------------------------------------


@pytest.mark.parametrize("query", [f"password={PASSWORD}", f"sslmode=disable&PASSWORD={PASSWORD}"])
def test_a_password_in_the_state_url_query_is_refused_like_one_before_the_host(
    tmp_path: Path, query: str
) -> None:
    config = config_with(tmp_path, f"postgresql+psycopg://deltasync@127.0.0.1:1/ds?{query}")
    result = invoke(config, "status")
    assert result.exit_code == 1
    assert result.output == f"Error: {config}: state.url: holds a password; {PGPASS_HINT}\n"


def test_store_errors_mask_passwords_of_a_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment may carry a password (it is no file); messages still never show it.
    port = free_port()
    url = f"postgresql+psycopg://deltasync:{PASSWORD}@127.0.0.1:{port}/ds?password={PASSWORD}"
    monkeypatch.setenv("DELTASYNC_STATE_URL", url)
    result = invoke(config_with(tmp_path, "sqlite:///unused.db"), "status")
    assert result.exit_code == 1
    assert PASSWORD not in result.output
    assert result.output.startswith(
        "Error: cannot open state store "
        f"postgresql+psycopg://deltasync:***@127.0.0.1:{port}/ds?password=***: "
    )


def test_an_unparsable_state_url_is_quoted_without_its_password(tmp_path: Path) -> None:
    config = config_with(tmp_path, f"deltasync:{PASSWORD}@dbhost/deltasync")
    result = invoke(config, "status")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {config}: state.url: not a database URL: 'deltasync:***@dbhost/deltasync'\n"
    )


# -- alma.base_url -----------------------------------------------------------------------------


def alma(base_url: str) -> dict[str, str]:
    return {"base_url": base_url, "api_key_env": "ALMA_API_KEY"}


@pytest.mark.parametrize(
    "base_url",
    ["http://api-na.hosted.exlibrisgroup.com", "http://10.0.0.5:8080", "http://127.0.0.1.nip.io"],
)
def test_a_plain_http_alma_url_is_refused_outside_this_machine(
    tmp_path: Path, base_url: str
) -> None:
    config = config_with(tmp_path, "sqlite:///state.db", alma=alma(base_url))
    result = invoke(config, "status")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {config}: alma.base_url: http:// would send the API key in clear text; use "
        "https:// (http is accepted only for this machine: localhost, 127.0.0.0/8, ::1)\n"
    )


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api-na.hosted.exlibrisgroup.com",
        "http://127.0.0.1:8080",
        "http://127.8.9.10",
        "http://[::1]:8080",
        "http://LocalHost:8080/",
    ],
)
def test_https_and_loopback_alma_urls_are_accepted(tmp_path: Path, base_url: str) -> None:
    config = config_with(tmp_path, "sqlite:///state.db", alma=alma(base_url))
    result = invoke(config, "status")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "base_url",
    [
        f"https://api-na.hosted.exlibrisgroup.com/?apikey={API_KEY}",
        f"https://user:{API_KEY}@api-na.hosted.exlibrisgroup.com",
    ],
)
def test_an_alma_url_carrying_credentials_is_refused_without_quoting_them(
    tmp_path: Path, base_url: str
) -> None:
    config = config_with(tmp_path, "sqlite:///state.db", alma=alma(base_url))
    result = invoke(config, "status")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {config}: alma.base_url: only the API's address, such as "
        "'https://api-na.hosted.exlibrisgroup.com': no user, password, query or fragment "
        "(the API key comes from the variable api_key_env names)\n"
    )


# -- redirects of the Alma API -----------------------------------------------------------------


@pytest.fixture
def alma_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, AlmaSimulator, AlmaApiServer]]:
    """A feed confirmed through the simulated Jobs API, delivering into a folder Alma reads."""
    inbox = tmp_path / "alma-inbox"
    inbox.mkdir()
    simulator = AlmaSimulator(FolderSource(inbox))
    monkeypatch.setenv("ALMA_API_KEY", API_KEY)
    with AlmaApiServer(simulator, API_KEY) as api:
        config = tmp_path / "config.toml"
        config.write_text(
            "\n".join(
                [
                    "[state]",
                    f'url = "sqlite:///{tmp_path / "state.db"}"',
                    "[feeds.patrons]",
                    'timezone = "UTC"',
                    'transport = "dir"',
                    f"remote_dir = {json.dumps(str(inbox))}",
                    'confirm = "alma-api"',
                    f'job_id = "{simulator.job_id}"',
                    "[alma]",
                    f'base_url = "{api.base_url}"',
                    'api_key_env = "ALMA_API_KEY"',
                ]
            )
            + "\n"
        )
        yield config, simulator, api


def deliver_and_pick_up(
    config: Path, simulator: AlmaSimulator, make_extract: Callable[..., Path]
) -> Path:
    extract = make_extract(0, 20)
    first = invoke(config, "run", str(extract))
    assert first.exit_code == 0, first.output
    assert "ledger: batch 1 uploaded" in first.stdout
    simulator.run_job(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
    return extract


def test_a_redirect_to_another_origin_is_refused_and_gets_no_key(
    alma_world: tuple[Path, AlmaSimulator, AlmaApiServer],
    make_extract: Callable[..., Path],
) -> None:
    config, simulator, api = alma_world
    extract = deliver_and_pick_up(config, simulator, make_extract)
    with AlmaApiServer(simulator, API_KEY) as elsewhere:
        api.redirect_next(1, elsewhere.base_url)
        result = invoke(config, "run", str(extract))
        assert elsewhere.requests == []  # the key never left for the other origin
    assert result.exit_code == 4, result.output
    path = f"conf/jobs/{simulator.job_id}/instances"
    assert (
        f"  ATTENTION: batch 1: Alma API {path}: HTTP 302 redirect to {elsewhere.base_url}, "
        f"which is not alma.base_url's {api.base_url}; refusing to send the API key there"
    ) in result.stdout.splitlines()
    assert len(api.requests) == 1  # refused at once, not retried
    status = json.loads(invoke(config, "status", "--json").stdout)
    assert status["batches_by_status"] == {"picked_up": 1}


def test_a_redirect_within_the_origin_is_followed(
    alma_world: tuple[Path, AlmaSimulator, AlmaApiServer],
    make_extract: Callable[..., Path],
) -> None:
    config, simulator, api = alma_world
    extract = deliver_and_pick_up(config, simulator, make_extract)
    api.redirect_next(1, api.base_url)
    result = invoke(config, "run", str(extract))
    assert result.exit_code == 0, result.output
    status = json.loads(invoke(config, "status", "--json").stdout)
    assert status["batches_by_status"] == {"confirmed": 1}
