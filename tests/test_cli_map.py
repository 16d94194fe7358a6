"""`deltasync map`: rows through the feed's mapping, storing nothing; mapping and config errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from csvworld import COLUMNS, MAPPING, row, write_csv
from helpers import invoke
from lxml import etree

ConfigWriter = Callable[..., Path]


@pytest.fixture
def config(tmp_path: Path, write_config: ConfigWriter) -> Path:
    return write_config(
        f"sqlite:///{tmp_path / 'state' / 'deltasync.db'}",
        feed={"source": "csv", "mapping": str(MAPPING), "timezone": "UTC"},
    )


def test_map_prints_the_records_as_xml_and_stores_nothing(config: Path, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [row(n, 0) for n in range(5)])
    result = invoke(config, "map", str(path), "--limit", "2")
    assert result.exit_code == 0, result.output
    root = etree.fromstring(result.stdout.encode())
    assert [u.findtext("primary_id") for u in root] == ["s000000", "s000001"]
    assert result.stderr == ""
    assert not (tmp_path / "state").exists()


def test_map_json_names_what_could_not_be_mapped(config: Path, tmp_path: Path) -> None:
    unknown = row(1, 0)
    unknown[COLUMNS.index("DEPT")] = "ZOOL"
    path = write_csv(tmp_path / "in.csv", [row(0, 0), unknown])
    result = invoke(config, "map", "--format", "json", str(path))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["where"] for d in data] == [f"{path}, line 2", f"{path}, line 4"]
    assert data[0]["user"]["primary_id"] == "s000000"
    [finding] = data[1]["findings"]
    assert finding["code"] == "map-code-unknown"
    assert finding["message"] == (
        "row 2, statistic[1].statistic_category (column DEPT): "
        "code 'ZOOL' is not in table 'departments'"
    )


def test_map_refuses_a_feed_without_a_mapping(tmp_path: Path, write_config: ConfigWriter) -> None:
    config = write_config(f"sqlite:///{tmp_path / 'state.db'}")
    path = write_csv(tmp_path / "in.csv", [row(0, 0)])
    result = invoke(config, "map", str(path))
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: feed 'patrons' has no mapping: `map` is for csv and sql sources\n"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("[user]", "[user]\nshoe_size = '{{ X }}'"),
            "user.shoe_size: not a field of Alma's <user> that a mapping fills",
        ),
        (
            ('last_name    = "{{ LAST }}"', 'last_name = "{{ LAST | }}"'),
            "user.last_name: not a valid Jinja2 expression: ",
        ),
        (('delimiter = ","', 'delimiter = ",,"'), "csv.delimiter: one character such as"),
        (('encoding = "cp1252"', 'encoding = "ebcdic"'), "csv.encoding: one of utf-8, cp1252"),
        (("[[phone]]", "[[phone]]\nfax = '1'"), "phone[1].fax: unknown key (allowed here: "),
    ],
)
def test_a_broken_mapping_is_one_line_naming_the_file_and_key(
    change: tuple[str, str], message: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    mapping = tmp_path / "mapping.toml"
    text = MAPPING.read_text(encoding="utf-8")
    assert change[0] in text
    mapping.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    config = write_config(
        f"sqlite:///{tmp_path / 'state.db'}",
        feed={"source": "csv", "mapping": str(mapping), "timezone": "UTC"},
    )
    path = write_csv(tmp_path / "in.csv", [row(0, 0)])
    result = invoke(config, "run", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {mapping}: {message}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_the_sandbox_refuses_what_an_expression_must_not_reach(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    mapping = tmp_path / "mapping.toml"
    text = MAPPING.read_text(encoding="utf-8").replace(
        'first_name   = "{{ PREF_FIRST or FIRST }}"',
        'first_name = "{{ FIRST.__class__.__mro__[1].__subclasses__() }}"',
    )
    mapping.write_text(text, encoding="utf-8")
    config = write_config(
        f"sqlite:///{tmp_path / 'state.db'}",
        feed={"source": "csv", "mapping": str(mapping), "timezone": "UTC"},
    )
    path = write_csv(tmp_path / "in.csv", [row(0, 0)])
    result = invoke(config, "run", "--json", str(path))
    assert result.exit_code == 4, result.output
    [finding] = json.loads(result.stdout)["checks"]["findings"]
    assert finding["code"] == "map-render-error"
    assert finding["message"].startswith("row 1, user.first_name (column FIRST): the expression")


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({"source": "csv"}, "feeds.patrons.mapping: a csv source needs a mapping file"),
        ({"source": "xls"}, "feeds.patrons.source: must be one of alma-xml, csv, sql"),
        (
            {"source": "alma-xml", "mapping": "m.toml"},
            "feeds.patrons.mapping: only csv and sql sources have a mapping",
        ),
        (
            {"source": "sql", "mapping": "m.toml", "extract": "x.csv"},
            "feeds.patrons.extract: a sql source reads its [sql] query, not a file",
        ),
    ],
)
def test_source_settings_are_checked(
    feed: dict[str, str], message: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = write_config(f"sqlite:///{tmp_path / 'state.db'}", feed=feed)
    result = invoke(config, "status")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {config}: {message}\n"
