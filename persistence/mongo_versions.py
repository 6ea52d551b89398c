"""Reading kept document versions from a MongoDB collection.

Both MongoDB-backed stores keep versions as documents
``{doc, version_id, created_at, size, data}``; they write them differently
(a queued write, or the compactor), but read them the same way.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.errors import PyMongoError

from .store import StoreUnavailable, VersionInfo


async def list_versions(collection: Any, name: str, description: str) -> list[VersionInfo]:
    """Return the versions of ``name`` in ``collection``, oldest first."""
    try:
        cursor = collection.find({"doc": name}, projection={"data": 0}).sort("version_id", ASCENDING)
        return [VersionInfo(entry["version_id"], entry["created_at"], entry["size"]) async for entry in cursor]
    except PyMongoError as exc:
        raise StoreUnavailable(f"cannot read versions from {description}: {exc}") from exc


async def load_version(collection: Any, name: str, version_id: int, description: str) -> bytes | None:
    """Return the state kept as ``version_id`` of ``name``, or None."""
    try:
        entry = await collection.find_one({"doc": name, "version_id": version_id})
    except PyMongoError as exc:
        raise StoreUnavailable(f"cannot read versions from {description}: {exc}") from exc
    return bytes(entry["data"]) if entry else None
