"""The fast reader (byte scanner, slices parsed on demand) reads exactly what the full parse
reads, or steps aside: never a different record, never a record the full parse refuses."""

from __future__ import annotations

import gzip
import random
import re
import zipfile
from pathlib import Path

import generate_extract
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltasync.canonical import Recipe
from deltasync.errors import ExtractError
from deltasync.source.scanner import StepAside
from deltasync.source.xml import XmlExtract

RECIPE = Recipe(("status_date",))


def read(path: Path, *, fast: bool, encoding: str = "utf-8") -> list[tuple[bytes, int, str]]:
    """Each record's payload, line and source; the element is asked for while current."""
    extract = XmlExtract(path, encoding=encoding)
    return [(RECIPE.payload(r.element), r.line, r.source) for r in extract.records(fast=fast)]


def outcome(path: Path, *, encoding: str = "utf-8") -> tuple[object, object]:
    """(fast result or 'aside', full result or the error code)."""
    try:
        fast: object = read(path, fast=True, encoding=encoding)
    except StepAside:
        fast = "aside"
    try:
        full: object = read(path, fast=False, encoding=encoding)
    except ExtractError as exc:
        full = exc.code
    return fast, full


def assert_exact(path: Path, *, encoding: str = "utf-8") -> bool:
    """The fast reader agrees with the full one, or stepped aside; True when it was used."""
    fast, full = outcome(path, encoding=encoding)
    if fast == "aside":
        return False
    assert isinstance(full, list), f"fast read a file the full parse refuses ({full})"
    assert fast == full
    return True


def test_generated_extracts_in_every_container(tmp_path: Path) -> None:
    plain = tmp_path / "a.xml"
    generate_extract.write_extract(plain, patrons=200, day=2, shuffle=True)
    crlf = tmp_path / "b.xml"
    generate_extract.write_extract(crlf, patrons=200, day=2, crlf=True, root="userRecords")
    gz = tmp_path / "c.xml.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    zipped = tmp_path / "d.zip"
    generate_extract.write_extract(zipped, patrons=200, day=2, members=3)
    for path in (plain, crlf, gz, zipped):
        assert assert_exact(path), path


def test_the_real_sample_files_take_the_fast_path() -> None:
    samples = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "samples"
    for path in sorted(samples.glob("*.xml")):
        assert assert_exact(path), path


def test_pages_given_back_behind_the_scanner_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mapped file's pages are given back every RELEASE_BYTES (32 MiB): here after every
    # record, so records, digests, lines and a later locate() all read released pages again.
    import deltasync.source.xml as xml

    path = tmp_path / "a.xml"
    generate_extract.write_extract(path, patrons=200, day=2, shuffle=True)

    def everything() -> tuple[list[tuple[bytes | None, bytes | None, int]], dict[bytes, list[str]]]:
        extract = XmlExtract(path, encoding="utf-8")
        records = [(r.raw, r.raw_digest, r.line) for r in extract.records()]
        late = {digest for _raw, digest, _line in records[-3:] if digest is not None}
        return records, extract.locate(late)

    kept = everything()
    monkeypatch.setattr(xml, "RELEASE_BYTES", 1)
    assert everything() == kept
    assert len(kept[0]) == len(generate_extract.present_ids(patrons=200, day=2))
    assert len(kept[1]) == 3


def test_lines_are_right_beyond_65535(tmp_path: Path) -> None:
    # libxml2 skips line 65535 in the numbers it reports; the fast reader counts bytes.
    path = tmp_path / "long.xml"
    filler = "<!-- -->\n" * 65540
    path.write_text(f"<users>\n{filler}<user><primary_id>A</primary_id></user>\n</users>\n")
    [(_payload, line, _source)] = read(path, fast=True)
    assert line == 65542
    assert path.read_text().splitlines()[line - 1].startswith("<user>")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "doctype",
            '<!DOCTYPE users [<!ENTITY e "x">]><users><user><primary_id>A&e;</primary_id>'
            "</user></users>",
        ),
        (
            "default namespace",
            '<users xmlns="urn:x"><user><primary_id>A</primary_id></user></users>',
        ),
        (
            "prefixed user",
            '<users xmlns:p="urn:x"><p:user><primary_id>A</primary_id></p:user></users>',
        ),
        ("text at root", "<users>hello<user><primary_id>A</primary_id></user></users>"),
        ("other element", "<users><head/><user><primary_id>A</primary_id></user></users>"),
        (
            "nested user",
            "<users><user><primary_id>A</primary_id><n><user>B</user></n></user></users>",
        ),
        (
            "end tag in CDATA",
            "<users><user><primary_id>A</primary_id><n><![CDATA[</user>]]></n></user></users>",
        ),
        (
            "end tag in comment",
            "<users><user><primary_id>A</primary_id><!-- </user> --></user></users>",
        ),
        (
            "spaced end tag",
            "<users><user><primary_id>A</primary_id></user ><user><primary_id>B"
            "</primary_id></user></users>",
        ),
        ("empty user", "<users><user/></users>"),
        ("truncated", "<users><user><primary_id>A</primary_id></user><user><prim"),
        ("no root end", "<users><user><primary_id>A</primary_id></user>\n"),
        ("bad comment", "<users><user><primary_id>A</primary_id></user><!-- a -- b --></users>"),
        ("trailing text", "<users><user><primary_id>A</primary_id></user></users>junk"),
        ("undefined entity", "<users><user><primary_id>A&nbsp;</primary_id></user></users>"),
        ("forbidden char", "<users>\x01<user><primary_id>A</primary_id></user></users>"),
        ("byte-order mark", "\ufeff<users><user><primary_id>A</primary_id></user></users>"),
    ],
)
def test_what_the_scanner_cannot_vouch_for_it_leaves_to_the_full_parse(
    tmp_path: Path, name: str, text: str
) -> None:
    path = tmp_path / "odd.xml"
    path.write_text(text, encoding="utf-8")
    fast, full = outcome(path)
    assert fast == "aside", (name, fast, full)


