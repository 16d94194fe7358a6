"""The library's names in ``deltasync``: each is the object of its module, found on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import deltasync
from deltasync import config, errors, job, store


def test_every_public_name_is_its_modules_object() -> None:
    assert deltasync.load_config is config.load
    assert deltasync.Config is config.Config
    assert deltasync.FeedConfig is config.FeedConfig
    assert deltasync.DeltasyncError is errors.DeltasyncError
    assert deltasync.run is job.run
    assert deltasync.RunResult is job.RunResult
    assert deltasync.Store is store.Store
    assert deltasync.open_store is store.open_store
    assert set(deltasync.__all__) <= set(dir(deltasync))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'deltasync' has no attribute 'nope'"):
        deltasync.nope  # noqa: B018


def test_importing_the_package_imports_none_of_its_modules() -> None:
    # A command that never runs the job (status, history, ...) must not pay for importing it.
    probe = (
        "import sys, deltasync; print(sorted(m for m in sys.modules if m.startswith('deltasync.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
