"""Benchmark `deltasync run` against a bare lxml parse and csv-diff, on the same files.

One invocation measures, for each size given with ``--patrons``:

* a bare lxml ``iterparse`` (with ``clear()``, the flat-memory idiom) of every XML file: the
  floor any XML reader stands on;
* csv-diff (simonw) of day 0 against day 1 flattened to CSV (flattening not timed);
* ``deltasync run`` on day 0 (all new), day 1 (the given churn) and a reformat day (day 1's
  records re-indented and with their fields in another order: nothing may be sent), then two
  date-stamped days (every record's status_date the day of the extract, as many SIS templates
  write it: day 1's records dated the day before the run, nothing may be sent; then day 2's
  dated the run's day: the undated digest's steady state), and ``deltasync status`` alone
  (start-up cost), on SQLite and on PostgreSQL;
* ``deltasync run`` of a CSV feed (issue 11) on the very files csv-diff compares, day 0 and
  day 1, through a mapping of their columns (``csv_mapping``): its day 1 must beat csv-diff.

Every step is a separate process, timed (wall clock and CPU) by a small launcher that also
reports its peak resident set size from ``os.wait4``, so libxml2 and SQLite memory count too
(a PostgreSQL server's own memory does not). Each step runs ``--repeat`` times, interleaved;
the median time counts. The targets of issue 10 (scripts/bench_report.py) are ratios measured
in the same invocation, because the machine is shared. The whole result is written as JSON to
bench-out/ (and to stdout with ``--json``).
"""

from __future__ import annotations

import argparse
import compileall
import csv
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import bench_report
import generate_extract
from bench_report import BACKENDS, DAYS, MILLION, NOTHING_SENT
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
SEED = 1

ITERPARSE = """\
import sys
from lxml import etree
records = 0
for _, user in etree.iterparse(sys.argv[1], events=("end",), tag="user"):
    records += 1
    user.clear()
    while user.getprevious() is not None:
        del user.getparent()[0]
print(records)
"""


class BenchError(Exception):
    """A step could not be measured (a process failed or gave output the bench cannot read)."""


# --------------------------------------------------------------------------------------------
# Measuring one process
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sample:
    """One timed run of one process."""

    seconds: float
    cpu_seconds: float
    peak_rss_mb: float


