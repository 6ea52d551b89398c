"""The transport a WebSocket handler may write pre-built frames to.

The server that runs the handler (Hypercorn through ``hypercorn_patches``, or
``native_server``) stores the connection's writer in a context variable
before it starts the handler's task, which inherits it. A writer is anything
with a ``transport`` attribute and an awaitable ``drain()``, as
``asyncio.StreamWriter`` has.
"""

from __future__ import annotations

import contextvars
from typing import Any

_STREAM_WRITER: contextvars.ContextVar[Any | None] = contextvars.ContextVar("yrelay_stream_writer", default=None)


def set_stream_writer(writer: Any | None) -> None:
    """Record the writer of the connection the current task serves."""
    _STREAM_WRITER.set(writer)


def current_stream_writer() -> Any | None:
    """Return the writer of the connection this task serves, or None when the server provides none."""
    return _STREAM_WRITER.get()
