"""Turn WebSocket permessage-deflate on or off in Hypercorn.

Hypercorn 0.18 accepts permessage-deflate whenever a client offers it and
has no setting to refuse it. Browsers and Node's ``ws`` client offer it, so
every Yjs update, typically tens of bytes, was compressed and decompressed
on both sides. Node's ``ws`` runs zlib asynchronously through a small pool,
and replaying a 260,000-keystroke trace through one y-websocket provider
took about 100 s with deflate against about 12 s without it.
@y/websocket-server (on ``ws``) does not enable it either.

Hypercorn builds the extension from the name ``PerMessageDeflate`` in its
``protocol.ws_stream`` module for each handshake; this module points that
name at a subclass that declines every offer, or back at wsproto's class.
"""

from __future__ import annotations

from hypercorn.protocol import ws_stream
from wsproto.extensions import PerMessageDeflate


class DeclinedPerMessageDeflate(PerMessageDeflate):
    """A permessage-deflate extension that never accepts an offer."""

    def accept(self, offer: str) -> None:  # type: ignore[override]  # None declines the offer in wsproto
        return None


def set_permessage_deflate(enabled: bool) -> None:
    """Make Hypercorn accept (True) or decline (False) permessage-deflate."""
    ws_stream.PerMessageDeflate = PerMessageDeflate if enabled else DeclinedPerMessageDeflate  # type: ignore[misc]  # module attribute swap
