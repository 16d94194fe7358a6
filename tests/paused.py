"""Run the deltasync CLI in a process of its own that stops at one point until the test says go.

    python paused.py WHERE READY GO ARGS...

WHERE is a step of the run (``job.STEPS``: inside its transaction), ``upload`` (delivery
about to upload, after the run committed and took back older files), or ``upgrade``
(opening the store: the migration done, its transaction not yet committed). On reaching it
the process creates the file READY and waits until the file GO exists; then it goes on. ARGS
are the CLI's arguments, and the process ends as ``python -m deltasync ARGS`` would.

Concurrency tests use it to hold one process at a known point while another runs for real.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from alembic import command

from deltasync import job, ledger
from deltasync.cli import cli


def main() -> None:
    where, ready, go, *args = sys.argv[1:]

    def pause() -> None:
        Path(ready).touch()
        while not Path(go).exists():
            time.sleep(0.05)

    if where in job.STEPS:
        real_run = job.run

        def run(*a: Any, **k: Any) -> Any:
            k["checkpoint"] = lambda step: pause() if step == where else None
            return real_run(*a, **k)

        job.run = run  # type: ignore[assignment]
    elif where == "upload":
        real_check = ledger.outbox.check

        def check(*a: Any, **k: Any) -> Any:
            pause()  # delivery checks the outbox file last, just before it uploads
            return real_check(*a, **k)

        ledger.outbox.check = check
    elif where == "upgrade":
        real_upgrade = command.upgrade

        def upgrade(*a: Any, **k: Any) -> None:
            real_upgrade(*a, **k)
            pause()

        command.upgrade = upgrade
    else:
        raise SystemExit(f"paused.py: unknown point {where!r}")
    cli.main(args=args, prog_name="deltasync")


if __name__ == "__main__":
    main()
