"""Publish a relay's updates to JetStream in order, retrying until acknowledged.

An update counts as acknowledged by the relay once JetStream has stored it
and answered. Until then it stays in this queue, in order, for as long as it
takes: when NATS is down the relay keeps serving its clients, and the queue
is published when NATS returns. Each message carries a ``Nats-Msg-Id`` made
of the relay id, a random token of this process and a counter, so a retry
after a lost acknowledgement is dropped by JetStream's duplicate window
instead of stored twice, while a relay restarted under the same id never
reuses an id still inside that window.

Up to ``WINDOW`` publishes are in flight at once. NATS keeps the order of
messages sent on one connection, so the stream stores them in queue order.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass

from nats.js import JetStreamContext

from .subjects import MESSAGE_ID_HEADER, RELAY_HEADER

LOGGER = logging.getLogger("yrelay.mesh.publisher")

WINDOW = 64
ACK_TIMEOUT = 5.0
_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(slots=True)
class _Pending:
    doc: str
    subject: str
    data: bytes
    message_id: str


class UpdatePublisher:
    """An ordered, retrying JetStream publish queue for one relay."""

    def __init__(self, js: JetStreamContext, relay_id: str) -> None:
        self.js = js
        self.relay_id = relay_id
        self.acknowledged = 0
        self.failures = 0
        self.failing_since: float | None = None
        self._queue: deque[_Pending] = deque()
        self._counter = 0
        self._process_token = secrets.token_hex(4)
        # Message ids JetStream has acknowledged once; a duplicate ack for
        # any other id means an id was reused and the update was dropped.
        self._acknowledged_ids: set[str] = set()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def backlog(self) -> int:
        """Updates not yet acknowledged by JetStream."""
        return len(self._queue)

    def publish(self, doc: str, subject: str, data: bytes) -> None:
        """Queue an update; it is published in order and retried until acknowledged."""
        self._counter += 1
        message_id = f"{self.relay_id}-{self._process_token}-{self._counter}"
        self._queue.append(_Pending(doc, subject, data, message_id))
        self._idle.clear()
        self._wakeup.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued update is acknowledged; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Publish forever; cancel to stop."""
        attempt = 0
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            window = [self._queue[i] for i in range(min(WINDOW, len(self._queue)))]
            published = await self._publish_window(window)
            for _ in range(published):
                self._queue.popleft()
            self.acknowledged += published
            if published == len(window):
                if self.failing_since is not None:
                    LOGGER.info(
                        "JetStream publishes succeed again relay=%s after %.1f s, backlog=%d",
                        self.relay_id, time.monotonic() - self.failing_since, len(self._queue),
                    )
                    self.failing_since = None
                attempt = 0
                continue
            delay = _RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)]
            attempt += 1
            await asyncio.sleep(delay)

    async def _publish_window(self, window: list[_Pending]) -> int:
        """Publish ``window`` concurrently; return how many leading items were acknowledged."""
        tasks = [asyncio.ensure_future(self._publish_one(item)) for item in window]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for index, result in enumerate(results):
            if isinstance(result, BaseException):
                self._record_failure(window[index], result)
                return index
        return len(window)

    async def _publish_one(self, item: _Pending) -> None:
        ack = await self.js.publish(
            item.subject,
            item.data,
            timeout=ACK_TIMEOUT,
            headers={RELAY_HEADER: self.relay_id, MESSAGE_ID_HEADER: item.message_id},
        )
        if ack.duplicate and item.message_id not in self._acknowledged_ids:
            LOGGER.error(
                "JetStream dropped an update as a duplicate of an earlier message id relay=%s doc=%s id=%s",
                self.relay_id, item.doc, item.message_id,
            )
        self._acknowledged_ids.add(item.message_id)
        if len(self._acknowledged_ids) > 100_000:
            self._acknowledged_ids.clear()

    def _record_failure(self, item: _Pending, error: BaseException) -> None:
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            LOGGER.warning(
                "JetStream publish failed relay=%s doc=%s backlog=%d, retrying with backoff: %r",
                self.relay_id, item.doc, len(self._queue), error,
            )
        elif self.failures % 50 == 0:
            LOGGER.warning(
                "JetStream publishes still failing relay=%s doc=%s backlog=%d failures=%d: %r",
                self.relay_id, item.doc, len(self._queue), self.failures, error,
            )
