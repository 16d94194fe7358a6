"""File-level problems: each stops the run with exit 1, a message naming the file and the
position, a stable code, and the store untouched."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import dump_store, invoke, run_json

from deltasync.errors import ExtractError
from deltasync.source.fullparse import read_records

GOOD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<users>\n'
    "<user><primary_id>A1</primary_id><last_name>Müller</last_name></user>\n"
    "<user><primary_id>B2</primary_id><last_name>O'Brien</last_name></user>\n</users>\n"
)
RELAXED = {"mandatory": "none"}
"""GOOD's records carry only what these file-level tests need."""


def zipped(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def encrypted(name: str, data: bytes) -> bytes:
    """A zip whose member is marked encrypted (ZipCrypto), as `zip -e` writes it.

    zipfile cannot encrypt, so this sets the flag bit in the local and central headers.
    """
    content = bytearray(zipped({name: data}, zipfile.ZIP_STORED))
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = content.index(signature)
        content[start + flags_at] |= 0x1
    return bytes(content)


def twice(name: str, first: bytes, second: bytes) -> bytes:
    """A zip holding two members of the same name (zip -u, or two tools writing one zip)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns: "Duplicate name"
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(name, first)
            archive.writestr(name, second)
    return buffer.getvalue()


CORPUS: dict[str, tuple[str, bytes, str]] = {
    # name: (file name, content, expected text in the message)
    "file-not-utf8": (
        "cp1252.xml",
        GOOD.replace("ü", "\u00fc").encode("cp1252"),
        f"not UTF-8 at byte offset {GOOD.index('ü')} (bytes fc",
    ),
    "file-bom": ("bom.xml", b"\xef\xbb\xbf" + GOOD.encode(), "byte-order mark"),
    "file-empty": ("empty.xml", b"", "the file is empty"),
    "file-no-users": (
        "nousers.xml",
        b'<?xml version="1.0" encoding="UTF-8"?>\n<users>\n</users>\n',
        "holds no <user> records",
    ),
    # Between records: no record owns it (inside one it is char-forbidden, a record finding).
    "xml-char": (
        "control.xml",
        GOOD.replace("</user>\n<user>", "</user>\n\x01<user>").encode(),
        "line 4, column 1: PCDATA invalid Char value 1 (U+0001 is a character XML 1.0 forbids",
    ),
    "xml-malformed": ("amp.xml", GOOD.replace("O'Brien", "O&Brien").encode(), "line 4, column"),
    "xml-truncated": ("cut.xml", GOOD.encode()[:150], "ends too early"),
    "xml-entity": (
        "xxe.xml",
        (
            b'<?xml version="1.0"?>\n<!DOCTYPE users [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
            b"<users><user><primary_id>A</primary_id><note>&x;</note></user></users>\n"
        ),
        "entity reference &x; is not allowed",
    ),
    "zip-corrupt": ("bad.zip", zipped({"a.xml": GOOD.encode()})[:60], "not a readable zip"),
    "zip-no-xml": ("noxml.zip", zipped({"readme.txt": b"hello"}), "holds no .xml file"),
    "zip-unsafe-name": ("evil.zip", zipped({"../../etc/users.xml": GOOD.encode()}), "unsafe name"),
    "zip-encrypted": (
        "locked.zip",
        encrypted("users.xml", GOOD.encode()),
        "!users.xml: the zip member is encrypted; Alma cannot read it either: zip the "
        "extract without a password",
    ),
    "zip-duplicate-name": (
        "twice.zip",
        twice("users.xml", GOOD.encode(), GOOD.replace("A1", "C3").encode()),
        ": the zip file holds two members named 'users.xml'; only one of them could be "
        "read: zip the extract again with distinct names",
    ),
    "zip-too-large": (
        "bomb.zip",
        zipped({"a.xml": GOOD.encode() + b" " * 5_000_000}),
        "possible zip bomb",
    ),
    "file-corrupt": (
        "bad.xml.gz",
        gzip.compress(GOOD.encode())[:-12] + b"\x00" * 4 + gzip.compress(GOOD.encode())[-8:],
        "corrupt or truncated",
    ),
}


@pytest.mark.parametrize("code", sorted(CORPUS))
def test_each_bad_file_has_its_code_and_changes_nothing(
    code: str, db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(db_url, checks=RELAXED)
    good = tmp_path / "good.xml"
    good.write_text(GOOD, encoding="utf-8")
    run_json(config, str(good))
    before = dump_store(db_url)
    name, content, message = CORPUS[code]
    bad = tmp_path / name
    bad.write_bytes(content)

    with pytest.raises(ExtractError) as caught:
        list(read_records(bad))
    assert caught.value.code == code

    result = invoke(config, "run", str(bad))
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {bad}"), result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert dump_store(db_url) == before


def test_entities_are_never_read_or_expanded(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    bomb = tmp_path / "laughs.xml"
    lines = ['<?xml version="1.0"?>', "<!DOCTYPE users [", '<!ENTITY l0 "hahahahahahahahaha">']
    lines += [f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10)]
    lines += [
        f'<!ENTITY s SYSTEM "file://{secret}">',
        "]>",
        "<users><user><primary_id>A</primary_id><note>&l9;&s;</note></user></users>",
    ]
    bomb.write_text("\n".join(lines) + "\n")  # a billion laughs, and a local file
    with pytest.raises(ExtractError) as caught:
        list(read_records(bomb))
    assert caught.value.code == "xml-entity"
    assert "TOP-SECRET" not in str(caught.value)


def test_cp1252_feed_is_transcoded_on_purpose(
    sqlite_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(sqlite_url, feed={"encoding": "cp1252"}, checks=RELAXED)
    legacy = tmp_path / "legacy.xml"
    legacy.write_bytes(GOOD.replace("UTF-8", "windows-1252").encode("cp1252"))
    result = run_json(config, str(legacy))
    assert result["counts"]["new"] == 2
    shown = invoke(config, "show", "A1")
    assert "<last_name>Müller</last_name>" in shown.stdout


PROBE = """
import resource, sys
from pathlib import Path
from deltasync.errors import ExtractError
from deltasync.source.fullparse import read_records
try:
    count = sum(1 for _ in read_records(Path(sys.argv[1])))
    code = "ok"
except ExtractError as exc:
    code = exc.code
print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _probe(path: Path) -> tuple[str, int]:
    """Read ``path`` in a fresh process: the error code and the peak RSS in KiB."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,  # a parser that opened the FIFO below would block here forever
    ).stdout.split()
    return out[0], int(out[1])


def test_xxe_and_entity_expansion_read_no_file_and_use_no_memory(tmp_path: Path) -> None:
    good = tmp_path / "good.xml"
    good.write_text(GOOD, encoding="utf-8")
    # Opening a FIFO for reading blocks until someone writes: reading it would hang the probe.
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    laughs = ['<!ENTITY l0 "hahahahahahahahahahahahahahahahahahahahahahahahahahahahahaha">']
    laughs += [f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 13)]
    hostile = {
        "xxe": f'<!ENTITY s SYSTEM "file://{fifo}">',
        "xxe-parameter": f'<!ENTITY % p SYSTEM "file://{fifo}"> %p;',
        "laughs": "\n".join(laughs),  # 10^12 "ha"s if expanded
    }
    use = {"xxe": "&s;", "xxe-parameter": "x", "laughs": "&l12;"}
    _code, baseline = _probe(good)
    for name, declarations in hostile.items():
        path = tmp_path / f"{name}.xml"
        path.write_text(
            f'<?xml version="1.0"?>\n<!DOCTYPE users [\n{declarations}\n]>\n<users><user>'
            f"<primary_id>A</primary_id><last_name>{use[name]}</last_name></user></users>\n"
        )
        code, peak = _probe(path)
        # A parameter entity is declared but never loaded, so nothing is lost: the record reads.
        assert code == ("ok" if name == "xxe-parameter" else "xml-entity"), (name, code)
        assert (peak - baseline) / 1024 < 8, (name, baseline, peak)
