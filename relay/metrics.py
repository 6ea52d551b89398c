"""Prometheus metrics of one relay, on a registry of its own (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RelayMetrics:
    """The counters and gauges the relay updates; one instance per relay."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rooms_loaded = Gauge("yrelay_rooms_loaded", "Rooms held in memory.", registry=self.registry)
        self.connections = Gauge("yrelay_connections", "Open WebSocket connections.", registry=self.registry)
        self.room_loads = Counter("yrelay_room_loads", "Rooms read from storage.", registry=self.registry)
        self.room_unloads = Counter("yrelay_room_unloads", "Rooms released from memory.", registry=self.registry)
        self.step2_computed = Counter(
            "yrelay_sync_step2_computed", "Sync step 2 answers encoded (cache misses).", registry=self.registry
        )
        self.updates_applied = Counter(
            "yrelay_updates_applied", "Updates that changed a document.", registry=self.registry
        )
        self.updates_rejected = Counter(
            "yrelay_updates_rejected", "Updates rejected as invalid.", registry=self.registry
        )
        self.writes_denied = Counter(
            "yrelay_writes_denied", "Updates from read-only connections that were rejected.", registry=self.registry
        )
        self.auth_failures = Counter(
            "yrelay_auth_failures", "Connections and requests rejected by token checks, by HTTP status.",
            ["status"], registry=self.registry,
        )
        self.connections_closed = Counter(
            "yrelay_connections_closed", "Connections closed, by close code.", ["code"], registry=self.registry
        )
        self.store_pending_writes = Gauge(
            "yrelay_store_pending_writes", "Store operations queued but not yet committed.", registry=self.registry
        )
        self.compactions = Counter("yrelay_compactions", "Snapshots written.", registry=self.registry)
        self.mesh_published = Counter(
            "yrelay_mesh_updates_published", "Updates queued for JetStream by this relay.", registry=self.registry
        )
        self.mesh_received = Counter(
            "yrelay_mesh_updates_received",
            "Update messages delivered by JetStream, by origin (this relay's own are skipped).",
            ["origin"],
            registry=self.registry,
        )
        self.mesh_unacknowledged = Gauge(
            "yrelay_mesh_unacknowledged_updates", "Updates waiting for a JetStream acknowledgement.",
            registry=self.registry,
        )
        self.cache_hits = Gauge("yrelay_cache_hits", "Rooms opened from the Redis cache.", registry=self.registry)
        self.cache_misses = Gauge("yrelay_cache_misses", "Redis cache lookups that missed.", registry=self.registry)
        self.cache_errors = Gauge("yrelay_cache_errors", "Redis calls that failed.", registry=self.registry)
        self.send_queue_bytes_max = Gauge(
            "yrelay_send_queue_bytes_max", "Bytes queued for the connection with the longest send queue.",
            registry=self.registry,
        )
        self.mesh_connected = Gauge("yrelay_mesh_connected", "1 while connected to NATS.", registry=self.registry)
