"""Access policy: whether a token may open a document, and with which role.

With token verification configured, every WebSocket connection and HTTP
request needs a token that grants a role on its document. Without it the
relay is open to anyone, as an admin, which ``check_anonymous_allowed``
permits only on a loopback address or with ``--allow-anonymous``.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any

from auth import AuthError, MissingToken, Role, TokenVerifier

LOGGER = logging.getLogger("yrelay.access")


@dataclass(frozen=True, slots=True)
class Grant:
    """The access one connection or request has to one document."""

    role: Role
    # Unix time after which the token no longer counts; None for anonymous access.
    expires_at: float | None
    subject: str

    @property
    def can_write(self) -> bool:
        """True when updates from this holder may change the document."""
        return self.role >= Role.EDITOR


ANONYMOUS = Grant(Role.ADMIN, None, "anonymous")


class AccessPolicy:
    """Turns a token (or its absence) into a ``Grant`` for one document."""

    def __init__(self, verifier: TokenVerifier | None) -> None:
        self.verifier = verifier

    @property
    def requires_token(self) -> bool:
        """True when anonymous access is off."""
        return self.verifier is not None

    async def grant(self, token: str | None, document: str, needed: Role = Role.VIEWER) -> Grant:
        """Return the grant ``token`` gives on ``document``.

        Raises ``AuthError``: ``MissingToken`` without a token, ``InvalidToken``
        or ``KeysUnavailable`` from the verifier, ``AccessDenied`` when the
        role on ``document`` is below ``needed``.
        """
        if self.verifier is None:
            return ANONYMOUS
        if not token:
            raise MissingToken("token required")
        verified = await self.verifier.verify(token)
        role = verified.require(document, needed)
        return Grant(role, verified.expires_at, verified.subject)


def token_from_scope(scope: dict[str, Any]) -> str | None:
    """Return the token of an ASGI request: the ``token`` query parameter or a Bearer header."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    query = scope.get("query_string", b"")
    if query:
        values = urllib.parse.parse_qs(query.decode("latin-1"), keep_blank_values=False).get("token")
        if values:
            return values[0]
    return None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and for loopback IP addresses such as 127.0.0.1 and ::1."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AnonymousAccessRejected(Exception):
    """The relay would listen beyond loopback with no token verification configured."""


def check_anonymous_allowed(host: str, verifier: TokenVerifier | None, allow_anonymous: bool) -> str:
    """Return the start-up log line about access; raises ``AnonymousAccessRejected`` when starting is unsafe."""
    if verifier is not None:
        return f"tokens required; verified with {verifier.description}"
    if is_loopback(host):
        return (f"anonymous access: no token is required because the relay listens on loopback address {host}; "
                "set $YRELAY_AUTH_SECRET or configure --auth-secret-file, --jwks-url or --oidc-issuer before "
                "listening on other addresses")
    if allow_anonymous:
        return f"anonymous access on {host}: anyone who can reach this address can read, edit and delete documents"
    raise AnonymousAccessRejected(
        f"refusing to listen on {host} without token verification: set $YRELAY_AUTH_SECRET or configure "
        "--auth-secret-file, --jwks-url or --oidc-issuer, or pass --allow-anonymous to accept anyone"
    )

