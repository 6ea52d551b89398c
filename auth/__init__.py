"""Token verification and per-document roles (joserfc for JWT, Authlib for OIDC)."""

from .errors import AccessDenied, AuthError, InvalidToken, KeysUnavailable, MissingToken
from .issuing import issue_token, parse_duration
from .keys import KeySource
from .roles import Role, RoleGrants
from .verifier import AuthSettings, TokenVerifier, VerifiedToken

__all__ = [
    "AccessDenied",
    "AuthError",
    "AuthSettings",
    "InvalidToken",
    "KeySource",
    "KeysUnavailable",
    "MissingToken",
    "Role",
    "RoleGrants",
    "TokenVerifier",
    "VerifiedToken",
    "issue_token",
    "parse_duration",
]
