"""Issue tokens for development and tests, signed with the relay's own key.

In production an OAuth2/OIDC issuer signs tokens; ``yrelay token issue`` is
for local set-ups that use the shared secret, or a private key file.
"""

from __future__ import annotations

import re
import secrets
import time

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from .roles import Role
from .verifier import MIN_SECRET_BYTES

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Parse ``90``, ``90s``, ``15m``, ``12h`` or ``7d`` into seconds; raises ValueError otherwise."""
    match = _DURATION.match(text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"expected a duration in seconds (90) or with a unit (90s, 15m, 12h, 7d), got {text!r}")
    return float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]


def issue_token(
    *,
    grants: dict[str, Role],
    ttl: float,
    secret: bytes | None = None,
    private_key_pem: bytes | None = None,
    key_id: str | None = None,
    subject: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    roles_claim: str = "yrelay_roles",
    now: float | None = None,
) -> str:
    """Return a signed JWT granting each pattern of ``grants`` its role for ``ttl`` seconds.

    Signs with HS256 and ``secret``, or with ``private_key_pem`` (RS256 for
    an RSA key, ES256 for a P-256 key, Ed25519, the RFC 9864 name for EdDSA, for an Ed25519 key).
    """
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "sub": subject or f"dev-{secrets.token_hex(4)}",
        "iat": issued_at,
        "exp": issued_at + max(1, int(ttl)),
        roles_claim: {pattern: role.name.lower() for pattern, role in grants.items()},
    }
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    header: dict[str, object]
    if private_key_pem is not None:
        key, algorithm = _private_key(private_key_pem)
        header = {"alg": algorithm}
        if key_id is not None:
            header["kid"] = key_id
        return jwt.encode(header, claims, key, algorithms=[algorithm])
    if secret is None:
        raise ValueError("issuing a token needs the shared secret or a private key")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the shared secret must be at least {MIN_SECRET_BYTES} bytes long")
    header = {"alg": "HS256"}
    if key_id is not None:
        header["kid"] = key_id
    return jwt.encode(header, claims, OctKey.import_key(secret), algorithms=["HS256"])


def _private_key(pem: bytes) -> tuple[RSAKey | ECKey | OKPKey, str]:
    for key_type, algorithm in ((RSAKey, "RS256"), (ECKey, "ES256"), (OKPKey, "Ed25519")):
        try:
            key = key_type.import_key(pem)
        except (ValueError, TypeError, JoseError):
            continue
        if not key.is_private:
            raise ValueError("the key file contains a public key; signing needs the private key")
        return key, algorithm
    raise ValueError("the key file is not an RSA, EC P-256 or Ed25519 private key in PEM format")
