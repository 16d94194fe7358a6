"""Benchmark `deltasync run`: patrons per second and peak memory, day 0 (all new) and day 1.

Each run is a separate `deltasync` process, timed from outside; peak memory is the process's
maximum resident set size (getrusage of the child), so libxml2 and SQLite memory count too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import generate_extract

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patrons", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=2, help="days to run, from day 0")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--postgres-url", help="also run against this PostgreSQL database")
    args = parser.parse_args()

    extracts = args.out / "extracts"
    extracts.mkdir(parents=True, exist_ok=True)
    paths = []
    for day in range(args.days):
        path = extracts / f"patrons-{args.patrons}-day{day}.xml"
        if not path.exists():
            started = time.monotonic()
            generate_extract.write_extract(path, patrons=args.patrons, day=day, shuffle=True)
            print(
                f"generated {path.name} ({path.stat().st_size / 2**20:.0f} MiB) "
                f"in {time.monotonic() - started:.1f} s",
                file=sys.stderr,
            )
        paths.append(path)

    backends = [("sqlite", None)]
    if args.postgres_url:
        backends.append(("postgresql", args.postgres_url))
    rows = []
    for backend, url in backends:
        work = args.out / backend
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        config = work / "config.toml"
        config.write_text(
            '[state]\nurl = "sqlite:///deltasync.db"\n\n[feeds.patrons]\n'
            'timezone = "America/Chicago"\nignore = ["status_date"]\n'
            '[feeds.patrons.departure]\nmax_departures = "100%"\n'
        )
        env = dict(os.environ)
        if url:
            env["DELTASYNC_STATE_URL"] = url
        for day, path in enumerate(paths):
            rows.append(_run(backend, day, config, path, env))
    print(json.dumps(rows, indent=2))
    print()
    print(
        f"{'backend':<11}{'day':>4}{'patrons':>10}{'sent':>9}{'seconds':>9}"
        f"{'patrons/s':>11}{'peak MiB':>10}"
    )
    for r in rows:
        print(
            f"{r['backend']:<11}{r['day']:>4}{r['patrons']:>10}{r['sent']:>9}"
            f"{r['seconds']:>9.1f}{r['patrons_per_second']:>11.0f}{r['peak_rss_mib']:>10.0f}"
        )
    return 0


def _run(
    backend: str, day: int, config: Path, path: Path, env: dict[str, str]
) -> dict[str, object]:
    command = [
        sys.executable,
        "-m",
        "deltasync",
        "--config",
        str(config),
        "run",
        "--json",
        str(path),
    ]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None
    output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"deltasync failed on {path}")
    result = json.loads(output)
    patrons = result["extract"]["records"]
    return {
        "backend": backend,
        "day": day,
        "patrons": patrons,
        "sent": result["batch"]["records"] if result["batch"] else 0,
        "seconds": round(seconds, 2),
        "patrons_per_second": round(patrons / seconds),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
