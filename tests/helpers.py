"""Test helpers: read delta files, validate them, dump a store, drive the CLI."""

from __future__ import annotations

import json
import zipfile
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from lxml import etree
from sqlalchemy import MetaData, create_engine, select

from deltasync.cli import cli
from deltasync.source.xml import _SliceReader


@cache
def alma_schema() -> etree.XMLSchema:
    """Alma's users schema (the 2021 copy shipped in deltasync/schema)."""
    path = resources.files("deltasync.schema") / "rest_users.xsd"
    return etree.XMLSchema(etree.parse(str(path)))


def read_delta(path: Path, *, validate: bool = True) -> dict[str, etree._Element]:
    """The records of a delta zip keyed by primary ID; every part checked against the schema."""
    records: dict[str, etree._Element] = {}
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        for name in archive.namelist():
            data = archive.read(name)
            assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>'), name
            root = etree.fromstring(data)
            assert root.tag == "users"
            if validate:
                alma_schema().assertValid(root)
            for user in root.iter("user"):
                primary_id = user.findtext("primary_id")
                assert primary_id is not None
                assert primary_id not in records, f"{primary_id} twice in {path.name}"
                records[primary_id] = user
    return records


LOCK_TABLES = {"run_lease", "run", "run_held_back"}
"""The lock's own record (each feed's fencing token): every run that takes the lock bumps it,
one that fails too, like the lock file beside a SQLite store; and the run log, which records
failed runs too. They hold no data of the snapshot or the ledger."""


def dump_store(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every data table, for comparing a store before and after."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {
                name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
                for name, table in meta.tables.items()
                if name not in LOCK_TABLES
            }
    finally:
        engine.dispose()


def listing(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its content."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def invoke(config: Path, *args: str) -> Result:
    """Run the CLI in-process with ``--config``; exceptions are caught, never raised."""
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=True)


def run_json(config: Path, *args: str, exit_code: int = 0) -> dict[str, Any]:
    """``deltasync run --json ARGS``; asserts the exit code (success) and returns the JSON."""
    result = invoke(config, "run", "--json", *args)
    assert result.exit_code == exit_code, result.output + repr(result.exception)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


ADDRESS = (
    '<address preferred="true"><line1>1 Main St</line1><city>Urbana</city>'
    "<state_province>IL</state_province><postal_code>61801</postal_code>"
    "<address_types><address_type>home</address_type></address_types></address>"
)
EMAIL = (
    '<email preferred="true"><email_address>{id}@example.edu</email_address>'
    "<email_types><email_type>personal</email_type></email_types></email>"
)


def record(primary_id: str, *, name: str = "Doe", barcode: str | None = None) -> str:
    """A record that passes every default check (CARLI I-Share's mandatory fields)."""
    return (
        "<user>\n"
        "  <record_type>PUBLIC</record_type>\n"
        f"  <primary_id>{primary_id}</primary_id>\n"
        f"  <last_name>{name}</last_name>\n"
        "  <user_group>UGRD</user_group>\n"
        "  <expiry_date>2032-06-30Z</expiry_date>\n"
        "  <purge_date>2033-06-30Z</purge_date>\n"
        "  <account_type>EXTERNAL</account_type>\n"
        "  <status>ACTIVE</status>\n"
        f"  <contact_info><addresses>{ADDRESS}</addresses>"
        f"<emails>{EMAIL.format(id=primary_id)}</emails></contact_info>\n"
        "  <user_identifiers><user_identifier><id_type>BARCODE</id_type>"
        f"<value>{barcode or 'BC-' + primary_id}</value></user_identifier></user_identifiers>\n"
        "</user>"
    )


def users(*records: str) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>\n<users>\n' + "\n".join(records) + "\n</users>\n"


def write(folder: Path, name: str, content: str) -> Path:
    """Write ``content`` (an extract, a list of IDs) to ``folder/name`` as UTF-8."""
    path = folder / name
    path.write_text(content, encoding="utf-8")
    return path


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """A list that grows by one each time ``owner.name`` (a method of a class, a function of
    a module) is called, which it still does."""
    calls: list[int] = []
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one each time the fast reader parses a record (one read in
    full; a record read by its digest is never parsed)."""
    return count_calls(monkeypatch, _SliceReader, "parse")
