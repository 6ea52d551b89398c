"""Run a ``Relay`` under Hypercorn until SIGTERM or SIGINT.

On a signal the relay first commits every room and closes its clients with
1012, then lets Hypercorn stop, so no update a client sent before the signal
is lost and clients know to reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config

from .access import AnonymousAccessRejected, check_anonymous_allowed
from .app import Relay, StartupError
from .native_server import NativeServer
from .hypercorn_patches import expose_stream_writer, finish_oversized_close, set_permessage_deflate
from .config import RelayConfig
from .mesh.node import MeshConfig

LOGGER = logging.getLogger("yrelay.server")

# Dead peers are found by TCP keepalive on every accepted socket: the
# kernel probes after KEEPALIVE_IDLE seconds of silence and drops the
# connection after KEEPALIVE_COUNT unanswered probes, about a minute in all.
# Hypercorn's WebSocket ping is not used: ASGI shows the app no pong, and in
# Hypercorn 0.18 each closed connection's ping task sleeps out its interval
# before it notices, which delayed shutdown by up to that interval.
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3


def hypercorn_config(config: RelayConfig) -> Config:
    """Translate relay settings into Hypercorn's."""
    hyper = Config()
    hyper.bind = [f"{_bracket(config.host)}:{config.port}"]
    hyper.websocket_max_message_size = config.max_message_size
    hyper.websocket_ping_interval = None
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("yrelay.hypercorn")
    hyper.graceful_timeout = config.shutdown_grace
    return hyper


def _enable_keepalive(sock: socket.socket) -> None:
    # Accepted sockets inherit these options from the listening socket on Linux.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def serve_relay(config: RelayConfig, mesh_config: MeshConfig | None = None) -> None:
    """Serve until a termination signal, then drain and return."""
    relay = Relay(config, mesh_config=mesh_config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        LOGGER.info("shutting down: committing rooms and closing connections")
        await relay.drain()

    try:
        LOGGER.info("%s", check_anonymous_allowed(config.host, relay.verifier, config.allow_anonymous))
    except AnonymousAccessRejected as exc:
        LOGGER.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    set_permessage_deflate(config.websocket_compression)
    finish_oversized_close()
    expose_stream_writer()
    hyper = hypercorn_config(config)
    # Bind before anything else so that a busy port is one clear error, not
    # a traceback after the store was opened.
    try:
        sockets = hyper.create_sockets()
    except OSError as exc:
        LOGGER.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror or exc)
        raise SystemExit(2) from None
    for sock in sockets.insecure_sockets:
        _enable_keepalive(sock)
    try:
        await relay.start()
    except StartupError as exc:
        LOGGER.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    LOGGER.info("listening on http://%s:%d (WebSocket: ws://%s:%d/<document>) server=%s",
                config.host, config.port, config.host, config.port, config.server)
    try:
        if config.server == "native":
            native = NativeServer(relay, config.max_message_size, config.shutdown_grace)
            await native.serve(sockets.insecure_sockets, shutdown_trigger)
        else:
            await worker_serve(ASGIWrapper(relay), hyper, sockets=sockets, shutdown_trigger=shutdown_trigger)
    finally:
        await relay.stop()


def run(config: RelayConfig, mesh_config: MeshConfig | None = None) -> None:
    """Run the relay on uvloop where installed, else on the default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_relay(config, mesh_config))
        return
    uvloop.run(serve_relay(config, mesh_config))
