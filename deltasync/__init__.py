"""deltasync: send Alma only the patrons that changed.

The pipeline, one module a step::

    extract.py    read a full SIS extract, record by record (.xml, .xml.gz, .zip)
    canonical.py  the canonical form and digest of a record: what "changed" means
    diff.py       classify each patron against the snapshot
    departure.py  expiration records for patrons who left
    outbox.py     write the delta file: zipped Alma user XML, atomically
    job.py        the daily run that ties them together in one transaction
    store/        the state store: snapshot, versions, extracts, batches
    audit.py      read-only questions: status, batches, a patron's history
    cli.py        the ``deltasync`` command (the only module that knows click)

Use it as a library::

    from deltasync import load_config, open_store, run
    config = load_config(Path("config.toml"))
    with open_store(config.state_url) as store:
        result = run(store, config.feed("patrons"), Path("patrons.xml"))
"""

from .config import Config, FeedConfig
from .config import load as load_config
from .errors import DeltasyncError
from .job import RunResult, run
from .store import Store, open_store

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
