"""deltasync: send Alma only the patrons that changed.

The pipeline, one module a step::

    source/       where records come from (Alma XML, CSV, SQL), record by record
    checks/       pre-flight: what Alma would reject, held back, warned or fixed
    canonical.py  the canonical form and digest of a record: what "changed" means
    scan.py       the per-record pass: unchanged by its bytes, or read in full and classified
    ingest.py     an extract into the snapshot: guards, the pass, departures, apply
    delta/        the batch file: expiration records, zipped Alma user XML, atomically
    job.py        the daily run: ingest, build the delta, deliver, in named steps
    delivery/     transports to the folder Alma reads; ledger.py tracks what Alma confirmed
    store/        the state store: snapshot, staging, versions, extracts, batches, run log
    audit/        read-only questions: status, a patron's history and changes, batches
    report/       run reports, notices, the HTML report
    recovery.py   batch rebuild and resend; retention.py prunes personal data
    cli/          the ``deltasync`` command (the only package that knows click)

Use it as a library::

    from deltasync import load_config, open_store, run
    config = load_config(Path("config.toml"))
    with open_store(config.state_url) as store:
        result = run(store, config.feed("patrons"), Path("patrons.xml"))
"""

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config, FeedConfig
    from .config import load as load_config
    from .errors import DeltasyncError
    from .job import RunResult, run
    from .store import Store, open_store

# A library logs, the application decides where to: without this, Python's last-resort
# handler would print the library's warnings on stderr, which cron mails.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Config",
    "DeltasyncError",
    "FeedConfig",
    "RunResult",
    "Store",
    "load_config",
    "open_store",
    "run",
]

_EXPORTS = {
    "Config": ("config", "Config"),
    "DeltasyncError": ("errors", "DeltasyncError"),
    "FeedConfig": ("config", "FeedConfig"),
    "RunResult": ("job", "RunResult"),
    "Store": ("store", "Store"),
    "load_config": ("config", "load"),
    "open_store": ("store", "open_store"),
    "run": ("job", "run"),
}
"""Public name → (module, name there). Imported on first use (PEP 562): importing any
submodule imports this package first, and the job alone pulls in nearly all of deltasync, which
a command such as ``status`` never runs."""


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
