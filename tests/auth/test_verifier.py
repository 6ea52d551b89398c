"""Token verification with a shared secret and with private keys issued by ``issue_token``."""

from __future__ import annotations

import time

import pytest
from joserfc.jwk import ECKey, OKPKey

from auth import AccessDenied, AuthSettings, InvalidToken, Role, TokenVerifier, issue_token, parse_duration

SECRET = b"0123456789abcdef0123456789abcdef"


async def test_secret_token_round_trip() -> None:
    verifier = TokenVerifier(AuthSettings(secret=SECRET, leeway=0))
    token = issue_token(grants={"docs/*": Role.EDITOR}, ttl=60, secret=SECRET, subject="alice")
    verified = await verifier.verify(token)
    assert verified.subject == "alice"
    assert verified.role_for("docs/a") is Role.EDITOR
    assert abs(verified.expires_at - (time.time() + 60)) < 2


async def test_leeway_extends_expiry() -> None:
    token = issue_token(grants={"a": Role.VIEWER}, ttl=10, secret=SECRET, now=time.time() - 12)
    with pytest.raises(InvalidToken, match="token expired"):
        await TokenVerifier(AuthSettings(secret=SECRET, leeway=0)).verify(token)
    verified = await TokenVerifier(AuthSettings(secret=SECRET, leeway=5)).verify(token)
    assert verified.expires_at > time.time()


async def test_token_without_exp_rejected() -> None:
    from joserfc import jwt
    from joserfc.jwk import OctKey

    token = jwt.encode({"alg": "HS256"}, {"sub": "x", "yrelay_roles": {"a": "viewer"}}, OctKey.import_key(SECRET))
    with pytest.raises(InvalidToken, match="no 'exp' claim"):
        await TokenVerifier(AuthSettings(secret=SECRET)).verify(token)


async def test_token_without_roles_is_forbidden() -> None:
    token = issue_token(grants={}, ttl=60, secret=SECRET, roles_claim="other")
    with pytest.raises(AccessDenied):
        await TokenVerifier(AuthSettings(secret=SECRET)).verify(token)


async def test_require_role() -> None:
    verified = await TokenVerifier(AuthSettings(secret=SECRET)).verify(
        issue_token(grants={"a": Role.VIEWER}, ttl=60, secret=SECRET)
    )
    assert verified.require("a", Role.VIEWER) is Role.VIEWER
    with pytest.raises(AccessDenied, match="editor is needed"):
        verified.require("a", Role.EDITOR)
    with pytest.raises(AccessDenied, match="no access"):
        verified.require("b", Role.VIEWER)


@pytest.mark.parametrize("key", [ECKey.generate_key("P-256"), OKPKey.generate_key("Ed25519")], ids=["ES256", "Ed25519"])
def test_issue_with_private_key(key) -> None:
    from joserfc import jwt

    token = issue_token(grants={"a": Role.ADMIN}, ttl=60, private_key_pem=key.as_pem(private=True), key_id="k")
    public = type(key).import_key(key.as_pem(private=False))
    decoded = jwt.decode(token, public, algorithms=["ES256", "Ed25519"])
    assert decoded.header["kid"] == "k"
    assert decoded.claims["yrelay_roles"] == {"a": "admin"}


def test_settings_reject_short_secret_and_stray_algorithms() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        AuthSettings(secret=b"short")
    with pytest.raises(ValueError, match="no JWKS or OIDC issuer"):
        AuthSettings(secret=SECRET, algorithms=frozenset({"RS256"}))
    with pytest.raises(ValueError, match="unsupported algorithms"):
        AuthSettings(secret=SECRET, algorithms=frozenset({"none"}))


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "5w", "m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
