"""Moved to :mod:`appliance.node.db.store` (kept so code importing the old path still runs)."""

from appliance.node.db.schema import DB_FILE
from appliance.node.db.store import Store, storage_error

__all__ = ["DB_FILE", "Store", "storage_error"]
