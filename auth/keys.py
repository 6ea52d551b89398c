"""Signing keys of an OAuth2/OIDC issuer: discovery, JWKS fetch and refetch.

Keys are fetched on first use and cached. A token that names a ``kid`` the
cache does not have triggers a refetch, at most once per ``refetch_interval``,
so a stream of tokens with made-up key ids cannot make the relay hammer the
issuer. Fetches use Authlib's httpx client; the discovery document is
checked with Authlib's OpenID provider metadata model.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx2
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.discovery import OpenIDProviderMetadata, get_well_known_url
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .errors import KeysUnavailable

LOGGER = logging.getLogger("yrelay.auth")

# After a failed fetch, the next one waits at least this long.
FAILED_FETCH_BACKOFF = 5.0


class KeySource:
    """The issuer's public keys, from ``jwks_url`` or from OIDC discovery of ``oidc_issuer``."""

    def __init__(
        self,
        *,
        oidc_issuer: str | None = None,
        jwks_url: str | None = None,
        refetch_interval: float = 60.0,
        timeout: float = 5.0,
    ) -> None:
        if (oidc_issuer is None) == (jwks_url is None):
            raise ValueError("set exactly one of oidc_issuer and jwks_url")
        self.oidc_issuer = oidc_issuer
        self.jwks_url = jwks_url
        self.refetch_interval = refetch_interval
        self.timeout = timeout
        self.fetches = 0
        self._keys: KeySet | None = None
        # Unknown-key refetches wait for this time; any fetch waits for _retry_at after a failure.
        self._next_refetch_at = 0.0
        self._retry_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def description(self) -> str:
        """Where the keys come from, for the start-up log line."""
        return f"OIDC issuer {self.oidc_issuer}" if self.oidc_issuer else f"JWKS {self.jwks_url}"

    async def keys(self) -> KeySet:
        """Return the cached keys, fetching them first if none were fetched yet."""
        if self._keys is None:
            await self._fetch(reason="first use", rate_limited=False)
        if self._keys is None:
            raise KeysUnavailable("signing keys are unavailable, try again later")
        return self._keys

    async def refetch_for_unknown_key(self) -> bool:
        """Fetch the keys again because a token names an unknown key id.

        Returns False without fetching when the last such refetch was less
        than ``refetch_interval`` ago, or a fetch failed moments ago.
        """
        return await self._fetch(reason="unknown key id", rate_limited=True)

    async def _fetch(self, reason: str, rate_limited: bool) -> bool:
        generation = self.fetches
        async with self._lock:
            now = time.monotonic()
            if self.fetches != generation:
                # Another task fetched while this one waited for the lock.
                return True
            if now < self._retry_at or (rate_limited and now < self._next_refetch_at):
                return False
            try:
                keys = await self._download()
            except (httpx2.HTTPError, OSError, ValueError, KeyError, TypeError, JoseError, _HttpError) as exc:
                self._retry_at = time.monotonic() + min(FAILED_FETCH_BACKOFF, self.refetch_interval)
                LOGGER.warning("fetching signing keys failed source=%s reason=%s: %s",
                               self.description, reason, _describe(exc))
                return False
            self.fetches += 1
            self._keys = keys
            if rate_limited:
                self._next_refetch_at = time.monotonic() + self.refetch_interval
            LOGGER.info("fetched signing keys source=%s reason=%s keys=%d",
                        self.description, reason, len(keys.keys))
            return True

    async def _download(self) -> KeySet:
        async with AsyncOAuth2Client(timeout=self.timeout, trust_env=False) as client:
            jwks_url = self.jwks_url
            if self.oidc_issuer is not None:
                response = await client.request(
                    "GET", get_well_known_url(self.oidc_issuer, external=True), withhold_token=True
                )
                _raise_for_status(response)
                metadata = OpenIDProviderMetadata(response.json())
                metadata.validate_issuer()
                metadata.validate_jwks_uri()
                # OpenID Connect Discovery 1.0, section 4.3: the issuer in
                # the document must equal the one it was fetched for.
                if metadata["issuer"].rstrip("/") != self.oidc_issuer.rstrip("/"):
                    raise ValueError(f"discovery document names issuer {metadata['issuer']!r}")
                jwks_url = metadata["jwks_uri"]
            assert jwks_url is not None
            response = await client.request("GET", jwks_url, withhold_token=True)
            _raise_for_status(response)
            document = response.json()
        # Keys meant for encryption are not signing keys, and a key type
        # joserfc does not know would fail the whole set.
        usable = [
            key for key in document.get("keys", [])
            if isinstance(key, dict) and key.get("use", "sig") == "sig" and key.get("kty") in ("RSA", "EC", "OKP")
        ]
        return KeySet.import_key_set({"keys": usable})


class _HttpError(Exception):
    """The issuer returned a status other than 200."""


def _raise_for_status(response: object) -> None:
    status = getattr(response, "status_code", 0)
    if status != 200:
        raise _HttpError(f"HTTP {status} from {getattr(response, 'url', '?')}")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
