"""Token checks at the WebSocket upgrade and on the HTTP document API.

The relay checks RS256 tokens against the keys of an OpenID Connect issuer
that the test serves on 127.0.0.1, with ``iss`` and ``aud`` configured.
Every bad token must be rejected before a frame is read, with its own status
and a log line that never contains the token, and nothing may reach the
document.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from websockets.exceptions import InvalidStatus

from tests.support.oidc_issuer import OidcIssuer
from tests.support.raw_client import (
    STEP1_EMPTY,
    UPDATE_INSERT_HI,
    UPDATE_INSERT_RO,
    RawClient,
    doc_text,
    fetch_metrics,
    sync_update,
)
from tests.support.relay_process import RelayProcess

DOC = "team/notes"
AUDIENCE = "yrelay-test"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    oidc = OidcIssuer(audience=AUDIENCE)
    oidc.add_key("key-1")
    oidc.start()
    yield oidc
    oidc.stop()


@pytest.fixture
def oidc_relay(relay: Callable[..., RelayProcess], issuer: OidcIssuer) -> RelayProcess:
    return relay("--oidc-issuer", issuer.url, "--auth-audience", AUDIENCE, "--auth-leeway", "0")


def http_request(
    url: str, method: str = "GET", token: str | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    """Send one request with an optional Bearer token and return (status, body)."""
    request = urllib.request.Request(url, data=body, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def upgrade_status(relay: RelayProcess, doc_name: str, token: str | None) -> int:
    """Return the HTTP status of a refused upgrade; fail if the upgrade succeeds."""
    try:
        client = await RawClient.connect(relay.url, doc_name, token=token)
    except InvalidStatus as refused:
        return refused.response.status_code
    await client.close()
    raise AssertionError(f"upgrade to {doc_name!r} was accepted")


@dataclass
class BadToken:
    name: str
    make: Callable[[OidcIssuer], str]
    status: int
    log_reason: str


def _expired(issuer: OidcIssuer) -> str:
    return issuer.token({"**": "editor"}, kid="key-1", expires_at=time.time() - 60)


BAD_TOKENS = [
    BadToken("malformed", lambda _: "not-a-jwt", 401, "malformed token"),
    BadToken("alg none", lambda i: i.unsigned_token({"**": "admin"}), 401, "token algorithm is not allowed"),
    BadToken("hs256 with rsa public key", lambda i: i.hs256_with_public_key({"**": "admin"}, "key-1"), 401,
             "token algorithm is not allowed"),
    BadToken("expired", _expired, 401, "token expired"),
    BadToken("not yet valid", lambda i: i.token({"**": "editor"}, kid="key-1", not_before=time.time() + 600), 401,
             "token not yet valid"),
    BadToken("wrong issuer", lambda i: i.token({"**": "editor"}, kid="key-1", issuer="http://127.0.0.1:1/other"),
             401, "wrong token issuer"),
    BadToken("wrong audience", lambda i: i.token({"**": "editor"}, kid="key-1", audience="another-service"), 401,
             "wrong token audience"),
    BadToken("tampered payload", lambda i: i.tampered(i.token({"public/*": "viewer"}, kid="key-1"), {"**": "admin"}),
             401, "invalid token signature"),
    BadToken("other document pattern", lambda i: i.token({"other/*": "admin"}, kid="key-1"), 403,
             "token grants no access to this document"),
]


async def test_bad_tokens_rejected_at_upgrade(oidc_relay: RelayProcess, issuer: OidcIssuer) -> None:
    editor = await RawClient.connect(oidc_relay.url, DOC, token=issuer.token({"team/*": "editor"}, kid="key-1"))
    await editor.sync()
    await editor.send_update(UPDATE_INSERT_HI)

    tokens = {case.name: case.make(issuer) for case in BAD_TOKENS}
    for case in BAD_TOKENS:
        status = await upgrade_status(oidc_relay, DOC, tokens[case.name])
        assert status == case.status, f"{case.name}: upgrade answered {status}, expected {case.status}"

    log = oidc_relay.log_text()
    for case in BAD_TOKENS:
        expected_line = f"rejected upgrade doc={DOC} status={case.status}: {case.log_reason}"
        assert expected_line in log, f"{case.name}: no log line {expected_line!r}"
        assert tokens[case.name] not in log, f"{case.name}: the token appears in the relay log"
        signature = tokens[case.name].rsplit(".", 1)[-1]
        if signature:
            assert signature not in log, f"{case.name}: the token signature appears in the relay log"

    state, _ = await _read_text(oidc_relay, issuer)
    assert state == "hi"
    await editor.close()


async def test_bad_tokens_rejected_by_document_api(oidc_relay: RelayProcess, issuer: OidcIssuer) -> None:
    admin = issuer.token({"**": "admin"}, kid="key-1")
    status, _ = http_request(f"{oidc_relay.http_url}/docs/{DOC}", "POST", admin, UPDATE_INSERT_HI)
    assert status == 204

    for case in BAD_TOKENS:
        token = case.make(issuer)
        for method, body in (("GET", None), ("POST", UPDATE_INSERT_RO), ("DELETE", None)):
            status, payload = http_request(f"{oidc_relay.http_url}/docs/{DOC}", method, token, body)
            assert status == case.status, f"{case.name} {method}: {status} {payload!r}"
            assert json.loads(payload)["error"] == case.log_reason
    status, payload = http_request(f"{oidc_relay.http_url}/docs/{DOC}?format=json", "GET", None)
    assert status == 401, payload

    status, payload = http_request(f"{oidc_relay.http_url}/docs/{DOC}?format=json", "GET", admin)
    assert status == 200
    assert json.loads(payload) == {"t": "hi"}
    assert "Bearer " + admin not in oidc_relay.log_text()


async def test_connection_without_token_closed_4401(oidc_relay: RelayProcess, issuer: OidcIssuer) -> None:
    client = await RawClient.connect(oidc_relay.url, DOC)
    await client.send_bytes(sync_update(UPDATE_INSERT_RO))
    code, reason = await client.wait_for_close()
    assert code == 4401, reason
    assert reason == "token required before any other message"
    assert client.messages() == [], "the relay sent document data before authentication"

    text, _ = await _read_text(oidc_relay, issuer)
    assert text == ""
    assert f"doc={DOC} conn=" in oidc_relay.log_text()


async def test_token_in_auth_message_accepted(oidc_relay: RelayProcess, issuer: OidcIssuer) -> None:
    token = issuer.token({"team/**": "editor"}, kid="key-1")
    client = await RawClient.connect(oidc_relay.url, DOC)
    await client.send_bytes(bytes([2, 0]) + _var_string(token))
    await client.send_bytes(sync_update(UPDATE_INSERT_HI))
    await client.sync()

    text, _ = await _read_text(oidc_relay, issuer)
    assert text == "hi"
    await client.close()


async def test_path_and_name_rejected_before_token(oidc_relay: RelayProcess, issuer: OidcIssuer) -> None:
    token = issuer.token({"**": "admin"}, kid="key-1")
    assert await upgrade_status(oidc_relay, "team/../secrets", token) == 400
    assert await upgrade_status(oidc_relay, "n" * 10_000, token) == 400
    status, _ = http_request(f"{oidc_relay.http_url}/docs/" + "n" * 10_000, "GET", token)
    assert status == 400
    log = oidc_relay.log_text()
    assert "document name has an empty, '.' or '..' segment" in log
    assert "document name is longer than 1024 bytes" in log
    assert token not in log


async def test_unknown_key_refetched_once_per_interval(oidc_relay: RelayProcess, issuer: OidcIssuer) -> None:
    issuer.add_key("unpublished", publish=False)
    before = issuer.jwks_requests
    token = issuer.token({"**": "editor"}, kid="unpublished")
    assert await upgrade_status(oidc_relay, DOC, token) == 401
    assert issuer.jwks_requests == before + 1, "an unknown key id did not cause exactly one JWKS fetch"

    # A second unknown key within the refetch interval is rejected without a fetch.
    issuer.add_key("unpublished-2", publish=False)
    token = issuer.token({"**": "editor"}, kid="unpublished-2")
    assert await upgrade_status(oidc_relay, DOC, token) == 401
    assert issuer.jwks_requests == before + 1
    assert "rejected upgrade doc=team/notes status=401: token is signed with an unknown key" in oidc_relay.log_text()


async def test_rotated_key_accepted_after_one_refetch(
    relay: Callable[..., RelayProcess], issuer: OidcIssuer
) -> None:
    server = relay("--oidc-issuer", issuer.url, "--auth-audience", AUDIENCE)
    old = await RawClient.connect(server.url, DOC, token=issuer.token({"**": "editor"}, kid="key-1"))
    await old.sync()
    fetched = issuer.jwks_requests

    issuer.add_key("key-2", kind="EC")
    new_token = issuer.token({"**": "editor"}, kid="key-2")
    rotated = await RawClient.connect(server.url, DOC, token=new_token)
    await rotated.sync()
    assert issuer.jwks_requests == fetched + 1

    issuer.add_key("key-3", kind="OKP")
    third = await RawClient.connect(server.url, DOC, token=issuer.token({"**": "editor"}, kid="key-2"))
    await third.sync()
    assert issuer.jwks_requests == fetched + 1, "a known key id caused another JWKS fetch"
    for client in (old, rotated, third):
        await client.close()


async def test_document_api_enforces_roles(oidc_relay: RelayProcess, issuer: OidcIssuer) -> None:
    base = f"{oidc_relay.http_url}"
    viewer = issuer.token({"team/*": "viewer"}, kid="key-1")
    editor = issuer.token({"team/*": "editor"}, kid="key-1")
    admin = issuer.token({"team/*": "admin"}, kid="key-1")

    assert http_request(f"{base}/docs/{DOC}", "POST", viewer, UPDATE_INSERT_RO)[0] == 403
    assert http_request(f"{base}/docs/{DOC}", "GET", viewer)[0] == 404
    assert http_request(f"{base}/docs/{DOC}", "POST", editor, UPDATE_INSERT_HI)[0] == 204
    assert http_request(f"{base}/docs/{DOC}", "GET", viewer)[0] == 200
    assert http_request(f"{base}/versions/{DOC}", "GET", viewer)[0] == 200
    assert http_request(f"{base}/versions/{DOC}?id=1", "POST", editor)[0] == 403
    assert http_request(f"{base}/docs/{DOC}", "DELETE", editor)[0] == 403
    assert http_request(f"{base}/docs/{DOC}", "DELETE", viewer)[0] == 403

    status, payload = http_request(f"{base}/docs/{DOC}?format=json", "GET", viewer)
    assert status == 200
    assert json.loads(payload) == {"t": "hi"}, "a viewer's POST changed the document"

    assert http_request(f"{base}/docs/{DOC}", "DELETE", admin)[0] == 204
    assert http_request(f"{base}/docs/{DOC}", "GET", admin)[0] == 404
    samples = fetch_metrics(base)
    assert samples.get('yrelay_auth_failures_total{status="403"}', 0) == 4


async def _read_text(relay: RelayProcess, issuer: OidcIssuer) -> tuple[str, bytes]:
    client = await RawClient.connect(relay.url, DOC, token=issuer.token({"**": "viewer"}, kid="key-1"))
    try:
        await client.send_bytes(STEP1_EMPTY)
        step2 = await client.wait_for_step2()
        return doc_text(client.doc), step2.payload
    finally:
        await client.close()


def _var_string(text: str) -> bytes:
    data = text.encode()
    length = len(data)
    prefix = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        if length:
            prefix.append(byte | 0x80)
        else:
            prefix.append(byte)
            return bytes(prefix) + data


async def test_unreachable_issuer_answers_503(relay: Callable[..., RelayProcess]) -> None:
    from tests.support.relay_process import free_port

    # Nothing listens on this port of 127.0.0.1, so every key fetch fails.
    jwks_url = f"http://127.0.0.1:{free_port()}/jwks.json"
    server = relay("--jwks-url", jwks_url)
    issuer = OidcIssuer()
    issuer.add_key("key-1")
    token = issuer.token({"**": "admin"}, kid="key-1")

    assert await upgrade_status(server, DOC, token) == 503
    status, payload = http_request(f"{server.http_url}/docs/{DOC}", "GET", token)
    assert status == 503
    assert json.loads(payload)["error"] == "signing keys are unavailable, try again later"
    log = server.log_text()
    assert "fetching signing keys failed" in log
    assert f"rejected upgrade doc={DOC} status=503: signing keys are unavailable" in log
    assert token not in log
