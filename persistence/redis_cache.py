"""Redis cache of hot documents' latest snapshots, in front of a store.

``CachedStore`` wraps any ``DocumentStore``. Every snapshot the wrapped
store commits is also written to Redis, with the log position it covers
and a TTL, so a document that was busy recently opens with one Redis read
plus the store's log entries after that position (usually none), instead of
reading the whole snapshot from the store.

Safety: a cached snapshot is used only together with the store's log after
its position. If the store has a newer snapshot, or cannot be read, the
cache entry is not used and the load goes to the store alone, so a stale
cache entry can never hide updates.

Error handling: Redis down or slow never blocks or fails a relay. Every
call has a short timeout, errors are logged and counted, and a circuit
breaker stops calling Redis for a while after repeated failures.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from .circuit import CircuitBreaker
from .store import DocumentStore, StoredDocument, VersionInfo

LOGGER = logging.getLogger("yrelay.persistence.redis")

KEY_PREFIX = "yrelay:doc:"


class RedisCache:
    """Snapshot and position per document in Redis, each with a TTL."""

    def __init__(self, url: str, ttl_seconds: int = 3600, timeout_seconds: float = 0.25) -> None:
        self.url = url
        self.ttl_seconds = ttl_seconds
        self.breaker = CircuitBreaker(f"Redis {url.rpartition('@')[2]}")
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self._client = redis_asyncio.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )

    async def get(self, name: str) -> tuple[bytes, int] | None:
        """Return the cached (snapshot, position) of ``name``, or None on a miss or any error."""
        entry = await self.get_entry(name)
        return None if entry is None else (entry[0], entry[1])

    async def get_entry(self, name: str) -> tuple[bytes, int, int] | None:
        """Return the cached (snapshot, position, version) of ``name``, or None on a miss or any error."""
        if not self.breaker.allow():
            return None
        try:
            entry = await self._client.hmget(KEY_PREFIX + name, ["state", "position", "version"])
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed("read", name, exc)
            return None
        self.breaker.record_success()
        state, position, version = entry
        if state is None or position is None:
            self.misses += 1
            return None
        return bytes(state), int(position), int(version or 0)

    def count_hit(self) -> None:
        """Record that a room opened from a cached snapshot."""
        self.hits += 1

    async def put(self, name: str, state: bytes, position: int, version: int = 0) -> None:
        """Cache a committed snapshot of ``name``; errors are logged, not raised."""
        if not self.breaker.allow():
            return
        key = KEY_PREFIX + name
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"state": state, "position": position, "version": version})
                pipe.expire(key, self.ttl_seconds)
                await pipe.execute()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed("write", name, exc)
            return
        self.breaker.record_success()

    async def delete(self, name: str) -> None:
        """Drop ``name`` from the cache; errors are logged, not raised."""
        try:
            await self._client.delete(KEY_PREFIX + name)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed("delete", name, exc)

    async def close(self) -> None:
        """Release the connection pool."""
        await self._client.aclose()

    def _failed(self, action: str, name: str, exc: BaseException) -> None:
        self.errors += 1
        self.breaker.record_failure(exc)
        LOGGER.warning("Redis %s failed doc=%s: %r", action, name, exc)


class CachedStore:
    """A ``DocumentStore`` whose snapshots are also cached in Redis."""

    def __init__(self, base: Any, cache: RedisCache) -> None:
        self.base = base
        self.cache = cache
        self.description = f"{base.description} with redis cache"
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending_writes(self) -> int:
        """Operations the wrapped store has not committed yet."""
        return int(getattr(self.base, "pending_writes", 0))

    async def open(self) -> None:
        """Open the wrapped store."""
        await self.base.open()

    async def close(self) -> None:
        """Close the wrapped store, after the cache writes in flight."""
        await self.base.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.cache.close()

    async def load(self, name: str) -> StoredDocument:
        """Load from the cached snapshot plus the store's newer log, else from the store."""
        cached = await self.cache.get(name)
        if cached is not None:
            state, position = cached
            tail = await self.base.load_after(name, position)
            if tail is not None:
                self.cache.count_hit()
                LOGGER.debug("loaded from cache doc=%s position=%d log_entries=%d", name, position, len(tail))
                return StoredDocument(snapshot=state, updates=tail, position=position)
        return await self.base.load(name)

    async def load_after(self, name: str, position: int) -> list[bytes] | None:
        """Delegate to the wrapped store."""
        return await self.base.load_after(name, position)

    def append(self, name: str, update: bytes) -> Awaitable[None]:
        """Delegate to the wrapped store."""
        return self.base.append(name, update)

    def replace_with_snapshot(self, name: str, snapshot: bytes, state_vector: bytes) -> Awaitable[int]:
        """Queue the snapshot in the wrapped store and cache it once committed."""
        committed = self.base.replace_with_snapshot(name, snapshot, state_vector)
        task = asyncio.ensure_future(self._cache_when_committed(name, snapshot, committed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return committed

    async def _cache_when_committed(self, name: str, snapshot: bytes, committed: Awaitable[int]) -> None:
        position = await committed
        await self.cache.put(name, snapshot, position)

    async def delete(self, name: str) -> None:
        """Delete from the store and from the cache."""
        await self.base.delete(name)
        await self.cache.delete(name)

    def save_version(self, name: str, state: bytes, keep: int) -> Awaitable[None]:
        """Delegate to the wrapped store."""
        return self.base.save_version(name, state, keep)

    async def list_versions(self, name: str) -> list[VersionInfo]:
        """Delegate to the wrapped store."""
        return await self.base.list_versions(name)

    async def load_version(self, name: str, version_id: int) -> bytes | None:
        """Delegate to the wrapped store."""
        return await self.base.load_version(name, version_id)

    async def list_documents(self) -> list[str]:
        """Delegate to the wrapped store."""
        return await self.base.list_documents()

    async def flush(self) -> None:
        """Wait for the wrapped store's writes and the cache writes they started."""
        await self.base.flush()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def ping(self) -> bool:
        """Report the wrapped store's health; Redis being down does not make the relay unready."""
        return bool(await self.base.ping())


def wrap_with_cache(base: DocumentStore, url: str, ttl_seconds: int) -> CachedStore:
    """Put a Redis cache at ``url`` in front of ``base``."""
    return CachedStore(base, RedisCache(url, ttl_seconds))
