"""``deltasync init``: a commented, working configuration and the folders it names.

The configuration is rendered from the template shipped inside the package
(``deltasync/templates/config.toml``, found with importlib.resources, so it works from an
installed wheel). The template is TOML with two additions: ``{{feed}}``, ``{{host}}`` and
``{{port}}`` are filled in, and lines ``#% if sftp`` / ``#% if alma`` / ``#% else`` /
``#% end`` keep or drop the lines between them. The repository's ``config.toml`` is the
template rendered with the defaults (a test holds them equal).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import config as configuration
from . import safefiles
from .errors import ConfigError

DEFAULT_FEED = "patrons"
CONFIG_MODE = 0o644
"""The configuration holds no secret (they come from the environment)."""
_MARKER = re.compile(r"^#% (if (?P<flag>\w+)|else|end)\s*$")


@dataclass(frozen=True)
class Options:
    """What ``init`` was asked for."""

    feed: str = DEFAULT_FEED
    sftp_host: str | None = None
    sftp_port: int = 22
    alma_api: bool = False


@dataclass(frozen=True)
class Created:
    """What ``init`` wrote, and what the person setting up should do next."""

    config: Path
    folders: list[Path]
    next_steps: list[str] = field(default_factory=list)


def template() -> str:
    """The packaged configuration template."""
    return (resources.files("deltasync") / "templates" / "config.toml").read_text("utf-8")


def render(options: Options) -> str:
    """The configuration ``init`` writes for ``options``."""
    flags = {"sftp": options.sftp_host is not None, "alma": options.alma_api}
    keep: list[bool] = []
    lines = []
    for line in template().splitlines():
        marker = _MARKER.match(line)
        if marker is None:
            if all(keep):
                lines.append(line)
        elif marker["flag"]:
            keep.append(flags[marker["flag"]])
        elif line.startswith("#% else"):
            keep[-1] = not keep[-1]
        else:
            keep.pop()
    text = "\n".join(lines) + "\n"
    values = {
        "feed": options.feed,
        "host": options.sftp_host or "",
        "port": str(options.sftp_port),
    }
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m[1]], text)


def create(path: Path, options: Options) -> Created:
    """Write the configuration to ``path`` (never over an existing file) and make its folders.

    The folders (incoming, the state store's, the outbox, and keys/ for SFTP) are created
    0700; one that exists is left as it is.
    """
    if options.alma_api and options.sftp_host is None:
        raise ConfigError("--alma-api confirms delivered batches: use it with --sftp HOST")
    if not configuration.FEED_NAME.match(options.feed):
        raise ConfigError(
            f"--feed {options.feed!r}: a feed name is 1-64 letters, digits, '_' or '-'"
        )
    path = path.absolute()
    text = render(options)
    # The result must be a configuration deltasync accepts: check before writing anything.
    configuration.parse(tomllib.loads(text), path, {})
    if path.exists() or path.is_symlink():
        raise ConfigError(f"{path}: already exists; init never overwrites a configuration")
    base = path.parent
    folders = [base / "incoming", base / "var", base / "var" / "outbox" / options.feed]
    if options.sftp_host is not None:
        folders.append(base / "keys")
    try:
        safefiles.make_dir(base)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, CONFIG_MODE)
    except FileExistsError:
        raise ConfigError(
            f"{path}: already exists; init never overwrites a configuration"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the configuration: {exc.strerror}") from exc
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    for folder in folders:
        try:
            safefiles.make_dir(folder)
        except OSError as exc:
            raise ConfigError(f"{folder}: cannot create: {exc.strerror}") from exc
    return Created(path, folders, _next_steps(path, options))


def _next_steps(path: Path, options: Options) -> list[str]:
    base, feed = path.parent, options.feed
    command = f"deltasync --config {path}"
    steps = [
        f"Put the SIS extract (a full export in Alma user XML: .xml, .xml.gz or .zip) in "
        f"{base / 'incoming'}/ as {feed}-<date>.xml; `run` takes the newest.",
    ]
    if options.sftp_host is not None:
        keys = base / "keys"
        port = options.sftp_port
        steps += [
            f"Make the SFTP key and give {keys / 'id_ed25519.pub'} to the server's "
            f"administrator:\n     ssh-keygen -t ed25519 -N '' -f {keys / 'id_ed25519'}",
            "Add the server's host key, and check its fingerprint with the administrator "
            "before you trust it:\n"
            f"     ssh-keyscan -p {port} {options.sftp_host} >> {keys / 'known_hosts'}\n"
            f"     ssh-keygen -lf {keys / 'known_hosts'}",
            f"Set username and remote_dir (the folder the SIS integration profile reads) in "
            f"{path}.",
        ]
    if options.alma_api:
        steps.append(
            f"Set job_id (the SIS synchronize job) in {path}, and put an API key with read "
            "access to Configuration in the environment: export ALMA_API_KEY=..."
        )
    steps += [
        f"Environment: export DELTASYNC_CONFIG={path} to leave out --config"
        + (
            "; DELTASYNC_SFTP_PASSPHRASE if you encrypt the key (and set passphrase_env)"
            if options.sftp_host is not None
            else ""
        )
        + "; PGPASSWORD if the store moves to PostgreSQL.",
        f"Check everything, changing nothing: {command} doctor",
        f"First run: {command} run   (or `baseline EXTRACT` when Alma already holds these "
        "patrons from full loads)",
    ]
    return steps
