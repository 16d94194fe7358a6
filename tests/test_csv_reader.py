"""The CSV reader: rows read off the bytes as Python's csv module reads the text, and a row
unchanged by its bytes never decoded or mapped, whatever its line ends and quoting."""

from __future__ import annotations

import codecs
import csv
import io
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from csvworld import COLUMNS, MAPPING, count_renders, csv_config, rows_of, simulate, write_csv
from helpers import invoke, read_delta, run_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from deltasync.checks.settings import CheckSettings
from deltasync.mapping import spec
from deltasync.mapping.render import Renderer, Where
from deltasync.source import csvfile
from deltasync.source.csvfile import CsvExtract

ConfigWriter = Callable[..., Path]
WIDE = ["A", "B", "C", "D"]
WIDE_MAPPING = """\
[user]
primary_id = "{{ A }}"
first_name = "{{ B }}"
middle_name = "{{ C }}"
last_name = "{{ D }}"
"""


def _text(
    header: list[str], rows: list[list[str]], quoting: int, end: str, blanks: list[int]
) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=quoting, lineterminator=end)
    writer.writerow(header)
    for number, values in enumerate(rows):
        if number in blanks:
            buffer.write(end)  # a blank line between rows
        writer.writerow(values)
    return buffer.getvalue()


def _expected(text: str, mapping: spec.Mapping, name: str) -> list[tuple[int, bytes, list[str]]]:
    """What Python's csv module reads in the text: (start line, record, finding codes)."""
    renderer = Renderer(mapping, CheckSettings())
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    header = next(reader)
    found = []
    row = 0
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        if not values:
            continue
        row += 1
        codes = []
        if len(values) != len(header):
            # A row the csv writer left unreadable as the header's columns (a bare CR in an
            # unquoted value ends its line): held back, rendered as far as it goes.
            codes.append("row-bad")
            values = (values + [""] * len(header))[: len(header)]
        user, findings = renderer.render(
            dict(zip(header, values, strict=True)), Where(name, start, row)
        )
        found.append((start, etree.tostring(user), codes + [f.code for f in findings]))
    return found


VALUE = st.text(alphabet=list('ab é,"\n\r\t;'), max_size=8)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(VALUE, min_size=4, max_size=4), min_size=1, max_size=12),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    end=st.sampled_from(["\n", "\r\n", "\r"]),
    blanks=st.lists(st.integers(0, 12), max_size=3),
    bom=st.booleans(),
    block=st.sampled_from([7, 64, 1 << 20]),
)
def test_rows_are_read_as_pythons_csv_module_reads_them(
    rows: list[list[str]],
    quoting: int,
    end: str,
    blanks: list[int],
    bom: bool,
    block: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each row has a primary ID: a record without one is the pass's business, not the reader's.
    rows = [[f"p{n}", *values[1:]] for n, values in enumerate(rows)]
    text = _text(WIDE, rows, quoting, end, blanks)
    data = (codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8")
    path = tmp_path / "rows.csv"
    path.write_bytes(data)
    mapping_path = tmp_path / "mapping.toml"
    mapping_path.write_text(WIDE_MAPPING, encoding="utf-8")
    mapping = spec.load(mapping_path)
    # Small blocks put line ends (a CR LF too) across the reads of the file.
    monkeypatch.setattr(csvfile, "BLOCK", block)
    records = list(CsvExtract(path, mapping, CheckSettings()).records())
    got = [(r.line, etree.tostring(r.element), [f.code for f in r.findings]) for r in records]
    assert got == _expected(text, mapping, str(path))
    # Every readable row has a digest (tier 1 tomorrow); a bad row never has one.
    assert all(
        (r.raw_digest is None) == ("row-bad" in codes)
        for r, (_, _, codes) in zip(records, got, strict=True)
    )
    # The same rows, however written, have one digest each per way of writing them: equal
    # bytes, equal digest; the digest never merges two different rows.
    by_digest: dict[bytes, bytes] = {}
    for record, (_, element, _) in zip(records, got, strict=True):
        if record.raw_digest is not None:
            assert by_digest.setdefault(record.raw_digest, element) == element


def test_line_ends_and_quoting_are_formatting_and_unchanged_bytes_are_never_mapped(
    sqlite_url: str, tmp_path: Path, write_config: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = csv_config(write_config, sqlite_url)
    people = rows_of(simulate(25, 1)[0])
    data = run_json(
        config, str(write_csv(tmp_path / "d0.csv", people, quoting=csv.QUOTE_MINIMAL, end="\n"))
    )
    assert data["counts"]["new"] == 25
    sent = read_delta(Path(data["batch"]["file"]))
    rendered = count_renders(monkeypatch)
    # Every value quoted, CR LF, shuffled: every row is read in full, none is a change.
    shuffled = list(people)
    random.Random(3).shuffle(shuffled)
    data = run_json(
        config, str(write_csv(tmp_path / "d1.csv", shuffled, quoting=csv.QUOTE_ALL, end="\r\n"))
    )
    assert data["counts"]["unchanged"] == 25 and data["batch"] is None
    assert len(rendered) == 25
    # Old Macintosh line ends (CR only; every value quoted, or the csv module's writer would
    # leave an LF inside a value bare), in another order: a row's line end is not part of
    # its bytes, so every row is known unchanged without being mapped.
    rendered.clear()
    data = run_json(
        config, str(write_csv(tmp_path / "d2.csv", people, quoting=csv.QUOTE_ALL, end="\r"))
    )
    assert data["counts"]["unchanged"] == 25 and data["batch"] is None
    assert rendered == []
    # A change in a CR-only file is a change, and it is the record the LF file gave.
    changed = [list(r) for r in people]
    changed[4][3] = "Renamed"
    data = run_json(
        config, str(write_csv(tmp_path / "d3.csv", changed, quoting=csv.QUOTE_ALL, end="\r"))
    )
    assert data["counts"]["changed"] == 1 and len(rendered) == 1
    (key,) = read_delta(Path(data["batch"]["file"]))
    assert key == changed[4][0].lower()
    assert sent[key].findtext("last_name") != "Renamed"


def test_bytes_not_in_the_encoding_are_named_by_their_line_far_into_the_file(
    sqlite_url: str, tmp_path: Path, write_config: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvfile, "BLOCK", 4096)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        MAPPING.read_text(encoding="utf-8").replace('encoding = "cp1252"', 'encoding = "utf-8"'),
        encoding="utf-8",
    )
    assert 'encoding = "utf-8"' in mapping.read_text(encoding="utf-8")
    config = csv_config(write_config, sqlite_url, mapping=str(mapping))
    people = rows_of(simulate(600, 1)[0])  # many blocks of the reader
    text = _text(COLUMNS, people, csv.QUOTE_MINIMAL, "\n", [])
    data = bytearray(text.encode("utf-8"))
    lines = text.split("\n")
    bad_line = 521
    offset = sum(len(line.encode("utf-8")) + 1 for line in lines[: bad_line - 1])
    assert offset > 10 * csvfile.BLOCK
    data[offset] = 0xFF  # a byte no UTF-8 text holds, first on its line
    extract = tmp_path / "bad.csv"
    extract.write_bytes(bytes(data))
    result = invoke(config, "run", str(extract))
    assert result.exit_code == 1, result.output
    assert f"bytes that are not utf-8 on line {bad_line};" in result.output
    assert "Traceback" not in result.output