# Linux keeps a process's peak RSS across exec, and a forked child starts with its parent's:
# a child of this (large) process would report at least this process's size. So each command
# is started by a small launcher that times it and writes its rusage (wait4) to a pipe.
LAUNCHER = """\
import json, os, sys, time
fd = int(sys.argv[1])
os.set_inheritable(fd, False)
started = time.monotonic()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.monotonic() - started
report = [seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss]
os.write(fd, json.dumps(report).encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(
    name: str, command: Sequence[str], *, env: dict[str, str] | None = None, log: Path
) -> tuple[Sample, str]:
    """Run ``command`` to the end; its timing and its stdout. Stderr goes to ``log``."""
    report_read, report_write = os.pipe()
    with log.open("ab") as err, os.fdopen(report_read, "rb") as report:
        err.write(f"== {name}\n".encode())
        err.flush()
        process = subprocess.Popen(
            [sys.executable, "-S", "-c", LAUNCHER, str(report_write), *command],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            pass_fds=(report_write,),
        )
        os.close(report_write)
        output, _ = process.communicate()
        reported = report.read()
    if process.returncode != 0 or not reported:
        own = log.read_text(errors="replace").rsplit(f"== {name}\n", 1)[-1]
        tail = own.strip().splitlines()[-3:]
        raise BenchError(f"{name} exited {process.returncode} (log {log}): " + " | ".join(tail))
    seconds, cpu, max_rss_kib = json.loads(reported)
    sample = Sample(round(seconds, 3), round(cpu, 3), round(max_rss_kib * 1024 / 1e6, 1))
    return sample, output.decode()


@dataclasses.dataclass
class Step:
    """Every sample of one step at one size, and what its runs reported."""

    samples: list[Sample] = dataclasses.field(default_factory=list)
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def peak_rss_mb(self) -> float:
        # A ceiling is the target: the worst run counts, not the typical one.
        return max(s.peak_rss_mb for s in self.samples)

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(statistics.median(s.cpu_seconds for s in self.samples), 3),
            "peak_rss_mb": self.peak_rss_mb,
            "runs": [dataclasses.asdict(s) for s in self.samples],
            "result": self.result,
            "problems": self.problems,
        }


# --------------------------------------------------------------------------------------------
# Files: generated once per set of parameters and kept in bench-out/extracts/
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Files:
    """The extracts of one size, their CSV flattening, and what the generator says changed."""

    folder: Path
    patrons: int
    rates: dict[str, float]

    today: dt.date = dataclasses.field(default_factory=dt.date.today)
    """The day the date-stamped files are stamped for (their names carry it)."""

    @property
    def xml(self) -> dict[str, Path]:
        def name(day: str) -> str:
            return f"{day}-{self.today}.xml" if day.startswith("stamped") else f"{day}.xml"

        return {day: self.folder / name(day) for day in DAYS}

    @property
    def csv(self) -> dict[str, Path]:
        return {day: self.folder / f"{day}.csv" for day in ("day0", "day1")}

    def truth(self, day: int) -> generate_extract.Truth:
        return generate_extract.truth(patrons=self.patrons, day=day, seed=SEED, **self.rates)


def churn_rates(churn: float) -> dict[str, float]:
    """Generator rates for a day on which ``churn`` of the patrons are changed, gone or new."""
    # Most churn is changed records; leavers and newcomers a tenth each (they cost differently:
    # a leaver is an expiration record, a newcomer a new row).
    return {
        "change_rate": 0.8 * churn,
        "depart_rate": 0.1 * churn,
        "new_rate": 0.1 * churn,
        "return_rate": 0.0,
    }


def prepare_files(out: Path, patrons: int, churn: float, csv_wanted: bool) -> Files:
    """Generate (or reuse) the three extracts and the two CSV files of one size."""
    generator = hashlib.sha256(Path(generate_extract.__file__).read_bytes()).hexdigest()[:10]
    # Keyed by everything that decides the bytes, the generator's own code included.
    key = f"{patrons}p-seed{SEED}-churn{churn:g}-gen{generator}"
    files = Files(out / "extracts" / key, patrons, churn_rates(churn))
    files.folder.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {
        "patrons": patrons,
        "seed": SEED,
        "shuffle": True,
        "status_date": "version",
        **files.rates,
    }
    makers: dict[str, Callable[[Path], object]] = {
        "day0": lambda p: generate_extract.write_extract(p, day=0, **common),
        "day1": lambda p: generate_extract.write_extract(p, day=1, **common),
        "reformat": lambda p: generate_extract.write_extract(p, day=1, reformat=True, **common),
        # An SIS that stamps every record with the day of the extract (the day before the
        # run, then the run's): day 1's records once more, then day 2's.
        "stamped1": lambda p: generate_extract.write_extract(
            p, day=1, stamped=files.today - dt.timedelta(days=1), **common
        ),
        "stamped2": lambda p: generate_extract.write_extract(
            p, day=2, stamped=files.today, **common
        ),
    }
    for day, path in files.xml.items():
        _cached(path, makers[day])
    if csv_wanted:
        columns = _columns(files.xml["day0"], files.xml["day1"])
        for day, path in files.csv.items():
            _cached(path, functools.partial(_flatten, files.xml[day], columns=columns))
    return files


def _cached(path: Path, make: Callable[[Path], object]) -> None:
    if path.exists():
        return
    # Written under another name and renamed when complete: an interrupted bench leaves no
    # truncated file to be mistaken for a finished one next time.
    partial = path.with_name(f".partial-{path.name}")
    started = time.monotonic()
    make(partial)
    os.replace(partial, path)
    say(f"made {shown(path)} ({mb(path):.0f} MB) in {time.monotonic() - started:.0f} s")


def _users(path: Path) -> Iterable[etree._Element]:
    for _, user in etree.iterparse(str(path), events=("end",), tag="user", remove_blank_text=True):
        yield user
        user.clear()
        while user.getprevious() is not None:
            del user.getparent()[0]


def _leaves(user: etree._Element) -> dict[str, str]:
    """Every leaf value and attribute of a record by path; repeated paths joined with '; '."""
    values: dict[str, list[str]] = {}

    def walk(el: etree._Element, path: str) -> None:
        for name, value in sorted(el.attrib.items()):
            values.setdefault(path + "@" + str(name), []).append(str(value))
        if len(el) == 0:
            values.setdefault(path, []).append(el.text or "")
        for child in el:
            walk(child, path + "/" + str(child.tag))

    for child in user:
        walk(child, str(child.tag))
    return {path: "; ".join(found) for path, found in values.items()}


def _columns(*paths: Path) -> list[str]:
    seen: dict[str, None] = {"primary_id": None}
    for path in paths:
        for user in _users(path):
            seen.update(dict.fromkeys(_leaves(user)))
    return list(seen)


def _flatten(xml: Path, out: Path, *, columns: list[str]) -> None:
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for user in _users(xml):
            writer.writerow(_leaves(user))


# --------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Backend:
    """One store deltasync runs on, reset to empty before each day-0 run."""

    name: str
    work: Path
    admin_url: str | None = None  # PostgreSQL: the server's maintenance database

    @property
    def config(self) -> Path:
        return self.work / "config.toml"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DELTASYNC_")}
        if self.admin_url is not None:
            env["DELTASYNC_STATE_URL"] = self.admin_url.rsplit("/", 1)[0] + "/bench"
        return env

    def reset(self, csv_file: Path | None = None) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        csv_feed = ""
        if csv_file is not None:
            (self.work / "csv-mapping.toml").write_text(csv_mapping(csv_file))
            csv_feed = (
                f'\n[feeds.{CSV_FEED}]\nsource = "csv"\nmapping = "csv-mapping.toml"\n'
                f'outbox = "outbox-csv"\ntimezone = "America/Chicago"\n\n'
                f'[feeds.{CSV_FEED}.departure]\nmax_departures = "100%"\n'
            )
        self.config.write_text(
            '[state]\nurl = "sqlite:///deltasync.db"\n\n'
            '[feeds.patrons]\noutbox = "outbox"\ntimezone = "America/Chicago"\n'
            'ignore = ["status_date"]\n\n'
            '[feeds.patrons.departure]\nmax_departures = "100%"\n' + csv_feed
        )
        if self.admin_url is not None:
            import sqlalchemy as sa

            engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(sa.text("DROP DATABASE IF EXISTS bench WITH (FORCE)"))
                conn.execute(sa.text("CREATE DATABASE bench"))
            engine.dispose()

    def deltasync(self, *args: str, feed: str = "patrons") -> list[str]:
        command = [sys.executable, "-m", "deltasync", "--config", str(self.config)]
        return [*command, "--feed", feed, *args]


CSV_FEED = "patrons_csv"
SIMPLE_FIELDS = (
    "record_type",
    "primary_id",
    "first_name",
    "middle_name",
    "last_name",
    "user_group",
    "preferred_language",
    "birth_date",
    "expiry_date",
    "purge_date",
    "account_type",
    "external_id",
    "status",
)
FIRST_OF = {
    # segment: (field, flattened column) — the first of the repeated values
    "email": [
        ("email_address", "contact_info/emails/email/email_address"),
        ("email_type", "contact_info/emails/email/email_types/email_type"),
    ],
    "address": [
        ("line1", "contact_info/addresses/address/line1"),
        ("city", "contact_info/addresses/address/city"),
        ("state_province", "contact_info/addresses/address/state_province"),
        ("postal_code", "contact_info/addresses/address/postal_code"),
        ("address_type", "contact_info/addresses/address/address_types/address_type"),
    ],
    "phone": [
        ("phone_number", "contact_info/phones/phone/phone_number"),
        ("phone_type", "contact_info/phones/phone/phone_types/phone_type"),
    ],
}


def csv_mapping(csv_file: Path) -> str:
    """A mapping of the flattened CSV: the simple fields, the first email, address and phone,
    both identifiers, and every other column kept in a note (so every change is a change);
    ``status_date`` is left out, as the XML feed ignores it."""
    with csv_file.open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))

    def value(column: str, index: int | None = None) -> str:
        picked = f"row[{json.dumps(column)}]"
        if index is not None:
            picked = f"({picked}.split('; ') + ['', '', ''])[{index}]"
        return json.dumps("{{ " + picked + " }}")

    lines = ["[user]"]
    lines += [f"{name} = {value(name)}" for name in SIMPLE_FIELDS if name in header]
    used = {*SIMPLE_FIELDS, "status_date"}
    for kind, fields in FIRST_OF.items():
        lines.append(f"\n[[{kind}]]")
        for name, column in fields:
            # The column stays in the note too: a change of a second email is a change.
            lines.append(f"{name} = {value(column, 0)}")
    ids = "user_identifiers/user_identifier/value"
    for index, id_type in enumerate(("UNIV_ID", "BARCODE")):
        lines += ["\n[[identifier]]", f'id_type = "{id_type}"', f"value = {value(ids, index)}"]
    rest = [c for c in header if c not in used and c != ids]
    note = "|".join("{{ row[" + json.dumps(c) + "] }}" for c in rest)
    lines += ["\n[[note]]", 'note_type = "OTHER"', f"note_text = {json.dumps(note)}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# One size
# --------------------------------------------------------------------------------------------


def bench_size(args: argparse.Namespace, patrons: int, backends: list[Backend]) -> dict[str, Any]:
    """Measure every step at one size; the steps keyed by name, plus the files."""
    csv_diff: Path | None = None if args.skip_csv_diff else args.csv_diff
    files = prepare_files(args.out, patrons, args.churn, csv_wanted=True)
    truths = {"day0": files.truth(0), "day1": files.truth(1), "reformat": files.truth(1)}
    truths |= {"stamped1": files.truth(1), "stamped2": files.truth(2)}
    repeat = args.repeat or (1 if patrons >= MILLION else 3)
    steps: dict[str, Step] = {}
    log = args.out / "logs" / f"{patrons}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    label = f"{patrons:,} patrons"

    def record(name: str, sample: Sample, result: dict[str, Any], problems: list[str]) -> Step:
        step = steps.setdefault(name, Step())
        step.samples.append(sample)
        if step.result and step.result != result:
            problems = [*problems, f"runs disagree: {step.result} then {result}"]
        step.result = result
        step.problems.extend(p for p in problems if p not in step.problems)
        say(
            f"[{label} {len(step.samples)}/{repeat}] {name}: {sample.seconds:.2f} s, "
            f"{sample.peak_rss_mb:.0f} MB" + (f"  PROBLEM: {problems}" if problems else "")
        )
        return step

    # Repeats are interleaved (every step once, then again) so a noisy minute on the shared
    # machine spreads over all steps instead of spoiling one.
    for _ in range(repeat):
        for day, path in files.xml.items():
            name = f"iterparse.{day}"
            sample, output = measure(name, [sys.executable, "-c", ITERPARSE, str(path)], log=log)
            present = truths[day]["present"]
            found = int(output)
            problems = [] if found == present else [f"{found} records, expected {present}"]
            record(name, sample, {"records": found}, problems)
        if csv_diff is not None:
            command = [str(csv_diff), *map(str, files.csv.values()), "--key", "primary_id"]
            sample, output = measure("csv_diff", command, log=log)
            record("csv_diff", sample, {"summary": output.strip().splitlines()[0]}, [])
        for backend in backends:
            backend.reset(files.csv["day0"])
            for day, path in files.xml.items():
                name = f"{backend.name}.{day}"
                command = backend.deltasync("run", "--json", str(path))
                sample, output = measure(name, command, env=backend.env, log=log)
                result, problems = check_run(day, json.loads(output), truths[day])
                record(name, sample, result, problems)
            for day, path in files.csv.items():
                name = f"{backend.name}.csv.{day}"
                command = backend.deltasync("run", "--json", str(path), feed=CSV_FEED)
                sample, output = measure(name, command, env=backend.env, log=log)
                result, problems = check_run(day, json.loads(output), truths[day])
                record(name, sample, result, problems)
            name = f"{backend.name}.status"
            sample, _ = measure(name, backend.deltasync("status"), env=backend.env, log=log)
            record(name, sample, {}, [])
    paths = {f"{day}.xml": path for day, path in files.xml.items()}
    paths |= {f"{day}.csv": path for day, path in files.csv.items()}
    return {
        "repeat": repeat,
        "files": {
            name: {"path": shown(path), "mb": round(mb(path), 1)} for name, path in paths.items()
        },
        "truth_day1": {
            "present": truths["day1"]["present"],
            "unchanged": truths["day1"]["unchanged"],
            **{kind: len(truths["day1"][kind]) for kind in ("new", "changed", "departed")},
        },
        "steps": {name: step.as_json() for name, step in steps.items()},
    }


def check_run(
    day: str, output: dict[str, Any], truth: generate_extract.Truth
) -> tuple[dict[str, Any], list[str]]:
    """What a run reported, and how that differs from what the generator says happened."""
    counts = output["counts"]
    batch = output["batch"]
    sent = 0 if batch is None else batch["records"]
    if day in NOTHING_SENT:
        # Every record only re-laid out or dated anew: all unchanged, and no delta file at all.
        expected = {k: 0 for k in counts} | {"unchanged": truth["present"]}
    else:
        expected = {
            "new": len(truth["new"]),
            "changed": len(truth["changed"]),
            "unchanged": truth["unchanged"],
            "departed": len(truth["departed"]),
            "returned": len(truth["returned"]),
            "held_back": 0,
        }
    problems = [
        f"{kind}: {counts.get(kind)}, expected {value}"
        for kind, value in expected.items()
        if counts.get(kind) != value
    ]
    if day in NOTHING_SENT and batch is not None:
        problems.append(f"sent {sent} records (batch {batch['seq']}), expected none")
    return {"records": output["extract"]["records"], "counts": counts, "sent": sent}, problems


def say(message: str) -> None:
    print(f"{dt.datetime.now():%H:%M:%S} {message}", file=sys.stderr, flush=True)


def shown(path: Path) -> str:
    """``path`` relative to the checkout when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def mb(path: Path) -> float:
    return path.stat().st_size / 1e6


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text}") from None
    if not sizes or sizes[0] < 100:
        raise argparse.ArgumentTypeError("sizes must be at least 100 patrons")
    return sizes


