"""Reading extracts: any root, three container formats, safe parsing, flat memory."""

from __future__ import annotations

import gzip
import subprocess
import sys
import zipfile
from pathlib import Path

import generate_extract
import pytest

from deltasync.errors import ExtractError
from deltasync.source.fullparse import read_records

SAMPLES = Path(__file__).resolve().parent / "data" / "samples"
"""Real files from public repositories, kept in the repository so the test runs on any clone."""


def ids(path: Path) -> list[str]:
    return [r.element.findtext("primary_id") or "" for r in read_records(path)]


def test_any_root_element(tmp_path: Path) -> None:
    for root in ("users", "userRecords", "export"):
        path = tmp_path / f"{root}.xml"
        path.write_text(
            f"<{root}><user><primary_id>A</primary_id></user>"
            f"<user><primary_id>B</primary_id></user></{root}>"
        )
        assert ids(path) == ["A", "B"]


def test_real_sample_files() -> None:
    assert ids(SAMPLES / "mit_student_patrons.xml") == [
        "STUDENT_KRB_NAME@MIT.EDU",
        "2STUDENT_KRB_NAME@MIT.EDU",
    ]
    assert ids(SAMPLES / "mit_staff_patrons.xml") == [
        "STAFF_KRB_NAME@MIT.EDU",
        "2STAFF_KRB_NAME@MIT.EDU",
    ]
    assert ids(SAMPLES / "alma_user_v2_example.xml") == ["BRIANDWO"]


def test_gzip_and_multi_member_zip(tmp_path: Path) -> None:
    xml = tmp_path / "a.xml"
    generate_extract.write_extract(xml, patrons=30, day=0)
    expected = ids(xml)
    gz = tmp_path / "a.xml.gz"
    gz.write_bytes(gzip.compress(xml.read_bytes()))
    assert ids(gz) == expected
    zipped = tmp_path / "a.zip"
    generate_extract.write_extract(zipped, patrons=30, day=0, members=3)
    with zipfile.ZipFile(zipped) as archive:
        assert len(archive.namelist()) == 3
    assert sorted(ids(zipped)) == sorted(expected)


def test_records_carry_their_line(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(
        "<users>\n<user>\n<primary_id>A</primary_id>\n</user>\n\n<user>"
        "<primary_id>B</primary_id></user>\n</users>\n"
    )
    assert [r.where for r in read_records(path)] == [f"{path}, line 2", f"{path}, line 6"]


def test_malformed_xml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_text("<users>\n<user><primary_id>A</primary_id></user>\n<user><x></user>\n")
    with pytest.raises(ExtractError, match=rf"^{path}: line 3, column \d+: .*mismatch"):
        list(read_records(path))


def test_zip_without_xml(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ExtractError, match="holds no .xml file"):
        list(read_records(path))


def test_external_entities_are_never_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    path = tmp_path / "xxe.xml"
    path.write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE users [<!ENTITY x SYSTEM "file://{secret}">]>\n'
        "<users><user><primary_id>A</primary_id><last_name>&x;</last_name></user></users>\n"
    )
    with pytest.raises(ExtractError) as caught:
        list(read_records(path))
    assert str(caught.value) == (
        f"{path}: line 3: entity reference &x; is not allowed; deltasync never expands DTD "
        "entities (write the character itself or a numeric reference)"
    )
    assert "TOP-SECRET" not in str(caught.value)


def test_memory_stays_flat_as_the_extract_grows(tmp_path: Path) -> None:
    """Peak RSS of reading 20,000 records is close to that of 2,000 (libxml2 memory included)."""
    small, large = tmp_path / "small.xml", tmp_path / "large.xml"
    generate_extract.write_extract(small, patrons=2000, day=0)
    generate_extract.write_extract(large, patrons=20000, day=0)
    probe = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from deltasync.source.fullparse import read_records\n"
        "count = sum(1 for _ in read_records(Path(sys.argv[1])))\n"
        "print(count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )

    def peak_kib(path: Path) -> tuple[int, int]:
        out = subprocess.run(
            [sys.executable, "-c", probe, str(path)], check=True, capture_output=True, text=True
        ).stdout.split()
        return int(out[0]), int(out[1])

    (small_count, small_peak), (large_count, large_peak) = peak_kib(small), peak_kib(large)
    assert (small_count, large_count) == (2000, 20000)
    growth_mib = (large_peak - small_peak) / 1024
    file_growth_mib = (large.stat().st_size - small.stat().st_size) / 2**20
    assert file_growth_mib > 30
    # Holding the records would grow memory by several times the file growth.
    assert growth_mib < 10, (small_peak, large_peak)
