"""A minimal OpenID Connect issuer on 127.0.0.1 for the auth tests.

It serves the discovery document and the JWKS, counts JWKS requests, and
signs tokens with its private keys. Keys can be added while it runs, which is
how the tests rotate keys. It also builds the forged tokens the relay must
reject (``alg: none``, HS256 signed with the RSA public key, a tampered
payload).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

ROLES_CLAIM = "yrelay_roles"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_json(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


class OidcIssuer:
    """Discovery and JWKS over HTTP on 127.0.0.1, plus token signing."""

    def __init__(self, audience: str = "yrelay-test") -> None:
        self.audience = audience
        self.keys: dict[str, RSAKey | ECKey | OKPKey] = {}
        self.published: list[str] = []
        self.jwks_requests = 0
        self.discovery_requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-issuer", daemon=True)

    @property
    def url(self) -> str:
        """Issuer identifier, which is also the base of its discovery URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        """URL of the key set."""
        return f"{self.url}/jwks.json"

    def start(self) -> OidcIssuer:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def add_key(self, kid: str, kind: str = "RSA", publish: bool = True) -> None:
        """Create a signing key; publish it in the JWKS unless ``publish`` is False."""
        parameters = {"kid": kid, "use": "sig"}
        if kind == "RSA":
            key: RSAKey | ECKey | OKPKey = RSAKey.generate_key(2048, parameters=parameters)
        elif kind == "EC":
            key = ECKey.generate_key("P-256", parameters=parameters)
        else:
            key = OKPKey.generate_key("Ed25519", parameters=parameters)
        self.keys[kid] = key
        if publish:
            self.published.append(kid)

    def token(
        self,
        grants: dict[str, str],
        *,
        kid: str,
        ttl: float = 3600,
        not_before: float | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        subject: str = "user-1",
        expires_at: float | None = None,
    ) -> str:
        """Sign a token with key ``kid`` granting ``grants`` (pattern to role name)."""
        key = self.keys[kid]
        algorithm = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}[key.key_type]
        now = time.time()
        claims: dict[str, Any] = {
            "sub": subject,
            "iss": issuer if issuer is not None else self.url,
            "aud": audience if audience is not None else self.audience,
            "iat": int(now),
            "exp": int(expires_at if expires_at is not None else now + ttl),
            ROLES_CLAIM: grants,
        }
        if not_before is not None:
            claims["nbf"] = int(not_before)
        return jwt.encode({"alg": algorithm, "kid": kid}, claims, key, algorithms=[algorithm])

    def unsigned_token(self, grants: dict[str, str]) -> str:
        """Return a token with ``alg: none`` and an empty signature."""
        claims = {"sub": "user-1", "iss": self.url, "aud": self.audience,
                  "exp": int(time.time()) + 3600, ROLES_CLAIM: grants}
        return f"{_b64_json({'alg': 'none', 'typ': 'JWT'})}.{_b64_json(claims)}."

    def hs256_with_public_key(self, grants: dict[str, str], kid: str) -> str:
        """Return an HS256 token whose HMAC secret is RSA key ``kid``'s public PEM."""
        secret = self.keys[kid].as_pem(private=False)
        claims = {"sub": "user-1", "iss": self.url, "aud": self.audience,
                  "exp": int(time.time()) + 3600, ROLES_CLAIM: grants}
        signing_input = f"{_b64_json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_b64_json(claims)}"
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"

    @staticmethod
    def tampered(token: str, grants: dict[str, str]) -> str:
        """Return ``token`` with its payload's roles replaced and the old signature kept."""
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims[ROLES_CLAIM] = grants
        return f"{header}.{_b64_json(claims)}.{signature}"

    def _discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": self.jwks_url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        }

    def _jwks(self) -> dict[str, Any]:
        return {"keys": [self.keys[kid].as_dict(private=False) for kid in self.published]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
                if self.path == "/.well-known/openid-configuration":
                    issuer.discovery_requests += 1
                    body = issuer._discovery()
                elif self.path == "/jwks.json":
                    issuer.jwks_requests += 1
                    body = issuer._jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        return Handler