def test_a_record_cut_right_is_read_fast_whatever_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "ok.xml"
    path.write_text(
        "<users><user><primary_id>A</primary_id><n><user/></n><c><![CDATA[x < y]]></c></user>"
        "<!-- <user><primary_id>Z</primary_id></user> --><user ><primary_id>B</primary_id>"
        "</user></users>"
    )
    assert assert_exact(path)


def test_not_utf8_and_empty_files_step_aside(tmp_path: Path) -> None:
    latin = tmp_path / "latin.xml"
    latin.write_bytes("<users><user><last_name>Müller</last_name></user></users>".encode("cp1252"))
    assert outcome(latin) == ("aside", "file-not-utf8")
    # Read on purpose as Windows-1252, the same file takes the fast path.
    assert assert_exact(latin, encoding="cp1252")
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    assert outcome(empty) == ("aside", "file-empty")


# -- random spellings of one population ---------------------------------------------------------

NUMERIC = re.compile(r">([^<]+)<")


def _respell(text: str, rng: random.Random) -> str:
    """Write some characters of element text as character references instead."""

    def one(match: re.Match[str]) -> str:
        value = match.group(1)
        # Not inside a reference that is there already (&amp;): that would break it.
        if rng.random() < 0.2 and value and not value.isspace() and "&" not in value:
            i = rng.randrange(len(value))
            char = value[i]
            if char not in "&<>":
                value = f"{value[:i]}&#{ord(char)};{value[i + 1 :]}"
        return f">{value}<"

    return NUMERIC.sub(one, text)


def _reformat(record: str, rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.2:
        record = re.sub(r">\s+<", "><", record)  # no indentation
    elif choice < 0.35:
        record = record.replace("\n  ", "\n\t")
    if rng.random() < 0.1:
        record = _respell(record, rng)
    if rng.random() < 0.05:
        record = record.replace("<last_name>", "<last_name><![CDATA[", 1).replace(
            "</last_name>", "]]></last_name>", 1
        )
    if rng.random() < 0.05:
        record = record.replace('preferred="true"', "preferred='true'")
    if rng.random() < 0.03:
        record = record.replace("<user>", "<user  >", 1)
    return record


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10_000),
    crlf=st.booleans(),
    root=st.sampled_from(["users", "userRecords", "export"]),
    root_attributes=st.sampled_from(
        ["", ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"', ' xmlns="urn:x"']
    ),
    declaration=st.sampled_from(
        ["", '<?xml version="1.0" encoding="UTF-8"?>\n', "<?xml version='1.0'?>\n"]
    ),
    between=st.sampled_from(["", "<!-- c -->", "<!-- <user>x</user> -->", "<?pi data?>", "\n\n"]),
    doctype=st.booleans(),
    container=st.sampled_from(["xml", "gz", "zip"]),
)
def test_random_spellings_read_alike_both_ways(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    crlf: bool,
    root: str,
    root_attributes: str,
    declaration: str,
    between: str,
    doctype: bool,
    container: str,
) -> None:
    rng = random.Random(seed)
    records = [
        _reformat(generate_extract.user_xml(n, rng.randrange(3), day=1), rng)
        for n in rng.sample(range(40), 12)
    ]
    separator = rng.choice(["\n", "\n" + between + "\n", between])
    body = separator.join(records)
    text = (
        f"{declaration}{'<!DOCTYPE ' + root + '>' if doctype else ''}"
        f"<{root}{root_attributes}>\n{body}\n</{root}>\n"
    )
    if crlf:
        text = text.replace("\n", "\r\n")
    folder = tmp_path_factory.mktemp("spell")
    path = folder / f"extract.{container}"
    data = text.encode("utf-8")
    if container == "gz":
        path.write_bytes(gzip.compress(data))
    elif container == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("a.xml", data)
    else:
        path.write_bytes(data)
    used = assert_exact(path)
    # What the scanner must leave alone, it leaves alone; the rest it reads itself.
    must_step_aside = doctype or 'xmlns="' in root_attributes
    assert used == (not must_step_aside)
