"""Create or check the JetStream stream that keeps document update logs.

At start-up the stream is created from configuration when it does not
exist. When it exists, its settings are compared with the configuration and
any difference is reported as ``StreamConfigConflict``: changing replicas
or storage of a live stream is an operator's decision, never a side effect
of starting a relay.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

# JetStream drops a second publish with the same Nats-Msg-Id within this
# window, so a retry after a lost acknowledgement is not stored twice.
DUPLICATE_WINDOW_SECONDS = 120.0


class StreamConfigConflict(Exception):
    """The existing stream's settings differ from the configured ones."""


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Settings yrelay configures on its stream."""

    name: str
    subjects: tuple[str, ...]
    replicas: int
    storage: str  # "file" or "memory"
    max_msg_size: int
    max_age_seconds: float  # 0 keeps messages until they are trimmed

    def to_config(self) -> StreamConfig:
        """Build the nats-py configuration for these settings."""
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE if self.storage == "file" else StorageType.MEMORY,
            num_replicas=self.replicas,
            max_msg_size=self.max_msg_size,
            max_age=self.max_age_seconds,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            allow_direct=True,
        )


def differences(existing: StreamConfig, wanted: StreamSettings) -> list[str]:
    """Describe each setting in which ``existing`` differs from ``wanted``."""
    found = []
    if sorted(existing.subjects or []) != sorted(wanted.subjects):
        found.append(f"subjects are {existing.subjects}, configured {list(wanted.subjects)}")
    if (existing.num_replicas or 1) != wanted.replicas:
        found.append(f"replicas are {existing.num_replicas}, configured {wanted.replicas}")
    # nats-py returns the storage as a plain string when reading a stream.
    storage = getattr(existing.storage, "value", existing.storage) or "file"
    if storage != wanted.storage:
        found.append(f"storage is {storage}, configured {wanted.storage}")
    if existing.max_msg_size not in (None, -1) and existing.max_msg_size < wanted.max_msg_size:
        found.append(f"max_msg_size is {existing.max_msg_size}, below the relay's --max-message-size {wanted.max_msg_size}")
    return found


async def ensure_stream(js: JetStreamContext, wanted: StreamSettings) -> bool:
    """Create the stream, or check the existing one; returns True when created.

    Raises ``StreamConfigConflict`` listing every difference.
    """
    try:
        info = await js.stream_info(wanted.name)
    except NotFoundError:
        await js.add_stream(wanted.to_config())
        return True
    found = differences(info.config, wanted)
    if found:
        raise StreamConfigConflict(f"stream {wanted.name} exists with other settings: " + "; ".join(found))
    return False
