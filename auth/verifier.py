"""Token verification: signature, algorithm allow-list, time and audience claims, roles.

HS256 tokens are checked against a shared secret (for development and
single-tenant set-ups). RS256, ES256 and EdDSA tokens are checked against the
keys of an OIDC issuer (``keys.KeySource``). Which algorithms are accepted
is an explicit allow-list, so ``alg: none`` and a token that names HS256 to
be checked with a public key are rejected before any key is used.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import OctKey

from .errors import AccessDenied, InvalidToken
from .keys import KeySource
from .roles import Role, RoleGrants

# Longer tokens are rejected unread; real ones are well under 4 KiB.
MAX_TOKEN_BYTES = 16 * 1024
# RFC 7518 section 3.2: an HS256 key must be at least as long as the hash.
MIN_SECRET_BYTES = 32
SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "Ed25519"})


@dataclass(slots=True)
class AuthSettings:
    """Token check settings. At least one of ``secret`` and ``keys`` must be set."""

    secret: bytes | None = None
    keys: KeySource | None = None
    # Accepted "alg" values. Empty means HS256 with a secret plus RS256,
    # ES256, EdDSA and Ed25519 (the RFC 9864 name for EdDSA over Ed25519)
    # with issuer keys.
    algorithms: frozenset[str] = field(default_factory=frozenset)
    issuer: str | None = None
    audience: str | None = None
    # Seconds of clock skew allowed on exp and nbf.
    leeway: int = 5
    roles_claim: str = "yrelay_roles"

    def __post_init__(self) -> None:
        if self.secret is None and self.keys is None:
            raise ValueError("token verification needs a shared secret or an issuer's keys")
        if self.secret is not None and len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the shared secret must be at least {MIN_SECRET_BYTES} bytes long")
        if not self.algorithms:
            default: set[str] = set()
            if self.secret is not None:
                default.add("HS256")
            if self.keys is not None:
                default |= {"RS256", "ES256", "EdDSA", "Ed25519"}
            self.algorithms = frozenset(default)
        unknown = self.algorithms - SYMMETRIC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if unknown:
            raise ValueError(f"unsupported algorithms {sorted(unknown)}: use HS256, RS256, ES256 or EdDSA")
        if self.algorithms & SYMMETRIC_ALGORITHMS and self.secret is None:
            raise ValueError("HS256 is allowed but no shared secret is set")
        if self.algorithms & ASYMMETRIC_ALGORITHMS and self.keys is None:
            raise ValueError("an asymmetric algorithm is allowed but no JWKS or OIDC issuer is set")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """The parts of a valid token the relay uses."""

    subject: str
    # Unix time after which the token is no longer accepted, leeway included.
    expires_at: float
    grants: RoleGrants

    def role_for(self, document: str) -> Role | None:
        """Return the role this token grants on ``document``, or None."""
        return self.grants.role_for(document)

    def require(self, document: str, role: Role) -> Role:
        """Return the granted role on ``document``; raises ``AccessDenied`` when it is below ``role``."""
        granted = self.role_for(document)
        if granted is None:
            raise AccessDenied("token grants no access to this document")
        if granted < role:
            raise AccessDenied(f"{granted.name.lower()} role cannot do this; {role.name.lower()} is needed")
        return granted


class TokenVerifier:
    """Checks JWTs against ``AuthSettings``."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._secret_key = OctKey.import_key(settings.secret) if settings.secret is not None else None
        claims: dict[str, dict[str, object]] = {"exp": {"essential": True}}
        if settings.issuer is not None:
            claims["iss"] = {"essential": True, "value": settings.issuer}
        if settings.audience is not None:
            claims["aud"] = {"essential": True, "value": settings.audience}
        self._claims_options = claims

    @property
    def description(self) -> str:
        """What tokens are checked against, for the start-up log line."""
        parts = []
        if self._secret_key is not None:
            parts.append("shared secret")
        if self.settings.keys is not None:
            parts.append(self.settings.keys.description)
        return " and ".join(parts) + f"; algorithms {','.join(sorted(self.settings.algorithms))}"

    async def verify(self, token: str) -> VerifiedToken:
        """Check ``token`` and return its subject, expiry and roles.

        Raises ``InvalidToken`` (401) with a message naming the failed check,
        or ``KeysUnavailable`` (503) when the issuer's keys cannot be fetched.
        """
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("malformed token")
        algorithm = _header_algorithm(token)
        if algorithm not in self.settings.algorithms:
            raise InvalidToken("token algorithm is not allowed")
        if algorithm in SYMMETRIC_ALGORITHMS:
            assert self._secret_key is not None
            decoded = self._decode(token, self._secret_key, algorithm)
        else:
            decoded = await self._decode_with_issuer_keys(token, algorithm)
        return self._check_claims(decoded.claims)

    async def _decode_with_issuer_keys(self, token: str, algorithm: str) -> jwt.Token:
        source = self.settings.keys
        assert source is not None
        keys = await source.keys()
        try:
            return self._decode(token, keys, algorithm)
        except _UnknownKey:
            if not await source.refetch_for_unknown_key():
                raise InvalidToken("token is signed with an unknown key") from None
        try:
            return self._decode(token, await source.keys(), algorithm)
        except _UnknownKey:
            raise InvalidToken("token is signed with an unknown key") from None

    @staticmethod
    def _decode(token: str, key: object, algorithm: str) -> jwt.Token:
        try:
            return jwt.decode(token, key, algorithms=[algorithm])  # type: ignore[arg-type]
        except InvalidKeyIdError:
            raise _UnknownKey() from None
        except BadSignatureError:
            raise InvalidToken("invalid token signature") from None
        except UnsupportedAlgorithmError:
            raise InvalidToken("token algorithm is not allowed") from None
        except (JoseError, ValueError, TypeError):
            raise InvalidToken("malformed token") from None

    def _check_claims(self, claims: dict[str, object]) -> VerifiedToken:
        registry = jwt.JWTClaimsRegistry(leeway=self.settings.leeway, **self._claims_options)  # type: ignore[arg-type]
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise InvalidToken("token expired") from None
        except MissingClaimError as exc:
            raise InvalidToken(f"token has no {exc.claim!r} claim") from None
        except ClaimError as exc:
            messages = {"iss": "wrong token issuer", "aud": "wrong token audience", "nbf": "token not yet valid"}
            raise InvalidToken(messages.get(exc.claim, f"invalid {exc.claim!r} claim")) from None
        try:
            grants = RoleGrants.from_claim(claims.get(self.settings.roles_claim))
        except ValueError:
            raise AccessDenied(f"token has no valid {self.settings.roles_claim!r} claim") from None
        expires = claims["exp"]
        assert isinstance(expires, int | float)
        subject = claims.get("sub")
        return VerifiedToken(
            subject=subject if isinstance(subject, str) else "",
            expires_at=float(expires) + self.settings.leeway,
            grants=grants,
        )


class _UnknownKey(Exception):
    """The token's ``kid`` is not in the key set."""


def _header_algorithm(token: str) -> str:
    """Read ``alg`` from the unverified header, only to pick the key type."""
    header_segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(header_segment + "=" * (-len(header_segment) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("malformed token") from None
    algorithm = header.get("alg") if isinstance(header, dict) else None
    if not isinstance(algorithm, str):
        raise InvalidToken("malformed token")
    return algorithm
