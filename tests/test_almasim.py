"""The Alma simulator behaves as ALMA.md describes Alma's SIS synchronize job and Jobs API."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from almasim import AlmaApiServer, AlmaSimulator, FolderSource, JobInstance

DAY1 = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY1 + timedelta(days=2)
API_KEY = "l8xx-test-key"


def user(
    primary_id: str | None,
    *,
    identifiers: dict[str, str] | None = None,
    **fields: str,
) -> str:
    """One ``<user>`` record; keyword fields become leaf elements."""
    parts = [f"<primary_id>{primary_id}</primary_id>"] if primary_id is not None else []
    parts += [f"<{tag}>{text}</{tag}>" for tag, text in fields.items()]
    if identifiers:
        parts.append("<user_identifiers>")
        for id_type, value in identifiers.items():
            parts.append(
                f"<user_identifier><id_type>{id_type}</id_type><value>{value}</value>"
                "</user_identifier>"
            )
        parts.append("</user_identifiers>")
    return "<user>\n  " + "\n  ".join(parts) + "\n</user>"


def write_zip(
    folder: Path, name: str, *parts: list[str], mtime: float | None = None, root: str = "users"
) -> Path:
    """A zip ``name`` whose XML parts each hold the given records."""
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        for number, records in enumerate(parts, 1):
            body = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>\n{"".join(records)}</{root}>'
            archive.writestr(f"part{number:02d}.xml", body.encode("utf-8"))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def counts(instance: JobInstance | None) -> dict[str, int]:
    assert instance is not None
    return dict(instance.counts)


def messages(instance: JobInstance | None) -> list[tuple[str, str]]:
    assert instance is not None
    return [(e.get("user_id", ""), e["description"]) for e in instance.events]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "sis"
    folder.mkdir()
    return folder


@pytest.fixture
def sim(inbox: Path) -> AlmaSimulator:
    return AlmaSimulator(FolderSource(inbox))


def test_swap_all_replaces_the_whole_record(inbox: Path, sim: AlmaSimulator) -> None:
    write_zip(inbox, "a.zip", [user("P1", last_name="Drew", job_description="Library")])
    sim.run_job(DAY1)
    first = sim.user("P1")
    assert first is not None and first.fields["job_description"] == "Library"

    write_zip(inbox, "b.zip", [user("P1", last_name="Drew", expiry_date="2027-06-30Z")])
    sim.run_job(DAY2)

    stored = sim.user("P1")
    assert stored is not None
    assert "job_description" not in stored.fields
    assert stored.fields["expiry_date"] == "2027-06-30Z"
    assert stored.element().find("job_description") is None
    assert stored.external_id == "SIS" and stored.account_type == "EXTERNAL"


def test_canonical_form_ignores_indentation(inbox: Path, sim: AlmaSimulator) -> None:
    write_zip(inbox, "a.zip", [user("P1", last_name="Drew")])
    sim.run_job(DAY1)
    write_zip(
        inbox, "b.zip", ["<user><primary_id>P1</primary_id><last_name>Drew</last_name></user>"]
    )
    assert counts(sim.run_job(DAY2))["unchanged"] == 1
    assert sim.snapshot() == {
        "p1": b"<user><primary_id>P1</primary_id><last_name>Drew</last_name></user>"
    }


def test_counters_created_updated_unchanged(inbox: Path, sim: AlmaSimulator) -> None:
    write_zip(inbox, "a.zip", [user("A", status="ACTIVE"), user("B", status="ACTIVE")])
    assert counts(sim.run_job(DAY1)) == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 0}

    write_zip(
        inbox,
        "b.zip",
        [user("A", status="ACTIVE"), user("B", status="INACTIVE"), user("C", status="ACTIVE")],
    )
    instance = sim.run_job(DAY2)
    assert counts(instance) == {"created": 1, "updated": 1, "unchanged": 1, "rejected": 0}
    assert instance is not None and instance.status == "COMPLETED_SUCCESS"
    values = {c["type"]["value"]: c["value"] for c in instance.to_json()["counter"]}
    assert values["C.jobs.users.sis.total"] == "3"
    assert all(isinstance(v, str) for v in values.values())


def test_second_occurrence_in_one_file_is_rejected(inbox: Path, sim: AlmaSimulator) -> None:
    write_zip(inbox, "a.zip", [user("P1", last_name="First"), user("P1", last_name="Second")])
    instance = sim.run_job(DAY1)

    assert messages(instance) == [
        (
            "P1",
            "Identifier of type PRIMARYIDENTIFIER and value P1 is already taken "
            "AcrossInstitution in this feed",
        )
    ]
    assert counts(instance) == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 1}
    assert instance is not None and instance.status == "COMPLETED_WITH_ERRORS"
    stored = sim.user("P1")
    assert stored is not None and stored.fields["last_name"] == "First"
    assert instance.events[0]["type"]["value"] == "USER_REJECTED"
    assert instance.events[0]["file"] == "a.zip"


def test_second_occurrence_across_zips_of_one_run_ignores_case(
    inbox: Path, sim: AlmaSimulator
) -> None:
    write_zip(inbox, "a.zip", [user("ab12", last_name="First")], mtime=1000)
    write_zip(inbox, "b.zip", [user("AB12", last_name="Second")], mtime=2000)
    instance = sim.run_job(DAY1)

    assert messages(instance) == [
        (
            "AB12",
            "Identifier of type PRIMARYIDENTIFIER and value AB12 is already taken "
            "AcrossInstitution in this feed",
        )
    ]
    assert instance is not None and instance.events[0]["file"] == "b.zip"
    stored = sim.user("Ab12")
    assert stored is not None and stored.fields["last_name"] == "First"
    assert list(sim.users) == ["ab12"]


def test_same_patron_in_different_runs_is_fine(inbox: Path, sim: AlmaSimulator) -> None:
    write_zip(inbox, "a.zip", [user("P1", last_name="One")])
    sim.run_job(DAY1)
    write_zip(inbox, "b.zip", [user("p1", last_name="Two")])
    instance = sim.run_job(DAY2)

    assert counts(instance) == {"created": 0, "updated": 1, "unchanged": 0, "rejected": 0}
    stored = sim.user("P1")
    assert stored is not None and stored.fields["last_name"] == "Two"
    assert sim.rejections == []


def test_internal_user_is_rejected(inbox: Path, sim: AlmaSimulator) -> None:
    sim.add_internal_user("STAFF1")
    before = sim.snapshot()
    write_zip(
        inbox,
        "a.zip",
        [
            user("staff1", last_name="Sis"),
            user("NEW1", account_type="INTERNAL"),
            user("NEW2", account_type="EXTERNAL"),
        ],
    )
    instance = sim.run_job(DAY1)

    assert messages(instance) == [
        ("staff1", "User is not external"),
        ("NEW1", "User is not external"),
    ]
    assert sim.snapshot()["staff1"] == before["staff1"]
    assert sim.user("NEW1") is None and sim.user("NEW2") is not None


def test_identifier_taken_by_another_user(inbox: Path, sim: AlmaSimulator) -> None:
    write_zip(inbox, "a.zip", [user("A", identifiers={"BARCODE": "111"})])
    sim.run_job(DAY1)
    write_zip(inbox, "b.zip", [user("B", identifiers={"BARCODE": "111"})])
    instance = sim.run_job(DAY2)

    assert messages(instance) == [
        ("B", "Identifier of type BARCODE and value 111 is already taken by another user")
    ]
    assert sim.user("B") is None

    # Once A gives the barcode up, B may take it.
    write_zip(inbox, "c.zip", [user("A", identifiers={"BARCODE": "222"})], mtime=1000)
    write_zip(inbox, "d.zip", [user("B", identifiers={"BARCODE": "111"})], mtime=2000)
    assert counts(sim.run_job(DAY3))["created"] == 1


def test_identifier_match_mode(inbox: Path) -> None:
    sim = AlmaSimulator(FolderSource(inbox), match_id="identifier:UNIV_ID")
    write_zip(inbox, "a.zip", [user("jdoe", identifiers={"UNIV_ID": "U1"}, last_name="Doe")])
    sim.run_job(DAY1)
    write_zip(
        inbox,
        "b.zip",
        [
            user("jdoe2", identifiers={"UNIV_ID": "U1"}, last_name="Doe"),
            user("jroe", identifiers={"UNIV_ID": "U1"}),
            user("nouid", identifiers={"BARCODE": "9"}),
        ],
    )
    instance = sim.run_job(DAY2)

    assert list(sim.users) == ["U1"]
    stored = sim.user("U1")
    assert stored is not None and stored.fields["primary_id"] == "jdoe2"
    assert sim.user("u1") is None
    assert messages(instance) == [
        (
            "U1",
            "Identifier of type UNIV_ID and value U1 is already taken "
            "AcrossInstitution in this feed",
        ),
        ("nouid", "missing match ID: no user identifier UNIV_ID"),
    ]
    assert counts(instance)["updated"] == 1


def test_at_most_twenty_files_per_run_oldest_first(inbox: Path, sim: AlmaSimulator) -> None:
    # Names run against mtimes so that the order can only come from the mtimes.
    for n in range(25):
        write_zip(inbox, f"f{n:02d}.zip", [user(f"P{n}")], mtime=10_000 - n)
    oldest_first = [f"f{n:02d}.zip" for n in reversed(range(25))]

    first = sim.run_job(DAY1)
    assert first is not None and first.files == oldest_first[:20]
    assert counts(first)["created"] == 20
    assert sorted(n for n in sim.files() if n.endswith(".zip")) == sorted(oldest_first[20:])

    second = sim.run_job(DAY2)
    assert second is not None and second.files == oldest_first[20:]
    assert len(sim.users) == 25
    assert all(name.endswith(".zip.handled") for name in sim.files())


def test_handled_renames_and_ignored_names(inbox: Path, sim: AlmaSimulator) -> None:
    write_zip(inbox, "a.zip", [user("P1")])
    write_zip(inbox, ".b.zip.tmp", [user("P2")])
    write_zip(inbox, ".c.zip", [user("P3")])
    (inbox / "d.xml").write_text("<users/>", encoding="utf-8")
    write_zip(inbox, "e.zip.handled", [user("P4")])

    instance = sim.run_job(DAY1)

    assert instance is not None and instance.files == ["a.zip"]
    assert sim.files() == [".b.zip.tmp", ".c.zip", "a.zip.handled", "d.xml", "e.zip.handled"]
    assert list(sim.users) == ["p1"]


def test_no_files_completes_with_no_bulks(sim: AlmaSimulator) -> None:
    instance = sim.run_job(DAY1)
    assert instance is not None and instance.status == "COMPLETED_NO_BULKS"
    assert instance.files == []


def test_failed_run_changes_nothing(inbox: Path, sim: AlmaSimulator) -> None:
    write_zip(inbox, "a.zip", [user("P1")])
    instance = sim.run_job(DAY1, outcome="failed")

    assert instance is not None and instance.status == "FAILED"
    assert sim.files() == ["a.zip"] and sim.users == {}
    assert sim.history == [instance]
    again = sim.run_job(DAY2)
    assert again is not None and again.files == ["a.zip"] and sim.user("P1") is not None


def test_aborted_run_renames_without_loading(inbox: Path, sim: AlmaSimulator) -> None:
    write_zip(inbox, "a.zip", [user("P1")])
    instance = sim.run_job(DAY1, outcome="aborted")

    assert instance is not None and instance.status == "ABORTED_BY_SYSTEM"
    assert instance.files == ["a.zip"]
    assert sim.files() == ["a.zip.handled"] and sim.users == {}
    assert sum(counts(instance).values()) == 0


def test_not_run_records_nothing(inbox: Path, sim: AlmaSimulator) -> None:
    write_zip(inbox, "a.zip", [user("P1")])
    assert sim.run_job(DAY1, outcome="not_run") is None
    assert sim.history == [] and sim.files() == ["a.zip"] and sim.users == {}
    with pytest.raises(ValueError, match="outcome"):
        sim.run_job(DAY1, outcome="crashed")


def damaged_zip(damage: str, folder: Path) -> bytes:
    """A zip broken the way transfers break them."""
    data = write_zip(folder, "sound.zip", [user("P9", last_name="Lost")]).read_bytes()
    (folder / "sound.zip").unlink()
    if damage == "truncated":
        return data[: len(data) // 2]
    if damage == "text":
        return b"P9,Lost\n"
    # Flip a byte of the stored member so its CRC no longer matches.
    start = data.index(b"Lost")
    return data[:start] + b"Lust" + data[start + 4 :]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "Could not open zip file"),
        ("text", "Could not open zip file"),
        ("crc", "part01.xml: could not read from zip"),
    ],
)
def test_corrupt_zip_is_rejected_whole_and_handled(
    inbox: Path, sim: AlmaSimulator, damage: str, message: str
) -> None:
    content = damaged_zip(damage, inbox)
    (inbox / "bad.zip").write_bytes(content)
    os.utime(inbox / "bad.zip", (1000, 1000))
    write_zip(inbox, "good.zip", [user("P1")], mtime=2000)
    instance = sim.run_job(DAY1)

    assert instance is not None and instance.status == "COMPLETED_WITH_ERRORS"
    assert [e["type"]["value"] for e in instance.events] == ["FILE_REJECTED"]
    assert instance.events[0]["file"] == "bad.zip"
    assert message in instance.events[0]["description"]
    assert sim.files() == ["bad.zip.handled", "good.zip.handled"]
    assert list(sim.users) == ["p1"]


def test_bad_part_rejects_the_whole_zip(inbox: Path, sim: AlmaSimulator) -> None:
    path = inbox / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("part01.xml", f"<users>{user('P1')}</users>")
        archive.writestr("part02.xml", "<users><user><primary_id>P2</primary_id></users>")
    path2 = inbox / "b.zip"
    with zipfile.ZipFile(path2, "w") as archive:
        archive.writestr(
            "part01.xml",
            "<users><user><last_name>M\xfcller</last_name></user></users>".encode("cp1252"),
        )
    instance = sim.run_job(DAY1)

    assert sim.users == {}
    descriptions = {e["file"]: e["description"] for e in instance.events} if instance else {}
    assert descriptions["a.zip"].startswith("Could not parse file part02.xml")
    assert descriptions["b.zip"] == "part01.xml: Invalid byte 1 of 1-byte UTF-8 sequence."
    assert sim.files() == ["a.zip.handled", "b.zip.handled"]


def test_too_many_parts_rejects_the_zip(inbox: Path, sim: AlmaSimulator) -> None:
    write_zip(inbox, "big.zip", *[[user(f"P{n}")] for n in range(51)])
    instance = sim.run_job(DAY1)

    assert sim.users == {}
    assert instance is not None
    assert instance.events[0]["description"] == "The zip file holds 51 XML files; at most 50"


def test_any_root_and_empty_elements_load(inbox: Path, sim: AlmaSimulator) -> None:
    record = user("STAFF@MIT.EDU", status_date="", middle_name="")
    write_zip(inbox, "a.zip", [record], root="userRecords")
    assert counts(sim.run_job(DAY1))["created"] == 1
    stored = sim.user("staff@mit.edu")
    assert stored is not None and stored.fields["status_date"] == ""


# The Jobs API over HTTP.


@pytest.fixture
def server(inbox: Path, sim: AlmaSimulator) -> Iterator[AlmaApiServer]:
    write_zip(inbox, "a.zip", [user("P1"), user("P1")])
    sim.run_job(DAY1)
    write_zip(inbox, "b.zip", [user("P2")])
    sim.run_job(DAY2)
    sim.run_job(DAY3, outcome="failed")
    with AlmaApiServer(sim, API_KEY) as api:
        yield api


def get(
    server: AlmaApiServer, path: str, *, key: str | None = API_KEY, header: bool = False
) -> tuple[int, dict[str, Any]]:
    url = server.base_url + path
    headers = {"Accept": "application/json"}
    if key is not None and header:
        headers["Authorization"] = f"apikey {key}"
    elif key is not None:
        url += ("&" if "?" in url else "?") + f"apikey={key}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


JOBS = "/almaws/v1/conf/jobs/S20000/instances"


def test_api_requires_a_key(server: AlmaApiServer) -> None:
    for key in (None, "wrong"):
        status, body = get(server, JOBS, key=key)
        assert status == 401
        assert body["errorsExist"] is True
        assert body["errorList"]["error"][0]["errorCode"] == "UNAUTHORIZED"
    assert get(server, JOBS)[0] == 200
    assert get(server, JOBS, header=True)[0] == 200


def test_api_lists_instances_newest_first(server: AlmaApiServer, sim: AlmaSimulator) -> None:
    status, body = get(server, JOBS + "?limit=2")
    assert status == 200 and body["total_record_count"] == 3
    listed = body["job_instance"]
    assert [i["id"] for i in listed] == [sim.history[2].id, sim.history[1].id]
    assert [i["status"]["value"] for i in listed] == ["FAILED", "COMPLETED_SUCCESS"]
    assert listed[0]["submit_time"] == "2025-03-05T06:00:00.000Z"
    assert listed[0]["end_time"] == "2025-03-05T06:00:01.000Z"
    assert listed[0]["progress"] == 100

    _, rest = get(server, JOBS + "?limit=2&offset=2")
    assert [i["id"] for i in rest["job_instance"]] == [sim.history[0].id]
    _, beyond = get(server, JOBS + "?offset=3")
    assert beyond == {"total_record_count": 3}


def test_api_filters_by_submit_date(server: AlmaApiServer, sim: AlmaSimulator) -> None:
    _, body = get(server, JOBS + "?submit_date_from=2025-03-04")
    assert body["total_record_count"] == 2
    assert {i["id"] for i in body["job_instance"]} == {sim.history[1].id, sim.history[2].id}
    _, none = get(server, JOBS + "?submit_date_from=2025-03-06")
    assert none == {"total_record_count": 0}
    assert get(server, JOBS + "?submit_date_from=March")[0] == 400


def test_api_one_instance_and_its_events(server: AlmaApiServer, sim: AlmaSimulator) -> None:
    first = sim.history[0]
    status, body = get(server, f"{JOBS}/{first.id}")
    assert status == 200 and body["id"] == first.id
    assert body["status"] == {"value": "COMPLETED_WITH_ERRORS", "desc": "Completed with Errors"}
    counters = {c["type"]["value"]: c["value"] for c in body["counter"]}
    assert counters["C.jobs.users.sis.rejected"] == "1"
    assert body["job_info"]["name"] == "Users SYNCHRONIZE using profile SIS"

    _, events = get(server, f"{JOBS}/{first.id}/events?limit=10&offset=0")
    assert events["total_record_count"] == 1
    assert events["event"][0]["user_id"] == "P1"
    assert events["event"][0]["type"]["value"] == "USER_REJECTED"
    assert "AcrossInstitution in this feed" in events["event"][0]["description"]


def test_api_unknown_job_or_instance(server: AlmaApiServer) -> None:
    status, body = get(server, "/almaws/v1/conf/jobs/S99999/instances")
    assert status == 400 and body["errorList"]["error"][0]["errorCode"] == "UNKNOWN_JOB"
    status, body = get(server, f"{JOBS}/123")
    assert status == 400 and body["errorsExist"] is True


def test_api_fail_next_then_recovers(server: AlmaApiServer) -> None:
    server.fail_next(2)
    assert get(server, JOBS)[0] == 500
    assert get(server, JOBS)[0] == 500
    assert get(server, JOBS)[0] == 200
    server.fail_next(1, status=429)
    assert get(server, JOBS, key=None)[0] == 429
    assert len(server.requests) == 4
