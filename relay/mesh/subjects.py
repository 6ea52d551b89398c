"""NATS subject names and message headers used between relays.

Document names may contain characters NATS gives meaning to (``.``, ``*``,
``>``, spaces), so each name becomes one subject token: its UTF-8 bytes in
unpadded base64url, whose alphabet NATS accepts as is.

    <prefix>.doc.<token>       Yjs updates, kept by the JetStream stream
    <prefix>.aw.<token>        awareness updates, plain NATS, not stored
    <prefix>.sync.<token>      request/reply: "send me what I lack"
    <prefix>.hb.<relay id>     relay heartbeats, plain NATS
    <prefix>.ctl.<token>       document events such as deletion, plain NATS
"""

from __future__ import annotations

import base64

RELAY_HEADER = "Yrelay-Relay"
STATE_VECTOR_HEADER = "Yrelay-State-Vector"
MESSAGE_ID_HEADER = "Nats-Msg-Id"


def document_token(name: str) -> str:
    """Return the subject token of a document name."""
    return base64.urlsafe_b64encode(name.encode("utf-8")).rstrip(b"=").decode("ascii")


def document_name(token: str) -> str:
    """The document name of a subject token (the inverse of ``document_token``)."""
    padding = "=" * (-len(token) % 4)
    return base64.urlsafe_b64decode(token + padding).decode("utf-8")


class Subjects:
    """Subject names under one prefix, so several deployments can share a NATS."""

    def __init__(self, prefix: str = "yrelay") -> None:
        self.prefix = prefix

    @property
    def updates_wildcard(self) -> str:
        """The subjects the JetStream stream keeps."""
        return f"{self.prefix}.doc.>"

    @property
    def heartbeat_wildcard(self) -> str:
        """Every relay's heartbeat subject."""
        return f"{self.prefix}.hb.*"

    def updates(self, name: str) -> str:
        """Subject of a document's updates."""
        return f"{self.prefix}.doc.{document_token(name)}"

    def awareness(self, name: str) -> str:
        """Subject of a document's awareness updates."""
        return f"{self.prefix}.aw.{document_token(name)}"

    def sync(self, name: str) -> str:
        """Subject of a document's peer sync requests."""
        return f"{self.prefix}.sync.{document_token(name)}"

    @property
    def control_wildcard(self) -> str:
        """Every document's control subject."""
        return f"{self.prefix}.ctl.*"

    def control(self, name: str) -> str:
        """Subject of a document's control events."""
        return f"{self.prefix}.ctl.{document_token(name)}"

    def heartbeat(self, relay_id: str) -> str:
        """Subject of one relay's heartbeats."""
        return f"{self.prefix}.hb.{relay_id}"
