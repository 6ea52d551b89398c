"""Run a ``Relay`` under Hypercorn until SIGTERM or SIGINT.

On a signal the relay first commits every room and closes its clients with
1012, then lets Hypercorn stop, so no update a client sent before the signal
is lost and clients know to reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config

from .app import Relay
from .config import RelayConfig

LOGGER = logging.getLogger("yrelay.server")

# Keeps idle connections alive through proxies and NAT; ASGI exposes no
# pong, so dead peers are found by the awareness timeout and TCP errors.
PING_INTERVAL = 20.0


def hypercorn_config(config: RelayConfig) -> Config:
    """Translate relay settings into Hypercorn's."""
    hyper = Config()
    hyper.bind = [f"{_bracket(config.host)}:{config.port}"]
    hyper.websocket_max_message_size = config.max_message_size
    hyper.websocket_ping_interval = PING_INTERVAL
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("yrelay.hypercorn")
    hyper.graceful_timeout = config.shutdown_grace
    return hyper


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def serve_relay(config: RelayConfig) -> None:
    """Serve until a termination signal, then drain and return."""
    relay = Relay(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        LOGGER.info("shutting down: committing rooms and closing connections")
        await relay.drain()

    hyper = hypercorn_config(config)
    # Bind before anything else so that a busy port is one clear error, not
    # a traceback after the store was opened.
    try:
        sockets = hyper.create_sockets()
    except OSError as exc:
        LOGGER.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror or exc)
        raise SystemExit(2) from None
    LOGGER.info("listening on http://%s:%d (WebSocket: ws://%s:%d/<document>)",
                config.host, config.port, config.host, config.port)
    await worker_serve(ASGIWrapper(relay), hyper, sockets=sockets, shutdown_trigger=shutdown_trigger)


def run(config: RelayConfig) -> None:
    """Run the relay on uvloop where installed, else on the default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_relay(config))
        return
    uvloop.run(serve_relay(config))
