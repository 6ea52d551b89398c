"""Settings of one relay process, with the defaults ``yrelay serve`` uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auth import AuthSettings

MIB = 1024 * 1024


@dataclass(slots=True)
class RelayConfig:
    """Every setting of ``yrelay serve``, with its command-line default."""

    host: str = "127.0.0.1"
    port: int = 1234
    data_dir: Path = Path("data")
    # Inbound frames above this are closed with 1009 while still arriving.
    max_message_size: int = 32 * MIB
    # A room without connections stays loaded this long, so a reconnect is cheap.
    unload_grace: float = 30.0
    compact_updates: int = 500
    compact_bytes: int = 1 * MIB
    # Bytes queued for one slow reader before it is closed with 1013.
    send_queue_bytes: int = 16 * MIB
    # A sync step 2 larger than this is sent as several messages, so a client
    # on a slow link sees a complete message often enough to keep its
    # connection (y-websocket reconnects after 30 s without one).
    sync_chunk_bytes: int = 4 * MIB
    # y-protocols removes remote awareness states not renewed for 30 s.
    awareness_timeout: float = 30.0
    # Awareness updates arriving within this many seconds of the last
    # broadcast are sent together in one message (relay.presence).
    awareness_batch_interval: float = 0.02
    # A copy of the whole document is kept at most this often (taken when
    # its log is folded into a snapshot), and the newest history_keep stay.
    history_interval: float = 600.0
    history_keep: int = 20
    # Seconds SIGTERM waits for rooms to reach the disk before giving up.
    shutdown_grace: float = 10.0
    # "hypercorn", or "native" for relay.native_server.
    server: str = "hypercorn"
    # permessage-deflate costs more CPU than it saves on small Yjs updates.
    websocket_compression: bool = False
    sqlite_synchronous: str = "FULL"
    # Seconds the SQLite writer gathers operations before committing them.
    # Clients get updates before they are committed in any case, so this only
    # widens the window a relay crash can lose. The clients still have those
    # updates and resend them through sync.
    sqlite_commit_delay: float = 0.005
    # MongoDB replaces SQLite when set.
    mongodb_url: str | None = None
    mongodb_database: str = "yrelay"
    mongodb_write_concern: str = "majority"
    # In a mesh with MongoDB, fold the JetStream log into snapshots here too.
    run_compactor: bool = True
    # Redis caches the latest snapshot of recently busy documents.
    redis_url: str | None = None
    redis_ttl: int = 3600
    # Token checks; None means anonymous access (see relay.access).
    auth: AuthSettings | None = None
    allow_anonymous: bool = False
    # Seconds a connection without a token in its URL or headers has to send
    # one in an auth message.
    auth_timeout: float = 10.0
    auth_leeway: int = 5
    auth_roles_claim: str = "yrelay_roles"
    log_level: str = "info"
