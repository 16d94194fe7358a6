"""`deltasync map`: rows through the feed's mapping, storing nothing; mapping and config errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from csvworld import COLUMNS, MAPPING, row, write_csv
from helpers import invoke, run_json
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


RULES = """
[user]
primary_id = "{{ ID }}"
last_name = "{{ NAME }}"
first_name = "{{ FIRST }}"

[[email]]
email_address = "{{ MAIL1 }}"
email_type = "school"
[[email]]
email_address = "{{ MAIL2 }}"
email_type = "personal"
preferred = "{{ 'true' if MAIL2 else 'false' }}"

[[phone]]
phone_number = "{{ PHONE }}"

[[identifier]]
id_type = "UNIV_ID"
value = "{{ ID | lower }}"
[[identifier]]
id_type = "BARCODE"
value = "{{ CARD }}"

[[statistic]]
statistic_category = "{{ STAT }}"
"""


def test_the_rules_a_librarian_expects_without_writing_them(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    mapping = tmp_path / "rules.toml"
    mapping.write_text(RULES, encoding="utf-8")
    config = write_config(
        f"sqlite:///{tmp_path / 'state.db'}",
        feed={"source": "csv", "mapping": str(mapping), "timezone": "UTC"},
    )
    path = tmp_path / "in.csv"
    path.write_text(
        "ID,NAME,FIRST,MAIL1,MAIL2,PHONE,CARD,STAT\n"
        "A1,  Doe  ,   ,a@x.edu,home@x.com,,B1,\n"
        "B2,Roe,Rita,b@x.edu,,555,,\n",
        encoding="utf-8",
    )
    result = invoke(config, "map", str(path))
    assert result.exit_code == 0, result.output
    first, second = etree.fromstring(result.stdout.encode())
    assert first.findtext("last_name") == "Doe"  # trimmed
    assert first.find("first_name") is None  # only spaces: empty, left out
    emails = first.findall("contact_info/emails/email")
    # The mapping sets preferred: no default; the first email gets no attribute.
    assert [e.get("preferred") for e in emails] == [None, "true"]
    assert first.find("contact_info/phones") is None  # main value empty: segment left out
    # The UNIV_ID equal to the primary ID (whatever its case) is left out.
    assert [i.findtext("id_type") for i in first.iter("user_identifier")] == ["BARCODE"]
    assert first.find("user_statistics") is None  # an empty statistic is never sent
    # The segment that set preferred is left out (no MAIL2): the first kept email is it.
    assert [e.get("preferred") for e in second.findall("contact_info/emails/email")] == ["true"]
    [phone] = second.findall("contact_info/phones/phone")
    assert phone.get("preferred") == "true"  # the first kept phone
    assert second.find("user_identifiers") is None


def test_history_and_show_work_on_mapped_records(config: Path, tmp_path: Path) -> None:
    run_json(config, str(write_csv(tmp_path / "d0.csv", [row(1, 0), row(2, 0)])))
    run_json(config, str(write_csv(tmp_path / "d1.csv", [row(1, 1), row(2, 0)])))
    history = invoke(config, "history", "s000001", "--format", "json")
    assert history.exit_code == 0, history.output
    versions = json.loads(history.stdout)
    assert len(versions) == 2
    shown = invoke(config, "show", "s000001")
    assert shown.exit_code == 0, shown.output
    assert etree.fromstring(shown.stdout.encode()).findtext("last_name") == row(1, 1)[3]