def _backends(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(BACKENDS)}: {text}")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--patrons",
        type=_sizes,
        default=[100_000],
        help="patrons on day 0; several, comma-separated, give the scaling target (default 100000)",
    )
    parser.add_argument(
        "--backends",
        type=_backends,
        default=list(BACKENDS),
        help="comma-separated (default sqlite,postgresql)",
    )
    parser.add_argument("--repeat", type=int, help="runs of each step (default 3, 1 from 1M)")
    parser.add_argument(
        "--churn",
        type=float,
        default=0.01,
        help="share of patrons changed, gone or new on day 1 (default 0.01)",
    )
    parser.add_argument("--skip-csv-diff", action="store_true", help="do not run csv-diff")
    parser.add_argument("--csv-diff", type=Path, help="the csv-diff executable")
    parser.add_argument("--csv-diff-missing", help="why csv-diff is not available")
    parser.add_argument("--postgres-url", help="PostgreSQL server (maintenance database URL)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="take the reformat-day limit from this earlier result (bench-out/*.json)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench-out", help="files and results (bench-out/)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--show", type=Path, help="print the table of an earlier result, only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.show is not None:
        print(bench_report.table(json.loads(args.show.read_text())))
        return 0
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not 0 < args.churn <= 0.5:
        parser.error("--churn must be within (0, 0.5]")
    if "postgresql" in args.backends and not args.postgres_url:
        parser.error("postgresql needs --postgres-url (./scripts/bench starts a server)")
    skipped = None
    if args.skip_csv_diff:
        skipped = "--skip-csv-diff"
    elif args.csv_diff is None or not args.csv_diff.exists():
        skipped = args.csv_diff_missing or "no csv-diff executable given (--csv-diff)"
        args.skip_csv_diff = True
        say(f"csv-diff skipped: {skipped}")
    before, before_source = bench_report.load_before(args.baseline)
    # An installed deltasync runs from bytecode pip compiled at install time; a checkout under
    # PYTHONDONTWRITEBYTECODE would compile every module on every run (a third of a second of
    # each step's start-up here). Compile once, as an installation would.
    compileall.compile_dir(str(ROOT / "deltasync"), quiet=1)

    started = dt.datetime.now(dt.UTC)
    result: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": bench_report.machine(),
        "code": bench_report.code(ROOT),
        "parameters": {
            "patrons": args.patrons,
            "backends": args.backends,
            "repeat": args.repeat,
            "churn": args.churn,
            "seed": SEED,
        },
        "csv_diff_skipped": skipped,
        "sizes": {},
    }
    failed = None
    for patrons in args.patrons:
        backends = [
            Backend(
                name,
                args.out / "run" / f"{patrons}-{name}",
                args.postgres_url if name == "postgresql" else None,
            )
            for name in args.backends
        ]
        try:
            result["sizes"][str(patrons)] = bench_size(args, patrons, backends)
        except BenchError as exc:
            # Sizes already measured are still worth their JSON: a 1M run takes long.
            failed = f"bench failed at {patrons:,} patrons: {exc}"
            say(failed)
            break
    result["failed"] = failed
    result["targets"] = [t.as_json() for t in bench_report.judge(result["sizes"], before)]
    result["reformat_baseline"] = before_source
    result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    path = args.out / f"bench-{started:%Y%m%dT%H%M%SZ}.json"
    text = json.dumps(result, indent=2)
    path.write_text(text + "\n")
    print(bench_report.table(result), file=sys.stderr if args.json else sys.stdout)
    print(text if args.json else f"\nresult: {shown(path)}")
    wrong = [t for t in result["targets"] if t["kind"] == "correct" and t["pass"] is False]
    if failed or wrong:
        say(failed or "a run did not give the expected result (see the 'correct' targets)")
        return 1
    if args.check and any(t["pass"] is False for t in result["targets"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
