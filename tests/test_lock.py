"""Two runs of one feed never overlap; a dead run's lock does not outlive it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import dump_store, invoke

from deltasync.store import lock, open_store


def test_a_second_run_waits_then_exits_with_a_clear_message(
    db_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(db_url)
    extract = make_extract(0, 20)
    monkeypatch.setattr(lock, "WAIT_SECONDS", 0.5)
    with open_store(db_url) as store, lock.feed_lock(store, "patrons"):
        started = time.monotonic()
        result = invoke(config, "run", str(extract))
        waited = time.monotonic() - started
    assert result.exit_code == 1
    assert "another deltasync run of feed 'patrons' is in progress" in result.output
    assert waited >= 0.5
    assert dump_store(db_url)["patron"] == []
    # Another feed is not held up, and once released the feed runs.
    with open_store(db_url) as store, lock.feed_lock(store, "staff"):
        assert invoke(config, "run", str(extract)).exit_code == 0


def test_the_lock_dies_with_its_process(db_url: str) -> None:
    open_store(db_url).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from deltasync.store import lock, open_store\n"
            "store = open_store(sys.argv[1])\n"
            "with lock.feed_lock(store, 'patrons'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
            db_url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with open_store(db_url) as store:
            with pytest.raises(lock.FeedBusy):
                with lock.feed_lock(store, "patrons", wait_seconds=0.3):
                    pass
            holder.kill()
            holder.wait()
            with lock.feed_lock(store, "patrons", wait_seconds=5):
                pass  # acquired: the killed holder's lock is gone
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
