"""The state store: snapshot, versions, extracts and batches, on SQLite or PostgreSQL."""

from .engine import create_store_engine, migrate, safe_url
from .store import Store, open_store

__all__ = ["Store", "create_store_engine", "migrate", "open_store", "safe_url"]
