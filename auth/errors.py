"""Exceptions for rejected tokens, each carrying an HTTP status.

Messages name the failed check ("token expired", "wrong audience"). They
never contain the token or any claim value, so they are safe to log and to
send to the client.
"""

from __future__ import annotations


class AuthError(Exception):
    """A request or connection that may not proceed.

    ``status`` is the HTTP status for the failure: 401 when the caller should
    come back with another token, 403 when the token is valid but grants no
    access, 503 when the keys to check it cannot be fetched.
    """

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingToken(AuthError):
    """No token in the query, the Authorization header or an auth message."""


class InvalidToken(AuthError):
    """The token is malformed, badly signed, expired or for someone else."""


class AccessDenied(AuthError):
    """The token is valid but grants no role, or too low a role, on the document."""

    status = 403


class KeysUnavailable(AuthError):
    """The issuer's keys could not be fetched, so no token can be checked."""

    status = 503
