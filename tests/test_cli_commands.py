"""The command table: each command's module is imported only when that command is asked for.

``deltasync.cli.app.COMMANDS`` is the only place that says which module registers which command;
a command it leaves out would not be found, and one it names wrongly would not load.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import click
from click.testing import CliRunner

import deltasync.cli
from deltasync.cli import cli
from deltasync.cli.app import COMMANDS


def _registered() -> set[tuple[str, str]]:
    """(module, top-level command) for every command and subcommand the modules register."""
    for module in pkgutil.iter_modules(deltasync.cli.__path__):
        importlib.import_module(f"deltasync.cli.{module.name}")
    found: set[tuple[str, str]] = set()

    def walk(top: str, command: click.Command) -> None:
        assert command.callback is not None, top
        found.add((command.callback.__module__.removeprefix("deltasync.cli."), top))
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                walk(top, sub)

    for name, command in cli.commands.items():
        walk(name, command)
    return found


def test_the_table_names_every_command_each_module_registers() -> None:
    table = {(module, name) for module, names in COMMANDS.items() for name in names}
    assert _registered() == table


def test_every_command_and_subcommand_has_help() -> None:
    runner = CliRunner()
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None, name
        subs = command.list_commands(ctx) if isinstance(command, click.Group) else []
        for args in [[name], *([name, sub] for sub in subs)]:
            result = runner.invoke(cli, [*args, "--help"])
            assert result.exit_code == 0, (args, result.output)
            assert result.output.startswith(f"Usage: cli {' '.join(args)} ")


def _fresh(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_command_imports_only_its_own_module() -> None:
    loaded = _fresh(
        "import sys, click; from deltasync.cli import cli; "
        "cli.get_command(click.Context(cli), 'status'); "
        "print(sorted(m for m in sys.modules if m.startswith('deltasync.cli.')))"
    )
    assert loaded == str(
        [
            "deltasync.cli.app",
            "deltasync.cli.audit",
            "deltasync.cli.feeds",
            "deltasync.cli.logs",
            "deltasync.cli.startup",  # the entry point's collector hold: gc alone
        ]
    )


def test_the_run_command_leaves_jinja2_to_feeds_with_a_mapping() -> None:
    # CSV and SQL sources render through Jinja2 (source/factory.py); Alma XML does not.
    loaded = _fresh(
        "import sys, click; from deltasync.cli import cli; "
        "cli.get_command(click.Context(cli), 'run'); print('jinja2' in sys.modules)"
    )
    assert loaded == "False"


def test_an_unknown_command_is_still_matched_against_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deltasync", "stat"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.endswith("Error: No such command 'stat'. Did you mean 'status'?\n")
